// tests/delivery/chaos.test.mjs - the chaos test (docs/delivery.md): a
// sender and a listener, each behind a TCP proxy of the test's own that cuts
// their connections at random every 100-400 ms. The sender sends 1,000
// messages with idempotency keys, one at a time, retrying each (same key)
// until it is receipted; the listener resumes after its last cursor after
// every cut. At the end the listener has exactly the 1,000, in send order,
// each once, and the store holds each once (REST history, not proxied).
//
// Real @stomp/stompjs over ws, against the chatd of CHATD_URL (or the
// comma-separated base URLs of CHATD_CHAOS_TARGETS, one per node).

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';
import { makeMember, roomOf, http, uid, PROTOCOLS } from '../e2e/lib.mjs';
import { CuttingProxy } from './proxy.mjs';

const N = Number(process.env.CHATD_CHAOS_MESSAGES || 1000);
const PACE_MS = 3; // between messages, so that a run spans many cuts
const targets = (process.env.CHATD_CHAOS_TARGETS || process.env.CHATD_URL).split(',').map((u) => {
    const x = new URL(u);
    return { host: x.hostname, port: Number(x.port) };
});

/* One STOMP session through the proxy; resolves when CONNECTED, or null if
 * the connection was cut first. onClose is called once when it ends. */
function connect(proxy, member, onClose) {
    return new Promise((resolve) => {
        let done = false;
        const client = new Client({
            webSocketFactory: () => {
                const ws = new WebSocket(proxy.url.replace(/^http/, 'ws') + '/ws', PROTOCOLS);
                ws.on('error', () => {});
                return ws;
            },
            connectHeaders: { login: member.loginId, passcode: member.token },
            reconnectDelay: 0,
            heartbeatIncoming: 0,
            heartbeatOutgoing: 0,
            debug: () => {},
        });
        const end = () => {
            if (done) return;
            done = true;
            client.deactivate().catch(() => {});
            onClose();
        };
        client.onConnect = () => resolve(client);
        client.onWebSocketClose = () => {
            resolve(null);
            end();
        };
        client.onStompError = () => {};
        client.activate();
    });
}

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
    const got = []; // the listener's messages, in arrival order
    let cursor = null;
    let sessions = 0, attempts = 0;
    let stop = false;
    let listening = null;

    try {
        // listener: (re)subscribe after every cut, resuming after its last cursor
        let firstSub;
        const subscribed = new Promise((r) => (firstSub = r));
        const listen = async () => {
            while (!stop) {
                let closed;
                const gone = new Promise((r) => (closed = r));
                const c = await connect(lp, b, closed);
                if (!c) {
                    await gone;
                    continue;
                }
                sessions++;
                const headers = cursor ? { 'resume-after': cursor } : { receipt: 'first' };
                try {
                    if (!cursor) c.watchForReceipt('first', () => firstSub());
                    c.subscribe(dest, (f) => {
                        got.push(JSON.parse(f.body));
                        cursor = f.headers.cursor;
                    }, headers);
                } catch {
                    // cut between CONNECTED and SUBSCRIBE: the next session resumes
                }
                await gone;
            }
        };
        listening = listen();
        await subscribed;

        // sender: one message at a time, same key until a RECEIPT names it
        const ids = [];
        const newSession = async () => {
            for (;;) {
                attempts++;
                let closed;
                const gone = new Promise((r) => (closed = r));
                const c = await connect(sp, a, closed);
                if (!c) {
                    await gone;
                    continue;
                }
                // keep this session for as many messages as it survives
                return { c, gone };
            }
        };
        let session = null;
        for (let i = 0; i <= N; i++) {
            const text = i < N ? texts[i] : marker;
            const key = `${run}-${i}`;
            for (;;) {
                if (!session) session = await newSession();
                const { c, gone } = session;
                const receipt = `r${i}-${attempts}`;
                let named;
                const got1 = new Promise((resolve) => (named = resolve));
                try {
                    c.watchForReceipt(receipt, (f) => named(f.headers['message-id']));
                    c.publish({
                        destination: '/pub/chat/message',
                        body: JSON.stringify({ roomId: room, message: text }),
                        headers: { 'content-type': 'application/json', receipt, 'idempotency-key': key },
                    });
                } catch {
                    session = null; // cut before the frame could go
                    await gone;
                    continue;
                }
                const id = await Promise.race([got1, gone.then(() => null)]);
                if (id) {
                    ids.push(id);
                    await new Promise((r) => setTimeout(r, PACE_MS));
                    break;
                }
                session = null; // cut: retry the same key on a new connection
                attempts++;
            }
        }
        // the listener has everything once it has the marker
        const deadline = Date.now() + 60000;
        while (!got.some((m) => m.message === marker)) {
            assert.ok(Date.now() < deadline, `the listener never got the marker (has ${got.length})`);
            await new Promise((r) => setTimeout(r, 20));
        }
        stop = true;
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
        console.log(`# chaos: ${sp.cuts} sender cuts, ${lp.cuts} listener cuts, ${sessions} listener sessions, ${attempts} send attempts`);
    } finally {
        stop = true;
        await sp.close();
        await lp.close();
        await listening;
    }
});
