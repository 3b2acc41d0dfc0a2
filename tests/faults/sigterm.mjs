// tests/faults/sigterm.mjs - graceful stop under load, repeated.
// Members of FAULTS_ROOMS rooms (default 3, both members sending) keep
// sending with receipts while chatd gets SIGTERM, FAULTS_STOPS times
// (default 4); each time it must exit 0 within its stop bound, and it is
// started again. Then, after a final receipted marker per room:
//   - every SEND got a RECEIPT or an ERROR before its connection closed:
//     no publish ended with a bare close, a timeout or no answer;
//   - every message that got a RECEIPT is in the history exactly once;
//   - no message that got an ERROR is stored (an ERROR means "not taken");
//   - room lists agree with the history (lib.mjs checkStored);
//   - every SIGTERM was sent while clients had publishes in flight;
//   - on Kafka (FAULTS_OFFSETS and FAULTS_STORED set), after each stop,
//     the node down: on every partition, each chat record below the group's
//     committed offset is in the store and none at or past it is (offsets
//     committed for exactly what was persisted: nothing lost, nothing
//     persisted twice by the next start), and the commit covers every
//     record that got a RECEIPT.
//   node tests/faults/sigterm.mjs -- CHATD ARGS...   (see lib.mjs for the env)
// FAULTS_OFFSETS: a command printing tests/plugins/queue-kafka/kafka-offsets
// lines; FAULTS_STORED: a command printing the stored message ids, one a line.
import { execSync } from 'node:child_process';
import {
    underLoad, checkStored, finalMarkers, until, report, sleep,
} from './lib.mjs';

/* on Kafka: the committed offsets against the store, the node stopped */
function checkCommitted(i, failures) {
    const run = (cmd) => execSync(cmd, { encoding: 'utf8', shell: '/bin/bash', timeout: 60000 });
    const committed = new Map(), records = [];
    for (const l of run(process.env.FAULTS_OFFSETS).split('\n')) {
        let m = /^partition (\d+) committed (-?\d+) high (\d+)$/.exec(l);
        if (m) committed.set(Number(m[1]), Number(m[2]));
        m = /^record (\d+) (\d+) (\S+) (\S+)(?: \S+)?$/.exec(l);
        if (m) records.push({ p: Number(m[1]), off: Number(m[2]), id: m[3], type: m[4] });
    }
    const stored = new Set(run(process.env.FAULTS_STORED).split('\n').map((x) => x.trim()).filter(Boolean));
    const chat = records.filter((r) => r.type === 'chat');
    const below = chat.filter((r) => r.off < (committed.get(r.p) ?? -1));
    const past = chat.filter((r) => r.off >= (committed.get(r.p) ?? -1));
    const lost = below.filter((r) => !stored.has(r.id));
    const uncommitted = past.filter((r) => stored.has(r.id));
    if (!committed.size || !chat.length) failures.push(`stop ${i}: no partitions or no chat records read from Kafka`);
    if (lost.length) failures.push(`stop ${i}: ${lost.length} records below the committed offset are not stored, e.g. ${JSON.stringify(lost.slice(0, 3))}`);
    if (uncommitted.length) failures.push(`stop ${i}: ${uncommitted.length} stored records are past the committed offset (persisted, not committed), e.g. ${JSON.stringify(uncommitted.slice(0, 3))}`);
    return { records: chat.length, committed: below.length, pending: past.length };
}

const stops = Number(process.env.FAULTS_STOPS || 4);
const nrooms = Number(process.env.FAULTS_ROOMS || 3);
const failures = [];
const { d, rooms, tag, s } = await underLoad(nrooms, 'st');

let loaded = 0;
const stopMs = [], inflightAtStop = [], commits = [];
for (let i = 0; i < stops; i++) {
    const base = s.receipts;
    await until(() => s.receipts >= base + 100, 30000, `100 receipts after start ${d.starts}`);
    await sleep(Math.floor(Math.random() * 100));
    // SIGTERM while the clients wait for answers (polled, then sent at once)
    await until(() => s.inflight > 0, 10000, 'publishes in flight');
    const inflight = s.inflight;
    const t0 = Date.now();
    const x = await d.stop('SIGTERM', 30000);
    stopMs.push(Date.now() - t0);
    if (x.code !== 0) failures.push(`stop ${i + 1}: chatd exited ${JSON.stringify(x)} on SIGTERM (want 0)`);
    if (process.env.FAULTS_OFFSETS) {
        const r = checkCommitted(i + 1, failures);
        commits.push(r);
        // every receipted message so far is stored: its record is committed
        if (r.records < s.receipts) failures.push(`stop ${i + 1}: ${r.records} chat records for ${s.receipts} receipts`);
    }
    await d.up();
    if (inflight > 0) loaded++;
    inflightAtStop.push(inflight);
}
const base = s.receipts;
await until(() => s.receipts >= base + 50, 30000, 'receipts after the last restart');
await s.stop();
await finalMarkers(tag, rooms, failures);

const tally = s.tally();
for (const st of ['closed', 'timeout', 'pending']) {
    if (tally[st]) failures.push(`${tally[st]} publishes ended with '${st}': want a RECEIPT or an ERROR before the close`);
}
if (loaded < stops) failures.push(`only ${loaded} of ${stops} stops had publishes in flight`);
const c = await checkStored(s, rooms, failures);
const erroredStored = s.texts('error').filter((t) => c.count(t) > 0);
if (erroredStored.length) failures.push(`${erroredStored.length} messages that got an ERROR are stored, e.g. ${erroredStored.slice(0, 3)}`);
const x = await d.stop('SIGTERM', 30000);
if (x.code !== 0) failures.push(`final SIGTERM: chatd exited ${JSON.stringify(x)}`);
report('sigterm', failures, {
    stops, inflightAtStop, stopMs, outcomes: tally, receipted: c.receipted, stored: c.stored, commits,
});
