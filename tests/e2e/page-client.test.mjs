// tests/e2e/page-client.test.mjs - the page's own STOMP client (web/stomp.js):
// its frame parser and encoder on their own, then the client against chatd
// next to the real @stomp/stompjs (subscribe, SEND with receipt, ERROR,
// reconnect with re-subscription after a drop).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { pageStomp, makeMember, roomOf, stomp, collectSynced, publish, WS_URL, sleep } from './lib.mjs';

const S = pageStomp();
const enc = new TextEncoder();
const dec = new TextDecoder();
const open = [];
after(async () => {
    for (const c of open) await c.deactivate();
});

test('parser: several frames, split frames, heart-beats, content-length with NUL, CRLF, escapes', () => {
    const p = new S.FrameParser();
    const body = 'a\0b';
    const stream = '\n\nMESSAGE\r\nsubscription:s1\r\nx-esc:a\\cb\\nc\\\\d\\re\r\n\r\nhello\0\n'
        + `RECEIPT\nreceipt-id:7\n\n\0MESSAGE\ncontent-length:${enc.encode(body).length}\nk:v\nk:second\n\n${body}\0`;
    const bytes = enc.encode(stream);
    const frames = [];
    for (let i = 0; i < bytes.length; i += 5) frames.push(...p.push(bytes.subarray(i, i + 5)));
    assert.deepEqual(frames.map((f) => f.command), ['MESSAGE', 'RECEIPT', 'MESSAGE']);
    assert.equal(frames[0].body, 'hello');
    assert.equal(frames[0].headers['x-esc'], 'a:b\nc\\d\re');
    assert.equal(frames[1].headers['receipt-id'], '7');
    assert.equal(frames[2].body, 'a\0b');
    assert.equal(frames[2].headers.k, 'v', 'the first repeated header wins');
    assert.equal(p.buf.length, 0);
});

test('parser: multi-byte UTF-8 split between chunks, CONNECTED headers unescaped as-is', () => {
    const p = new S.FrameParser();
    const bytes = enc.encode('CONNECTED\nversion:1.2\nserver:x\\c\n\n\0MESSAGE\n\n최원익\0');
    const out = [];
    for (const b of bytes) out.push(...p.push(new Uint8Array([b])));
    assert.equal(out[0].headers.server, 'x\\c', 'CONNECTED headers are not unescaped');
    assert.equal(out[1].body, '최원익');
});

test('parser: malformed input throws', () => {
    assert.throws(() => new S.FrameParser().push('MESSAGE\nno-colon\n\n\0'), /header/);
    assert.throws(() => new S.FrameParser().push('MESSAGE\ncontent-length:2\n\nabc\0'), /NUL/);
    assert.throws(() => new S.FrameParser().push('MESSAGE\nx:\\t\n\n\0'), /escape/);
    assert.throws(() => new S.FrameParser().push('bad command\n\n\0'), /command/);
});

test('encoder: escapes headers (not on CONNECT), adds content-length in bytes', () => {
    const f = dec.decode(S.encodeFrame('SEND', { destination: '/a:b', 'x-nl': 'l1\nl2' }, '한글'));
    assert.equal(f, 'SEND\ndestination:/a\\cb\nx-nl:l1\\nl2\ncontent-length:6\n\n한글\0');
    const c = dec.decode(S.encodeFrame('CONNECT', { passcode: 'a:b' }));
    assert.equal(c, 'CONNECT\npasscode:a:b\n\n\0');
    // round trip through the parser
    const [back] = new S.FrameParser().push(S.encodeFrame('MESSAGE', { 'we:ird': 'v\\al' }, 'x\0y'));
    assert.equal(back.headers['we:ird'], 'v\\al');
    assert.equal(back.body, 'x\0y');
});

/* a WebSocket stand-in for the client's timing logic (no server involved) */
class FakeWS {
    constructor(onOpen) {
        this.readyState = 0;
        this.sent = [];
        setTimeout(() => {
            this.readyState = 1;
            this.onopen?.();
            onOpen?.(this);
        }, 0);
    }
    send(d) {
        this.sent.push(typeof d === 'string' ? d : dec.decode(d));
    }
    close() {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code: 1000, reason: '', wasClean: true }), 0);
    }
    serverSend(text) {
        this.onmessage?.({ data: text });
    }
}

test('page client heart-beats: sends EOLs at the agreed rate, drops a silent server', async () => {
    let ws;
    const states = [];
    const c = new S.Client({
        url: 'ws://127.0.0.1:1/ws',
        webSocketFactory: () => (ws = new FakeWS()),
        heartbeatOutgoing: 100,
        heartbeatIncoming: 100,
        reconnect: false,
    });
    c.onStateChange = (s) => states.push(s);
    c.activate();
    await sleep(20);
    assert.match(ws.sent[0], /^CONNECT\n/);
    assert.match(ws.sent[0], /\nheart-beat:100,100\n/);
    assert.match(ws.sent[0], /\naccept-version:1\.2,1\.1,1\.0\n/);
    ws.serverSend('CONNECTED\nversion:1.2\nheart-beat:200,150\n\n\0');
    assert.equal(c.connected, true);
    await sleep(700);
    const beats = ws.sent.filter((x) => x === '\n').length;
    // outgoing every max(100, 150) ms
    assert.ok(beats >= 2 && beats <= 6, `EOL heart-beats in 700 ms: ${beats}`);
    // the server stays silent: dropped after about 2 x max(100, 200) ms + grace
    const t0 = Date.now();
    while (c.connected && Date.now() - t0 < 5000) await sleep(50);
    assert.equal(c.connected, false, 'a silent server is dropped');
    assert.equal(states[states.length - 1], 'closed');
});

test('page client backoff: delays grow within [base/2, base] up to the maximum, then reset on CONNECTED', async () => {
    const delays = [];
    let opened = 0;
    let accept = false;
    const c = new S.Client({
        url: 'ws://127.0.0.1:1/ws',
        webSocketFactory: () => new FakeWS((ws) => {
            opened++;
            if (accept) ws.serverSend('CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0');
            else ws.close();
        }),
        heartbeatOutgoing: 0,
        heartbeatIncoming: 0,
        reconnectMin: 20,
        reconnectMax: 160,
    });
    c.onStateChange = (s, info) => { if (s === 'reconnect-wait') delays.push(info.delay); };
    c.activate();
    while (delays.length < 7) await sleep(20);
    delays.slice(0, 7).forEach((d, k) => {
        const base = Math.min(160, 20 * 2 ** k);
        assert.ok(d >= base / 2 && d <= base, `attempt ${k}: ${d} ms in [${base / 2}, ${base}]`);
    });
    accept = true;
    const connected = new Promise((r) => { c.onConnect = r; });
    await connected;
    assert.ok(opened >= 8);
    assert.equal(c.attempt, 0, 'the backoff starts over after a success');
    await c.deactivate();
});

function pageClient(member, opts = {}) {
    const sockets = [];
    const client = new S.Client({
        url: WS_URL,
        webSocketFactory: () => {
            const ws = new WebSocket(WS_URL, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
            ws.on('error', () => {});
            sockets.push(ws);
            return ws;
        },
        connectHeaders: { login: member.loginId, passcode: member.token },
        reconnectMin: 100,
        reconnectMax: 500,
        ...opts,
    });
    client.sockets = sockets;
    open.push(client);
    return client;
}

function waitConnect(client, ms = 8000) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('page client did not connect')), ms);
        client.onConnect = (frame, again) => {
            clearTimeout(timer);
            resolve({ frame, again });
        };
    });
}

test('the page client chats with @stomp/stompjs, with receipts', async () => {
    const a = await makeMember('pg');
    const b = await makeMember('pg');
    const room = roomOf(a, b);
    const pc = pageClient(a);
    const got = [];
    pc.subscribe(`/sub/chat/room/${room}`, (f) => got.push(JSON.parse(f.body)));
    const side = [];
    pc.subscribe(`/sub/chat/side/${a.id}`, (f) => side.push(JSON.parse(f.body)));
    const connected = waitConnect(pc);
    pc.activate();
    const { frame } = await connected;
    assert.equal(frame.headers.version, '1.2');

    const sc = await stomp(b);
    try {
        const box = await collectSynced(sc, `/sub/chat/room/${room}`);
        const receipt = await pc.send('/pub/chat/message', { roomId: room, message: 'from the page client' });
        assert.equal(receipt.command, 'RECEIPT');
        await publish(sc, '/pub/chat/message', { roomId: room, message: 'from stompjs' });
        await box.waitFor(2);
        // each subscription's frames come in order, but not in step with the
        // other connection's: wait for both of the page client's
        for (let i = 0; i < 80 && (got.length < 2 || side.length < 2); i++) await sleep(100);
        assert.deepEqual(got.map((m) => m.message), ['from the page client', 'from stompjs']);
        assert.deepEqual(side.map((m) => m.message), ['from the page client', 'from stompjs']);
        assert.equal(got[0].writer, a.loginId);
    } finally {
        await sc.deactivate();
    }
});

test('the page client reconnects after a drop and subscribes again', async () => {
    const a = await makeMember('rc');
    const b = await makeMember('rc');
    const room = roomOf(a, b);
    const pc = pageClient(a);
    const got = [];
    pc.subscribe(`/sub/chat/room/${room}`, (f) => got.push(JSON.parse(f.body)));
    const states = [];
    pc.onStateChange = (s) => states.push(s);
    let c = waitConnect(pc);
    pc.activate();
    await c;
    // the network "drops": kill the TCP connection under the client
    c = waitConnect(pc);
    pc.sockets[0].terminate();
    const { again } = await c;
    assert.equal(again, true, 'onConnect says it is a reconnect');
    assert.ok(states.includes('reconnect-wait'), `went through reconnect-wait: ${states}`);
    const sc = await stomp(b);
    try {
        await publish(sc, '/pub/chat/message', { roomId: room, message: 'after the drop' });
        for (let i = 0; i < 80 && got.length < 1; i++) await sleep(100);
        assert.deepEqual(got.map((m) => m.message), ['after the drop'], 'the room subscription was renewed');
    } finally {
        await sc.deactivate();
    }
});

test('the page client rejects a refused SEND and reports the ERROR', async () => {
    const a = await makeMember('er');
    const b = await makeMember('er');
    const c = await makeMember('er');
    const pc = pageClient(a, { reconnect: false });
    const errors = [];
    pc.onStompError = (f) => errors.push(f.headers.message);
    const connected = waitConnect(pc);
    pc.activate();
    await connected;
    await assert.rejects(pc.send('/pub/chat/message', { roomId: roomOf(b, c), message: 'nope' }));
    assert.equal(errors.length, 1);
    assert.ok(errors[0]);
});

test('the page client gives up without a token, reporting the ERROR', async () => {
    const pc = new S.Client({
        url: WS_URL,
        webSocketFactory: () => new WebSocket(WS_URL, ['v12.stomp']),
        reconnect: false,
    });
    open.push(pc);
    const err = new Promise((resolve) => { pc.onStompError = (f) => resolve(f); });
    const closed = new Promise((resolve) => { pc.onStateChange = (s) => s === 'closed' && resolve(); });
    pc.activate();
    const f = await err;
    assert.ok(f.headers.message);
    await closed;
    assert.equal(pc.connected, false);
});
