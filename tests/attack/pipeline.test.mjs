// tests/attack/pipeline.test.mjs - the non-reading pipeliner (issue 13): TCP
// clients that pipeline hundreds of GETs and never read. Each connection
// may hold at most max_pipeline unwritten responses (and so descriptors);
// once its output stops draining it is closed within send_timeout; a calm
// member chats throughout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { HOST, PORT, LIMITS, fdCount, rssKiB, monitor, waitUntil, chatter } from './lib.mjs';

const ATTACKERS = 20;

function pipeliner(path, n) {
    const sock = net.connect(PORT, HOST);
    sock.pause(); // never read
    sock.on('error', () => {});
    const closed = new Promise((r) => sock.on('close', r));
    sock.on('connect', () => sock.write(`GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`.repeat(n)));
    return { sock, closed };
}

for (const [path, n] of [['/index.html', 500], ['/app.js', 2000], ['/big.txt', 100]]) {
    test(`${ATTACKERS} clients pipelining ${n} GET ${path} and never reading`, async () => {
        const fd0 = fdCount();
        const rss0 = rssKiB();
        const calm = await chatter();
        const mon = monitor();
        const t0 = Date.now();
        const atk = Array.from({ length: ATTACKERS }, () => pipeliner(path, n));
        // every attacker connection is gone from chatd within send_timeout
        // (plus the time its output took to stall, and 3 s of slack)
        const bound = LIMITS.sendTimeoutMs + 3000;
        let took, max;
        try {
            took = await waitUntil(() => fdCount() <= fd0 + 2, bound + 5000, 'attackers cut off');
        } finally {
            max = mon.stop();
            for (const a of atk) a.sock.destroy();
        }
        const lines = await calm.stop();
        console.log(`${path}: cut off after ${took} ms; max fds ${max.fd} (base ${fd0}); max RSS ${max.rss} KiB (base ${rss0}); calm lines ${lines}`);
        assert.ok(took <= bound, `cut off in ${took} ms (bound ${bound})`);
        // a socket each, and at most max_pipeline queued responses (files)
        const fdBound = fd0 + ATTACKERS * (1 + LIMITS.pipeline) + 4;
        assert.ok(max.fd <= fdBound, `max descriptors ${max.fd} <= ${fdBound}`);
        // output queued per connection is bounded by max_outbuf (1 MiB)
        assert.ok(max.rss - rss0 <= 64 * 1024, `RSS grew by ${max.rss - rss0} KiB (bound 64 MiB)`);
    });
}
