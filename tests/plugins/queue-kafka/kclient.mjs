// tests/plugins/queue-kafka/kclient.mjs - helpers of the multi-node Kafka tests: members made
// through the REST API of a given node, the real @stomp/stompjs client over
// `ws` connected to a given node, subscriptions that collect messages, and
// publishes whose outcome (RECEIPT, ERROR or nothing) is recorded.
// Unlike tests/e2e/lib.mjs, every call names the node it talks to.

import fs from 'node:fs';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function uid(prefix = 'k') {
    return `${prefix}${crypto.randomBytes(5).toString('hex')}`;
}

export function nodesFromEnv() {
    const nodes = (process.env.KAFKA_NODES || '').split(/\s+/).filter(Boolean);
    if (nodes.length < 2) throw new Error('KAFKA_NODES must list the node URLs (http://127.0.0.1:PORT ...)');
    return nodes;
}

export async function http(base, method, p, body, token) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = undefined; }
    return { status: res.status, json, text };
}

/* register on `base`, log in there; the session lives in the shared store,
 * so the token works on every node */
export async function makeMember(base, prefix = 'k') {
    const loginId = uid(prefix);
    const password = `pw-${crypto.randomBytes(6).toString('hex')}`;
    const reg = await http(base, 'POST', '/api/members', { loginId, name: `Name ${loginId}`, password });
    if (reg.status !== 201) throw new Error(`register ${loginId} on ${base}: ${reg.status} ${reg.text}`);
    const lg = await http(base, 'POST', '/api/login', { loginId, password });
    if (lg.status !== 200) throw new Error(`login ${loginId} on ${base}: ${lg.status} ${lg.text}`);
    return { id: Number(reg.json.id), loginId, token: lg.json.token };
}

export function roomOf(a, b) {
    return `${Math.min(a.id, b.id)}&${Math.max(a.id, b.id)}`;
}

export async function waitHealthy(base, ms = 30000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        try {
            const r = await fetch(base + '/healthz');
            if (r.status === 200) return;
        } catch { /* not up yet */ }
        await sleep(100);
    }
    throw new Error(`${base}/healthz did not answer 200 within ${ms} ms`);
}

/* connect `member` to the node at `base` with @stomp/stompjs. The client
 * records ERROR frames and resolves pending publishes on ERROR or close. */
export async function connect(base, member) {
    const url = base.replace(/^http/, 'ws') + '/ws';
    const client = new Client({
        webSocketFactory: () => {
            const ws = new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
            ws.on('error', () => {}); // a killed node: the close handler reports it
            return ws;
        },
        connectHeaders: { login: member.loginId, passcode: member.token },
        reconnectDelay: 0,
        heartbeatIncoming: 0,
        heartbeatOutgoing: 0,
        debug: () => {},
    });
    client.pending = new Map(); // receipt id -> resolve
    client.errors = [];
    client.closed = false;
    const settleAll = (status, frame) => {
        for (const [id, resolve] of client.pending) resolve({ status, frame, receipt: id });
        client.pending.clear();
    };
    await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`STOMP connect of ${member.loginId} to ${base} timed out`)), 10000);
        client.onConnect = () => { clearTimeout(timer); resolve(); };
        client.onStompError = (f) => { clearTimeout(timer); reject(new Error(`ERROR on connect: ${f.headers.message}`)); };
        client.onWebSocketClose = (ev) => { clearTimeout(timer); reject(new Error(`socket closed during connect: ${ev.code}`)); };
        client.activate();
    });
    client.onStompError = (f) => {
        client.errors.push(f);
        const rid = f.headers['receipt-id'];
        if (rid && client.pending.has(rid)) {
            client.pending.get(rid)({ status: 'error', frame: f, receipt: rid });
            client.pending.delete(rid);
        }
        settleAll('error', f); // an ERROR closes the connection
    };
    client.onWebSocketClose = () => {
        client.closed = true;
        settleAll('closed', null);
    };
    return client;
}

/* subscribe (with extra SUBSCRIBE headers) and collect parsed bodies and
 * their cursors, in arrival order; with a receipt so that nothing published
 * after this resolves can be missed */
export async function subscribe(client, destination, headers = {}) {
    const box = { messages: [], cursors: [], destination };
    const receipt = uid('sub-');
    const got = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for SUBSCRIBE ${destination}`)), 15000);
        client.watchForReceipt(receipt, () => { clearTimeout(timer); resolve(); });
    });
    client.subscribe(destination, (frame) => {
        box.messages.push(JSON.parse(frame.body));
        box.cursors.push(frame.headers.cursor);
    }, { receipt, ...headers });
    await got;
    return box;
}

/* publish a chat line (with extra SEND headers); resolves {status:
 * 'receipt'|'error'|'closed'|'timeout', frame} */
export function publish(client, roomId, message, timeoutMs = 60000, headers = {}) {
    return new Promise((resolve) => {
        if (client.closed || !client.connected) {
            resolve({ status: 'closed' });
            return;
        }
        const receipt = uid('r-');
        const timer = setTimeout(() => {
            client.pending.delete(receipt);
            resolve({ status: 'timeout', receipt });
        }, timeoutMs);
        const done = (r) => { clearTimeout(timer); resolve(r); };
        client.pending.set(receipt, done);
        client.watchForReceipt(receipt, (frame) => {
            if (!client.pending.has(receipt)) return;
            client.pending.delete(receipt);
            done({ status: 'receipt', frame, receipt });
        });
        try {
            client.publish({
                destination: '/pub/chat/message',
                body: JSON.stringify({ roomId, message }),
                headers: { 'content-type': 'application/json', receipt, ...headers },
            });
        } catch (e) {
            client.pending.delete(receipt);
            done({ status: 'closed', error: String(e) });
        }
    });
}

/* publish and require its RECEIPT (an Error otherwise); resolves the
 * RECEIPT's message-id */
export async function sendReceipted(client, roomId, message, headers = {}) {
    const res = await publish(client, roomId, message, 30000, headers);
    if (res.status !== 'receipt') throw new Error(`publish "${message}": ${res.status} ${res.frame?.headers?.message || ''}`);
    return res.frame.headers['message-id'];
}

/* the newest 100 messages of room, read on base (an Error unless 200) */
export async function roomHistory(base, token, room) {
    const h = await http(base, 'GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=100`, undefined, token);
    if (h.status !== 200) throw new Error(`history of ${room} on ${base}: ${h.status} ${h.text}`);
    return h.json.messages;
}

export async function closeAll(clients) {
    await Promise.all(clients.filter((c) => c && !c.closed).map((c) => c.deactivate().catch(() => {})));
}

/* wait until pred() is true; throws with `what` after ms */
export async function until(pred, ms, what) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        if (await pred()) return;
        await sleep(100);
    }
    if (await pred()) return;
    throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/* run SQL on the shared PostgreSQL (KAFKA_PG is a libpq conninfo); rows of
 * '|'-separated fields */
export function sql(query) {
    const conninfo = process.env.KAFKA_PG;
    if (!conninfo) throw new Error('KAFKA_PG (conninfo of the shared database) is not set');
    const out = execFileSync('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', query], { encoding: 'utf8' });
    return out.split('\n').filter((l) => l.length > 0).map((l) => l.split('|'));
}

/* how many rows of `messages` hold each text (texts must not contain ') */
export function storedCounts(texts) {
    const counts = new Map(texts.map((t) => [t, 0]));
    if (texts.length === 0) return counts;
    const list = texts.map((t) => `'${t.replace(/'/g, "''")}'`).join(',');
    for (const [message, n] of sql(`SELECT message, count(*) FROM messages WHERE message IN (${list}) GROUP BY message`)) {
        counts.set(message, Number(n));
    }
    return counts;
}

export function check(cond, msg, failures) {
    if (!cond) {
        failures.push(msg);
        console.error(`FAIL: ${msg}`);
    }
}

/* settle(rooms): before exact counts, let the streams settle. rooms is a list
 * of {client, roomId, boxes}: a marker is published into each room through
 * client (after every earlier RECEIPT) and awaited in each of its boxes; a
 * room's messages arrive in order (one partition), so a late duplicate would
 * have come before its marker. The markers are taken out of the boxes. */
export async function settle(rooms, ms = 30000) {
    const marker = uid('settled-');
    for (const r of rooms) {
        const res = await publish(r.client, r.roomId, `${marker} ${r.roomId}`, ms);
        if (res.status !== 'receipt') throw new Error(`settle: the marker of room ${r.roomId} got ${res.status}`);
    }
    await until(() => rooms.every((r) => r.boxes.every((b) => b.messages.some((m) => m.message === `${marker} ${r.roomId}`))),
        ms, 'every subscriber to get the settle marker');
    for (const b of new Set(rooms.flatMap((r) => r.boxes))) {
        for (let i = b.messages.length - 1; i >= 0; i--) if (b.messages[i].message.startsWith(`${marker} `)) b.messages.splice(i, 1);
    }
}

/* mockCommand(cmd): one line to the mock cluster's control FIFO
 * (KAFKA_MOCK_CTL); resolves once the mock answered "ok CMD" on its output
 * (KAFKA_MOCK_OUT), i.e. the command took effect */
export async function mockCommand(cmd, ms = 10000) {
    const { KAFKA_MOCK_CTL: ctl, KAFKA_MOCK_OUT: out } = process.env;
    if (!ctl || !out) throw new Error('KAFKA_MOCK_CTL and KAFKA_MOCK_OUT must be set');
    const oks = () => fs.readFileSync(out, 'utf8').split('\n').filter((l) => l === `ok ${cmd}`).length;
    const before = oks();
    fs.appendFileSync(ctl, `${cmd}\n`);
    await until(() => oks() > before, ms, `the mock cluster to do "${cmd}"`);
}
