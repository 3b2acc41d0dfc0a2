// tests/e2e/lib.mjs - helpers shared by the end-to-end suites: REST calls,
// members, the real @stomp/stompjs client over `ws`, a raw STOMP-over-WebSocket
// connection and a raw RFC 6455 socket (for frames `ws` refuses to send).
//
// Every suite runs against the chatd named by env CHATD_URL
// (e.g. http://127.0.0.1:8080), whatever its queue and store.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

export const BASE = (process.env.CHATD_URL || '').replace(/\/+$/, '');
if (!BASE) {
    throw new Error('CHATD_URL is not set: run the suites through tests/e2e/run.sh, or set it to a running chatd (http://127.0.0.1:PORT)');
}
export const WS_URL = BASE.replace(/^http/, 'ws') + '/ws';
export const ORIGIN = BASE;
const url = new URL(BASE);
export const HOST = url.hostname;
export const PORT = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
export const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
/* the server's [ws] heartbeat_send,heartbeat_recv (10000,10000 by default;
 * env CHATD_HEARTBEAT when the suite's chatd runs with others) */
export const HEARTBEAT = (process.env.CHATD_HEARTBEAT || '10000,10000').split(',').map(Number);

/* The page's own client (web/stomp.js), loaded into this process. */
export function pageStomp() {
    require(path.join(here, '..', '..', 'web', 'stomp.js'));
    return globalThis.ChatdStomp;
}

export function uid(prefix = 'u') {
    return `${prefix}${crypto.randomBytes(5).toString('hex')}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* http(method, path, {body, token, cookie, raw, headers}) -> {status, headers, json, text} */
export async function http(method, p, opts = {}) {
    const headers = { Accept: 'application/json', ...(opts.headers || {}) };
    let body;
    if (opts.raw !== undefined) {
        body = opts.raw;
        headers['Content-Type'] ??= 'application/json';
    } else if (opts.body !== undefined) {
        body = JSON.stringify(opts.body);
        headers['Content-Type'] = 'application/json';
    }
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    if (opts.cookie) headers.Cookie = opts.cookie;
    const res = await fetch(BASE + p, { method, headers, body, redirect: 'manual' });
    const text = await res.text();
    let json = null;
    try {
        json = text ? JSON.parse(text) : null;
    } catch {
        json = undefined; // not JSON
    }
    return { status: res.status, headers: res.headers, json, text };
}

/* register + log in a fresh member; returns {id, loginId, name, password, token, cookie} */
export async function makeMember(prefix = 'm', name) {
    const loginId = uid(prefix);
    const password = `pw-${crypto.randomBytes(6).toString('hex')}`;
    name ??= `Name ${loginId}`;
    const reg = await http('POST', '/api/members', { body: { loginId, name, password } });
    assert.equal(reg.status, 201, `register ${loginId}: ${reg.status} ${reg.text}`);
    assert.equal(reg.json.loginId, loginId);
    assert.equal(reg.json.name, name);
    assert.ok(Number.isInteger(Number(reg.json.id)), `member id ${reg.json.id}`);
    const lg = await http('POST', '/api/login', { body: { loginId, password } });
    assert.equal(lg.status, 200, `login ${loginId}: ${lg.status} ${lg.text}`);
    assert.equal(typeof lg.json.token, 'string');
    assert.ok(lg.json.token.length >= 16, 'token has some length');
    const setCookie = lg.headers.get('set-cookie') || '';
    const m = /chatd_session=([^;]+)/.exec(setCookie);
    assert.ok(m, `login sets the chatd_session cookie: ${setCookie}`);
    return {
        id: Number(reg.json.id),
        loginId,
        name,
        password,
        token: lg.json.token,
        cookie: `chatd_session=${m[1]}`,
        setCookie,
    };
}

export function roomOf(a, b) {
    const x = Number(a.id ?? a), y = Number(b.id ?? b);
    return `${Math.min(x, y)}&${Math.max(x, y)}`;
}

/* Every `ws` socket made through these helpers reports errors here; the
 * suites assert it stays empty in normal chat. */
export const wsErrors = [];

function trackedSocket(protocols = PROTOCOLS, options = {}, url = WS_URL) {
    const ws = new WebSocket(url, protocols, options);
    ws.on('error', (err) => wsErrors.push(err));
    return ws;
}

/* stomp(member, opts) -> connected @stomp/stompjs Client.
 * opts.auth: 'passcode' (default) | 'bearer' | 'cookie'; opts.url: another
 * WebSocket URL (e.g. wss://...), opts.ws: more options of the ws socket
 * (e.g. { ca }) */
export async function stomp(member, opts = {}) {
    const auth = opts.auth || 'passcode';
    const connectHeaders = {};
    const wsOptions = { ...(opts.ws || {}) };
    if (auth === 'passcode') {
        connectHeaders.login = member.loginId;
        connectHeaders.passcode = member.token;
    } else if (auth === 'bearer') {
        connectHeaders.Authorization = `Bearer ${member.token}`;
    } else if (auth === 'cookie') {
        wsOptions.headers = { Cookie: member.cookie };
        wsOptions.origin = ORIGIN;
    }
    const client = new Client({
        webSocketFactory: () => trackedSocket(PROTOCOLS, wsOptions, opts.url),
        connectHeaders,
        reconnectDelay: 0,
        heartbeatIncoming: opts.heartbeatIncoming ?? 10000,
        heartbeatOutgoing: opts.heartbeatOutgoing ?? 10000,
        debug: () => {},
    });
    client.errors = []; // STOMP ERROR frames
    await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`STOMP connect of ${member.loginId} timed out`)), 10000);
        client.onConnect = (frame) => {
            clearTimeout(timer);
            client.connectedFrame = frame;
            resolve();
        };
        client.onStompError = (f) => {
            clearTimeout(timer);
            client.errors.push(f);
            reject(new Error(`STOMP ERROR on connect: ${f.headers.message}`));
        };
        client.onWebSocketClose = (ev) => {
            clearTimeout(timer);
            reject(new Error(`socket closed during connect: ${ev.code}`));
        };
        client.activate();
    });
    client.onStompError = (f) => client.errors.push(f);
    client.onWebSocketClose = () => {};
    return client;
}

/* collect(client, destination) -> {messages, frames, waitFor(n|pred, ms), sub} */
export function collect(client, destination, headers = {}) {
    const box = { messages: [], frames: [] };
    const waiters = [];
    box.sub = client.subscribe(destination, (frame) => {
        box.frames.push(frame);
        box.messages.push(JSON.parse(frame.body));
        for (const w of [...waiters]) w.check();
    }, headers);
    box.waitFor = (want, ms = 8000) => new Promise((resolve, reject) => {
        const pred = typeof want === 'number' ? (msgs) => msgs.length >= want : want;
        const w = {
            check() {
                if (pred(box.messages)) {
                    clearTimeout(w.timer);
                    waiters.splice(waiters.indexOf(w), 1);
                    resolve(box.messages);
                }
            },
        };
        w.timer = setTimeout(() => {
            waiters.splice(waiters.indexOf(w), 1);
            reject(new Error(`${destination}: wanted ${want} but have ${box.messages.length}: ${JSON.stringify(box.messages)}`));
        }, ms);
        waiters.push(w);
        w.check();
    });
    return box;
}

/* collectSynced: collect() with a receipt on the SUBSCRIBE, resolved once the
 * server answered it (so nothing published afterwards can be missed) */
export async function collectSynced(client, destination, headers = {}) {
    const receipt = uid('sub-');
    const got = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for SUBSCRIBE ${destination}`)), 8000);
        client.watchForReceipt(receipt, () => {
            clearTimeout(timer);
            resolve();
        });
    });
    const box = collect(client, destination, { ...headers, receipt });
    await got;
    return box;
}

/* settle(client, roomId, boxes): let the stream settle before an exact count.
 * waitFor(n) means "at least n"; a late duplicate would come after it. So
 * publish a marker into the room (after the RECEIPTs of everything before it)
 * and wait until every box (collect() of that room or of a member's side) got
 * it: a room's messages arrive in order, so everything sent before the marker
 * has arrived by then. The marker is taken out of the boxes again. */
export async function settle(client, roomId, boxes, ms = 8000) {
    const marker = uid('settled-');
    await publish(client, '/pub/chat/message', { roomId, message: marker });
    await Promise.all(boxes.map((b) => b.waitFor((msgs) => msgs.some((m) => m.message === marker), ms)));
    for (const b of boxes) {
        const i = b.messages.findIndex((m) => m.message === marker);
        b.messages.splice(i, 1);
        b.frames.splice(i, 1);
        assert.ok(!b.messages.some((m) => m.message === marker), 'the marker arrived once');
    }
}

/* logLine(regex, ms): wait until chatd's log ($CHATD_OUT/$CHATD_E2E_NAME.log,
 * as tests/e2e/run.sh writes it) has a line matching regex; resolves with it */
export async function logLine(regex, ms = 10000) {
    const file = path.join(process.env.CHATD_OUT || '', `${process.env.CHATD_E2E_NAME || 'e2e'}.log`);
    const end = Date.now() + ms;
    for (;;) {
        const text = await readFile(file, 'utf8').catch(() => '');
        const line = text.split('\n').find((l) => regex.test(l));
        if (line) return line;
        if (Date.now() > end) throw new Error(`no line matching ${regex} in ${file} within ${ms} ms`);
        await sleep(50);
    }
}

/* publish with a receipt; resolves with the RECEIPT frame */
export function publish(client, destination, body, extraHeaders = {}) {
    return new Promise((resolve, reject) => {
        const receipt = uid('r-');
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for SEND to ${destination}`)), 10000);
        client.watchForReceipt(receipt, (frame) => {
            clearTimeout(timer);
            resolve(frame);
        });
        client.publish({
            destination,
            body: typeof body === 'string' ? body : JSON.stringify(body),
            headers: { 'content-type': 'application/json', receipt, ...extraHeaders },
        });
    });
}

export async function closeAll(...clients) {
    await Promise.all(clients.filter(Boolean).map((c) => c.deactivate()));
}

/* ---------- raw STOMP over `ws` (for refusals) ---------- */

/* rawStomp({protocols, headers, origin}) -> connection with
 * send(text|Buffer), frames[], nextFrame(cmd, ms), closed (Promise of {code, reason}) */
export async function rawStomp(opts = {}) {
    const S = pageStomp();
    const ws = trackedSocket(opts.protocols || PROTOCOLS, { headers: opts.headers, origin: opts.origin });
    const parser = new S.FrameParser();
    const conn = { ws, frames: [], parseError: null };
    const waiters = [];
    conn.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('message', (data) => {
        try {
            for (const f of parser.push(new Uint8Array(data))) {
                conn.frames.push(f);
                for (const w of [...waiters]) w();
            }
        } catch (e) {
            conn.parseError = e;
        }
    });
    await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
        ws.once('unexpected-response', (req, res) => reject(new Error(`handshake refused: ${res.statusCode}`)));
    });
    conn.protocol = ws.protocol;
    conn.send = (data) => ws.send(data);
    conn.frame = (command, headers = {}, body) => ws.send(S.encodeFrame(command, headers, body));
    /* nextFrame(command, ms): the first frame with that command (already
     * received or coming) */
    conn.nextFrame = (command, ms = 8000) => new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
            for (; seen < conn.frames.length; seen++) {
                if (conn.frames[seen].command === command) {
                    cleanup();
                    resolve(conn.frames[seen]);
                    return;
                }
            }
        };
        const timer = setTimeout(() => {
            cleanup();
            reject(new Error(`no ${command} frame within ${ms} ms; got ${conn.frames.map((f) => f.command).join(',')}`));
        }, ms);
        const cleanup = () => {
            clearTimeout(timer);
            const i = waiters.indexOf(check);
            if (i >= 0) waiters.splice(i, 1);
        };
        waiters.push(check);
        check();
    });
    conn.close = () => ws.terminate();
    return conn;
}

/* rawStomp + CONNECT as member (passcode); resolves after CONNECTED */
export async function rawConnected(member, extra = {}) {
    const conn = await rawStomp();
    conn.frame('CONNECT', {
        'accept-version': '1.2',
        host: HOST,
        login: member.loginId,
        passcode: member.token,
        'heart-beat': '0,0',
        ...extra,
    });
    conn.connected = await conn.nextFrame('CONNECTED');
    return conn;
}

/* ---------- raw RFC 6455 socket ---------- */

/* rawWs({protocol, headers}) -> {sock, status, headers, write(buf), frame(...),
 * readFrame(ms), closed} : a hand-made client for frames that `ws` never sends */
export function rawWs(opts = {}) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(PORT, HOST);
        const key = crypto.randomBytes(16).toString('base64');
        let buf = Buffer.alloc(0);
        let handshakeDone = false;
        const conn = { sock, frames: [] };
        const waiters = [];
        conn.closed = new Promise((r) => sock.on('close', r));
        sock.on('error', (e) => {
            if (!handshakeDone) reject(e);
        });
        sock.on('connect', () => {
            const lines = [
                'GET /ws HTTP/1.1',
                `Host: ${HOST}:${PORT}`,
                'Upgrade: websocket',
                'Connection: Upgrade',
                `Sec-WebSocket-Key: ${key}`,
                'Sec-WebSocket-Version: 13',
                `Sec-WebSocket-Protocol: ${opts.protocol || 'v12.stomp'}`,
                ...Object.entries(opts.headers || {}).map(([k, v]) => `${k}: ${v}`),
                '',
                '',
            ];
            sock.write(lines.join('\r\n'));
        });
        sock.on('data', (chunk) => {
            buf = Buffer.concat([buf, chunk]);
            if (!handshakeDone) {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) return;
                const head = buf.subarray(0, end).toString('latin1').split('\r\n');
                buf = buf.subarray(end + 4);
                conn.status = Number(head[0].split(' ')[1]);
                conn.headers = Object.fromEntries(head.slice(1).map((l) => {
                    const i = l.indexOf(':');
                    return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()];
                }));
                handshakeDone = true;
                const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
                if (conn.status !== 101 || conn.headers['sec-websocket-accept'] !== accept) {
                    reject(new Error(`handshake failed: ${head[0]}`));
                    sock.destroy();
                    return;
                }
                resolve(conn);
            }
            // server frames: never masked
            for (;;) {
                if (buf.length < 2) break;
                const fin = (buf[0] & 0x80) !== 0, opcode = buf[0] & 0x0f, masked = (buf[1] & 0x80) !== 0;
                let len = buf[1] & 0x7f, off = 2;
                if (len === 126) {
                    if (buf.length < 4) break;
                    len = buf.readUInt16BE(2);
                    off = 4;
                } else if (len === 127) {
                    if (buf.length < 10) break;
                    len = Number(buf.readBigUInt64BE(2));
                    off = 10;
                }
                if (buf.length < off + len) break;
                conn.frames.push({ fin, opcode, masked, payload: buf.subarray(off, off + len) });
                buf = buf.subarray(off + len);
                for (const w of [...waiters]) w();
            }
        });
        conn.write = (b) => sock.write(b);
        /* frame(opcode, payload, {fin, mask, rsv, length}) -> Buffer of a client frame */
        conn.frame = (opcode, payload = Buffer.alloc(0), o = {}) => {
            payload = Buffer.from(payload);
            const fin = o.fin === false ? 0 : 0x80;
            const mask = o.mask !== false;
            const len = o.length ?? payload.length;
            let head;
            if (len < 126) {
                head = Buffer.from([fin | (o.rsv || 0) | opcode, (mask ? 0x80 : 0) | len]);
            } else if (len < 65536) {
                head = Buffer.alloc(4);
                head[0] = fin | opcode;
                head[1] = (mask ? 0x80 : 0) | 126;
                head.writeUInt16BE(len, 2);
            } else {
                head = Buffer.alloc(10);
                head[0] = fin | opcode;
                head[1] = (mask ? 0x80 : 0) | 127;
                head.writeBigUInt64BE(BigInt(len), 2);
            }
            if (!mask) return Buffer.concat([head, payload]);
            const key = crypto.randomBytes(4);
            const body = Buffer.from(payload);
            for (let i = 0; i < body.length; i++) body[i] ^= key[i % 4];
            return Buffer.concat([head, key, body]);
        };
        conn.send = (opcode, payload, o) => sock.write(conn.frame(opcode, payload, o));
        /* closeCode(ms): wait for the server's close frame; its code (or null
         * when the socket ends without one) */
        conn.closeCode = (ms = 8000) => new Promise((res, rej) => {
            const check = () => {
                const f = conn.frames.find((x) => x.opcode === 8);
                if (f) {
                    done();
                    res(f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005);
                }
            };
            const timer = setTimeout(() => {
                done();
                rej(new Error(`no close frame within ${ms} ms`));
            }, ms);
            const onClose = () => {
                setImmediate(() => {
                    check();
                    if (!conn.frames.find((x) => x.opcode === 8)) {
                        done();
                        res(null);
                    }
                });
            };
            const done = () => {
                clearTimeout(timer);
                const i = waiters.indexOf(check);
                if (i >= 0) waiters.splice(i, 1);
                sock.off('close', onClose);
            };
            waiters.push(check);
            sock.on('close', onClose);
            check();
        });
        conn.destroy = () => sock.destroy();
    });
}

/* shape of a chat message on the wire */
export function assertChat(msg, { roomId, writer, message }) {
    assert.equal(typeof msg.id, 'string', `id is a string: ${JSON.stringify(msg)}`);
    assert.match(msg.id, /^[0-9]+$/);
    assert.equal(msg.roomId, roomId);
    assert.equal(msg.writer, writer.loginId);
    assert.equal(Number(msg.writerId), writer.id);
    assert.equal(typeof msg.writerId, 'number', 'writerId is a number');
    assert.equal(msg.message, message);
    assert.match(msg.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, `ISO-8601 UTC: ${msg.timestamp}`);
    const age = Math.abs(Date.now() - Date.parse(msg.timestamp));
    assert.ok(age < 120000, `timestamp is now-ish (${msg.timestamp})`);
    if (msg.type !== undefined) assert.equal(msg.type, 'chat');
}
