// tests/attack/deadlines.test.mjs - every state has a deadline (issue 13):
// a request head that trickles in (408 within request_timeout), a WebSocket
// that never sends CONNECT (connect_timeout), a heart-beat liar that
// promises 10^15 ms and goes silent (closed after 2 x heartbeat_max + 1 s),
// and TLS handshakes that never finish (tls_handshake_timeout). Twenty of
// each at once; descriptors bounded, each cut off in time, a calm member
// chatting throughout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
    HOST, PORT, LIMITS, fdCount, monitor, waitUntil, chatter, makeMember, rawOpen, sleep,
} from './lib.mjs';

const N = 20;
const TLS_PORT = Number(process.env.CHATD_TLS_PORT);

/* run n attackers made by start() (each resolves `closed` with the ms from
 * its start to the server's close); assert each closed within bound ms */
async function attack(what, n, start, bound) {
    const fd0 = fdCount();
    const calm = await chatter();
    const mon = monitor();
    const atk = [];
    let times;
    try {
        for (let i = 0; i < n; i++) atk.push(start());
        times = await Promise.all(atk.map((a) => Promise.race([a.closed, sleep(bound + 5000).then(() => Infinity)])));
        await waitUntil(() => fdCount() <= fd0 + 2, 3000, `${what}: descriptors back`);
    } finally {
        mon.stop();
        for (const a of atk) a.destroy?.();
    }
    const lines = await calm.stop();
    const worst = Math.max(...times);
    console.log(`${what}: ${n} cut off, the last after ${worst} ms (bound ${bound}); max fds ${mon.max.fd} (base ${fd0}); calm lines ${lines}`);
    assert.ok(worst <= bound, `${what}: the last attacker was cut off after ${worst} ms (bound ${bound})`);
    assert.ok(mon.max.fd <= fd0 + n + 4, `${what}: max descriptors ${mon.max.fd} <= ${fd0 + n + 4}`);
    return atk;
}

function tcp(port, onConnect) {
    const t0 = Date.now();
    const sock = net.connect(port, HOST);
    const a = { sock, data: '', destroy: () => sock.destroy() };
    sock.on('error', () => {});
    sock.on('data', (d) => { a.data += d.toString('latin1'); });
    a.closed = new Promise((r) => sock.on('close', () => r(Date.now() - t0)));
    sock.on('connect', () => onConnect(sock, a));
    return a;
}

test('slow request heads get 408 within request_timeout', async () => {
    const atk = await attack('trickling request head', N, () => tcp(PORT, (sock, a) => {
        sock.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`);
        a.timer = setInterval(() => sock.writable && sock.write('X'), 200);
        sock.on('close', () => clearInterval(a.timer));
    }), LIMITS.requestTimeoutMs + 1500);
    for (const a of atk) assert.match(a.data, /^HTTP\/1\.1 408 /, 'answered 408 Request Timeout');
});

test('a WebSocket that never sends CONNECT is closed after connect_timeout', async () => {
    await attack('no CONNECT', N, () => {
        const t0 = Date.now();
        const a = {};
        a.closed = rawOpen().then((conn) => {
            a.destroy = () => conn.close();
            return conn.closed.then(() => Date.now() - t0);
        });
        return a;
    }, LIMITS.connectTimeoutMs + 1500);
});

test('the heart-beat liar (10^15 ms promised, then silent) is closed after 2 x heartbeat_max + 1 s', async () => {
    // one member each (max_connections_per_member is not what is tested here)
    const liars = [];
    for (let i = 0; i < N; i++) liars.push(await makeMember('liar'));
    const conns = [];
    await attack('heart-beat liar', N, () => {
        const a = {};
        const m = liars.pop();
        a.closed = (async () => {
            const conn = await rawOpen();
            conns.push(conn);
            a.destroy = () => conn.close();
            conn.frame('CONNECT', {
                'accept-version': '1.2', host: HOST, login: m.loginId, passcode: m.token,
                'heart-beat': '1000000000000000,9223372036854775807',
            });
            await conn.nextFrame('CONNECTED');
            const t0 = Date.now(); // silent from here on
            await conn.closed;
            return Date.now() - t0;
        })();
        return a;
    }, 2 * LIMITS.heartbeatMaxMs + 1000 + 1500);
    for (const conn of conns) {
        const err = conn.frames.find((f) => f.command === 'ERROR');
        assert.ok(err, 'an ERROR before the close');
        assert.match(err.headers.message, /heart-beat/);
        // we asked for 9223372036854775807 ms: the server still beats at heartbeat_max
        assert.ok(conn.frames.length >= 2, 'CONNECTED and ERROR');
    }
});

test('TLS handshakes that never finish are closed after tls_handshake_timeout', async () => {
    assert.ok(TLS_PORT, 'CHATD_TLS_PORT');
    await attack('silent TLS client', N, () => tcp(TLS_PORT, () => {}), LIMITS.tlsTimeoutMs + 1500);
    // a partial ClientHello (the record header only) is no better
    await attack('half a ClientHello', N, () => tcp(TLS_PORT, (sock) => sock.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]))),
        LIMITS.tlsTimeoutMs + 1500);
});
