// tests/e2e/conformance-stomp-frames.test.mjs - chatd seen by an independent client
// written from the public specifications only (tests/e2e/conformance-lib.mjs):
// STOMP 1.0/1.1/1.2 connection and framing: CONNECT, version negotiation,
// heart-beats, header escaping and repetition, EOLs, content-length, receipts,
// ERROR frames.
//
// Run: tests/e2e/run.sh etc/chatd.conf -- node --test tests/e2e/conformance-stomp-frames.test.mjs

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, roomOf, uid, sleep, HOST, HEARTBEAT } from './lib.mjs';
import { a, b, fixtures, OP, wsRaw, stompEncode, stompSession, subscribe, expectStompError, chatBody } from './conformance-lib.mjs';

fixtures();

/* ============================ STOMP ============================ */

test('STOMP: CONNECT and STOMP, with or without host; CONNECTED headers', async () => {
    for (const cmd of ['CONNECT', 'STOMP']) {
        for (const host of [HOST, undefined]) {
            const c = await wsRaw();
            const h = { 'accept-version': '1.2', login: a.loginId, passcode: a.token };
            if (host) h.host = host;
            c.stomp(cmd, h);
            const f = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
            assert.equal(f.command, 'CONNECTED', `${cmd} host=${host}: ${f.headers.message}`);
            assert.equal(f.headers.version, '1.2');
            assert.match(f.headers['heart-beat'], /^\d+,\d+$/);
            assert.match(f.headers.server, /^[^/\s]+(\/\S+)?( .*)?$/, `server header ${f.headers.server}`);
            c.destroy();
        }
    }
});

test('STOMP: Authorization: Bearer and passcode both authenticate; nothing gets ERROR then close', async () => {
    const c = await wsRaw();
    c.stomp('CONNECT', { 'accept-version': '1.2', host: HOST, Authorization: `Bearer ${b.token}` });
    assert.equal((await c.nextStomp('CONNECTED')).command, 'CONNECTED');
    c.destroy();
    const n = await wsRaw();
    n.stomp('CONNECT', { 'accept-version': '1.2', host: HOST });
    await expectStompError(n, 'no credentials');
    assert.equal(n.stompFrames.filter((f) => f.command === 'CONNECTED').length, 0);
});

test('STOMP: version negotiation picks the highest common version (1.2 spec "Protocol Negotiation")', async () => {
    for (const [accept, want] of [['1.0', '1.0'], ['1.1', '1.1'], ['1.2', '1.2'], ['1.0,1.1', '1.1'], ['1.2,1.0', '1.2'], ['1.1,1.2,1.3', '1.2'], ['1.0,1.1,1.2', '1.2']]) {
        const c = await wsRaw();
        c.stomp('CONNECT', { 'accept-version': accept, host: HOST, login: a.loginId, passcode: a.token });
        const f = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
        assert.equal(f.command, 'CONNECTED', accept);
        if (want !== '1.0' || f.headers.version !== undefined) assert.equal(f.headers.version, want, `accept-version:${accept}`);
        c.destroy();
    }
});

test('STOMP: CONNECT without accept-version is STOMP 1.0', async () => {
    const c = await wsRaw({ protocol: 'v10.stomp' });
    c.stomp('CONNECT', { login: a.loginId, passcode: a.token });
    const f = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
    assert.equal(f.command, 'CONNECTED', f.headers.message);
    assert.ok(f.headers.version === undefined || f.headers.version === '1.0', `version ${f.headers.version}`);
    c.destroy();
});

test('STOMP: no common version: ERROR with a version header listing the server versions, then close', async () => {
    const c = await wsRaw();
    c.stomp('CONNECT', { 'accept-version': '1.3,2.0', host: HOST, login: a.loginId, passcode: a.token });
    const err = await expectStompError(c, 'accept-version 1.3,2.0');
    assert.ok(err.headers.version, 'version header');
    const versions = err.headers.version.split(',');
    for (const v of ['1.0', '1.1', '1.2']) assert.ok(versions.includes(v), `lists ${v}: ${err.headers.version}`);
});

describe('STOMP heart-beats (run side by side)', { concurrency: true }, () => {
test('STOMP: heart-beat negotiation: CONNECTED heart-beat and server beats at max(sx, cy)', { timeout: 60000 }, async () => {
    const c0 = await stompSession(a, { 'heart-beat': '0,0' });
    const [sx, sy] = c0.connected.headers['heart-beat'].split(',').map(Number);
    await sleep(Math.min(Math.max(sx, 1000) * 1.5, 16000));
    assert.equal(c0.heartbeats.length, 0, 'no heart-beats when the client asked for none');
    c0.destroy();
    assert.deepEqual([sx, sy], HEARTBEAT, 'CONNECTED heart-beat is the configured heartbeat_send,heartbeat_recv');
    const c = await stompSession(a, { 'heart-beat': '0,500' });
    const want = Math.max(sx, 500);
    const t0 = Date.now();
    await c.waitFor(() => c.heartbeats.length >= 2, want * 2 + 6000, 'two heart-beats');
    const first = c.heartbeats[0] - t0, gap = c.heartbeats[1] - c.heartbeats[0];
    assert.ok(first <= want + 1500, `first beat after ${first} ms (negotiated ${want})`);
    assert.ok(gap >= want * 0.5 && gap <= want + 1500, `beats ${gap} ms apart (negotiated ${want})`);
    c.destroy();
});

test('STOMP: a client that promised heart-beats and stops is disconnected', { timeout: 90000 }, async () => {
    const c = await stompSession(a, { 'heart-beat': '1000,0' });
    const [, sy] = c.connected.headers['heart-beat'].split(',').map(Number);
    assert.equal(sy, HEARTBEAT[1], 'the server asks for client heart-beats (heartbeat_recv)');
    const want = Math.max(sy, 1000);
    const t0 = Date.now();
    const closed = await Promise.race([c.ended.then(() => true), sleep(want * 3 + 5000).then(() => false)]);
    assert.ok(closed, `closed within ${want * 3 + 5000} ms of silence (negotiated ${want} ms)`);
    assert.ok(Date.now() - t0 >= want, 'not before the negotiated interval');
    // a client that keeps beating stays connected
});

test('STOMP: a session that negotiated no client heart-beats is not dropped after 60 s of quiet', { timeout: 120000 }, async () => {
    // the client answers pings (RFC 6455 5.5.2) but sends nothing else
    const c = await stompSession(a, { 'heart-beat': '0,0' }, { autoPong: true });
    await subscribe(c, 'side', `/sub/chat/side/${a.id}`);
    const t0 = Date.now();
    await Promise.race([c.ended, sleep(75000)]);
    const cf = c.frames.find((f) => f.opcode === OP.close);
    if (c.isEnded) {
        assert.ok(cf, `dropped after ${Date.now() - t0} ms without a WebSocket close frame (the client sees 1006)`);
    }
    assert.ok(!c.isEnded, `still connected after 75 s of quiet (closed after ${Date.now() - t0} ms, close ${cf ? cf.payload.readUInt16BE(0) : 'none'})`);
    c.destroy();
});

test('STOMP: a client that keeps sending heart-beats stays connected', { timeout: 60000 }, async () => {
    const c = await stompSession(a, { 'heart-beat': '1000,0' });
    const [, sy] = c.connected.headers['heart-beat'].split(',').map(Number);
    assert.equal(sy, HEARTBEAT[1], 'the server asks for client heart-beats (heartbeat_recv)');
    const want = Math.max(sy, 1000);
    const timer = setInterval(() => c.send(OP.text, '\n'), Math.min(want / 2, 2000));
    await sleep(want * 2 + 2500);
    clearInterval(timer);
    assert.ok(!c.isEnded, 'still connected');
    c.destroy();
});
});

test('STOMP: malformed heart-beat header gets ERROR', async () => {
    const c = await wsRaw();
    c.stomp('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token, 'heart-beat': 'soon' });
    await expectStompError(c, 'heart-beat:soon');
});

test('STOMP 1.2: header escaping \\c \\n \\r \\\\ round-trips through SUBSCRIBE id and receipt', async () => {
    const [x, y] = await Promise.all([makeMember('esc'), makeMember('esc')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    const id = 'sub:a\nb\rc\\d';
    const receipt = 'rcpt:1\\x\ny';
    s.stomp('SUBSCRIBE', { id, destination: `/sub/chat/room/${room}`, receipt });
    const r = await s.nextStomp((f) => f.command === 'RECEIPT' || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT', r.headers.message);
    assert.equal(r.headers['receipt-id'], receipt);
    s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 's:1' }, chatBody(room, 'escaped'));
    const m = await s.nextStomp('MESSAGE');
    assert.equal(m.headers.subscription, id, 'the subscription header is the escaped id');
    const rs = await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 's:1');
    assert.ok(rs);
    s.destroy();
});

test('STOMP 1.2: an undefined escape (\\t) gets ERROR (spec "Value Encoding")', async () => {
    const s = await stompSession(a);
    s.send(OP.text, Buffer.from(`SUBSCRIBE\nid:s\\t1\ndestination:/sub/chat/side/${a.id}\n\n\0`));
    await expectStompError(s, '\\t escape');
});

test('STOMP 1.2: CONNECT headers are not unescaped (spec: CONNECT and CONNECTED frames do not escape)', async () => {
    const c = await wsRaw();
    c.send(OP.text, Buffer.from(`CONNECT\naccept-version:1.2\nhost:${HOST}\nlogin:${a.loginId}\npasscode:${a.token}\nheart-beat:0,0\nx-client:C:\\tools\\chat\n\n\0`));
    const f = await c.nextStomp((x) => x.command === 'CONNECTED' || x.command === 'ERROR');
    assert.equal(f.command, 'CONNECTED', `a backslash in a CONNECT header: ${f.headers.message}`);
    c.destroy();
});

test('STOMP 1.0: no header escaping; SUBSCRIBE without id is allowed', async () => {
    const [x, y] = await Promise.all([makeMember('v10'), makeMember('v10')]);
    const room = roomOf(x, y);
    const c = await wsRaw({ protocol: 'v10.stomp' });
    c.stomp('CONNECT', { 'accept-version': '1.0', login: x.loginId, passcode: x.token });
    await c.nextStomp('CONNECTED');
    c.send(OP.text, Buffer.from(`SUBSCRIBE\ndestination:/sub/chat/room/${room}\nreceipt:r\\1\n\n\0`));
    const r = await c.nextStomp((f) => f.command === 'RECEIPT' || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT', `1.0 SUBSCRIBE without id: ${r.headers.message}`);
    // a 1.0 frame is not escaped: the receipt-id comes back as sent
    assert.equal(r.headers['receipt-id'], 'r\\1');
    c.destroy();
});

test('STOMP 1.2: repeated headers: the first one wins (spec "Repeated Header Entries")', async () => {
    const [x, y] = await Promise.all([makeMember('rep'), makeMember('rep')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    s.stomp('SUBSCRIBE', [['id', 'first'], ['id', 'second'], ['destination', `/sub/chat/room/${room}`], ['destination', '/nowhere'], ['receipt', 'r-first'], ['receipt', 'r-second']]);
    const r = await s.nextStomp((f) => f.command === 'RECEIPT' || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT', r.headers.message);
    assert.equal(r.headers['receipt-id'], 'r-first');
    s.stomp('SEND', [['destination', '/pub/chat/message'], ['destination', '/pub/nowhere'], ['content-type', 'application/json'], ['receipt', 'x1'], ['receipt', 'x2']], chatBody(room, 'rep'));
    const m = await s.nextStomp('MESSAGE');
    assert.equal(m.headers.subscription, 'first');
    const rs = await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] !== 'r-first');
    assert.equal(rs.headers['receipt-id'], 'x1');
    s.destroy();
});

test('STOMP: a header line with an empty name gets ERROR (1.2 grammar: header-name = 1*OCTET)', async () => {
    const s = await stompSession(a);
    s.send(OP.text, Buffer.from(`SUBSCRIBE\n:x\nid:s\ndestination:/sub/chat/side/${a.id}\nreceipt:r\n\n\0`));
    await expectStompError(s, 'empty header name');
});

test('STOMP 1.2: header names and values keep their spaces (no trimming)', async () => {
    const s = await stompSession(a);
    s.send(OP.text, Buffer.from(`SUBSCRIBE\nid:s1\ndestination:/sub/chat/side/${a.id}\nreceipt: padded \n\n\0`));
    const r = await s.nextStomp((f) => f.command === 'RECEIPT' || f.command === 'ERROR');
    assert.equal(r.command, 'RECEIPT');
    assert.equal(r.headers['receipt-id'], ' padded ');
    s.destroy();
});

test('STOMP: CRLF line endings, heart-beat EOLs between frames, several frames per message, one frame over several messages', async () => {
    const [x, y] = await Promise.all([makeMember('crlf'), makeMember('crlf')]);
    const room = roomOf(x, y);
    const c = await wsRaw();
    const connect = stompEncode('CONNECT', { 'accept-version': '1.2', host: HOST, login: x.loginId, passcode: x.token, 'heart-beat': '0,0' }, '', { eol: '\r\n' });
    for (let i = 0; i < connect.length; i += 5) c.send(OP.text, connect.subarray(i, i + 5));
    await c.nextStomp('CONNECTED');
    const body = chatBody(room, 'crlf ✓');
    const many = Buffer.concat([
        Buffer.from('\r\n\n'),
        stompEncode('SUBSCRIBE', { id: 'a', destination: `/sub/chat/room/${room}`, receipt: 'ra' }, '', { eol: '\r\n' }),
        Buffer.from('\n'),
        stompEncode('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: 'rb' }, body, { eol: '\r\n' }),
        Buffer.from('\r\n'),
    ]);
    c.send(OP.text, many);
    const m = await c.nextStomp('MESSAGE');
    assert.equal(JSON.parse(m.body).message, 'crlf ✓');
    await c.waitFor(() => ['ra', 'rb'].every((id) => c.stompFrames.some((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === id)), 5000, 'both receipts');
    const ra = c.stompFrames.findIndex((f) => f.headers['receipt-id'] === 'ra');
    const rb = c.stompFrames.findIndex((f) => f.headers['receipt-id'] === 'rb');
    assert.ok(ra < rb, 'receipts in frame order');
    c.destroy();
});

test('STOMP: a content-length body may contain NUL; framing follows content-length', async () => {
    const s = await stompSession(a);
    const body = Buffer.concat([Buffer.from('{"roomId":"1&2"'), Buffer.from([0]), Buffer.from(',"message":"x"}')]);
    const frame = Buffer.concat([Buffer.from(`SEND\ndestination:/pub/chat/message\ncontent-length:${body.length}\nreceipt:nul\n\n`), body, Buffer.from([0])]);
    s.send(OP.text, frame);
    const err = await s.nextStomp('ERROR');
    // the frame is read whole: the refusal is about the body (not JSON), with the receipt-id
    assert.equal(err.headers['receipt-id'], 'nul', `ERROR for the SEND itself: ${err.headers.message}`);
    assert.doesNotMatch(err.headers.message, /command|frame/i, `not a framing error: ${err.headers.message}`);
});

test('STOMP: receipts for SUBSCRIBE, UNSUBSCRIBE, ACK, BEGIN, COMMIT, ABORT, DISCONNECT', async () => {
    const s = await stompSession(a);
    const side = `/sub/chat/side/${a.id}`;
    const frames = [
        ['SUBSCRIBE', { id: 's1', destination: side }],
        ['UNSUBSCRIBE', { id: 's1' }],
        ['BEGIN', { transaction: 't1' }],
        ['COMMIT', { transaction: 't1' }],
        ['BEGIN', { transaction: 't2' }],
        ['ABORT', { transaction: 't2' }],
    ];
    for (const [cmd, h] of frames) {
        const rc = uid(cmd);
        s.stomp(cmd, { ...h, receipt: rc });
        const r = await s.nextStomp((f) => (f.command === 'RECEIPT' && f.headers['receipt-id'] === rc) || f.command === 'ERROR');
        assert.equal(r.command, 'RECEIPT', `${cmd}: ${r.headers.message}`);
    }
    s.stomp('DISCONNECT', { receipt: 'last' });
    const r = await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'last');
    assert.ok(r);
    const ended = await Promise.race([s.ended.then(() => true), sleep(5000).then(() => false)]);
    assert.ok(ended, 'closed after DISCONNECT');
    assert.ok(s.frames.findIndex((f) => f.opcode === OP.close) < 0 || s.frames.findIndex((f) => f.opcode === OP.close) > s.frames.findIndex((f) => f.payload.includes('receipt-id:last')));
});

test('STOMP: SUBSCRIBE without id or destination, UNSUBSCRIBE without id: ERROR with receipt-id, then close', async () => {
    for (const [cmd, h] of [['SUBSCRIBE', { destination: `/sub/chat/side/${a.id}` }], ['SUBSCRIBE', { id: 's' }], ['UNSUBSCRIBE', {}], ['SEND', {}], ['BEGIN', {}], ['COMMIT', {}], ['ACK', {}], ['NACK', {}]]) {
        const s = await stompSession(a);
        s.stomp(cmd, { ...h, receipt: `r-${cmd}` });
        const err = await expectStompError(s, `${cmd} ${JSON.stringify(h)}`);
        assert.equal(err.headers['receipt-id'], `r-${cmd}`, `${cmd}: receipt-id on the ERROR`);
        assert.equal(s.stompErrors.length, 0, 'the ERROR frame parses');
    }
});

test('STOMP: the ERROR frame body length matches content-length, and a close frame follows', async () => {
    const s = await stompSession(a);
    s.stomp('SUBSCRIBE', { id: 'x', destination: '/topic/nope' });
    const err = await s.nextStomp('ERROR');
    if (err.headers['content-length'] !== undefined) assert.equal(err.bodyBytes.length, Number(err.headers['content-length']));
    const cf = await s.closeFrame();
    assert.ok(cf, 'a WebSocket close frame after the ERROR, not just a TCP reset');
    assert.ok(cf.code >= 1000 && cf.code !== 1005 && cf.code !== 1006, `close code ${cf.code}`);
});

test('STOMP: a second CONNECT is an ERROR', async () => {
    const s = await stompSession(a);
    s.stomp('CONNECT', { 'accept-version': '1.2', host: HOST, login: a.loginId, passcode: a.token });
    await expectStompError(s, 'second CONNECT');
});
