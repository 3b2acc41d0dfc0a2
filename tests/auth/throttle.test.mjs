// tests/auth/throttle.test.mjs - password hashing under a throttle (issue 13
// item 3), against the chatd of tests/suites/37-auth.sh: the password
// guesser, the login flood and the registration flood are answered 429 with
// Retry-After after the configured count, chatd computes no more argon2
// hashes than the limits allow (chatd_auth_hashes_total) and little CPU,
// and a normal member logs in and chats meanwhile with every message
// delivered once, in order. Each attacker uses its own loopback address
// (127.0.0.N), the normal member 127.0.0.1.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import { BASE, uid, makeMember, roomOf, stomp, collectSynced, publish, closeAll } from '../e2e/lib.mjs';
import { post } from './lib.mjs';

const PID = Number(process.env.CHATD_PID);
const env = (k) => {
    const v = Number(process.env[k]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${k} is not set: run through tests/suites/37-auth.sh`);
    return v;
};
const FAIL_LIMIT = env('CHATD_AUTH_FAIL_LIMIT');
const FAIL_WINDOW = env('CHATD_AUTH_FAIL_WINDOW');
const REGISTER_LIMIT = env('CHATD_AUTH_REGISTER_LIMIT');
const METRICS = process.env.CHATD_METRICS_URL || `${BASE}/metrics`;
assert.ok(PID, 'CHATD_PID set by tests/e2e/run.sh');

async function hashes() {
    const res = await fetch(METRICS);
    assert.equal(res.status, 200, 'GET /metrics');
    const m = /^chatd_auth_hashes_total(?:\{[^}]*\})?\s+(\d+)/m.exec(await res.text());
    return m ? Number(m[1]) : 0;
}

/* CPU seconds chatd has used (utime + stime of /proc/PID/stat) */
function cpuSeconds() {
    const stat = fs.readFileSync(`/proc/${PID}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // fields 14, 15 (USER_HZ 100)
}

function assertRetryAfter(r, max, what) {
    assert.equal(r.status, 429, `${what}: ${r.status} ${JSON.stringify(r.json)}`);
    assert.match(String(r.retryAfter), /^[0-9]+$/, `${what}: Retry-After is delay-seconds`);
    const s = Number(r.retryAfter);
    assert.ok(s >= 1 && s <= max, `${what}: Retry-After ${s} within 1..${max}`);
}

test('the password guesser gets 429 with Retry-After after login_fail_limit failures, and no more hashes', async () => {
    const victim = await makeMember('victim');
    const h0 = await hashes();
    const statuses = [];
    for (let i = 0; i < FAIL_LIMIT + 5; i++) {
        const r = await post('/api/login', { loginId: victim.loginId, password: `guess-${i}-xxxx` }, '127.0.0.3');
        statuses.push(r.status);
        if (i >= FAIL_LIMIT) assertRetryAfter(r, FAIL_WINDOW, `guess ${i + 1}`);
    }
    assert.deepEqual(statuses.slice(0, FAIL_LIMIT), Array(FAIL_LIMIT).fill(401), 'the first guesses are checked');
    assert.equal(await hashes(), h0 + FAIL_LIMIT, 'one argon2 hash per admitted guess, none for refused ones');
    // the login id is held for the window whatever the address, even with the right password
    const other = await post('/api/login', { loginId: victim.loginId, password: victim.password }, '127.0.0.6');
    assertRetryAfter(other, FAIL_WINDOW, 'the guessed login id from another address');
    assert.equal(await hashes(), h0 + FAIL_LIMIT, 'a refused login costs no hash');
});

test('the login flood is bounded: 429 before any hash, few hashes and little CPU; a member logs in and chats meanwhile', async () => {
    const a = await makeMember('calm');
    const b = await makeMember('calm');
    const room = roomOf(a, b);
    const ca = await stomp(a);
    const cb = await stomp(b);
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    const sent = [];
    let n = 0;
    const chat = setInterval(() => {
        const message = `calm ${n++}`;
        sent.push(message);
        ca.publish({ destination: '/pub/chat/message', body: JSON.stringify({ roomId: room, message }) });
    }, 50);
    try {
        const h0 = await hashes();
        const cpu0 = cpuSeconds();
        const flood = [];
        for (let i = 0; i < 200; i++)
            flood.push(post('/api/login', { loginId: uid('nobody'), password: 'flooding-pw' }, '127.0.0.4'));
        // the normal member logs in again while the flood is answered
        const calmLogin = post('/api/login', { loginId: a.loginId, password: a.password }, '127.0.0.1');
        const answers = await Promise.all(flood);
        const again = await calmLogin;
        assert.equal(again.status, 200, `the normal member logs in during the flood: ${again.status}`);
        const checked = answers.filter((r) => r.status === 401).length;
        const refused = answers.filter((r) => r.status === 429);
        assert.ok(checked >= 1 && checked <= FAIL_LIMIT, `${checked} flood logins checked (1..${FAIL_LIMIT})`);
        assert.equal(checked + refused.length, answers.length, 'every other flood login is refused with 429');
        for (const r of refused) assertRetryAfter(r, FAIL_WINDOW, 'a refused flood login');
        // keep going one at a time: exactly login_fail_limit failures in all, then the window
        let more = 0;
        for (;;) {
            const r = await post('/api/login', { loginId: uid('nobody'), password: 'flooding-pw' }, '127.0.0.4');
            if (r.status === 429 && Number(r.retryAfter) > 1) break;
            if (r.status === 401) more++;
            else assertRetryAfter(r, 1, 'a login while hash slots are taken');
            assert.ok(checked + more <= FAIL_LIMIT, `at most ${FAIL_LIMIT} failures from one address`);
        }
        assert.equal(checked + more, FAIL_LIMIT, `exactly ${FAIL_LIMIT} logins from the flooding address were checked`);
        const spent = (await hashes()) - h0;
        assert.equal(spent, FAIL_LIMIT + 1, 'hashes: the checked flood logins and the normal login');
        const cpu = cpuSeconds() - cpu0;
        assert.ok(cpu < 3, `chatd used ${cpu.toFixed(2)} s of CPU for ${answers.length + more + 1} logins (want < 3)`);
        clearInterval(chat);
        const marker = `final ${uid()}`;
        await publish(ca, '/pub/chat/message', { roomId: room, message: marker });
        await box.waitFor((msgs) => msgs.some((m) => m.message === marker), 10000);
        const got = box.messages.map((m) => m.message).filter((m) => m !== marker);
        assert.deepEqual(got, sent, 'every message of the normal member delivered once, in order');
    } finally {
        clearInterval(chat);
        await closeAll(ca, cb);
    }
});

test('the registration flood gets 429 with Retry-After after register_limit registrations per address', async () => {
    const h0 = await hashes();
    const statuses = [];
    for (let i = 0; i < REGISTER_LIMIT + 3; i++) {
        const r = await post('/api/members', { loginId: uid('reg'), name: 'Reg', password: 'register-pw' }, '127.0.0.5');
        statuses.push(r.status);
        if (i >= REGISTER_LIMIT) assertRetryAfter(r, 600, `registration ${i + 1}`);
    }
    assert.deepEqual(statuses.slice(0, REGISTER_LIMIT), Array(REGISTER_LIMIT).fill(201));
    assert.equal(await hashes(), h0 + REGISTER_LIMIT, 'one hash per admitted registration');
});
