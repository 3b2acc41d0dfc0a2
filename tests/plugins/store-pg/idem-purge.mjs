// tests/plugins/store-pg/idem-purge.mjs - store-pg deletes expired
// idempotency keys in the background, in bounded batches: with
// chatd.idempotency_window=PURGE_WINDOW_S, store.idem_purge_interval_s=1 and
// store.idem_purge_batch=3, the keys of KEYS messages sent with an
// idempotency-key are all gone from the idempotency table once they are
// older than the window (several batches: the next follows a full one), and
// a key used again after that stores a new message.
//
// Run through tests/e2e/run.sh against chatd on PostgreSQL with those
// settings (see tests/suites/50-pg.sh). Environment: CHATD_URL,
// PGTEST_CONNINFO, PURGE_WINDOW_S (the window chatd runs with, default 3).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeMember, stomp, publish, roomOf, uid, sleep, closeAll } from '../../e2e/lib.mjs';
import { psql } from './psql.mjs';

const { PGTEST_CONNINFO } = process.env;
const WINDOW_MS = Number(process.env.PURGE_WINDOW_S || 3) * 1000;
const KEYS = 10;


const keysOf = (memberId) =>
    psql("SELECT count(*) FROM idempotency WHERE member_id = :'v1'", memberId).then(Number);

test('expired idempotency keys are deleted in the background, in batches', { timeout: 120000 }, async () => {
    assert.ok(PGTEST_CONNINFO, 'PGTEST_CONNINFO must be set');
    const a = await makeMember('ipa');
    const b = await makeMember('ipb');
    const room = roomOf(a, b);
    const client = await stomp(a);
    const run = uid('ip-');
    const t0 = Date.now();
    for (let i = 0; i < KEYS; i++) {
        const r = await publish(client, '/pub/chat/message', { roomId: room, message: `${run} ${i}` },
            { 'idempotency-key': `${run}-${i}` });
        assert.ok(r.headers['message-id'], 'RECEIPT names the message');
    }
    const stored = await keysOf(a.id);
    // a key is only deleted once older than the window: while the first one
    // is younger than that, every key must still be there
    if (Date.now() - t0 < WINDOW_MS) assert.equal(stored, KEYS, 'every key recorded');
    const deadline = Date.now() + 60000;
    let left = stored;
    while (left > 0 && Date.now() < deadline) {
        await sleep(200);
        left = await keysOf(a.id);
    }
    assert.equal(left, 0, `every expired key deleted (${left} of ${KEYS} left after 60 s)`);
    // the messages stay; the key is free again: a new message is stored
    assert.equal(Number(await psql("SELECT count(*) FROM messages WHERE room_id = :'v1'", room)), KEYS);
    const again = await publish(client, '/pub/chat/message', { roomId: room, message: `${run} again` },
        { 'idempotency-key': `${run}-0` });
    assert.ok(again.headers['message-id'], 'RECEIPT of the reused key');
    assert.equal(Number(await psql("SELECT count(*) FROM messages WHERE room_id = :'v1'", room)), KEYS + 1,
        'a key used again after it expired stores a new message');
    await closeAll(client);
});
