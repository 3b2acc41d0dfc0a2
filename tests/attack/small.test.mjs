// tests/attack/small.test.mjs - the small ones of issue 13: static responses
// carry nosniff, a CSP forbidding framing and Referrer-Policy; dot-files
// under the web root are not served; the 405 for a non-GET /ws sends its
// whole JSON body.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE } from './lib.mjs';

test('static responses: nosniff, frame-ancestors none, Referrer-Policy', async () => {
    for (const p of ['/', '/app.js', '/index.html']) {
        const r = await fetch(BASE + p);
        assert.equal(r.status, 200, p);
        assert.equal(r.headers.get('x-content-type-options'), 'nosniff', p);
        assert.match(r.headers.get('content-security-policy') || '', /frame-ancestors 'none'/, p);
        assert.ok(r.headers.get('referrer-policy'), `${p}: Referrer-Policy`);
        await r.arrayBuffer();
    }
});

test('dot-files under the web root are not served', async () => {
    for (const p of ['/.env', '/%2eenv', '/sub/.git/config']) {
        const r = await fetch(BASE + p);
        await r.arrayBuffer();
        assert.ok([400, 404].includes(r.status), `${p}: ${r.status}`);
    }
});

test('a non-GET /ws gets 405 with its whole JSON body', async () => {
    const r = await fetch(`${BASE}/ws`, { method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json' } });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'GET');
    const text = await r.text();
    assert.equal(Number(r.headers.get('content-length')), Buffer.byteLength(text));
    assert.ok(JSON.parse(text).error, `JSON body: ${text}`);
});
