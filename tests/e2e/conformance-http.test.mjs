// tests/e2e/conformance-http.test.mjs - chatd seen by an independent client
// written from the public specifications only (tests/e2e/conformance-lib.mjs):
// HTTP/1.1 (RFC 9110/9112) framing, limits, methods and static files, and the
// REST API contract (status codes, JSON errors, cookies, rooms and history).
//
// Run: tests/e2e/run.sh etc/chatd.conf -- node --test tests/e2e/conformance-http.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { http, makeMember, roomOf, uid, sleep, HOST, PORT } from './lib.mjs';
import { a, b, c3, fixtures, ISO_UTC, rawHttp, req, assertJsonError, wsRaw, stompSession, expectStompError, chatBody } from './conformance-lib.mjs';

fixtures();

/* ============================ HTTP ============================ */

test('HTTP: a malformed request line gets 400 with a JSON error, then close', async () => {
    for (const line of ['GARBAGE', 'GET', 'GET / HTTP/1.1 extra', 'GET  /healthz HTTP/1.1', 'GET /healthz HTTP/x.y', '/healthz GET HTTP/1.1']) {
        const r = await rawHttp(req(line), { waitEnd: true });
        assert.ok(r.responses[0], `${line}: a response`);
        assertJsonError(r.responses[0], 400, line);
        assert.ok(r.ended, `${line}: the connection is closed`);
    }
});

test('HTTP: an HTTP/1.1 request without Host gets 400 (RFC 9112 3.2)', async () => {
    const r = await rawHttp('GET /healthz HTTP/1.1\r\n\r\n');
    assertJsonError(r.responses[0], 400, 'no Host');
    const r2 = await rawHttp('GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n');
    assertJsonError(r2.responses[0], 400, 'two Host headers');
});

test('HTTP: a Host with an invalid value gets 400 (RFC 9112 3.2: MUST)', async () => {
    for (const h of ['a b', 'a/b', 'a@b', 'x:y:z']) {
        const r = await rawHttp(req('GET /healthz HTTP/1.1').replace(/^Host: .*$/m, `Host: ${h}`));
        assert.equal(r.responses[0].status, 400, `Host: ${h}: ${r.responses[0].statusLine}`);
    }
    for (const h of ['', '[::1]:80', 'example.com', '127.0.0.1:8080']) {
        const r = await rawHttp(req('GET /healthz HTTP/1.1').replace(/^Host: .*$/m, `Host: ${h}`));
        assert.equal(r.responses[0].status, 200, `Host: ${h} is valid`);
    }
});

test('HTTP: lines ending in a bare LF are either accepted or refused with 400, never left hanging (RFC 9112 2.2)', async () => {
    const r = await rawHttp('GET /healthz HTTP/1.1\nHost: x\n\n', { ms: 3000 });
    assert.ok(r.responses[0], `a response within 3 s; got ${JSON.stringify(r.text)}`);
    assert.ok([200, 400].includes(r.responses[0].status), r.responses[0].statusLine);
});

test('HTTP: an unsupported major version gets 505', async () => {
    const r = await rawHttp(req('GET /healthz HTTP/2.0'));
    assertJsonError(r.responses[0], 505, 'HTTP/2.0');
});

test('HTTP: a higher minor version of HTTP/1 is answered as HTTP/1.1, keep-alive included (RFC 9110 2.5, 6.2)', async () => {
    const r = await rawHttp(req('GET /healthz HTTP/1.2') + req('GET /healthz HTTP/1.9', ['Connection: close']), { count: 2, waitEnd: true });
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200], r.text);
    assert.ok(r.responses.every((x) => x.version === '1.1'), 'answered as HTTP/1.1');
});

test('HTTP: limits: long request line 414 (or 400), too many or too large headers 431, big body 413', async () => {
    const long = await rawHttp(req(`GET /${'a'.repeat(20000)} HTTP/1.1`));
    assert.ok([400, 414].includes(long.responses[0]?.status), `long request line: ${long.responses[0]?.statusLine}`);
    assert.equal(typeof long.responses[0].json.error, 'string');

    const many = await rawHttp(req('GET /healthz HTTP/1.1', Array.from({ length: 500 }, (_, i) => `X-H${i}: v`)));
    assertJsonError(many.responses[0], 431, 'too many header fields');

    const big = await rawHttp(req('GET /healthz HTTP/1.1', [`X-Big: ${'b'.repeat(64 * 1024)}`]));
    assertJsonError(big.responses[0], 431, 'a huge header field');

    const body = await rawHttp(req('POST /api/login HTTP/1.1', ['Content-Type: application/json', 'Content-Length: 1000000000']), { waitEnd: true });
    assertJsonError(body.responses[0], 413, 'Content-Length of 1 GB');
    assert.ok(body.ended, 'closed after 413');

    // the body really sent, bigger than the limit
    const data = JSON.stringify({ loginId: 'x', password: 'y'.repeat(200000) });
    const sent = await rawHttp(req('POST /api/login HTTP/1.1', ['Content-Type: application/json', `Content-Length: ${data.length}`], data));
    assertJsonError(sent.responses[0], 413, 'a 200 kB body');
});

test('HTTP: bad Content-Length values get 400', async () => {
    for (const h of [['Content-Length: -1'], ['Content-Length: abc'], ['Content-Length: 1', 'Content-Length: 2'], ['Content-Length: 1, 2']]) {
        const r = await rawHttp(req('POST /api/login HTTP/1.1', ['Content-Type: application/json', ...h], '{}'));
        assertJsonError(r.responses[0], 400, h.join(' / '));
    }
});

test('HTTP: a chunked request body is understood (RFC 9112 7.1: a recipient MUST parse chunked)', async () => {
    const body = JSON.stringify({ loginId: a.loginId, password: a.password });
    const chunked = `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    const r = await rawHttp(req('POST /api/login HTTP/1.1', ['Content-Type: application/json', 'Transfer-Encoding: chunked', 'Connection: close'], chunked));
    assert.equal(r.responses[0]?.status, 200, r.responses[0]?.statusLine);
});

test('HTTP: Transfer-Encoding together with Content-Length is refused, never smuggled', async () => {
    const r = await rawHttp(req('POST /api/login HTTP/1.1', ['Content-Type: application/json', 'Content-Length: 5', 'Transfer-Encoding: chunked'],
        '0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'), { waitEnd: true });
    assert.ok(r.responses[0].status >= 400 && r.responses[0].status < 500, r.responses[0].statusLine);
    assert.equal(r.responses.length, 1, 'the smuggled request is not answered');
    assert.ok(r.ended, 'the connection is closed');
});

test('HTTP: Expect: 100-continue gets 100 Continue or a final status at once (RFC 9110 10.1.1)', async () => {
    const r = await rawHttp(req('POST /api/login HTTP/1.1', ['Content-Type: application/json', 'Content-Length: 30', 'Expect: 100-continue']), { ms: 2000 });
    assert.ok(r.responses[0], `no response to the Expect within 2 s: ${JSON.stringify(r.text)}`);
    assert.ok(r.responses[0].status === 100 || r.responses[0].status >= 400, r.responses[0].statusLine);
});

test('HTTP/1.0: answered, and closed after the response', async () => {
    const r = await rawHttp('GET /healthz HTTP/1.0\r\n\r\n', { waitEnd: true });
    assert.equal(r.responses[0].status, 200);
    assert.match(r.responses[0].version, /^1\.[01]$/);
    assert.ok(r.ended, 'HTTP/1.0 without keep-alive: the server closes');
});

test('HTTP: keep-alive, pipelining, HEAD in the pipeline, Connection: close', async () => {
    const r = await rawHttp(
        req('GET /healthz HTTP/1.1') + req('HEAD / HTTP/1.1') + req('GET /api/me HTTP/1.1') + req('GET /healthz HTTP/1.1', ['Connection: close']),
        { head: [false, true, false, false], waitEnd: true },
    );
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 401, 200], 'four responses in order');
    assert.ok(r.responses.every((x) => x.complete));
    assert.equal(r.responses[0].json.status !== undefined || r.responses[0].json !== null, true);
    assert.match(r.responses[1].headers['content-type'], /^text\/html/);
    assert.ok(Number(r.responses[1].headers['content-length']) > 0, 'HEAD carries the GET Content-Length');
    assert.equal(r.responses[3].headers.connection?.toLowerCase(), 'close');
    assert.ok(r.ended, 'closed after Connection: close');
    // the same with the requests written one by one on one connection
    const seq = await rawHttp([req('GET /healthz HTTP/1.1'), req('GET /healthz HTTP/1.1')], { count: 2 });
    assert.equal(seq.responses.length, 2);
    assert.ok(!seq.ended, 'HTTP/1.1 keeps the connection open');
});

test('HTTP: a NUL byte in a body or in a later pipelined request does not fail the request before it', async () => {
    // two requests in one write; the second carries a NUL in its body
    const second = req('POST /api/login HTTP/1.1', ['Content-Type: application/json', 'Content-Length: 5', 'Connection: close'], 'a\0bcd');
    const r = await rawHttp(req('GET /healthz HTTP/1.1') + second, { count: 2 });
    assert.equal(r.responses[0]?.status, 200, `the first request: ${r.responses[0]?.statusLine} ${r.responses[0]?.body}`);
    // one request whose body (not head) has a NUL: the refusal is about the body
    const one = await rawHttp(second);
    assert.equal(one.responses[0].status, 400);
    assert.doesNotMatch(one.responses[0].json.error, /head/, one.responses[0].body);
});

test('HTTP: a request with a body that is not used is read whole; the next pipelined request is answered', async () => {
    const r = await rawHttp(req('GET /healthz HTTP/1.1', ['Content-Length: 5'], 'hello') + req('GET /healthz HTTP/1.1', ['Connection: close']), { count: 2 });
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200]);
});

test('HTTP: a request target in absolute-form is accepted (RFC 9112 3.2.2: a server MUST accept it)', async () => {
    const r = await rawHttp(req(`GET http://${HOST}:${PORT}/healthz HTTP/1.1`, ['Connection: close']));
    assert.equal(r.responses[0].status, 200, r.responses[0].statusLine);
});

test('HTTP: control characters and bad names in the head get 400', async () => {
    for (const h of ['X-A: a\x01b', 'X(A): b', ': b', 'X-A: a\0b']) {
        const r = await rawHttp(req('GET /healthz HTTP/1.1', [h, 'Connection: close']));
        assertJsonError(r.responses[0], 400, JSON.stringify(h));
    }
});

test('HTTP: HEAD has the GET headers and no body', async () => {
    const g = await rawHttp(req('GET /app.css HTTP/1.1', ['Connection: close']));
    const h = await rawHttp(req('HEAD /app.css HTTP/1.1', ['Connection: close']), { head: [true] });
    assert.equal(h.responses[0].status, 200);
    assert.equal(h.responses[0].headers['content-length'], g.responses[0].headers['content-length']);
    assert.equal(h.responses[0].headers['content-type'], g.responses[0].headers['content-type']);
    assert.ok(h.text.endsWith('\r\n\r\n'), 'nothing after the head');
});

test('HTTP: HEAD errors have no body; Connection: close ends the pipeline', async () => {
    const r = await rawHttp(req('HEAD /nonexistent HTTP/1.1') + req('HEAD /api/me HTTP/1.1') + req('HEAD /api/login HTTP/1.1') + req('GET /healthz HTTP/1.1', ['Connection: close']),
        { head: [true, true, true, false], waitEnd: true });
    assert.deepEqual(r.responses.map((x) => x.status), [404, 401, 405, 200]);
    assert.equal(r.responses[3].json.status, 'ok', 'the request after three HEADs parses: no stray bodies');
    const c = await rawHttp(req('GET /healthz HTTP/1.1', ['Connection: close']) + req('GET /healthz HTTP/1.1'), { waitEnd: true });
    assert.equal(c.responses.length, 1, 'nothing answered after Connection: close');
    assert.ok(c.ended);
});

test('HTTP: unknown method 501, known but not allowed 405 with Allow', async () => {
    const r = await rawHttp(req('BREW /healthz HTTP/1.1'));
    assertJsonError(r.responses[0], 501, 'BREW');
    for (const [line, allow] of [['DELETE /index.html HTTP/1.1', /GET/], ['PUT /api/members HTTP/1.1', /POST/], ['GET /api/login HTTP/1.1', /POST/], ['POST /healthz HTTP/1.1', /GET/]]) {
        const x = await rawHttp(req(line, ['Content-Length: 0']));
        assertJsonError(x.responses[0], 405, line);
        assert.match(x.responses[0].headers.allow || '', allow, `${line}: Allow header (RFC 9110 15.5.6)`);
    }
});

test('HTTP: a 405 Allow lists every method the resource answers, HEAD wherever GET is (RFC 9110 9.3.2, 10.2.1)', async () => {
    const room = encodeURIComponent(roomOf(a, b));
    for (const p of ['/api/me', '/api/members', '/api/rooms', `/api/rooms/${room}/messages`, '/healthz', '/']) {
        const x = await rawHttp(req(`PUT ${p} HTTP/1.1`, [`Authorization: Bearer ${a.token}`, 'Content-Length: 0']));
        assertJsonError(x.responses[0], 405, `PUT ${p}`);
        const allow = (x.responses[0].headers.allow || '').split(',').map((m) => m.trim()).filter(Boolean);
        assert.ok(allow.includes('GET') && allow.includes('HEAD'), `PUT ${p}: Allow: ${allow.join(', ')} (GET and HEAD)`);
        for (const m of ['GET', 'HEAD']) {
            const y = await rawHttp(req(`${m} ${p} HTTP/1.1`, [`Authorization: Bearer ${a.token}`]), { head: [m === 'HEAD'] });
            assert.notEqual(y.responses[0].status, 405, `${m} ${p} is allowed`);
        }
    }
});

test('HTTP: no path traversal, whatever the encoding', async () => {
    const paths = ['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc%2fpasswd', '/.%2e/.%2e/etc/passwd',
        '/%2E%2E/%2E%2E/etc/passwd', '/..%5c..%5cetc%5cpasswd', '/%252e%252e/etc/passwd', '//etc/passwd', '/%2fetc%2fpasswd',
        '/..', '/%2e%2e', '/./../index.html', '/web/../../etc/passwd', '/index.html%00', '/%c0%ae%c0%ae/etc/passwd', '/../../../../../../etc/hostname'];
    for (const p of paths) {
        const r = await rawHttp(req(`GET ${p} HTTP/1.1`, ['Connection: close']));
        const x = r.responses[0];
        assert.ok(x, `${p}: a response`);
        assert.ok([400, 403, 404].includes(x.status), `${p}: ${x.statusLine}`);
        assert.doesNotMatch(x.body || '', /root:|^[a-z0-9-]+\n$/, `${p}: no file from outside the web root`);
    }
});

test('HTTP: a fragment (#) in the request target is a malformed request (RFC 9112 3.2)', async () => {
    const r = await rawHttp(req('GET /index.html#x HTTP/1.1', ['Connection: close']));
    assertJsonError(r.responses[0], 400, '#');
});

test('HTTP: static files have the right Content-Type, nosniff, validators and 304', async () => {
    const types = { '/': /^text\/html/, '/index.html': /^text\/html/, '/app.js': /^(text|application)\/javascript/, '/stomp.js': /^(text|application)\/javascript/, '/app.css': /^text\/css/ };
    for (const [p, t] of Object.entries(types)) {
        const r = await rawHttp(req(`GET ${p} HTTP/1.1`, ['Connection: close']));
        const x = r.responses[0];
        assert.equal(x.status, 200, p);
        assert.match(x.headers['content-type'], t, `${p}: ${x.headers['content-type']}`);
        assert.match(x.headers['content-type'], /charset=utf-8/i, `${p}: charset`);
        assert.equal(x.headers['x-content-type-options'], 'nosniff');
        assert.ok(x.headers['cache-control'], `${p}: Cache-Control`);
        assert.equal(Buffer.byteLength(x.body), Number(x.headers['content-length']));
        if (x.headers.etag) {
            const n = await rawHttp(req(`GET ${p} HTTP/1.1`, [`If-None-Match: ${x.headers.etag}`, 'Connection: close']));
            assert.equal(n.responses[0].status, 304, `${p}: If-None-Match`);
            assert.equal(n.responses[0].headers.etag, x.headers.etag);
        }
    }
    const q = await rawHttp(req('GET /index.html?v=1 HTTP/1.1', ['Connection: close']));
    assert.equal(q.responses[0].status, 200, 'a query string does not change the file');
    const nf = await rawHttp(req('GET /no-such-file.js HTTP/1.1', ['Connection: close']));
    assertJsonError(nf.responses[0], 404, 'missing file');
});

test('HTTP: an If-None-Match that does not match gets 200', async () => {
    const r = await rawHttp(req('GET /app.css HTTP/1.1', ['If-None-Match: "nope"', 'Connection: close']));
    assert.equal(r.responses[0].status, 200);
});

test('HTTP: an idle or half-sent request does not hang the server for others', async () => {
    const idle = net.connect(PORT, HOST);
    idle.on('error', () => {});
    idle.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const r = await http('GET', '/healthz');
    assert.equal(r.status, 200);
    idle.destroy();
});

/* ============================ REST ============================ */

test('REST: register 201 {id,loginId,name}, 409 taken, 400 invalid, 415 not JSON', async () => {
    const loginId = uid('rg');
    const r = await http('POST', '/api/members', { body: { loginId, name: '이름 Name', password: 'secret-pw-1' } });
    assert.equal(r.status, 201);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(Object.keys(r.json).sort(), ['id', 'loginId', 'name']);
    assert.equal(typeof r.json.id, 'number');
    assert.equal(r.json.name, '이름 Name');
    const dup = await http('POST', '/api/members', { body: { loginId, name: 'x', password: 'secret-pw-1' } });
    assert.equal(dup.status, 409);
    assert.equal(typeof dup.json.error, 'string');
    for (const body of [{}, { loginId: uid(), name: 'x' }, { loginId: uid(), password: 'secret-pw-1' }, { loginId: 5, name: 'x', password: 'secret-pw-1' },
        { loginId: '', name: 'x', password: 'secret-pw-1' }, { loginId: uid(), name: '', password: 'secret-pw-1' }, { loginId: uid(), name: 'x', password: '' }]) {
        const x = await http('POST', '/api/members', { body });
        assert.equal(x.status, 400, JSON.stringify(body));
        assert.equal(typeof x.json.error, 'string');
    }
    for (const raw of ['not json', '[]', '"str"', '{"loginId":']) {
        const x = await http('POST', '/api/members', { raw });
        assert.equal(x.status, 400, raw);
        assert.equal(typeof x.json.error, 'string');
    }
    const ct = await http('POST', '/api/members', { raw: JSON.stringify({ loginId: uid(), name: 'x', password: 'secret-pw-1' }), headers: { 'Content-Type': 'text/plain' } });
    assert.ok([400, 415].includes(ct.status), `text/plain body: ${ct.status}`);
});

test('REST: a body with JSON followed by garbage is invalid input: 400 (RFC 8259 2)', async () => {
    const loginId = uid('tg');
    const x = await http('POST', '/api/members', { raw: `${JSON.stringify({ loginId, name: 'x', password: 'secret-pw-1' })} trailing garbage` });
    assert.equal(x.status, 400, `${x.status} ${x.text}`);
    const y = await http('POST', '/api/login', { raw: `${JSON.stringify({ loginId: a.loginId, password: a.password })}}}` });
    assert.equal(y.status, 400, `login: ${y.status}`);
});

/* bodies that are not JSON texts (RFC 8259), each naming a text of its own;
 * the last item of each is valid, so the endpoint is shown to take JSON */
const NOT_JSON = [
    ['a trailing comma (RFC 8259 4)', (t) => `{"message":"${t}",}`],
    ['single quotes (RFC 8259 7)', (t) => `{'message':'${t}'}`],
    ['a comment', (t) => `{"message":"${t}"/* c */}`],
    ['NaN (RFC 8259 6)', (t) => `{"message":"${t}","n":NaN}`],
    ['a leading zero (RFC 8259 6)', (t) => `{"message":"${t}","n":01}`],
    ['True (RFC 8259 3: lowercase literals)', (t) => `{"message":"${t}","t":True}`],
    ['a raw tab in a string (RFC 8259 7: control characters MUST be escaped)', (t) => `{"message":"${t}\tx"}`],
    ['a byte that is not UTF-8 (RFC 8259 8.1)', (t) => Buffer.concat([Buffer.from(`{"message":"${t}`), Buffer.from([0xff]), Buffer.from('"}')])],
];

test('REST send: a body that is not a JSON text (RFC 8259) is 400 and nothing is stored', async () => {
    const room = roomOf(a, b);
    const path = `/api/rooms/${encodeURIComponent(room)}/messages`;
    const texts = [];
    for (const [what, body] of NOT_JSON) {
        const t = uid('nj-');
        texts.push(t);
        const r = await rawHttp(req(`POST ${path} HTTP/1.1`, [`Authorization: Bearer ${a.token}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body(t))}`], body(t)));
        assertJsonError(r.responses[0], 400, what);
    }
    const ok = await http('POST', path, { token: a.token, raw: ' {"message" : "strict ok", "n": [1, -0.5e3, true, false, null]}\r\n' });
    assert.equal(ok.status, 201, `a valid JSON text: ${ok.status} ${ok.text}`);
    const h = await http('GET', `${path}?limit=200`, { token: a.token });
    assert.equal(h.status, 200);
    const stored = h.json.messages.map((m) => m.message);
    for (const t of texts) assert.ok(!stored.some((x) => x.startsWith(t)), `${t} is not stored`);
    assert.ok(stored.includes('strict ok'));
});

test('REST history after=: oldest first; next is the cursor to go on, null exactly when the page reached the newest message', async () => {
    const [x, y] = await Promise.all([makeMember('fw'), makeMember('fw')]);
    const path = `/api/rooms/${encodeURIComponent(roomOf(x, y))}/messages`;
    const sent = [];
    for (let i = 0; i < 6; i++) {
        const r = await http('POST', path, { token: x.token, body: { message: `f${i}` } });
        assert.equal(r.status, 201);
        sent.push(r.json);
    }
    const page = async (after, limit) => {
        const r = await http('GET', `${path}?after=${encodeURIComponent(after)}&limit=${limit}`, { token: y.token });
        assert.equal(r.status, 200, r.text);
        return r.json;
    };
    // a full page that ends at the newest message: nothing after it
    const full = await page(sent[0].cursor, 5);
    assert.deepEqual(full.messages.map((m) => m.message), ['f1', 'f2', 'f3', 'f4', 'f5']);
    assert.equal(full.next, null, 'a full page that reached the newest message');
    // pages that do not reach it go on from their last item
    const p1 = await page(sent[0].cursor, 3);
    assert.deepEqual(p1.messages.map((m) => m.message), ['f1', 'f2', 'f3']);
    assert.equal(p1.next, sent[3].cursor);
    const p2 = await page(p1.next, 2);
    assert.deepEqual(p2.messages.map((m) => m.message), ['f4', 'f5']);
    assert.equal(p2.next, null);
    const short = await page(sent[3].cursor, 50);
    assert.deepEqual(short.messages.map((m) => m.message), ['f4', 'f5']);
    assert.equal(short.next, null);
    const none = await page(sent[5].cursor, 1);
    assert.deepEqual(none, { messages: [], next: null });
});

test('REST: the media type is application/json itself: a longer subtype is 415, parameters and case are fine (RFC 9110 8.3.1)', async () => {
    const path = `/api/rooms/${encodeURIComponent(roomOf(a, b))}/messages`;
    const body = JSON.stringify({ message: 'media type' });
    for (const [ct, want] of [['application/jsonx', 415], ['application/json-seq', 415], ['application/json5', 415],
        ['application/json; charset=utf-8', 201], ['Application/JSON', 201], ['application/json ;charset=UTF-8', 201]]) {
        const r = await http('POST', path, { token: a.token, raw: body, headers: { 'Content-Type': ct } });
        assert.equal(r.status, want, `Content-Type: ${ct}: ${r.status} ${r.text}`);
    }
});

test('REST: a name with U+0000 is refused or kept whole, never silently cut', async () => {
    const loginId = uid('nul');
    const x = await http('POST', '/api/members', { raw: `{"loginId":"${loginId}","name":"ab\\u0000cd","password":"secret-pw-1"}` });
    if (x.status === 201) assert.equal(x.json.name, 'ab\u0000cd', `name stored as ${JSON.stringify(x.json.name)}`);
    else assert.equal(x.status, 400);
});

test('REST: login 200 {token, member} + Set-Cookie chatd_session; HttpOnly; SameSite=Strict; Path=/', async () => {
    const r = await http('POST', '/api/login', { body: { loginId: a.loginId, password: a.password } });
    assert.equal(r.status, 200);
    assert.equal(typeof r.json.token, 'string');
    assert.deepEqual(r.json.member, { id: a.id, loginId: a.loginId, name: a.name });
    const sc = r.headers.get('set-cookie');
    const parts = sc.split(';').map((s) => s.trim());
    assert.equal(parts[0], `chatd_session=${r.json.token}`);
    const attrs = parts.slice(1).map((s) => s.toLowerCase());
    assert.ok(attrs.includes('httponly'), sc);
    assert.ok(attrs.includes('samesite=strict'), sc);
    assert.ok(attrs.includes('path=/'), sc);
    assert.equal(r.headers.get('cache-control'), 'no-store', 'a token response is not cached');
    const bad = await http('POST', '/api/login', { body: { loginId: a.loginId, password: 'wrong' } });
    assert.equal(bad.status, 401);
    assert.equal(typeof bad.json.error, 'string');
    const nobody = await http('POST', '/api/login', { body: { loginId: uid('none'), password: 'wrong' } });
    assert.equal(nobody.status, 401);
    assert.equal(nobody.json.error, bad.json.error, 'same answer for unknown login and wrong password');
    const missing = await http('POST', '/api/login', { body: { loginId: a.loginId } });
    assert.equal(missing.status, 400);
});

test('REST: a 401 carries WWW-Authenticate (RFC 9110 11.6.1, 15.5.2)', async () => {
    const r = await http('GET', '/api/me');
    assert.equal(r.status, 401);
    assert.ok(r.headers.get('www-authenticate'), 'WWW-Authenticate on 401');
});

test('REST: /api/me with cookie or Bearer; 401 JSON without; members list', async () => {
    for (const o of [{ token: a.token }, { cookie: a.cookie }]) {
        const r = await http('GET', '/api/me', o);
        assert.equal(r.status, 200);
        assert.deepEqual(r.json, { id: a.id, loginId: a.loginId, name: a.name });
    }
    for (const o of [{}, { token: 'nope' }, { cookie: 'chatd_session=nope' }, { headers: { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } }]) {
        const r = await http('GET', '/api/me', o);
        assert.equal(r.status, 401, JSON.stringify(o));
        assert.equal(typeof r.json.error, 'string');
        assert.match(r.headers.get('content-type'), /^application\/json/);
    }
    const m = await http('GET', `/api/members?q=${encodeURIComponent(b.loginId)}`, { token: a.token });
    assert.equal(m.status, 200);
    assert.ok(Array.isArray(m.json));
    for (const x of m.json) assert.deepEqual(Object.keys(x).sort(), ['id', 'loginId', 'name']);
    assert.ok(m.json.some((x) => x.id === b.id && x.loginId === b.loginId));
    assert.equal((await http('GET', '/api/members')).status, 401);
});

test('REST: logout 204 clears the cookie and ends the session', async () => {
    const m = await makeMember('lo');
    const r = await http('POST', '/api/logout', { cookie: m.cookie });
    assert.equal(r.status, 204);
    assert.equal(r.text, '');
    const sc = r.headers.get('set-cookie') || '';
    assert.match(sc, /chatd_session=;/);
    assert.match(sc, /Max-Age=0|Expires=Thu, 01 Jan 1970/i);
    assert.equal((await http('GET', '/api/me', { token: m.token })).status, 401);
    // and the token no longer opens a STOMP session
    const c = await wsRaw();
    c.stomp('CONNECT', { 'accept-version': '1.2', host: HOST, login: m.loginId, passcode: m.token });
    await expectStompError(c, 'token after logout');
});

test('REST: rooms and history after a chat: shapes, order, cursor, unread, errors', async () => {
    const [x, y] = await Promise.all([makeMember('rh'), makeMember('rh')]);
    const room = roomOf(x, y);
    const s = await stompSession(x);
    const texts = ['one', 'two', 'three', 'four', 'five'];
    for (const t of texts) {
        const rc = uid('r');
        s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: rc }, chatBody(room, t));
        await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === rc);
    }
    s.destroy();
    const rooms = await http('GET', '/api/rooms', { token: y.token });
    assert.equal(rooms.status, 200);
    assert.equal(rooms.json.length, 1);
    const r0 = rooms.json[0];
    assert.equal(r0.roomId, room);
    assert.deepEqual(r0.peer, { id: x.id, loginId: x.loginId, name: x.name });
    assert.equal(r0.lastMessage, 'five');
    assert.match(r0.lastTimestamp, ISO_UTC);
    assert.equal(r0.unread, 5);
    const mine = await http('GET', '/api/rooms', { token: x.token });
    assert.equal(mine.json[0].unread, 0, 'the writer has nothing unread');

    const p1 = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=2`, { token: y.token });
    assert.equal(p1.status, 200);
    assert.deepEqual(p1.json.messages.map((m) => m.message), ['four', 'five'], 'the newest page, oldest to newest');
    for (const m of p1.json.messages) {
        assert.equal(typeof m.id, 'string');
        assert.equal(m.roomId, room);
        assert.equal(m.writer, x.loginId);
        assert.equal(m.writerId, x.id);
        assert.match(m.timestamp, ISO_UTC);
    }
    assert.ok(p1.json.next !== null && p1.json.next !== undefined, 'a cursor to older messages');
    const p2 = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=2&before=${p1.json.next}`, { token: y.token });
    assert.deepEqual(p2.json.messages.map((m) => m.message), ['two', 'three']);
    const p3 = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=2&before=${p2.json.next}`, { token: y.token });
    assert.deepEqual(p3.json.messages.map((m) => m.message), ['one']);
    assert.equal(p3.json.next, null, 'no cursor after the oldest page');
    // 4&3 form is the same room
    const rev = `${Math.max(x.id, y.id)}&${Math.min(x.id, y.id)}`;
    const p4 = await http('GET', `/api/rooms/${encodeURIComponent(rev)}/messages`, { token: x.token });
    assert.equal(p4.status, 200);
    assert.equal(p4.json.messages.length, 5);
    // refusals
    assert.equal((await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`)).status, 401);
    const foreign = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages`, { token: c3.token });
    assert.ok([403, 404].includes(foreign.status), `someone else's room: ${foreign.status}`);
    assert.equal(typeof foreign.json.error, 'string');
    for (const q of ['limit=0', 'limit=abc', 'before=xyz', 'limit=-1']) {
        const e = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?${q}`, { token: x.token });
        assert.equal(e.status, 400, q);
        assert.equal(typeof e.json.error, 'string');
    }
    const bad = await http('GET', '/api/rooms/abc/messages', { token: x.token });
    assert.equal(bad.status, 400);
    // reading clears the reader's unread
    const s2 = await stompSession(y);
    const rc = uid('rd');
    s2.stomp('SEND', { destination: '/pub/chat/read', receipt: rc }, JSON.stringify({ roomId: room, upTo: p1.json.messages[1].id }));
    await s2.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === rc);
    s2.destroy();
    const after = await http('GET', '/api/rooms', { token: y.token });
    assert.equal(after.json[0].unread, 0);
});

test('REST: /api/rooms lists conversations newest first; limit bounds', async () => {
    const [x, y, z] = await Promise.all([makeMember('ord'), makeMember('ord'), makeMember('ord')]);
    const s = await stompSession(x);
    const say = async (peer, text) => {
        const rc = uid('o');
        s.stomp('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: rc }, chatBody(roomOf(x, peer), text));
        await s.nextStomp((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === rc);
    };
    await say(y, 'to y');
    await sleep(5);
    await say(z, 'to z');
    let r = await http('GET', '/api/rooms', { token: x.token });
    assert.deepEqual(r.json.map((q) => q.peer.id), [z.id, y.id], 'newest first');
    await sleep(5);
    await say(y, 'to y again');
    r = await http('GET', '/api/rooms', { token: x.token });
    assert.deepEqual(r.json.map((q) => q.peer.id), [y.id, z.id], 'a new message moves the room up');
    assert.equal(r.json[0].lastMessage, 'to y again');
    s.destroy();
    const ok = await http('GET', `/api/rooms/${encodeURIComponent(roomOf(x, y))}/messages?limit=200`, { token: x.token });
    assert.equal(ok.status, 200, 'limit=200');
    const one = await http('GET', `/api/rooms/${encodeURIComponent(roomOf(x, y))}/messages?limit=1`, { token: x.token });
    assert.deepEqual(one.json.messages.map((m) => m.message), ['to y again']);
});

test('REST: every error is JSON {"error"} and nothing crashes the server', async () => {
    const probes = [['GET', '/api/nope'], ['GET', '/api/rooms/1/messages'], ['POST', '/api/rooms'], ['GET', '/api/rooms/%ZZ/messages'],
        ['DELETE', '/api/me'], ['GET', '/api/members/1'], ['PATCH', '/api/members']];
    for (const [method, p] of probes) {
        const r = await rawHttp(req(`${method} ${p} HTTP/1.1`, [`Authorization: Bearer ${a.token}`, 'Content-Length: 0', 'Connection: close']));
        const x = r.responses[0];
        assert.ok(x && x.status >= 400 && x.status < 500, `${method} ${p}: ${x?.statusLine}`);
        assert.equal(typeof x.json?.error, 'string', `${method} ${p}: ${x.body}`);
    }
    assert.equal((await http('GET', '/healthz')).status, 200);
});
