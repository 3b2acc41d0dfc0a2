// tests/plugins/queue-kafka/side-reread.mjs - a side resume on a freshly
// started node whose fan-out reads again messages the store already holds
// (fanout_start=clock, fanout_lookback covering them): each arrives at most once, from the
// replay or not at all, never again live (docs/delivery.md, "Resume": a
// resumed side subscription keeps its own vector for its life):
//   node side-reread.mjs prep STATE   on node A: member m and a peer, N
//       messages of their room on m's side stream, all stored; STATE keeps
//       m's side cursor after the last one
//   (the suite then starts node C, fresh, with fanout_start=clock and a fanout_lookback that covers
//   those N: its table is seeded past them, its fan-out delivers them again)
//   node side-reread.mjs run STATE    at once on node C: the peer follows the
//       room (it shows the fan-out's re-read), m resumes its side stream from
//       the cursor; then the peer sends a marker (node A); once it has
//       arrived on both, m's resumed stream holds the marker, once, and
//       nothing else.
//   KAFKA_ORDER_NODES="http://127.0.0.1:PA http://127.0.0.1:PC"  node side-reread.mjs prep|run STATE
import { readFileSync, writeFileSync } from 'node:fs';
import { makeMember, connect, roomOf, closeAll, until, check, http, uid, subscribe, sendReceipted as send } from './kclient.mjs';

const N = 30;
const nodes = (process.env.KAFKA_ORDER_NODES || '').split(/\s+/).filter(Boolean);
const [phase, statePath] = process.argv.slice(2);
if (nodes.length !== 2 || !['prep', 'run'].includes(phase) || !statePath)
    throw new Error('usage: KAFKA_ORDER_NODES="A C" node side-reread.mjs prep|run STATE');
const [nodeA, nodeC] = nodes;
const failures = [];
const key = (msg) => `${msg.type} ${msg.roomId} ${msg.message}`;

async function lastStored(token, room) {
    const h = await http(nodeA, 'GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=1`, undefined, token);
    if (h.status !== 200) throw new Error(`history of ${room}: ${h.status} ${h.text}`);
    return h.json.messages.at(-1)?.message;
}

if (phase === 'prep') {
    const m = await makeMember(nodeA, 'reread-m-');
    const peer = await makeMember(nodeA, 'reread-p-');
    const room = roomOf(m, peer);
    const listener = await connect(nodeA, m);
    const box = await subscribe(listener, `/sub/chat/side/${m.id}`);
    const sender = await connect(nodeA, peer);
    const texts = [];
    for (let i = 0; i < N; i++) {
        const t = `reread ${i} ${uid()}`;
        await send(sender, room, t);
        texts.push(t);
    }
    await until(() => box.messages.some((x) => x.message === texts.at(-1)), 30000, 'the last message on the side stream');
    await until(async () => (await lastStored(peer.token, room)) === texts.at(-1), 30000, 'the last message in the store');
    check(box.messages.length === N, `prep: ${box.messages.length} side events, want ${N}`, failures);
    const cursor = box.cursors.at(-1);
    await closeAll([listener, sender]);
    if (failures.length) {
        console.error(`side-reread prep: ${failures.join('; ')}`);
        process.exit(1);
    }
    writeFileSync(statePath, JSON.stringify({ m, peer, room, cursor, texts }));
    console.log(`side-reread prep: ${N} messages in ${room}, cursor ${cursor}`);
    process.exit(0);
}

const { m, peer, room, cursor, texts } = JSON.parse(readFileSync(statePath, 'utf8'));
const observer = await connect(nodeC, peer);
const watch = await subscribe(observer, `/sub/chat/room/${room}`);
const resumer = await connect(nodeC, m);
const resumed = await subscribe(resumer, `/sub/chat/side/${m.id}`, { 'resume-after': cursor });
const sender = await connect(nodeA, peer);
const marker = `reread marker ${uid()}`;
await send(sender, room, marker);
await until(() => watch.messages.some((x) => x.message === marker), 60000, 'the marker on the room (node C)');
await until(() => resumed.messages.some((x) => x.message === marker), 30000, 'the marker on the resumed side stream');
const got = resumed.messages.map(key);
const want = `chat ${room} ${marker}`;
check(got.length === 1 && got[0] === want, `resumed side stream: ${got.length} events (${got.slice(0, 3).join(' | ')}${got.length > 3 ? ' ...' : ''}); want only "${want}"`, failures);
// how many old messages node C's fan-out delivered after the subscriptions
// (all N: the seam above was exercised; 0: its re-read came first)
const reread = watch.messages.filter((x) => texts.includes(x.message)).length;
console.log(`side-reread: node C's fan-out delivered ${reread} of the ${N} old messages live`);
for (const c of [observer, resumer, sender]) check(c.errors.length === 0, `ERROR frames: ${c.errors.map((f) => f.headers.message)}`, failures);
await closeAll([observer, resumer, sender]);
if (failures.length) {
    console.error(`side-reread: ${failures.length} failures:\n  ${failures.join('\n  ')}`);
    process.exit(1);
}
console.log('side-reread: ok (a side resume on a node whose fan-out re-read stored messages: the marker once, nothing again)');
process.exit(0);
