// tests/attack/paused.test.mjs - heart-beats that arrive while the server has
// stopped reading a connection count as life. The store is made busy for
// real: another process holds SQLite's write lock (store.busy_timeout_ms is
// long in 35-attack.sh, so the writer waits), no SEND is persisted, the
// publishes in flight reach the transport's bound (256) and reading pauses.
// A member that keeps its heart-beat promise (1 s, so 3 s of silence would
// end it) stays connected through a stall of STALL_MS, longer than that,
// and every message arrives once the lock is gone. A peer that made the same
// promise and then went silent loses its session while reading is paused:
// bytes it sent long ago that still wait unread are not life, only bytes
// that arrived since the last look. (Its ERROR waits for the RECEIPTs of the
// publishes it has in flight, so it comes after the unlock, and the SENDs
// not yet taken when its session ended are never taken.)

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { makeMember, roomOf, stomp, collectSynced, settle, rawStomp, uid, HOST, sleep } from './lib.mjs';

const DB = process.env.CHATD_ATTACK_DB;
const STALL_MS = 10000;
const SENDS = 300; /* more than the 256 publishes a connection may have in flight */
const HB_MS = 1000; /* the clients' promise: silence ends them after 2 x 1 s + 1 s */

let locker = null;
after(() => locker?.kill('SIGKILL'));

/* Hold SQLite's write lock on DB from another process until release(). */
async function lockStore() {
    const code = 'import sqlite3, sys\n' +
        'c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n' +
        'c.execute("BEGIN IMMEDIATE")\n' +
        'print("locked", flush=True)\n' +
        'sys.stdin.readline()\n' +
        'c.execute("COMMIT")\n';
    locker = spawn('python3', ['-c', code, DB], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('the store lock was not taken within 30 s')), 30000);
        locker.stdout.on('data', (d) => {
            if (String(d).includes('locked')) {
                clearTimeout(t);
                resolve();
            }
        });
        locker.on('exit', (rc) => reject(new Error(`the lock holder exited with ${rc}`)));
    });
    return async () => {
        const gone = new Promise((resolve) => locker.on('exit', resolve));
        locker.stdin.end('\n');
        await gone;
        locker = null;
    };
}

/* SEND with a receipt; resolves when it comes (no deadline of its own) */
function send(client, roomId, message, receipts) {
    return new Promise((resolve) => {
        const receipt = uid('r-');
        client.watchForReceipt(receipt, () => {
            receipts.push(Date.now());
            resolve();
        });
        client.publish({
            destination: '/pub/chat/message',
            body: JSON.stringify({ roomId, message }),
            headers: { 'content-type': 'application/json', receipt },
        });
    });
}

test('heart-beats that arrive while reading is paused (busy store) count as life; silence does not', async () => {
    assert.ok(DB, 'CHATD_ATTACK_DB (35-attack.sh)');
    const a = await makeMember('paused');
    const b = await makeMember('paused');
    const q = await makeMember('silent');
    const room = roomOf(a, b);
    const ca = await stomp(a, { heartbeatOutgoing: HB_MS, heartbeatIncoming: 0 });
    const cb = await stomp(b, { heartbeatOutgoing: HB_MS, heartbeatIncoming: HB_MS });
    const box = await collectSynced(cb, `/sub/chat/room/${room}`);
    let closedA = null;
    ca.onWebSocketClose = (ev) => {
        closedA = ev.code;
    };

    const silent = await rawStomp();
    silent.frame('CONNECT', { 'accept-version': '1.2', host: HOST, login: q.loginId, passcode: q.token, 'heart-beat': `${HB_MS},0` });
    await silent.nextFrame('CONNECTED');

    const release = await lockStore();
    let released = false;
    try {
        const t0 = Date.now();
        const receipts = [];
        const sent = [];
        const all = [];
        for (let i = 0; i < SENDS; i++) {
            sent.push(`paused ${i}`);
            all.push(send(ca, room, `paused ${i}`, receipts));
        }
        const qroom = roomOf(q, b);
        for (let i = 0; i < SENDS; i++)
            silent.frame('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: `q${i}` },
                JSON.stringify({ roomId: qroom, message: `silent ${i}` }));

        await sleep(STALL_MS);
        assert.equal(receipts.length, 0, 'nothing was persisted while the store was locked');
        assert.deepEqual(silent.frames.map((f) => f.command), ['CONNECTED'], 'nor answered to the silent peer');
        assert.ok(Date.now() - t0 >= 2 * (2 * HB_MS + 1000), 'the stall outlasted the liveness deadline twice');
        assert.equal(closedA, null, 'the member who kept beating is still connected');
        assert.deepEqual(ca.errors, [], 'and got no ERROR');

        await release();
        released = true;
        // the silent one: its session ended during the stall
        const err = await silent.nextFrame('ERROR', 30000);
        assert.match(err.headers.message, /heart-beat/, err.headers.message);
        const before = silent.frames.slice(0, silent.frames.indexOf(err)).filter((f) => f.command === 'RECEIPT').length;
        assert.ok(before > 0 && before < SENDS,
            `the SENDs in flight were answered, the ones not yet taken never (${before} of ${SENDS} RECEIPTs)`);
        let timer;
        await Promise.race([Promise.all(all), new Promise((resolve, reject) => {
            timer = setTimeout(() => reject(new Error(`${receipts.length} of ${SENDS} RECEIPTs within 60 s of the unlock`)), 60000);
        })]).finally(() => clearTimeout(timer));
        assert.equal(receipts.length, SENDS);
        await settle(ca, room, [box], 30000);
        assert.deepEqual(box.messages.map((m) => m.message), sent, 'every message once, in order');
        assert.equal(closedA, null);
        assert.deepEqual(ca.errors, []);
        console.log(`paused: ${SENDS} SENDs held ${STALL_MS} ms, all delivered; the silent peer ended with ${before} RECEIPTs`);
    } finally {
        if (!released) await release();
        silent.close();
        await Promise.all([ca.deactivate(), cb.deactivate()]);
    }
});
