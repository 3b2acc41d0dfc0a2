// tests/plugins/store-pg/outage.mjs - PostgreSQL goes away in the middle of a stream of
// chat messages published with the real @stomp/stompjs client, and comes back.
// Every message that got a RECEIPT must be stored exactly once, and the
// peer's unread count must count each stored message exactly once.
//
// Run through tests/e2e/run.sh against chatd on PostgreSQL (see
// tests/suites/50-pg.sh). Environment: CHATD_URL (set by run.sh),
// PGTEST_CONNINFO (the database chatd uses), PGTEST_STOP_CMD and
// PGTEST_START_CMD (shell commands stopping and starting that server),
// OUTAGE_COUNT (messages, default 600), OUTAGE_DOWN_MS (default 2500).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exec } from 'node:child_process';
import { promisify } from 'node:util';
import { makeMember, stomp, publish, roomOf, uid, sleep, closeAll } from '../../e2e/lib.mjs';
import { psql } from './psql.mjs';

const run = promisify(exec);
const { PGTEST_CONNINFO, PGTEST_STOP_CMD, PGTEST_START_CMD } = process.env;
const COUNT = Number(process.env.OUTAGE_COUNT || 600);
const DOWN_MS = Number(process.env.OUTAGE_DOWN_MS || 2500);
const EVERY_MS = 8; // one publish every 8 ms: about 5 s of traffic


test('every acknowledged message is stored exactly once across a PostgreSQL outage', { timeout: 180000 }, async () => {
    assert.ok(PGTEST_CONNINFO && PGTEST_STOP_CMD && PGTEST_START_CMD,
        'PGTEST_CONNINFO, PGTEST_STOP_CMD and PGTEST_START_CMD must be set (tests/suites/50-pg.sh)');
    const a = await makeMember('oa');
    const b = await makeMember('ob');
    const room = roomOf(a, b);
    const client = await stomp(a);
    const tag = uid('outage-');

    let pgStopped = false; // restarted in the finally below, whatever fails
    try {
        const acked = new Set();
        const failed = [];
        const sentWhileDown = new Set();
        let down = false, downAt = 0, upAt = 0;
        const outage = (async () => {
            while (acked.size < 80) await sleep(10); // let the stream get going
            down = true;
            downAt = Date.now();
            pgStopped = true;
            await run(PGTEST_STOP_CMD);
            console.log(`# PostgreSQL stopped after ${acked.size} receipts`);
            await sleep(DOWN_MS); // the outage itself
            await run(PGTEST_START_CMD);
            pgStopped = false;
            upAt = Date.now();
            down = false;
            console.log(`# PostgreSQL started again after ${upAt - downAt} ms`);
        })();

        const pending = [];
        for (let i = 0; i < COUNT; i++) {
            if (down) sentWhileDown.add(i);
            const text = `${tag} ${i}`;
            // a generous receipt wait: messages sent during the outage are
            // acknowledged only once PostgreSQL has committed them
            pending.push(publish(client, '/pub/chat/message', { roomId: room, message: text, writer: a.loginId })
                .then(() => acked.add(i), (e) => failed.push(`${i}: ${e.message}`)));
            await sleep(EVERY_MS);
        }
        await outage;
        await Promise.all(pending);
        await closeAll(client);

        const ackedDuringOutage = [...sentWhileDown].filter((i) => acked.has(i)).length;
        console.log(`# ${COUNT} published, ${acked.size} acknowledged, ${failed.length} without receipt,`
            + ` ${sentWhileDown.size} sent while PostgreSQL was down (${ackedDuringOutage} of them acknowledged)`);
        if (failed.length) console.log(`# first failures: ${failed.slice(0, 5).join('; ')}`);

        // the outage really happened mid-stream, and messages published during
        // it were acknowledged once PostgreSQL was back
        assert.ok(sentWhileDown.size > 0, 'some messages were published while PostgreSQL was down');
        assert.ok(ackedDuringOutage > 0, 'messages published during the outage were acknowledged after it');

        // the database: each message text at most once, every acknowledged one present
        const rows = await psql(
            "SELECT message, count(*) FROM messages WHERE room_id = :'v1' AND message LIKE :'v2' || ' %' GROUP BY message",
            room, tag);
        const stored = new Map(rows ? rows.split('\n').map((l) => {
            const [msg, n] = l.split('|');
            return [Number(msg.slice(tag.length + 1)), Number(n)];
        }) : []);
        const dup = [...stored].filter(([, n]) => n !== 1);
        assert.deepEqual(dup, [], 'no message stored twice');
        const missing = [...acked].filter((i) => !stored.has(i));
        assert.deepEqual(missing, [], 'every acknowledged message is stored');
        console.log(`# stored: ${stored.size} distinct messages, none twice; all ${acked.size} acknowledged present`);

        // the summaries counted each stored message once
        const unread = await psql(
            "SELECT unread FROM rooms WHERE member_id = :'v1' AND room_id = :'v2'", b.id, room);
        assert.equal(Number(unread), stored.size, "the peer's unread count equals the messages stored");
        const mine = await psql(
            "SELECT unread FROM rooms WHERE member_id = :'v1' AND room_id = :'v2'", a.id, room);
        assert.equal(Number(mine), 0, "the writer's unread count is 0");
    } finally {
        if (pgStopped) await run(PGTEST_START_CMD);
    }
});
