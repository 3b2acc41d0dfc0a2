// tests/delivery/resume.test.mjs - cursors and SUBSCRIBE resume-after
// (docs/delivery.md) against the running chatd of CHATD_URL: every MESSAGE
// and history item carries its cursor, after= pages forward, a resumed
// subscription gets every message after its cursor once, in order, then
// live, and every refusal is an ERROR with a message header, then close.

import test from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, roomOf, stomp, collect, collectSynced, publish, closeAll, http, uid, rawConnected } from '../e2e/lib.mjs';

const MSG = '/pub/chat/message';
const roomDest = (room) => `/sub/chat/room/${room}`;
const sideDest = (m) => `/sub/chat/side/${m.id}`;

async function pair() {
    const a = await makeMember('ca');
    const b = await makeMember('cb');
    return { a, b, room: roomOf(a, b) };
}

/* send texts in order, WINDOW at a time, each with a receipt */
export async function sendAll(client, room, texts, window = 50) {
    for (let i = 0; i < texts.length; i += window)
        await Promise.all(texts.slice(i, i + window).map((t) => publish(client, MSG, { roomId: room, message: t })));
}

/* subscribe (optionally resuming) and wait for the text `until` */
async function resumeUntil(client, dest, cursor, until, ms = 20000) {
    const box = collect(client, dest, cursor ? { 'resume-after': cursor } : {});
    await box.waitFor((m) => m.some((x) => x.message === until), ms);
    return box;
}

test('MESSAGE frames and history items carry cursors; after= pages forward', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a), cb = await stomp(b);
    try {
        const rbox = await collectSynced(cb, roomDest(room));
        const sbox = await collectSynced(cb, sideDest(b));
        const texts = Array.from({ length: 250 }, (_, i) => `p${i}`);
        await sendAll(ca, room, texts);
        await rbox.waitFor(250);
        await sbox.waitFor(250);
        const [lo, hi] = room.split('&');
        for (const [i, f] of rbox.frames.entries()) {
            assert.equal(f.headers.cursor, `room.${lo}-${hi}.${rbox.messages[i].id}`);
            assert.ok(f.headers.cursor.length <= 256 && /^[\x21-\x7e]+$/.test(f.headers.cursor));
        }
        for (const [i, f] of sbox.frames.entries()) assert.equal(f.headers.cursor, `side.${b.id}.${sbox.messages[i].id}`);
        // forward paging: 100, 100, 50, each item with the live cursor
        const seen = [];
        let after = rbox.frames[0].headers.cursor;
        seen.push(rbox.messages[0]);
        for (;;) {
            const r = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=100&after=${encodeURIComponent(after)}`, { token: a.token });
            assert.equal(r.status, 200, r.text);
            seen.push(...r.json.messages);
            if (!r.json.next) {
                assert.ok(r.json.messages.length < 100);
                break;
            }
            assert.equal(r.json.next, r.json.messages.at(-1).cursor);
            after = r.json.next;
        }
        assert.deepEqual(seen.map((m) => m.message), texts);
        assert.deepEqual(seen.slice(1).map((m) => m.cursor), rbox.frames.slice(1).map((f) => f.headers.cursor));
        // the newest page (before) carries the same cursors
        const h = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=10`, { token: b.token });
        assert.deepEqual(h.json.messages.map((m) => m.cursor), rbox.frames.slice(-10).map((f) => f.headers.cursor));
        // refusals of after=
        for (const bad of ['nonsense', `side.${b.id}.${rbox.messages[0].id}`, `room.${lo}-${Number(hi) + 1}.5`, `room.${lo}-${hi}.01`]) {
            const r = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?after=${encodeURIComponent(bad)}`, { token: a.token });
            assert.equal(r.status, 400, `${bad}: ${r.text}`);
        }
        const both = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?after=${encodeURIComponent(after)}&before=1`, { token: a.token });
        assert.equal(both.status, 400);
    } finally {
        await closeAll(ca, cb);
    }
});

test('resume-after a room cursor: the gap once each in order, then live', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a);
    let cb = await stomp(b);
    try {
        const first = await collectSynced(cb, roomDest(room));
        await sendAll(ca, room, ['g0', 'g1', 'g2']);
        await first.waitFor(3);
        const cursor = first.frames[1].headers.cursor; // b saw g0, g1 (and g2, which it asks for again)
        await cb.deactivate();
        const gap = Array.from({ length: 120 }, (_, i) => `gap${i}`);
        await sendAll(ca, room, gap);
        cb = await stomp(b);
        const box = await resumeUntil(cb, roomDest(room), cursor, 'gap119');
        const live = uid('live-');
        await publish(ca, MSG, { roomId: room, message: live });
        await box.waitFor((m) => m.some((x) => x.message === live));
        assert.deepEqual(box.messages.map((m) => m.message), ['g2', ...gap, live]);
        assert.deepEqual(box.frames.map((f) => f.headers.cursor), box.messages.map((m) => `room.${room.replace('&', '-')}.${m.id}`));
        // the room id may be given either way round: the cursor is the room's
        const cb2 = await stomp(b);
        const rev = await resumeUntil(cb2, `/sub/chat/room/${b.id}&${a.id}`, box.frames.at(-2).headers.cursor, live);
        assert.deepEqual(rev.messages.map((m) => m.message), [live]);
        await closeAll(cb2);
    } finally {
        await closeAll(ca, cb);
    }
});

test('resume while the other member keeps sending: no gap and no duplicate at the seam', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a);
    const texts = Array.from({ length: 600 }, (_, i) => `s${i}`);
    let cb = await stomp(b);
    try {
        const first = await collectSynced(cb, roomDest(room));
        const sending = sendAll(ca, room, texts, 10); // keeps going during the cuts
        const got = []; // what the client keeps: each message it saw, in order
        let cursor = null; // the cursor of the last message it kept
        // cut and resume five times while a is sending
        for (let cut = 0; cut < 5; cut++) {
            const box = cut === 0 ? first : collect(cb, roomDest(room), { 'resume-after': cursor });
            await box.waitFor((m) => m.length >= 20 || m.some((x) => x.message === 's599'), 20000);
            const n = box.frames.length; // messages after this are lost with the connection
            got.push(...box.messages.slice(0, n));
            if (n) cursor = box.frames[n - 1].headers.cursor;
            await cb.deactivate();
            cb = await stomp(b);
        }
        await sending;
        const rest = await resumeUntil(cb, roomDest(room), cursor, 's599', 30000);
        assert.deepEqual([...got, ...rest.messages].map((m) => m.message), texts);
    } finally {
        await closeAll(ca, cb);
    }
});

test('side resume includes the member\'s own read events from another connection', async () => {
    const { a, b, room } = await pair();
    const ca = await stomp(a);
    const cb = await stomp(b);
    let phone = await stomp(a);
    try {
        const side = await collectSynced(phone, sideDest(a));
        const r0 = await publish(cb, MSG, { roomId: room, message: 'before' });
        await side.waitFor(1);
        const cursor = side.frames[0].headers.cursor;
        await phone.deactivate();
        // meanwhile: b writes, a reads on its laptop (ca), b writes again
        const r1 = await publish(cb, MSG, { roomId: room, message: 'while away 1' });
        await publish(ca, '/pub/chat/read', { roomId: room, upTo: r1.headers['message-id'] });
        const r2 = await publish(cb, MSG, { roomId: room, message: 'while away 2' });
        await publish(ca, MSG, { roomId: room, message: 'a answers from the laptop' });
        phone = await stomp(a);
        const box = await resumeUntil(phone, sideDest(a), cursor, 'a answers from the laptop');
        assert.deepEqual(box.messages.map((m) => `${m.type}:${m.message ?? m.upTo}`),
            ['chat:while away 1', `read:${r1.headers['message-id']}`, 'chat:while away 2', 'chat:a answers from the laptop']);
        assert.equal(box.messages[1].memberId, a.id);
        assert.deepEqual(box.frames.map((f) => f.headers.cursor), box.messages.map((m) => `side.${a.id}.${m.id}`));
        assert.ok(BigInt(r0.headers['message-id']) < BigInt(box.messages[0].id) && r2.headers['message-id'] === box.messages[2].id);
    } finally {
        await closeAll(ca, cb, phone);
    }
});

test('resume refusals: ERROR with a message header, then close', async () => {
    const { a, b, room } = await pair();
    const c = await makeMember('cc');
    const other = roomOf(a, c);
    const ca = await stomp(a);
    let cursor;
    try {
        const box = await collectSynced(ca, roomDest(room));
        await publish(ca, MSG, { roomId: room, message: 'x' });
        await box.waitFor(1);
        cursor = box.frames[0].headers.cursor;
    } finally {
        await closeAll(ca);
    }
    const [lo, hi] = room.split('&');
    const cases = [
        [a, roomDest(room), 'garbage', /resume-after/],
        [a, roomDest(room), `room.${lo}-${hi}.`, /resume-after/],
        [a, roomDest(room), `room.${lo}-${hi}.-1`, /resume-after/],
        [a, roomDest(room), `room.${lo}-${hi}.99999999999999999999`, /resume-after/],
        [a, roomDest(other), cursor, /resume-after/], // a cursor of another room
        [a, sideDest(a), cursor, /resume-after/], // a room cursor on the side destination
        [b, sideDest(b), `side.${a.id}.1`, /resume-after/], // another member's side cursor
        [c, roomDest(room), cursor, /not a member|forbidden/], // a room the member is not in
    ];
    for (const [who, dest, cur, why] of cases) {
        const conn = await rawConnected(who);
        conn.frame('SUBSCRIBE', { id: 's1', destination: dest, 'resume-after': cur, receipt: 'r1' });
        const err = await conn.nextFrame('ERROR');
        assert.match(err.headers.message, why, `${dest} ${cur}`);
        assert.ok(!conn.frames.some((f) => f.command === 'RECEIPT' || f.command === 'MESSAGE'), 'nothing before the ERROR');
        await conn.closed;
    }
});
