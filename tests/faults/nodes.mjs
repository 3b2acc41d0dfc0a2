// tests/faults/nodes.mjs - node leases and ids across clock steps:
//   1. a second chatd with the same node_id on the same store exits non-zero
//      and names the live holder;
//   2. node_id = auto on a second chatd takes another id (its log says which);
//   3. the first node stopped and restarted with its clock set back an hour
//      (faketime): new message ids are larger than every id before, history
//      keeps sending order, and every receipted message is there exactly once;
//   4. a graceful stop releases the lease: right after node 1's SIGTERM,
//      node_id = auto takes id 1 (the lowest free); a SIGKILLed node's lease
//      is not released: auto takes another id until the killed node's
//      node_lease (LEASE_MS here) ran out, then 1.
// Run by tests/suites/55-faults.sh: node nodes.mjs -- CHATD ARGS... (with
// ws.listen among them; other nodes get their own port).
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { freePort } from '../delivery/daemon.mjs';
import { Daemon, daemonArgv, URL_, connect, publish, makeMember, roomOf, history, report, sleep } from './lib.mjs';

const failures = [];
const argv = daemonArgv();
const log = process.env.FAULTS_LOG;

function otherPort(args, port, extra = []) {
    const a = args.map((x) => x.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${port}`));
    return [...a, ...extra];
}

/* run a second chatd; resolve with {code, out} when it exits, or with {p}
 * (still running) once its output matches `ready` or after ms */
function second(args, ms, ready = null) {
    return new Promise((resolve) => {
        const p = spawn(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        const seen = (d) => {
            out += d;
            if (ready && ready.test(out)) { clearTimeout(timer); resolve({ code: null, out, p }); }
        };
        p.stdout.on('data', seen);
        p.stderr.on('data', seen);
        const timer = setTimeout(() => resolve({ code: null, out, p }), ms);
        p.on('exit', (code) => {
            clearTimeout(timer);
            sanitized(out);
            resolve({ code, out, p: null });
        });
    });
}

/* a sanitizer report in a second node's output (the ASan build) */
function sanitized(out) {
    const m = /ERROR: (Address|Leak)Sanitizer|runtime error:/.exec(out);
    if (m) failures.push(`a second node's output has a sanitizer report: ${out.slice(m.index, m.index + 600)}`);
}

/* node_id = auto on another port: the id it took (it is stopped again with
 * SIGTERM, which must end it with exit 0) */
async function autoId(extra = []) {
    const port = await freePort();
    const r = await second(otherPort(argv, port, ['--set', 'chatd.node_id=auto', ...extra]), 20000,
        /running: node \d+/);
    const id = /running: node (\d+)/.exec(r.out);
    if (!r.p) {
        failures.push(`node_id = auto exited: ${r.out.slice(-400)}`);
        return null;
    }
    const x = await stopped(r.p, 20000);
    if (!x || x.code !== 0) failures.push(`node_id = auto on ${port}: SIGTERM ended it with ${JSON.stringify(x)}`);
    return id ? Number(id[1]) : null;
}

/* SIGTERM p and wait (at most ms) for it to exit; {code, signal}, or null
 * (then it was killed) */
function stopped(p, ms) {
    return new Promise((resolve) => {
        if (p.exitCode !== null || p.signalCode !== null) {
            resolve({ code: p.exitCode, signal: p.signalCode });
            return;
        }
        const timer = setTimeout(() => { p.kill('SIGKILL'); resolve(null); }, ms);
        let out = '';
        p.stdout.on('data', (x) => { out += x; });
        p.stderr.on('data', (x) => { out += x; });
        p.on('exit', (code, signal) => {
            clearTimeout(timer);
            sanitized(out);
            resolve({ code, signal });
        });
        p.kill('SIGTERM');
    });
}

async function send(member, roomId, texts) {
    const c = await connect(URL_, member);
    for (const t of texts) {
        const r = await publish(c, roomId, t, 20000);
        if (r.status !== 'receipt') failures.push(`${t}: ${r.status}`);
    }
    await c.deactivate();
}

const d = new Daemon(argv);
await d.up();
const a = await makeMember(URL_, 'na'), b = await makeMember(URL_, 'nb');
const roomId = roomOf(a, b);
const before = Array.from({ length: 30 }, (_, i) => `before-${i}`);
await send(a, roomId, before);
const h1 = await history(a, roomId);
const maxBefore = h1.reduce((m, x) => (BigInt(x.id) > m ? BigInt(x.id) : m), 0n);

// 1. same node_id: refused, naming the holder
const dup = await second(otherPort(argv, await freePort()), 20000);
if (dup.p) { dup.p.kill('SIGKILL'); failures.push('a second node with the same node_id kept running'); }
else if (dup.code === 0) failures.push('a second node with the same node_id exited 0');
if (!/node_id 1 is held by another live node \(.+ pid \d+ started \d+\)/.test(dup.out))
    failures.push(`the refusal does not name the holder: ${dup.out.slice(-400)}`);

// 2. node_id = auto: another id
const auto = await second(otherPort(argv, await freePort(), ['--set', 'chatd.node_id=auto']), 20000,
    /running: node \d+/);
const m = /running: node (\d+)/.exec(auto.out);
if (!auto.p) failures.push(`node_id = auto exited: ${auto.out.slice(-400)}`);
else {
    // SIGTERM right after its "running" line: a graceful stop (exit 0)
    // within 20 s, never the signal's default action
    const x = await stopped(auto.p, 20000);
    if (!x) failures.push('node_id = auto did not stop within 20 s of SIGTERM (killed)');
    else if (x.code !== 0) failures.push(`node_id = auto: SIGTERM ended it with ${JSON.stringify(x)}, not exit 0`);
}
if (!m || Number(m[1]) === 1) failures.push(`node_id = auto took ${m ? m[1] : 'no id'}, not one other than 1`);

// 3. restart an hour behind
const st = await d.stop('SIGTERM');
if (st.code !== 0) failures.push(`graceful stop exited ${JSON.stringify(st)}`);
// libfaketime preloaded through env(1), which execs: the pid the test signals
// is chatd's own (the faketime(1) wrapper forks and does not pass SIGTERM on)
const fakeLib = ['x86_64-linux-gnu', 'aarch64-linux-gnu', '.']
    .map((d) => `/usr/lib/${d}/faketime/libfaketime.so.1`).find((f) => fs.existsSync(f));
if (!fakeLib) throw new Error('libfaketime.so.1 not found (apt-get install faketime)');
// (under ASan, whose runtime then is not the first library: allowed)
const asan = process.env.ASAN_OPTIONS ? [`ASAN_OPTIONS=${process.env.ASAN_OPTIONS}:verify_asan_link_order=0`] : [];
const back = new Daemon(['env', `LD_PRELOAD=${fakeLib}`, 'FAKETIME=-3600s', ...asan, ...argv]);
await back.up();
const after = Array.from({ length: 30 }, (_, i) => `after-${i}`);
await send(a, roomId, after);
await send(a, roomId, ['final-marker']);
const h2 = await history(a, roomId);
const texts = h2.map((x) => x.message);
const want = [...before, ...after, 'final-marker'];
if (JSON.stringify(texts) !== JSON.stringify(want))
    failures.push(`history after the restart is not the ${want.length} messages in order: ${JSON.stringify(texts)}`);
const newIds = h2.filter((x) => !x.message.startsWith('before-')).map((x) => BigInt(x.id));
const below = newIds.filter((id) => id <= maxBefore).length;
if (newIds.length !== after.length + 1 || below !== 0)
    failures.push(`${below} of ${newIds.length} new ids are not above ${maxBefore}`);
const skew = Number((newIds[0] >> 22n) + 1704067200000n) - Date.now();
const bst = await back.stop('SIGTERM');
if (bst.code !== 0) failures.push(`graceful stop (clock back) exited ${JSON.stringify(bst)}`);
const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
if (!/ids above \d+/.test(text)) failures.push('no lease line in the log');
if ((text.match(/node 1: lease released/g) || []).length !== 2)
    failures.push('the log does not say "node 1: lease released" for both graceful stops of node 1');

// 4. released at a graceful stop, not at a SIGKILL
const LEASE_MS = 12000;
const lease = ['--set', `chatd.node_lease=${LEASE_MS}`];
const n1 = new Daemon([...argv, ...lease]);
await n1.up();
const s1 = await n1.stop('SIGTERM');
if (s1.code !== 0) failures.push(`graceful stop (lease test) exited ${JSON.stringify(s1)}`);
const afterStop = await autoId();
if (afterStop !== 1) failures.push(`after node 1's graceful stop, node_id = auto took ${afterStop}, not the released 1`);
await n1.up();
await n1.stop('SIGKILL');
const killedAt = Date.now();
const afterKill = await autoId();
const within = Date.now() - killedAt < LEASE_MS; // else inconclusive: the machine is too slow
if (within && (afterKill === 1 || afterKill === null))
    failures.push(`after node 1's SIGKILL, node_id = auto took ${afterKill}: the killed node's lease was not kept`);
if (!within) failures.push(`starting node_id = auto took over ${LEASE_MS} ms after the SIGKILL: cannot tell whether the lease was kept`);
await sleep(Math.max(0, killedAt + LEASE_MS + 500 - Date.now())); // the killed lease runs out
const expired = await autoId();
if (expired !== 1) failures.push(`${LEASE_MS} ms after node 1's SIGKILL, node_id = auto took ${expired}, not 1`);
report('nodes', failures, { before: before.length, after: after.length, stored: h2.length, dupExit: dup.code, autoNode: m && m[1], maxBefore: String(maxBefore), firstNewIdSkewMs: skew, afterStop, afterKill, expired });
