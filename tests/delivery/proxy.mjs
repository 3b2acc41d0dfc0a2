// tests/delivery/proxy.mjs - a TCP proxy of the tests' own that cuts every
// connection through it at random moments: each accepted connection goes to
// the next target (round robin, so every reconnect can land on another
// node) and is destroyed, both ways, after a random lifetime in
// [minMs, maxMs]. Cuts are counted. A target marked `down: true` (its node
// is stopped) is skipped; with every target down a connection is refused.
//
//   const p = await CuttingProxy.start([{host, port}, ...], {minMs, maxMs});
//   p.url -> 'http://127.0.0.1:PORT'; p.cuts; p.served[i] (connections sent
//   to targets[i]); p.lastTarget (index of the last one); await p.close();

import net from 'node:net';

export class CuttingProxy {
    static start(targets, { minMs = 200, maxMs = 600 } = {}) {
        const p = new CuttingProxy();
        p.targets = targets;
        p.next = 0;
        p.cuts = 0;
        p.served = targets.map(() => 0);
        p.lastTarget = -1;
        p.conns = new Set();
        p.server = net.createServer((client) => p.accept(client, minMs, maxMs));
        return new Promise((resolve, reject) => {
            p.server.once('error', reject);
            p.server.listen(0, '127.0.0.1', () => {
                p.port = p.server.address().port;
                p.url = `http://127.0.0.1:${p.port}`;
                resolve(p);
            });
        });
    }

    accept(client, minMs, maxMs) {
        let i = -1;
        for (let k = 0; k < this.targets.length && i < 0; k++) {
            const j = this.next++ % this.targets.length;
            if (!this.targets[j].down) i = j;
        }
        if (i < 0) {
            client.destroy();
            return;
        }
        const t = this.targets[i];
        this.served[i]++;
        this.lastTarget = i;
        const upstream = net.connect(t.port, t.host);
        const pair = { client, upstream };
        this.conns.add(pair);
        const cut = () => {
            clearTimeout(pair.timer);
            if (!this.conns.delete(pair)) return;
            client.destroy();
            upstream.destroy();
        };
        pair.timer = setTimeout(() => {
            this.cuts++;
            cut();
        }, minMs + Math.random() * (maxMs - minMs));
        client.on('error', cut).on('close', cut);
        upstream.on('error', cut).on('close', cut);
        client.pipe(upstream);
        upstream.pipe(client);
    }

    async close() {
        for (const { client, upstream, timer } of this.conns) {
            clearTimeout(timer);
            client.destroy();
            upstream.destroy();
        }
        this.conns.clear();
        await new Promise((r) => this.server.close(r));
    }
}
