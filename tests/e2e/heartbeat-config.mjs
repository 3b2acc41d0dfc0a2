// tests/e2e/heartbeat-config.mjs - STOMP heart-beats against a chatd whose
// heartbeat_send is below heartbeat_min (tests/suites/30-e2e.sh starts one for
// this file alone, with CHATD_HB_MIN set to its heartbeat_min): CONNECTED
// offers heartbeat_send, so a client that asks for beats gets them at least
// every max(sx, cy) ms (STOMP 1.2 "Heart-beating"); heartbeat_min holds the
// client's promise, never the server's own beats.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeMember } from './lib.mjs';
import { stompSession } from './conformance-lib.mjs';

const HB_MIN = Number(process.env.CHATD_HB_MIN);

test('STOMP: server heart-beats come as often as CONNECTED promised, even below heartbeat_min', { timeout: 60000 }, async () => {
    assert.ok(HB_MIN > 0, 'CHATD_HB_MIN names the heartbeat_min of the chatd under test');
    const m = await makeMember('hb');
    const c = await stompSession(m, { 'heart-beat': '0,1' });
    const t0 = Date.now();
    const [sx] = c.connected.headers['heart-beat'].split(',').map(Number);
    assert.ok(sx > 0 && sx * 4 <= HB_MIN, `CONNECTED offers heart-beats every ${sx} ms, well below heartbeat_min ${HB_MIN}`);
    // negotiated: max(sx, 1) = sx. Beats held to heartbeat_min would come
    // HB_MIN ms apart; due ones come sx ms apart (plus the loop's delays)
    await c.waitFor(() => c.heartbeats.length >= 3, HB_MIN * 4 + 10000, 'three heart-beats');
    const times = [t0, ...c.heartbeats.slice(0, 3)];
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    c.sock.destroy();
    for (const g of gaps) assert.ok(g < HB_MIN / 2, `heart-beats ${gaps.join(', ')} ms apart: CONNECTED promised ${sx} ms`);
});
