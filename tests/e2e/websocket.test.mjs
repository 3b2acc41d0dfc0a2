// tests/e2e/websocket.test.mjs - RFC 6455 at /ws with hand-made frames (the
// `ws` package refuses to send bad ones): close codes 1002 (unmasked frame,
// reserved bits, bad opcode, bad continuation, big or fragmented control
// frames), 1007 (invalid UTF-8 text), 1009 (too big); ping/pong; the closing
// handshake; STOMP frames split over fragments and several frames in one
// message; subprotocol choice.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { rawWs, makeMember, roomOf, HOST, WS_URL, PROTOCOLS, pageStomp } from './lib.mjs';

const OP = { cont: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };
let a, b;
before(async () => {
    [a, b] = await Promise.all([makeMember('ws'), makeMember('ws')]);
});

function connectFrame(member) {
    return `CONNECT\naccept-version:1.2\nhost:${HOST}\nlogin:${member.loginId}\npasscode:${member.token}\nheart-beat:0,0\n\n\0`;
}

/* the STOMP frames received on a raw socket so far */
function stompFrames(conn) {
    const S = pageStomp();
    const p = new S.FrameParser();
    const out = [];
    for (const f of conn.frames) if (f.opcode === OP.text || f.opcode === OP.binary) out.push(...p.push(new Uint8Array(f.payload)));
    return out;
}

async function waitStomp(conn, command, ms = 8000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        const f = stompFrames(conn).find((x) => x.command === command);
        if (f) return f;
        await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${command}; have ${stompFrames(conn).map((f) => f.command)}`);
}

test('the handshake chooses v12.stomp', async () => {
    const conn = await rawWs({ protocol: 'v10.stomp, v12.stomp, v11.stomp' });
    assert.equal(conn.headers['sec-websocket-protocol'], 'v12.stomp');
    conn.destroy();
    const c11 = await rawWs({ protocol: 'v11.stomp' });
    assert.equal(c11.headers['sec-websocket-protocol'], 'v11.stomp');
    c11.destroy();
});

test('an unmasked client frame: close 1002', async () => {
    const conn = await rawWs();
    conn.send(OP.text, 'CONNECT\n\n\0', { mask: false });
    assert.equal(await conn.closeCode(), 1002);
});

test('reserved bits, unknown opcodes, stray continuations, bad control frames: close 1002', async () => {
    const cases = [
        ['RSV1 without an extension', (c) => c.send(OP.text, 'x', { rsv: 0x40 })],
        ['opcode 3', (c) => c.send(3, 'x')],
        ['opcode 0xB', (c) => c.send(0xb, 'x')],
        ['continuation with nothing to continue', (c) => c.send(OP.cont, 'x')],
        ['text inside a fragmented message', (c) => { c.send(OP.text, 'ab', { fin: false }); c.send(OP.text, 'cd'); }],
        ['ping longer than 125', (c) => c.send(OP.ping, Buffer.alloc(126, 1))],
        ['fragmented ping', (c) => c.send(OP.ping, 'x', { fin: false })],
        ['close with a 1-byte payload', (c) => c.send(OP.close, Buffer.from([3]))],
        ['close with code 1005 on the wire', (c) => c.send(OP.close, Buffer.from([0x03, 0xed]))],
    ];
    for (const [what, act] of cases) {
        const conn = await rawWs();
        act(conn);
        assert.equal(await conn.closeCode(), 1002, what);
    }
});

test('invalid UTF-8 in a text message: close 1007', async () => {
    const cases = [
        ['bad byte', Buffer.from([0x43, 0x4f, 0xc3, 0x28, 0x0a, 0x0a, 0x00])],
        ['overlong', Buffer.from([0xc0, 0xaf])],
        ['surrogate', Buffer.from([0xed, 0xa0, 0x80])],
        ['truncated at the end', Buffer.from([0x41, 0xe2, 0x82])],
    ];
    for (const [what, bytes] of cases) {
        const conn = await rawWs();
        conn.send(OP.text, bytes);
        assert.equal(await conn.closeCode(), 1007, what);
    }
    // split between fragments is still checked
    const conn = await rawWs();
    conn.send(OP.text, Buffer.from([0x41, 0xe2]), { fin: false });
    conn.send(OP.cont, Buffer.from([0x28, 0xa1]));
    assert.equal(await conn.closeCode(), 1007, 'bad sequence across fragments');
});

test('a valid UTF-8 character split across fragments is fine', async () => {
    const conn = await rawWs();
    const bytes = Buffer.from(connectFrame(a));
    const cut = 3;
    conn.send(OP.text, bytes.subarray(0, cut), { fin: false });
    conn.send(OP.ping, 'mid-message ping');
    conn.send(OP.cont, bytes.subarray(cut, bytes.length - 5), { fin: false });
    conn.send(OP.cont, bytes.subarray(bytes.length - 5));
    const f = await waitStomp(conn, 'CONNECTED');
    assert.equal(f.headers.version, '1.2');
    const pong = conn.frames.find((x) => x.opcode === OP.pong);
    assert.ok(pong, 'a ping inside a fragmented message is answered');
    assert.equal(pong.payload.toString(), 'mid-message ping');
    conn.destroy();
});

test('a frame bigger than the limit: close 1009', async () => {
    // announce 1 GiB and send only the mask: the length alone must be refused
    const conn = await rawWs();
    const head = Buffer.alloc(14);
    head[0] = 0x80 | OP.text;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(1n << 30n, 2);
    conn.write(head);
    assert.equal(await conn.closeCode(), 1009);
    // a fragmented message that grows past the limit
    const frag = await rawWs();
    const chunk = Buffer.alloc(60000, 0x61);
    frag.send(OP.text, chunk, { fin: false });
    let code = null;
    const codeP = frag.closeCode(20000).then((c) => { code = c; });
    for (let i = 0; i < 400 && code === null && !frag.sock.destroyed; i++) {
        frag.send(OP.cont, chunk, { fin: false });
        await new Promise((r) => setImmediate(r));
    }
    await codeP;
    assert.equal(code, 1009, 'a message reassembled past the limit');
});

test('the `ws` client sees 1009 for an oversized message', async () => {
    const ws = new WebSocket(WS_URL, PROTOCOLS);
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    const closed = new Promise((r) => ws.once('close', (code) => r(code)));
    ws.on('error', () => {});
    ws.send('x'.repeat(16 * 1024 * 1024));
    assert.equal(await closed, 1009);
});

test('ping gets a pong with the same payload', async () => {
    const conn = await rawWs();
    conn.send(OP.ping, 'hello ping');
    const end = Date.now() + 5000;
    let pong;
    while (!pong && Date.now() < end) {
        pong = conn.frames.find((f) => f.opcode === OP.pong);
        if (!pong) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(pong, 'pong');
    assert.equal(pong.payload.toString(), 'hello ping');
    conn.destroy();
});

test('the closing handshake: our close 1000 is echoed, then the server ends TCP', async () => {
    const conn = await rawWs();
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(1000);
    conn.send(OP.close, Buffer.concat([payload, Buffer.from('bye')]));
    assert.equal(await conn.closeCode(), 1000);
    const ended = await Promise.race([conn.closed.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
    assert.ok(ended, 'the server closes the TCP connection');
});

test('several STOMP frames in one WebSocket message, binary frames, and heart-beat EOLs', async () => {
    const conn = await rawWs();
    const room = roomOf(a, b);
    const body = JSON.stringify({ roomId: room, message: '한 메시지에 여러 프레임' });
    const len = Buffer.byteLength(body);
    const text = connectFrame(a)
        + '\n\r\n'
        + `SUBSCRIBE\nid:s1\ndestination:/sub/chat/room/${room}\nreceipt:sub-1\n\n\0`
        + `SEND\ndestination:/pub/chat/message\ncontent-type:application/json\ncontent-length:${len}\nreceipt:send-1\n\n${body}\0\n`;
    conn.send(OP.binary, Buffer.from(text));
    const msg = await waitStomp(conn, 'MESSAGE');
    assert.equal(JSON.parse(msg.body).message, '한 메시지에 여러 프레임');
    assert.equal(msg.headers.subscription, 's1');
    const receipts = [];
    const end = Date.now() + 5000;
    while (receipts.length < 2 && Date.now() < end) {
        receipts.splice(0, receipts.length, ...stompFrames(conn).filter((f) => f.command === 'RECEIPT').map((f) => f.headers['receipt-id']));
        await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(receipts.sort(), ['send-1', 'sub-1']);
    conn.destroy();
});

test('one STOMP frame split over several WebSocket messages', async () => {
    const conn = await rawWs();
    const bytes = Buffer.from(connectFrame(a));
    for (let i = 0; i < bytes.length; i += 7) conn.send(OP.text, bytes.subarray(i, Math.min(bytes.length, i + 7)));
    const f = await waitStomp(conn, 'CONNECTED');
    assert.equal(f.headers.version, '1.2');
    conn.destroy();
});

test('server heart-beats arrive when asked for', async () => {
    const conn = await rawWs();
    conn.send(OP.text, connectFrame(a).replace('heart-beat:0,0', 'heart-beat:0,1000'));
    const f = await waitStomp(conn, 'CONNECTED');
    const [sx] = f.headers['heart-beat'].split(',').map(Number);
    assert.ok(sx > 0, `the server offers to send heart-beats (${f.headers['heart-beat']})`);
    const wait = Math.max(sx, 1000) * 2 + 1000;
    await new Promise((r) => setTimeout(r, wait));
    const eols = conn.frames.filter((x) => x.opcode === OP.text && /^[\r\n]+$/.test(x.payload.toString()));
    assert.ok(eols.length >= 1, `EOL heart-beats within ${wait} ms`);
    conn.destroy();
});
