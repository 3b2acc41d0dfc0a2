// tests/delivery/idempotency.test.mjs - RECEIPTs name the message and SEND is
// idempotent by `idempotency-key` (docs/delivery.md), against the running
// chatd of CHATD_URL (any queue and store).
//
// Exactly-once is checked after the stream settled: every test ends with a
// marker message sent without a key and waits for it, then counts.

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { makeMember, roomOf, stomp, collectSynced, publish, closeAll, rawConnected, http, uid } from '../e2e/lib.mjs';

const MSG = '/pub/chat/message';

/* send with a key; resolves with the RECEIPT frame */
function sendKeyed(client, roomId, message, key) {
    return publish(client, MSG, { roomId, message }, key === undefined ? {} : { 'idempotency-key': key });
}

/* send a marker, wait until `box` saw it; returns the messages before it */
async function settle(client, box, roomId) {
    const marker = uid('marker-');
    await publish(client, MSG, { roomId, message: marker });
    const msgs = await box.waitFor((m) => m.some((x) => x.message === marker));
    return msgs.slice(0, msgs.findIndex((x) => x.message === marker));
}

async function pair() {
    const a = await makeMember('ia');
    const b = await makeMember('ib');
    return { a, b, room: roomOf(a, b) };
}

test('the RECEIPT of a SEND names the message it stored', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a), cb = await stomp(b);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const r1 = await publish(ca, MSG, { roomId: room, message: 'first' });
        const r2 = await sendKeyed(ca, room, 'second', 'k-' + crypto.randomUUID());
        const msgs = await box.waitFor(2);
        assert.equal(r1.headers['message-id'], msgs[0].id);
        assert.equal(r2.headers['message-id'], msgs[1].id);
        assert.match(r1.headers['message-id'], /^[1-9][0-9]*$/);
        // the MESSAGE frame's own message-id header is the chat message's id
        assert.equal(box.frames[0].headers['message-id'], msgs[0].id);
    } finally {
        await closeAll(ca, cb);
    }
});

test('the same key again publishes nothing and is answered with the original', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a), cb = await stomp(b);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const key = 'retry-' + crypto.randomUUID();
        const first = await sendKeyed(ca, room, 'hello once', key);
        const again = await sendKeyed(ca, room, 'hello once', key);
        const third = await sendKeyed(ca, room, 'a different body is not compared', key);
        assert.equal(again.headers['message-id'], first.headers['message-id']);
        assert.equal(third.headers['message-id'], first.headers['message-id']);
        const before = await settle(ca, box, room);
        assert.deepEqual(before.map((m) => m.message), ['hello once']);
        assert.equal(before[0].id, first.headers['message-id']);
        assert.equal(before[0].idempotencyKey, key);
        const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=200`, { token: a.token });
        assert.equal(h.status, 200);
        assert.deepEqual(h.json.messages.filter((m) => m.message === 'hello once').map((m) => m.id), [first.headers['message-id']]);
    } finally {
        await closeAll(ca, cb);
    }
});

test('a retry sent while the first is in flight waits for it and names it', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a), cb = await stomp(b);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const keys = Array.from({ length: 20 }, (_, i) => `burst-${i}-${crypto.randomUUID()}`);
        // each key three times back to back, before any RECEIPT can come
        const receipts = await Promise.all(keys.flatMap((k, i) => [0, 1, 2].map(() => sendKeyed(ca, room, `m${i}`, k))));
        for (let i = 0; i < keys.length; i++) {
            const ids = receipts.slice(3 * i, 3 * i + 3).map((r) => r.headers['message-id']);
            assert.equal(new Set(ids).size, 1, `key ${i}: ${ids}`);
        }
        const before = await settle(ca, box, room);
        assert.deepEqual(before.map((m) => m.message), keys.map((_, i) => `m${i}`));
    } finally {
        await closeAll(ca, cb);
    }
});

test('keys are per member: the same key from the peer is another message', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a), cb = await stomp(b);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const key = 'shared-' + crypto.randomUUID();
        const ra = await sendKeyed(ca, room, 'from a', key);
        const rb = await sendKeyed(cb, room, 'from b', key);
        assert.notEqual(ra.headers['message-id'], rb.headers['message-id']);
        const before = await settle(ca, box, room);
        assert.deepEqual(before.map((m) => m.message), ['from a', 'from b']);
    } finally {
        await closeAll(ca, cb);
    }
});

test('a malformed idempotency key gets an ERROR with a message header, then close', async () => {
    const a = await makeMember('im');
    const b = await makeMember('in');
    const room = roomOf(a, b);
    for (const bad of ['', 'x'.repeat(129), 'has space', 'tab\there', 'caf\u00e9']) {
        const conn = await rawConnected(a);
        conn.frame('SEND', { destination: MSG, 'content-type': 'application/json', receipt: 'r1', 'idempotency-key': bad },
            JSON.stringify({ roomId: room, message: 'never stored' }));
        const err = await conn.nextFrame('ERROR');
        assert.match(err.headers.message, /idempotency key/, JSON.stringify(bad));
        assert.equal(err.headers['receipt-id'], 'r1');
        await conn.closed;
    }
    // 128 visible characters is the longest accepted key
    const c = await stomp(a);
    try {
        const r = await sendKeyed(c, room, 'longest key', '~'.repeat(128));
        assert.match(r.headers['message-id'], /^[1-9][0-9]*$/);
    } finally {
        await closeAll(c);
    }
    const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: a.token });
    assert.deepEqual(h.json.messages.map((m) => m.message), ['longest key']);
});
