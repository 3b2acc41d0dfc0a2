// tests/faults/kill9.mjs - kill -9 of chatd under load, repeated.
// Members of FAULTS_ROOMS rooms (default 3, both members of each sending)
// keep sending with receipts; the daemon is killed with SIGKILL at random
// moments FAULTS_KILLS times (default 15, at least 10) and restarted with the
// same command line. Then, after a final receipted marker per room:
//   - every message that got a RECEIPT is in the room's history exactly once;
//   - no message without a RECEIPT is there more than once, and nothing is
//     there that nobody sent; no id appears twice;
//   - each member's room list (last message, its id, lastReadId, unread)
//     agrees with the history;
//   - at least half of the kills cut publishes short (in flight, unanswered), and every restart
//     got receipts again (the load was real throughout).
//   node tests/faults/kill9.mjs -- CHATD ARGS...   (see lib.mjs for the env)
import {
    underLoad, checkStored, finalMarkers, until, report, sleep,
} from './lib.mjs';

const kills = Number(process.env.FAULTS_KILLS || 15);
const nrooms = Number(process.env.FAULTS_ROOMS || 3);
if (kills < 10) throw new Error('FAULTS_KILLS must be at least 10');
const failures = [];
const { d, rooms, tag, s } = await underLoad(nrooms, 'k9');

let hitInflight = 0;
for (let i = 0; i < kills; i++) {
    // some receipts since the last start, then a random moment
    const base = s.receipts;
    const want = 20 + Math.floor(Math.random() * 150);
    await until(() => s.receipts >= base + want, 30000, `${want} receipts after start ${d.starts}`);
    await sleep(Math.floor(Math.random() * 200));
    const before = s.unanswered;
    const x = await d.stop('SIGKILL', 10000);
    if (x.signal !== 'SIGKILL') failures.push(`kill ${i + 1}: chatd ended with ${JSON.stringify(x)}`);
    await d.up();
    if (s.unanswered > before) hitInflight++; // publishes cut short by this kill
}
// the stream after the last restart
const base = s.receipts;
await until(() => s.receipts >= base + 50, 30000, 'receipts after the last restart');
await s.stop();
await finalMarkers(tag, rooms, failures);
const tally = s.tally();
for (const st of ['timeout', 'pending']) {
    if (tally[st]) failures.push(`${tally[st]} publishes ended with ${st} (want a RECEIPT, an ERROR or a close)`);
}
if (hitInflight < kills / 2) failures.push(`only ${hitInflight} of ${kills} kills hit publishes in flight`);
const c = await checkStored(s, rooms, failures);
await d.stop('SIGTERM', 30000).then((x) => {
    if (x.code !== 0) failures.push(`final SIGTERM: chatd exited ${JSON.stringify(x)}`);
});
report('kill9', failures, {
    kills, hitInflight, starts: d.starts, outcomes: tally, receipted: c.receipted, stored: c.stored,
    unreceiptedStored: c.unreceiptedStored,
});
