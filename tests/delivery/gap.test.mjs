// tests/delivery/gap.test.mjs - a 10,000-message gap replayed by
// resume-after, in order, once each, to a client that does not read for a
// while, with chatd's resident memory (VmRSS of /proc/PID/status) bounded
// during the replay and the client never disconnected as slow; and many
// subscriptions of one connection resumed at once (as a page reconnecting
// with all its rooms does) while a live message comes on another of them:
// their replays together leave room for it, nobody is disconnected.
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

const ROOMS = 12, PER_ROOM = 200, BIG = 4000; // 12 pages of 100 x 4 kB at once: 4.8 MB, max_outbuf 1 MiB

test(`${ROOMS} subscriptions of one connection resumed at once, and a live message on another: exact, not disconnected`, async () => {
    await d.start();
    const b = await makeMember('gm');
    const x = await makeMember('gx');
    const peers = [];
    for (let i = 0; i < ROOMS; i++) peers.push(await makeMember('gp'));
    const rooms = peers.map((p) => roomOf(p, b));
    const senders = await Promise.all(peers.map((p) => stomp(p)));
    const cx = await stomp(x);
    const want = rooms.map(() => []);
    const cursors = [];
    try {
        const cb = await stomp(b);
        const boxes = [];
        for (const room of rooms) boxes.push(await collectSynced(cb, `/sub/chat/room/${room}`));
        await Promise.all(senders.map((c, i) => publish(c, '/pub/chat/message', { roomId: rooms[i], message: 'seen' })));
        for (const box of boxes) {
            await box.waitFor(1);
            cursors.push(box.frames[0].headers.cursor);
        }
        await cb.deactivate();
        const pad = 'y'.repeat(BIG - 8);
        await Promise.all(senders.map(async (c, i) => {
            for (let k = 0; k < PER_ROOM; k++) {
                const text = `${String(k).padStart(7, '0')}${pad}`;
                await publish(c, '/pub/chat/message', { roomId: rooms[i], message: text });
                want[i].push(text.slice(0, 7));
            }
        }));
        const conn = await rawConnected(b);
        let gone = false;
        conn.ws.on('close', () => { gone = true; });
        conn.frame('SUBSCRIBE', { id: 'live', destination: `/sub/chat/room/${roomOf(x, b)}`, receipt: 'live' });
        await waitUntil(() => conn.frames.some((f) => f.command === 'RECEIPT'), 10000, 'the live subscription');
        conn.ws._socket.pause(); // a slow network: chatd must pace the replays, not queue them
        rooms.forEach((room, i) => conn.frame('SUBSCRIBE', { id: `r${i}`, destination: `/sub/chat/room/${room}`, 'resume-after': cursors[i] }));
        await new Promise((r) => setTimeout(r, 500));
        await publish(cx, '/pub/chat/message', { roomId: roomOf(x, b), message: 'live meanwhile' });
        await new Promise((r) => setTimeout(r, 1000));
        conn.ws._socket.resume();
        const of = (id) => conn.frames.filter((f) => f.command === 'MESSAGE' && f.headers.subscription === id);
        await waitUntil(() => gone || conn.frames.some((f) => f.command === 'ERROR') ||
            (of('live').length >= 1 && rooms.every((_, i) => of(`r${i}`).length >= PER_ROOM)), 120000, 'every replay and the live message');
        assert.ok(!gone && !conn.frames.some((f) => f.command === 'ERROR'),
            `disconnected after ${rooms.map((_, i) => of(`r${i}`).length)} replayed and ${of('live').length} live`);
        rooms.forEach((_, i) => assert.deepEqual(of(`r${i}`).map((f) => JSON.parse(f.body).message.slice(0, 7)), want[i], `room ${i}`));
        assert.deepEqual(of('live').map((f) => JSON.parse(f.body).message), ['live meanwhile']);
        conn.close();
    } finally {
        await closeAll(cx, ...senders);
        assert.equal(await d.stop(), 0);
    }
});
