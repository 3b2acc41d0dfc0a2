// tests/e2e/conformance-lib.mjs - the client of the conformance suites
// (tests/e2e/conformance-*.test.mjs), written from the public specifications
// only: raw HTTP/1.1 over TCP, its own RFC 6455 framing and STOMP 1.0/1.1/1.2
// encoder and parser, so that nothing of chatd's own client code is trusted;
// plus the members fixture and the settle marker used before exact counts.

import { before } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { makeMember, uid, sleep, HOST, PORT } from './lib.mjs';

export const OP = { cont: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };
export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
export const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

/* ======================= raw HTTP over TCP ======================= */

/* rawHttp(bytes, {ms, half, count, waitEnd, head}) -> {text, buf, ended, responses}
 * Sends bytes (string or Buffer, or an array written one by one), reads until
 * `count` responses (default 1) are complete, or with waitEnd until the
 * server closes; at most ms. */
export function rawHttp(bytes, o = {}) {
    const ms = o.ms ?? 3000;
    return new Promise((resolve) => {
        const sock = net.connect(PORT, HOST);
        let buf = Buffer.alloc(0);
        let ended = false, done = false;
        const finish = () => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            sock.destroy();
            resolve({ buf, text: buf.toString('latin1'), ended, responses: parseResponses(buf, o.head) });
        };
        const timer = setTimeout(finish, ms);
        sock.on('connect', () => {
            for (const b of Array.isArray(bytes) ? bytes : [bytes]) sock.write(b);
            if (o.half) sock.end();
        });
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            if (!o.waitEnd && parseResponses(buf, o.head).filter((r) => r.complete).length >= (o.count ?? 1)) finish();
        });
        sock.on('error', () => {});
        sock.on('end', () => { ended = true; });
        sock.on('close', () => { ended = true; finish(); });
    });
}

/* parse a byte stream of HTTP/1.1 responses (Content-Length framed);
 * head: array of booleans, true when that response answers a HEAD */
export function parseResponses(buf, head = []) {
    const out = [];
    let off = 0;
    while (off < buf.length) {
        const end = buf.indexOf('\r\n\r\n', off);
        if (end < 0) break;
        const lines = buf.subarray(off, end).toString('latin1').split('\r\n');
        const m = /^HTTP\/(\d\.\d) (\d{3}) ?(.*)$/.exec(lines[0]);
        const headers = {};
        for (const l of lines.slice(1)) {
            const i = l.indexOf(':');
            const k = l.slice(0, i).trim().toLowerCase();
            const v = l.slice(i + 1).trim();
            headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
        }
        const r = { version: m?.[1], status: m ? Number(m[2]) : null, statusLine: lines[0], headers, complete: false };
        out.push(r);
        const status = r.status;
        const noBody = head[out.length - 1] || status === 204 || status === 304 || (status >= 100 && status < 200);
        const len = noBody ? 0 : Number(headers['content-length'] ?? 0);
        if (buf.length < end + 4 + len) break;
        r.body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
        r.complete = true;
        try { r.json = len ? JSON.parse(r.body) : null; } catch { r.json = undefined; }
        off = end + 4 + len;
    }
    return out;
}

export const req = (line, headers = [], body = '') => `${line}\r\n${[`Host: ${HOST}:${PORT}`, ...headers].map((h) => `${h}\r\n`).join('')}\r\n${body}`;

export function assertJsonError(r, status, what) {
    assert.equal(r.status, status, `${what}: status ${r.statusLine}`);
    assert.match(r.headers['content-type'] || '', /^application\/json/, `${what}: JSON content type`);
    assert.equal(typeof r.json?.error, 'string', `${what}: body is {"error":...}: ${r.body}`);
}

/* ======================= raw RFC 6455 client ======================= */

export function mask(payload) {
    const key = crypto.randomBytes(4);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= key[i % 4];
    return { key, body };
}

/* encode one client frame; o: {fin, rsv (0x70 bits), mask, len16, len64, lenOverride} */
export function encodeFrame(opcode, payload = Buffer.alloc(0), o = {}) {
    payload = Buffer.from(payload);
    const b0 = (o.fin === false ? 0 : 0x80) | (o.rsv || 0) | opcode;
    const m = o.mask === false ? 0 : 0x80;
    const len = o.lenOverride ?? payload.length;
    let head;
    if (o.len64 || len > 0xffff) {
        head = Buffer.alloc(10);
        head[1] = m | 127;
        head.writeBigUInt64BE(BigInt(len), 2);
    } else if (o.len16 || len > 125) {
        head = Buffer.alloc(4);
        head[1] = m | 126;
        head.writeUInt16BE(len, 2);
    } else {
        head = Buffer.alloc(2);
        head[1] = m | len;
    }
    head[0] = b0;
    if (!m) return Buffer.concat([head, payload]);
    const { key, body } = mask(payload);
    return Buffer.concat([head, key, body]);
}

/* the handshake request */
export function handshakeRequest(key, o = {}) {
    const h = [
        `GET ${o.path || '/ws'} HTTP/1.1`,
        `Host: ${HOST}:${PORT}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        `Sec-WebSocket-Version: ${o.version ?? 13}`,
    ];
    if (o.protocol !== null) h.push(`Sec-WebSocket-Protocol: ${o.protocol ?? 'v12.stomp'}`);
    for (const x of o.extra || []) h.push(x);
    return `${h.join('\r\n')}\r\n\r\n`;
}

/* wsRaw(o) -> connection after a 101, with
 *   frames[] (server frames {fin, rsv, opcode, masked, payload, at}),
 *   send(opcode, payload, o), write(buf), waitFrame(pred, ms),
 *   closeFrame(ms) -> {code, reason} | null when TCP ends without one,
 *   ended (Promise: TCP closed), stomp layer: stomp(cmd, headers, body, o),
 *   stompFrames[], nextStomp(cmd|pred, ms), heartbeats[] (times) */
export function wsRaw(o = {}) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(PORT, HOST);
        const key = crypto.randomBytes(16).toString('base64');
        const c = { sock, frames: [], stompFrames: [], heartbeats: [], stompErrors: [], waiters: new Set() };
        let buf = Buffer.alloc(0);
        let opened = false;
        const stompParser = new StompParser();
        c.ended = new Promise((r) => sock.on('close', () => { c.isEnded = true; r(); wake(); }));
        const wake = () => { for (const w of [...c.waiters]) w(); };
        sock.on('error', (e) => { if (!opened) reject(e); });
        sock.on('connect', () => sock.write(handshakeRequest(key, o)));
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            if (!opened) {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) return;
                const [r] = parseResponses(buf.subarray(0, end + 4), [true]);
                buf = buf.subarray(end + 4);
                c.status = r.status;
                c.headers = r.headers;
                const accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
                if (r.status !== 101 || r.headers['sec-websocket-accept'] !== accept) {
                    sock.destroy();
                    const e = new Error(`handshake refused: ${r.statusLine}`);
                    e.status = r.status;
                    e.headers = r.headers;
                    reject(e);
                    return;
                }
                opened = true;
                c.protocol = r.headers['sec-websocket-protocol'];
                resolve(c);
            }
            for (;;) {
                if (buf.length < 2) break;
                const fin = (buf[0] & 0x80) !== 0, rsv = buf[0] & 0x70, opcode = buf[0] & 0x0f;
                const masked = (buf[1] & 0x80) !== 0;
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
                if (masked) off += 4;
                if (buf.length < off + len) break;
                let payload = Buffer.from(buf.subarray(off, off + len));
                if (masked) {
                    const k = buf.subarray(off - 4, off);
                    for (let i = 0; i < payload.length; i++) payload[i] ^= k[i % 4];
                }
                buf = buf.subarray(off + len);
                const f = { fin, rsv, opcode, masked, payload, at: Date.now() };
                c.frames.push(f);
                if (o.autoPong && opcode === OP.ping) sock.write(encodeFrame(OP.pong, payload));
                if (opcode === OP.text || opcode === OP.binary || opcode === OP.cont) {
                    try {
                        for (const x of stompParser.push(payload)) {
                            if (x.heartbeat) c.heartbeats.push(f.at);
                            else c.stompFrames.push(x);
                        }
                    } catch (e) {
                        c.stompErrors.push(e);
                    }
                }
                wake();
            }
        });
        c.write = (b) => { if (!sock.destroyed) sock.write(b); };
        c.send = (opcode, payload, fo) => c.write(encodeFrame(opcode, payload, fo));
        c.waitFor = (pred, ms = 8000, what = 'condition') => new Promise((res, rej) => {
            const check = () => {
                let v;
                try { v = pred(); } catch (e) { v = undefined; }
                if (v) {
                    cleanup();
                    res(v);
                }
            };
            const timer = setTimeout(() => {
                cleanup();
                rej(new Error(`${what}: not within ${ms} ms; frames ${c.frames.map((f) => f.opcode).join(',')}; stomp ${c.stompFrames.map((f) => f.command).join(',')}`));
            }, ms);
            const cleanup = () => { clearTimeout(timer); c.waiters.delete(check); };
            c.waiters.add(check);
            check();
        });
        c.waitFrame = (pred, ms, what) => c.waitFor(() => c.frames.find(pred), ms, what);
        /* the server's close frame -> {code, reason, raw}; null when TCP ends without one */
        c.closeFrame = (ms = 8000) => c.waitFor(() => {
            const f = c.frames.find((x) => x.opcode === OP.close);
            if (f) {
                return {
                    code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005,
                    reason: f.payload.subarray(2).toString('utf8'),
                    raw: f.payload,
                };
            }
            return c.isEnded ? { code: null } : undefined;
        }, ms, 'close frame').then((r) => (r.code === null ? null : r));
        c.closeCode = async (ms) => (await c.closeFrame(ms))?.code ?? null;
        c.stomp = (command, headers = {}, body = '', so = {}) => c.send(so.binary ? OP.binary : OP.text, stompEncode(command, headers, body, so));
        c.nextStomp = (want, ms = 8000) => {
            const pred = typeof want === 'function' ? want : (f) => f.command === want;
            return c.waitFor(() => c.stompFrames.find(pred), ms, `STOMP ${typeof want === 'string' ? want : 'frame'}`);
        };
        c.destroy = () => sock.destroy();
    });
}

/* ======================= STOMP, from the spec ======================= */

export const ESC = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', ':': '\\c' };
export const escape12 = (s) => String(s).replace(/[\\\n\r:]/g, (ch) => ESC[ch]);

/* stompEncode(command, headers, body, {version, raw, eol, noContentLength}) ->
 * Buffer. headers: object or array of [k, v] (repeats allowed). Values are
 * escaped (1.1/1.2 rules, not for CONNECT) unless raw. */
export function stompEncode(command, headers = {}, body = '', o = {}) {
    const eol = o.eol || '\n';
    const list = Array.isArray(headers) ? headers : Object.entries(headers);
    const esc = o.raw || command === 'CONNECT' || command === 'STOMP' ? (s) => String(s) : escape12;
    const bodyBuf = Buffer.from(body);
    let head = command + eol;
    for (const [k, v] of list) head += `${esc(k)}:${esc(v)}${eol}`;
    if (bodyBuf.length && !o.noContentLength && !list.some(([k]) => k === 'content-length')) head += `content-length:${bodyBuf.length}${eol}`;
    head += eol;
    return Buffer.concat([Buffer.from(head), bodyBuf, Buffer.from([0])]);
}

/* a streaming STOMP parser for server frames (1.2 rules: EOL = LF or CRLF,
 * heart-beats = bare EOLs, escapes decoded except on CONNECTED, first of a
 * repeated header wins, content-length bodies may contain NUL). */
export class StompParser {
    constructor() { this.buf = Buffer.alloc(0); this.escapes = true; }
    push(chunk) {
        this.buf = Buffer.concat([this.buf, Buffer.from(chunk)]);
        const out = [];
        for (;;) {
            // heart-beats between frames
            while (this.buf.length && (this.buf[0] === 0x0a || (this.buf[0] === 0x0d && this.buf[1] === 0x0a))) {
                this.buf = this.buf.subarray(this.buf[0] === 0x0d ? 2 : 1);
                out.push({ heartbeat: true });
            }
            if (!this.buf.length) break;
            const hEnd = this.headEnd();
            if (hEnd < 0) break;
            const lines = this.buf.subarray(0, hEnd.start).toString('utf8').split(/\r?\n/);
            const command = lines[0];
            if (!/^[A-Z]+$/.test(command)) throw new Error(`bad command line ${JSON.stringify(command)}`);
            const headers = {};
            const rawHeaders = [];
            for (const l of lines.slice(1)) {
                const i = l.indexOf(':');
                if (i < 0) throw new Error(`header line without a colon: ${JSON.stringify(l)}`);
                const raw = command === 'CONNECTED' || !this.escapes;
                const k = raw ? l.slice(0, i) : unescape12(l.slice(0, i));
                const v = raw ? l.slice(i + 1) : unescape12(l.slice(i + 1));
                rawHeaders.push([k, v]);
                if (!(k in headers)) headers[k] = v;
            }
            const bodyStart = hEnd.end;
            let bodyEnd;
            if (headers['content-length'] !== undefined) {
                const n = Number(headers['content-length']);
                if (!Number.isInteger(n) || n < 0) throw new Error(`bad content-length ${headers['content-length']}`);
                if (this.buf.length < bodyStart + n + 1) break;
                if (this.buf[bodyStart + n] !== 0) throw new Error(`${command}: no NUL after content-length ${n}`);
                bodyEnd = bodyStart + n;
            } else {
                bodyEnd = this.buf.indexOf(0, bodyStart);
                if (bodyEnd < 0) break;
            }
            const body = Buffer.from(this.buf.subarray(bodyStart, bodyEnd));
            this.buf = this.buf.subarray(bodyEnd + 1);
            // STOMP 1.0 has no escapes: decided by the version in CONNECTED
            if (command === 'CONNECTED') this.escapes = headers.version !== undefined && headers.version !== '1.0';
            out.push({ command, headers, rawHeaders, body: body.toString('utf8'), bodyBytes: body });
        }
        return out;
    }
    headEnd() {
        for (let i = 0; i < this.buf.length; i++) {
            if (this.buf[i] !== 0x0a) continue;
            const j = i + 1;
            if (this.buf[j] === 0x0a) return { start: i, end: j + 1 };
            if (this.buf[j] === 0x0d && this.buf[j + 1] === 0x0a) return { start: i, end: j + 2 };
        }
        return -1;
    }
}
export function unescape12(s) {
    return s.replace(/\\(.)/g, (m, ch) => {
        const v = { '\\': '\\', n: '\n', r: '\r', c: ':' }[ch];
        if (v === undefined) throw new Error(`undefined escape ${m}`);
        return v;
    });
}

/* open a raw WebSocket, CONNECT as member, await CONNECTED */
export async function stompSession(member, headers = {}, o = {}) {
    const c = await wsRaw(o);
    c.stomp('CONNECT', {
        'accept-version': '1.2',
        host: HOST,
        login: member.loginId,
        passcode: member.token,
        'heart-beat': '0,0',
        ...headers,
    });
    c.connected = await c.nextStomp((f) => f.command === 'CONNECTED' || f.command === 'ERROR');
    if (c.connected.command !== 'CONNECTED') throw new Error(`CONNECT refused: ${c.connected.headers.message}`);
    return c;
}

/* subscribe with a receipt and wait for it */
export async function subscribe(c, id, destination, extra = {}) {
    const receipt = uid('sub-');
    c.stomp('SUBSCRIBE', { id, destination, receipt, ...extra });
    const f = await c.nextStomp((x) => (x.command === 'RECEIPT' && x.headers['receipt-id'] === receipt) || x.command === 'ERROR');
    assert.equal(f.command, 'RECEIPT', `SUBSCRIBE ${destination}: ${f.headers.message}`);
    return f;
}

/* an ERROR frame, with a message header, is followed by a close frame and
 * the end of TCP */
export async function expectStompError(c, what, ms = 8000) {
    const err = await c.nextStomp('ERROR', ms);
    assert.ok(err.headers.message, `${what}: the ERROR has a message header`);
    const ended = await Promise.race([c.ended.then(() => true), sleep(5000).then(() => false)]);
    assert.ok(ended, `${what}: the connection is closed after the ERROR`);
    const iErr = c.frames.findIndex((f) => f.opcode === OP.text || f.opcode === OP.binary
        ? f.payload.includes('ERROR') : false);
    const iClose = c.frames.findIndex((f) => f.opcode === OP.close);
    if (iClose >= 0) assert.ok(iErr >= 0 && iErr < iClose, `${what}: the ERROR is sent before the close frame`);
    return err;
}

export const chatBody = (roomId, message, extra = {}) => JSON.stringify({ roomId, message, ...extra });


/* settled(member, room, ...watchers): before an exact count or an absence,
 * let the room's stream settle: member SENDs a marker (with a receipt) and
 * every watcher session gets it as a MESSAGE; a room's messages arrive in
 * order, so anything sent before it has arrived too. Returns the marker;
 * chats(w, marker) lists w's MESSAGE texts without it. */
export async function settled(member, room, ...watchers) {
    const marker = uid('settled-');
    const m = await stompSession(member);
    m.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: marker }, chatBody(room, marker));
    await m.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === marker);
    m.destroy();
    for (const w of watchers) {
        await w.waitFor(() => w.stompFrames.some((f) => f.command === 'MESSAGE' && JSON.parse(f.body).message === marker), 8000, 'the settle marker');
    }
    return marker;
}
export const chats = (w, marker) => w.stompFrames.filter((f) => f.command === 'MESSAGE').map((f) => JSON.parse(f.body).message).filter((t) => t !== marker);

/* fixtures(): three members a, b and c3 for the file that calls it, made
 * before its first test (read them through these live bindings) */
export let a, b, c3;
export function fixtures() {
    before(async () => {
        [a, b, c3] = await Promise.all([makeMember('cf'), makeMember('cf'), makeMember('cf')]);
    });
}
