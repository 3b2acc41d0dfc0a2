// tests/plugins/queue-kafka/idem-fresh.mjs - a node that starts between two
// copies of one idempotency key delivers only the first, the one the store
// keeps (docs/delivery.md, "Limits": the fan-out's memory of keys is seeded
// from the store at start):
//   node idem-fresh.mjs prep STATE   on node A: member a sends with key K
//       (copy 1, receipted, stored); STATE (a JSON file) keeps it for the run
//   (the suite then starts node B, fresh: its fan-out starts after the
//   store's head of each partition, so it never sees copy 1)
//   node idem-fresh.mjs run STATE    b follows the room on node B; a second
//       copy of K (another id, the same member and key: what a second node
//       publishes when both received K at once) is produced to the room's
//       partition with KAFKA_PRODUCE; then a marker from node A. b gets the
//       marker and nothing else, and the store holds K once, as copy 1.
//   KAFKA_ORDER_NODES="http://127.0.0.1:PA http://127.0.0.1:PB"
//   KAFKA_PG="host=... dbname=... user=chatd"
//   KAFKA_PRODUCE="kafka-produce BOOTSTRAP TOPIC"  node idem-fresh.mjs prep|run STATE
import { readFileSync, writeFileSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { makeMember, connect, roomOf, closeAll, until, check, http, uid, sql, subscribe, sendReceipted as send, roomHistory as history } from './kclient.mjs';

const nodes = (process.env.KAFKA_ORDER_NODES || '').split(/\s+/).filter(Boolean);
const [phase, statePath] = process.argv.slice(2);
if (nodes.length !== 2 || !['prep', 'run'].includes(phase) || !statePath || !process.env.KAFKA_PRODUCE)
    throw new Error('usage: KAFKA_ORDER_NODES="A B" KAFKA_PG=... KAFKA_PRODUCE=... node idem-fresh.mjs prep|run STATE');
const [nodeA, nodeB] = nodes;
const failures = [];
const q = (s) => `'${s.replace(/'/g, "'\\''")}'`;

if (phase === 'prep') {
    const a = await makeMember(nodeA, 'ifresh-a-'), b = await makeMember(nodeA, 'ifresh-b-');
    const room = roomOf(a, b), key = uid('ifresh-key-'), first = `ifresh first ${uid()}`;
    const client = await connect(nodeA, a);
    const id1 = await send(client, room, first, { 'idempotency-key': key });
    await closeAll([client]);
    await until(async () => (await history(nodeA, a.token, room)).some((m) => m.id === id1), 30000, 'copy 1 in the store');
    writeFileSync(statePath, JSON.stringify({ a, b, room, key, first, id1 }));
    console.log(`idem-fresh prep: ${room}, key ${key}, copy 1 ${id1}`);
    process.exit(0);
}

const { a, b, room, key, first, id1 } = JSON.parse(readFileSync(statePath, 'utf8'));
const listener = await connect(nodeB, b);
const box = await subscribe(listener, `/sub/chat/room/${room}`);
const orig = (await history(nodeA, a.token, room)).find((m) => m.id === id1);
// copy 2: another id (node_id 1023, which no node of the suite has), the
// same writer, key and time, on the room's partition (Kafka key: the room)
const second = `ifresh second ${uid()}`;
const id2 = ((BigInt(Date.now() - 1704067200000) << 22n) | (1023n << 12n) | BigInt(Math.floor(Math.random() * 4096))).toString();
const value = JSON.stringify({
    type: 'chat', id: id2, roomId: room, writer: orig.writer, writerId: Number(orig.writerId),
    message: second, timestamp: orig.timestamp, idempotencyKey: key,
});
console.log(`idem-fresh: ${execSync(`${process.env.KAFKA_PRODUCE} ${q(room)}`, { encoding: 'utf8', shell: '/bin/bash', input: value, timeout: 60000 }).trim()} (copy 2, ${id2})`);
// after it on the same partition: the marker; once b has it, node B has
// fanned out copy 2 (or dropped it)
const sender = await connect(nodeA, a);
const marker = `ifresh marker ${uid()}`;
await send(sender, room, marker);
await until(() => box.messages.some((m) => m.message === marker), 30000, 'the marker on the fresh node');
const got = box.messages.map((m) => m.message);
check(got.length === 1 && got[0] === marker, `the fresh node delivered ${JSON.stringify(got)}; want the marker only`, failures);
const stored = sql(`SELECT id, message FROM messages WHERE room_id = '${room}' ORDER BY pos`);
check(JSON.stringify(stored) === JSON.stringify([[id1, first], [stored.at(-1)?.[0], marker]]),
    `the store holds ${JSON.stringify(stored)}; want copy 1 and the marker`, failures);
const rec = sql(`SELECT msg_id FROM idempotency WHERE member_id = ${Number(a.id)} AND idem_key = '${key}'`);
check(JSON.stringify(rec) === JSON.stringify([[id1]]), `the key's record: ${JSON.stringify(rec)}, want copy 1 (${id1})`, failures);
for (const c of [listener, sender]) check(c.errors.length === 0, `ERROR frames: ${c.errors.map((f) => f.headers.message)}`, failures);
await closeAll([listener, sender]);
if (failures.length) {
    console.error(`idem-fresh: ${failures.length} failures`);
    process.exit(1);
}
console.log('idem-fresh: ok (a fresh node dropped the second copy of a stored key)');
process.exit(0);
