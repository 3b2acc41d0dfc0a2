// tests/delivery/backlog.test.mjs - a subscriber that stops reading while
// messages keep coming: what the kernel's socket buffers do not take waits
// in chatd's output (partial writes of a frame, the rest queued behind it,
// further frames behind that, writability, then writes from the deliver path
// again once the output is empty), and when it reads again every frame
// arrives whole and in order, on both of its subscriptions (the room and its
// own side destination: two frames per message on one connection).
//
// The subscriber is sent about twice what the kernel may buffer for it
// (the tcp_wmem and tcp_rmem maxima of /proc/sys/net/ipv4), with message
// sizes of 1 byte to 40 KB so that the writes stop at every kind of offset
// (inside a WebSocket header, the subscriber's own STOMP headers, the shared
// part). It reads nothing while they are sent, then reads everything.
//
// This file runs a chatd of its own (tests/delivery/daemon.mjs): the default
// config with a max_outbuf that holds the whole backlog, a send_timeout that
// a loaded machine cannot reach, and messages up to 40 KB.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Daemon, waitUntil } from './daemon.mjs';

const MAX_TEXT = 40000;
const d = await Daemon.create('delivery-backlog', [
    'chatd.publish_rate=0',
    `chatd.max_message_bytes=${MAX_TEXT}`,
    'ws.max_outbuf=256m',
    'ws.send_timeout=600',
]);
process.env.CHATD_URL = d.url;
const { makeMember, roomOf, stomp, closeAll, collectSynced, publish, uid, wsErrors } = await import('../e2e/lib.mjs');

/* the most the kernel may buffer for one loopback connection: the sender's
 * send buffer and the receiver's receive buffer at their maxima */
function kernelMax() {
    const max = (f) => Number(fs.readFileSync(`/proc/sys/net/ipv4/${f}`, 'utf8').trim().split(/\s+/)[2]);
    return max('tcp_wmem') + max('tcp_rmem');
}

/* message i: a deterministic text of a pseudo-random length in [1, MAX_TEXT] */
function textOf(i) {
    const len = 1 + ((i * 2654435761) % 4294967296) % MAX_TEXT;
    const head = `${i}:`;
    if (len <= head.length) return head;
    const fill = String.fromCharCode(97 + (i % 26)).repeat(len - head.length);
    return head + fill;
}

test.after(() => d.cleanup());

test('subscribers that stop reading get every frame whole and in order when they read again', async () => {
    await d.start();
    const a = await makeMember('ba');
    const b = await makeMember('bb');
    const room = roomOf(a, b);
    const ca = await stomp(a);
    const cb = await stomp(b, { heartbeatIncoming: 0, heartbeatOutgoing: 0 });
    const cc = await stomp(b, { heartbeatIncoming: 0, heartbeatOutgoing: 0 });
    try {
        // b's first connection: the room and its side, two frames of each
        // message (the second one queued behind the first); its second: the
        // room only, one frame a message, each the first of its loop round
        // (the SENDs go one at a time), so that the write the kernel stops
        // taking is one from the deliver path
        const boxes = [
            ['room', await collectSynced(cb, `/sub/chat/room/${room}`)],
            ['side', await collectSynced(cb, `/sub/chat/side/${b.id}`)],
            ['room only', await collectSynced(cc, `/sub/chat/room/${room}`)],
        ];
        const socks = [cb.webSocket._socket, cc.webSocket._socket];
        for (const s of socks) assert.ok(s && typeof s.pause === 'function', 'the subscriber has a socket to pause');

        // twice what the kernel may hold for one connection
        const want = 2 * kernelMax();
        const texts = [];
        for (let i = 0, bytes = 0; bytes < want; i++) {
            texts.push(textOf(i));
            bytes += texts[i].length;
        }
        const marker = uid('backlog-end-');
        texts.push(marker);

        for (const s of socks) s.pause(); // reading stops
        for (const text of texts) await publish(ca, '/pub/chat/message', { roomId: room, message: text });
        for (const s of socks) s.resume();

        const done = (msgs) => msgs.some((m) => m.message === marker);
        await waitUntil(() => boxes.every(([, box]) => done(box.messages)), 120000, 'the marker on every subscription', 100);
        for (const [name, box] of boxes) {
            // exactly these messages, whole, in the order they were sent
            assert.equal(box.messages.length, texts.length, `${name}: one frame per message`);
            box.messages.forEach((m, k) => {
                if (m.message !== texts[k]) assert.fail(`${name}: frame ${k} is not message ${k} (${m.message.length} bytes, want ${texts[k].length})`);
            });
        }
        assert.deepEqual(wsErrors, [], 'no socket errors');
        assert.deepEqual([...cb.errors, ...cc.errors], [], 'no STOMP ERROR frames');
    } finally {
        await closeAll(ca, cb, cc);
    }
});
