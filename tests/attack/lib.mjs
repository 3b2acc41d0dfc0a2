// tests/attack/lib.mjs - what every attack suite needs: the daemon's open
// descriptors and RSS read from /proc while an attack runs, polling for a
// condition with a deadline, and a normal member pair that chats during the
// attack and checks that every message arrived exactly once, in order.
// Run through tests/suites/35-attack.sh, which sets CHATD_URL, CHATD_PID,
// the TLS port and the configured limits (CHATD_ATTACK_*).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after } from 'node:test';
import { HOST, makeMember, roomOf, stomp, collectSynced, publish, rawStomp, sleep } from '../e2e/lib.mjs';

export * from '../e2e/lib.mjs';

export const PID = Number(process.env.CHATD_PID);
if (!PID) throw new Error('CHATD_PID is not set: run the attacks through tests/suites/35-attack.sh');

const env = (k) => {
    const v = Number(process.env[k]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${k} is not set by 35-attack.sh`);
    return v;
};
export const LIMITS = {
    sendTimeoutMs: env('CHATD_ATTACK_SEND_TIMEOUT') * 1000,
    requestTimeoutMs: env('CHATD_ATTACK_REQUEST_TIMEOUT') * 1000,
    tlsTimeoutMs: env('CHATD_ATTACK_TLS_TIMEOUT') * 1000,
    connectTimeoutMs: env('CHATD_ATTACK_CONNECT_TIMEOUT') * 1000,
    heartbeatMaxMs: env('CHATD_ATTACK_HB_MAX'),
    pipeline: env('CHATD_ATTACK_PIPELINE'),
    maxTxBytes: env('CHATD_ATTACK_MAX_TX_BYTES'),
    maxTxAgeMs: env('CHATD_ATTACK_MAX_TX_AGE') * 1000,
    perMember: env('CHATD_ATTACK_PER_MEMBER'),
    perIp: env('CHATD_ATTACK_PER_IP'),
    publishRate: env('CHATD_ATTACK_PUBLISH_RATE'),
};

/* open descriptors of chatd */
export function fdCount() {
    return fs.readdirSync(`/proc/${PID}/fd`).length;
}

/* resident set size of chatd in KiB */
export function rssKiB() {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${PID}/status`, 'utf8'));
    assert.ok(m, 'VmRSS in /proc/PID/status');
    return Number(m[1]);
}

/* sample fds and RSS every `ms` until stop(); returns the maxima */
export function monitor(ms = 25) {
    const max = { fd: fdCount(), rss: rssKiB() };
    const t = setInterval(() => {
        max.fd = Math.max(max.fd, fdCount());
        max.rss = Math.max(max.rss, rssKiB());
    }, ms);
    return {
        max,
        stop() {
            clearInterval(t);
            return max;
        },
    };
}

/* poll pred() every 25 ms; resolves with the ms it took, throws after ms */
export async function waitUntil(pred, ms, what) {
    const t0 = Date.now();
    for (;;) {
        if (await pred()) return Date.now() - t0;
        if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
        await sleep(25);
    }
}

/* Whatever a failed test left open is closed at the end of its file, so
 * that the file's process exits. */
const leftOpen = new Set();
after(async () => {
    await Promise.all([...leftOpen].map((c) => c.deactivate?.() ?? c.close?.()));
});

/* A normal member A writing to B every `every` ms while an attack runs.
 * stop() sends a final marker, waits for it, and asserts that B got every
 * line exactly once and in order; returns the number of lines. */
export async function chatter(every = 100) {
    const a = await makeMember('calm');
    const b = await makeMember('calm');
    const room = roomOf(a, b);
    const hb = { heartbeatIncoming: 1000, heartbeatOutgoing: 1000 };
    const ca = await stomp(a, hb);
    leftOpen.add(ca);
    const cb = await stomp(b, hb);
    leftOpen.add(cb);
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    const sent = [];
    let running = true;
    let failure = null;
    const loop = (async () => {
        for (let i = 0; running; i++) {
            const message = `line ${i}`;
            try {
                await publish(ca, '/pub/chat/message', { roomId: room, message });
            } catch (e) {
                failure = e;
                return;
            }
            sent.push(message);
            await sleep(every);
        }
    })();
    return {
        async stop() {
            running = false;
            await loop;
            if (failure) throw failure;
            assert.equal(ca.errors.length + cb.errors.length, 0, 'no STOMP ERROR for the calm members');
            await publish(ca, '/pub/chat/message', { roomId: room, message: 'the end' });
            await box.waitFor((msgs) => msgs.some((m) => m.message === 'the end'), 10000);
            const got = box.messages.map((m) => m.message);
            assert.deepEqual(got, [...sent, 'the end'], 'every line delivered exactly once, in order');
            assert.ok(sent.length >= 1, `the calm member chatted during the attack (${sent.length} lines)`);
            await Promise.all([ca.deactivate(), cb.deactivate()]);
            leftOpen.delete(ca);
            leftOpen.delete(cb);
            return sent.length;
        },
    };
}

/* rawStomp / rawConnected whose sockets are closed at the end of the file */
export async function rawOpen() {
    const conn = await rawStomp();
    leftOpen.add(conn);
    return conn;
}

export async function rawSession(member) {
    const conn = await rawOpen();
    conn.frame('CONNECT', {
        'accept-version': '1.2', host: HOST, login: member.loginId, passcode: member.token, 'heart-beat': '0,0',
    });
    conn.connected = await conn.nextFrame('CONNECTED');
    return conn;
}

/* CONNECT as member on a raw STOMP socket; resolves with the connection and
 * the answer (the CONNECTED or the ERROR frame, whichever comes) */
export async function tryConnect(member, ms = 5000) {
    const conn = await rawStomp();
    leftOpen.add(conn);
    conn.frame('CONNECT', {
        'accept-version': '1.2', host: HOST, login: member.loginId, passcode: member.token, 'heart-beat': '0,0',
    });
    const answer = await Promise.race([conn.nextFrame('CONNECTED', ms), conn.nextFrame('ERROR', ms)]);
    return { conn, answer };
}
