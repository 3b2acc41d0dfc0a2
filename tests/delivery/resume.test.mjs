// tests/delivery/resume.test.mjs - cursors and SUBSCRIBE resume-after
// (docs/delivery.md) against the running chatd of CHATD_URL: every MESSAGE
// and history item carries its cursor (side cursors: a position vector,
// tests/delivery/sidecursor.mjs), after= pages forward, a resumed room or
// side subscription gets every message after its cursor once, in order,
// then live, and every refusal is an ERROR with a message header, then close.

import test from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, roomOf, stomp, collect, collectSynced, publish, closeAll, http, uid, rawConnected } from '../e2e/lib.mjs';
import { decodeSide, encodeSide, rawSide, streamOf } from './sidecursor.mjs';

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
        // side cursors: vectors whose entry for each message's stream covers
        // its position (the room cursor's), never moving back
        const posOf = new Map(rbox.messages.map((m, i) => [m.id, BigInt(rbox.frames[i].headers.cursor.split('.').at(-1))]));
        let prev = new Map();
        for (const [i, f] of sbox.frames.entries()) {
            const cur = f.headers.cursor;
            assert.ok(cur.length <= 256 && /^[\x21-\x7e]+$/.test(cur), cur);
            const { member, entries } = decodeSide(cur);
            assert.equal(member, String(b.id));
            assert.equal(encodeSide(b.id, [...entries]), cur, 'canonical');
            const pos = posOf.get(sbox.messages[i].id);
            assert.ok(entries.get(streamOf(pos)) >= pos, `${cur} covers ${pos}`);
            for (const [k, v] of prev) assert.ok(entries.get(k) >= v, `${cur} keeps stream ${k}`);
            prev = entries;
        }
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
        for (const bad of ['nonsense', `side.${b.id}.${rbox.messages[0].id}`, sbox.frames[0].headers.cursor, `room.${lo}-${Number(hi) + 1}.5`, `room.${lo}-${hi}.01`]) {
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

/* b follows dest (of b) while a sends `count` messages, cut and resumed
 * `cuts` times meanwhile: what b kept plus the final resume is the send
 * order, each once */
async function resumeWhileSending(dest, count, cuts) {
    const { a, b, room } = await pair();
    const ca = await stomp(a);
    const texts = Array.from({ length: count }, (_, i) => `s${i}`);
    const lastText = texts.at(-1);
    let cb = await stomp(b);
    try {
        const first = await collectSynced(cb, dest(room, b));
        const sending = sendAll(ca, room, texts, 10); // keeps going during the cuts
        const got = []; // what the client keeps: each message it saw, in order
        let cursor = null; // the cursor of the last message it kept
        for (let cut = 0; cut < cuts; cut++) {
            const box = cut === 0 ? first : collect(cb, dest(room, b), { 'resume-after': cursor });
            await box.waitFor((m) => m.length >= 20 || m.some((x) => x.message === lastText), 20000);
            const n = box.frames.length; // messages after this are lost with the connection
            got.push(...box.messages.slice(0, n));
            if (n) cursor = box.frames[n - 1].headers.cursor;
            await cb.deactivate();
            cb = await stomp(b);
        }
        await sending;
        const rest = await resumeUntil(cb, dest(room, b), cursor, lastText, 30000);
        assert.deepEqual([...got, ...rest.messages].map((m) => m.message), texts);
    } finally {
        await closeAll(ca, cb);
    }
}

test('resume while the other member keeps sending: no gap and no duplicate at the seam', () =>
    resumeWhileSending((room) => roomDest(room), 600, 5));

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
        const want = ['chat:while away 1', `read:${r1.headers['message-id']}`, 'chat:while away 2', 'chat:a answers from the laptop'];
        const shown = (bx) => bx.messages.map((m) => `${m.type}:${m.message ?? m.upTo}`);
        assert.deepEqual(shown(box), want);
        assert.equal(box.messages[1].memberId, a.id);
        assert.ok(BigInt(r0.headers['message-id']) < BigInt(box.messages[0].id) && r2.headers['message-id'] === box.messages[2].id);
        for (const f of box.frames) assert.equal(decodeSide(f.headers.cursor).member, String(a.id));
        // resumed after each replayed cursor (the read event's too): exactly the rest, then live
        const replayed = box.frames.slice(0, want.length); // box keeps getting the live ones
        for (let i = 0; i < replayed.length; i++) {
            const c2 = await stomp(a);
            const live = uid('live-');
            const rest = collect(c2, sideDest(a), { 'resume-after': replayed[i].headers.cursor });
            await rest.waitFor((m) => m.length >= want.length - 1 - i, 20000);
            await publish(cb, MSG, { roomId: room, message: live });
            await rest.waitFor((m) => m.some((x) => x.message === live), 20000);
            assert.deepEqual(shown(rest), [...want.slice(i + 1), `chat:${live}`], `after frame ${i}`);
            await closeAll(c2);
            want.push(`chat:${live}`);
        }
        // the cursor form of earlier releases (side.<memberId>.<id>) still resumes
        const old = await stomp(a);
        const obox = await resumeUntil(old, sideDest(a), `side.${a.id}.${r0.headers['message-id']}`, want.at(-1).slice(5));
        assert.deepEqual(shown(obox), want);
        await closeAll(old);
    } finally {
        await closeAll(ca, cb, phone);
    }
});

test('side resume while the other member keeps sending: no gap and no duplicate at the seam', () =>
    resumeWhileSending((room, b) => sideDest(b), 300, 4));

test('resume refusals: ERROR with a message header, then close', async () => {
    const { a, b, room } = await pair();
    const c = await makeMember('cc');
    const other = roomOf(a, c);
    const ca = await stomp(a);
    let cursor, sideCursor;
    try {
        const box = await collectSynced(ca, roomDest(room));
        const sbox = await collectSynced(ca, sideDest(a));
        await publish(ca, MSG, { roomId: room, message: 'x' });
        await box.waitFor(1);
        await sbox.waitFor(1);
        cursor = box.frames[0].headers.cursor;
        sideCursor = sbox.frames[0].headers.cursor;
    } finally {
        await closeAll(ca);
    }
    const [lo, hi] = room.split('&');
    const bad = (bytes) => rawSide(a.id, bytes);
    const big = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]; // 2^48 as a varint
    const cases = [
        [a, roomDest(room), 'garbage', /resume-after/],
        [a, roomDest(room), `room.${lo}-${hi}.`, /resume-after/],
        [a, roomDest(room), `room.${lo}-${hi}.-1`, /resume-after/],
        [a, roomDest(room), `room.${lo}-${hi}.99999999999999999999`, /resume-after/],
        [a, roomDest(other), cursor, /resume-after/], // a cursor of another room
        [a, sideDest(a), cursor, /resume-after/], // a room cursor on the side destination
        [b, sideDest(b), `side.${a.id}.1`, /resume-after/], // another member's side cursor
        [b, sideDest(b), sideCursor, /resume-after/], // ... in the vector form
        [a, roomDest(room), sideCursor, /resume-after/], // a side cursor on a room
        // malformed side vectors
        [a, sideDest(a), `side.${a.id}.p`, /resume-after/], // no entries
        [a, sideDest(a), `side.${a.id}.pA`, /resume-after/], // not base64url
        [a, sideDest(a), `side.${a.id}.pAB`, /resume-after/], // unused bits set
        [a, sideDest(a), `${sideCursor}=`, /resume-after/], // padding
        [a, sideDest(a), bad([0x00, 0x00]), /resume-after/], // position 0
        [a, sideDest(a), bad([0x00, 0x81]), /resume-after/], // a truncated varint
        [a, sideDest(a), bad([0x00, 0x81, 0x00]), /resume-after/], // not the shortest varint
        [a, sideDest(a), bad([0x00, 0x05, 0x00]), /resume-after/], // an entry without its position
        [a, sideDest(a), bad([0x81, 0x80, 0x01, 0x05]), /resume-after/], // stream 16385: no such partition
        [a, sideDest(a), bad([0x01, ...big]), /resume-after/], // an offset of 2^48
        [a, sideDest(a), `side.${a.id}.01`, /resume-after/], // the old form with a leading zero
        [a, sideDest(a), `side.${a.id}.x`, /cannot be resumed/], // a cursor that did not fit
        [a, sideDest(a), `side.0${a.id}.${sideCursor.split('.').at(-1)}`, /resume-after/],
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
