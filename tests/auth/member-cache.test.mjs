// tests/auth/member-cache.test.mjs - the member cache is bounded
// (member_cache_max, set low by tests/suites/37-auth.sh): with more members
// than it holds, every pair still logs in, checks its room and gets each
// message exactly once, as entries are dropped and read from the store again,
// and the cache (chatd_member_cache_entries) never holds more than the bound.

import assert from 'node:assert/strict';
import test from 'node:test';
import { BASE, uid, roomOf, stomp, collectSynced, publish, closeAll } from '../e2e/lib.mjs';
import { post } from './lib.mjs';

const CACHE_MAX = Number(process.env.CHATD_AUTH_MEMBER_CACHE_MAX);
/* register and log in from 127.0.1.N (4 per address: under register_limit) */
async function member(i) {
    const addr = `127.0.1.${1 + Math.floor(i / 4)}`;
    const loginId = uid('lru');
    const password = 'cache-test-pw';
    const reg = await post('/api/members', { loginId, name: `LRU ${i}`, password }, addr);
    assert.equal(reg.status, 201, `register ${loginId}`);
    const lg = await post('/api/login', { loginId, password }, addr);
    assert.equal(lg.status, 200, `login ${loginId}`);
    return { id: Number(reg.json.id), loginId, token: lg.json.token };
}

test('more members than member_cache_max: every room check and message still right', { timeout: 120000 }, async () => {
    assert.ok(CACHE_MAX >= 16, 'CHATD_AUTH_MEMBER_CACHE_MAX set by 37-auth.sh');
    const n = CACHE_MAX + 8;
    const members = [];
    for (let i = 0; i < n; i++) members.push(await member(i));
    // two rounds over all pairs, so that every entry is dropped and fetched again
    for (let round = 0; round < 2; round++) {
        for (let i = 0; i + 1 < n; i += 2) {
            const [a, b] = [members[i], members[i + 1]];
            const room = roomOf(a, b);
            const ca = await stomp(a);
            const cb = await stomp(b);
            try {
                const box = await collectSynced(cb, `/sub/chat/room/${room}`);
                const message = `round ${round} pair ${i}`;
                await publish(ca, '/pub/chat/message', { roomId: room, message });
                const got = await box.waitFor(1, 8000);
                assert.deepEqual(got.map((m) => [m.message, m.writerId]), [[message, a.id]]);
            } finally {
                await closeAll(ca, cb);
            }
        }
    }
    const metrics = await (await fetch(process.env.CHATD_METRICS_URL || `${BASE}/metrics`)).text();
    const m = /^chatd_member_cache_entries(?:\{[^}]*\})?\s+(\d+)/m.exec(metrics);
    assert.ok(m, 'chatd_member_cache_entries in /metrics');
    assert.ok(Number(m[1]) <= CACHE_MAX, `member cache holds ${m[1]} (want <= ${CACHE_MAX})`);
});
