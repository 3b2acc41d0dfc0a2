// tests/faults/pghang.mjs - a PostgreSQL connection that hangs silently.
// chatd reaches PostgreSQL through a TCP proxy of this test's own; under
// load the proxy stops forwarding on every connection it holds (they stay
// open, nothing more passes: a dead host, a partition), FAULTS_HANGS times
// (default 2). New connections are forwarded again. Asserted:
//   - chatd drops the silent connection within store.query_timeout_ms
//     (FAULTS_QUERY_TIMEOUT_MS, which the suite sets) plus its 1 s watch
//     tick and 1 s of slack, saying so in its log, and receipts flow again
//     on a new connection;
//   - no publish ended with a close, a timeout or nothing; every message
//     that got a RECEIPT is stored exactly once, nothing unreceipted twice,
//     room lists agree (lib.mjs checkStored).
// Environment (besides lib.mjs's): FAULTS_PROXY_PORT (where the proxy
// listens; chatd's conninfo names it), PGTEST_PORT (the server).
//   node tests/faults/pghang.mjs -- CHATD ARGS...
import fs from 'node:fs';
import net from 'node:net';
import { underLoad, checkStored, finalMarkers, until, report } from './lib.mjs';

const hangs = Number(process.env.FAULTS_HANGS || 2);
const timeoutMs = Number(process.env.FAULTS_QUERY_TIMEOUT_MS);
const proxyPort = Number(process.env.FAULTS_PROXY_PORT), pgPort = Number(process.env.PGTEST_PORT);
if (!timeoutMs || !proxyPort || !pgPort) throw new Error('FAULTS_QUERY_TIMEOUT_MS, FAULTS_PROXY_PORT and PGTEST_PORT must be set');
const failures = [];
const log = process.env.FAULTS_LOG;
const silentLines = () => fs.readFileSync(log, 'utf8').split('\n').filter((l) => /no answer to a query within/.test(l)).length;

// the proxy: pairs of sockets piped both ways; freeze() stops every pair
const pairs = new Set(), frozenPairs = [];
const proxy = net.createServer((down) => {
    const up = net.connect(pgPort, '127.0.0.1');
    const pair = { down, up };
    pairs.add(pair);
    down.pipe(up);
    up.pipe(down);
    const end = () => {
        pairs.delete(pair);
        down.destroy();
        up.destroy();
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
});
await new Promise((resolve) => proxy.listen(proxyPort, '127.0.0.1', resolve));
function freeze() {
    const n = pairs.size;
    for (const pair of pairs) {
        pair.down.unpipe(pair.up);
        pair.up.unpipe(pair.down);
        pair.down.pause();
        pair.up.pause();
        frozenPairs.push(pair); // open, silent, until the end of the test
    }
    pairs.clear();
    return n;
}

const { d, rooms, tag, s } = await underLoad(3, 'ph');
const detectMs = [];
for (let i = 0; i < hangs; i++) {
    const base = s.receipts;
    await until(() => s.receipts >= base + 100, 30000, `100 receipts before hang ${i + 1}`);
    const seen = silentLines();
    const frozen = freeze();
    if (frozen < 1) failures.push(`hang ${i + 1}: no connection to freeze`);
    const t0 = Date.now();
    try {
        await until(() => silentLines() > seen, timeoutMs + 2000, `chatd to drop the silent connection (hang ${i + 1})`);
        detectMs.push(Date.now() - t0);
    } catch (e) {
        failures.push(e.message);
        detectMs.push(null);
    }
    const after = s.receipts;
    await until(() => s.receipts >= after + 100, 30000, `receipts on a new connection after hang ${i + 1}`)
        .catch((e) => failures.push(e.message));
}
await s.stop();
await finalMarkers(tag, rooms, failures);
const tally = s.tally();
for (const st of ['closed', 'timeout', 'pending']) {
    if (tally[st]) failures.push(`${tally[st]} publishes ended with '${st}'`);
}
const c = await checkStored(s, rooms, failures);
const x = await d.stop('SIGTERM', 30000);
if (x.code !== 0) failures.push(`final SIGTERM: chatd exited ${JSON.stringify(x)}`);
proxy.close();
for (const { down, up } of [...pairs, ...frozenPairs]) {
    down.destroy();
    up.destroy();
}
report('pghang', failures, {
    hangs, queryTimeoutMs: timeoutMs, detectMs, outcomes: tally, errors: Object.fromEntries(s.errors),
    receipted: c.receipted, stored: c.stored,
});
