// tests/e2e/conformance-stomp-session.test.mjs - chatd seen by an independent client
// written from the public specifications only (tests/e2e/conformance-lib.mjs):
// STOMP sessions against the chat contract: MESSAGE shape, subscriptions,
// ACK/NACK, transactions, durable receipts, limits, slow readers, ordering
// around ERROR and DISCONNECT, and @stomp/stompjs.
//
// Run: tests/e2e/run.sh etc/chatd.conf -- node --test tests/e2e/conformance-stomp-session.test.mjs

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';
import { http, makeMember, roomOf, sleep, uid, BASE, WS_URL } from './lib.mjs';
import { a, b, c3, fixtures, OP, ISO_UTC, wsRaw, stompEncode, stompSession, subscribe, expectStompError, chatBody, settled, chats } from './conformance-lib.mjs';

fixtures();

test('STOMP: MESSAGE frames: destination, message-id, subscription, content-type, content-length; body shape', async () => {
    const [x, y] = await Promise.all([makeMember('msg'), makeMember('msg')]);
    const room = roomOf(x, y);
    const sx = await stompSession(x);
    const sy = await stompSession(y);
    await subscribe(sy, 'room-y', `/sub/chat/room/${room}`);
    await subscribe(sy, 'side-y', `/sub/chat/side/${y.id}`);
    const text = 'héllo <b>안녕</b> "quoted" \\ ✓';
    sx.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'm1' }, chatBody(room, text, { writer: 'mallory', writerId: 999 }));
    await sx.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'm1');
    await sy.waitFor(() => sy.stompFrames.filter((f) => f.command === 'MESSAGE').length >= 2, 8000, 'room + side MESSAGE');
    const marker = await settled(x, room, sy);
    const msgs = sy.stompFrames.filter((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message !== marker);
    assert.equal(msgs.length, 2, 'once per subscription');
    const ids = new Set();
    for (const m of msgs) {
        const h = m.headers;
        assert.ok(h.destination, 'destination');
        assert.ok(h['message-id'], 'message-id');
        assert.ok(['room-y', 'side-y'].includes(h.subscription), `subscription ${h.subscription}`);
        assert.match(h['content-type'], /^application\/json/);
        assert.equal(Number(h['content-length']), m.bodyBytes.length, 'content-length is the body length in bytes');
        assert.equal(h.ack, undefined, 'no ack header in auto mode');
        const j = JSON.parse(m.body);
        assert.equal(typeof j.id, 'string');
        assert.match(j.id, /^\d+$/);
        assert.equal(j.roomId, room);
        assert.equal(j.writer, x.loginId, 'the writer is the authenticated member');
        assert.equal(j.writerId, x.id);
        assert.equal(j.message, text);
        assert.match(j.timestamp, ISO_UTC);
        assert.ok(Math.abs(Date.parse(j.timestamp) - Date.now()) < 60000);
        ids.add(j.id);
    }
    assert.equal(ids.size, 1, 'the same message on both');
    const byDest = Object.fromEntries(msgs.map((m) => [m.headers.subscription, m.headers.destination]));
    assert.equal(byDest['room-y'], `/sub/chat/room/${room}`);
    assert.equal(byDest['side-y'], `/sub/chat/side/${y.id}`);
    sx.destroy();
    sy.destroy();
});

test('STOMP: the room may be named high&low in SUBSCRIBE and SEND', async () => {
    const [x, y] = await Promise.all([makeMember('rev'), makeMember('rev')]);
    const rev = `${Math.max(x.id, y.id)}&${Math.min(x.id, y.id)}`;
    const s = await stompSession(x);
    await subscribe(s, 'r', `/sub/chat/room/${rev}`);
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(rev, 'reversed'));
    const m = await s.nextStomp('MESSAGE');
    assert.equal(JSON.parse(m.body).roomId, roomOf(x, y));
    s.destroy();
});

test('STOMP: UNSUBSCRIBE stops delivery', async () => {
    const [x, y] = await Promise.all([makeMember('uns'), makeMember('uns')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    await subscribe(s, 'r', `/sub/chat/room/${room}`);
    const w = await stompSession(y); // still subscribed: settles the stream
    await subscribe(w, 'w', `/sub/chat/room/${room}`);
    s.stomp('UNSUBSCRIBE', { id: 'r', receipt: 'u' });
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'u');
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'after' }, chatBody(room, 'not for you'));
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'after');
    const marker = await settled(y, room, w);
    assert.deepEqual(chats(w, marker), ['not for you'], 'the live subscription got it');
    assert.equal(s.stompFrames.filter((f) => f.command === 'MESSAGE').length, 0, 'nothing after the UNSUBSCRIBE');
    w.destroy();
    s.destroy();
});

test('STOMP 1.2: ack client / client-individual: MESSAGE has an ack header; ACK and NACK by that id', async () => {
    const [x, y] = await Promise.all([makeMember('ack'), makeMember('ack')]);
    const room = roomOf(x, y);
    for (const mode of ['client', 'client-individual']) {
        const s = await stompSession(x);
        await subscribe(s, 'r', `/sub/chat/room/${room}`, { ack: mode });
        for (const t of ['m1', 'm2']) s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(room, `${mode} ${t}`));
        await s.waitFor(() => s.stompFrames.filter((f) => f.command === 'MESSAGE').length >= 2, 8000, 'two MESSAGEs');
        const [m1, m2] = s.stompFrames.filter((f) => f.command === 'MESSAGE');
        assert.ok(m1.headers.ack, `${mode}: MESSAGE has an ack header (1.2 spec MESSAGE)`);
        assert.notEqual(m1.headers.ack, m2.headers.ack);
        s.stomp('ACK', { id: m2.headers.ack, receipt: 'a2' });
        let r = await s.nextStomp((f) => (f.command === 'RECEIPT' && f.headers['receipt-id'] === 'a2') || f.command === 'ERROR');
        assert.equal(r.command, 'RECEIPT', `${mode}: ACK: ${r.headers.message}`);
        if (mode === 'client-individual') {
            s.stomp('NACK', { id: m1.headers.ack, receipt: 'n1' });
            r = await s.nextStomp((f) => (f.command === 'RECEIPT' && f.headers['receipt-id'] === 'n1') || f.command === 'ERROR');
            assert.equal(r.command, 'RECEIPT', `NACK: ${r.headers.message}`);
        }
        s.destroy();
    }
});

test('STOMP 1.2: ACK of an unknown ack id is answered (RECEIPT or ERROR with receipt-id), never ignored', async () => {
    const s = await stompSession(a);
    s.stomp('ACK', { id: 'no-such-ack', receipt: 'ua' });
    const f = await s.nextStomp((x) => x.command === 'RECEIPT' || x.command === 'ERROR');
    assert.equal(f.headers['receipt-id'], 'ua');
    s.destroy();
});

test('STOMP: an unknown ack mode gets ERROR', async () => {
    const s = await stompSession(a);
    s.stomp('SUBSCRIBE', { id: 'r', destination: `/sub/chat/side/${a.id}`, ack: 'sometimes' });
    await expectStompError(s, 'ack:sometimes');
});

test('STOMP 1.1: ACK by subscription + message-id', async () => {
    const [x, y] = await Promise.all([makeMember('a11'), makeMember('a11')]);
    const room = roomOf(x, y);
    const s = await stompSession(x, { 'accept-version': '1.1' }, { protocol: 'v11.stomp' });
    assert.equal(s.connected.headers.version, '1.1');
    await subscribe(s, 'r', `/sub/chat/room/${room}`, { ack: 'client' });
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(room, 'v1.1'));
    const m = await s.nextStomp('MESSAGE');
    s.stomp('ACK', { subscription: 'r', 'message-id': m.headers['message-id'], receipt: 'a11' });
    const r = await s.nextStomp((f) => (f.command === 'RECEIPT' && f.headers['receipt-id'] === 'a11') || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT', r.headers.message);
    s.destroy();
});

test('STOMP: transactions: SENDs wait for COMMIT, vanish on ABORT and on DISCONNECT', async () => {
    const [x, y] = await Promise.all([makeMember('tx'), makeMember('tx')]);
    const room = roomOf(x, y);
    const watch = await stompSession(y);
    await subscribe(watch, 'w', `/sub/chat/room/${room}`);
    const s = await stompSession(x);
    s.stomp('BEGIN', { transaction: 'tx1' });
    s.stomp('SEND', { destination: '/pub/chat/message', transaction: 'tx1', 'content-type': 'application/json' }, chatBody(room, 'tx one'));
    s.stomp('SEND', { destination: '/pub/chat/message', transaction: 'tx1', 'content-type': 'application/json' }, chatBody(room, 'tx two'));
    const before = await settled(y, room, watch);
    assert.deepEqual(chats(watch, before), [], 'nothing before COMMIT');
    s.stomp('COMMIT', { transaction: 'tx1', receipt: 'c1' });
    await s.nextStomp((f) => (f.command === 'RECEIPT' && f.headers['receipt-id'] === 'c1') || f.command === 'ERROR');
    await watch.waitFor(() => chats(watch, before).length >= 2, 8000, 'committed messages');
    assert.deepEqual(chats(watch, before), ['tx one', 'tx two']);

    s.stomp('BEGIN', { transaction: 'tx2' });
    s.stomp('SEND', { destination: '/pub/chat/message', transaction: 'tx2', 'content-type': 'application/json' }, chatBody(room, 'aborted'));
    s.stomp('ABORT', { transaction: 'tx2', receipt: 'a2' });
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'a2');
    s.stomp('BEGIN', { transaction: 'tx3' });
    s.stomp('SEND', { destination: '/pub/chat/message', transaction: 'tx3', 'content-type': 'application/json' }, chatBody(room, 'never committed'));
    s.stomp('DISCONNECT', { receipt: 'd' });
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'd');
    const after = await settled(y, room, watch);
    const texts = chats(watch, after).filter((t) => t !== before);
    assert.deepEqual(texts, ['tx one', 'tx two'], 'aborted and uncommitted SENDs are not delivered');
    watch.destroy();
});

test('STOMP: COMMIT/ABORT of an unknown transaction, SEND in one, a BEGIN twice: ERROR', async () => {
    const room = roomOf(a, b);
    const cases = [
        [['COMMIT', { transaction: 'nope', receipt: 'r' }]],
        [['ABORT', { transaction: 'nope', receipt: 'r' }]],
        [['SEND', { destination: '/pub/chat/message', transaction: 'nope', receipt: 'r' }, chatBody(room, 'x')]],
        [['BEGIN', { transaction: 'dup' }], ['BEGIN', { transaction: 'dup', receipt: 'r' }]],
        [['BEGIN', { transaction: 'done' }], ['COMMIT', { transaction: 'done' }], ['COMMIT', { transaction: 'done', receipt: 'r' }]],
    ];
    for (const frames of cases) {
        const s = await stompSession(a);
        for (const [cmd, h, body] of frames) s.stomp(cmd, h, body);
        const err = await expectStompError(s, frames.map((f) => f[0]).join('+'));
        assert.equal(err.headers['receipt-id'], 'r');
    }
});

test('STOMP: SEND receipts come only after the message is durable, and a refusal has the receipt-id', async () => {
    const [x, y] = await Promise.all([makeMember('dur'), makeMember('dur')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'd1' }, chatBody(room, 'durable'));
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'd1');
    const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: y.token });
    assert.ok(h.json.messages.some((m) => m.message === 'durable'), 'in the history once the RECEIPT is in');
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'd2' }, chatBody(roomOf(y, c3), 'not mine'));
    const err = await expectStompError(s, 'foreign room');
    assert.equal(err.headers['receipt-id'], 'd2');
});

test('STOMP: message text survives the round trip: lone surrogate escapes never become invalid UTF-8 on the wire', async () => {
    const [x, y] = await Promise.all([makeMember('utf'), makeMember('utf')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    await subscribe(s, 'r', `/sub/chat/room/${room}`);
    const texts = ['emoji 😀 and 한글', 'quote " back \\ slash', '\u2028 line sep', '<script>alert(1)</script>', 'tab\tand\nnewline'];
    for (const t of texts) s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(room, t));
    await s.waitFor(() => s.stompFrames.filter((f) => f.command === 'MESSAGE').length >= texts.length, 8000, 'all messages');
    assert.deepEqual(s.stompFrames.filter((f) => f.command === 'MESSAGE').map((f) => JSON.parse(f.body).message), texts);
    // a JSON escape of a lone surrogate: refused, or delivered as valid UTF-8
    s.send(OP.text, stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'sur' }, `{"roomId":"${room}","message":"x\\ud800y"}`));
    const f = await s.nextStomp((m) => (m.command === 'MESSAGE' && m.body.includes('"x')) || m.command === 'ERROR' || (m.command === 'RECEIPT' && m.headers['receipt-id'] === 'sur'));
    // the room keeps its order: once a later marker is here, so is whatever the SEND caused
    if (f.command !== 'ERROR') await settled(x, room, s);
    for (const fr of s.frames.filter((q) => q.opcode === OP.text)) {
        assert.doesNotThrow(() => new TextDecoder('utf-8', { fatal: true }).decode(fr.payload), 'every text frame is valid UTF-8');
    }
    void f;
    s.destroy();
});

test('STOMP: a SEND body that is not a JSON text (RFC 8259) gets ERROR with receipt-id, and is not delivered', async () => {
    const [x, y] = await Promise.all([makeMember('nj'), makeMember('nj')]);
    const room = roomOf(x, y);
    const w = await stompSession(y);
    await subscribe(w, 'r', `/sub/chat/room/${room}`);
    const bodies = [
        ['a trailing comma', (t) => `{"roomId":"${room}","message":"${t}",}`],
        ['single quotes', (t) => `{'roomId':'${room}','message':'${t}'}`],
        ['a comment', (t) => `{"roomId":"${room}","message":"${t}"/**/}`],
        ['NaN', (t) => `{"roomId":"${room}","message":"${t}","n":NaN}`],
        ['a raw control character in a string', (t) => `{"roomId":"${room}","message":"${t}\x01"}`],
    ];
    for (const [what, body] of bodies) {
        const s = await stompSession(x);
        s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'nj' }, body(uid('nj-')));
        const err = await expectStompError(s, what);
        assert.equal(err.headers['receipt-id'], 'nj', what);
    }
    const marker = await settled(x, room, w);
    assert.deepEqual(chats(w, marker), [], 'none of them was delivered');
    w.destroy();
});

test('STOMP: a message longer than max_message_bytes gets ERROR with receipt-id', async () => {
    const s = await stompSession(a);
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'big' }, chatBody(roomOf(a, b), 'x'.repeat(40000)));
    const err = await expectStompError(s, 'a 40 kB message');
    assert.equal(err.headers['receipt-id'], 'big');
});

test('STOMP: two subscriptions of one connection to one destination each get the MESSAGE', async () => {
    const [x, y] = await Promise.all([makeMember('two'), makeMember('two')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    await subscribe(s, 'one', `/sub/chat/room/${room}`);
    await subscribe(s, 'two', `/sub/chat/room/${room}`);
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(room, 'twice'));
    await s.waitFor(() => s.stompFrames.filter((f) => f.command === 'MESSAGE').length >= 2, 8000, 'two MESSAGEs');
    assert.deepEqual(s.stompFrames.filter((f) => f.command === 'MESSAGE').map((f) => f.headers.subscription).sort(), ['one', 'two']);
    s.destroy();
});

test('STOMP: read events go to the reader\'s side only, with type "read"', async () => {
    const [x, y] = await Promise.all([makeMember('rd'), makeMember('rd')]);
    const room = roomOf(x, y);
    const sx = await stompSession(x);
    const sy = await stompSession(y);
    await subscribe(sx, 'side', `/sub/chat/side/${x.id}`);
    await subscribe(sy, 'side', `/sub/chat/side/${y.id}`);
    await subscribe(sy, 'room', `/sub/chat/room/${room}`);
    sx.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'm' }, chatBody(room, 'read me'));
    const m = await sy.nextStomp((f) => f.command === 'MESSAGE' && f.headers.subscription === 'room');
    const id = JSON.parse(m.body).id;
    sy.stomp('SEND', { destination: '/pub/chat/read', 'content-type': 'application/json', receipt: 'rd' }, JSON.stringify({ roomId: room, upTo: id }));
    await sy.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'rd');
    const ev = await sy.nextStomp((f) => f.command === 'MESSAGE' && JSON.parse(f.body).type === 'read');
    const j = JSON.parse(ev.body);
    assert.equal(ev.headers.subscription, 'side');
    assert.equal(j.roomId, room);
    assert.equal(j.memberId, y.id);
    assert.equal(j.upTo, id);
    assert.equal(typeof j.id, 'string');
    assert.match(j.timestamp, ISO_UTC);
    // a later chat line reaches the writer's side after the read event would have
    await settled(x, room, sx);
    assert.equal(sx.stompFrames.filter((f) => f.command === 'MESSAGE' && JSON.parse(f.body).type === 'read').length, 0, 'the writer gets no read event');
    sx.destroy();
    sy.destroy();
});

test('STOMP 1.1: \\r is not an escape of 1.1 (ERROR); \\c and \\n are', async () => {
    const s = await stompSession(a, { 'accept-version': '1.1' }, { protocol: 'v11.stomp' });
    s.send(OP.text, Buffer.from(`SUBSCRIBE\nid:a\\cb\\nc\ndestination:/sub/chat/side/${a.id}\nreceipt:ok\n\n\0`));
    const r = await s.nextStomp((f) => f.command === 'RECEIPT' || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT', r.headers.message);
    s.send(OP.text, Buffer.from(`SUBSCRIBE\nid:a\\rb\ndestination:/sub/chat/side/${a.id}\n\n\0`));
    await expectStompError(s, '1.1 \\r');
});

test('STOMP: too many headers or subscriptions get ERROR, not unbounded state', async () => {
    const s = await stompSession(a);
    s.stomp('SUBSCRIBE', [['id', 'h'], ['destination', `/sub/chat/side/${a.id}`], ...Array.from({ length: 2000 }, (_, i) => [`x-${i}`, 'v'])]);
    await expectStompError(s, '2000 headers');
    const t = await stompSession(a);
    for (let i = 0; i < 5000 && !t.isEnded; i++) t.stomp('SUBSCRIBE', { id: `s${i}`, destination: `/sub/chat/side/${a.id}` });
    await expectStompError(t, '5000 subscriptions', 15000);
});

test('STOMP: nothing is processed after DISCONNECT or after an ERROR', async () => {
    const [x, y] = await Promise.all([makeMember('aft'), makeMember('aft')]);
    const room = roomOf(x, y);
    const w = await stompSession(y);
    await subscribe(w, 'w', `/sub/chat/room/${room}`);
    const s = await stompSession(x);
    s.send(OP.text, Buffer.concat([
        stompEncode('DISCONNECT', { receipt: 'bye' }),
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(room, 'after disconnect')),
    ]));
    await s.ended;
    const e = await stompSession(x);
    e.send(OP.text, Buffer.concat([
        stompEncode('FOO', {}),
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(room, 'after error')),
    ]));
    await e.ended;
    const marker = await settled(y, room, w);
    assert.deepEqual(chats(w, marker), [], 'neither SEND was processed');
    w.destroy();
});

test('a slow reader is disconnected (BRIEF 6: bounded output buffer); the others keep getting their messages', { timeout: 90000 }, async () => {
    const victim = await makeMember('slow');
    const peers = await Promise.all(Array.from({ length: 6 }, () => makeMember('fast')));
    const v = await stompSession(victim);
    await subscribe(v, 'side', `/sub/chat/side/${victim.id}`);
    v.sock.pause(); // never read while the others chat
    const senders = await Promise.all(peers.map((p) => stompSession(p)));
    // a healthy reader in one of the rooms, beating so no idle rule applies
    const healthy = await stompSession(peers[0], { 'heart-beat': '5000,0' });
    const beat = setInterval(() => healthy.send(OP.text, '\n'), 2000);
    await subscribe(healthy, 'room', `/sub/chat/room/${roomOf(peers[0], victim)}`);
    const big = 'm'.repeat(4000);
    const t0 = Date.now();
    let sent = 0;
    // 6 x 40 messages of 4 kB a second for 25 s: about 24 MB for the victim,
    // far more than max_outbuf plus any kernel socket buffer
    while (Date.now() - t0 < 25000) {
        for (let i = 0; i < senders.length; i++) {
            senders[i].stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json' }, chatBody(roomOf(peers[i], victim), big));
            sent++;
        }
        await sleep(25);
    }
    v.sock.resume();
    const ended = await Promise.race([v.ended.then(() => true), sleep(20000).then(() => false)]);
    clearInterval(beat);
    const got = v.stompFrames.filter((f) => f.command === 'MESSAGE').length;
    assert.ok(ended, `the slow reader was disconnected (it read ${got} of ${sent} messages)`);
    assert.ok(got < sent, 'it was not sent everything');
    const hmsgs = healthy.stompFrames.filter((f) => f.command === 'MESSAGE').length;
    assert.ok(hmsgs >= sent / 6 - 5, `the healthy reader got its messages (${hmsgs} of ${sent / 6})`);
    assert.ok(!healthy.isEnded, 'the healthy reader is still connected');
    const serr = senders.map((x) => x.stompFrames.find((f) => f.command === 'ERROR')?.headers.message).filter(Boolean);
    assert.deepEqual(serr, [], 'no sender got an ERROR');
    for (const x of [...senders, healthy]) x.destroy();
});

test('STOMP: an ERROR for a later frame does not swallow the RECEIPTs of SENDs accepted before it', async () => {
    const [x, y] = await Promise.all([makeMember('rcp'), makeMember('rcp')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    // one WebSocket message: a good SEND, then a SEND to a room x is not in
    s.send(OP.text, Buffer.concat([
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'good' }, chatBody(room, 'accepted before the error')),
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'bad' }, chatBody(roomOf(y, c3), 'refused')),
    ]));
    const err = await expectStompError(s, 'second SEND refused');
    assert.equal(err.headers['receipt-id'], 'bad');
    // RECEIPT = "the server has successfully processed the frame" (STOMP 1.2
    // RECEIPT): the good SEND was processed, so its RECEIPT came, before the ERROR
    const iR = s.stompFrames.findIndex((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'good');
    const iE = s.stompFrames.findIndex((f) => f.command === 'ERROR');
    assert.ok(iR >= 0, `the SEND before the refused one got its RECEIPT: ${s.stompFrames.map((f) => f.command)}`);
    assert.ok(iR < iE, 'RECEIPT before the ERROR');
    // and the acknowledged message is stored (once the store has it)
    let stored = [];
    for (const end = Date.now() + 8000; Date.now() < end; await sleep(100)) {
        const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: y.token });
        stored = h.json.messages.map((m) => m.message);
        if (stored.length) break;
    }
    assert.deepEqual(stored, ['accepted before the error'], 'the acknowledged message is stored, the refused one is not');
});

test('STOMP: while an ERROR or DISCONNECT waits for earlier SENDs, later frames are not processed', async () => {
    const [x, y] = await Promise.all([makeMember('wait'), makeMember('wait')]);
    const room = roomOf(x, y);
    const send = (text, receipt, r = room) => stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt }, chatBody(r, text));
    const e = await stompSession(x);
    e.send(OP.text, Buffer.concat([send('e1', 'e1'), send('refused', 'bad', roomOf(y, c3)), send('after error', 'e3')]));
    await e.ended;
    const d = await stompSession(x);
    d.send(OP.text, Buffer.concat([send('d1', 'd1'), stompEncode('DISCONNECT', { receipt: 'bye' }), send('after disconnect', 'd3')]));
    await d.ended;
    // a marker after both: once history has it, it has everything before it
    const marker = await settled(y, room);
    let stored = [];
    for (const end = Date.now() + 8000; Date.now() < end && !stored.includes(marker); await sleep(100)) {
        const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: y.token });
        stored = h.json.messages.map((m) => m.message);
    }
    assert.deepEqual(stored, ['e1', 'd1', marker]);
    assert.ok(!e.stompFrames.some((f) => f.headers['receipt-id'] === 'e3'));
    assert.ok(!d.stompFrames.some((f) => f.headers['receipt-id'] === 'd3'));
});

test('STOMP: the DISCONNECT RECEIPT comes after the RECEIPTs of the SENDs before it (1.2 "Graceful Disconnect")', async () => {
    const [x, y] = await Promise.all([makeMember('gd'), makeMember('gd')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    s.send(OP.text, Buffer.concat([
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 's1' }, chatBody(room, 'before bye 1')),
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 's2' }, chatBody(room, 'before bye 2')),
        stompEncode('DISCONNECT', { receipt: 'bye' }),
    ]));
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'bye');
    // the RECEIPT of DISCONNECT says every earlier frame was processed: the
    // SENDs are durable (in the history) and their RECEIPTs came first
    const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: y.token });
    const stored = h.json.messages.map((m) => m.message);
    const ids = s.stompFrames.filter((f) => f.command === 'RECEIPT').map((f) => f.headers['receipt-id']);
    assert.deepEqual(ids, ['s1', 's2', 'bye'], `RECEIPTs in order (history right after the DISCONNECT RECEIPT: ${JSON.stringify(stored)})`);
    assert.deepEqual(stored, ['before bye 1', 'before bye 2']);
});

test('STOMP: a COMMIT RECEIPT means the transaction\'s messages are durable', async () => {
    const [x, y] = await Promise.all([makeMember('cr'), makeMember('cr')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    s.send(OP.text, Buffer.concat([
        stompEncode('BEGIN', { transaction: 't' }),
        stompEncode('SEND', { destination: '/pub/chat/message', transaction: 't', 'content-type': 'application/json' }, chatBody(room, 'tx 1')),
        stompEncode('SEND', { destination: '/pub/chat/message', transaction: 't', 'content-type': 'application/json' }, chatBody(room, 'tx 2')),
        stompEncode('COMMIT', { transaction: 't', receipt: 'c' }),
    ]));
    await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'c');
    const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: y.token });
    assert.deepEqual(h.json.messages.map((m) => m.message), ['tx 1', 'tx 2'], 'in the history as soon as the COMMIT RECEIPT is in');
    s.destroy();
});

test('STOMP: a command line that is not a command gets ERROR', async () => {
    for (const text of [' \n\n\0', 'SEND \ndestination:/pub/chat/message\n\n\0', '\u00c9T\n\n\0']) {
        const s = await stompSession(a);
        s.send(OP.text, Buffer.from(text));
        await expectStompError(s, JSON.stringify(text));
    }
});

test('STOMP: a frame before CONNECT, and an unknown command, get ERROR then close', async () => {
    const c = await wsRaw();
    c.stomp('SUBSCRIBE', { id: 's', destination: `/sub/chat/side/${a.id}` });
    await expectStompError(c, 'SUBSCRIBE before CONNECT');
    const s = await stompSession(a);
    s.stomp('PUBLISH', { destination: '/x' });
    await expectStompError(s, 'PUBLISH');
});

test('STOMP over `ws` and @stomp/stompjs: a normal chat raises no protocol error', { timeout: 40000 }, async () => {
    const [x, y] = await Promise.all([makeMember('sj'), makeMember('sj')]);
    const room = roomOf(x, y);
    const errors = [];
    const mk = (m) => new Client({
        webSocketFactory: () => {
            const w = new WebSocket(WS_URL, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
            w.on('error', (e) => errors.push(e));
            return w;
        },
        connectHeaders: { login: m.loginId, passcode: m.token },
        reconnectDelay: 0,
        heartbeatIncoming: 4000,
        heartbeatOutgoing: 4000,
        debug: () => {},
    });
    const cx = mk(x), cy = mk(y);
    await Promise.all([cx, cy].map((cl) => new Promise((res, rej) => {
        cl.onConnect = res;
        cl.onStompError = (f) => rej(new Error(f.headers.message));
        cl.activate();
    })));
    const got = [];
    const receiptSub = 'rs';
    const subbed = new Promise((r) => cy.watchForReceipt(receiptSub, r));
    cy.subscribe(`/sub/chat/room/${room}`, (m) => got.push(JSON.parse(m.body)), { receipt: receiptSub });
    await subbed;
    const rcpt = new Promise((r) => cx.watchForReceipt('p1', r));
    cx.publish({ destination: '/pub/chat/message', body: chatBody(room, 'from stompjs'), headers: { 'content-type': 'application/json', receipt: 'p1' } });
    await rcpt;
    for (let i = 0; i < 50 && got.length < 1; i++) await sleep(100);
    assert.equal(got.length, 1);
    assert.equal(got[0].message, 'from stompjs');
    await sleep(9000); // two heart-beat periods both ways
    assert.ok(cx.connected && cy.connected, 'heart-beats keep both connected');
    await Promise.all([cx.deactivate(), cy.deactivate()]);
    assert.deepEqual(errors.map((e) => e.message), []);
});

after(() => {
    void BASE;
});
