// tests/e2e/stomp-features.test.mjs - the rest of STOMP through the real
// @stomp/stompjs: transactions (BEGIN/COMMIT/ABORT of SENDs), ack modes with
// ACK/NACK, UNSUBSCRIBE (with a receipt) stopping delivery, heart-beats both
// ways on an idle connection.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, roomOf, stomp, collectSynced, publish, closeAll, sleep, wsErrors } from './lib.mjs';

const clients = [];
after(() => closeAll(...clients));

async function pair(prefix) {
    const [a, b] = await Promise.all([makeMember(prefix), makeMember(prefix)]);
    const ca = await stomp(a);
    const cb = await stomp(b);
    clients.push(ca, cb);
    return { a, b, ca, cb, room: roomOf(a, b) };
}

test('a transaction delivers its SENDs on COMMIT, in order', async () => {
    const { ca, cb, room } = await pair('tx');
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    const tx = ca.begin();
    for (const message of ['tx one', 'tx two', 'tx three']) {
        ca.publish({ destination: '/pub/chat/message', body: JSON.stringify({ roomId: room, message }), headers: { transaction: tx.id } });
    }
    await sleep(500);
    assert.equal(box.messages.length, 0, 'nothing before COMMIT');
    tx.commit();
    const msgs = await box.waitFor(3);
    assert.deepEqual(msgs.map((m) => m.message), ['tx one', 'tx two', 'tx three']);
    assert.equal(ca.errors.length, 0);
});

test('ABORT drops the SENDs of a transaction; the connection goes on', async () => {
    const { ca, cb, room } = await pair('abort');
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    const tx = ca.begin();
    ca.publish({ destination: '/pub/chat/message', body: JSON.stringify({ roomId: room, message: 'never' }), headers: { transaction: tx.id } });
    tx.abort();
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'after the abort' });
    const msgs = await box.waitFor(1);
    await sleep(300);
    assert.deepEqual(box.messages.map((m) => m.message), ['after the abort']);
    assert.deepEqual(msgs.map((m) => m.message), ['after the abort']);
    assert.equal(ca.errors.length, 0);
});

test('a SEND in an unknown transaction is an ERROR', async () => {
    const { ca } = await pair('badtx');
    ca.publish({ destination: '/pub/chat/message', body: '{}', headers: { transaction: 'no-such-tx' } });
    for (let i = 0; i < 50 && ca.errors.length === 0; i++) await sleep(100);
    assert.ok(ca.errors.length > 0, 'a SEND in an unknown transaction gets an ERROR');
    assert.ok(ca.errors[0].headers.message);
});

test('ack client and client-individual: messages carry an ack id; ACK and NACK are accepted', async () => {
    const { a, ca, cb, room } = await pair('ack');
    const got = [];
    await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no SUBSCRIBE receipt')), 8000);
        ca.watchForReceipt('ack-sub', () => { clearTimeout(timer); resolve(); });
        ca.subscribe(`/sub/chat/room/${room}`, (m) => got.push(m), { ack: 'client-individual', receipt: 'ack-sub' });
    });
    const side = await collectSynced(ca, `/sub/chat/side/${a.id}`, { ack: 'client' });
    await publish(cb, '/pub/chat/message', { roomId: room, message: 'ack me' });
    await publish(cb, '/pub/chat/message', { roomId: room, message: 'nack me' });
    await side.waitFor(2);
    for (let i = 0; i < 50 && got.length < 2; i++) await sleep(100);
    assert.equal(got.length, 2);
    assert.ok(got[0].headers.ack, 'STOMP 1.2 MESSAGE of an ack subscription has an ack header');
    got[0].ack();
    got[1].nack();
    side.frames[1].ack(); // cumulative for ack:client
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'still fine' });
    await side.waitFor(3);
    assert.equal(ca.errors.length, 0, `no ERROR: ${ca.errors.map((e) => e.headers.message)}`);
});

test('UNSUBSCRIBE (with a receipt) stops delivery', async () => {
    const { ca, cb, room } = await pair('unsub');
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'before' });
    await box.waitFor(1);
    await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no UNSUBSCRIBE receipt')), 8000);
        cb.watchForReceipt('unsub-1', () => { clearTimeout(timer); resolve(); });
        box.sub.unsubscribe({ receipt: 'unsub-1' });
    });
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'after' });
    await sleep(400);
    assert.deepEqual(box.messages.map((m) => m.message), ['before']);
});

test('an idle connection with heart-beats both ways stays up', async () => {
    const a = await makeMember('hb');
    const b = await makeMember('hb');
    const c = await stomp(a, { heartbeatIncoming: 1000, heartbeatOutgoing: 1000 });
    clients.push(c);
    let closed = false;
    c.onWebSocketClose = () => { closed = true; };
    const [sx, sy] = c.connectedFrame.headers['heart-beat'].split(',').map(Number);
    assert.ok(sy > 0, 'the server wants client heart-beats');
    assert.ok(sx > 0, 'the server sends heart-beats');
    // idle for longer than both sides' intervals (+ grace)
    await sleep(Math.min(15000, Math.max(sx, sy, 1000) * 1.5 + 500));
    assert.equal(closed, false, 'still connected');
    assert.equal(c.connected, true);
    await publish(c, '/pub/chat/message', { roomId: roomOf(a, b), message: 'still here' });
    assert.deepEqual(wsErrors.map((e) => e.message), []);
});
