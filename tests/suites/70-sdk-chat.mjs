// tests/suites/70-sdk-chat.mjs - the chat half of 70-sdk.sh: two members chat
// through an installed chatd with the real @stomp/stompjs client, and the
// out-of-tree example plugins are checked from the outside.
//
//   CHATD_URL=http://127.0.0.1:PORT node 70-sdk-chat.mjs filter|store
//
// filter: the config loads filter-banned-words twice: [mask] (words spam and,
//         from its words_file, scam; mode mask) and [block] (word forbidden,
//         mode reject). A masked word
//         arrives as *** at the peer and in the history; a rejected message
//         gets a STOMP ERROR naming the filter and never arrives. GET /metrics
//         is scraped before and during the chat: the expected series exist and
//         the counters moved.
// reload: after words_file gained "eggs" and chatd got SIGHUP, eggs are masked.
// store:  the config uses store-memory: members, login, chat, history and
//         room summaries all work through it.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';

const BASE = (process.env.CHATD_URL || '').replace(/\/+$/, '');
if (!BASE) throw new Error('set CHATD_URL');
const WS_URL = BASE.replace(/^http/, 'ws') + '/ws';
const mode = process.argv[2];
const log = (...a) => console.log('[70-sdk]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function http(method, path, { body, token } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(BASE + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try { json = text ? JSON.parse(text) : null; } catch { json = undefined; }
    return { status: res.status, json, text };
}

async function member(prefix) {
    const loginId = `${prefix}${crypto.randomBytes(4).toString('hex')}`;
    const password = `pw-${crypto.randomBytes(6).toString('hex')}`;
    const reg = await http('POST', '/api/members', { body: { loginId, name: prefix, password } });
    assert.equal(reg.status, 201, `register: ${reg.status} ${reg.text}`);
    const lg = await http('POST', '/api/login', { body: { loginId, password } });
    assert.equal(lg.status, 200, `login: ${lg.status} ${lg.text}`);
    return { id: Number(reg.json.id), loginId, token: lg.json.token };
}

/* A connected @stomp/stompjs client; errors are collected in client.errors. */
function stomp(m) {
    return new Promise((resolve, reject) => {
        const client = new Client({
            webSocketFactory: () => new WebSocket(WS_URL, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
            connectHeaders: { Authorization: `Bearer ${m.token}` },
            reconnectDelay: 0,
            heartbeatIncoming: 0,
            heartbeatOutgoing: 0,
        });
        client.errors = [];
        const timer = setTimeout(() => reject(new Error('STOMP connect timed out')), 10000);
        client.onConnect = () => { clearTimeout(timer); resolve(client); };
        client.onStompError = (f) => { client.errors.push(f.headers.message || f.body); };
        client.onWebSocketError = (e) => { clearTimeout(timer); reject(new Error(`WebSocket error: ${e.message || e}`)); };
        client.activate();
    });
}

/* SUBSCRIBE with a receipt: resolves with the array the MESSAGEs go to once
 * the server has the subscription, so nothing sent afterwards can be missed */
async function collect(client, destination) {
    const got = [];
    const receipt = crypto.randomUUID();
    const subscribed = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for SUBSCRIBE ${destination}`)), 10000);
        client.watchForReceipt(receipt, () => { clearTimeout(timer); resolve(); });
    });
    client.subscribe(destination, (msg) => got.push(JSON.parse(msg.body)), { receipt });
    await subscribed;
    return got;
}

async function waitFor(what, pred, ms = 10000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        if (pred()) return;
        await sleep(25);
    }
    throw new Error(`timed out waiting for ${what}`);
}

/* SEND with a receipt; resolves when the RECEIPT arrives (the message is
 * durable), rejects on an ERROR frame or after 10 s. */
function send(client, roomId, message) {
    return new Promise((resolve, reject) => {
        const receipt = crypto.randomUUID();
        const errors = client.errors.length;
        const poll = setInterval(() => {
            if (client.errors.length > errors) {
                clearInterval(poll);
                clearTimeout(timer);
                reject(new Error(`ERROR: ${client.errors[errors]}`));
            }
        }, 20);
        const timer = setTimeout(() => { clearInterval(poll); reject(new Error(`no RECEIPT for "${message}"`)); }, 10000);
        client.watchForReceipt(receipt, () => { clearInterval(poll); clearTimeout(timer); resolve(); });
        client.publish({
            destination: '/pub/chat/message',
            body: JSON.stringify({ roomId, message }),
            headers: { receipt },
        });
    });
}

/* Prometheus text -> Map("name{labels}" -> number) */
async function scrape() {
    const pub = await fetch(`${BASE}/metrics`);
    assert.equal(pub.status, 404, 'GET /metrics on the public listener is a 404');
    await pub.arrayBuffer();
    const res = await fetch(process.env.CHATD_METRICS_URL || `${BASE}/metrics`);
    assert.equal(res.status, 200, 'GET /metrics');
    assert.match(res.headers.get('content-type') || '', /^text\/plain/, 'metrics content type');
    const text = await res.text();
    const m = new Map();
    for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const sp = line.lastIndexOf(' ');
        m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
    }
    return { text, m };
}

/* Sum of every series of a metric (over its labels), or undefined if absent. */
function total(s, name) {
    let sum;
    for (const [k, v] of s.m) {
        if (k === name || k.startsWith(`${name}{`)) sum = (sum ?? 0) + v;
    }
    return sum;
}

function series(s, name, instance) {
    for (const [k, v] of s.m) {
        if (k.startsWith(`${name}{`) && k.includes(`instance="${instance}"`)) return v;
    }
    return undefined;
}

async function filterMode() {
    const before = await scrape();
    const alice = await member('alice');
    const bob = await member('bob');
    const room = `${Math.min(alice.id, bob.id)}&${Math.max(alice.id, bob.id)}`;
    const ca = await stomp(alice);
    const cb = await stomp(bob);
    const atBob = await collect(cb, `/sub/chat/room/${room}`);
    const atBobSide = await collect(cb, `/sub/chat/side/${bob.id}`);

    await send(ca, room, 'buy SPAM now, Scam-free and spammer-proof');
    await send(ca, room, 'hello bob');
    await waitFor('two messages at bob', () => atBob.length >= 2 && atBobSide.length >= 2);
    assert.equal(atBob[0].message, 'buy *** now, ***-free and spammer-proof', 'masked by [mask]');
    assert.equal(atBob[1].message, 'hello bob', 'clean text passes');
    assert.equal(atBob[0].writer, alice.loginId);
    assert.equal(atBobSide[0].message, atBob[0].message, 'side destination gets the masked text');
    log('mask ok:', JSON.stringify(atBob[0].message));

    // scrape during the chat: both clients are connected and subscribed
    const during = await scrape();
    for (const name of ['chatd_messages_published_total', 'chatd_messages_persisted_total',
        'chatd_messages_fanned_out_total', 'chatd_ws_connections', 'chatd_ws_subscriptions',
        'chatd_ws_accepted_connections_total', 'chatd_pending_messages',
        'chatd_queue_latency_ms_count', 'chatd_store_latency_ms_count',
        'chatd_filter_masked_total']) {
        assert.notEqual(total(during, name), undefined, `metric ${name} is exported`);
    }
    const moved = (name) => (total(during, name) ?? 0) - (total(before, name) ?? 0);
    assert.ok(total(during, 'chatd_ws_connections') >= 2, 'two WebSocket connections counted');
    assert.ok(total(during, 'chatd_ws_subscriptions') >= 2, 'subscriptions counted');
    assert.ok(moved('chatd_ws_accepted_connections_total') >= 2, 'accepted connections moved');
    assert.ok(moved('chatd_messages_published_total') >= 2, 'published moved by 2');
    assert.ok(moved('chatd_messages_persisted_total') >= 2, 'persisted moved by 2');
    assert.ok(moved('chatd_messages_fanned_out_total') >= 2, 'fanned out moved by 2');
    assert.ok(moved('chatd_queue_latency_ms_count') >= 2, 'queue latency observed');
    assert.ok(moved('chatd_store_latency_ms_count') >= 2, 'store latency observed');
    assert.equal(series(during, 'chatd_filter_masked_total', 'mask'), 2,
        'the [mask] instance counted its two masked words');
    log('metrics ok:', ['published', 'persisted', 'fanned_out']
        .map((n) => `${n}+${moved(`chatd_messages_${n}_total`)}`).join(' '),
        `connections=${total(during, 'chatd_ws_connections')}`);

    // reject: [block] refuses the message with a reason; nobody receives it
    const ca2 = await stomp(alice);
    const refused = await send(ca2, room, 'this is forbidden talk').then(() => false, () => true);
    assert.ok(refused, 'no RECEIPT for a rejected message');
    await waitFor('the ERROR frame', () => ca2.errors.length > 0);
    assert.match(ca2.errors[0], /rejected by filter block/, `ERROR names the filter: ${ca2.errors[0]}`);
    assert.match(ca2.errors[0], /banned word/, 'ERROR gives the reason');
    log('reject ok:', JSON.stringify(ca2.errors[0]));
    await send(ca, room, 'still here');
    await waitFor('the message after the rejection', () => atBob.length >= 3);
    assert.deepEqual(atBob.map((m) => m.message),
        ['buy *** now, ***-free and spammer-proof', 'hello bob', 'still here'],
        'the rejected message never arrived');

    // the store has only what the filters let through
    const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=50`, { token: bob.token });
    assert.equal(h.status, 200, `history: ${h.status} ${h.text}`);
    assert.deepEqual(h.json.messages.map((m) => m.message),
        ['buy *** now, ***-free and spammer-proof', 'hello bob', 'still here'], 'history');

    const after = await scrape();
    assert.equal(series(after, 'chatd_filter_rejected_total', 'block'), 1, 'rejection counted');
    assert.ok((total(after, 'chatd_messages_rejected_total') ?? 0) >= 1, 'core counted the rejection');
    for (const c of [ca, ca2, cb]) await c.deactivate();
}

/* After SIGHUP re-read [mask]'s words_file, which now also bans "eggs". */
async function reloadMode() {
    const alice = await member('alice');
    const bob = await member('bob');
    const room = `${Math.min(alice.id, bob.id)}&${Math.max(alice.id, bob.id)}`;
    const ca = await stomp(alice);
    const cb = await stomp(bob);
    const atBob = await collect(cb, `/sub/chat/room/${room}`);
    await send(ca, room, 'green eggs and spam');
    await waitFor('the message', () => atBob.length >= 1);
    assert.equal(atBob[0].message, 'green *** and ***', 'the reloaded word list is used');
    log('reload ok:', JSON.stringify(atBob[0].message));
    for (const c of [ca, cb]) await c.deactivate();
}

async function storeMode() {
    const alice = await member('alice');
    const bob = await member('bob');
    const room = `${Math.min(alice.id, bob.id)}&${Math.max(alice.id, bob.id)}`;
    const dup = await http('POST', '/api/members', { body: { loginId: alice.loginId, name: 'x', password: 'pw-123456789' } });
    assert.equal(dup.status, 409, 'store-memory refuses a taken login id');
    const ca = await stomp(alice);
    const cb = await stomp(bob);
    const atBob = await collect(cb, `/sub/chat/room/${room}`);
    await send(ca, room, 'one');
    await send(ca, room, 'two');
    await send(cb, room, 'three');
    await waitFor('three messages', () => atBob.length >= 3);
    const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=2`, { token: alice.token });
    assert.equal(h.status, 200, `history: ${h.status} ${h.text}`);
    assert.deepEqual(h.json.messages.map((m) => m.message), ['two', 'three'], 'newest page, oldest first');
    assert.ok(h.json.next, 'a cursor to the older page');
    const older = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=2&before=${h.json.next}`, { token: alice.token });
    assert.deepEqual(older.json.messages.map((m) => m.message), ['one'], 'older page');
    const rooms = await http('GET', '/api/rooms', { token: bob.token });
    assert.equal(rooms.status, 200);
    assert.equal(rooms.json.length, 1);
    assert.equal(rooms.json[0].lastMessage, 'three');
    assert.equal(Number(rooms.json[0].unread), 0, "bob wrote last: nothing unread for him");
    const roomsA = await http('GET', '/api/rooms', { token: alice.token });
    assert.equal(Number(roomsA.json[0].unread), 1, 'alice has one unread from bob');
    log('store-memory ok: history, cursor, summaries');
    for (const c of [ca, cb]) await c.deactivate();
}

const timer = setTimeout(() => { console.error('[70-sdk] timed out'); process.exit(1); }, 90000);
try {
    if (mode === 'filter') await filterMode();
    else if (mode === 'reload') await reloadMode();
    else if (mode === 'store') await storeMode();
    else throw new Error(`unknown mode ${mode}`);
    clearTimeout(timer);
} catch (e) {
    console.error('[70-sdk] FAIL:', e.stack || e);
    process.exit(1);
}
