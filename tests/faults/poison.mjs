// tests/faults/poison.mjs - a record the store refuses, on a Kafka node:
// the test produces to the topic (kafka-produce, as a node that shares this
// node_id would) a chat record whose id is already stored with another text.
// The store refuses it every time (id conflict); after max_persist_attempts
// (FAULTS_ATTEMPTS) it must be dead-lettered, while the other rooms of its
// partition keep flowing:
//   - every publish in those rooms (and in the poison's own room) during the
//     episode gets its RECEIPT within LATENCY_MS (a stated, generous bound),
//     is delivered live to the room's subscriber and stored exactly once;
//   - the dead_letters table holds the record with "failed to persist N
//     times", chatd_kafka_dead_letters_total and chatd_store_id_conflicts_total
//     count it (metrics), and history keeps the original text for that id.
// Environment (besides lib.mjs's): FAULTS_PRODUCE (a command: KEY as its
// last word, the value on stdin), FAULTS_OFFSETS (kafka-offsets lines),
// FAULTS_SQL (psql for the node's database: a query as its last word),
// FAULTS_METRICS (the node's metrics URL), FAULTS_ATTEMPTS.
//   node tests/faults/poison.mjs -- CHATD ARGS...
import { execSync } from 'node:child_process';
import {
    Daemon, daemonArgv, URL_, connect, publish, makeMember, roomOf, history, report, until, sleep,
} from './lib.mjs';
import { subscribe } from '../plugins/queue-kafka/kclient.mjs';

const LATENCY_MS = 5000;
const attempts = Number(process.env.FAULTS_ATTEMPTS || 5);
const failures = [];
const sh = (cmd, input) => execSync(cmd, { encoding: 'utf8', shell: '/bin/bash', input, timeout: 60000 });
const q = (s) => `'${s.replace(/'/g, "'\\''")}'`;

const d = new Daemon(daemonArgv());
await d.up();

// rooms until one other room shares the first room's partition (read from
// the records on the topic); 24 rooms at most
const rooms = [];
let poisonRoom = null, mates = [];
for (let n = 0; n < 24 && mates.length < 2; n++) {
    const a = await makeMember(URL_, 'pa'), b = await makeMember(URL_, 'pb');
    const r = { roomId: roomOf(a, b), a, b };
    rooms.push(r);
    const c = await connect(URL_, a);
    const x = await publish(c, r.roomId, `warm-up ${r.roomId}`, 20000);
    await c.deactivate();
    if (x.status !== 'receipt') throw new Error(`warm-up in ${r.roomId}: ${x.status}`);
    const part = new Map();
    for (const l of sh(process.env.FAULTS_OFFSETS).split('\n')) {
        const m = /^record (\d+) \d+ \S+ chat (\S+)$/.exec(l);
        if (m) part.set(m[2], Number(m[1]));
    }
    poisonRoom = rooms[0];
    mates = rooms.slice(1).filter((x) => part.get(x.roomId) === part.get(poisonRoom.roomId));
}
if (!mates.length) throw new Error(`no two of ${rooms.length} rooms share a partition`);
const flowing = [poisonRoom, ...mates];

// a subscriber per room, then the poison: the id of the warm-up message of
// the poison room, with another text
const subs = [];
for (const r of flowing) {
    const c = await connect(URL_, r.b);
    subs.push({ r, c, box: await subscribe(c, `/sub/chat/room/${r.roomId}`) });
}
const [orig] = await history(poisonRoom.a, poisonRoom.roomId);
const poisonText = `poison ${Date.now().toString(36)}`;
const value = JSON.stringify({
    type: 'chat', id: orig.id, roomId: poisonRoom.roomId, writer: orig.writer,
    writerId: Number(orig.writerId), message: poisonText, timestamp: orig.timestamp,
});
const t0 = Date.now();
sh(`${process.env.FAULTS_PRODUCE} ${q(poisonRoom.roomId)}`, value);

// publishes in every room of the partition until the poison is dead-lettered
// (and a few after): each timed
const sent = new Map(), lat = [];
const dead = () => Number(sh(`${process.env.FAULTS_SQL} ${q(`SELECT count(*) FROM dead_letters WHERE payload LIKE '%${poisonText}%'`)}`).trim());
let deadAt = 0, k = 0;
const senders = await Promise.all(flowing.map((r) => connect(URL_, r.a)));
while (Date.now() - t0 < 60000) {
    for (let i = 0; i < flowing.length; i++) {
        const text = `flow ${flowing[i].roomId} ${k}`;
        const s0 = Date.now();
        const x = await publish(senders[i], flowing[i].roomId, text, 20000);
        lat.push(Date.now() - s0);
        sent.set(text, flowing[i]);
        if (x.status !== 'receipt') failures.push(`${text}: ${x.status}`);
    }
    k++;
    if (!deadAt && dead() > 0) deadAt = Date.now();
    if (deadAt && Date.now() - deadAt > 1000) break;
    await sleep(50);
}
for (const c of senders) await c.deactivate();
if (!deadAt) failures.push('the poison was not dead-lettered within 60 s');

// settled: every flowing message delivered live and stored once
for (const s of subs) {
    const want = [...sent].filter(([, r]) => r === s.r).map(([t]) => t);
    await until(() => want.every((t) => s.box.messages.some((m) => m.message === t)), 20000,
        `live delivery in ${s.r.roomId}`).catch((e) => failures.push(e.message));
    const live = new Map();
    for (const m of s.box.messages) live.set(m.message, (live.get(m.message) || 0) + 1);
    if (want.some((t) => live.get(t) !== 1)) failures.push(`${s.r.roomId}: not every message delivered live exactly once`);
    if (live.has(poisonText)) failures.push(`${s.r.roomId}: the poison was delivered live`);
    const h = await history(s.r.a, s.r.roomId);
    const stored = new Map();
    for (const m of h) stored.set(m.message, (stored.get(m.message) || 0) + 1);
    const bad = want.filter((t) => stored.get(t) !== 1);
    if (bad.length) failures.push(`${s.r.roomId}: ${bad.length} of ${want.length} messages not stored exactly once, e.g. ${bad.slice(0, 3)}`);
    if (stored.has(poisonText)) failures.push(`${s.r.roomId}: the poison is in history`);
    await s.c.deactivate();
}
const kept = (await history(poisonRoom.a, poisonRoom.roomId)).find((m) => m.id === orig.id);
if (!kept || kept.message !== orig.message) failures.push(`message ${orig.id} is no longer "${orig.message}": ${JSON.stringify(kept)}`);

// the dead letter, its reason, the metrics
const reason = sh(`${process.env.FAULTS_SQL} ${q(`SELECT reason FROM dead_letters WHERE payload LIKE '%${poisonText}%'`)}`).trim();
if (dead() !== 1) failures.push(`${dead()} dead letters for the poison, not 1`);
if (!reason.includes(`failed to persist ${attempts} times`)) failures.push(`dead letter reason: "${reason}"`);
const metrics = await (await fetch(process.env.FAULTS_METRICS)).text();
const metric = (name) => metrics.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
if (metric('chatd_kafka_dead_letters_total') !== 1) failures.push(`chatd_kafka_dead_letters_total ${metric('chatd_kafka_dead_letters_total')}, not 1`);
if (metric('chatd_store_id_conflicts_total') < attempts) failures.push(`chatd_store_id_conflicts_total ${metric('chatd_store_id_conflicts_total')}, not ${attempts} or more`);
const maxLat = Math.max(...lat);
if (maxLat > LATENCY_MS) failures.push(`a RECEIPT in the poison's partition took ${maxLat} ms (bound ${LATENCY_MS} ms)`);
const x = await d.stop('SIGTERM', 30000);
if (x.code !== 0) failures.push(`SIGTERM: chatd exited ${JSON.stringify(x)}`);
lat.sort((a, b) => a - b);
report('poison', failures, {
    rooms: rooms.length, partitionRooms: flowing.length, publishes: lat.length,
    latencyMs: { p50: lat[Math.floor(lat.length / 2)], max: maxLat }, deadLetteredAfterMs: deadAt - t0, reason,
});
