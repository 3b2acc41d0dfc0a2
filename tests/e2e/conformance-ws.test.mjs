// tests/e2e/conformance-ws.test.mjs - chatd seen by an independent client
// written from the public specifications only (tests/e2e/conformance-lib.mjs):
// the WebSocket handshake and frames (RFC 6455): accept key, versions,
// subprotocols, Origin, close codes, UTF-8, fragments, ping/pong, lengths.
//
// Run: tests/e2e/run.sh etc/chatd.conf -- node --test tests/e2e/conformance-ws.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { http, sleep, HOST, PORT, WS_URL, ORIGIN } from './lib.mjs';
import { a, b, fixtures, OP, rawHttp, req, mask, encodeFrame, wsRaw, stompEncode, stompSession, expectStompError } from './conformance-lib.mjs';

fixtures();

/* ==================== WebSocket handshake ==================== */

test('WS handshake: 101 with the right Sec-WebSocket-Accept and Upgrade/Connection', async () => {
    const c = await wsRaw();
    assert.equal(c.status, 101);
    assert.equal(c.headers.upgrade.toLowerCase(), 'websocket');
    assert.match(c.headers.connection, /upgrade/i);
    assert.equal(c.protocol, 'v12.stomp');
    c.destroy();
});

test('WS handshake: missing or invalid Sec-WebSocket-Key gets 400', async () => {
    const bases = ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13'];
    for (const k of [null, 'abc', '!!!!!!!!!!!!!!!!!!!!!!==', 'AAAAAAAAAAAAAAAAAAAA', `${crypto.randomBytes(17).toString('base64')}`]) {
        const r = await rawHttp(req('GET /ws HTTP/1.1', k === null ? bases : [...bases, `Sec-WebSocket-Key: ${k}`]));
        assert.equal(r.responses[0].status, 400, `key ${k}: ${r.responses[0].statusLine}`);
    }
});

test('WS handshake: two Sec-WebSocket-Key fields get 400 (RFC 6455 11.3.1: MUST NOT appear more than once)', async () => {
    const k = crypto.randomBytes(16).toString('base64');
    const r = await rawHttp(req('GET /ws HTTP/1.1', ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${k}`, `Sec-WebSocket-Key: ${k}`]));
    assert.equal(r.responses[0].status, 400, r.responses[0].statusLine);
});

test('WS handshake: version other than 13 gets 426 with Sec-WebSocket-Version: 13 (RFC 6455 4.2.2, 4.4)', async () => {
    for (const v of ['8', '12', '14', 'x']) {
        const err = await wsRaw({ version: v }).then(() => null, (e) => e);
        assert.ok(err, `version ${v} refused`);
        assert.equal(err.status, 426, `version ${v}`);
        assert.match(err.headers['sec-websocket-version'] || '', /\b13\b/);
    }
});

test('WS handshake: without Upgrade it is not a WebSocket (426 or 400); other paths 404', async () => {
    const r = await rawHttp(req('GET /ws HTTP/1.1', ['Connection: close']));
    assert.ok([400, 426].includes(r.responses[0].status), r.responses[0].statusLine);
    const other = await wsRaw({ path: '/not-ws' }).then(() => null, (e) => e);
    assert.ok(other && other.status >= 400, 'a handshake elsewhere than /ws is refused');
});

test('WS handshake: subprotocol selection and no subprotocol', async () => {
    for (const [offer, want] of [['v12.stomp', 'v12.stomp'], ['v11.stomp', 'v11.stomp'], ['v10.stomp', 'v10.stomp'],
        ['v10.stomp, v11.stomp', 'v11.stomp'], ['v10.stomp, v12.stomp, v11.stomp', 'v12.stomp'], ['mqtt, v11.stomp', 'v11.stomp']]) {
        const c = await wsRaw({ protocol: offer });
        assert.equal(c.protocol, want, `offer ${offer}`);
        c.destroy();
    }
    // no offer: no Sec-WebSocket-Protocol in the answer (RFC 6455 4.2.2 /subprotocol/)
    const none = await wsRaw({ protocol: null });
    assert.equal(none.protocol, undefined);
    none.destroy();
    // nothing acceptable: the header must not be sent (the server may still accept)
    const other = await wsRaw({ protocol: 'mqtt' }).then((c) => c, (e) => e);
    if (other instanceof Error) assert.ok(other.status >= 400);
    else {
        assert.equal(other.protocol, undefined, 'no subprotocol the client did not offer');
        other.destroy();
    }
});

test('WS handshake: a list header sent as several field lines is one list (RFC 6455 11.3.4, RFC 9110 5.3)', async () => {
    // Sec-WebSocket-Protocol "MAY appear multiple times ... logically the same as a single field"
    const split = await wsRaw({ protocol: 'mqtt', extra: ['Sec-WebSocket-Protocol: v11.stomp'] });
    assert.equal(split.protocol, 'v11.stomp', 'the offer on the second line is seen');
    split.destroy();
    // Connection is a list field too
    const key = crypto.randomBytes(16).toString('base64');
    const r = await rawHttp(`GET /ws HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`, { ms: 1000 });
    assert.match(r.text, /^HTTP\/1\.1 101 /, `Connection: keep-alive + Connection: Upgrade: ${r.text.split('\r\n')[0]}`);
});

test('WS handshake: the answered subprotocol is one of the offered values, exactly (RFC 6455 4.1, 4.2.2)', async () => {
    const c = await wsRaw({ protocol: 'V12.STOMP' });
    assert.ok(c.protocol === undefined || c.protocol === 'V12.STOMP', `offered V12.STOMP, answered ${c.protocol}`);
    c.destroy();
    // the `ws` client fails the connection when it is not
    const ws = new WebSocket(WS_URL, ['V12.STOMP']);
    const res = await new Promise((r) => { ws.once('open', () => r('open')); ws.once('error', (e) => r(e.message)); });
    ws.terminate();
    assert.equal(res, 'open', `ws: ${res}`);
});

test('WS handshake: a permessage-deflate offer is declined (no extension answered)', async () => {
    const c = await wsRaw({ extra: ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'] });
    assert.equal(c.headers['sec-websocket-extensions'], undefined);
    // and RSV1 is then a protocol error
    c.send(OP.text, 'x', { rsv: 0x40 });
    assert.equal(await c.closeCode(), 1002);
});

test('WS handshake: the session cookie counts only with an allowed Origin', async () => {
    // allowed Origin: CONNECT without credentials is authenticated by the cookie
    const ok = await wsRaw({ extra: [`Cookie: ${a.cookie}`, `Origin: ${ORIGIN}`] });
    ok.stomp('CONNECT', { 'accept-version': '1.2', host: HOST });
    const f = await ok.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
    assert.equal(f.command, 'CONNECTED', f.headers.message);
    ok.destroy();
    // foreign, "null" or missing Origin: the cookie is not enough
    for (const extra of [[`Cookie: ${a.cookie}`, 'Origin: http://evil.example'], [`Cookie: ${a.cookie}`, 'Origin: null'],
        [`Cookie: ${a.cookie}`, `Origin: ${ORIGIN}.evil.example`]]) {
        let c;
        try {
            c = await wsRaw({ extra });
        } catch (e) {
            assert.equal(e.status, 403, `${extra[1]}: refused at the handshake with 403`);
            continue;
        }
        c.stomp('CONNECT', { 'accept-version': '1.2', host: HOST });
        await expectStompError(c, extra[1]);
    }
    // a foreign Origin with explicit passcode credentials works (no cookie trusted)
    let c;
    try {
        c = await wsRaw({ extra: ['Origin: http://other.example'] });
    } catch (e) {
        assert.equal(e.status, 403);
        return;
    }
    c.stomp('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token });
    const g = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
    assert.equal(g.command, 'CONNECTED');
    c.destroy();
});

/* ==================== WebSocket frames ==================== */

async function expectClose(act, code, what) {
    const c = await wsRaw();
    act(c);
    const cf = await c.closeFrame();
    assert.ok(cf, `${what}: a close frame before the TCP close`);
    assert.equal(cf.code, code, `${what}: close code`);
    const ended = await Promise.race([c.ended.then(() => true), sleep(5000).then(() => false)]);
    assert.ok(ended, `${what}: TCP closed after the close frame`);
    for (const f of c.frames) assert.equal(f.masked, false, `${what}: server frames are never masked`);
    return c;
}

test('WS frames: protocol errors close with 1002 (RFC 6455 5.1, 5.2, 5.4, 5.5)', async () => {
    const cases = [
        ['unmasked client frame', (c) => c.send(OP.text, 'x', { mask: false })],
        ['RSV1', (c) => c.send(OP.text, 'x', { rsv: 0x40 })],
        ['RSV2', (c) => c.send(OP.text, 'x', { rsv: 0x20 })],
        ['RSV3', (c) => c.send(OP.text, 'x', { rsv: 0x10 })],
        ['RSV on a ping', (c) => c.send(OP.ping, 'x', { rsv: 0x10 })],
        ['opcode 3', (c) => c.send(3, 'x')],
        ['opcode 7', (c) => c.send(7, 'x')],
        ['opcode 0xB', (c) => c.send(0xb, 'x')],
        ['opcode 0xF', (c) => c.send(0xf, '')],
        ['continuation without start', (c) => c.send(OP.cont, 'x')],
        ['final continuation without start', (c) => c.send(OP.cont, 'x', { fin: true })],
        ['text during a fragmented text', (c) => { c.send(OP.text, 'ab', { fin: false }); c.send(OP.text, 'cd'); }],
        ['binary during a fragmented text', (c) => { c.send(OP.text, 'ab', { fin: false }); c.send(OP.binary, 'cd'); }],
        ['fragmented ping', (c) => c.send(OP.ping, 'x', { fin: false })],
        ['fragmented close', (c) => c.send(OP.close, Buffer.from([3, 232]), { fin: false })],
        ['ping of 126 bytes', (c) => c.send(OP.ping, Buffer.alloc(126, 0x61))],
        ['pong of 126 bytes', (c) => c.send(OP.pong, Buffer.alloc(126, 0x61))],
        ['close of 126 bytes', (c) => c.send(OP.close, Buffer.concat([Buffer.from([3, 232]), Buffer.alloc(124, 0x61)]))],
        ['close with a 1-byte payload', (c) => c.send(OP.close, Buffer.from([3]))],
    ];
    for (const [what, act] of cases) await expectClose(act, 1002, what);
});

test('WS frames: invalid close codes on the wire get 1002 (RFC 6455 7.4.1, 7.4.2)', async () => {
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]) {
        const p = Buffer.alloc(2);
        p.writeUInt16BE(code);
        await expectClose((c) => c.send(OP.close, p), 1002, `close code ${code}`);
    }
});

test('WS frames: valid close codes are echoed, then the server closes TCP (RFC 6455 5.5.1, 7.1.1)', async () => {
    for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]) {
        const p = Buffer.alloc(2);
        p.writeUInt16BE(code);
        await expectClose((c) => c.send(OP.close, Buffer.concat([p, Buffer.from('bye ✓')])), code, `close ${code}`);
    }
    // an empty close is answered with a close (no code, or 1000)
    const c = await wsRaw();
    c.send(OP.close, Buffer.alloc(0));
    const cf = await c.closeFrame();
    assert.ok(cf, 'a close frame answers an empty close');
    assert.ok([1005, 1000].includes(cf.code), `empty close answered with ${cf.code}`);
    await c.ended;
});

test('WS frames: nothing is processed after the client close', async () => {
    const c = await wsRaw();
    const p = Buffer.alloc(2);
    p.writeUInt16BE(1000);
    c.write(Buffer.concat([encodeFrame(OP.close, p), encodeFrame(OP.ping, 'after close')]));
    await c.closeFrame();
    await c.ended;
    assert.equal(c.frames.filter((f) => f.opcode === OP.pong).length, 0, 'no pong after the close');
});

test('WS frames: a close reason that is not UTF-8 gets 1007 (RFC 6455 5.5.1, 8.1)', async () => {
    await expectClose((c) => c.send(OP.close, Buffer.from([0x03, 0xe8, 0x61, 0xff, 0xfe])), 1007, 'close reason 0xff 0xfe');
    await expectClose((c) => c.send(OP.close, Buffer.from([0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd])), 1007, 'close reason cut in a character');
});

test('WS frames: invalid UTF-8 in text gets 1007, also across fragments (RFC 6455 8.1)', async () => {
    const cases = [
        ['0xff', [Buffer.from([0x41, 0xff])]],
        ['overlong slash', [Buffer.from([0xc0, 0xaf])]],
        ['overlong 3-byte', [Buffer.from([0xe0, 0x80, 0xaf])]],
        ['surrogate', [Buffer.from([0xed, 0xa0, 0x80])]],
        ['above U+10FFFF', [Buffer.from([0xf4, 0x90, 0x80, 0x80])]],
        ['lone continuation', [Buffer.from([0x80])]],
        ['truncated at the end', [Buffer.from([0x41, 0xe2, 0x82])]],
        ['bad second fragment', [Buffer.from([0x41, 0xe2]), Buffer.from([0x28, 0xa1])]],
        ['truncated at the end of the last fragment', [Buffer.from('ok'), Buffer.from([0xce])]],
        ['bad in the third of three fragments', [Buffer.from('a'), Buffer.from('b'), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80])]],
    ];
    for (const [what, parts] of cases) {
        await expectClose((c) => parts.forEach((p, i) => c.send(i === 0 ? OP.text : OP.cont, p, { fin: i === parts.length - 1 })), 1007, what);
    }
});

test('WS frames: binary messages are not UTF-8 checked', async () => {
    const c = await wsRaw();
    c.send(OP.binary, Buffer.from('\n'));
    c.send(OP.ping, 'alive');
    await c.waitFrame((f) => f.opcode === OP.pong, 3000, 'pong');
    assert.equal(c.frames.find((f) => f.opcode === OP.close), undefined);
    c.destroy();
});

test('WS frames: valid UTF-8 across fragments, empty fragments and pings in between are fine', async () => {
    const c = await wsRaw();
    const bytes = stompEncode('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token, 'heart-beat': '0,0', 'x-note': '한국어 ✓ 𝄞' });
    const cuts = [0, 3, 3, 80, bytes.indexOf(Buffer.from('𝄞')) + 2, bytes.length];
    c.send(OP.text, bytes.subarray(cuts[0], cuts[1]), { fin: false });
    c.send(OP.cont, bytes.subarray(cuts[1], cuts[2]), { fin: false }); // empty fragment
    c.send(OP.ping, 'in between');
    c.send(OP.cont, bytes.subarray(cuts[2], cuts[3]), { fin: false });
    c.send(OP.pong, 'unsolicited pong is ignored');
    c.send(OP.cont, bytes.subarray(cuts[3], cuts[4]), { fin: false }); // ends inside the 4-byte character
    c.send(OP.cont, bytes.subarray(cuts[4], cuts[5]));
    const f = await c.nextStomp('CONNECTED');
    assert.equal(f.headers.version, '1.2');
    const pong = c.frames.find((x) => x.opcode === OP.pong);
    assert.equal(pong?.payload.toString(), 'in between');
    c.destroy();
});

test('WS frames: ping gets a pong with the same payload (0, 1 and 125 bytes) (RFC 6455 5.5.2, 5.5.3)', async () => {
    const c = await wsRaw();
    const payloads = [Buffer.alloc(0), Buffer.from([0]), crypto.randomBytes(125)];
    for (const p of payloads) c.send(OP.ping, p);
    await c.waitFor(() => c.frames.filter((f) => f.opcode === OP.pong).length >= 3, 5000, 'three pongs');
    const pongs = c.frames.filter((f) => f.opcode === OP.pong);
    payloads.forEach((p, i) => assert.ok(pongs[i].payload.equals(p), `pong ${i}`));
    assert.ok(pongs.every((f) => f.fin && f.rsv === 0 && !f.masked));
    c.destroy();
});

test('WS frames: 16- and 64-bit payload lengths are read (a 64 KiB message is within the default limit)', async () => {
    // after CONNECT (before it, max_frame_preauth holds messages to 8 KiB): a
    // BEGIN padded by heart-beat EOLs in front to exactly 65536 bytes, the
    // smallest message that needs the 64-bit length
    const c = await wsRaw();
    c.send(OP.text, stompEncode('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token, 'heart-beat': '0,0' }));
    const f = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
    assert.equal(f.command, 'CONNECTED');
    const frame = stompEncode('BEGIN', { transaction: 'len64', receipt: 'len64' });
    c.send(OP.text, Buffer.concat([Buffer.alloc(65536 - frame.length, 0x0a), frame]));
    const r64 = await c.nextStomp((x) => x.command === 'RECEIPT' || x.command === 'ERROR');
    assert.equal(r64.command, 'RECEIPT');
    assert.equal(r64.headers['receipt-id'], 'len64');
    c.send(OP.text, Buffer.alloc(1000, 0x0a));
    c.send(OP.ping, 'still');
    await c.waitFrame((x) => x.opcode === OP.pong, 3000, 'pong after a 16-bit frame');
    // a length not minimally encoded (RFC 6455 5.2 "MUST be used" binds the
    // sender): either read, or refused with 1002
    c.send(OP.ping, 'hello', { len16: true });
    const r = await c.waitFor(() => c.frames.find((x) => x.opcode === OP.close || (x.opcode === OP.pong && x.payload.toString() === 'hello')), 3000, 'pong or close');
    if (r.opcode === OP.close) assert.equal(r.payload.readUInt16BE(0), 1002);
    c.destroy();
});

test('WS frames: a 64-bit length with the top bit set is refused (RFC 6455 5.2)', async () => {
    const c = await wsRaw();
    const head = Buffer.alloc(14);
    head[0] = 0x80 | OP.text;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(1n << 63n, 2);
    c.write(head);
    const code = await c.closeCode();
    assert.ok([1002, 1009].includes(code), `close ${code}`);
});

test('WS frames: oversize: a frame announced too big, a message grown too big: 1009', async () => {
    const c = await wsRaw();
    const head = Buffer.alloc(14);
    head[0] = 0x80 | OP.binary;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(1n << 32n, 2);
    c.write(head);
    assert.equal(await c.closeCode(), 1009);
    const d = await wsRaw();
    const chunk = Buffer.alloc(30000, 0x0a);
    d.send(OP.text, chunk, { fin: false });
    for (let i = 0; i < 200 && !d.frames.some((f) => f.opcode === OP.close) && !d.isEnded; i++) {
        d.send(OP.cont, chunk, { fin: false });
        await sleep(1);
    }
    assert.equal(await d.closeCode(), 1009);
});

test('WS: a STOMP frame over max_frame sent as several WebSocket messages: ERROR, then close 1009 (RFC 6455 7.4.1: a message too big to process)', async () => {
    const s = await stompSession(a);
    // 100 kB of body over the 64 KiB max_frame, in 20 kB messages: each message is small
    const frame = stompEncode('SEND', { destination: '/pub/chat/message', receipt: 'big' }, 'x'.repeat(100000));
    for (let i = 0; i < frame.length && !s.isEnded; i += 20000) {
        s.send(OP.text, frame.subarray(i, i + 20000));
        await sleep(5);
    }
    const err = await expectStompError(s, 'a frame over max_frame');
    assert.match(err.headers.message, /too large/);
    const cf = await s.closeFrame();
    assert.equal(cf?.code, 1009, 'the close code of a message too big to process');
});

test('WS frames: the server never masks and only sends text/binary for STOMP', async () => {
    const s = await stompSession(a);
    s.stomp('DISCONNECT', { receipt: 'bye' });
    await s.nextStomp('RECEIPT');
    for (const f of s.frames) {
        assert.equal(f.masked, false);
        assert.equal(f.rsv, 0);
        assert.ok([OP.text, OP.binary, OP.cont, OP.close, OP.ping, OP.pong].includes(f.opcode));
    }
    s.destroy();
});
