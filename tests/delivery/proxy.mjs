// tests/delivery/proxy.mjs - a TCP proxy of the tests' own that cuts every
// connection through it at random moments: each accepted connection goes to
// the next target (round robin, so every reconnect can land on another
// node) and is destroyed, both ways, after a random lifetime in
// [minMs, maxMs]. Cuts are counted.
//
//   const p = await CuttingProxy.start([{host, port}, ...], {minMs, maxMs});
//   p.url -> 'http://127.0.0.1:PORT'; p.cuts; await p.close();

import net from 'node:net';

export class CuttingProxy {
    static start(targets, { minMs = 200, maxMs = 600 } = {}) {
        const p = new CuttingProxy();
        p.targets = targets;
        p.next = 0;
        p.cuts = 0;
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
        const t = this.targets[this.next++ % this.targets.length];
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
