// tests/plugins/queue-kafka/faults.mjs - fault tests of chatd on Kafka, three nodes:
//  A. kill -9 one node in the middle of a stream of publishes, restart it:
//     every message that got a RECEIPT is stored exactly once and was
//     delivered (once) to the live subscribers on the other nodes.
//  B. take every mock broker down, publish, bring them back: each publish
//     gets a RECEIPT later or an ERROR, never neither; node 1 (whose Kafka
//     producer waits out the outage) gets a RECEIPT for each, node 3 (which
//     gives up after 4 s) an ERROR; what got a RECEIPT is delivered and stored
//     once.
// Environment:
//   KAFKA_NODES          three node URLs; the second one is the victim of A
//   KAFKA_VICTIM_PID     its pid
//   KAFKA_RESTART        shell command that starts it again (in the background)
//   KAFKA_MOCK_CTL       control FIFO of tests/plugins/queue-kafka/mock-cluster
//   KAFKA_MOCK_OUT       its standard output (the answers to the commands)
//   KAFKA_PG             conninfo of the shared PostgreSQL database
import { execSync } from 'node:child_process';
import {
    nodesFromEnv, makeMember, connect, subscribe, publish, roomOf, closeAll, until, storedCounts,
    check, sleep, waitHealthy, settle, mockCommand,
} from './kclient.mjs';

const nodes = nodesFromEnv();
const [n1, victim, n3] = nodes;
const failures = [];
const tag = `ft${Date.now().toString(36)}`;
const clients = [];

function idsOnce(box, texts, what) {
    const seen = new Map();
    for (const m of box.messages) seen.set(m.message, (seen.get(m.message) || 0) + 1);
    const missing = texts.filter((t) => !seen.get(t));
    const dups = [...seen].filter(([, n]) => n > 1);
    check(missing.length === 0, `${what}: ${missing.length} receipted messages never delivered, e.g. ${missing.slice(0, 3)}`, failures);
    check(dups.length === 0, `${what}: ${dups.length} messages delivered more than once, e.g. ${dups.slice(0, 3)}`, failures);
}

async function storedOnce(texts, what, ms = 45000) {
    try {
        await until(() => [...storedCounts(texts).values()].every((n) => n >= 1), ms, `${what} to be stored`);
    } catch (e) {
        check(false, e.message, failures);
    }
    const counts = storedCounts(texts);
    const missing = [...counts].filter(([, n]) => n === 0).length;
    const dup = [...counts].filter(([, n]) => n > 1).length;
    check(missing === 0 && dup === 0, `${what}: ${missing} of ${texts.length} receipted messages not stored, ${dup} stored more than once`, failures);
}

// ---------------------------------------------------------------- A: kill -9
{
    const victimPid = Number(process.env.KAFKA_VICTIM_PID);
    if (!victimPid) throw new Error('KAFKA_VICTIM_PID is not set');
    const wv = await makeMember(n1, 'fv');  // writes through the victim
    const l1 = await makeMember(n1, 'fl');  // listens on node 1
    const wl = await makeMember(n3, 'fw');  // writes through node 3 meanwhile
    const l2 = await makeMember(n1, 'fm');  // listens on node 1
    const r1 = roomOf(wv, l1), r2 = roomOf(wl, l2);
    const cv = await connect(victim, wv), c1 = await connect(n1, l1);
    const c3 = await connect(n3, wl), c2 = await connect(n1, l2);
    clients.push(cv, c1, c3, c2);
    const l1Room = await subscribe(c1, `/sub/chat/room/${r1}`);
    const l2Room = await subscribe(c2, `/sub/chat/room/${r2}`);
    const wlRoom = await subscribe(c3, `/sub/chat/room/${r2}`);

    const receipted = [], lost = [];
    let killed = false;
    // the victim's writer keeps up to 4 publishes in flight; once 25 have
    // their RECEIPT the node is killed with SIGKILL
    const victimStream = (async () => {
        let k = 0;
        const inflight = new Set();
        while (!cv.closed && k < 400) {
            const text = `${tag} A victim ${k++}`;
            const p = publish(cv, r1, text, 20000).then((res) => {
                inflight.delete(p);
                if (res.status === 'receipt') receipted.push(text); else lost.push(`${text}: ${res.status}`);
            });
            inflight.add(p);
            // kill right after a SEND, so that some publishes are in flight
            if (!killed && receipted.length >= 25) {
                killed = true;
                process.kill(victimPid, 'SIGKILL');
                console.log(`killed the victim node (pid ${victimPid}) after ${receipted.length} receipts, ${inflight.size} publishes in flight`);
            }
            if (inflight.size >= 4) await Promise.race(inflight);
            await sleep(5);
        }
        await Promise.all(inflight);
    })();
    // node 3's writer carries on through the kill and the rebalance
    const liveTexts = [];
    const liveStream = (async () => {
        for (let k = 0; k < 80; k++) {
            const text = `${tag} A live ${k}`;
            const res = await publish(c3, r2, text, 30000);
            check(res.status === 'receipt', `live writer on node 3: "${text}" got ${res.status}`, failures);
            if (res.status === 'receipt') liveTexts.push(text);
            await sleep(40);
        }
    })();
    await victimStream;
    check(killed, 'the victim was never killed (too few receipts)', failures);
    console.log(`victim stream: ${receipted.length} receipts, ${lost.length} without (connection killed)`);

    execSync(process.env.KAFKA_RESTART, { stdio: 'inherit', shell: '/bin/bash' });
    await waitHealthy(victim, 30000);
    console.log('victim restarted');
    await liveStream;

    // the restarted node takes publishes again
    const cv2 = await connect(victim, wv);
    clients.push(cv2);
    for (let k = 0; k < 10; k++) {
        const text = `${tag} A after ${k}`;
        const res = await publish(cv2, r1, text, 30000);
        check(res.status === 'receipt', `after restart: "${text}" got ${res.status}`, failures);
        if (res.status === 'receipt') receipted.push(text);
    }

    // delivered to the live subscribers (node 1, node 3) once; stored once
    await until(() => receipted.every((t) => l1Room.messages.some((m) => m.message === t))
        && liveTexts.every((t) => l2Room.messages.some((m) => m.message === t) && wlRoom.messages.some((m) => m.message === t)),
    45000, 'live subscribers to get every receipted message').catch((e) => check(false, e.message, failures));
    await settle([{ client: c1, roomId: r1, boxes: [l1Room] }, { client: c2, roomId: r2, boxes: [l2Room, wlRoom] }])
        .catch((e) => check(false, e.message, failures));
    idsOnce({ messages: l1Room.messages.filter((m) => receipted.includes(m.message)) }, receipted, `room ${r1} on node 1`);
    const extra = l1Room.messages.filter((m) => !receipted.includes(m.message));
    check(new Set(extra.map((m) => m.message)).size === extra.length, `room ${r1}: an unreceipted message delivered twice`, failures);
    idsOnce(l2Room, liveTexts, `room ${r2} on node 1`);
    idsOnce(wlRoom, liveTexts, `room ${r2} on node 3`);
    await storedOnce([...receipted, ...liveTexts], 'A (kill -9)');
    const unreceipted = lost.map((l) => l.split(':')[0]);
    const stray = [...storedCounts(unreceipted)].filter(([, n]) => n > 1).length;
    check(stray === 0, `A: ${stray} unreceipted messages stored more than once`, failures);
    console.log(`A: ${receipted.length + liveTexts.length} receipted messages delivered and stored once`);
}

// ------------------------------------------------------ B: brokers down, up
{
    const p1 = await makeMember(n1, 'fp'), p3 = await makeMember(n3, 'fq'), q = await makeMember(n1, 'fr');
    const ra = roomOf(p1, q), rb = roomOf(p3, q);
    const cq = await connect(n1, q);
    clients.push(cq);
    const qa = await subscribe(cq, `/sub/chat/room/${ra}`), qb = await subscribe(cq, `/sub/chat/room/${rb}`);
    // warm up both paths
    for (const [m, node, room] of [[p1, n1, ra], [p3, n3, rb]]) {
        const c = await connect(node, m);
        clients.push(c);
        const res = await publish(c, room, `${tag} B warm ${m.loginId}`, 30000);
        check(res.status === 'receipt', `warm-up publish via ${node}: ${res.status}`, failures);
    }

    await mockCommand('down all');
    console.log('all brokers down');
    // one connection per publish: an ERROR closes its connection, and each
    // publish must get its own answer
    const outcomes = [];
    try {
        for (let k = 0; k < 6; k++) {
            for (const [m, node, room] of [[p1, n1, ra], [p3, n3, rb]]) {
                const text = `${tag} B ${node.split(':').pop()} ${k}`;
                const c = await connect(node, m);
                clients.push(c);
                outcomes.push(publish(c, room, text, 90000).then((res) => ({ text, room, node, ...res })));
            }
        }
        await sleep(8000); // the outage itself: longer than node 3's message.timeout.ms (4000)
    } finally {
        await mockCommand('up all'); // whatever failed: the brokers come back
    }
    console.log('all brokers up');
    const results = await Promise.all(outcomes);
    const tally = {};
    for (const r of results) tally[r.status] = (tally[r.status] || 0) + 1;
    console.log(`B: outcomes ${JSON.stringify(tally)}`);
    for (const r of results) {
        check(r.status === 'receipt' || r.status === 'error',
            `B: "${r.text}" via ${r.node} got neither a RECEIPT nor an ERROR (${r.status})`, failures);
        if (r.status === 'error')
            check(/kafka|deliver|timed out|timeout/i.test(r.frame?.headers?.message || ''), `B: the ERROR names the cause: "${r.frame?.headers?.message}"`, failures);
    }
    const okA = results.filter((r) => r.status === 'receipt' && r.room === ra).map((r) => r.text);
    const okB = results.filter((r) => r.status === 'receipt' && r.room === rb).map((r) => r.text);
    // not vacuous: node 1 rides out the outage, node 3 gives up with an ERROR
    check(okA.length === 6, `B: every publish via node 1 got its RECEIPT after the outage (${okA.length} of 6)`, failures);
    const errB = results.filter((r) => r.status === 'error' && r.room === rb).length;
    check(errB === 6, `B: every publish via node 3 got an ERROR (${errB} of 6)`, failures);
    await until(() => okA.every((t) => qa.messages.some((m) => m.message === t)) && okB.every((t) => qb.messages.some((m) => m.message === t)),
        45000, 'receipted outage messages to be delivered').catch((e) => check(false, e.message, failures));
    const s1 = await connect(n1, p1), s3 = await connect(n3, p3);
    clients.push(s1, s3);
    await settle([{ client: s1, roomId: ra, boxes: [qa] }, { client: s3, roomId: rb, boxes: [qb] }])
        .catch((e) => check(false, e.message, failures));
    idsOnce({ messages: qa.messages.filter((m) => okA.includes(m.message)) }, okA, `B room ${ra}`);
    idsOnce({ messages: qb.messages.filter((m) => okB.includes(m.message)) }, okB, `B room ${rb}`);
    await storedOnce([...okA, ...okB], 'B (outage)');
    // and the cluster is usable again from both nodes
    for (const [m, node, room] of [[p1, n1, ra], [p3, n3, rb]]) {
        const c = await connect(node, m);
        clients.push(c);
        const res = await publish(c, room, `${tag} B after ${node.split(':').pop()}`, 30000);
        check(res.status === 'receipt', `after the outage, publish via ${node}: ${res.status}`, failures);
    }
}

await closeAll(clients);
if (failures.length) {
    console.error(`faults: ${failures.length} failures`);
    process.exit(1);
}
console.log('faults: ok');
process.exit(0);
