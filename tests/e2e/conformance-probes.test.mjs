// tests/e2e/conformance-probes.test.mjs - more probes of an independent
// client written from RFC 6455, STOMP 1.2 and the delivery contract only
// (tests/e2e/conformance-lib.mjs), for what the other conformance files do
// not check: token lists and case in the handshake, a missing version, the
// bytes pipelined behind the handshake, the registered close codes 1012-1014,
// a close inside a fragmented message, lowercase commands, BEGIN/ACK inside
// a transaction, duplicate subscription ids, content-length framing errors,
// and the cursor and idempotency-key bounds of the delivery contract.
//
// Run: tests/e2e/run.sh etc/chatd.conf -- node --test tests/e2e/conformance-probes.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { roomOf, uid, HOST, PORT } from './lib.mjs';
import {
    a, b, fixtures, OP, WS_GUID, rawHttp, req, encodeFrame, handshakeRequest, wsRaw, stompEncode,
    stompSession, subscribe, expectStompError, chatBody,
} from './conformance-lib.mjs';

fixtures();

const newKey = () => crypto.randomBytes(16).toString('base64');
const acceptOf = (k) => crypto.createHash('sha1').update(k + WS_GUID).digest('base64');
const MSG = '/pub/chat/message';

/* a handshake whose headers are given whole (Host first) */
const handshake = (lines, line = 'GET /ws HTTP/1.1') => rawHttp(req(line, lines));

/* ==================== handshake ==================== */

test('WS handshake: Upgrade and Connection tokens are case-insensitive and found in comma lists (RFC 6455 4.2.1)', async () => {
    for (const [up, conn] of [['WebSocket', 'Upgrade'], ['websocket', 'keep-alive, Upgrade'], ['WEBSOCKET', 'upgrade'],
        ['websocket', 'Upgrade , keep-alive'], ['websocket', 'keep-alive,upgrade']]) {
        const k = newKey();
        const r = await handshake([`upgrade: ${up}`, `connection: ${conn}`, `sec-websocket-key: ${k}`, 'sec-websocket-version: 13']);
        const x = r.responses[0];
        assert.equal(x?.status, 101, `Upgrade: ${up} / Connection: ${conn}: ${x?.statusLine}`);
        assert.equal(x.headers['sec-websocket-accept'], acceptOf(k));
    }
});

test('WS handshake: a missing Upgrade or Connection token, a missing version, a non-GET and HTTP/1.0 are refused', async () => {
    const k = newKey();
    const cases = [
        ['no Connection', ['Upgrade: websocket', `Sec-WebSocket-Key: ${k}`, 'Sec-WebSocket-Version: 13'], [400, 426]],
        ['Connection without upgrade', ['Upgrade: websocket', 'Connection: keep-alive', `Sec-WebSocket-Key: ${k}`, 'Sec-WebSocket-Version: 13'], [400, 426]],
        ['Upgrade: h2c', ['Upgrade: h2c', 'Connection: Upgrade', `Sec-WebSocket-Key: ${k}`, 'Sec-WebSocket-Version: 13'], [400, 426]],
        ['Upgrade: websocket2', ['Upgrade: websocket2', 'Connection: Upgrade', `Sec-WebSocket-Key: ${k}`, 'Sec-WebSocket-Version: 13'], [400, 426]],
        ['no Sec-WebSocket-Version', ['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${k}`], [400, 426]],
        ['empty Sec-WebSocket-Version', ['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${k}`, 'Sec-WebSocket-Version: '], [400, 426]],
    ];
    for (const [what, lines, want] of cases) {
        const x = (await handshake(lines)).responses[0];
        assert.ok(want.includes(x?.status), `${what}: ${x?.statusLine}`);
        // a 426 MUST say what to upgrade to (RFC 9110 15.5.22), and for a
        // version RFC 6455 4.4 asks for Sec-WebSocket-Version
        if (x.status === 426 && /Version/.test(what)) assert.match(x.headers['sec-websocket-version'] || '', /\b13\b/, `${what}: a 426 names the version`);
        else if (x.status === 426) assert.match(x.headers.upgrade || '', /^websocket$/i, `${what}: a 426 has Upgrade: websocket`);
    }
    const full = ['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${k}`, 'Sec-WebSocket-Version: 13'];
    for (const m of ['POST', 'PUT', 'DELETE']) {
        const x = (await rawHttp(req(`${m} /ws HTTP/1.1`, [...full, 'Content-Length: 0']))).responses[0];
        assert.ok(x?.status >= 400 && x.status < 500 && x.status !== 404, `${m} /ws: ${x?.statusLine}`);
    }
    const h10 = (await rawHttp(req('GET /ws HTTP/1.0', full))).responses[0];
    assert.ok(h10?.status >= 400 && h10.status < 500, `HTTP/1.0 handshake: ${h10?.statusLine}`);
});

test('WS handshake: a key with spaces around it is read as the key (RFC 9110 5.5: OWS is not part of the value)', async () => {
    const k = newKey();
    const x = (await handshake(['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key:   ${k}  `, 'Sec-WebSocket-Version: 13'])).responses[0];
    assert.equal(x?.status, 101, x?.statusLine);
    assert.equal(x.headers['sec-websocket-accept'], acceptOf(k));
});

test('WS handshake: no subprotocol offered, or none known: no Sec-WebSocket-Protocol in the answer (RFC 6455 4.2.2)', async () => {
    for (const protocol of [null, 'mqtt', 'v13.stomp']) {
        const c = await wsRaw({ protocol }).then((x) => x, (e) => e);
        if (c instanceof Error) {
            assert.ok(c.status >= 400, `offer ${protocol}: ${c.message}`);
            continue;
        }
        assert.equal(c.headers['sec-websocket-protocol'], undefined, `offer ${protocol}: no protocol answered`);
        c.destroy();
    }
});

test('WS handshake: a STOMP CONNECT sent in the same write as the handshake is read (RFC 6455 4.1: frames may follow at once)', async () => {
    const k = newKey();
    const frame = encodeFrame(OP.text, stompEncode('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token, 'heart-beat': '0,0' }));
    const got = await new Promise((resolve) => {
        const sock = net.connect(PORT, HOST);
        let buf = Buffer.alloc(0);
        const t = setTimeout(() => { sock.destroy(); resolve(buf); }, 8000);
        sock.on('connect', () => sock.write(Buffer.concat([Buffer.from(handshakeRequest(k)), frame])));
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            if (buf.includes('CONNECTED') || buf.includes('ERROR')) { clearTimeout(t); sock.destroy(); resolve(buf); }
        });
        sock.on('error', () => {});
    });
    const s = got.toString('latin1');
    assert.match(s, /^HTTP\/1\.1 101 /, s.split('\r\n')[0]);
    assert.ok(s.includes(`Sec-WebSocket-Accept: ${acceptOf(k)}`) || s.toLowerCase().includes(`sec-websocket-accept: ${acceptOf(k)}`.toLowerCase()));
    assert.ok(s.includes('CONNECTED\n'), 'CONNECTED answers the pipelined CONNECT');
});

/* ==================== frames ==================== */

async function closedWith(act, want, what) {
    const c = await wsRaw();
    await act(c);
    const cf = await c.closeFrame();
    assert.ok(cf, `${what}: a close frame`);
    assert.equal(cf.code, want, `${what}: close code`);
    const ended = await Promise.race([c.ended.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
    assert.ok(ended, `${what}: TCP closed by the server`);
}

test('WS frames: the registered close codes 1012, 1013 and 1014 are echoed (IANA WebSocket Close Code registry, RFC 6455 11.7)', async () => {
    for (const code of [1012, 1013, 1014]) {
        const p = Buffer.alloc(2);
        p.writeUInt16BE(code);
        await closedWith((c) => c.send(OP.close, p), code, `close ${code}`);
    }
});

test('WS frames: a close inside a fragmented message is a control frame like any other: answered, not 1002 (RFC 6455 5.4)', async () => {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(1000);
    await closedWith((c) => { c.send(OP.text, 'CONN', { fin: false }); c.send(OP.close, p); }, 1000, 'close mid-message');
});

test('WS frames: a 64-bit length for a small payload (not minimal) is read or refused with 1002, never hangs (RFC 6455 5.2)', async () => {
    const c = await wsRaw();
    c.send(OP.ping, 'len64', { len64: true });
    const f = await c.waitFor(() => c.frames.find((x) => x.opcode === OP.close || x.opcode === OP.pong), 5000, 'pong or close');
    if (f.opcode === OP.close) assert.equal(f.payload.readUInt16BE(0), 1002);
    else assert.equal(f.payload.toString(), 'len64');
    c.destroy();
});

test('WS frames: a binary frame with invalid UTF-8 inside a fragmented text message is read as text: 1007 (RFC 6455 5.4, 8.1)', async () => {
    await closedWith((c) => { c.send(OP.text, Buffer.from([0x43]), { fin: false }); c.send(OP.cont, Buffer.from([0xc3, 0x28])); }, 1007, 'bad continuation');
});

/* ==================== STOMP ==================== */

test('STOMP: commands are case-sensitive: "connect" and, after CONNECT, "send" get ERROR then close (STOMP 1.2 "Augmented BNF")', async () => {
    const c = await wsRaw();
    c.send(OP.text, stompEncode('connect', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token }, '', { raw: true }));
    await expectStompError(c, 'lowercase connect');
    const s = await stompSession(a);
    s.send(OP.text, stompEncode('send', { destination: MSG, receipt: 'lc' }, chatBody(roomOf(a, b), 'never'), { raw: true }));
    const err = await expectStompError(s, 'lowercase send');
    assert.equal(s.stompFrames.filter((f) => f.command === 'RECEIPT').length, 0, 'no RECEIPT for a lowercase send');
    assert.ok(err);
});

test('STOMP: CONNECTED header grammar: version, heart-beat as two integers, server as name[/version] (STOMP 1.2 "CONNECTED Frame")', async () => {
    const s = await stompSession(a);
    const h = s.connected.headers;
    assert.equal(h.version, '1.2');
    assert.match(h['heart-beat'], /^\d+,\d+$/);
    if (h.server !== undefined) assert.match(h.server, /^[^/\s]+(\/[^\s]+)?( .*)?$/, `server ${h.server}`);
    if (h.session !== undefined) assert.ok(h.session.length > 0);
    s.destroy();
});

test('STOMP: a content-length whose byte after the body is not NUL gets ERROR (STOMP 1.2 "Frames and Headers")', async () => {
    const s = await stompSession(a);
    s.send(OP.text, Buffer.concat([Buffer.from('BEGIN\ntransaction:t1\ncontent-length:2\nreceipt:cl\n\nabcd'), Buffer.from([0])]));
    await expectStompError(s, 'content-length shorter than the body');
    assert.equal(s.stompFrames.filter((f) => f.command === 'RECEIPT').length, 0);
});

test('STOMP: a negative or non-numeric content-length gets ERROR', async () => {
    for (const v of ['-1', 'abc', '1e3', '']) {
        const s = await stompSession(a);
        s.send(OP.text, Buffer.concat([Buffer.from(`SEND\ndestination:${MSG}\ncontent-length:${v}\nreceipt:x\n\n{}`), Buffer.from([0])]));
        await expectStompError(s, `content-length ${JSON.stringify(v)}`);
    }
});

test('STOMP: a SUBSCRIBE id already in use on the connection gets ERROR (STOMP 1.2 "SUBSCRIBE id Header": unique per connection)', async () => {
    const s = await stompSession(a);
    await subscribe(s, 'dup', `/sub/chat/side/${a.id}`);
    s.stomp('SUBSCRIBE', { id: 'dup', destination: `/sub/chat/room/${roomOf(a, b)}`, receipt: 'dup2' });
    const err = await expectStompError(s, 'duplicate subscription id');
    assert.equal(err.headers['receipt-id'], 'dup2');
});

test('STOMP: UNSUBSCRIBE of an id that was never subscribed is answered (RECEIPT or ERROR with receipt-id), never ignored', async () => {
    const s = await stompSession(a);
    s.stomp('UNSUBSCRIBE', { id: 'never-there', receipt: 'un1' });
    const f = await s.nextStomp((x) => x.command === 'RECEIPT' || x.command === 'ERROR');
    assert.equal(f.headers['receipt-id'], 'un1', `${f.command} names the receipt`);
    s.destroy();
});

test('STOMP: BEGIN/COMMIT without a transaction header, SEND to no destination: ERROR with receipt-id (STOMP 1.2: REQUIRED headers)', async () => {
    for (const [cmd, h] of [['BEGIN', {}], ['COMMIT', {}], ['ABORT', {}], ['SEND', {}], ['ACK', {}], ['NACK', {}]]) {
        const s = await stompSession(a);
        s.stomp(cmd, { ...h, receipt: `r-${cmd}` }, cmd === 'SEND' ? chatBody(roomOf(a, b), 'x') : '');
        const err = await expectStompError(s, `${cmd} without its required header`);
        assert.equal(err.headers['receipt-id'], `r-${cmd}`, cmd);
    }
});

test('STOMP: ACK and NACK inside a transaction, then COMMIT (STOMP 1.2 "ACK": transaction header)', async () => {
    const [x, y] = [a, b];
    const room = roomOf(x, y);
    const sy = await stompSession(y);
    await subscribe(sy, 'tx-sub', `/sub/chat/room/${room}`, { ack: 'client-individual' });
    const sx = await stompSession(x);
    const tag = uid('tx-');
    for (const t of ['one', 'two']) sx.stomp('SEND', { destination: MSG, 'content-type': 'application/json' }, chatBody(room, `${tag}-${t}`));
    const mine = () => sy.stompFrames.filter((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message.startsWith(tag));
    await sy.waitFor(() => mine().length >= 2, 8000, 'two MESSAGEs');
    const [m1, m2] = mine();
    assert.ok(m1.headers.ack && m2.headers.ack, 'ack headers in client-individual mode');
    sy.stomp('BEGIN', { transaction: 'tx-ack' });
    sy.stomp('ACK', { id: m1.headers.ack, transaction: 'tx-ack' });
    sy.stomp('NACK', { id: m2.headers.ack, transaction: 'tx-ack' });
    sy.stomp('COMMIT', { transaction: 'tx-ack', receipt: 'tx-ack-done' });
    const r = await sy.nextStomp((f) => (f.command === 'RECEIPT' && f.headers['receipt-id'] === 'tx-ack-done') || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT', r.headers.message);
    assert.equal(r.headers['receipt-id'], 'tx-ack-done');
    sx.destroy();
    sy.destroy();
});

test('STOMP: a frame over the size limit gets ERROR whose message says so, then close', async () => {
    const s = await stompSession(a);
    s.stomp('SEND', { destination: MSG, receipt: 'huge' }, 'x'.repeat(70000));
    const err = await expectStompError(s, 'frame too large');
    assert.match(err.headers.message, /too (large|big|long)|limit|exceed/i, err.headers.message);
});

/* ==================== the delivery contract ==================== */

test('contract: MESSAGE frames of room and side carry a cursor of printable ASCII, at most 256 bytes; the RECEIPT names the message', async () => {
    const [x, y] = [a, b];
    const room = roomOf(x, y);
    const sy = await stompSession(y);
    await subscribe(sy, 'cur-room', `/sub/chat/room/${room}`);
    await subscribe(sy, 'cur-side', `/sub/chat/side/${y.id}`);
    const sx = await stompSession(x);
    const text = uid('cursor-');
    sx.stomp('SEND', { destination: MSG, 'content-type': 'application/json', receipt: 'cur' }, chatBody(room, text));
    const rc = await sx.nextStomp((f) => f.command === 'RECEIPT' || f.command === 'ERROR');
    assert.equal(rc.command, 'RECEIPT');
    assert.match(rc.headers['message-id'] || '', /^\d+$/, 'RECEIPT message-id');
    await sy.waitFor(() => sy.stompFrames.filter((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message === text).length >= 2, 8000, 'both MESSAGEs');
    for (const m of sy.stompFrames.filter((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message === text)) {
        const cur = m.headers.cursor;
        assert.ok(cur, `${m.headers.subscription}: cursor header`);
        assert.match(cur, /^[\x21-\x7e]+$/, `${m.headers.subscription}: printable ASCII cursor ${cur}`);
        assert.ok(Buffer.byteLength(cur) <= 256);
        assert.equal(JSON.parse(m.body).id, rc.headers['message-id'], 'the RECEIPT names the delivered message');
    }
    sx.destroy();
    sy.destroy();
});

test('contract: resume-after with a cursor from the room on the side destination, or garbage: ERROR with message, then close', async () => {
    const [x, y] = [a, b];
    const room = roomOf(x, y);
    const sy = await stompSession(y);
    await subscribe(sy, 'r', `/sub/chat/room/${room}`);
    const sx = await stompSession(x);
    const text = uid('rc-');
    sx.stomp('SEND', { destination: MSG, 'content-type': 'application/json', receipt: 'rc' }, chatBody(room, text));
    const m = await sy.nextStomp((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message === text);
    sx.destroy();
    sy.destroy();
    for (const [dest, cur] of [[`/sub/chat/side/${y.id}`, m.headers.cursor], [`/sub/chat/room/${room}`, 'not-a-cursor'], [`/sub/chat/room/${room}`, '']]) {
        const s = await stompSession(y);
        s.stomp('SUBSCRIBE', { id: 'rs', destination: dest, 'resume-after': cur, receipt: 'rs' });
        await expectStompError(s, `resume-after ${JSON.stringify(cur)} on ${dest}`);
    }
});

test('contract: an idempotency key with DEL (0x7f) or another control character gets ERROR; STOMP and REST agree', async () => {
    const room = roomOf(a, b);
    for (const bad of ['abc\x7f', '\x01key', 'x'.repeat(129)]) {
        const s = await stompSession(a);
        s.stomp('SEND', { destination: MSG, 'content-type': 'application/json', receipt: 'ik', 'idempotency-key': bad }, chatBody(room, 'never'));
        const err = await expectStompError(s, `key ${JSON.stringify(bad)}`);
        assert.equal(err.headers['receipt-id'], 'ik');
        assert.equal(s.stompFrames.filter((f) => f.command === 'RECEIPT').length, 0);
    }
    const r = await rawHttp(req(`POST /api/rooms/${encodeURIComponent(room)}/messages HTTP/1.1`, [
        `Authorization: Bearer ${a.token}`, 'Content-Type: application/json', 'Idempotency-Key: abc\x7f', 'Content-Length: 17', 'Connection: close',
    ], '{"message":"no!"}'));
    assert.equal(r.responses[0]?.status, 400, `REST key with DEL: ${r.responses[0]?.statusLine}`);
});

test('STOMP: the server escapes the header values it sends (a subscription id with : and \\n comes back in MESSAGE)', async () => {
    const [x, y] = [a, b];
    const room = roomOf(x, y);
    const sy = await stompSession(y);
    const id = 'we:ird\nid\\x';
    await subscribe(sy, id, `/sub/chat/room/${room}`);
    const sx = await stompSession(x);
    const text = uid('esc-');
    sx.stomp('SEND', { destination: MSG, 'content-type': 'application/json' }, chatBody(room, text));
    const m = await sy.nextStomp((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message === text);
    assert.equal(m.headers.subscription, id);
    sx.destroy();
    sy.destroy();
});

test('STOMP: an ERROR with a body says its content-type and content-length (STOMP 1.2 "ERROR": SHOULD)', async () => {
    const s = await stompSession(a);
    s.stomp('FROB', { receipt: 'frob' });
    const err = await expectStompError(s, 'unknown command');
    assert.equal(err.headers['receipt-id'], 'frob');
    if (err.bodyBytes.length) {
        assert.ok(err.headers['content-type'], 'content-type of the ERROR body');
        assert.equal(Number(err.headers['content-length']), err.bodyBytes.length);
    }
});

test('contract: REST send: an empty Idempotency-Key is 400, a valid one 201 then 200 with the same message', async () => {
    const room = encodeURIComponent(roomOf(a, b));
    const post = (key, msg) => rawHttp(req(`POST /api/rooms/${room}/messages HTTP/1.1`, [
        `Authorization: Bearer ${a.token}`, 'Content-Type: application/json', ...(key === null ? [] : [`Idempotency-Key: ${key}`]),
        `Content-Length: ${Buffer.byteLength(msg)}`, 'Connection: close',
    ], msg)).then((r) => r.responses[0]);
    const empty = await post('', '{"message":"empty key"}');
    assert.equal(empty?.status, 400, `empty key: ${empty?.statusLine}`);
    const key = uid('rk-');
    const first = await post(key, '{"message":"keyed"}');
    assert.equal(first?.status, 201, first?.statusLine);
    const again = await post(key, '{"message":"keyed"}');
    assert.equal(again?.status, 200, again?.statusLine);
    assert.equal(again.json.id, first.json.id);
    assert.equal(again.json.cursor, first.json.cursor);
});

test('STOMP over WebSocket: the agreed subprotocol names the STOMP version: vNN.stomp caps accept-version (IANA WebSocket Subprotocol Name Registry)', async () => {
    for (const [protocol, accept, want] of [['v11.stomp', '1.0,1.1,1.2', '1.1'], ['v10.stomp', '1.0,1.1,1.2', '1.0'], ['v12.stomp', '1.0,1.1,1.2', '1.2'],
        [null, '1.0,1.1,1.2', '1.2'], ['v11.stomp', '1.0', '1.0']]) {
        const c = await wsRaw({ protocol });
        c.stomp('CONNECT', { 'accept-version': accept, host: HOST, login: a.loginId, passcode: a.token });
        const f = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
        assert.equal(f.command, 'CONNECTED', `${protocol} ${accept}: ${f.headers.message}`);
        assert.equal(f.headers.version ?? '1.0', want, `${protocol} accept-version:${accept}`);
        c.destroy();
    }
    // nothing in common with the subprotocol's version: ERROR listing what this connection speaks
    const c = await wsRaw({ protocol: 'v11.stomp' });
    c.stomp('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token });
    const err = await expectStompError(c, 'v11.stomp with accept-version 1.2');
    assert.equal(err.headers.version, '1.0,1.1');
});

test('STOMP: an ERROR for a frame over a size limit has the receipt-id of that frame (STOMP 1.2 "ERROR": SHOULD)', async () => {
    const s = await stompSession(a);
    s.send(OP.text, Buffer.from(`SEND\ndestination:${MSG}\ncontent-length:10000000\nreceipt:big\\c1\n\n`));
    const err = await expectStompError(s, 'content-length over max_frame');
    assert.equal(err.headers['receipt-id'], 'big:1', 'the receipt, unescaped');
    assert.equal(await s.closeCode(), 1009);
    // a frame grown over max_frame in several WebSocket messages
    const t = await stompSession(a);
    const frame = stompEncode('SEND', { destination: MSG, receipt: 'grown' }, 'x'.repeat(100000));
    for (let i = 0; i < frame.length && !t.isEnded; i += 20000) t.send(OP.text, frame.subarray(i, i + 20000));
    const e2 = await expectStompError(t, 'a frame grown over max_frame');
    assert.equal(e2.headers['receipt-id'], 'grown');
});
