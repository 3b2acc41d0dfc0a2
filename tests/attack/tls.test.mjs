// tests/attack/tls.test.mjs - TLS for real, on the TLS listener of
// tests/suites/35-attack.sh (a test CA and a server certificate for
// 127.0.0.1 made there by openssl): the certificate verifies against that CA
// and against nothing else; a login over https sets the chatd_session cookie
// with Secure (over plain http it does not); two members chat over wss://
// with @stomp/stompjs, every message once and in order; and the chat page,
// loaded over https in Debian's chromium, signs up, holds a Secure cookie,
// connects over wss:// and chats with a node client. A plain listener set up
// as behind a TLS proxy (cookie_secure, allowed_origins = the proxy's https
// origin) sets Secure too and takes the cookie from that origin only.
//
// How chromium trusts the test server: it is started with
// --ignore-certificate-errors-spki-list set to the SHA-256 of the test
// certificate's public key (CHATD_TLS_SPKI, computed by 35-attack.sh), so it
// accepts that one key and still refuses every other bad certificate;
// playwright's ignoreHTTPSErrors is not used.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { launchChromium, signUp } from '../browser/lib.mjs';
import { makeMember, roomOf, stomp, collectSynced, publish, settle, uid, PROTOCOLS } from './lib.mjs';

const TLS_PORT = Number(process.env.CHATD_TLS_PORT);
const CA = process.env.CHATD_TLS_CA ? fs.readFileSync(process.env.CHATD_TLS_CA) : null;
const SPKI = process.env.CHATD_TLS_SPKI;
const TLS_BASE = `https://127.0.0.1:${TLS_PORT}`;
const PROXIED_PORT = Number(process.env.CHATD_PROXIED_PORT);

const open = new Set();
after(async () => {
    await Promise.all([...open].map((c) => c.close?.() ?? c.deactivate?.()));
});

/* one HTTPS request to the TLS listener; ca: the CA to trust (null: the
 * system's only) */
function req(method, path, { body, cookie, token, ca = CA } = {}) {
    return new Promise((resolve, reject) => {
        const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
        const headers = { Accept: 'application/json' };
        if (data) Object.assign(headers, { 'Content-Type': 'application/json', 'Content-Length': data.length });
        if (cookie) headers.Cookie = cookie;
        if (token) headers.Authorization = `Bearer ${token}`;
        const r = https.request(`${TLS_BASE}${path}`, { method, headers, ca: ca ?? undefined, timeout: 10000 }, (res) => {
            const chunks = [];
            res.on('data', (d) => chunks.push(d));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString();
                let json = null;
                try {
                    json = text ? JSON.parse(text) : null;
                } catch {
                    json = undefined;
                }
                resolve({ status: res.statusCode, headers: res.headers, text, json });
            });
        });
        r.on('timeout', () => r.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
        r.on('error', reject);
        r.end(data);
    });
}

/* a @stomp/stompjs client over wss:// that trusts the test CA */
async function wssStomp(member) {
    const client = await stomp(member, { url: `wss://127.0.0.1:${TLS_PORT}/ws`, ws: { ca: CA } });
    open.add(client);
    return client;
}

function cookieOf(setCookie) {
    const line = [].concat(setCookie || []).find((l) => l.startsWith('chatd_session='));
    assert.ok(line, `a chatd_session cookie: ${setCookie}`);
    return line;
}

test('the certificate verifies against the test CA only', async () => {
    assert.ok(TLS_PORT && CA, 'CHATD_TLS_PORT and CHATD_TLS_CA (35-attack.sh)');
    const ok = await req('GET', '/healthz');
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json, { status: 'ok' });
    await assert.rejects(req('GET', '/healthz', { ca: null }), (e) => /self[- ]signed|unable to (verify|get local issuer)|UNABLE_TO/i.test(`${e.code} ${e.message}`),
        'without the test CA the certificate is refused');
});

test('a login over https sets the session cookie with Secure; over http without', async () => {
    const m = await makeMember('tls');
    assert.doesNotMatch(m.setCookie, /;\s*Secure/i, `plain http: ${m.setCookie}`);
    const lg = await req('POST', '/api/login', { body: { loginId: m.loginId, password: m.password } });
    assert.equal(lg.status, 200, lg.text);
    const c = cookieOf(lg.headers['set-cookie']);
    assert.match(c, /;\s*Secure(;|$)/, c);
    assert.match(c, /;\s*HttpOnly(;|$)/, c);
    assert.match(c, /;\s*SameSite=Strict(;|$)/, c);
    const cookie = c.split(';')[0];
    const me = await req('GET', '/api/me', { cookie });
    assert.equal(me.status, 200, me.text);
    assert.equal(Number(me.json.id), m.id);
    const out = await req('POST', '/api/logout', { cookie });
    assert.equal(out.status, 204);
    const gone = cookieOf(out.headers['set-cookie']);
    assert.match(gone, /Max-Age=0/);
    assert.match(gone, /;\s*Secure(;|$)/, 'the cookie is cleared with the same attributes');
    assert.equal((await req('GET', '/api/me', { cookie })).status, 401, 'logged out');
});

/* CONNECT on the proxied listener with only the cookie, the handshake's
 * Origin `origin`: resolves 'connected' or the STOMP ERROR's message */
function cookieConnect(cookie, origin) {
    return new Promise((resolve, reject) => {
        const client = new Client({
            webSocketFactory: () => new WebSocket(`ws://127.0.0.1:${PROXIED_PORT}/ws`, PROTOCOLS, { headers: { Cookie: cookie }, origin }),
            reconnectDelay: 0,
            heartbeatIncoming: 0,
            heartbeatOutgoing: 0,
            debug: () => {},
        });
        const timer = setTimeout(() => reject(new Error(`CONNECT from ${origin}: no answer in 15 s`)), 15000);
        const done = (v) => {
            clearTimeout(timer);
            client.deactivate();
            resolve(v);
        };
        client.onConnect = () => done('connected');
        client.onStompError = (f) => done(f.headers.message);
        client.onWebSocketClose = (ev) => done(`closed ${ev.code}`);
        client.activate();
    });
}

test('behind a TLS proxy: cookie_secure sets Secure, allowed_origins admits the proxy origin only', async () => {
    assert.ok(PROXIED_PORT, 'CHATD_PROXIED_PORT (35-attack.sh)');
    const m = await makeMember('proxied');
    const r = await fetch(`http://127.0.0.1:${PROXIED_PORT}/api/login`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ loginId: m.loginId, password: m.password }),
    });
    assert.equal(r.status, 200);
    const c = cookieOf(r.headers.get('set-cookie'));
    assert.match(c, /;\s*Secure(;|$)/, `cookie_secure on a plain listener: ${c}`);
    const cookie = c.split(';')[0];
    assert.equal(await cookieConnect(cookie, 'https://chat.example.org'), 'connected', 'the proxy origin may use the cookie');
    const other = await cookieConnect(cookie, 'https://evil.example');
    assert.notEqual(other, 'connected', 'another origin may not');
    assert.match(other, /^authentication required/, 'the cookie of a foreign origin is ignored: no credentials');
});

test('two members chat over wss:// with @stomp/stompjs: every message once, in order', async () => {
    const a = await makeMember('wssa');
    const b = await makeMember('wssb');
    const room = roomOf(a, b);
    const ca = await wssStomp(a);
    const cb = await wssStomp(b);
    assert.equal(ca.connectedFrame.headers.version, '1.2');
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    const sent = [];
    for (let i = 0; i < 30; i++) {
        const message = `over tls ${i}`;
        await publish(ca, '/pub/chat/message', { roomId: room, message });
        sent.push(message);
    }
    await settle(ca, room, [box]);
    assert.deepEqual(box.messages.map((m) => m.message), sent, 'each message exactly once, in order');
    assert.equal(ca.errors.length + cb.errors.length, 0, 'no STOMP ERROR');
    // the same history over https
    const h = await req('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=100`, { token: b.token });
    assert.equal(h.status, 200, h.text);
    const hist = h.json.messages.map((m) => m.message);
    assert.equal(hist.length, sent.length + 1, 'the messages and the settle marker');
    assert.deepEqual(hist.slice(0, -1), sent);
    assert.match(hist.at(-1), /^settled-/);
});

test('the page over https in chromium: sign up, Secure cookie, wss://, chat with a node client', async () => {
    assert.ok(SPKI, 'CHATD_TLS_SPKI (35-attack.sh)');
    const browser = await launchChromium([`--ignore-certificate-errors-spki-list=${SPKI}`]);
    open.add(browser);
    const ctx = await browser.newContext({ locale: 'en-US', timezoneId: 'UTC' });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const wsUrls = [];
    page.on('websocket', (ws) => wsUrls.push(ws.url()));

    const peer = await makeMember('tlspeer');
    const who = { loginId: uid('tlspage'), name: 'Tessa', password: 'tls-page-password-1' };
    await signUp(page, TLS_BASE, who);
    assert.ok(wsUrls.some((u) => u.startsWith(`wss://127.0.0.1:${TLS_PORT}/`)), `the page speaks wss://: ${wsUrls}`);
    const cookies = await ctx.cookies(TLS_BASE);
    const sess = cookies.find((c) => c.name === 'chatd_session');
    assert.ok(sess, 'the page holds the session cookie');
    assert.equal(sess.secure, true, 'Secure');
    assert.equal(sess.httpOnly, true, 'HttpOnly');

    // the peer, a node client over wss://, writes; the page shows it live
    const room = roomOf(who, peer);
    const cp = await wssStomp(peer);
    const box = await collectSynced(cp, `/sub/chat/room/${room}`);
    await publish(cp, '/pub/chat/message', { roomId: room, message: 'hello over wss' });
    const item = page.locator(`#room-list [data-testid="room-item"][data-room-id="${room}"]`);
    await item.waitFor({ timeout: 15000 });
    await item.click();
    const shown = (t) => page.waitForFunction((x) => [...document.querySelectorAll('#message-list .msg-text')].some((e) => e.textContent === x),
        t, { timeout: 15000 });
    await shown('hello over wss');
    // and the page answers; the node client gets it
    await page.fill('#msg-input', 'hello back from chromium');
    await page.press('#msg-input', 'Enter');
    await shown('hello back from chromium');
    await settle(cp, room, [box]);
    assert.deepEqual(box.messages.map((m) => m.message), ['hello over wss', 'hello back from chromium']);
    assert.deepEqual(errors, [], 'no page error');
    await browser.close();
    open.delete(browser);
});
