// tests/plugins/store-pg/busy.mjs - while PostgreSQL is down, chatd keeps at most
// store.max_pending uncommitted messages; beyond that a publish is refused
// with an error the client sees (a STOMP ERROR), memory does not grow, and
// once PostgreSQL is back the kept messages are stored exactly once and new
// publishes are acknowledged again.
//
// Run through tests/e2e/run.sh against chatd on PostgreSQL started with
// --set store.max_pending=10 (see tests/suites/50-pg.sh). Environment:
// CHATD_URL, PGTEST_CONNINFO, PGTEST_STOP_CMD, PGTEST_START_CMD, and
// BUSY_MAX_PENDING (the max_pending chatd runs with, default 10).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exec } from 'node:child_process';
import { promisify } from 'node:util';
import { makeMember, stomp, publish, roomOf, uid, sleep, logLine } from '../../e2e/lib.mjs';
import { psql } from './psql.mjs';

const run = promisify(exec);
const { PGTEST_CONNINFO, PGTEST_STOP_CMD, PGTEST_START_CMD } = process.env;
const MAX_PENDING = Number(process.env.BUSY_MAX_PENDING || 10);


test('publishes beyond max_pending are refused while PostgreSQL is down', { timeout: 120000 }, async () => {
    assert.ok(PGTEST_CONNINFO && PGTEST_STOP_CMD && PGTEST_START_CMD, 'PGTEST_* must be set');
    const a = await makeMember('ba');
    const b = await makeMember('bb');
    const room = roomOf(a, b);
    const tag = uid('busy-');
    const client = await stomp(a);
    const count = MAX_PENDING * 3;

    await run(PGTEST_STOP_CMD);
    let started = false;
    try {
        await logLine(/lost the connection to PostgreSQL/, 15000); // chatd noticed
        const outcomes = [];
        for (let i = 0; i < count && client.connected; i++) {
            outcomes.push(publish(client, '/pub/chat/message', { roomId: room, message: `${tag} ${i}` })
                .then(() => 'receipt', () => 'none'));
            await sleep(20);
        }
        // The refusal reaches the client as a STOMP ERROR with a reason. The
        // ERROR comes after the RECEIPTs of the SENDs accepted before it, so
        // only once those are stored: after PostgreSQL is back.
        await run(PGTEST_START_CMD);
        started = true;
        for (let t = 0; t < 400 && client.errors.length === 0; t++) await sleep(50);
        const err = client.errors.find((f) => f.headers && f.headers.message);
        assert.ok(err, `a STOMP ERROR frame arrived (errors: ${client.errors.length})`);
        console.log(`# refused with: ${err.headers.message}`);
        assert.match(err.headers.message, /stor|busy|retry|unavailable/i, 'the ERROR says why');
        await client.deactivate();
        const got = await Promise.all(outcomes);
        const firstNone = got.indexOf('none');
        assert.equal(firstNone, MAX_PENDING, `exactly max_pending SENDs were kept and acknowledged: ${got.join(',')}`);
    } finally {
        if (!started) await run(PGTEST_START_CMD);
    }

    // after PostgreSQL is back: what was kept is stored once, at most max_pending of them
    let rows = '';
    for (let t = 0; t < 100; t++) {
        rows = await psql(
            "SELECT count(*), count(DISTINCT message) FROM messages WHERE room_id = :'v1' AND message LIKE :'v2' || ' %'",
            room, tag);
        if (rows.split('|')[0] === String(MAX_PENDING)) break;
        await sleep(100);
    }
    const [n, distinct] = rows.split('|').map(Number);
    console.log(`# ${n} of the refused stream stored (max_pending ${MAX_PENDING})`);
    assert.equal(n, distinct, 'no message stored twice');
    assert.equal(n, MAX_PENDING, 'the max_pending messages kept while down, and only they, were committed once PostgreSQL was back');

    // and publishing works again
    const again = await stomp(a);
    await publish(again, '/pub/chat/message', { roomId: room, message: `${tag} after` });
    await again.deactivate();
    const after = await psql("SELECT count(*) FROM messages WHERE room_id = :'v1' AND message = :'v2'",
        room, `${tag} after`);
    assert.equal(after, '1', 'a publish after the outage is acknowledged and stored once');
});
