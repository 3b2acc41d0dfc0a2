// tests/delivery/restart.test.mjs - idempotency across a crash: chatd is
// killed with SIGKILL while SENDs with idempotency keys wait for their
// RECEIPTs, restarted on the same database, and every SEND is retried with
// its key. Exactly one message per key is stored and delivered, and every
// RECEIPT (before and after the crash) names that message.
//
// This file runs a chatd of its own (tests/delivery/daemon.mjs), the
// embedded default config on a temporary database.

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Daemon } from './daemon.mjs';

const d = await Daemon.create('delivery-restart', ['chatd.publish_rate=0']);
process.env.CHATD_URL = d.url;
const { makeMember, roomOf, stomp, http, closeAll, collectSynced, publish, uid } = await import('../e2e/lib.mjs');

const MSG = '/pub/chat/message';

/* every message of a room, oldest first, paging back with `before` */
export async function allHistory(token, room) {
    const pages = [];
    let before = '';
    for (;;) {
        const q = `limit=200${before ? `&before=${before}` : ''}`;
        const r = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?${q}`, { token });
        assert.equal(r.status, 200, r.text);
        pages.unshift(r.json.messages);
        if (!r.json.next) break;
        before = r.json.next;
    }
    return pages.flat();
}

test.after(() => d.cleanup());

test('SENDs retried after a SIGKILL between SEND and RECEIPT are stored and delivered once', async () => {
    await d.start();
    const a = await makeMember('ra');
    const b = await makeMember('rb');
    const room = roomOf(a, b);
    const N = 300;
    const run = crypto.randomUUID();
    const keys = Array.from({ length: N }, (_, i) => `${run}-${i}`);
    const before = new Map(); // i -> message-id of a RECEIPT that came before the kill

    // 1. a stream of SENDs, WINDOW in flight; once KILL_AFTER are receipted,
    //    chatd is killed while the last WINDOW wait for their RECEIPTs
    const WINDOW = 20, KILL_AFTER = 100;
    const ca = await stomp(a);
    let sent = 0;
    const killNow = new Promise((resolve) => {
        const sendNext = () => {
            const i = sent++;
            const receipt = `pre-${i}`;
            ca.watchForReceipt(receipt, (f) => {
                before.set(i, f.headers['message-id']);
                if (before.size >= KILL_AFTER) resolve();
                // keep WINDOW in flight until chatd is dead
                if (sent < N && ca.connected) sendNext();
            });
            try {
                ca.publish({
                    destination: MSG,
                    body: JSON.stringify({ roomId: room, message: `m${i}` }),
                    headers: { 'content-type': 'application/json', receipt, 'idempotency-key': keys[i] },
                });
            } catch {
                // the socket is gone: chatd was killed; the retry covers it
            }
        };
        for (let k = 0; k < WINDOW; k++) sendNext();
    });
    await killNow;
    await d.kill9();
    const receiptedBeforeKill = before.size;
    assert.ok(receiptedBeforeKill < sent,
        `the kill must fall between SEND and RECEIPT (${receiptedBeforeKill} of ${sent} sent were receipted)`);
    await ca.deactivate().catch(() => {});

    // 2. restart on the same database: what survived?
    await d.start();
    const stored = new Set((await allHistory(a.token, room)).map((m) => m.message));
    for (const i of before.keys()) assert.ok(stored.has(`m${i}`), `m${i} was receipted before the kill, so it is stored`);

    // 3. retry every SEND with its key, a listener on the room
    const cb = await stomp(b);
    const ca2 = await stomp(a);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const after = await Promise.all(keys.map((key, i) => publish(ca2, MSG, { roomId: room, message: `m${i}` }, { 'idempotency-key': key })));
        for (const [i, id] of before) assert.equal(after[i].headers['message-id'], id, `key ${i}: the retry names the original`);
        assert.equal(new Set(after.map((r) => r.headers['message-id'])).size, N, 'one message per key');

        // 4. settle with a marker, then count exactly
        const marker = uid('marker-');
        await publish(ca2, MSG, { roomId: room, message: marker });
        const live = await box.waitFor((m) => m.some((x) => x.message === marker), 15000);
        const liveBefore = live.slice(0, live.findIndex((x) => x.message === marker)).map((m) => m.message);
        const expected = keys.map((_, i) => `m${i}`).filter((t) => !stored.has(t));
        assert.deepEqual(liveBefore, expected, 'the listener gets exactly the SENDs not stored before the crash, once each, in order');

        const hist = await allHistory(a.token, room);
        assert.deepEqual(hist.map((m) => m.message), [...keys.map((_, i) => `m${i}`), marker], 'the store holds each message once, in send order');
        assert.deepEqual(hist.slice(0, N).map((m) => m.id), after.map((r) => r.headers['message-id']));
    } finally {
        await closeAll(ca2, cb);
        assert.equal(await d.stop(), 0, 'chatd stops cleanly');
    }
});
