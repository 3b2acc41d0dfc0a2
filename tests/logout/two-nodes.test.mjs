// tests/logout/two-nodes.test.mjs - logout and expiry end live sessions on
// every node (issue 13 item 4), expired sessions are purged (item 3). Two
// chatd nodes share one SQLite store (tests/suites/38-logout.sh): CHATD_URL is
// node B, CHATD_URL_A node A, CHATD_DB the store file.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import WebSocket from 'ws';
import { HOST, PROTOCOLS, makeMember, pageStomp, rawConnected, sleep } from '../e2e/lib.mjs';

const A = (process.env.CHATD_URL_A || '').replace(/\/+$/, '');
const DB = process.env.CHATD_DB;
const BOUND_MS = 2000;

/* a raw STOMP session on node A (lib.mjs's helpers talk to CHATD_URL) */
async function connectA(member) {
    const S = pageStomp();
    const ws = new WebSocket(A.replace(/^http/, 'ws') + '/ws', PROTOCOLS, { origin: A });
    const parser = new S.FrameParser();
    const conn = { frames: [] };
    conn.closed = new Promise((resolve) => ws.on('close', () => resolve(true)));
    ws.on('message', (d) => conn.frames.push(...parser.push(new Uint8Array(d))));
    ws.on('error', () => {});
    await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
    ws.send(S.encodeFrame('CONNECT', {
        'accept-version': '1.2', host: HOST, login: member.loginId, passcode: member.token, 'heart-beat': '0,0',
    }));
    await waitFor(() => conn.frames.some((f) => f.command === 'CONNECTED'), 5000, 'CONNECTED on node A');
    conn.nextFrame = async (command, ms) => {
        await waitFor(() => conn.frames.some((f) => f.command === command), ms, `${command} on node A`);
        return conn.frames.find((f) => f.command === command);
    };
    conn.close = () => ws.terminate();
    return conn;
}

async function waitFor(cond, ms, what) {
    const end = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
        await sleep(20);
    }
}

/* both sessions get ERROR message:session ended and are closed within BOUND_MS of t0 */
async function assertEnded(conns, t0) {
    for (const conn of conns) {
        const err = await conn.nextFrame('ERROR', Math.max(BOUND_MS - (Date.now() - t0), 1));
        assert.equal(err.headers.message, 'session ended');
        const left = Math.max(BOUND_MS - (Date.now() - t0), 0);
        const gone = await Promise.race([conn.closed.then(() => true), sleep(left).then(() => false)]);
        assert.ok(gone, `closed within ${BOUND_MS} ms`);
    }
    assert.ok(Date.now() - t0 <= BOUND_MS, `ended after ${Date.now() - t0} ms`);
}

function sql(query, ...args) {
    const py = 'import sqlite3,sys,json\n' +
        'c=sqlite3.connect(sys.argv[1],timeout=10)\n' +
        'r=c.execute(sys.argv[2],json.loads(sys.argv[3])).fetchall()\n' +
        'c.commit()\nprint(json.dumps(r))';
    return JSON.parse(execFileSync('python3', ['-c', py, DB, query, JSON.stringify(args)]).toString());
}

test('logout on node A ends the sessions of that token on nodes A and B within 2 s', async () => {
    assert.ok(A && DB, 'CHATD_URL_A and CHATD_DB are set');
    const m = await makeMember('bye');
    const conns = [await connectA(m), await rawConnected(m)];
    try {
        const t0 = Date.now();
        const r = await fetch(A + '/api/logout', { method: 'POST', headers: { Authorization: `Bearer ${m.token}` } });
        assert.equal(r.status, 204);
        await assertEnded(conns, t0);
    } finally {
        for (const c of conns) c.close();
    }
});

test('an expired session is ended on both nodes within 2 s, then purged from the store', async () => {
    const m = await makeMember('exp');
    const conns = [await connectA(m), await rawConnected(m)];
    try {
        assert.deepEqual(sql('SELECT count(*) FROM sessions WHERE member_id = ?', m.id), [[1]]);
        const t0 = Date.now();
        // the session's expiry passes now (session_ttl cannot be below 60 s)
        sql('UPDATE sessions SET expires_ms = ? WHERE member_id = ?', t0 - 1, m.id);
        await assertEnded(conns, t0);
        // session_purge_interval is 1 s in this suite
        await waitFor(() => sql('SELECT count(*) FROM sessions WHERE member_id = ?', m.id)[0][0] === 0,
            5000, 'the expired session row deleted');
    } finally {
        for (const c of conns) c.close();
    }
});
