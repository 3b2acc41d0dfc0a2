// tests/delivery/window.test.mjs - the idempotency window (docs/delivery.md,
// *Idempotent SEND*): within `idempotency_window` a key names its first
// message, over STOMP and REST; after it the same key makes a new message,
// and from then on names that one.
//
// Runs a chatd of its own (tests/delivery/daemon.mjs) with
// idempotency_window = 5 s.

import test from 'node:test';
import assert from 'node:assert/strict';
import { Daemon, waitUntil } from './daemon.mjs';

const WINDOW_S = 5;
const d = await Daemon.create('delivery-window', ['chatd.publish_rate=0', `chatd.idempotency_window=${WINDOW_S}`]);
process.env.CHATD_URL = d.url;
const { makeMember, roomOf, http, rawConnected, uid } = await import('../e2e/lib.mjs');

test.after(() => d.cleanup());

test('after the window the key makes a new message', async () => {
    await d.start();
    const a = await makeMember('wa');
    const b = await makeMember('wb');
    const room = roomOf(a, b);
    const key = uid('win-');
    const conn = await rawConnected(a);
    let n = 0;
    const send = async (message) => {
        const receipt = `w${n++}`;
        conn.frame('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt, 'idempotency-key': key },
            JSON.stringify({ roomId: room, message }));
        await waitUntil(() => conn.frames.some((f) => f.headers['receipt-id'] === receipt), 10000, `RECEIPT ${receipt}`);
        const f = conn.frames.find((f) => f.headers['receipt-id'] === receipt);
        assert.equal(f.command, 'RECEIPT', `${message}: ${JSON.stringify(f.headers)}`);
        return f.headers['message-id'];
    };
    const rest = (message) => http('POST', `/api/rooms/${encodeURIComponent(room)}/messages`,
        { token: a.token, body: { message }, headers: { 'Idempotency-Key': key } });
    const history = async () => {
        const r = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=200`, { token: b.token });
        assert.equal(r.status, 200, r.text);
        return r.json.messages.map((m) => [m.id, m.message]);
    };

    const first = await send('first');
    assert.equal(await send('retry within the window'), first, 'a retry within the window names the first');
    const r1 = await rest('rest retry within the window');
    assert.deepEqual([r1.status, r1.json.id], [200, first]);
    const [{ timestamp }] = (await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: b.token })).json.messages;
    // the window is measured from the first message's timestamp: wait past it
    await waitUntil(() => Date.now() > Date.parse(timestamp) + WINDOW_S * 1000 + 500, (WINDOW_S + 10) * 1000, 'the window to pass');
    const second = await send('after the window');
    assert.notEqual(second, first, 'after the window the key makes a new message');
    assert.equal(await send('retry of the new one'), second, 'and then names the new one');
    const r2 = await rest('rest retry of the new one');
    assert.deepEqual([r2.status, r2.json.id], [200, second]);
    assert.deepEqual(await history(), [[first, 'first'], [second, 'after the window']], 'each stored once');
    conn.close();
    assert.equal(await d.stop(), 0);
});
