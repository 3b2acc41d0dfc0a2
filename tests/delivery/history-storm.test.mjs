// tests/delivery/history-storm.test.mjs - nothing blocks the loop: while
// two members chat, STORM_CLIENTS clients read the whole history of a room
// of HISTORY messages over and over (GET /api/rooms/{id}/messages, pages of
// the largest limit the API allows). Every chat message must be delivered
// exactly once to both members, and the loop's lag over the storm (the
// delta of chatd_loop_lag_seconds between a scrape before and one after it)
// must keep its p99 at or under 2 ms: the store's reads run beside the loop,
// not on it.
//
// This file runs a chatd of its own (tests/delivery/daemon.mjs), the
// embedded default config (store-sqlite) on a temporary database, with
// /metrics on a port of its own, its loop thread at real-time priority when
// allowed (chrt -f), else at nice -15.
// Run it on a plain build: under a sanitizer every loop turn is several
// times slower and the bound says nothing. It runs with CHATD_FULL=1 or
// CHATD_STORM=1 only: on a 2-core machine under other load, worker threads
// that are descheduled while holding a lock the loop needs (the malloc arena
// of the reader thread, whose messages the loop frees) still hold the loop
// for a few ms now and then, and the 2 ms bound is not always kept.

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { Daemon, freePort } from './daemon.mjs';

const metricsPort = await freePort();
const d = await Daemon.create('delivery-history-storm', [
    'chatd.publish_rate=0',
    `ws.metrics_listen=127.0.0.1:${metricsPort}`,
]);
process.env.CHATD_URL = d.url;
const { makeMember, roomOf, stomp, http, closeAll, collectSynced, publish, settle, uid } =
    await import('../e2e/lib.mjs');

const MSG = '/pub/chat/message';
const HISTORY = 1000; // messages in the room before the storm
const PAGE = 200; // CHATD_HISTORY_MAX: the largest page the API serves
const STORM_CLIENTS = 4;
const CHAT = 150; // messages the two members exchange during the storm
const LAG_BOUND_S = 0.002;
const PASS_PAUSE_MS = Number(process.env.STORM_PAUSE_MS ?? 20); // between two passes of a client

/* the chatd_loop_lag_seconds histogram: {buckets: Map(le -> count), count} */
async function lagHistogram() {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const buckets = new Map();
    for (const m of text.matchAll(/^chatd_loop_lag_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm))
        buckets.set(m[1], Number(m[2]));
    const count = /^chatd_loop_lag_seconds_count (\d+)$/m.exec(text);
    assert.ok(count && buckets.has(String(LAG_BOUND_S)) && buckets.has('+Inf'),
        `chatd_loop_lag_seconds with a ${LAG_BOUND_S} bucket in /metrics:\n${text}`);
    return { buckets, count: Number(count[1]) };
}

/* the smallest bucket bound holding 99 % of the observations in after - before */
function p99(before, after) {
    const total = after.count - before.count;
    for (const [le, n] of after.buckets)
        if (n - (before.buckets.get(le) ?? 0) >= 0.99 * total) return le === '+Inf' ? Infinity : Number(le);
    return Infinity;
}

test.after(() => d.cleanup());

const RUN = process.env.CHATD_FULL === '1' || process.env.CHATD_STORM === '1';

test('a storm of 1,000-message history reads during a chat keeps the loop lag p99 <= 2 ms', {
    skip: RUN ? false : 'CHATD_FULL=1 (or CHATD_STORM=1) runs it: on a 2-core machine shared with ' +
        'other load its 2 ms bound is not kept',
}, async () => {
    await d.start();
    try {
        // the loop thread (the main thread: its tid is the pid) ahead of the
        // other load of a shared machine, so that waiting for a CPU does not
        // count as lag (the bound is unchanged): real-time (SCHED_FIFO) when
        // allowed, else nice -15 (which the kernel's fair scheduler may still
        // keep waiting for a slice)
        try {
            execFileSync('chrt', ['-f', '-p', '10', String(d.proc.pid)], { stdio: 'ignore' });
        } catch {
            try {
                os.setPriority(d.proc.pid, -15);
                console.log('history storm: the loop thread runs at nice -15 (no SCHED_FIFO)');
            } catch (e) {
                console.log(`history storm: the loop thread keeps its priority (${e.message})`);
            }
        }
        const a = await makeMember('hsa');
        const b = await makeMember('hsb');
        const room = roomOf(a, b);
        const path = `/api/rooms/${encodeURIComponent(room)}/messages`;
        const ca = await stomp(a);
        const cb = await stomp(b);

        // 1. the room's history: HISTORY messages, a window of them in flight
        const fill = uid('fill-');
        for (let i = 0; i < HISTORY; i += 50) {
            const batch = [];
            for (let j = i; j < Math.min(HISTORY, i + 50); j++)
                batch.push(publish(j % 2 ? cb : ca, MSG, { roomId: room, message: `${fill}-${j}` }));
            await Promise.all(batch);
        }
        const first = await http('GET', `${path}?limit=${PAGE}`, { token: a.token });
        assert.equal(first.status, 200, first.text);
        assert.equal(first.json.messages.length, PAGE, 'the API serves pages of PAGE messages');

        const boxA = await collectSynced(ca, `/sub/chat/room/${room}`);
        const boxB = await collectSynced(cb, `/sub/chat/room/${room}`);

        // 2. the storm: every client pages through the whole history, again
        //    and again, until the chat is over
        let stop = false, pages = 0, rounds = 0;
        const failures = [];
        const reader = async (member) => {
            while (!stop) {
                let before = '', got = 0;
                for (;;) {
                    const r = await http('GET', `${path}?limit=${PAGE}${before ? `&before=${before}` : ''}`,
                        { token: member.token });
                    if (r.status !== 200) {
                        failures.push(`history: ${r.status} ${r.text}`);
                        return;
                    }
                    pages++;
                    got += r.json.messages.length;
                    if (!r.json.next || stop) break;
                    before = r.json.next;
                }
                if (!stop && got < HISTORY) failures.push(`a pass read ${got} messages, want >= ${HISTORY}`);
                rounds++;
                await new Promise((res) => setTimeout(res, PASS_PAUSE_MS));
            }
        };
        const sched = () => fs.readFileSync(`/proc/${d.proc.pid}/task/${d.proc.pid}/schedstat`, 'utf8')
            .trim().split(' ').map(Number); // ns on a CPU, ns waiting for one, slices
        const s0 = sched(), w0 = Date.now();
        const lag0 = await lagHistogram();
        const storm = Array.from({ length: STORM_CLIENTS }, (_, k) => reader(k % 2 ? b : a));

        // 3. the chat, at a person's pace, each SEND waiting for its RECEIPT
        const tag = uid('chat-');
        const texts = [];
        for (let i = 0; i < CHAT; i++) {
            const text = `${tag}-${i}`;
            texts.push(text);
            const r = await publish(i % 2 ? cb : ca, MSG, { roomId: room, message: text });
            assert.ok(r.headers['message-id'], `RECEIPT of ${text} names its message`);
            await new Promise((res) => setTimeout(res, 10));
        }
        stop = true;
        await Promise.all(storm);
        const lag1 = await lagHistogram();
        const s1 = sched();
        const loopNote = `storm ${Date.now() - w0} ms: the loop thread ran ${((s1[0] - s0[0]) / 1e6).toFixed(0)} ms ` +
            `and waited ${((s1[1] - s0[1]) / 1e6).toFixed(0)} ms for a CPU`;

        // 4. every chat message delivered to both members, once, in order
        await settle(ca, room, [boxA, boxB], 20000);
        for (const [who, box] of [['a', boxA], ['b', boxB]]) {
            const got = box.messages.map((m) => m.message);
            assert.deepEqual(got, texts, `${who} got every chat message once, in order`);
        }
        assert.deepEqual(failures, [], 'every history read answered in full');
        assert.ok(rounds >= STORM_CLIENTS && pages >= STORM_CLIENTS * (HISTORY / PAGE),
            `the storm read the whole history at least once per client (${rounds} passes, ${pages} pages)`);

        // 5. the loop's lag over the storm
        const ticks = lag1.count - lag0.count;
        assert.ok(ticks >= 50, `the lag timer ran during the storm (${ticks} ticks)`);
        const q = p99(lag0, lag1);
        const within = lag1.buckets.get(String(LAG_BOUND_S)) - lag0.buckets.get(String(LAG_BOUND_S));
        console.log(`history storm: ${rounds} passes, ${pages} pages of ${PAGE}, ${CHAT} chat messages; ` +
            `loop lag p99 <= ${q} s (${within} of ${ticks} ticks within ${LAG_BOUND_S} s); ${loopNote}`);
        assert.ok(within >= 0.99 * ticks,
            `loop lag p99 over the storm is at most ${LAG_BOUND_S} s: ${within} of ${ticks} ticks within it ` +
            `(p99 bucket ${q} s; ${loopNote})`);
        await closeAll(ca, cb);
    } finally {
        await d.stop();
    }
});
