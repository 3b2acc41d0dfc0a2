// tests/attack/budgets.test.mjs - budgets per connection, per member and per
// client address (issue 13): the transaction hoarder (max_tx_bytes), the
// transaction left open (max_tx_age), the member who opens session after
// session (max_connections_per_member), the connection hog on a listener
// with max_connections_per_ip, and logout ending the live sessions of its
// token. A calm member chats meanwhile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
    HOST, LIMITS, http, fdCount, rssKiB, monitor, waitUntil, chatter, makeMember, rawSession, tryConnect, sleep,
} from './lib.mjs';

const TLS_PORT = Number(process.env.CHATD_TLS_PORT);

test('the transaction hoarder is refused at max_tx_bytes', async () => {
    const calm = await chatter();
    const N = 10;
    const body = JSON.stringify({ roomId: '1&2', message: 'x'.repeat(60000) });
    const conns = [];
    // members first: their password hashes (argon2id, 64 MiB) are not the attack
    for (let i = 0; i < N; i++) conns.push(await rawSession(await makeMember('hoard')));
    const rss0 = rssKiB();
    const mon = monitor();
    try {
        for (const conn of conns) {
            conn.frame('BEGIN', { transaction: 't' });
            // 2 x max_tx_bytes worth of SENDs: the ERROR comes before the end
            for (let i = 0; i < Math.ceil((2 * LIMITS.maxTxBytes) / body.length); i++) {
                conn.frame('SEND', { destination: '/pub/chat/message', transaction: 't' }, body);
            }
        }
        for (const conn of conns) {
            const err = await conn.nextFrame('ERROR', 10000);
            assert.match(err.headers.message, /max_tx_bytes/);
            await conn.closed;
        }
    } finally {
        mon.stop();
        for (const conn of conns) conn.close();
    }
    await calm.stop();
    const grew = mon.max.rss - rss0;
    console.log(`hoarders: RSS grew by ${grew} KiB (base ${rss0})`);
    // each connection buffers at most max_tx_bytes (plus its frame buffers)
    assert.ok(grew <= (N * (LIMITS.maxTxBytes + 512 * 1024)) / 1024, `RSS grew by ${grew} KiB`);
});

test('a transaction left open gets an ERROR after max_tx_age', async () => {
    const m = await makeMember('tx');
    const conn = await rawSession(m);
    conn.frame('BEGIN', { transaction: 'idle', receipt: 'b' });
    await conn.nextFrame('RECEIPT');
    const t0 = Date.now();
    const err = await conn.nextFrame('ERROR', LIMITS.maxTxAgeMs + 5000);
    const took = Date.now() - t0;
    assert.match(err.headers.message, /max_tx_age/);
    assert.ok(took <= LIMITS.maxTxAgeMs + 1500, `ERROR after ${took} ms (bound ${LIMITS.maxTxAgeMs + 1500})`);
    await conn.closed;
});

test('a member may hold max_connections_per_member sessions, not one more', async () => {
    const calm = await chatter();
    const m = await makeMember('many');
    const ok = [];
    try {
        for (let i = 0; i < LIMITS.perMember; i++) ok.push(await rawSession(m));
        // one more is refused, however many times it is tried
        for (let i = 0; i < 5; i++) {
            const { conn, answer } = await tryConnect(m);
            ok.push(conn);
            assert.equal(answer.command, 'ERROR', `session ${LIMITS.perMember + 1} refused`);
            assert.match(answer.headers.message, /max_connections_per_member/);
            await conn.closed;
        }
        // a session closed frees its slot
        ok.shift().close();
        await sleep(200);
        ok.push(await rawSession(m));
    } finally {
        for (const c of ok) c.close();
    }
    await calm.stop();
});

test('max_connections_per_ip holds one address to its share of the listener', async () => {
    assert.ok(TLS_PORT, 'CHATD_TLS_PORT');
    const fd0 = fdCount();
    const mon = monitor();
    const socks = [];
    const closedEarly = [];
    try {
        for (let i = 0; i < LIMITS.perIp + 20; i++) {
            const s = net.connect(TLS_PORT, HOST);
            s.on('error', () => {});
            const t0 = Date.now();
            s.on('close', () => closedEarly.push(Date.now() - t0));
            socks.push(s);
        }
        // the 20 over the limit are closed at once
        await waitUntil(() => closedEarly.length >= 20, 3000, 'connections over the limit closed');
        await sleep(300);
        assert.equal(closedEarly.length, 20, `${closedEarly.length} closed, want the 20 over ${LIMITS.perIp}`);
        assert.ok(fdCount() <= fd0 + LIMITS.perIp + 2, `descriptors ${fdCount()} <= ${fd0 + LIMITS.perIp + 2}`);
    } finally {
        mon.stop();
        for (const s of socks) s.destroy();
    }
    await waitUntil(() => fdCount() <= fd0 + 2, 3000, 'descriptors back');
});

test('logout ends the live STOMP sessions of that token within 2 s', async () => {
    const calm = await chatter();
    const m = await makeMember('bye');
    const conns = [];
    try {
        conns.push(await rawSession(m), await rawSession(m));
        const t0 = Date.now();
        const r = await http('POST', '/api/logout', { token: m.token });
        assert.equal(r.status, 204);
        for (const conn of conns) {
            const err = await conn.nextFrame('ERROR', 2000);
            assert.equal(err.headers.message, 'session ended');
            const left = 2000 - (Date.now() - t0);
            const gone = await Promise.race([conn.closed.then(() => true), sleep(Math.max(left, 0)).then(() => false)]);
            assert.ok(gone, 'closed within 2 s of the logout');
        }
        // and the token no longer opens a session
        const again = await tryConnect(m);
        conns.push(again.conn);
        assert.equal(again.answer.command, 'ERROR', 'the token is dead');
    } finally {
        for (const c of conns) c.close();
    }
    await calm.stop();
});
