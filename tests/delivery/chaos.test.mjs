// tests/delivery/chaos.test.mjs - the chaos test (docs/delivery.md): a
// sender and a listener, each behind a TCP proxy of the test's own that cuts
// their connections at random every 100-400 ms. The sender sends 1,000
// messages with idempotency keys, one at a time, retrying each (same key)
// until it is receipted; the listener resumes after its last cursor after
// every cut. At the end the listener has exactly the 1,000, in send order,
// each once, and the store holds each once (REST history, not proxied).
//
// The clients are those of ./chaos-lib.mjs, against the chatd of CHATD_URL (or the
// comma-separated base URLs of CHATD_CHAOS_TARGETS, one per node).

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { makeMember, roomOf, http, uid } from '../e2e/lib.mjs';
import { CuttingProxy } from './proxy.mjs';
import { listen, sendEach } from './chaos-lib.mjs';

const N = Number(process.env.CHATD_CHAOS_MESSAGES || 1000);
const PACE_MS = 3; // between messages, so that a run spans many cuts
const targets = (process.env.CHATD_CHAOS_TARGETS || process.env.CHATD_URL).split(',').map((u) => {
    const x = new URL(u);
    return { host: x.hostname, port: Number(x.port) };
});

test(`chaos: ${N} messages through connections cut at random, each delivered and stored once, in order`, { timeout: 600000 }, async () => {
    const a = await makeMember('xa');
    const b = await makeMember('xb');
    const room = roomOf(a, b);
    const dest = `/sub/chat/room/${room}`;
    const cut = { minMs: 100, maxMs: 400 };
    const sp = await CuttingProxy.start(targets, cut);
    const lp = await CuttingProxy.start(targets, cut);
    const run = crypto.randomUUID();
    const texts = Array.from({ length: N }, (_, i) => `c${i}`);
    const marker = uid('end-');
    const room0 = { dest, cursor: null, got: [] }; // the listener's messages, in arrival order
    const got = room0.got;
    let listener = null;

    try {
        // listener: (re)subscribe after every cut, resuming after its last cursor
        listener = listen(lp, b, [room0]);
        await listener.ready;
        // sender: one message at a time, same key until a RECEIPT names it
        const items = [...texts, marker].map((text, i) => ({ roomId: room, text, key: `${run}-${i}` }));
        const { ids, attempts } = await sendEach(sp, a, items, { paceMs: PACE_MS });
        // the listener has everything once it has the marker
        const deadline = Date.now() + 60000;
        while (!got.some((m) => m.message === marker)) {
            assert.ok(Date.now() < deadline, `the listener never got the marker (has ${got.length})`);
            await new Promise((r) => setTimeout(r, 20));
        }
        await listener.stop();
        const before = got.slice(0, got.findIndex((m) => m.message === marker));
        assert.equal(before.length, N, `the listener has exactly ${N} messages before the marker`);
        assert.deepEqual(before.map((m) => m.message), texts, 'in send order, each once');
        assert.deepEqual(before.map((m) => m.id), ids.slice(0, N), 'the RECEIPTs named the messages delivered');
        // the store holds each once (REST history straight to chatd, paged
        // forward from position 0 of the room)
        const hist = [];
        let after = `room.${room.replace('&', '-')}.0`;
        while (after) {
            const r = await http('GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=200&after=${encodeURIComponent(after)}`, { token: a.token });
            assert.equal(r.status, 200, r.text);
            hist.push(...r.json.messages);
            after = r.json.next;
        }
        assert.deepEqual(hist.map((m) => m.message), [...texts, marker], 'the store holds each message once, in order');
        assert.ok(sp.cuts >= 10 && lp.cuts >= 10, `connections were cut (sender ${sp.cuts}, listener ${lp.cuts})`);
        console.log(`# chaos: ${sp.cuts} sender cuts, ${lp.cuts} listener cuts, ${listener.sessions()} listener sessions, ${attempts} send attempts`);
    } finally {
        if (listener) await listener.stop();
        await sp.close();
        await lp.close();
    }
});
