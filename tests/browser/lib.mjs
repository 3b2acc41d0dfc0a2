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

export function launchChromium() {
    return chromium.launch({
        executablePath: process.env.CHATD_CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--no-first-run', '--disable-quic', '--disable-dev-shm-usage'],
    });
}
