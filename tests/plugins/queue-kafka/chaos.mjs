// tests/plugins/queue-kafka/chaos.mjs - the chaos test of docs/delivery.md on
// three Kafka nodes sharing one PostgreSQL (fsync on), their clocks set
// seconds apart (libfaketime, set by the suite's node scripts):
//   - a sender and a listener, each behind a CuttingProxy of the test's own
//     (tests/delivery/proxy.mjs) that cuts their connections at random every
//     150-600 ms, every reconnect going to the next node (round robin);
//   - the sender sends KAFKA_CHAOS_MESSAGES (1,000) messages one at a time
//     with idempotency keys, retrying each until receipted; the listener
//     subscribes to the room and to its side destination and resumes both
//     after every cut (tests/delivery/chaos-lib.mjs);
//   - the node persisting the room's partition (the one whose
//     chatd_kafka_persisted_total rose most over the 50 messages before) is
//     killed with SIGKILL at 30% of the messages and started again
//     (reconnects skip it while it is down), back before 70%: the other
//     nodes hold the partition's fan-out until the group gave it to one of
//     them and that one committed.
// After a final marker arrived on both destinations: each destination has
// exactly the messages, in send order, each once, with the ids the RECEIPTs
// named; the messages table holds each once; the REST history (paged forward
// with after=, and backward with before=, on other nodes) is the send order.
// Every node really had its skew (HTTP Date), served connections, and stops
// with exit 0 on SIGTERM.
//
// The test starts and stops the nodes itself:
//   KAFKA_CHAOS_NODES    the three base URLs
//   KAFKA_CHAOS_SCRIPTS  a shell script per node that execs its chatd
//   KAFKA_CHAOS_SKEW     each node's clock offset in seconds ("0 -3 4")
//   KAFKA_CHAOS_PIDDIR   where node I's pid is kept, as chaosI.pid
//   KAFKA_PG             conninfo of the shared database
//   KAFKA_CHAOS_METRICS  each node's metrics URL
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { makeMember, roomOf, http, sql, check, until, waitHealthy, uid } from './kclient.mjs';
import { CuttingProxy } from '../../delivery/proxy.mjs';
import { listen, sendEach } from '../../delivery/chaos-lib.mjs';

const N = Number(process.env.KAFKA_CHAOS_MESSAGES || 1000);
let VICTIM = 1; // the node killed and restarted: the room's persisting node, found at the kill
const words = (v) => (v || '').split(/\s+/).filter(Boolean);
const urls = words(process.env.KAFKA_CHAOS_NODES);
const scripts = words(process.env.KAFKA_CHAOS_SCRIPTS);
const skews = words(process.env.KAFKA_CHAOS_SKEW || '0 0 0').map(Number);
const pidDir = process.env.KAFKA_CHAOS_PIDDIR || '.';
const metricsUrls = words(process.env.KAFKA_CHAOS_METRICS);
if (urls.length !== 3 || scripts.length !== 3 || skews.length !== 3 || metricsUrls.length !== 3) {
    throw new Error('KAFKA_CHAOS_NODES, KAFKA_CHAOS_SCRIPTS, KAFKA_CHAOS_SKEW and KAFKA_CHAOS_METRICS must name three nodes each');
}

/* chatd_kafka_persisted_total of each node: the topic carries only the
 * test's room, so the node persisting its partition is the one it rises on */
async function persistedCounts() {
    return Promise.all(metricsUrls.map(async (u) => {
        const text = await (await fetch(u)).text();
        return text.split('\n').filter((l) => l.startsWith('chatd_kafka_persisted_total{') || l.startsWith('chatd_kafka_persisted_total '))
            .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    }));
}
const failures = [];
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

class Node {
    constructor(i) {
        this.i = i;
        this.url = urls[i];
        this.proc = null;
    }

    async start() {
        const p = spawn('bash', [scripts[this.i]], { stdio: 'ignore' });
        this.proc = p;
        this.exited = new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
        fs.writeFileSync(path.join(pidDir, `chaos${this.i + 1}.pid`), `${p.pid}\n`);
        await Promise.race([
            waitHealthy(this.url, 60000),
            this.exited.then((e) => { throw new Error(`node ${this.i + 1} exited during start-up: ${JSON.stringify(e)}`); }),
        ]);
    }

    async kill9() {
        this.proc.kill('SIGKILL');
        await this.exited;
        this.proc = null;
    }

    /* SIGTERM; the exit code, or null after 30 s (then killed) */
    async stop() {
        if (!this.proc) return 0;
        const p = this.proc;
        p.kill('SIGTERM');
        const timer = setTimeout(() => p.kill('SIGKILL'), 30000);
        const { code, signal } = await this.exited;
        clearTimeout(timer);
        this.proc = null;
        return signal ? null : code;
    }

    /* the node's clock minus ours, in ms, from the HTTP Date header (whole
     * seconds: it reads up to 1 s low) */
    async offset() {
        const before = Date.now();
        const r = await fetch(this.url + '/healthz');
        await r.arrayBuffer();
        return Date.parse(r.headers.get('date')) - (before + Date.now()) / 2;
    }
}

function checkClock(node, off, when) {
    const want = skews[node.i] * 1000;
    check(off >= want - 1700 && off <= want + 700,
        `node ${node.i + 1} ${when}: its clock is ${Math.round(off)} ms off ours, want ${want} ms (libfaketime)`, failures);
}

/* the whole history of room through node, paged forward from cursor (after
 * it) or, with cursor null, backward from the newest with before= */
async function history(node, member, room, cursor) {
    const all = [];
    const base = `/api/rooms/${encodeURIComponent(room)}/messages?limit=100`;
    if (cursor) {
        for (let after = cursor; after;) {
            const r = await http(node.url, 'GET', `${base}&after=${encodeURIComponent(after)}`, undefined, member.token);
            if (r.status !== 200) throw new Error(`history after ${after} on node ${node.i + 1}: ${r.status} ${r.text}`);
            all.push(...r.json.messages);
            after = r.json.next;
        }
        return all;
    }
    const pages = [];
    for (let before = ''; ;) {
        const r = await http(node.url, 'GET', `${base}${before ? `&before=${before}` : ''}`, undefined, member.token);
        if (r.status !== 200) throw new Error(`history before ${before} on node ${node.i + 1}: ${r.status} ${r.text}`);
        pages.push(r.json.messages);
        if (!r.json.next) break;
        before = r.json.next;
    }
    // each page is oldest first; the pages come newest first
    for (const p of pages.reverse()) all.push(...p);
    return all;
}

/* where a sequence of texts first departs from want: a short description */
function diff(got, want) {
    const n = Math.min(got.length, want.length);
    let k = 0;
    while (k < n && got[k] === want[k]) k++;
    if (k === n && got.length === want.length) return 'equal';
    const seen = new Map();
    for (const t of got) seen.set(t, (seen.get(t) || 0) + 1);
    const dups = [...seen].filter(([, c]) => c > 1).length;
    const missing = want.filter((t) => !seen.has(t)).length;
    return `${got.length} of ${want.length}, first difference at ${k} (got ${got[k]}, want ${want[k]}), ` +
        `${dups} duplicated, ${missing} missing`;
}

const nodes = [0, 1, 2].map((i) => new Node(i));
const targets = urls.map((u) => ({ host: new URL(u).hostname, port: Number(new URL(u).port) }));
let sp = null, lp = null, listener = null;
let victimDown = false;
const counts = { killedAt: -1, backAt: -1 };
try {
    // node 1 creates the schema before the others connect
    await nodes[0].start();
    await Promise.all([nodes[1].start(), nodes[2].start()]);
    for (const n of nodes) checkClock(n, await n.offset(), 'at start');
    // what the store commits is durable: the checks below count on it
    for (const k of ['fsync', 'synchronous_commit']) {
        const v = sql(`SHOW ${k}`)[0][0];
        check(v === 'on', `PostgreSQL ${k} is ${v}, not on`, failures);
    }
    console.log(`chaos: three nodes up (${elapsed()}), clocks ${skews.map((s) => `${s >= 0 ? '+' : ''}${s} s`).join(', ')}`);

    const a = await makeMember(urls[0], 'c3a');
    const b = await makeMember(urls[0], 'c3b');
    const room = roomOf(a, b);
    const subs = [
        { dest: `/sub/chat/room/${room}`, cursor: null, got: [] },
        { dest: `/sub/chat/side/${b.id}`, cursor: null, got: [] },
    ];
    // the listener's first cursors: subscribed on node 1 without cuts, it
    // gets a start message on both destinations
    const direct = listen({ url: urls[0], lastTarget: 0 }, b, subs);
    await direct.ready;
    const start = await http(urls[0], 'POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { message: 'start' }, a.token);
    if (start.status !== 201) throw new Error(`the start message: ${start.status} ${start.text}`);
    await until(() => subs.every((s) => s.got.some((m) => m.message === 'start')), 30000, 'the start message on both destinations');
    await direct.stop();
    check(direct.errors.length === 0, `ERRORs to the first listener session: ${direct.errors}`, failures);

    sp = await CuttingProxy.start(targets, { minMs: 150, maxMs: 600 });
    lp = await CuttingProxy.start(targets, { minMs: 150, maxMs: 600 });
    listener = listen(lp, b, subs);

    // the victim is killed when message 30% is due, and is back before 70%
    const killAt = Math.floor(N * 0.3), backBy = Math.floor(N * 0.7);
    let restarted = null;
    let victim = null, persistedBefore = null;
    const servedAtRestart = { s: 0, l: 0 };
    const beforeEach = async (i) => {
        if (i === killAt - 50) persistedBefore = await persistedCounts();
        if (i === killAt) {
            const rose = (await persistedCounts()).map((n, k) => n - persistedBefore[k]);
            VICTIM = rose.indexOf(Math.max(...rose));
            // one node persists the room's partition: the others persisted nothing meanwhile
            check(rose[VICTIM] >= 50 && rose.filter((n) => n > 0).length === 1,
                `the room's persisting node: chatd_kafka_persisted_total rose by ${rose} over 50 messages`, failures);
            victim = nodes[VICTIM];
            targets[VICTIM].down = true;
            await victim.kill9();
            victimDown = true;
            counts.killedAt = i;
            console.log(`chaos: node ${VICTIM + 1} killed with SIGKILL at message ${i} (${elapsed()})`);
            restarted = victim.start().then(async () => {
                victimDown = false;
                checkClock(victim, await victim.offset(), 'after its restart');
                servedAtRestart.s = sp.served[VICTIM];
                servedAtRestart.l = lp.served[VICTIM];
                targets[VICTIM].down = false;
                console.log(`chaos: node ${VICTIM + 1} restarted (${elapsed()})`);
            });
        }
        if (i === backBy || (i === N && restarted)) {
            await restarted;
            if (counts.backAt < 0) counts.backAt = i;
        }
    };
    const run = crypto.randomUUID();
    const texts = Array.from({ length: N }, (_, i) => `c3-${i}`);
    const marker = uid('end-');
    const items = [...texts, marker].map((text, i) => ({ roomId: room, text, key: `${run}-${i}` }));
    const sent = await sendEach(sp, a, items, { paceMs: 2, beforeEach });
    console.log(`chaos: ${N + 1} messages receipted (${elapsed()}), ${sent.attempts} connections, ` +
        `ERRORs to the sender: ${sent.errors.length}${sent.errors.length ? ` (${[...new Set(sent.errors)].join('; ')})` : ''}`);

    // the listener has everything once the marker came on both destinations
    try {
        await until(() => subs.every((s) => s.got.some((m) => m.message === marker)), 60000, 'the marker on both destinations');
    } catch (e) {
        check(false, `${e.message} (room ${subs[0].got.length}, side ${subs[1].got.length} messages)`, failures);
    }
    await listener.stop();
    const lsessions = listener.sessions();
    check(listener.errors.length === 0, `ERRORs to the listener: ${[...new Set(listener.errors)].join('; ')}`, failures);

    for (const s of subs) {
        const k0 = s.got.findIndex((m) => m.message === 'start');
        let k1 = s.got.findIndex((m) => m.message === marker);
        if (k1 < 0) k1 = s.got.length;
        const mine = s.got.slice(k0 + 1, k1);
        const d = diff(mine.map((m) => m.message), texts);
        // where the stream skipped or went back: at a resume, or live
        const starts = new Set(s.seams.map(([k]) => k));
        let atResume = 0, live = 0;
        for (let k = k0 + 2; k < k1; k++) {
            const [p, q] = [s.got[k - 1].message, s.got[k].message].map((t) => Number(t.slice(3)));
            if (q !== p + 1) (starts.has(k) ? atResume++ : live++);
        }
        check(d === 'equal', `${s.dest}: the listener's messages are not the ${N} in send order, each once: ${d}; ` +
            `the stream jumped ${atResume} times at a resume and ${live} times within a session`, failures);
        check(k0 === 0 && s.got.slice(0, k1).every((m) => m.roomId === room),
            `${s.dest}: something else came before the marker`, failures);
        if (d === 'equal') {
            check(JSON.stringify(mine.map((m) => m.id)) === JSON.stringify(sent.ids.slice(0, N)),
                `${s.dest}: the RECEIPTs named other message ids than the listener got`, failures);
        }
        check(s.got.filter((m) => m.message === marker).length === 1, `${s.dest}: the marker came ${s.got.filter((m) => m.message === marker).length} times`, failures);
    }

    if (process.env.KAFKA_CHAOS_DUMP) {
        fs.writeFileSync(process.env.KAFKA_CHAOS_DUMP, JSON.stringify({ start: start.json, ids: sent.ids,
            subs: subs.map((s) => ({ dest: s.dest, seams: s.seams, got: s.got.map((m) => [m.message, m.id, m.cursor]) })) }, null, 1));
    }
    // the store: each message exactly once, once the partition's owner
    // persisted them all (a RECEIPT on a node that does not persist the
    // room's partition follows the broker's acknowledgement)
    const want = ['start', ...texts, marker];
    const storedNow = () => new Map(sql(`SELECT message, count(*) FROM messages WHERE room_id = '${room}' GROUP BY message`)
        .map(([m, c]) => [m, Number(c)]));
    try {
        await until(() => storedNow().size >= want.length, 60000, 'every message in the messages table');
    } catch (e) {
        check(false, e.message, failures);
    }
    const stored = storedNow();
    const twice = want.filter((t) => (stored.get(t) || 0) > 1).length;
    const missing = want.filter((t) => !stored.has(t)).length;
    check(twice === 0 && missing === 0 && stored.size === want.length,
        `messages table: ${missing} missing, ${twice} stored more than once, ${stored.size - want.length + missing} others (of ${want.length})`, failures);
    const keys = Number(sql(`SELECT count(*) FROM idempotency WHERE member_id = ${a.id}`)[0][0]);
    check(keys === N + 1, `idempotency table: ${keys} keys of the sender, want ${N + 1}`, failures);

    // history order is send order, paged forward on node 3 (after the room
    // cursor of the start message) and backward on node 2
    const fwd = await history(nodes[2], a, room, subs[0].got[0].cursor);
    const df = diff(fwd.map((m) => m.message), [...texts, marker]);
    check(df === 'equal', `REST history after= (node 3) is not the send order: ${df}`, failures);
    const bwd = await history(nodes[1], b, room, null);
    const db = diff(bwd.map((m) => m.message), want);
    check(db === 'equal', `REST history before= (node 2) is not the send order: ${db}`, failures);

    // the chaos really happened
    check(sp.cuts >= 20 && lp.cuts >= 20, `connections were cut (sender ${sp.cuts}, listener ${lp.cuts})`, failures);
    for (const [who, p] of [['sender', sp], ['listener', lp]]) {
        check(p.served.every((n) => n >= 5), `the ${who}'s connections went to every node: ${p.served}`, failures);
    }
    check(counts.killedAt === killAt && counts.backAt >= 0 && counts.backAt <= backBy,
        `node ${VICTIM + 1} killed at message ${counts.killedAt}, back by message ${counts.backAt} (want ${killAt}, by ${backBy})`, failures);
    check(sp.served[VICTIM] > servedAtRestart.s && lp.served[VICTIM] > servedAtRestart.l,
        `the restarted node ${VICTIM + 1} served the sender and the listener again`, failures);
    console.log(`chaos: ${sp.cuts} sender cuts, ${lp.cuts} listener cuts, ${lsessions} listener sessions; ` +
        `connections per node: sender ${sp.served}, listener ${lp.served} (${elapsed()})`);

    // every node stops cleanly
    const codes = await Promise.all(nodes.map((n) => n.stop()));
    codes.forEach((code, i) => check(code === 0, `node ${i + 1} exited ${code} on SIGTERM`, failures));
} catch (e) {
    check(false, `chaos: ${e.stack || e}`, failures);
} finally {
    if (listener) await listener.stop();
    if (sp) await sp.close();
    if (lp) await lp.close();
    for (const n of nodes) if (n.proc) await n.kill9();
}
if (victimDown) console.log('chaos: the victim was still down at the end');
if (failures.length) {
    console.error(`chaos: ${failures.length} failures (${elapsed()})`);
    process.exit(1);
}
console.log(`chaos: ok (${N} messages through three nodes with clocks ${skews.join('/')} s apart, one killed and restarted; ${elapsed()})`);
process.exit(0);
