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
//   - every SIGTERM was sent while clients had publishes in flight.
//   node tests/faults/sigterm.mjs -- CHATD ARGS...   (see lib.mjs for the env)
import {
    underLoad, checkStored, finalMarkers, until, report, sleep,
} from './lib.mjs';

const stops = Number(process.env.FAULTS_STOPS || 4);
const nrooms = Number(process.env.FAULTS_ROOMS || 3);
const failures = [];
const { d, rooms, tag, s } = await underLoad(nrooms, 'st');

let loaded = 0;
const stopMs = [], inflightAtStop = [];
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
    stops, inflightAtStop, stopMs, outcomes: tally, receipted: c.receipted, stored: c.stored,
});
