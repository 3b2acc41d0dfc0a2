// tests/e2e/chat.test.mjs - two members chat through the real @stomp/stompjs
// client (over the `ws` package): room and side subscribers each get every
// message exactly once with the wire fields; RECEIPTs; "4&3" is "3&4"; the
// writer comes from the session; history pages; unread counts rise and clear
// with /pub/chat/read and its read event; `ws` sees no protocol error.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
    http, makeMember, roomOf, stomp, collectSynced, publish, closeAll, assertChat, wsErrors, sleep, uid, settle,
} from './lib.mjs';

const clients = [];
after(() => closeAll(...clients));

async function connect(member, opts) {
    const c = await stomp(member, opts);
    clients.push(c);
    return c;
}

test('CONNECTED negotiates STOMP 1.2 with heart-beats', async () => {
    const a = await makeMember('cn');
    const c = await connect(a);
    const h = c.connectedFrame.headers;
    assert.equal(h.version, '1.2');
    assert.match(h['heart-beat'], /^\d+,\d+$/);
    assert.ok(h.server, 'CONNECTED names the server');
    await c.deactivate();
});

test('the three ways to authenticate a STOMP session', async () => {
    const a = await makeMember('auth');
    for (const auth of ['passcode', 'bearer', 'cookie']) {
        const c = await connect(a, { auth });
        const side = await collectSynced(c, `/sub/chat/side/${a.id}`);
        assert.ok(side, `${auth}: subscribed`);
        await c.deactivate();
    }
});

test('two members chat; room and side subscribers get each message exactly once', async () => {
    const a = await makeMember('alice');
    const b = await makeMember('bob');
    const room = roomOf(a, b);
    const ca = await connect(a);
    const cb = await connect(b);
    const aRoom = await collectSynced(ca, `/sub/chat/room/${room}`);
    const aSide = await collectSynced(ca, `/sub/chat/side/${a.id}`);
    const bRoom = await collectSynced(cb, `/sub/chat/room/${room}`);
    const bSide = await collectSynced(cb, `/sub/chat/side/${b.id}`);

    const texts = ['안녕하세요?', 'hello, bob', 'line one\nline two', 'quotes " and \\ and emoji 🙂', '제 이름은 최원익 입니다.'];
    // alice sends them all at once; each one gets its own RECEIPT
    const receipts = await Promise.all(texts.map((message) => publish(ca, '/pub/chat/message', { roomId: room, message })));
    assert.equal(receipts.length, texts.length);
    for (const r of receipts) assert.equal(r.command, 'RECEIPT');
    // and bob answers
    await publish(cb, '/pub/chat/message', { roomId: room, message: '반가워요!' });
    const n = texts.length + 1;

    for (const box of [aRoom, aSide, bRoom, bSide]) await box.waitFor(n);
    await settle(cb, room, [aRoom, aSide, bRoom, bSide]); // a late duplicate would be here by now
    const ids = aRoom.messages.map((m) => m.id);
    for (const [name, box] of Object.entries({ aRoom, aSide, bRoom, bSide })) {
        assert.equal(box.messages.length, n, `${name} got each message once: ${JSON.stringify(box.messages)}`);
        assert.deepEqual(box.messages.map((m) => m.id).sort(), [...ids].sort(), `${name}: same messages`);
        assert.equal(new Set(box.messages.map((m) => m.id)).size, n, `${name}: no duplicate`);
        for (const f of box.frames) {
            assert.match(f.headers['content-type'] || 'application/json', /json/);
            assert.ok(f.headers['message-id'], 'MESSAGE has message-id');
        }
    }
    // fields
    const fromAlice = aRoom.messages.filter((m) => m.writerId === a.id);
    assert.deepEqual(fromAlice.map((m) => m.message).sort(), [...texts].sort());
    for (const m of fromAlice) assertChat(m, { roomId: room, writer: a, message: m.message });
    const fromBob = bSide.messages.find((m) => m.writerId === b.id);
    assertChat(fromBob, { roomId: room, writer: b, message: '반가워요!' });
    // bob's answer came after all of alice's: ids sort by time
    for (const m of fromAlice) assert.ok(BigInt(m.id) < BigInt(fromBob.id), 'ids grow with time');
    // every subscriber sees a room in the same order
    assert.deepEqual(bRoom.messages.map((m) => m.id), ids, 'room order is the same for both');
    assert.deepEqual(aSide.messages.map((m) => m.id), ids, 'side order is the same as the room');
});

test('messages from one sender keep their order', async () => {
    const a = await makeMember('ord');
    const b = await makeMember('ord');
    const room = roomOf(a, b);
    const ca = await connect(a);
    const cb = await connect(b);
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    for (let i = 0; i < 20; i++) ca.publish({ destination: '/pub/chat/message', body: JSON.stringify({ roomId: room, message: `n${i}` }) });
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'n20' });
    await box.waitFor(21);
    await settle(ca, room, [box]);
    const msgs = box.messages;
    assert.deepEqual(msgs.map((m) => m.message), Array.from({ length: 21 }, (_, i) => `n${i}`), 'each once, in order');
    for (let i = 1; i < msgs.length; i++) assert.ok(BigInt(msgs[i - 1].id) < BigInt(msgs[i].id), 'ids increase');
});

test('"4&3" is accepted as "3&4"; a writer in the body is ignored', async () => {
    const a = await makeMember('rev');
    const b = await makeMember('rev');
    const room = roomOf(a, b);
    const high = Math.max(a.id, b.id), low = Math.min(a.id, b.id);
    const ca = await connect(a);
    const cb = await connect(b);
    const bRoom = await collectSynced(cb, `/sub/chat/room/${high}&${low}`); // reversed subscribe too
    const bSide = await collectSynced(cb, `/sub/chat/side/${b.id}`);
    await publish(ca, '/pub/chat/message', { roomId: `${high}&${low}`, message: 'reversed room id' });
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'forged writer', writer: b.loginId, writerId: b.id });
    await bSide.waitFor(2);
    await bRoom.waitFor(2);
    await settle(ca, room, [bSide, bRoom]);
    const msgs = bSide.messages;
    assert.equal(msgs.length, 2, `exactly two on the side: ${JSON.stringify(msgs)}`);
    assertChat(msgs[0], { roomId: room, writer: a, message: 'reversed room id' });
    assertChat(msgs[1], { roomId: room, writer: a, message: 'forged writer' });
    assert.deepEqual(bRoom.messages.map((m) => m.roomId), [room, room], 'the reversed subscription gets canonical messages, each once');
});

test('history: pages of ?before=&limit=, oldest to newest, with a next cursor', async () => {
    const a = await makeMember('hist');
    const b = await makeMember('hist');
    const room = roomOf(a, b);
    const ca = await connect(a);
    // a RECEIPT means durable in the queue; the fan-out comes after the store
    // wrote it, so wait for the fan-out before reading history
    const seen = await collectSynced(ca, `/sub/chat/room/${room}`);
    const sent = [];
    for (let i = 0; i < 7; i++) {
        const message = `history ${i} 한글`;
        await publish(ca, '/pub/chat/message', { roomId: room, message });
        sent.push(message);
    }
    await seen.waitFor(7);
    const first = await http('GET', `/api/rooms/${room}/messages?limit=3`, { token: b.token });
    assert.equal(first.status, 200, first.text);
    assert.deepEqual(first.json.messages.map((m) => m.message), sent.slice(4), 'newest page, oldest first');
    assert.notEqual(first.json.next, null, 'a next cursor while older messages remain');
    for (const m of first.json.messages) assertChat(m, { roomId: room, writer: a, message: m.message });

    // walk back to the start
    const all = [...first.json.messages];
    let next = first.json.next;
    for (let guard = 0; next != null && guard < 10; guard++) {
        const page = await http('GET', `/api/rooms/${room}/messages?before=${encodeURIComponent(next)}&limit=3`, { cookie: b.cookie });
        assert.equal(page.status, 200, page.text);
        assert.ok(page.json.messages.length <= 3, 'limit is honoured');
        all.unshift(...page.json.messages);
        next = page.json.next;
    }
    assert.equal(next, null, 'the cursor ends');
    assert.deepEqual(all.map((m) => m.message), sent, 'every message once, in order');
    const ids = all.map((m) => BigInt(m.id));
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1] < ids[i]);

    // before= an id excludes that id
    const before = await http('GET', `/api/rooms/${room}/messages?before=${all[3].id}&limit=50`, { token: a.token });
    assert.deepEqual(before.json.messages.map((m) => m.message), sent.slice(0, 3));
    assert.equal(before.json.next, null);
    // the reversed room id works for history too
    const rev = await http('GET', `/api/rooms/${Math.max(a.id, b.id)}&${Math.min(a.id, b.id)}/messages?limit=2`, { token: a.token });
    assert.equal(rev.status, 200, rev.text);
    assert.deepEqual(rev.json.messages.map((m) => m.message), sent.slice(5));
    // bad parameters
    const bad = await http('GET', `/api/rooms/${room}/messages?limit=abc`, { token: a.token });
    assert.equal(bad.status, 400, `limit=abc: ${bad.status}`);
    const badBefore = await http('GET', `/api/rooms/${room}/messages?before=xyz`, { token: a.token });
    assert.equal(badBefore.status, 400, `before=xyz: ${badBefore.status}`);
    const badRoom = await http('GET', '/api/rooms/abc/messages', { token: a.token });
    assert.ok([400, 404].includes(badRoom.status), `room abc: ${badRoom.status}`);
});

test('unread counts rise, then /pub/chat/read clears them with a read event on the side', async () => {
    const a = await makeMember('ur');
    const b = await makeMember('ur');
    const room = roomOf(a, b);
    const ca = await connect(a);
    const cb = await connect(b);
    const aSide = await collectSynced(ca, `/sub/chat/side/${a.id}`);
    const bSide = await collectSynced(cb, `/sub/chat/side/${b.id}`);
    const ids = [];
    const texts = ['one', 'two', 'three'];
    for (const message of texts) await publish(ca, '/pub/chat/message', { roomId: room, message });
    const got = await bSide.waitFor(3);
    for (const m of got) ids.push(m.id);

    const bRooms = await http('GET', '/api/rooms', { token: b.token });
    assert.equal(bRooms.status, 200);
    const r = bRooms.json.find((x) => x.roomId === room);
    assert.ok(r, `bob lists the room: ${bRooms.text}`);
    assert.equal(r.unread, 3, 'three unread for bob');
    assert.equal(r.lastMessage, 'three');
    assert.match(r.lastTimestamp, /Z$/);
    assert.equal(Number(r.peer.id), a.id);
    assert.equal(r.peer.loginId, a.loginId);
    assert.equal(r.peer.name, a.name);
    const aRooms = await http('GET', '/api/rooms', { token: a.token });
    const ra = aRooms.json.find((x) => x.roomId === room);
    assert.equal(ra.unread, 0, 'the writer has nothing unread');
    assert.equal(Number(ra.peer.id), b.id);

    // read up to the first message: two stay unread
    await publish(cb, '/pub/chat/read', { roomId: room, upTo: ids[0] });
    const ev1 = await bSide.waitFor((msgs) => msgs.some((m) => m.type === 'read'));
    const read1 = ev1.find((m) => m.type === 'read');
    assert.equal(read1.roomId, room);
    assert.equal(Number(read1.memberId), b.id);
    assert.equal(String(read1.upTo), ids[0]);
    let bNow = await http('GET', '/api/rooms', { token: b.token });
    assert.equal(bNow.json.find((x) => x.roomId === room).unread, 2, 'two after reading the first');

    // read everything (with the reversed room id)
    await publish(cb, '/pub/chat/read', { roomId: `${Math.max(a.id, b.id)}&${Math.min(a.id, b.id)}`, upTo: ids[2] });
    await bSide.waitFor((msgs) => msgs.filter((m) => m.type === 'read').length === 2);
    bNow = await http('GET', '/api/rooms', { token: b.token });
    assert.equal(bNow.json.find((x) => x.roomId === room).unread, 0, 'all read');

    // reading an older id later never raises the count again
    await publish(cb, '/pub/chat/read', { roomId: room, upTo: ids[0] });
    await bSide.waitFor((msgs) => msgs.filter((m) => m.type === 'read').length === 3);
    bNow = await http('GET', '/api/rooms', { token: b.token });
    assert.equal(bNow.json.find((x) => x.roomId === room).unread, 0, 'last read never goes back');

    // (each REST read below waits for the fan-out first: it follows the store's write)

    // a new message counts again; bob's reply clears his own count
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'four' });
    await bSide.waitFor((msgs) => msgs.some((m) => m.message === 'four'));
    bNow = await http('GET', '/api/rooms', { token: b.token });
    assert.equal(bNow.json.find((x) => x.roomId === room).unread, 1);
    await publish(cb, '/pub/chat/message', { roomId: room, message: 'reply' });
    await aSide.waitFor((msgs) => msgs.some((m) => m.message === 'reply'));
    // bob's reply came after his three reads: had a read event gone to alice's
    // side, it would be there by now. The read events went to bob's side only.
    assert.deepEqual(aSide.messages.map((m) => m.type === 'read' ? 'read' : m.message), ['one', 'two', 'three', 'four', 'reply'],
        'alice got each message once and no read event');
    assert.equal(bSide.messages.filter((m) => m.type === 'read').length, 3, 'bob got exactly his three read events');
    bNow = await http('GET', '/api/rooms', { token: b.token });
    const rb = bNow.json.find((x) => x.roomId === room);
    assert.equal(rb.unread, 0, 'writing in a room reads it');
    assert.equal(rb.lastMessage, 'reply');
    const aNow = await http('GET', '/api/rooms', { token: a.token });
    assert.equal(aNow.json.find((x) => x.roomId === room).unread, 1, 'alice has bob\'s reply unread');
});

test('conversations are listed newest first', async () => {
    const me = await makeMember('list');
    const [p1, p2, p3] = await Promise.all([makeMember('p'), makeMember('p'), makeMember('p')]);
    const c = await connect(me);
    const side = await collectSynced(c, `/sub/chat/side/${me.id}`);
    for (const p of [p1, p2, p3, p1]) {
        await publish(c, '/pub/chat/message', { roomId: roomOf(me, p), message: `to ${p.loginId}` });
    }
    await side.waitFor(4);
    const r = await http('GET', '/api/rooms', { token: me.token });
    assert.deepEqual(r.json.map((x) => Number(x.peer.id)), [p1.id, p3.id, p2.id]);
    for (let i = 1; i < r.json.length; i++) {
        assert.ok(Date.parse(r.json[i - 1].lastTimestamp) >= Date.parse(r.json[i].lastTimestamp));
    }
});

test('a message of max_message_bytes is accepted, one byte more is refused', async () => {
    const limit = Number(process.env.CHATD_MAX_MESSAGE_BYTES || 4096);
    const a = await makeMember('big');
    const b = await makeMember('big');
    const room = roomOf(a, b);
    const c = await connect(a);
    const box = await collectSynced(c, `/sub/chat/room/${room}`);
    const korean = '가'.repeat(Math.floor(limit / 3)) + 'a'.repeat(limit % 3); // exactly `limit` bytes
    assert.equal(Buffer.byteLength(korean), limit);
    await publish(c, '/pub/chat/message', { roomId: room, message: korean });
    const [m] = await box.waitFor(1);
    assert.equal(m.message, korean);
    // one byte over: an ERROR naming the receipt (and the connection closes)
    const over = korean + 'a';
    c.publish({
        destination: '/pub/chat/message',
        body: JSON.stringify({ roomId: room, message: over }),
        headers: { 'content-type': 'application/json', receipt: 'too-big-1' },
    });
    for (let i = 0; i < 50 && c.errors.length === 0; i++) await sleep(100);
    assert.ok(c.errors.length > 0, 'an oversize message gets an ERROR');
    assert.equal(c.errors[0].headers['receipt-id'], 'too-big-1', 'the ERROR names the receipt of the refused SEND');
    assert.ok(c.errors[0].headers?.message, 'the ERROR has a message header');
});

test('the `ws` client raised no protocol error in normal chat', async () => {
    await closeAll(...clients.splice(0));
    await sleep(200);
    assert.deepEqual(wsErrors.map((e) => e.message), []);
});

test('a fresh uid does not collide (sanity)', () => {
    assert.notEqual(uid(), uid());
});
