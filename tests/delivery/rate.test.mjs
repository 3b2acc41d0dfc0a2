// tests/delivery/rate.test.mjs - the REST send shares the member's
// publish_rate with STOMP: over the burst, POST answers 429 with
// Retry-After and a STOMP SEND gets an ERROR, from one token bucket.
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

test('REST send and STOMP SEND share the publish rate: 429 with Retry-After, then ERROR', async () => {
    await d.start();
    const a = await makeMember('ta');
    const b = await makeMember('tb');
    const room = roomOf(a, b);
    const post = () => http('POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: a.token, body: { message: 'tick' } });
    const t0 = Date.now();
    const rs = await Promise.all(Array.from({ length: 12 }, post));
    const elapsed = (Date.now() - t0) / 1000;
    const ok = rs.filter((r) => r.status === 201).length;
    const limited = rs.filter((r) => r.status === 429);
    assert.equal(ok + limited.length, 12, rs.map((r) => r.status).join(','));
    assert.ok(ok >= 2 * RATE && ok <= 2 * RATE + Math.ceil(elapsed * RATE), `${ok} accepted in ${elapsed} s`);
    for (const r of limited) {
        assert.equal(r.headers.get('retry-after'), '1');
        assert.match(r.json.error, /rate/);
    }
    // the bucket is the member's: a STOMP SEND right after is refused too
    const conn = await rawConnected(a);
    for (let i = 0; i < 2 * RATE + 1; i++)
        conn.frame('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: `s${i}` },
            JSON.stringify({ roomId: room, message: `stomp ${i}` }));
    const err = await conn.nextFrame('ERROR');
    assert.match(err.headers.message, /rate/);
    await conn.closed;
    assert.equal(await d.stop(), 0);
});
