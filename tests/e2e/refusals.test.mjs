// tests/e2e/refusals.test.mjs - every STOMP refusal of the contract gets an
// ERROR frame with a `message` header and then the close: no token, a bad
// token, a room the member is not in, an unknown member's room, someone else's
// side, malformed frames, frames before CONNECT, bad JSON bodies, unknown
// destinations, a cookie from a foreign Origin.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, roomOf, rawStomp, rawConnected, HOST, ORIGIN } from './lib.mjs';

let a, b, c;
before(async () => {
    [a, b, c] = await Promise.all([makeMember('ref'), makeMember('ref'), makeMember('ref')]);
});

/* expectError(conn): an ERROR with a message header, then the socket closes;
 * the ERROR is received before the close */
async function expectError(conn, what) {
    const err = await conn.nextFrame('ERROR');
    assert.ok(err.headers.message && err.headers.message.length > 0, `${what}: ERROR has a message header`);
    const closed = await Promise.race([
        conn.closed,
        new Promise((r) => setTimeout(() => r(null), 5000)),
    ]);
    assert.ok(closed, `${what}: the server closes the connection after the ERROR`);
    assert.equal(conn.parseError, null, `${what}: the server's frames parse`);
    return err;
}

test('CONNECT without a token: ERROR, then close', async () => {
    const conn = await rawStomp();
    conn.frame('CONNECT', { 'accept-version': '1.2', host: HOST });
    await expectError(conn, 'no token');
    assert.equal(conn.frames.filter((f) => f.command === 'CONNECTED').length, 0, 'never CONNECTED');
});

test('CONNECT with a wrong token or wrong login: ERROR', async () => {
    let conn = await rawStomp();
    conn.frame('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: 'x'.repeat(43) });
    await expectError(conn, 'bad passcode');
    conn = await rawStomp();
    conn.frame('CONNECT', { 'accept-version': '1.2', host: HOST, Authorization: 'Bearer nope' });
    await expectError(conn, 'bad bearer');
    // someone else's login with my token
    conn = await rawStomp();
    conn.frame('CONNECT', { 'accept-version': '1.2', host: HOST, login: b.loginId, passcode: a.token });
    await expectError(conn, 'login does not match the token');
});

test('STOMP frame (instead of CONNECT) and host-less CONNECT are fine', async () => {
    const conn = await rawStomp();
    conn.frame('STOMP', { 'accept-version': '1.2', login: a.loginId, passcode: a.token });
    const f = await conn.nextFrame('CONNECTED');
    assert.equal(f.headers.version, '1.2');
    conn.close();
});

test('SUBSCRIBE to a room the member is not in: ERROR', async () => {
    const conn = await rawConnected(a);
    conn.frame('SUBSCRIBE', { id: 's1', destination: `/sub/chat/room/${roomOf(b, c)}` });
    await expectError(conn, 'foreign room');
});

test('SUBSCRIBE to a room with an unknown member: ERROR', async () => {
    const conn = await rawConnected(a);
    conn.frame('SUBSCRIBE', { id: 's1', destination: `/sub/chat/room/${a.id}&999999999` });
    await expectError(conn, 'unknown member');
});

test('SUBSCRIBE to someone else\'s side: ERROR', async () => {
    const conn = await rawConnected(a);
    conn.frame('SUBSCRIBE', { id: 's1', destination: `/sub/chat/side/${b.id}` });
    await expectError(conn, 'foreign side');
});

test('SUBSCRIBE to an unknown destination: ERROR', async () => {
    const conn = await rawConnected(a);
    conn.frame('SUBSCRIBE', { id: 's1', destination: '/topic/everything' });
    await expectError(conn, 'unknown destination');
});

test('SEND to a room the member is not in: ERROR with the receipt-id', async () => {
    const conn = await rawConnected(a);
    conn.frame('SEND', { destination: '/pub/chat/message', receipt: 'r-x', 'content-type': 'application/json' },
        JSON.stringify({ roomId: roomOf(b, c), message: 'not mine' }));
    const err = await expectError(conn, 'send to foreign room');
    assert.equal(err.headers['receipt-id'], 'r-x');
    assert.equal(conn.frames.filter((f) => f.command === 'RECEIPT').length, 0, 'no RECEIPT for a refused SEND');
});

test('SEND to a room with an unknown member, or a malformed room id: ERROR', async () => {
    for (const roomId of [`${a.id}&999999999`, 'abc', `${a.id}`, `${a.id}&${a.id}`, `${a.id}&${b.id}&${c.id}`, '']) {
        const conn = await rawConnected(a);
        conn.frame('SEND', { destination: '/pub/chat/message', receipt: 'r1' }, JSON.stringify({ roomId, message: 'hi' }));
        await expectError(conn, `roomId ${JSON.stringify(roomId)}`);
    }
});

test('SEND with a bad body: ERROR', async () => {
    const room = roomOf(a, b);
    const bodies = [
        'not json',
        '{"roomId":',
        JSON.stringify({ roomId: room }),            // no message
        JSON.stringify({ roomId: room, message: 5 }),
        JSON.stringify({ message: 'no room' }),
        JSON.stringify([room, 'hi']),
    ];
    for (const body of bodies) {
        const conn = await rawConnected(a);
        conn.frame('SEND', { destination: '/pub/chat/message', receipt: 'r1' }, body);
        await expectError(conn, `body ${body}`);
    }
});

test('SEND to an unknown destination: ERROR', async () => {
    const conn = await rawConnected(a);
    conn.frame('SEND', { destination: '/pub/elsewhere', receipt: 'r1' }, JSON.stringify({ roomId: roomOf(a, b), message: 'x' }));
    await expectError(conn, 'unknown destination');
});

test('a frame before CONNECT: ERROR', async () => {
    const conn = await rawStomp();
    conn.frame('SEND', { destination: '/pub/chat/message' }, JSON.stringify({ roomId: roomOf(a, b), message: 'x' }));
    await expectError(conn, 'SEND before CONNECT');
});

test('malformed STOMP frames: ERROR with a message header', async () => {
    const bad = [
        ['unknown command', 'HELLO\n\n\0'],
        ['header without a colon', 'SUBSCRIBE\nid s1\ndestination:/sub/chat/side/1\n\n\0'],
        ['content-length not followed by NUL', `SEND\ndestination:/pub/chat/message\ncontent-length:5\n\n{"roomId":"x"}\0`],
        ['content-length not a number', 'SEND\ndestination:/pub/chat/message\ncontent-length:abc\n\n{}\0'],
        ['invalid header escape', 'SUBSCRIBE\nid:s\\x1\ndestination:/sub/chat/side/1\n\n\0'],
        ['lower-case command', 'subscribe\nid:s1\ndestination:/x\n\n\0'],
    ];
    for (const [what, text] of bad) {
        const conn = await rawConnected(a);
        conn.send(text);
        await expectError(conn, what);
    }
});

test('a frame larger than the limit: ERROR, not unbounded memory', async () => {
    const conn = await rawConnected(a);
    // 2 MiB of headers, in 64 KiB WebSocket messages, never finished
    const line = `x-pad:${'p'.repeat(1000)}\n`;
    conn.send('SEND\ndestination:/pub/chat/message\n');
    let sent = 0;
    try {
        while (sent < 2 * 1024 * 1024 && conn.ws.readyState === 1) {
            conn.send(line.repeat(64));
            sent += line.length * 64;
        }
    } catch {
        // the socket may already be closed
    }
    const closed = await Promise.race([conn.closed, new Promise((r) => setTimeout(() => r(null), 8000))]);
    assert.ok(closed, 'the server closes a connection that sends an endless frame');
    const err = conn.frames.find((f) => f.command === 'ERROR');
    if (err) assert.ok(err.headers.message);
    else assert.ok([1009, 1008, 1002].includes(closed.code), `closed with ${closed.code}`);
});

test('a cookie from a foreign Origin is not accepted', async () => {
    let conn;
    try {
        conn = await rawStomp({ headers: { Cookie: a.cookie }, origin: 'http://evil.example' });
    } catch (e) {
        assert.match(e.message, /handshake refused: 403/, 'refused at the handshake');
        return;
    }
    conn.frame('CONNECT', { 'accept-version': '1.2', host: HOST });
    await expectError(conn, 'cookie with a foreign Origin');
});

test('a cookie with the page\'s Origin is accepted', async () => {
    const conn = await rawStomp({ headers: { Cookie: a.cookie }, origin: ORIGIN });
    conn.frame('CONNECT', { 'accept-version': '1.2', host: HOST });
    await conn.nextFrame('CONNECTED');
    conn.close();
});

test('DISCONNECT with a receipt: RECEIPT, then the server closes', async () => {
    const conn = await rawConnected(a);
    conn.frame('DISCONNECT', { receipt: 'bye-1' });
    const r = await conn.nextFrame('RECEIPT');
    assert.equal(r.headers['receipt-id'], 'bye-1');
    const closed = await Promise.race([conn.closed, new Promise((res) => setTimeout(() => res(null), 5000))]);
    assert.ok(closed, 'closed after DISCONNECT');
});

test('STOMP 1.0 and 1.1 are negotiated too', async () => {
    for (const [accept, version] of [['1.0', '1.0'], ['1.1', '1.1'], ['1.0,1.1', '1.1'], ['1.1,1.2', '1.2']]) {
        const conn = await rawStomp();
        conn.frame('CONNECT', { 'accept-version': accept, host: HOST, login: a.loginId, passcode: a.token });
        const f = await conn.nextFrame('CONNECTED');
        assert.equal(f.headers.version, version, `accept-version ${accept}`);
        conn.close();
    }
    const conn = await rawStomp();
    conn.frame('CONNECT', { 'accept-version': '2.0', host: HOST, login: a.loginId, passcode: a.token });
    const err = await conn.nextFrame('ERROR');
    assert.ok(err.headers.message, 'an unsupported version gets an ERROR');
});
