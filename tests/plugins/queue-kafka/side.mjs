// tests/plugins/queue-kafka/side.mjs - the side stream across two chatd nodes
// whose clocks differ by seconds (node 2 runs under libfaketime), one Kafka
// (mock) cluster, one PostgreSQL (docs/delivery.md, "Cursors" and "Resume"):
//   - member m has rooms on two different partitions (found by the room
//     cursors' positions), each peer on another node; m's listener follows
//     /sub/chat/side/{m} on node 1 while peers and m's laptop (node 2) write
//     and the laptop reads (READ events);
//   - the side cursor of the listener's last message (a vector with an entry
//     for each partition) resumes on node 2 after more writes and reads from
//     both nodes: exactly the missed messages and read events, once each, in
//     each room's order, then live; some of them have ids below the highest
//     the listener saw (node 2's clock is behind), which an id cursor would skip.
//   KAFKA_ORDER_NODES="http://127.0.0.1:P1 http://127.0.0.1:P2"  node side.mjs
import { makeMember, connect, roomOf, closeAll, until, check, http, uid, subscribe, sendReceipted as send, roomHistory as history } from './kclient.mjs';
import { decodeSide, streamOf } from '../../delivery/sidecursor.mjs';

const nodes = (process.env.KAFKA_ORDER_NODES || '').split(/\s+/).filter(Boolean);
if (nodes.length !== 2) throw new Error('KAFKA_ORDER_NODES must list two node URLs');
const ROUNDS = Number(process.env.KAFKA_SIDE_ROUNDS || 5);
const failures = [];

/* a READ up to message id upTo, receipted */
function read(client, roomId, upTo) {
    return new Promise((resolve, reject) => {
        const receipt = uid('rd-');
        const timer = setTimeout(() => reject(new Error(`no RECEIPT for READ ${roomId} ${upTo}`)), 30000);
        client.watchForReceipt(receipt, () => { clearTimeout(timer); resolve(); });
        client.publish({
            destination: '/pub/chat/read',
            body: JSON.stringify({ roomId, upTo }),
            headers: { 'content-type': 'application/json', receipt },
        });
    });
}

/* what an event is, the same for the sender and the listener */
const key = (m) => (m.type === 'read' ? `read ${m.roomId} ${m.upTo}` : `chat ${m.roomId} ${m.message}`);

// m on node 1; peers alternately on node 2 and node 1, until two rooms are on
// different partitions (a probe message each; its room cursor names the
// position). m's listener follows the side stream on node 1 from before the
// first probe: node 1 fans out a probe of a partition node 2 persists only
// once node 2 has committed it, which may be after the probe is in history,
// so the probes are part of what the listener must get, not a race.
const m = await makeMember(nodes[0], 'side-m-');
const listener = await connect(nodes[0], m);
const box = await subscribe(listener, `/sub/chat/side/${m.id}`);
const rooms = []; // {room, peer, client, stream}
const extra = [];
const probes = [];
for (let i = 0; i < 16 && new Set(rooms.map((r) => r.stream)).size < 2; i++) {
    const node = nodes[(i + 1) % 2];
    const peer = await makeMember(node, `side-p${i}-`);
    const room = roomOf(m, peer);
    const client = await connect(node, peer);
    await send(client, room, `probe ${i}`);
    probes.push(`chat ${room} probe ${i}`);
    let cursor;
    await until(async () => (cursor = (await history(node, peer.token, room)).at(-1)?.cursor), 30000, `the probe of ${room} in history`);
    const stream = streamOf(cursor.split('.').at(-1));
    if (rooms.some((r) => r.stream === stream)) extra.push(client);
    else rooms.push({ room, peer, client, node, stream });
}
if (rooms.length < 2) throw new Error('no two rooms on different partitions among 16');
check(rooms.every((r) => r.stream > 0), `rooms on partitioned streams: ${rooms.map((r) => r.stream)}`, failures);
console.log(`rooms ${rooms.map((r) => `${r.room} (stream ${r.stream}, peer on ${r.node})`).join(', ')}`);

const laptop = await connect(nodes[1], m); // m's other device, on the skewed node

/* a round of writes and reads, each receipted before the next: the order of
 * each room is the order of this list */
async function round(tag, events) {
    for (let k = 0; k < ROUNDS; k++) {
        for (const r of rooms) {
            const t1 = `${tag} ${r.room} peer ${k}`;
            const id = await send(r.client, r.room, t1);
            events.push(`chat ${r.room} ${t1}`);
            if (k % 2 === 1) {
                await read(laptop, r.room, id);
                events.push(`read ${r.room} ${id}`);
            }
            const t2 = `${tag} ${r.room} m ${k}`;
            await send(laptop, r.room, t2);
            events.push(`chat ${r.room} ${t2}`);
        }
    }
}
const perRoom = (list, room) => list.filter((e) => e.split(' ')[1] === room);
const has = (b, want) => { const got = new Set(b.messages.map(key)); return want.every((e) => got.has(e)); };

// phase 1, live on node 1, after the probes; the last message sent is m's
// own through node 1 (its id from node 1's clock, ahead of node 2's)
const phase1 = [...probes];
await round('one', phase1);
const last1 = `one last ${uid()}`;
await send(listener, rooms[0].room, last1);
phase1.push(`chat ${rooms[0].room} ${last1}`);
await until(() => has(box, phase1), 30000, 'the listener on node 1 to get phase 1');
check(box.messages.length === phase1.length, `phase 1: ${box.messages.length} messages, want ${phase1.length}`, failures);
for (const r of rooms)
    check(JSON.stringify(perRoom(box.messages.map(key), r.room)) === JSON.stringify(perRoom(phase1, r.room)), `phase 1 order in ${r.room}`, failures);
// the cursor of the last MESSAGE the listener got (of either partition: the
// two arrive through different fan-out paths), and the highest id it saw:
// an id cursor would skip every missed message below it
const cursor = box.cursors.at(-1);
const cursorId = box.messages.filter((x) => x.type === 'chat').reduce((a, x) => (BigInt(x.id) > a ? BigInt(x.id) : a), 0n);
const { member, entries } = decodeSide(cursor);
check(member === String(m.id), `the cursor names member ${member}`, failures);
for (const r of rooms) check(entries.has(r.stream), `the cursor ${cursor} has an entry for stream ${r.stream}`, failures);
await closeAll([listener]);

// phase 2, while the listener is away: writes and reads through both nodes
const phase2 = [];
await round('two', phase2);
// the store has all of it before the resume (the RECEIPT only says Kafka has it)
for (const r of rooms) {
    const lastText = perRoom(phase2, r.room).filter((e) => e.startsWith('chat')).at(-1).split(' ').slice(2).join(' ');
    await until(async () => (await history(nodes[1], m.token, r.room)).at(-1)?.message === lastText, 30000, `phase 2 of ${r.room} in the store`);
}
const ids2 = [];
const resumer = await connect(nodes[1], m);
const resumed = await subscribe(resumer, `/sub/chat/side/${m.id}`, { 'resume-after': cursor });
// then live: a marker per room from its peer
const markers = [];
for (const r of rooms) {
    const t = `side marker ${r.room} ${uid()}`;
    await send(r.client, r.room, t);
    markers.push(`chat ${r.room} ${t}`);
}
await until(() => has(resumed, markers), 30000, 'the resumed subscription on node 2 to get the live markers');
const want = [...phase2, ...markers];
const got = resumed.messages.map(key);
const counts = new Map();
for (const g of got) counts.set(g, (counts.get(g) || 0) + 1);
check(got.length === want.length, `resumed: ${got.length} events, want ${want.length}`, failures);
for (const w of want) check(counts.get(w) === 1, `resumed: "${w}" ${counts.get(w) || 0} times, want once`, failures);
for (const g of got) check(want.includes(g), `resumed: "${g}" was not missed (phase 1 or unknown)`, failures);
for (const r of rooms)
    check(JSON.stringify(perRoom(got, r.room)) === JSON.stringify(perRoom(want, r.room)), `resumed order in ${r.room}: ${perRoom(got, r.room).join(' | ')}`, failures);
for (const msg of resumed.messages) if (msg.type === 'chat') ids2.push(BigInt(msg.id));
const below = ids2.filter((id) => id < cursorId).length;
console.log(`${below} of the resumed messages have ids below the highest the listener saw (node 2's clock is behind)`);
check(below > 0, 'no resumed message has an id below the highest the listener saw: the clocks are not skewed', failures);

for (const c of [laptop, resumer, ...rooms.map((r) => r.client), ...extra])
    check(c.errors.length === 0, `ERROR frames: ${c.errors.map((f) => f.headers.message)}`, failures);
await closeAll([laptop, resumer, ...rooms.map((r) => r.client), ...extra]);
if (failures.length) {
    console.error(`side: ${failures.length} failures`);
    process.exit(1);
}
console.log(`side: ok (${want.length} events of ${rooms.length} rooms on streams ${rooms.map((r) => r.stream)} resumed on node 2 from a node 1 cursor exactly)`);
process.exit(0);
