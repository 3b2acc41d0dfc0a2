// tests/delivery/gap.test.mjs - a 10,000-message gap replayed by
// resume-after, in order, once each, to a client that does not read for a
// while, with chatd's resident memory (VmRSS of /proc/PID/status) bounded
// during the replay and the client never disconnected as slow.
//
// Runs a chatd of its own (tests/delivery/daemon.mjs) to know its pid.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Daemon, waitUntil } from './daemon.mjs';

const d = await Daemon.create('delivery-gap', ['chatd.publish_rate=0']);
process.env.CHATD_URL = d.url;
const { makeMember, roomOf, stomp, collectSynced, publish, closeAll, rawConnected } = await import('../e2e/lib.mjs');

const GAP = 10000;
const TEXT_BYTES = 1000; // 10 MB of bodies: ten times max_outbuf (1m)
const RSS_BOUND_KB = 8 * 1024; // growth allowed during the replay

function rssKb(pid) {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m[1]);
}

test.after(() => d.cleanup());

test(`a ${GAP}-message gap is replayed in order, once each, with bounded memory`, async () => {
    await d.start();
    const a = await makeMember('ga');
    const b = await makeMember('gb');
    const room = roomOf(a, b);
    const ca = await stomp(a);
    const cb = await stomp(b);
    let cursor;
    try {
        const box = await collectSynced(cb, `/sub/chat/room/${room}`);
        await publish(ca, '/pub/chat/message', { roomId: room, message: 'seen' });
        await box.waitFor(1);
        cursor = box.frames[0].headers.cursor;
        await cb.deactivate();
        const pad = 'x'.repeat(TEXT_BYTES - 8);
        for (let i = 0; i < GAP; i += 200)
            await Promise.all(Array.from({ length: Math.min(200, GAP - i) }, (_, k) =>
                publish(ca, '/pub/chat/message', { roomId: room, message: `${String(i + k).padStart(7, '0')}${pad}` })));
    } finally {
        await closeAll(ca);
    }
    const pid = d.proc.pid;
    const base = rssKb(pid);
    let peak = base;
    const sampler = setInterval(() => { peak = Math.max(peak, rssKb(pid)); }, 20);
    try {
        const conn = await rawConnected(b);
        conn.ws._socket.pause(); // read nothing for a while: chatd must pace, not queue
        conn.frame('SUBSCRIBE', { id: 'gap', destination: `/sub/chat/room/${room}`, 'resume-after': cursor });
        await new Promise((r) => setTimeout(r, 1500));
        const pausedPeak = peak;
        conn.ws._socket.resume();
        await waitUntil(() => conn.frames.filter((f) => f.command === 'MESSAGE').length >= GAP || conn.frames.some((f) => f.command === 'ERROR'),
            120000, `${GAP} replayed messages`);
        const msgs = conn.frames.filter((f) => f.command === 'MESSAGE');
        assert.ok(!conn.frames.some((f) => f.command === 'ERROR'), 'no ERROR');
        assert.equal(msgs.length, GAP);
        const texts = msgs.map((f) => JSON.parse(f.body).message.slice(0, 7));
        assert.deepEqual(texts, Array.from({ length: GAP }, (_, i) => String(i).padStart(7, '0')));
        clearInterval(sampler);
        assert.ok(pausedPeak - base < RSS_BOUND_KB, `RSS grew by ${pausedPeak - base} kB while the client did not read`);
        assert.ok(peak - base < RSS_BOUND_KB, `RSS grew by ${peak - base} kB during the replay (bound ${RSS_BOUND_KB} kB)`);
        conn.close();
    } finally {
        clearInterval(sampler);
        assert.equal(await d.stop(), 0);
    }
});
