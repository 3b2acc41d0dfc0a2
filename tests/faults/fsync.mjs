// tests/faults/fsync.mjs - proof that a RECEIPT follows the fsync of the
// message. chatd runs under strace -f (openat, close, pwrite64, write,
// writev, sendmsg, sendto, fsync, fdatasync, into one trace in the order the
// calls happened); two members send FAULTS_MESSAGES (default 60) messages
// with receipts, a few in flight. Then, for every receipted SEND, in the
// trace:
//   1. a pwrite64 to the SQLite WAL (a file opened as *-wal) holds its text,
//   2. an fsync or fdatasync of the WAL that started after that write
//      returned (the store may run several syncs at once: one already in
//      flight does not cover the write) returned,
//   3. after that, the RECEIPT with its receipt-id is written to a socket.
// The same check on the trace with every sync removed must fail for every
// message (the check sees a missing fsync).
//   node tests/faults/fsync.mjs -- CHATD ARGS...   (see lib.mjs for the env;
//   FAULTS_TRACE: where the trace goes)
import fs from 'node:fs';
import { Daemon, daemonArgv, makeRooms, connect, publish, report, URL_ } from './lib.mjs';

const n = Number(process.env.FAULTS_MESSAGES || 60);
const trace = process.env.FAULTS_TRACE;
if (!trace) throw new Error('FAULTS_TRACE is not set');
const failures = [];
const d = new Daemon(['strace', '-f', '-qq', '-s', '65536', '-o', trace,
    '-e', 'trace=openat,close,pwrite64,write,writev,sendmsg,sendto,fsync,fdatasync', ...daemonArgv()]);
await d.up(60000);
const [room] = await makeRooms(1, 'fs');
const tag = `fs${Date.now().toString(36)}`;
const ca = await connect(URL_, room.a), cb = await connect(URL_, room.b);
const sent = []; // {text, receipt}
for (let i = 0; i < n; i += 3) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 3); j++) {
        const text = `${tag}-${j}-end`;
        batch.push(publish(j % 2 ? cb : ca, room.roomId, text, 20000).then((r) => ({ text, r })));
    }
    for (const { text, r } of await Promise.all(batch)) {
        if (r.status !== 'receipt') failures.push(`${text}: ${r.status}`);
        else sent.push({ text, receipt: r.receipt });
    }
}
await ca.deactivate();
await cb.deactivate();
// stop chatd itself (strace's child), then strace ends and the trace is whole
const kids = fs.readFileSync(`/proc/${d.proc.pid}/task/${d.proc.pid}/children`, 'utf8').trim().split(/\s+/);
process.kill(Number(kids[0]), 'SIGTERM');
const x = await d.exited;
if (x.code !== 0) failures.push(`chatd under strace exited ${JSON.stringify(x)} on SIGTERM`);

/* The order of events in a strace -f trace: a call's line when it returned
 * (a whole line, or its "<... resumed>" line). Returns violations. */
function check(lines, msgs) {
    const walFds = new Set(); // "pid:fd" is not needed: fds are per process
    const unfinished = new Map(); // pid -> {call: its start, at: events before it}
    const events = []; // {kind: 'walwrite'|'walsync'|'sock', text, at}
    for (const raw of lines) {
        const m = /^(\d+)\s+(.*)$/.exec(raw);
        if (!m) continue;
        const [, pid, rest] = m;
        let call = rest;
        let at = events.length; // a whole line: nothing else happened during the call
        if (rest.endsWith('<unfinished ...>')) {
            unfinished.set(pid, { call: rest.slice(0, -'<unfinished ...>'.length), at });
            continue;
        }
        const res = /^<\.\.\. (\w+) resumed>(.*)$/.exec(rest);
        if (res) {
            const u = unfinished.get(pid);
            call = (u ? u.call : `${res[1]}(`) + res[2];
            at = u ? u.at : 0; // its start not in the trace: as early as can be
            unfinished.delete(pid);
        }
        const c = /^(\w+)\((\d+)?(.*)\)\s+=\s+(-?\d+)/s.exec(call);
        if (!c) continue;
        const [, name, fdArg, args, ret] = c;
        const r = Number(ret);
        if (name === 'openat' && /-wal"/.test(args) && r >= 0) walFds.add(String(r));
        else if (name === 'close' && fdArg) walFds.delete(fdArg);
        else if (name === 'pwrite64' && walFds.has(fdArg)) events.push({ kind: 'walwrite', text: args });
        else if ((name === 'fsync' || name === 'fdatasync') && walFds.has(fdArg) && r === 0) events.push({ kind: 'walsync', at });
        else if (/^(write|writev|sendmsg|sendto)$/.test(name) && args.includes('RECEIPT')) events.push({ kind: 'sock', text: args });
    }
    const bad = [];
    for (const { text, receipt } of msgs) {
        const w = events.findIndex((e) => e.kind === 'walwrite' && e.text.includes(text));
        const rc = events.findIndex((e) => e.kind === 'sock' && e.text.includes(`receipt-id:${receipt}`));
        if (w < 0 || rc < 0) {
            bad.push(`${text}: ${w < 0 ? 'no WAL write with its text' : ''} ${rc < 0 ? 'no RECEIPT on a socket' : ''}`);
            continue;
        }
        // a sync that started once the write was in the trace (at > w)
        const s = events.findIndex((e) => e.kind === 'walsync' && e.at > w);
        if (s < 0 || s > rc) bad.push(`${text}: its RECEIPT (event ${rc}) precedes the WAL sync started after its write (event ${w})`);
    }
    return bad;
}

const lines = fs.readFileSync(trace, 'utf8').split('\n');
const bad = check(lines, sent);
for (const b of bad.slice(0, 5)) failures.push(b);
if (bad.length) failures.push(`${bad.length} of ${sent.length} receipted messages not synced before their RECEIPT`);
if (sent.length !== n) failures.push(`${sent.length} of ${n} messages got a RECEIPT`);
const nosync = lines.filter((l) => !/\b(fsync|fdatasync)\(|<\.\.\. (fsync|fdatasync) resumed>/.test(l));
const badNoSync = check(nosync, sent);
if (badNoSync.length !== sent.length)
    failures.push(`the check without syncs flags ${badNoSync.length} of ${sent.length} messages (want all): it cannot see a missing fsync`);
report('fsync', failures, { messages: n, receipted: sent.length, walSyncs: lines.length - nosync.length, flaggedWithoutSync: badNoSync.length });
