// tests/plugins/queue-kafka/side-fresh.mjs - a side cursor of a freshly
// started node resumes a partition that node had not fanned out yet
// (docs/delivery.md, "Resume": the node's table is seeded with the store's
// head of each partition before it accepts):
//   node side-fresh.mjs prep STATE   on node A (an older node): member m, two
//       rooms of m on different partitions, a probe in each, stored; STATE
//       (a JSON file) keeps them for the run
//   (the suite then starts node B, fresh, with fanout_lookback=0: it fans out
//   nothing of either partition before a message is published after its start)
//   node side-fresh.mjs run STATE    m's listener follows /sub/chat/side/{m}
//       on node B and gets one MESSAGE, of the first room only; it goes away;
//       the second room's peer sends (node A); once it is stored and node B
//       has fanned it out (to the peer's room subscription there), the
//       listener resumes on node B from its cursor: that message arrives
//       once, then a live marker of each room once, and nothing else.
//   KAFKA_ORDER_NODES="http://127.0.0.1:PA http://127.0.0.1:PB"  node side-fresh.mjs prep|run STATE
import { readFileSync, writeFileSync } from 'node:fs';
import { makeMember, connect, roomOf, closeAll, until, check, http, uid, subscribe, sendReceipted as send, roomHistory as history } from './kclient.mjs';
import { decodeSide, streamOf } from '../../delivery/sidecursor.mjs';

const nodes = (process.env.KAFKA_ORDER_NODES || '').split(/\s+/).filter(Boolean);
const [phase, statePath] = process.argv.slice(2);
if (nodes.length !== 2 || !['prep', 'run'].includes(phase) || !statePath)
    throw new Error('usage: KAFKA_ORDER_NODES="A B" node side-fresh.mjs prep|run STATE');
const [nodeA, nodeB] = nodes;
const failures = [];

/* wait until the store has text as room's last message */
const stored = (token, room, text) =>
    until(async () => (await history(nodeA, token, room)).at(-1)?.message === text, 30000, `"${text}" in the store`);

if (phase === 'prep') {
    const m = await makeMember(nodeA, 'fresh-m-');
    const rooms = []; // {room, peer, stream}
    for (let i = 0; i < 16 && rooms.length < 2; i++) {
        const peer = await makeMember(nodeA, `fresh-p${i}-`);
        const room = roomOf(m, peer);
        const client = await connect(nodeA, peer);
        const text = `fresh probe ${i} ${uid()}`;
        await send(client, room, text);
        await closeAll([client]);
        await stored(peer.token, room, text);
        const cursor = (await history(nodeA, peer.token, room)).at(-1).cursor;
        const stream = streamOf(cursor.split('.').at(-1));
        if (!rooms.some((r) => r.stream === stream)) rooms.push({ room, peer, stream });
    }
    if (rooms.length < 2) throw new Error('no two rooms on different partitions among 16');
    writeFileSync(statePath, JSON.stringify({ m, rooms }));
    console.log(`side-fresh prep: rooms ${rooms.map((r) => `${r.room} (stream ${r.stream})`).join(', ')}`);
    process.exit(0);
}

const { m, rooms } = JSON.parse(readFileSync(statePath, 'utf8'));
check(rooms.every((r) => r.stream > 0), `rooms on partitioned streams: ${rooms.map((r) => r.stream)}`, failures);
const [ra, rb] = rooms;
const peers = [];
for (const r of rooms) peers.push(await connect(nodeA, r.peer));
// room b's peer follows the room on node B: it tells when node B has fanned out
const observer = await connect(nodeB, rb.peer);
const watch = await subscribe(observer, `/sub/chat/room/${rb.room}`);
const key = (msg) => `${msg.type} ${msg.roomId} ${msg.message}`;

// the listener on the fresh node B: one MESSAGE, of room a only
const listener = await connect(nodeB, m);
const box = await subscribe(listener, `/sub/chat/side/${m.id}`);
const first = `fresh first ${uid()}`;
await send(peers[0], ra.room, first);
await until(() => box.messages.some((x) => x.message === first), 30000, 'the listener to get the first message');
check(box.messages.length === 1, `before the cut: ${box.messages.map(key).join(' | ')}, want the first message only`, failures);
const cursor = box.cursors.at(-1);
const { entries } = decodeSide(cursor);
console.log(`side-fresh: cursor ${cursor}: streams ${[...entries.keys()].join(' ')}`);
await closeAll([listener]);

// while it is away: room b (a partition node B has fanned out nothing of)
const missed = `fresh missed ${uid()}`;
await send(peers[1], rb.room, missed);
await stored(rb.peer.token, rb.room, missed);
await until(() => watch.messages.some((x) => x.message === missed), 30000, 'node B to fan out the missed message');

const resumer = await connect(nodeB, m);
const resumed = await subscribe(resumer, `/sub/chat/side/${m.id}`, { 'resume-after': cursor });
const markers = [];
for (const [i, r] of rooms.entries()) {
    const t = `fresh marker ${r.room} ${uid()}`;
    await send(peers[i], r.room, t);
    markers.push(`chat ${r.room} ${t}`);
}
const want = [`chat ${rb.room} ${missed}`, ...markers];
await until(() => markers.every((w) => resumed.messages.some((x) => key(x) === w)), 30000, 'the live markers after the resume');
const got = resumed.messages.map(key);
for (const w of want) {
    const n = got.filter((g) => g === w).length;
    check(n === 1, `resumed: "${w}" ${n} times, want once`, failures);
}
check(got.length === want.length, `resumed: ${got.join(' | ')}; want ${want.join(' | ')}`, failures);
for (const c of [resumer, observer, ...peers]) check(c.errors.length === 0, `ERROR frames: ${c.errors.map((f) => f.headers.message)}`, failures);
await closeAll([resumer, observer, ...peers]);
if (failures.length) {
    console.error(`side-fresh: ${failures.length} failures`);
    process.exit(1);
}
console.log('side-fresh: ok (a partition the fresh node had not fanned out is resumed exactly)');
process.exit(0);
