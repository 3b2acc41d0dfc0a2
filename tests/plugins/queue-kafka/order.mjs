// tests/plugins/queue-kafka/order.mjs - one order per room with two chatd
// nodes whose clocks differ by seconds (node 2 runs under libfaketime), one
// Kafka (mock) cluster, one PostgreSQL (docs/delivery.md, "Order"):
//   - two members, one on each node, write into one room alternately; the
//     live order seen by the room subscribers on both nodes, the history of
//     both nodes and the room list (last message, lastReadId, unread) agree,
//     whatever the message ids (taken from each node's clock) say;
//   - a room cursor received on node 1 resumes on node 2 exactly: every
//     message after it, each once, in order, up to a final marker.
//   KAFKA_ORDER_NODES="http://127.0.0.1:P1 http://127.0.0.1:P2"  node order.mjs
import {
    makeMember, connect, publish, roomOf, closeAll, until, check, http, uid, subscribe,
} from './kclient.mjs';

const N = Number(process.env.KAFKA_ORDER_PER_WRITER || 15);
const nodes = (process.env.KAFKA_ORDER_NODES || '').split(/\s+/).filter(Boolean);
if (nodes.length !== 2) throw new Error('KAFKA_ORDER_NODES must list two node URLs');
const failures = [];

async function send(client, room, text) {
    const res = await publish(client, room, text, 30000);
    check(res.status === 'receipt', `publish "${text}": ${res.status} ${res.frame?.headers?.message || ''}`, failures);
    return res;
}

const has = (box, text) => box.messages.some((m) => m.message === text);
const texts = (msgs) => msgs.map((m) => m.message);

const a = await makeMember(nodes[0], 'ord-a-');
const b = await makeMember(nodes[1], 'ord-b-');
const room = roomOf(a, b);
const ca = await connect(nodes[0], a);
const cb = await connect(nodes[1], b);
const boxA = await subscribe(ca, `/sub/chat/room/${room}`);
const boxB = await subscribe(cb, `/sub/chat/room/${room}`);

// alternately, each waiting for its RECEIPT: the order is the sending order
const sent = [];
for (let k = 0; k < N; k++) {
    for (const [who, c] of [['a', ca], ['b', cb]]) {
        const text = `order ${who} ${k}`;
        sent.push(text);
        await send(c, room, text);
    }
}
const marker = `order marker ${uid()}`;
await send(ca, room, marker);
sent.push(marker);
await until(() => has(boxA, marker) && has(boxB, marker), 30000, 'both subscribers to get the marker');

const liveA = texts(boxA.messages), liveB = texts(boxB.messages);
check(JSON.stringify(liveA) === JSON.stringify(sent), `node 1's live order differs from the sending order: ${liveA.join(' | ')}`, failures);
check(JSON.stringify(liveB) === JSON.stringify(liveA), `the live orders on the two nodes differ: ${liveB.join(' | ')}`, failures);
const ids = boxA.messages.map((m) => m.id);
const idOrder = [...ids].sort((x, y) => (BigInt(x) < BigInt(y) ? -1 : 1));
console.log(`ids ${JSON.stringify(ids) === JSON.stringify(idOrder) ? 'happen to follow' : 'do not follow'} the live order (the clocks differ)`);

// history on both nodes: the live order, and the cursors of the live frames
for (const [i, base, tok] of [[1, nodes[0], a.token], [2, nodes[1], b.token]]) {
    const h = await http(base, 'GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=100`, undefined, tok);
    check(h.status === 200, `history on node ${i}: ${h.status} ${h.text}`, failures);
    const msgs = h.json?.messages || [];
    check(JSON.stringify(texts(msgs)) === JSON.stringify(liveA), `history on node ${i} differs from the live order: ${texts(msgs).join(' | ')}`, failures);
    check(JSON.stringify(msgs.map((m) => m.cursor)) === JSON.stringify(boxA.cursors), `history cursors on node ${i} differ from the live cursors`, failures);
    // paging backward by id keeps the order
    const older = await http(base, 'GET', `/api/rooms/${encodeURIComponent(room)}/messages?limit=100&before=${msgs[msgs.length - 1]?.id}`, undefined, tok);
    check(JSON.stringify(texts(older.json?.messages || [])) === JSON.stringify(liveA.slice(0, -1)), `before=<newest id> on node ${i} is not the older part of the order`, failures);
}

// room list: a wrote the marker (all read, nothing unread); b read up to
// its own last message (the marker after it is unread)
const lastB = boxA.messages[boxA.messages.length - 2];
const summary = async (base, m) => {
    const r = await http(base, 'GET', '/api/rooms', undefined, m.token);
    const rows = Array.isArray(r.json) ? r.json : (r.json?.rooms || r.json?.items || []);
    return rows.find((x) => x.roomId === room);
};
const markerId = boxA.messages[boxA.messages.length - 1].id;
for (const [i, base] of [[1, nodes[0]], [2, nodes[1]]]) {
    const sa = await summary(base, a), sb = await summary(base, b);
    check(sa && sa.lastMessageId === markerId && sa.lastMessage === marker, `room list of a on node ${i}: last ${sa?.lastMessageId} "${sa?.lastMessage}", want the marker`, failures);
    check(sa && sa.unread === 0 && sa.lastReadId === markerId, `room list of a on node ${i}: unread ${sa?.unread} lastReadId ${sa?.lastReadId}, want 0 and the marker`, failures);
    check(sb && sb.lastMessageId === markerId, `room list of b on node ${i}: last ${sb?.lastMessageId}, want the marker`, failures);
    check(sb && sb.unread === 1 && sb.lastReadId === lastB.id, `room list of b on node ${i}: unread ${sb?.unread} lastReadId ${sb?.lastReadId}, want 1 and ${lastB.id}`, failures);
}

// a room cursor from node 1 resumes on node 2: after message k, every later
// one once, in order, then live (one more message and a final marker)
const k = N; // the middle of the stream
const cb2 = await connect(nodes[1], b);
const resumed = await subscribe(cb2, `/sub/chat/room/${room}`, { 'resume-after': boxA.cursors[k] });
const more = `order more ${uid()}`;
await send(ca, room, more);
const marker2 = `order marker2 ${uid()}`;
await send(ca, room, marker2);
await until(() => has(resumed, marker2), 30000, 'the resumed subscription on node 2 to get the final marker');
const want = [...liveA.slice(k + 1), more, marker2];
check(JSON.stringify(texts(resumed.messages)) === JSON.stringify(want), `resume on node 2 after message ${k}: got ${texts(resumed.messages).join(' | ')}; want ${want.join(' | ')}`, failures);

for (const c of [ca, cb, cb2]) check(c.errors.length === 0, `ERROR frames: ${c.errors.map((f) => f.headers.message)}`, failures);
await closeAll([ca, cb, cb2]);
if (failures.length) {
    console.error(`order: ${failures.length} failures`);
    process.exit(1);
}
console.log(`order: ok (${sent.length} messages by two nodes with different clocks: one order live, in history and the room list; a node 1 cursor resumed on node 2 exactly)`);
process.exit(0);
