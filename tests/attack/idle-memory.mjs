// tests/attack/idle-memory.mjs - what a connection costs before and after it
// authenticates, against a chatd of its own (35-attack.sh starts it with
// max_connections_per_member = 0, so that one member may hold them all):
// - N idle subscribed STOMP sessions cost at most 3 KiB of the daemon's RSS
//   each (VmRSS from /proc, counted from a warm-up set that stays open, so
//   that the one-off costs of the first session are not spread over them);
// - before CONNECT succeeds a frame over max_frame_preauth gets an ERROR and
//   the connection is closed, whether it comes in one WebSocket message or
//   in many; after CONNECT a frame larger than that is accepted.
// Env (from 35-attack.sh): CHATD_URL, CHATD_PID, CHATD_IDLE_N (connections),
// CHATD_IDLE_PREAUTH (the max_frame_preauth it configured, bytes).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { HOST, makeMember, rawConnected, rawStomp, roomOf, rssKiB } from './lib.mjs';

const N = Number(process.env.CHATD_IDLE_N);
const PREAUTH = Number(process.env.CHATD_IDLE_PREAUTH);
const WARM = 100;
const BOUND = 3072; /* bytes of RSS per idle subscribed connection */
if (!(N > 0) || !(PREAUTH > 0)) throw new Error('CHATD_IDLE_N and CHATD_IDLE_PREAUTH are set by 35-attack.sh');

const open = [];
after(() => {
    for (const c of open) c.close();
});

let a, b;
test('members', async () => {
    a = await makeMember('idle');
    b = await makeMember('idle');
});

/* `count` sessions of a, each subscribed to its room (RECEIPT waited for),
 * opened `conc` at a time */
async function subscribed(count, conc = 50) {
    const dest = `/sub/chat/room/${roomOf(a, b)}`;
    let next = 0;
    const worker = async () => {
        while (next < count) {
            next++;
            const c = await rawConnected(a);
            open.push(c);
            const receipt = `r-${open.length}`;
            c.frame('SUBSCRIBE', { id: 'sub-0', destination: dest, receipt });
            const r = await c.nextFrame('RECEIPT', 30000);
            assert.equal(r.headers['receipt-id'], receipt);
        }
    };
    await Promise.all(Array.from({ length: conc }, worker));
}

test(`${N} idle subscribed connections cost at most ${BOUND} bytes of RSS each`, { timeout: 300000 }, async () => {
    await subscribed(WARM);
    const before = rssKiB();
    await subscribed(N);
    const afterKiB = rssKiB();
    const each = ((afterKiB - before) * 1024) / N;
    console.log(`# RSS ${before} KiB with ${WARM} open, ${afterKiB} KiB with ${WARM + N}: ${each.toFixed(0)} B per connection`);
    assert.ok(each <= BOUND, `${each.toFixed(0)} B of RSS per idle subscribed connection (bound ${BOUND})`);
    assert.ok(open.every((c) => !c.frames.some((f) => f.command === 'ERROR')), 'no session got an ERROR');
    for (const c of open.splice(0)) c.close();
});

/* the ERROR, then the close: [error frame, close code] */
async function refused(c) {
    const err = await c.nextFrame('ERROR', 10000);
    const closed = await c.closed;
    return [err, closed.code];
}

test('before CONNECT, a frame over max_frame_preauth in one message: ERROR, close 1009', async () => {
    const c = await rawStomp();
    open.push(c);
    c.send(`CONNECT\naccept-version:1.2\nhost:${HOST}\nx-pad:${'a'.repeat(PREAUTH)}\n\n\0`);
    const [err, code] = await refused(c);
    assert.match(err.headers.message, /frame too large.*max_frame_preauth/);
    assert.equal(code, 1009);
});

test('before CONNECT, a frame over max_frame_preauth in many messages: ERROR and close', async () => {
    const c = await rawStomp();
    open.push(c);
    c.send(`CONNECT\naccept-version:1.2\nhost:${HOST}\n\n`);
    const part = 'b'.repeat(1000);
    let isClosed = false;
    c.closed.then(() => {
        isClosed = true;
    });
    /* a body with no NUL: the server must stop it at the pre-auth limit */
    for (let sent = 0; !isClosed && sent <= 4 * PREAUTH; sent += part.length) {
        c.send(part);
        await new Promise((r) => setImmediate(r));
    }
    const [err, code] = await refused(c);
    assert.match(err.headers.message, /too large/);
    assert.ok([1002, 1009].includes(code), `closed with ${code}`);
});

test('after CONNECT, a frame larger than max_frame_preauth is accepted', async () => {
    const c = await rawConnected(a);
    open.push(c);
    const pad = 'c'.repeat(Math.ceil(PREAUTH / 2) + 100);
    c.frame('SUBSCRIBE', {
        id: 'big',
        destination: `/sub/chat/room/${roomOf(a, b)}`,
        receipt: 'big-1',
        'x-pad-1': pad,
        'x-pad-2': pad,
    });
    const r = await c.nextFrame('RECEIPT', 10000);
    assert.equal(r.headers['receipt-id'], 'big-1');
    assert.ok(!c.frames.some((f) => f.command === 'ERROR'), 'no ERROR');
});
