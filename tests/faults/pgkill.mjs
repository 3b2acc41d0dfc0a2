// tests/faults/pgkill.mjs - PostgreSQL killed under load, and restarted.
// chatd on store-pg; members of 3 rooms keep sending with receipts while the
// server is stopped with `pg_ctl -m immediate` (no checkpoint, like a crash)
// and, in turn, its postmaster is killed with SIGKILL, FAULTS_OUTAGES times
// in all (default 4). Then, after a final receipted marker per room:
//   - chatd stayed up: no publish ended with a close, a timeout or nothing;
//     the ones refused got an ERROR that says why (its message header);
//   - every message that got a RECEIPT is stored exactly once, nothing
//     unreceipted twice, room lists agree (lib.mjs checkStored);
//   - chatd logged each loss of the connection and each return.
// Each outage starts once the node lease was renewed after the one before:
// outages that add up to a whole node_lease stop the node (core/nodes.c).
// Environment (besides lib.mjs's): PGTEST_DIR, PGTEST_START_CMD,
// PGTEST_STOP_CMD (tests/plugins/store-pg/pg-start.sh).
//   node tests/faults/pgkill.mjs -- CHATD ARGS...
import fs from 'node:fs';
import { execSync } from 'node:child_process';
import { underLoad, checkStored, finalMarkers, until, report, sleep } from './lib.mjs';

const outages = Number(process.env.FAULTS_OUTAGES || 4);
const { PGTEST_DIR, PGTEST_START_CMD, PGTEST_STOP_CMD } = process.env;
if (!PGTEST_DIR || !PGTEST_START_CMD || !PGTEST_STOP_CMD) throw new Error('PGTEST_DIR, PGTEST_START_CMD and PGTEST_STOP_CMD must be set (pg-start.sh)');
const failures = [];
const log = process.env.FAULTS_LOG;
const lines = (re) => fs.readFileSync(log, 'utf8').split('\n').filter((l) => re.test(l)).length;

const pgDown = () => {
    try {
        execSync(`${PGTEST_STOP_CMD.replace('-m fast', '-m immediate')}`, { stdio: 'ignore' });
    } catch { /* already down */ }
};
const postmasterPid = () => Number(fs.readFileSync(`${PGTEST_DIR}/data/postmaster.pid`, 'utf8').split('\n')[0]);
const alive = (pid) => {
    try {
        process.kill(pid, 0);
        return true;
    } catch {
        return false;
    }
};
async function pgUp() { // the backends of a killed postmaster may still hold its memory a moment
    const end = Date.now() + 30000;
    for (;;) {
        try {
            execSync(PGTEST_START_CMD, { stdio: 'ignore' });
            return;
        } catch (e) {
            if (Date.now() > end) throw new Error(`PostgreSQL did not start again: ${e.message}`);
            await sleep(300);
        }
    }
}

const { d, rooms, tag, s } = await underLoad(3, 'pk');
const modes = [];
try {
    for (let i = 0; i < outages; i++) {
        const base = s.receipts;
        await until(() => s.receipts >= base + 100, 30000, `100 receipts before outage ${i + 1}`);
        // the node lease renewed since the last outage (else back-to-back
        // outages add up to a whole node_lease, and the node stops by design)
        await until(() => lines(/renewing the lease failed/) <= lines(/lease renewed again/), 30000,
            `the node lease renewed before outage ${i + 1}`);
        if (i % 2 === 0) {
            modes.push('pg_ctl -m immediate');
            pgDown();
        } else {
            modes.push('SIGKILL of the postmaster');
            const pid = postmasterPid();
            process.kill(pid, 'SIGKILL');
            await until(() => !alive(pid), 10000, 'the postmaster to die');
        }
        const during = s.receipts;
        await sleep(500 + Math.floor(Math.random() * 1000)); // down a while, under load
        if (s.receipts > during + s.window * 6) failures.push(`outage ${i + 1}: ${s.receipts - during} receipts while PostgreSQL was down`);
        await pgUp();
    }
    const base = s.receipts;
    await until(() => s.receipts >= base + 100, 60000, 'receipts after the last outage');
} finally {
    await pgUp().catch(() => {}); // restarted whatever failed
}
await s.stop();
await finalMarkers(tag, rooms, failures);
const tally = s.tally();
for (const st of ['closed', 'timeout', 'pending']) {
    if (tally[st]) failures.push(`${tally[st]} publishes ended with '${st}' (chatd must answer each while PostgreSQL is away)`);
}
for (const [why, n] of s.errors) if (!why) failures.push(`${n} ERROR frames without a message header`);
const c = await checkStored(s, rooms, failures);
const lost = lines(/lost the connection to PostgreSQL/), back = lines(/PostgreSQL is back/);
if (lost < outages || back < outages) failures.push(`log: ${lost} "lost the connection" and ${back} "PostgreSQL is back" for ${outages} outages`);
const x = await d.stop('SIGTERM', 30000);
if (x.code !== 0) failures.push(`final SIGTERM: chatd exited ${JSON.stringify(x)}`);
report('pgkill', failures, {
    outages: modes, outcomes: tally, errors: Object.fromEntries(s.errors), receipted: c.receipted, stored: c.stored,
    logged: { lost, back },
});
