// tests/delivery/chaos-lib.mjs - the two clients of the chaos tests
// (tests/delivery/chaos.test.mjs on one node, tests/plugins/queue-kafka/chaos.mjs
// on three), each talking through a CuttingProxy (./proxy.mjs):
//   listen(): a listener that subscribes to its destinations again after
//     every cut, each resuming after the last cursor it received there;
//   sendEach(): a sender that sends messages one at a time, each with its
//     idempotency key, and retries it (same key) on a new connection until a
//     RECEIPT names it.
// Real @stomp/stompjs over ws.

import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';

const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

/* One STOMP session through the proxy; resolves with the client when
 * CONNECTED, or null if the connection was cut first. onClose is called
 * once when it ends; onError with each ERROR frame. */
export function stompVia(proxy, member, onClose, onError = () => {}) {
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
        client.onStompError = (f) => onError(f);
        client.activate();
    });
}

/* one session through proxy, retried until CONNECTED: {c, gone}; gone
 * resolves when it is cut. onAttempt is called before each try. */
async function session(proxy, member, onError, onAttempt = () => {}) {
    for (;;) {
        onAttempt();
        let closed;
        const gone = new Promise((r) => (closed = r));
        const c = await stompVia(proxy, member, closed, onError);
        if (c) return { c, gone, target: proxy.lastTarget };
        await gone;
    }
}

/* listen(proxy, member, subs): subs is a list of {dest, cursor, got}: cursor
 * null subscribes with a receipt (the first time), a cursor resumes after
 * it. Every MESSAGE is pushed to its sub's got (parsed body) and its cursor
 * kept; s.seams lists [where in got, proxy target] of each session. Returns {ready,
 * stop, sessions, errors}: ready resolves once every
 * sub without a cursor had its RECEIPT; stop() ends the loop. */
export function listen(proxy, member, subs) {
    const st = { sessions: 0, errors: [], stopped: false };
    let readyNow;
    const ready = new Promise((r) => (readyNow = r));
    const firsts = new Set(subs.filter((s) => !s.cursor));
    if (firsts.size === 0) readyNow();
    let current = null;
    const loop = (async () => {
        while (!st.stopped) {
            const { c, gone, target } = await session(proxy, member, (f) => st.errors.push(f.headers.message || 'ERROR'));
            if (st.stopped) {
                c.deactivate().catch(() => {});
                break;
            }
            current = c;
            st.sessions++;
            for (const s of subs) (s.seams ||= []).push([s.got.length, target]); // where each session began, on which target
            try {
                subs.forEach((s, k) => {
                    const headers = s.cursor ? { 'resume-after': s.cursor } : { receipt: `first-${k}-${st.sessions}` };
                    if (!s.cursor) {
                        c.watchForReceipt(headers.receipt, () => {
                            firsts.delete(s);
                            if (firsts.size === 0) readyNow();
                        });
                    }
                    c.subscribe(s.dest, (f) => {
                        const m = JSON.parse(f.body);
                        s.got.push(m);
                        // the cursor of each message, kept beside it (not a body field)
                        Object.defineProperty(m, 'cursor', { value: f.headers.cursor, enumerable: false });
                        if (f.headers.cursor) s.cursor = f.headers.cursor;
                        else st.errors.push(`a MESSAGE on ${s.dest} without a cursor header`);
                    }, headers);
                });
            } catch {
                // cut between CONNECTED and SUBSCRIBE: the next session resumes
            }
            await gone;
            current = null;
        }
    })();
    return {
        ready,
        errors: st.errors,
        sessions: () => st.sessions,
        stop: async () => {
            st.stopped = true;
            if (current) current.deactivate().catch(() => {});
            await loop;
        },
    };
}

/* sendEach(proxy, member, items, opts): items is a list of {roomId, text,
 * key}; each is sent alone, with its key, and sent again (same key) on a new
 * connection until a RECEIPT with a message-id answers it. Resolves with
 * {ids, attempts, errors}: ids[i] is the message-id of items[i]'s RECEIPT.
 * opts.paceMs: pause after each RECEIPT; opts.onReceipt(i, id, target): the
 * proxy target whose node sent that RECEIPT; opts.beforeEach(i): awaited
 * before item i; opts.maxTries: per item, then it throws. */
export async function sendEach(proxy, member, items, opts = {}) {
    const { paceMs = 0, onReceipt = () => {}, beforeEach = async () => {}, maxTries = 500 } = opts;
    const ids = [];
    const errors = [];
    let attempts = 0;
    let s = null;
    const onError = (f) => errors.push(f.headers.message || 'ERROR');
    for (let i = 0; i < items.length; i++) {
        await beforeEach(i);
        const { roomId, text, key } = items[i];
        for (let tries = 1; ; tries++) {
            if (tries > maxTries) throw new Error(`message ${i} (${text}) was not receipted after ${maxTries} tries (ERRORs: ${errors.slice(-5).join('; ')})`);
            if (!s) s = await session(proxy, member, onError, () => attempts++);
            const { c, gone, target } = s;
            const receipt = `r${i}-${tries}`;
            let named;
            const answered = new Promise((resolve) => (named = resolve));
            try {
                c.watchForReceipt(receipt, (f) => named(f.headers['message-id'] || 'no message-id header'));
                c.publish({
                    destination: '/pub/chat/message',
                    body: JSON.stringify({ roomId, message: text }),
                    headers: { 'content-type': 'application/json', receipt, 'idempotency-key': key },
                });
            } catch {
                s = null; // cut before the frame could go
                await gone;
                continue;
            }
            const id = await Promise.race([answered, gone.then(() => null)]);
            if (id) {
                ids.push(id);
                onReceipt(i, id, target);
                if (paceMs) await new Promise((r) => setTimeout(r, paceMs));
                break;
            }
            s = null; // cut: retry the same key on a new connection
        }
    }
    if (s) s.c.deactivate().catch(() => {});
    return { ids, attempts, errors };
}
