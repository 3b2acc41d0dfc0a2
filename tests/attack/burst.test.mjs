// tests/attack/burst.test.mjs - slow senders are slowed, not refused (issue
// 13): one member sends 300 chat lines at once, far over publish_rate; the
// server stops reading that connection until the member's token bucket
// allows the next SEND, so every line gets its RECEIPT and arrives exactly
// once, in order, without an ERROR, while another member chats as usual.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LIMITS, makeMember, roomOf, stomp, collectSynced, publish, chatter } from './lib.mjs';

test('a 300-line burst over publish_rate is slowed and fully delivered', async () => {
    const calm = await chatter();
    const a = await makeMember('burst');
    const b = await makeMember('burst');
    const room = roomOf(a, b);
    const hb = { heartbeatIncoming: 1000, heartbeatOutgoing: 1000 };
    const ca = await stomp(a, hb);
    const cb = await stomp(b, hb);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const n = 300;
        const texts = Array.from({ length: n }, (_, i) => `burst ${i}`);
        const t0 = Date.now();
        const receipts = await Promise.all(texts.map((message) => publish(ca, '/pub/chat/message', { roomId: room, message })));
        const took = Date.now() - t0;
        assert.equal(receipts.length, n);
        await box.waitFor(n, 20000);
        assert.deepEqual(box.messages.map((m) => m.message), texts, 'every line once, in order');
        assert.equal(ca.errors.length, 0, `no ERROR: ${ca.errors.map((f) => f.headers.message).join('; ')}`);
        // the bucket holds 2 x publish_rate; the rest come at publish_rate
        const least = ((n - 2 * LIMITS.publishRate) / LIMITS.publishRate) * 1000;
        console.log(`burst of ${n}: all taken in ${took} ms (at least ${least} ms at publish_rate ${LIMITS.publishRate}/s)`);
        assert.ok(took >= least - 500, `slowed to publish_rate: ${took} ms >= ${least - 500}`);
        assert.ok(took <= least + 5000, `and not slower than needed: ${took} ms`);
    } finally {
        await Promise.all([ca.deactivate(), cb.deactivate()]);
    }
    await calm.stop();
});
