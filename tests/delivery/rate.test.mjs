// tests/delivery/rate.test.mjs - the REST send shares the member's
// publish_rate with STOMP: over the burst, POST answers 429 with
// Retry-After, and STOMP SENDs right after are slowed to the rate (not
// refused: see transport-ws rate_grace), from one token bucket.
//
// Runs a chatd of its own (tests/delivery/daemon.mjs) with publish_rate = 2
// (bursts of 4).

import test from 'node:test';
import assert from 'node:assert/strict';
import { Daemon } from './daemon.mjs';

const RATE = 2;
const d = await Daemon.create('delivery-rate', [`chatd.publish_rate=${RATE}`]);
process.env.CHATD_URL = d.url;
const { makeMember, roomOf, http, rawConnected } = await import('../e2e/lib.mjs');

test.after(() => d.cleanup());

test('REST send and STOMP SEND share the publish rate: 429 with Retry-After, then SENDs slowed', async () => {
    await d.start();
    const a = await makeMember('ta');
    const b = await makeMember('tb');
    const room = roomOf(a, b);
    const post = () => http('POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: a.token, body: { message: 'tick' } });
    const t0 = Date.now();
    const rs = await Promise.all(Array.from({ length: 12 }, post));
    const emptied = Date.now();
    const elapsed = (emptied - t0) / 1000;
    const ok = rs.filter((r) => r.status === 201).length;
    const limited = rs.filter((r) => r.status === 429);
    assert.equal(ok + limited.length, 12, rs.map((r) => r.status).join(','));
    assert.ok(ok >= 2 * RATE && ok <= 2 * RATE + Math.ceil(elapsed * RATE), `${ok} accepted in ${elapsed} s`);
    for (const r of limited) {
        assert.equal(r.headers.get('retry-after'), '1');
        assert.match(r.json.error, /rate/);
    }
    // the bucket is the member's: STOMP SENDs right after wait for tokens.
    // When the REST burst ended the bucket was empty; it refills at RATE/s,
    // so N SENDs cannot all be receipted before (N - 1)/RATE s minus what
    // refilled while the connection was made.
    const N = 2 * RATE + 1;
    const conn = await rawConnected(a);
    const sent = Date.now();
    const refilled = ((sent - emptied) / 1000) * RATE;
    for (let i = 0; i < N; i++)
        conn.frame('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: `s${i}` },
            JSON.stringify({ roomId: room, message: `stomp ${i}` }));
    const deadline = sent + 8000 + (N / RATE) * 1000;
    const receipts = () => conn.frames.filter((f) => f.command === 'RECEIPT').length;
    while (receipts() < N && Date.now() < deadline && !conn.frames.some((f) => f.command === 'ERROR'))
        await new Promise((r) => setTimeout(r, 20));
    const took = (Date.now() - sent) / 1000;
    assert.deepEqual(conn.frames.filter((f) => f.command === 'ERROR'), [], 'slowed, never refused');
    assert.equal(receipts(), N, `all ${N} SENDs receipted`);
    const floor = (N - 1 - refilled) / RATE;
    assert.ok(took >= floor - 0.05, `${N} SENDs receipted in ${took} s: faster than the rate allows (${floor} s)`);
    conn.close();
    assert.equal(await d.stop(), 0);
});
