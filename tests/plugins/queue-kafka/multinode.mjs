// tests/plugins/queue-kafka/multinode.mjs - three chatd nodes, one Kafka (mock) cluster, one
// PostgreSQL: members connected to different nodes chat. Checks that every
// message reaches every subscriber (room and side, on every node) exactly
// once, that both members of a room see the same order and each writer's own
// order, and that the messages table holds each message once.
//   KAFKA_NODES="http://127.0.0.1:P1 http://127.0.0.1:P2 http://127.0.0.1:P3"
//   KAFKA_PG="host=127.0.0.1 port=... dbname=... user=chatd"  node multinode.mjs
import {
    nodesFromEnv, makeMember, connect, subscribe, publish, roomOf, closeAll, until, storedCounts,
    check, settle,
} from './kclient.mjs';

const PER_WRITER = Number(process.env.KAFKA_PER_WRITER || 15);
const nodes = nodesFromEnv();
const failures = [];
const tag = `mn${Date.now().toString(36)}`;

// six members, member i on node i % 3; every room spans two nodes
const members = [];
for (let i = 0; i < 6; i++) members.push({ ...(await makeMember(nodes[i % nodes.length], `mn${i}-`)), node: nodes[i % nodes.length] });
const pairs = [[0, 1], [2, 3], [4, 5], [0, 5], [1, 2], [3, 4]];
const rooms = pairs.map(([a, b]) => ({ id: roomOf(members[a], members[b]), a, b }));

for (const m of members) {
    m.client = await connect(m.node, m);
    m.side = await subscribe(m.client, `/sub/chat/side/${m.id}`);
    m.rooms = new Map();
}
for (const r of rooms) {
    for (const i of [r.a, r.b]) members[i].rooms.set(r.id, await subscribe(members[i].client, `/sub/chat/room/${r.id}`));
}

// every member writes PER_WRITER lines into each of its rooms, one after the
// other (each waits for its RECEIPT), all writers at once
const texts = [];
const writers = [];
for (const r of rooms) {
    for (const i of [r.a, r.b]) {
        writers.push((async () => {
            for (let k = 0; k < PER_WRITER; k++) {
                const text = `${tag} ${r.id} w${i} ${k}`;
                texts.push(text);
                const res = await publish(members[i].client, r.id, text, 30000);
                check(res.status === 'receipt', `publish "${text}" by member ${i} via ${members[i].node}: ${res.status} ${res.frame?.headers?.message || ''}`, failures);
            }
        })());
    }
}
const t0 = Date.now();
await Promise.all(writers);
console.log(`published ${texts.length} messages with receipts in ${Date.now() - t0} ms`);

const perRoom = 2 * PER_WRITER;
const wantSide = (m) => m.rooms.size * perRoom;
try {
    await until(() => members.every((m) => m.side.messages.length >= wantSide(m)
        && [...m.rooms.values()].every((b) => b.messages.length >= perRoom)), 30000, 'every subscriber to receive every message');
} catch (e) {
    check(false, e.message, failures);
}
// a marker per room, through a member on one node, to every subscriber on
// the others: a duplicate of anything before it would have arrived by then
try {
    await settle(rooms.map((r) => ({
        client: members[r.a].client,
        roomId: r.id,
        boxes: [r.a, r.b].flatMap((i) => [members[i].rooms.get(r.id), members[i].side]),
    })));
} catch (e) {
    check(false, e.message, failures);
}

const ids = (msgs) => msgs.map((m) => m.id);
for (const r of rooms) {
    const seqA = ids(members[r.a].rooms.get(r.id).messages);
    const seqB = ids(members[r.b].rooms.get(r.id).messages);
    for (const [who, seq] of [[r.a, seqA], [r.b, seqB]]) {
        check(seq.length === perRoom, `room ${r.id}: member ${who} (${members[who].node}) got ${seq.length} messages, want ${perRoom}`, failures);
        check(new Set(seq).size === seq.length, `room ${r.id}: member ${who} got a duplicate`, failures);
    }
    check(JSON.stringify(seqA) === JSON.stringify(seqB), `room ${r.id}: the two members saw different orders`, failures);
    // each writer's lines in the order written
    for (const who of [r.a, r.b]) {
        for (const box of [members[who].rooms.get(r.id), members[who].side]) {
            for (const w of [r.a, r.b]) {
                const ks = box.messages.filter((m) => m.roomId === r.id && m.message.includes(` w${w} `))
                    .map((m) => Number(m.message.split(' ').pop()));
                const sorted = [...ks].sort((x, y) => x - y);
                check(JSON.stringify(ks) === JSON.stringify(sorted), `${box.destination}: writer ${w}'s lines out of order: ${ks}`, failures);
            }
        }
        // the side destination carries the room's messages in the room's order
        const sideSeq = ids(members[who].side.messages.filter((m) => m.roomId === r.id));
        check(JSON.stringify(sideSeq) === JSON.stringify(seqA), `side of member ${who}: room ${r.id} differs from the room destination`, failures);
    }
}
for (const m of members) {
    check(m.side.messages.length === wantSide(m), `side of ${m.loginId}: ${m.side.messages.length} messages, want ${wantSide(m)}`, failures);
    check(new Set(ids(m.side.messages)).size === m.side.messages.length, `side of ${m.loginId}: duplicates`, failures);
    check(m.client.errors.length === 0, `${m.loginId} got ERROR frames: ${m.client.errors.map((f) => f.headers.message)}`, failures);
}

// the store: each message exactly once (persisted by one shared group)
let counts;
try {
    await until(() => {
        counts = storedCounts(texts);
        return [...counts.values()].every((n) => n >= 1);
    }, 30000, 'every message to be in the messages table');
} catch (e) {
    check(false, e.message, failures);
}
counts = storedCounts(texts);
const missing = [...counts].filter(([, n]) => n === 0).length;
const dup = [...counts].filter(([, n]) => n > 1).length;
check(missing === 0 && dup === 0, `messages table: ${missing} missing, ${dup} stored more than once (of ${texts.length})`, failures);

await closeAll(members.map((m) => m.client));
if (failures.length) {
    console.error(`multinode: ${failures.length} failures`);
    process.exit(1);
}
console.log(`multinode: ok (${texts.length} messages, ${rooms.length} rooms across ${nodes.length} nodes; each delivered once per subscriber, stored once)`);
process.exit(0);
