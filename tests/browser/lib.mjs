// tests/browser/lib.mjs - what the browser tests share: the server under test
// (CHATD_URL), where screenshots go, unique login ids, and Debian's chromium
// launched headless the same way for every test file.

import path from 'node:path';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { chromium } from 'playwright-core';

export const BASE = (process.env.CHATD_URL || '').replace(/\/+$/, '');
if (!BASE) throw new Error('CHATD_URL is not set (run through tests/e2e/run.sh)');
export const OUT = process.env.CHATD_OUT || path.resolve('tests/out');
fs.mkdirSync(OUT, { recursive: true });

export const uid = (p) => `${p}${crypto.randomBytes(4).toString('hex')}`;

/* extraArgs: more chromium switches (e.g. tests/attack/tls.test.mjs's
 * --ignore-certificate-errors-spki-list) */
export function launchChromium(extraArgs = []) {
    return chromium.launch({
        executablePath: process.env.CHATD_CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--no-first-run', '--disable-quic', '--disable-dev-shm-usage', ...extraArgs],
    });
}

/* signUp(page, base, who): register who ({loginId, name, password}) on the
 * page at base, wait until the chat view is connected, set who.id */
export async function signUp(page, base, who) {
    await page.goto(base + '/');
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    await page.click('#tab-register');
    await page.fill('#auth-login-id', who.loginId);
    await page.fill('#auth-name', who.name);
    await page.fill('#auth-password', who.password);
    await page.click('#auth-submit');
    await page.locator('#chat-view').waitFor({ state: 'visible' });
    await page.locator('#conn-status[data-state="connected"]').waitFor();
    const me = await page.evaluate(() => fetch('/api/me').then((r) => r.json()));
    who.id = Number((me.member ?? me).id);
    if (!(who.id > 0)) throw new Error(`no member id after signing up: ${JSON.stringify(me)}`);
}
