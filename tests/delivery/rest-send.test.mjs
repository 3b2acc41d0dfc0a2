// tests/delivery/rest-send.test.mjs - POST /api/rooms/{roomId}/messages
// (docs/delivery.md): 201 once durable, 200 for a repeated Idempotency-Key,
// and every refusal, against the running chatd of CHATD_URL (any store).

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { makeMember, roomOf, stomp, collectSynced, publish, closeAll, http, uid } from '../e2e/lib.mjs';
import { rawHttp, req } from '../e2e/conformance-lib.mjs';

const post = (member, room, body, headers = {}) =>
    http('POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: member?.token, body, headers });

async function pair() {
    const a = await makeMember('sa');
    const b = await makeMember('sb');
    return { a, b, room: roomOf(a, b) };
}

async function history(member, room) {
    const r = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=200`, { token: member.token });
    assert.equal(r.status, 200, r.text);
    return r.json.messages;
}

test('REST send: 201 with the message, delivered live once, in history', async () => {
    const { a, b, room } = await pair();
    const cb = await stomp(b);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const r = await post(a, room, { message: 'from a bot' });
        assert.equal(r.status, 201, r.text);
        assert.equal(r.json.type, 'chat');
        assert.match(r.json.id, /^[1-9][0-9]*$/);
        assert.equal(r.json.roomId, room);
        assert.equal(r.json.writer, a.loginId);
        assert.equal(r.json.writerId, a.id);
        assert.equal(r.json.message, 'from a bot');
        assert.match(r.json.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.match(r.json.cursor ?? '', /^[\x20-\x7e]{1,256}$/, 'the answer carries the room cursor');
        const [live] = await box.waitFor(1);
        assert.equal(live.id, r.json.id);
        assert.equal(box.frames[0].headers.cursor, r.json.cursor, 'the cursor of the MESSAGE frame');
        // the room in the path may be written either way round
        const r2 = await post(a, `${b.id}&${a.id}`, { message: 'reversed room id' });
        assert.equal(r2.status, 201, r2.text);
        assert.equal(r2.json.roomId, room);
        await box.waitFor(2);
        const hist = await history(a, room);
        assert.deepEqual(hist.map((m) => m.id), [r.json.id, r2.json.id]);
        assert.deepEqual(hist.map((m) => m.cursor), [r.json.cursor, r2.json.cursor], 'the history item\'s cursor');
        assert.equal(box.messages.length, 2);
    } finally {
        await closeAll(cb);
    }
});

test('REST send with Idempotency-Key: 201, then 200 with the same message, stored and delivered once', async () => {
    const { a, b, room } = await pair();
    const cb = await stomp(b);
    const ca = await stomp(a);
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        const key = 'bot-' + crypto.randomUUID();
        const r1 = await post(a, room, { message: 'exactly once' }, { 'Idempotency-Key': key });
        assert.equal(r1.status, 201, r1.text);
        const r2 = await post(a, room, { message: 'exactly once' }, { 'Idempotency-Key': key });
        assert.equal(r2.status, 200, r2.text);
        assert.equal(r2.json.id, r1.json.id);
        assert.equal(r2.json.cursor, r1.json.cursor, 'the repeat names the same place');
        assert.equal(r2.json.message, 'exactly once');
        // a STOMP SEND with the same key by the same member names the same message
        const rs = await publish(ca, '/pub/chat/message', { roomId: room, message: 'exactly once' }, { 'idempotency-key': key });
        assert.equal(rs.headers['message-id'], r1.json.id);
        // and a STOMP key reused over REST
        const k2 = 'stomp-' + crypto.randomUUID();
        const rs2 = await publish(ca, '/pub/chat/message', { roomId: room, message: 'second' }, { 'idempotency-key': k2 });
        const r3 = await post(a, room, { message: 'second' }, { 'Idempotency-Key': k2 });
        assert.equal(r3.status, 200, r3.text);
        assert.equal(r3.json.id, rs2.headers['message-id']);
        // concurrent retries of a fresh key: one 201, the rest 200, one message
        const k3 = 'race-' + crypto.randomUUID();
        const rs3 = await Promise.all([0, 1, 2, 3].map(() => post(a, room, { message: 'raced' }, { 'Idempotency-Key': k3 })));
        assert.deepEqual(rs3.map((r) => r.status).sort(), [200, 200, 200, 201]);
        assert.equal(new Set(rs3.map((r) => r.json.id)).size, 1);
        const marker = uid('marker-');
        assert.equal((await post(a, room, { message: marker })).status, 201);
        await box.waitFor((m) => m.some((x) => x.message === marker));
        assert.deepEqual(box.messages.map((m) => m.message), ['exactly once', 'second', 'raced', marker]);
        assert.deepEqual((await history(a, room)).map((m) => m.message), ['exactly once', 'second', 'raced', marker]);
    } finally {
        await closeAll(ca, cb);
    }
});

test('REST send refusals: 401, 403, 400, 413, 415, 405 and nothing stored', async () => {
    const { a, b, room } = await pair();
    const c = await makeMember('sc');
    assert.equal((await post(null, room, { message: 'x' })).status, 401);
    assert.equal((await post(c, room, { message: 'not my room' })).status, 403);
    for (const [body, why] of [
        [{}, 'no message'],
        [{ message: '' }, 'empty'],
        [{ message: 42 }, 'not a string'],
        [{ message: 'nul\u0000inside' }, 'NUL'],
        [[1, 2], 'not an object'],
    ]) {
        const r = await post(a, room, body);
        assert.equal(r.status, 400, `${why}: ${r.status} ${r.text}`);
        assert.equal(typeof r.json.error, 'string');
    }
    const raw = await http('POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: a.token, raw: '{"message":' });
    assert.equal(raw.status, 400);
    for (const bad of ['has space', 'x'.repeat(129)]) {
        const r = await post(a, room, { message: 'bad key' }, { 'Idempotency-Key': bad });
        assert.equal(r.status, 400, r.text);
        assert.match(r.json.error, /idempotency key/);
    }
    assert.equal((await post(a, 'nonsense', { message: 'x' })).status, 400);
    assert.equal((await post(a, room, { message: 'x'.repeat(4097) })).status, 413);
    assert.equal((await post(a, room, { message: '\u00e9'.repeat(2049) })).status, 413, 'the bound is in bytes of UTF-8');
    assert.equal((await post(a, room, { message: 'x'.repeat(4096) })).status, 201, 'max_message_bytes itself is accepted');
    const ct = await http('POST', `/api/rooms/${encodeURIComponent(room)}/messages`,
        { token: a.token, raw: '{"message":"x"}', headers: { 'Content-Type': 'text/plain' } });
    assert.equal(ct.status, 415);
    const put = await http('PUT', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: a.token, body: { message: 'x' } });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get('allow'), 'GET, HEAD, POST');
    assert.deepEqual((await history(b, room)).map((m) => m.message.length), [4096]);
});

test('REST send: Idempotency-Key on two field lines is a 400 (RFC 9110 5.3: "k1, k2" is no key), nothing stored', async () => {
    const { a, b, room } = await pair();
    const k1 = uid('k1-'), k2 = uid('k2-');
    const body = JSON.stringify({ message: 'two keys' });
    const r = (await rawHttp(req(`POST /api/rooms/${encodeURIComponent(room)}/messages HTTP/1.1`, [
        `Authorization: Bearer ${a.token}`, 'Content-Type: application/json', `Idempotency-Key: ${k1}`,
        `Idempotency-Key: ${k2}`, `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close',
    ], body), { ms: 8000 })).responses[0];
    assert.equal(r?.status, 400, `two Idempotency-Key lines: ${r?.statusLine} ${r?.body}`);
    assert.match(r.json.error, /idempotency key/);
    assert.deepEqual(await history(b, room), [], 'nothing stored');
    for (const k of [k1, k2]) { // neither key was taken: each is a first send
        const ok = await post(a, room, { message: k }, { 'Idempotency-Key': k });
        assert.equal(ok.status, 201, `${k}: ${ok.status} ${ok.text}`);
    }
});
