// tests/e2e/rest.test.mjs - the REST API and the static page, end to end:
// sign-up, login (token and cookie), /api/me, /api/members, logout, healthz,
// and the refusals (409, 401, 400 on bad JSON or input, 404), plus a few
// malformed HTTP requests that must get a 4xx and never hang the server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { http, makeMember, uid, HOST, PORT } from './lib.mjs';

/* send raw bytes over TCP, return the response head (status line + headers) */
function rawHttp(bytes, ms = 8000) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(PORT, HOST);
        let buf = Buffer.alloc(0);
        const timer = setTimeout(() => {
            sock.destroy();
            reject(new Error(`no response within ${ms} ms; got ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
        }, ms);
        const finish = () => {
            clearTimeout(timer);
            const text = buf.toString('latin1');
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
            resolve({ status: m ? Number(m[1]) : null, text });
        };
        sock.on('connect', () => sock.write(bytes));
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            const end = buf.indexOf('\r\n\r\n');
            if (end >= 0) {
                const head = buf.subarray(0, end).toString('latin1');
                const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
                if (!cl || buf.length >= end + 4 + Number(cl[1])) {
                    sock.destroy();
                    finish();
                }
            }
        });
        sock.on('error', () => {});
        sock.on('close', finish);
    });
}

test('/metrics is not served on the public listener (404; it is on metrics_listen)', async () => {
    for (const m of ['GET', 'HEAD', 'POST']) {
        const r = await http(m, '/metrics');
        assert.equal(r.status, 404, `${m} /metrics: ${r.status}`);
    }
});

test('healthz answers 200', async () => {
    const r = await http('GET', '/healthz');
    assert.equal(r.status, 200);
});

test('register, login, me, members, logout', async () => {
    const a = await makeMember('rest');
    // the cookie is what the page relies on
    assert.match(a.setCookie, /HttpOnly/i);
    assert.match(a.setCookie, /SameSite=Strict/i);
    assert.match(a.setCookie, /Path=\//);

    const meBearer = await http('GET', '/api/me', { token: a.token });
    assert.equal(meBearer.status, 200, meBearer.text);
    const me = meBearer.json.member ?? meBearer.json;
    assert.equal(Number(me.id), a.id);
    assert.equal(me.loginId, a.loginId);
    assert.equal(me.name, a.name);
    assert.equal(me.password, undefined, 'no password in /api/me');

    const meCookie = await http('GET', '/api/me', { cookie: a.cookie });
    assert.equal(meCookie.status, 200, meCookie.text);
    assert.equal((meCookie.json.member ?? meCookie.json).loginId, a.loginId);

    const b = await makeMember('rest');
    const members = await http('GET', `/api/members?q=${encodeURIComponent(b.loginId)}`, { token: a.token });
    assert.equal(members.status, 200);
    assert.ok(Array.isArray(members.json));
    const found = members.json.find((m) => m.loginId === b.loginId);
    assert.ok(found, 'the new member is listed');
    assert.equal(Number(found.id), b.id);
    assert.equal(found.name, b.name);
    for (const m of members.json) {
        assert.equal(m.password, undefined, 'members carry no password');
        assert.equal(m.passwordHash, undefined);
    }

    const out = await http('POST', '/api/logout', { token: a.token });
    assert.equal(out.status, 204);
    const after = await http('GET', '/api/me', { token: a.token });
    assert.equal(after.status, 401, 'the token is dead after logout');
    assert.equal(typeof after.json.error, 'string');
    const afterCookie = await http('GET', '/api/me', { cookie: a.cookie });
    assert.equal(afterCookie.status, 401, 'the cookie is dead after logout');

    // the other member's session is untouched
    const bMe = await http('GET', '/api/me', { token: b.token });
    assert.equal(bMe.status, 200);
});

test('Korean names and login ids round-trip as UTF-8', async () => {
    const k = await makeMember('k', '최원익');
    const r = await http('GET', '/api/me', { token: k.token });
    assert.equal((r.json.member ?? r.json).name, '최원익');
});

test('409 when the login id is taken', async () => {
    const a = await makeMember('dup');
    const r = await http('POST', '/api/members', { body: { loginId: a.loginId, name: 'x', password: 'another-pass' } });
    assert.equal(r.status, 409, r.text);
    assert.equal(typeof r.json.error, 'string');
});

test('401 on a bad password or an unknown login', async () => {
    const a = await makeMember('pw');
    const bad = await http('POST', '/api/login', { body: { loginId: a.loginId, password: a.password + 'x' } });
    assert.equal(bad.status, 401, bad.text);
    assert.equal(typeof bad.json.error, 'string');
    assert.equal(bad.headers.get('set-cookie'), null, 'no cookie for a failed login');
    const unknown = await http('POST', '/api/login', { body: { loginId: uid('nobody'), password: 'whatever1' } });
    assert.equal(unknown.status, 401, unknown.text);
});

test('401 without a session', async () => {
    for (const p of ['/api/me', '/api/members', '/api/rooms', '/api/rooms/1&2/messages']) {
        const r = await http('GET', p);
        assert.equal(r.status, 401, `${p}: ${r.status} ${r.text}`);
        assert.equal(typeof r.json?.error, 'string', `${p} error body is JSON`);
    }
    const junk = await http('GET', '/api/me', { token: 'not-a-real-token' });
    assert.equal(junk.status, 401);
});

test('400 on bad JSON or bad input', async () => {
    const cases = [
        ['POST', '/api/members', '{"loginId":'],
        ['POST', '/api/members', 'not json at all'],
        ['POST', '/api/members', '[1,2,3]'],
        ['POST', '/api/members', JSON.stringify({ loginId: uid('x'), name: 'n' })], // no password
        ['POST', '/api/members', JSON.stringify({ loginId: '', name: 'n', password: 'longenough' })],
        ['POST', '/api/members', JSON.stringify({ loginId: 42, name: 'n', password: 'longenough' })],
        ['POST', '/api/login', '{bad'],
        ['POST', '/api/login', JSON.stringify({ loginId: 'only' })],
    ];
    for (const [method, p, raw] of cases) {
        const r = await http(method, p, { raw });
        assert.equal(r.status, 400, `${method} ${p} ${raw}: ${r.status} ${r.text}`);
        assert.equal(typeof r.json?.error, 'string', `${raw}: error body is JSON`);
    }
});

test('404 for unknown API paths, with a JSON error', async () => {
    const a = await makeMember('nf');
    const r = await http('GET', '/api/nothing-here', { token: a.token });
    assert.equal(r.status, 404, r.text);
    assert.equal(typeof r.json?.error, 'string');
    const s = await http('GET', '/no-such-file.html');
    assert.equal(s.status, 404);
});

test('history of a room the member is not in is refused', async () => {
    const [a, b, c] = await Promise.all([makeMember('h'), makeMember('h'), makeMember('h')]);
    const room = `${Math.min(b.id, c.id)}&${Math.max(b.id, c.id)}`;
    const r = await http('GET', `/api/rooms/${room}/messages`, { token: a.token });
    assert.ok([403, 404].includes(r.status), `not a member: ${r.status} ${r.text}`);
    const own = await http('GET', `/api/rooms/${Math.min(a.id, b.id)}&${Math.max(a.id, b.id)}/messages`, { token: a.token });
    assert.equal(own.status, 200, own.text);
    assert.deepEqual(own.json.messages, []);
    assert.equal(own.json.next, null);
    const rooms = await http('GET', '/api/rooms', { token: a.token });
    assert.equal(rooms.status, 200);
    assert.deepEqual(rooms.json, [], 'no conversations before the first message');
});

test('the chat page is served with the right types', async () => {
    const index = await http('GET', '/');
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type'), /^text\/html/);
    assert.match(index.text, /stomp\.js/);
    const js = await http('GET', '/app.js');
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /javascript/);
    const css = await http('GET', '/app.css');
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type'), /^text\/css/);
    const stompJs = await http('GET', '/stomp.js');
    assert.equal(stompJs.status, 200);
});

test('path traversal never leaves the web root', async () => {
    for (const p of ['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc%2fpasswd', '/web/../../etc/passwd']) {
        const r = await rawHttp(`GET ${p} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
        assert.ok(r.status >= 400 && r.status < 500, `${p}: ${r.status}`);
        assert.doesNotMatch(r.text, /root:x:0:0/, `${p} leaked /etc/passwd`);
    }
});

test('malformed HTTP gets a 4xx, not a hang', async () => {
    const bad = await rawHttp('THIS IS NOT HTTP\r\n\r\n');
    assert.equal(bad.status, 400, bad.text.slice(0, 200));
    const big = await rawHttp(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Big: ${'a'.repeat(200000)}\r\n\r\n`);
    assert.ok([400, 431].includes(big.status), `huge header: ${big.status}`);
    const body = await rawHttp(`POST /api/login HTTP/1.1\r\nHost: ${HOST}\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{`);
    assert.equal(body.status, 413, `huge body: ${body.status}`);
    // still alive
    const r = await http('GET', '/healthz');
    assert.equal(r.status, 200);
});
