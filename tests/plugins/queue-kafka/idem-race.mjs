// tests/plugins/queue-kafka/idem-race.mjs - two chatd nodes on one Kafka
// (mock) cluster and one PostgreSQL receive the same member's SEND with the
// same idempotency key at once (docs/delivery.md, "Idempotent SEND"): the
// store keeps exactly one message, both RECEIPTs name it, and every
// subscriber on both nodes (the room and both members' sides) gets it
// exactly once, checked after a final marker.
//   KAFKA_ORDER_NODES="http://127.0.0.1:P1 http://127.0.0.1:P2"
//   KAFKA_PG="host=... dbname=... user=chatd"  node idem-race.mjs
import {
    makeMember, connect, publish, roomOf, closeAll, until, check, uid, sql, subscribe,
} from './kclient.mjs';

const ROUNDS = Number(process.env.KAFKA_RACE_ROUNDS || 8);
const nodes = (process.env.KAFKA_ORDER_NODES || '').split(/\s+/).filter(Boolean);
if (nodes.length !== 2) throw new Error('KAFKA_ORDER_NODES must list two node URLs');
const failures = [];

const a = await makeMember(nodes[0], 'race-a-');
const b = await makeMember(nodes[1], 'race-b-');
const room = roomOf(a, b);
// a sends through both nodes; b and a listen on both
const send1 = await connect(nodes[0], a);
const send2 = await connect(nodes[1], a);
const boxes = [];
for (const [i, base] of nodes.entries()) {
    const cb = await connect(base, b);
    const ca = await connect(base, a);
    boxes.push({ who: `b room on node ${i + 1}`, client: cb, box: await subscribe(cb, `/sub/chat/room/${room}`) });
    boxes.push({ who: `b side on node ${i + 1}`, client: cb, box: await subscribe(cb, `/sub/chat/side/${b.id}`) });
    boxes.push({ who: `a side on node ${i + 1}`, client: ca, box: await subscribe(ca, `/sub/chat/side/${a.id}`) });
}

const texts = [];
for (let r = 0; r < ROUNDS; r++) {
    const key = uid('race-key-');
    const text = `race ${r} ${uid()}`;
    texts.push(text);
    const [r1, r2] = await Promise.all([
        publish(send1, room, text, 30000, { 'idempotency-key': key }),
        publish(send2, room, text, 30000, { 'idempotency-key': key }),
    ]);
    check(r1.status === 'receipt' && r2.status === 'receipt', `round ${r}: RECEIPTs ${r1.status} ${r2.status} ${r1.frame?.headers?.message || ''} ${r2.frame?.headers?.message || ''}`, failures);
    const id1 = r1.frame?.headers?.['message-id'], id2 = r2.frame?.headers?.['message-id'];
    const stored = sql(`SELECT id FROM messages WHERE message = '${text}'`).map((row) => row[0]);
    // the store may still be committing on the node that owns the partition
    if (stored.length === 0) {
        await until(() => sql(`SELECT id FROM messages WHERE message = '${text}'`).length > 0, 30000, `round ${r}'s message to be stored`);
    }
    const ids = sql(`SELECT id FROM messages WHERE message = '${text}'`).map((row) => row[0]);
    check(ids.length === 1, `round ${r}: ${ids.length} messages stored, want 1`, failures);
    check(id1 && id1 === id2, `round ${r}: the RECEIPTs name ${id1} and ${id2}`, failures);
    check(id1 === ids[0], `round ${r}: the RECEIPTs name ${id1}, the store holds ${ids[0]}`, failures);
}

// a final marker, then exact counts: each text once in every box
const marker = `race marker ${uid()}`;
const mr = await publish(send1, room, marker, 30000);
check(mr.status === 'receipt', `marker: ${mr.status}`, failures);
try {
    await until(() => boxes.every((x) => x.box.messages.some((m) => m.message === marker)), 30000, 'every subscriber to get the marker');
} catch (e) {
    check(false, e.message, failures);
}
for (const x of boxes) {
    for (const text of texts) {
        const got = x.box.messages.filter((m) => m.message === text);
        check(got.length === 1, `${x.who}: "${text}" delivered ${got.length} times, want 1`, failures);
    }
}
const clients = [send1, send2, ...new Set(boxes.map((x) => x.client))];
for (const c of clients) check(c.errors.length === 0, `ERROR frames: ${c.errors.map((f) => f.headers.message)}`, failures);
await closeAll(clients);
if (failures.length) {
    console.error(`idem-race: ${failures.length} failures`);
    process.exit(1);
}
console.log(`idem-race: ok (${ROUNDS} keys sent to two nodes at once: each stored once, both RECEIPTs name it, delivered once to each of ${boxes.length} subscriptions)`);
process.exit(0);
