// tests/browser/delivery.test.mjs - the chat page never misses and never
// duplicates (issue "never miss, never duplicate"), in Debian's chromium.
//
// The page (a Korean phone, so the pending label is Korean) reaches chatd only
// through a TCP proxy of this test, which can refuse connections, refuse only
// WebSocket upgrades, swallow what the server sends on a WebSocket, and cut
// every connection at once. The peer is @stomp/stompjs straight to chatd; its
// subscription gives the room's live order, the reference for the page's.
//
//  - the first load closes the seam: the peer keeps sending while the page
//    reloads; the page shows each message once, in the peer's order;
//  - offline, three typed messages wait as pending ("보내는 중…"), kept in
//    sessionStorage with idempotency keys; back online each shows once, in
//    order, and the peer gets each once;
//  - pending messages survive a reload of the page;
//  - a message the server refuses is marked failed (Retry / Delete), kept
//    across a reload, and does not hold up the next ones;
//  - the reconnects back off (the gaps at least double);
//  - a message whose RECEIPT is lost in a cut is sent again with its key: one
//    message, shown once, delivered once, stored once;
//  - after the peer sent 50 messages while the page was away, the reconnect
//    shows all 50, in order, without a reload of the page, by resuming after
//    the cursors (resume-after on both subscriptions, no history request);
//  - after a reload the last history item's cursor is the resume point;
//  - a resume point the server refuses (ERROR): the page reloads history instead.
// Every "once" is checked after a final marker message has arrived.
//
// Needs CHATD_URL (run through tests/e2e/run.sh, see tests/suites/40-browser.sh).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { BASE, uid, launchChromium } from './lib.mjs';

const me = { loginId: uid('dana'), name: '다나', password: 'dana-password-1' };
const peer = { loginId: uid('eli'), name: 'Eli', password: 'eli-password-1' };
const SENDING = '보내는 중…';

/* ---- a TCP proxy the test can cut ---- */
class CutProxy {
    constructor(target) {
        this.target = new URL(target);
        this.pairs = new Set();
        this.refuse = false;      // every new connection is closed at once
        this.refuseWs = false;    // WebSocket upgrades are closed, plain HTTP passes
        this.swallowWs = false;   // what the server sends on a WebSocket is dropped
        this.refusedWs = [];      // when each refused WebSocket upgrade came
    }

    async start() {
        this.server = net.createServer((c) => this.accept(c));
        await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
        this.url = `http://127.0.0.1:${this.server.address().port}`;
    }

    accept(c) {
        if (this.refuse) {
            c.destroy();
            return;
        }
        const u = net.connect(Number(this.target.port), this.target.hostname);
        const pair = { c, u, ws: false };
        this.pairs.add(pair);
        const end = () => {
            c.destroy();
            u.destroy();
            this.pairs.delete(pair);
        };
        for (const s of [c, u]) {
            s.on('error', end);
            s.on('close', end);
        }
        c.on('data', (d) => {
            if (!pair.ws && /\r\nupgrade:[ \t]*websocket/i.test(d.toString('latin1'))) {
                pair.ws = true;
                if (this.refuseWs) {
                    this.refusedWs.push(Date.now());
                    end();
                    return;
                }
            }
            u.write(d);
        });
        u.on('data', (d) => {
            if (!(pair.ws && this.swallowWs)) c.write(d);
        });
    }

    /* cut(): close every connection now, as a network failure would */
    cut() {
        for (const p of [...this.pairs]) {
            p.c.destroy();
            p.u.destroy();
            this.pairs.delete(p);
        }
    }

    webSockets() {
        return [...this.pairs].filter((p) => p.ws).length;
    }

    async close() {
        this.cut();
        await new Promise((resolve) => this.server.close(resolve));
    }
}

/* waitUntil(fn, what, ms): poll fn until it returns truthy, with a deadline */
async function waitUntil(fn, what, ms = 20000) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

async function rest(method, p, body, headers = {}) {
    const res = await fetch(BASE + p, {
        method,
        headers: { 'Content-Type': 'application/json', ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
}

/* ---- the peer: @stomp/stompjs straight to chatd ---- */
class Peer {
    constructor(who) {
        this.who = who;
        this.got = [];        // MESSAGEs on the room subscription, in arrival order
        this.receipts = [];   // RECEIPT frames of its SENDs
        this.n = 0;
    }

    async connect(roomId) {
        const login = await rest('POST', '/api/login', { loginId: this.who.loginId, password: this.who.password });
        assert.equal(login.status, 200, 'peer login');
        this.token = login.json.token;
        this.client = new Client({
            webSocketFactory: () => new WebSocket(BASE.replace(/^http/, 'ws') + '/ws', ['v12.stomp']),
            connectHeaders: { login: this.who.loginId, passcode: login.json.token },
            reconnectDelay: 0,
            debug: () => {},
        });
        await new Promise((resolve, reject) => {
            this.client.onConnect = resolve;
            this.client.onStompError = (f) => reject(new Error(f.headers.message));
            this.client.activate();
        });
        this.client.onStompError = (f) => { this.error = f.headers.message; };
        await new Promise((resolve) => {
            this.client.watchForReceipt('sub-room', resolve);
            this.client.subscribe(`/sub/chat/room/${roomId}`, (f) => {
                const m = JSON.parse(f.body);
                this.got.push({ id: m.id, text: m.message, writerId: m.writerId, cursor: f.headers.cursor });
            }, { receipt: 'sub-room' });
        });
        this.roomId = roomId;
    }

    /* send(text) -> the RECEIPT frame */
    send(text) {
        const receipt = `p-${++this.n}`;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no receipt for ${text}`)), 15000);
            this.client.watchForReceipt(receipt, (f) => {
                clearTimeout(timer);
                this.receipts.push(f);
                resolve(f);
            });
            this.client.publish({
                destination: '/pub/chat/message',
                body: JSON.stringify({ roomId: this.roomId, message: text }),
                headers: { receipt },
            });
        });
    }

    texts() {
        return this.got.map((m) => m.text);
    }

    async waitText(text) {
        await waitUntil(() => this.got.some((m) => m.text === text), `the peer to get "${text}"`);
    }
}

let proxy, browser, ctx, page, eli, rid;
const pageErrors = [];
const historyRequests = [];
const sentFrames = []; // STOMP frames the page sent: {at, command, headers, body}

/* stompFrame(payload): one client frame as written by web/stomp.js (never
 * more than one per WebSocket message); heart-beats give null */
function stompFrame(payload) {
    const text = typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8');
    const cut = text.indexOf('\n\n');
    if (cut < 0) return null;
    const [command, ...lines] = text.slice(0, cut).split('\n');
    const headers = {};
    for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0 && !(l.slice(0, i) in headers)) headers[l.slice(0, i)] = l.slice(i + 1);
    }
    return { at: Date.now(), command, headers, body: text.slice(cut + 2).replace(/\0$/, '') };
}

const sends = (text) => sentFrames.filter((f) => f.command === 'SEND' && f.body.includes(JSON.stringify(text)));

const pageTexts = () => page.locator('#message-list .msg-text').allTextContents();
const pendingItems = () => page.locator('#pending-list [data-testid="message-pending"]');

async function waitShown(text, ms = 30000) {
    await page.waitForFunction((t) => [...document.querySelectorAll('#message-list .msg-text')]
        .some((e) => e.textContent === t), text, { timeout: ms });
}

async function connected(ms = 30000) {
    await page.locator('#conn-status[data-state="connected"]').waitFor({ state: 'attached', timeout: ms });
}

/* roomSettled(): the open room has loaded and is not catching up (a reload
 * that connected after the first history load catches up once the room's
 * subscription is active; until that ends there is no resume point) */
async function roomSettled(ms = 30000) {
    await page.waitForFunction(() => {
        const c = window.ChatdPage.state.current;
        return c && c.loaded && !c.loading && !c.catching && !c.buffering && c.lastCursor != null;
    }, undefined, { timeout: ms });
}

async function disconnected() {
    await page.locator('#conn-status:not([data-state="connected"])').waitFor({ state: 'attached', timeout: 20000 });
}

async function type(text) {
    await page.fill('#msg-input', text);
    await page.press('#msg-input', 'Enter');
}

/* settle(marker): the peer sends a last message; both sides have it */
async function settle(marker) {
    await eli.send(marker);
    await eli.waitText(marker);
    await waitShown(marker);
}

/* the page's list and the store's history, each message once */
async function assertOnce(texts) {
    const shown = await pageTexts();
    const ids = await page.locator('#message-list [data-testid="message"]').evaluateAll((els) => els.map((e) => e.dataset.id));
    assert.equal(new Set(ids).size, ids.length, 'no message id shown twice');
    const hist = await rest('GET', `/api/rooms/${rid}/messages?limit=200`, undefined, { Authorization: `Bearer ${eli.token}` });
    assert.equal(hist.status, 200);
    const stored = hist.json.messages.map((m) => m.message);
    for (const t of texts) {
        assert.equal(shown.filter((x) => x === t).length, 1, `"${t}" shown once (${JSON.stringify(shown.slice(-12))})`);
        assert.equal(eli.texts().filter((x) => x === t).length, 1, `"${t}" delivered to the peer once`);
        assert.equal(stored.filter((x) => x === t).length, 1, `"${t}" stored once`);
    }
    assert.equal(await pendingItems().count(), 0, 'nothing pending any more');
}

/* the page shows the room in the peer's live order (its tail, from the first of texts) */
async function assertOrder(from) {
    const shown = await pageTexts();
    const live = eli.texts();
    const a = shown.slice(shown.indexOf(from));
    const b = live.slice(live.indexOf(from));
    assert.deepEqual(a, b, 'the page shows the room in the order the peer got it live');
}

before(async () => {
    proxy = new CutProxy(BASE);
    await proxy.start();
    for (const who of [peer, me]) {
        const r = await rest('POST', '/api/members', { loginId: who.loginId, name: who.name, password: who.password });
        assert.ok(r.status === 200 || r.status === 201, `register ${who.loginId}: ${r.status}`);
        who.id = Number((r.json.member ?? r.json).id);
    }
    rid = `${Math.min(me.id, peer.id)}&${Math.max(me.id, peer.id)}`;
    browser = await launchChromium();
    ctx = await browser.newContext({
        viewport: { width: 390, height: 800 }, isMobile: true, hasTouch: true, locale: 'ko-KR', timezoneId: 'Asia/Seoul',
    });
    page = await ctx.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
        if (m.type() === 'error' && !/WebSocket|net::ERR_|Failed to load resource/.test(m.text())) pageErrors.push(m.text());
    });
    page.on('websocket', (ws) => ws.on('framesent', (f) => {
        const frame = stompFrame(f.payload);
        if (frame) sentFrames.push(frame);
    }));
    page.on('request', (r) => {
        if (/\/api\/rooms\/[^/]+\/messages/.test(r.url())) historyRequests.push({ at: Date.now(), url: r.url() });
    });
});

after(async () => {
    if (eli?.client) await eli.client.deactivate().catch(() => {});
    if (browser) await browser.close();
    if (proxy) await proxy.close();
});

test('the page (through the proxy) and the peer meet in a room', async () => {
    await page.goto(proxy.url + '/');
    const login = await page.evaluate((who) => fetch('/api/login', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(who),
    }).then((r) => r.status), { loginId: me.loginId, password: me.password });
    assert.equal(login, 200);
    await page.goto(`${proxy.url}/#${rid}`); // only the hash changes: load it again, signed in
    await page.reload();
    await connected();
    await page.locator('#send-form').waitFor({ state: 'visible' });
    eli = new Peer(peer);
    await eli.connect(rid);
    await type('안녕 Eli');
    await eli.waitText('안녕 Eli');
    await waitShown('안녕 Eli');
    await settle('hi 다나');
    await assertOnce(['안녕 Eli', 'hi 다나']);
    const named = eli.got.find((m) => m.text === 'hi 다나');
    assert.equal(eli.receipts.at(-1).headers['message-id'], named.id, 'the RECEIPT names the message');
});

test('the first load closes the seam: messages sent while the page loads show once, in order', async () => {
    let stop = false;
    const sender = (async () => {
        for (let i = 1; i <= 40 && !stop; i++) {
            await eli.send(`seam ${i}`);
            await new Promise((r) => setTimeout(r, 20));
        }
    })();
    await page.reload();
    await connected();
    await sender.finally(() => { stop = true; });
    await settle('seam end');
    const texts = Array.from({ length: 40 }, (_, i) => `seam ${i + 1}`);
    await assertOnce(texts);
    await assertOrder('seam 1');
});

test('offline: three typed messages wait as pending, then each shows once, in order, delivered once', async () => {
    proxy.refuse = true;
    proxy.cut();
    await disconnected();
    const typed = ['offline 1', 'offline 2 — 둘', 'offline 3'];
    for (const t of typed) await type(t);
    await waitUntil(async () => (await pendingItems().count()) === 3, 'three pending items');
    assert.deepEqual(await pendingItems().locator('.msg-text').allTextContents(), typed, 'pending in the order typed');
    for (const label of await pendingItems().locator('.msg-time').allTextContents()) assert.equal(label, SENDING);
    assert.equal(await page.locator('#pending-list .msg.pending').count(), 3, 'shown with the pending class');
    const kept = await page.evaluate((k) => JSON.parse(sessionStorage.getItem(k) || '[]'), `chatd.outbox.${me.id}`);
    assert.deepEqual(kept.map((e) => e.text), typed, 'the outbox is kept in sessionStorage');
    assert.equal(new Set(kept.map((e) => e.key)).size, 3, 'one idempotency key per message');
    for (const e of kept) assert.match(e.key, /^[\x21-\x7e]{1,128}$/);
    assert.equal(eli.texts().filter((x) => typed.includes(x)).length, 0, 'nothing got through while offline');

    proxy.refuse = false; // the page comes back on its own (backoff)
    await connected();
    for (const t of typed) await waitShown(t);
    await settle('after offline');
    await assertOnce(typed);
    await assertOrder('offline 1');
    for (const e of kept) {
        const wire = sends(e.text);
        assert.ok(wire.length >= 1, `"${e.text}" was sent`);
        for (const f of wire) {
            assert.equal(f.headers['idempotency-key'], e.key, 'sent with the key it was given when typed');
            assert.ok(f.headers.receipt, 'with a receipt');
        }
    }
    const shown = await pageTexts();
    const at = shown.indexOf('offline 1');
    assert.deepEqual(shown.slice(at, at + 3), typed, 'one after the other, in the order typed');
});

test('pending messages survive a reload of the page', async () => {
    proxy.refuseWs = true;
    proxy.cut();
    await disconnected();
    const typed = ['kept 1', 'kept 2'];
    for (const t of typed) await type(t);
    await waitUntil(async () => (await pendingItems().count()) === 2, 'two pending items');
    const keys = await pendingItems().evaluateAll((els) => els.map((e) => e.dataset.key));
    await page.reload(); // plain HTTP passes, the WebSocket does not
    await page.locator('#send-form').waitFor({ state: 'visible' });
    await waitUntil(async () => (await pendingItems().count()) === 2, 'the two pending items after the reload');
    assert.deepEqual(await pendingItems().evaluateAll((els) => els.map((e) => e.dataset.key)), keys, 'same keys');
    assert.deepEqual(await pendingItems().locator('.msg-text').allTextContents(), typed);
    proxy.refuseWs = false;
    await connected();
    for (const t of typed) await waitShown(t);
    await settle('after reload');
    await assertOnce(typed);
    await assertOrder('kept 1');
});

test('a message the server refuses stays, marked failed, until retried or deleted; the next ones go on', async () => {
    const long = '가'.repeat(2000); // 6000 bytes: over max_message_bytes (4096)
    await type(long);
    await type('after the refused one');
    const failed = page.locator('#pending-list [data-testid="message-pending"][data-state="failed"]');
    await failed.waitFor({ timeout: 20000 });
    await waitShown('after the refused one');
    await connected(); // the server closed the connection after its ERROR; the page is back
    assert.match(await failed.locator('.msg-time').textContent(), /^전송 실패: .+ 다시 보내기 삭제$/);
    await page.reload(); // the failed entry is kept with the outbox
    await failed.waitFor({ timeout: 10000 });
    await failed.getByRole('button', { name: '삭제' }).click();
    await failed.waitFor({ state: 'detached' });
    const kept = await page.evaluate((k) => sessionStorage.getItem(k), `chatd.outbox.${me.id}`);
    assert.equal(kept, null, 'the outbox is empty');
    await connected();
    await settle('after the refusal');
    assert.equal(eli.texts().filter((x) => x === long).length, 0, 'the refused message was never delivered');
    await assertOnce(['after the refused one']);
});

test('the page reconnects with a growing backoff and says so', async () => {
    proxy.refusedWs = [];
    proxy.refuseWs = true;
    proxy.cut();
    await disconnected();
    await waitUntil(() => proxy.refusedWs.length >= 4, 'four refused reconnects');
    const t = proxy.refusedWs;
    // stomp.js waits 500 ms * 2^n, less up to half of it (jitter): the gaps at least double
    for (let i = 1; i < 4; i++) {
        const min = (500 * 2 ** i) / 2;
        assert.ok(t[i] - t[i - 1] >= min * 0.9, `gap ${i} is ${t[i] - t[i - 1]} ms, want >= ${min}`);
    }
    await page.waitForFunction(() => /^연결 끊김, [0-9]+초 후 다시 연결$/.test(document.getElementById('conn-status').textContent),
        null, { timeout: 10000 });
    proxy.refuseWs = false;
    await page.evaluate(() => window.dispatchEvent(new Event('online'))); // skips the rest of the wait
    await connected(5000);
});

test('a message whose RECEIPT was lost is sent again with its key: shown, delivered and stored once', async () => {
    assert.equal(proxy.webSockets(), 1, 'the page has one WebSocket');
    proxy.swallowWs = true; // the SEND reaches chatd, nothing comes back
    await type('lost receipt');
    await eli.waitText('lost receipt');
    assert.equal(await pendingItems().count(), 1, 'still pending: no RECEIPT came');
    proxy.cut();
    proxy.swallowWs = false;
    await disconnected();
    await connected();
    await waitShown('lost receipt');
    await settle('after lost receipt');
    await assertOnce(['lost receipt']);
    await assertOrder('lost receipt');
    const wire = sends('lost receipt');
    assert.ok(wire.length >= 2, `sent again after the cut (${wire.length} SENDs)`);
    assert.equal(new Set(wire.map((f) => f.headers['idempotency-key'])).size, 1, 'every time with the same key');
});

test('after a reload, the cursor of the last history item is the resume point', async () => {
    await page.reload();
    await connected();
    await waitShown('after lost receipt');
    await roomSettled();
    const hist = await rest('GET', `/api/rooms/${rid}/messages?limit=1`, undefined, { Authorization: `Bearer ${eli.token}` });
    const last = hist.json.messages.at(-1);
    assert.match(last.cursor ?? '', /^[\x20-\x7e]{1,256}$/, 'history items carry a cursor');
    proxy.refuse = true;
    proxy.cut();
    await disconnected();
    const cutAt = Date.now();
    await eli.send('after the history cursor');
    proxy.refuse = false;
    await waitShown('after the history cursor');
    await settle('after the history resume');
    await assertOnce(['after the history cursor']);
    const sub = sentFrames.find((f) => f.command === 'SUBSCRIBE' && f.at >= cutAt && f.headers.destination === `/sub/chat/room/${rid}`);
    const unescape = (v) => v?.replace(/\\(.)/g, (m, c) => ({ c: ':', n: '\n', r: '\r', '\\': '\\' })[c]);
    assert.equal(unescape(sub?.headers['resume-after']), last.cursor,
        `resumed after the history's last cursor (SUBSCRIBEs since the cut: ${JSON.stringify(
            sentFrames.filter((f) => f.command === 'SUBSCRIBE' && f.at >= cutAt).map((f) => f.headers))})`);
    assert.deepEqual(historyRequests.filter((r) => r.at >= cutAt), [], 'no history request');
});

test('after the peer sent 50 messages while the page was away, the reconnect shows all 50 without a reload', async () => {
    await roomSettled();
    await page.evaluate(() => { window.notReloaded = true; });
    proxy.refuse = true;
    proxy.cut();
    await disconnected();
    const cutAt = Date.now();
    const texts = Array.from({ length: 50 }, (_, i) => `away ${i + 1}`);
    for (const t of texts) await eli.send(t);
    proxy.refuse = false;
    await connected();
    await waitShown('away 50');
    await settle('welcome back');
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    await assertOnce(texts);
    await assertOrder('away 1');
    // the conversation list caught up as well
    await page.locator(`#room-list [data-room-id="${rid}"] .room-last`, { hasText: /^welcome back$/ })
        .waitFor({ state: 'attached', timeout: 10000 });
    for (const m of eli.got) assert.match(m.cursor ?? '', /^[\x20-\x7e]{1,256}$/, 'every MESSAGE has a cursor');
    const reloads = historyRequests.filter((r) => r.at >= cutAt);
    assert.deepEqual(reloads, [], 'the room resumed from its cursor: no history request');
    const subs = sentFrames.filter((f) => f.command === 'SUBSCRIBE' && f.at >= cutAt);
    for (const dest of [`/sub/chat/room/${rid}`, `/sub/chat/side/${me.id}`]) {
        const sub = subs.find((f) => f.headers.destination === dest);
        assert.ok(sub, `${dest} subscribed again`);
        assert.ok(sub.headers['resume-after'], `${dest} resumed after a cursor`);
    }
});

test('a resume point the server refuses: the page reloads the history instead, and misses nothing', async () => {
    await page.evaluate(() => { window.ChatdPage.state.current.lastCursor = 'not-a-cursor'; });
    proxy.refuse = true;
    proxy.cut();
    await disconnected();
    const cutAt = Date.now();
    const texts = ['refused 1', 'refused 2', 'refused 3'];
    for (const x of texts) await eli.send(x);
    proxy.refuse = false;
    for (const x of texts) await waitShown(x);
    await settle('after the refused resume');
    await assertOnce(texts);
    await assertOrder('refused 1');
    const subs = sentFrames.filter((f) => f.command === 'SUBSCRIBE' && f.at >= cutAt &&
        f.headers.destination === `/sub/chat/room/${rid}`);
    assert.equal(subs[0]?.headers['resume-after'], 'not-a-cursor', 'it tried the bad cursor first');
    assert.ok(subs.length >= 2 && !('resume-after' in subs.at(-1).headers), 'then subscribed without one');

    // the cursors of what it reloaded are good: the next reconnect resumes again
    proxy.refuse = true;
    proxy.cut();
    await disconnected();
    const again = Date.now();
    await eli.send('resumed again');
    proxy.refuse = false;
    await waitShown('resumed again');
    await settle('after resuming again');
    await assertOnce(['resumed again']);
    const sub = sentFrames.find((f) => f.command === 'SUBSCRIBE' && f.at >= again && f.headers.destination === `/sub/chat/room/${rid}`);
    assert.ok(sub?.headers['resume-after'] && sub.headers['resume-after'] !== 'not-a-cursor', 'resumed after a good cursor');
    assert.deepEqual(historyRequests.filter((r) => r.at >= again), [], 'no history request');
});

test('the page raised no script error', () => {
    assert.deepEqual(pageErrors, []);
});
