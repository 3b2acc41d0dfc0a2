// tests/e2e/stomp-features.test.mjs - the rest of STOMP through the real
// @stomp/stompjs: transactions (BEGIN/COMMIT/ABORT of SENDs), ack modes with
// ACK/NACK, UNSUBSCRIBE (with a receipt) stopping delivery, heart-beats both
// ways on an idle connection.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, roomOf, stomp, collectSynced, publish, closeAll, sleep, wsErrors, settle, uid, HEARTBEAT } from './lib.mjs';

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
    // a SEND outside the transaction, after its SENDs, is delivered at once:
    // when it arrived, nothing of the transaction may have come
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'outside' });
    await box.waitFor((msgs) => msgs.some((m) => m.message === 'outside'));
    assert.deepEqual(box.messages.map((m) => m.message), ['outside'], 'nothing of the transaction before COMMIT');
    tx.commit();
    await box.waitFor(4);
    await settle(ca, room, [box]);
    assert.deepEqual(box.messages.map((m) => m.message), ['outside', 'tx one', 'tx two', 'tx three'], 'COMMIT delivers each once, in order');
    assert.equal(ca.errors.length, 0);
});

test('ABORT drops the SENDs of a transaction; the connection goes on', async () => {
    const { ca, cb, room } = await pair('abort');
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    const tx = ca.begin();
    ca.publish({ destination: '/pub/chat/message', body: JSON.stringify({ roomId: room, message: 'never' }), headers: { transaction: tx.id } });
    tx.abort();
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'after the abort' });
    // the SEND after the ABORT comes after anything of the transaction would
    await box.waitFor((msgs) => msgs.some((m) => m.message === 'after the abort'));
    assert.deepEqual(box.messages.map((m) => m.message), ['after the abort'], 'the aborted SEND never came');
    assert.equal(ca.errors.length, 0);
});

test('a SEND in an unknown transaction is an ERROR', async () => {
    const { ca } = await pair('badtx');
    ca.publish({ destination: '/pub/chat/message', body: '{}', headers: { transaction: 'no-such-tx' } });
    for (let i = 0; i < 50 && ca.errors.length === 0; i++) await sleep(100);
    assert.ok(ca.errors.length > 0, 'a SEND in an unknown transaction gets an ERROR');
    assert.ok(ca.errors[0].headers.message);
});

test('ack client and client-individual: messages carry an ack id; ACK and NACK are answered; nothing is redelivered', async () => {
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
    assert.notEqual(got[0].headers.ack, got[1].headers.ack, 'each MESSAGE has its own ack id');
    assert.ok(side.frames[1].headers.ack, 'ack:client MESSAGEs have an ack header too');
    // each ACK/NACK is processed: the server answers its receipt
    const answered = (fn) => new Promise((resolve, reject) => {
        const receipt = uid('ack-');
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for ${receipt}`)), 8000);
        ca.watchForReceipt(receipt, () => { clearTimeout(timer); resolve(); });
        fn({ receipt });
    });
    await answered((h) => got[0].ack(h));
    await answered((h) => got[1].nack(h));
    await answered((h) => side.frames[1].ack(h)); // cumulative for ack:client
    // messages are durable before delivery: a NACKed or unacknowledged one is
    // not delivered again, and delivery goes on
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'still fine' });
    await side.waitFor(3);
    await settle(cb, room, [side]);
    for (let i = 0; i < 50 && !got.some((m) => JSON.parse(m.body).message.startsWith('settled-')); i++) await sleep(100);
    assert.deepEqual(got.map((m) => JSON.parse(m.body).message).filter((t) => !t.startsWith('settled-')),
        ['ack me', 'nack me', 'still fine'], 'the ack:client-individual subscription got each message once');
    assert.deepEqual(side.messages.map((m) => m.message), ['ack me', 'nack me', 'still fine'], 'the ack:client one too');
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
    // a second subscription of the same room, still active, settles the stream:
    // when 'after' and a later marker reached it, they would have reached box too
    const other = await collectSynced(cb, `/sub/chat/room/${room}`);
    await publish(ca, '/pub/chat/message', { roomId: room, message: 'after' });
    await settle(ca, room, [other]);
    assert.deepEqual(other.messages.map((m) => m.message), ['after']);
    assert.deepEqual(box.messages.map((m) => m.message), ['before'], 'nothing after the UNSUBSCRIBE');
});

test('an idle connection with heart-beats both ways stays up', async () => {
    const a = await makeMember('hb');
    const b = await makeMember('hb');
    const c = await stomp(a, { heartbeatIncoming: 1000, heartbeatOutgoing: 1000 });
    clients.push(c);
    let closed = false;
    c.onWebSocketClose = () => { closed = true; };
    const [sx, sy] = c.connectedFrame.headers['heart-beat'].split(',').map(Number);
    assert.deepEqual([sx, sy], HEARTBEAT, 'CONNECTED heart-beat is the configured heartbeat_send,heartbeat_recv');
    // count what arrives on the socket: server heart-beats are bare EOLs
    let beats = 0;
    const ws = c.webSocket;
    ws.addEventListener('message', (ev) => {
        if (ev.data === '\n' || ev.data === '\r\n' || (ev.data instanceof ArrayBuffer && ev.data.byteLength <= 2)) beats++;
    });
    // idle for longer than both sides' intervals (+ grace)
    await sleep(Math.min(15000, Math.max(sx, sy, 1000) * 1.5 + 500));
    assert.equal(closed, false, 'still connected');
    // the server beats every max(sx, 1000) ms
    assert.ok(beats >= 1, `server heart-beats arrived (${beats} in ${Math.max(sx, sy, 1000) * 1.5 + 500} ms)`);
    assert.equal(c.connected, true);
    await publish(c, '/pub/chat/message', { roomId: roomOf(a, b), message: 'still here' });
    assert.deepEqual(wsErrors.map((e) => e.message), []);
});
