// tests/browser/chat.test.mjs - the chat page in Debian's chromium (headless),
// driven by playwright-core: two members in two browser contexts (a desktop
// one in English, a phone-width one in Korean and Asia/Seoul time) sign up and
// chat; the `·` unread marker appears on the receiver's list and clears when
// the room is opened; `<img src=x onerror=alert(1)>` stays text; older pages
// load on scrolling up; a dropped connection comes back and fetches what it
// missed; logout. Screenshots go to $CHATD_OUT.
//
// Needs CHATD_URL (run through tests/e2e/run.sh, see tests/suites/40-browser.sh).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { BASE, OUT, uid, launchChromium, signUp } from './lib.mjs';

const alice = { loginId: uid('alice'), name: 'Alice', password: 'alice-password-1' };
const bob = { loginId: uid('bob'), name: '최원익', password: 'bob-password-1' };

let browser, ctxA, ctxB, pageA, pageB;
const dialogs = [];
const pageErrors = [];

function watch(page, who) {
    page.on('dialog', (d) => {
        dialogs.push(`${who}: ${d.type()} ${d.message()}`);
        d.dismiss().catch(() => {});
    });
    page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
    page.on('console', (m) => {
        if (m.type() === 'error' && !/WebSocket|net::ERR_INTERNET_DISCONNECTED|Failed to load resource/.test(m.text())) {
            pageErrors.push(`${who} console: ${m.text()}`);
        }
    });
}

before(async () => {
    browser = await launchChromium();
    ctxA = await browser.newContext({ viewport: { width: 1100, height: 720 }, locale: 'en-US', timezoneId: 'UTC' });
    ctxB = await browser.newContext({
        viewport: { width: 390, height: 800 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
        locale: 'ko-KR', timezoneId: 'Asia/Seoul',
    });
    pageA = await ctxA.newPage();
    pageB = await ctxB.newPage();
    watch(pageA, 'alice');
    watch(pageB, 'bob');
});

after(async () => {
    if (browser) await browser.close();
});

async function shot(page, name) {
    const file = path.join(OUT, `browser-${name}.png`);
    await page.screenshot({ path: file, fullPage: false });
    assert.ok(fs.statSync(file).size > 5000, `screenshot ${file} has content`);
    return file;
}

async function register(page, who) {
    await signUp(page, BASE, who);
    assert.ok(who.id > 0);
}

function roomId() {
    return `${Math.min(alice.id, bob.id)}&${Math.max(alice.id, bob.id)}`;
}

const roomItem = (page) => page.locator(`#room-list [data-testid="room-item"][data-room-id="${roomId()}"]`);
const marker = (page) => roomItem(page).locator('[data-testid="unread-marker"]');
const messages = (page) => page.locator('#message-list [data-testid="message"]');

/* waitText(page, text): a confirmed message with exactly this text is shown */
async function waitText(page, text, timeout = 15000) {
    await page.waitForFunction((t) => [...document.querySelectorAll('#message-list .msg-text')].some((e) => e.textContent === t),
        text, { timeout });
}

async function sendFrom(page, text) {
    await page.fill('#msg-input', text);
    await page.press('#msg-input', 'Enter');
    await waitText(page, text);
    await page.locator('#pending-list [data-testid="message-pending"]').first().waitFor({ state: 'detached' })
        .catch(() => {}); // none pending any more
}

test('two members sign up in two browsers; the page speaks their language', async () => {
    await register(pageA, alice);
    await register(pageB, bob);
    assert.equal(await pageA.getAttribute('html', 'lang'), 'en');
    assert.equal(await pageB.getAttribute('html', 'lang'), 'ko');
    assert.equal(await pageB.textContent('#me-name'), '최원익');
    assert.equal(await pageA.textContent('#me-name'), 'Alice');
});

test('alice starts a conversation from the member list; bob gets the `·` marker live', async () => {
    await pageA.click('#tab-members');
    const bobItem = pageA.locator(`#member-list [data-testid="member-item"][data-member-id="${bob.id}"]`);
    await bobItem.waitFor();
    assert.match(await bobItem.textContent(), /최원익/);
    await bobItem.click();
    assert.equal(await pageA.textContent('#room-title'), '최원익');
    await sendFrom(pageA, '안녕하세요? 반가워요 👋');

    // bob never opened anything: the side subscription brings the room and the marker
    await roomItem(pageB).waitFor();
    await marker(pageB).waitFor();
    assert.equal((await marker(pageB).textContent()).trim(), '·');
    assert.equal(await roomItem(pageB).locator('.room-last').textContent(), '안녕하세요? 반가워요 👋');
    assert.equal(await roomItem(pageB).locator('.room-name').textContent(), 'Alice');
    await shot(pageB, 'phone-unread');
    // alice, who wrote it, has no marker
    await pageA.click('#tab-rooms');
    await roomItem(pageA).waitFor();
    assert.equal(await marker(pageA).count(), 0);
});

test('bob opens the room: history shows, the marker clears, the server agrees', async () => {
    await roomItem(pageB).click();
    await messages(pageB).first().waitFor();
    assert.equal(await pageB.locator('#message-list .msg-text').first().textContent(), '안녕하세요? 반가워요 👋');
    await pageB.locator('#room-view').waitFor({ state: 'visible' });
    // phone width: the room replaces the list
    assert.equal(await pageB.locator('#side').isVisible(), false, 'one pane at a time on a phone');
    // the marker is gone from the (hidden) list and the server's count is 0
    await marker(pageB).waitFor({ state: 'detached' });
    const deadline = Date.now() + 8000;
    let unread;
    do {
        unread = await pageB.evaluate((rid) => fetch('/api/rooms').then((r) => r.json())
            .then((rooms) => rooms.find((r) => r.roomId === rid)?.unread), roomId());
        if (unread === 0) break;
        await pageB.waitForTimeout(200);
    } while (Date.now() < deadline);
    assert.equal(unread, 0, 'reading the room cleared the unread count on the server');
});

test('they chat both ways, live; times are local', async () => {
    await sendFrom(pageB, '네, 저도 반가워요!');
    await waitText(pageA, '네, 저도 반가워요!');
    await sendFrom(pageA, 'Shall we test markup?');
    await waitText(pageB, 'Shall we test markup?');
    assert.equal(await messages(pageA).count(), 3);
    assert.equal(await messages(pageB).count(), 3);
    // own messages on the right, the peer's on the left
    assert.equal(await pageA.locator('#message-list .msg.mine').count(), 2);
    assert.equal(await pageB.locator('#message-list .msg.mine').count(), 1);
    // alice has the room open: no marker for bob's reply
    assert.equal(await marker(pageA).count(), 0);

    // bob is in Asia/Seoul with Korean formats; the wire says UTC
    const t = pageB.locator('#message-list .msg-time').last();
    const iso = await t.getAttribute('datetime');
    assert.match(iso, /Z$/);
    const d = new Date(iso);
    const h = (d.getUTCHours() + 9) % 24; // Seoul is UTC+9 all year
    const want = `${h < 12 ? '오전' : '오후'} ${h % 12 || 12}:${String(d.getUTCMinutes()).padStart(2, '0')}`;
    assert.equal(await t.textContent(), want);
    const wantA = new Intl.DateTimeFormat('en', { hour: 'numeric', minute: '2-digit', timeZone: 'UTC' }).format(new Date(iso));
    assert.equal(await pageA.locator('#message-list .msg-time').last().textContent(), wantA);
});

test('a message with markup is shown as text: no element, no dialog', async () => {
    const evil = '<img src=x onerror=alert(1)>';
    await sendFrom(pageA, evil);
    await waitText(pageB, evil);
    assert.equal(await pageB.locator('#message-list .msg-text').last().textContent(), evil);
    assert.equal(await pageB.locator('#messages img').count(), 0, 'no img element in the room');
    assert.equal(await pageA.locator('#messages img').count(), 0);
    assert.equal(await pageB.locator('img').count(), 0, 'no img anywhere on the page');
    // the side list shows it as text as well
    await pageA.waitForTimeout(800); // give an injected handler every chance to fire
    assert.equal(await roomItem(pageA).locator('.room-last').textContent(), evil);
    assert.equal(await pageA.locator('#room-list img').count(), 0);
    assert.deepEqual(dialogs, [], 'no dialog opened');
    await shot(pageA, 'desktop');
    await shot(pageB, 'phone');
});

test('bob goes back to the list; a new message brings the marker; reload keeps it; opening clears it', async () => {
    await pageB.click('#back-btn');
    await pageB.locator('#side').waitFor({ state: 'visible' });
    await sendFrom(pageA, 'are you there?');
    await marker(pageB).waitFor();
    // a reload restores the session from the cookie and the count from the server
    await pageB.reload();
    await pageB.locator('#chat-view').waitFor({ state: 'visible' });
    await pageB.locator('#conn-status[data-state="connected"]').waitFor();
    await marker(pageB).waitFor();
    assert.equal(await roomItem(pageB).getAttribute('data-unread'), '1');
    await roomItem(pageB).click();
    await waitText(pageB, 'are you there?');
    await marker(pageB).waitFor({ state: 'detached' });
    await pageB.click('#back-btn');
    await roomItem(pageB).waitFor();
    assert.equal(await marker(pageB).count(), 0, 'still clear on the list');
});

test('older pages load when scrolling up', async () => {
    // 70 more messages from alice through @stomp/stompjs (a second session of hers)
    const login = await fetch(BASE + '/api/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ loginId: alice.loginId, password: alice.password }),
    }).then((r) => r.json());
    const client = new Client({
        webSocketFactory: () => new WebSocket(BASE.replace(/^http/, 'ws') + '/ws', ['v12.stomp']),
        connectHeaders: { login: alice.loginId, passcode: login.token },
        reconnectDelay: 0,
        debug: () => {},
    });
    await new Promise((resolve, reject) => {
        client.onConnect = resolve;
        client.onStompError = (f) => reject(new Error(f.headers.message));
        client.activate();
    });
    const total = 70;
    for (let i = 1; i <= total; i++) {
        await new Promise((resolve, reject) => {
            const receipt = `bulk-${i}`;
            const timer = setTimeout(() => reject(new Error(`no receipt ${receipt}`)), 10000);
            client.watchForReceipt(receipt, () => { clearTimeout(timer); resolve(); });
            client.publish({ destination: '/pub/chat/message', body: JSON.stringify({ roomId: roomId(), message: `bulk ${i}` }), headers: { receipt } });
        });
    }
    await client.deactivate();
    const all = 5 + total; // 5 earlier messages in this room

    // bob's list hears about them live (after they are stored)
    await roomItem(pageB).locator('.room-last', { hasText: `bulk ${total}` }).waitFor();
    await roomItem(pageB).click();
    await waitText(pageB, `bulk ${total}`);
    const first = await messages(pageB).count();
    assert.ok(first < all, `only the newest page at first (${first} of ${all})`);
    // scroll to the top until everything is there
    for (let i = 0; i < 20 && (await messages(pageB).count()) < all; i++) {
        await pageB.evaluate(() => { document.getElementById('messages').scrollTop = 0; });
        await pageB.waitForTimeout(300);
    }
    assert.equal(await messages(pageB).count(), all, 'every message after scrolling up');
    const texts = await pageB.locator('#message-list .msg-text').allTextContents();
    assert.equal(texts[0], '안녕하세요? 반가워요 👋', 'the oldest first');
    assert.equal(texts[all - 1], `bulk ${total}`);
    const ids = await pageB.locator('#message-list [data-testid="message"]').evaluateAll((els) => els.map((e) => e.dataset.id));
    assert.equal(new Set(ids).size, all, 'no duplicates');
    for (let i = 1; i < ids.length; i++) assert.ok(BigInt(ids[i - 1]) < BigInt(ids[i]), 'in id order');
    await pageB.locator('#older-status').waitFor({ state: 'visible' });
});

test('after a dropped connection the page reconnects and shows what it missed', async () => {
    // bob keeps the room open and goes offline
    await ctxB.setOffline(true);
    await pageB.evaluate(() => window.dispatchEvent(new Event('offline')));
    await pageB.locator('#conn-status:not([data-state="connected"])').waitFor({ state: 'attached', timeout: 20000 });
    await pageB.waitForTimeout(1500);
    assert.notEqual(await pageB.getAttribute('#conn-status', 'data-state'), 'connected', 'stays offline while offline');
    await sendFrom(pageA, 'sent while bob was offline');
    await pageB.waitForTimeout(300);
    assert.equal(await pageB.locator('#message-list .msg-text', { hasText: 'sent while bob was offline' }).count(), 0,
        'nothing arrives while offline');
    await ctxB.setOffline(false);
    await pageB.locator('#conn-status[data-state="connected"]').waitFor({ state: 'attached', timeout: 30000 });
    await waitText(pageB, 'sent while bob was offline', 10000);
    await sendFrom(pageA, 'and live again');
    await waitText(pageB, 'and live again');
    const texts = await pageB.locator('#message-list .msg-text').allTextContents();
    assert.equal(texts.filter((x) => x === 'sent while bob was offline').length, 1, 'shown once');
});

test('logout ends the session', async () => {
    await pageA.click('#logout');
    await pageA.locator('#auth-view').waitFor({ state: 'visible' });
    const status = await pageA.evaluate(() => fetch('/api/me').then((r) => r.status));
    assert.equal(status, 401);
    await pageA.reload();
    await pageA.locator('#auth-view').waitFor({ state: 'visible' });
    // and logging in again works
    await pageA.fill('#auth-login-id', alice.loginId);
    await pageA.fill('#auth-password', alice.password);
    await pageA.click('#auth-submit');
    await pageA.locator('#conn-status[data-state="connected"]').waitFor();
    await roomItem(pageA).waitFor();
    await shot(pageA, 'desktop-after-login');
});

test('the page raised no script error', () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(dialogs, []);
});
