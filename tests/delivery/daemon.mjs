// tests/delivery/daemon.mjs - a chatd of the test's own, for the suites that
// kill and restart it: one database and one port across restarts, its log in
// $CHATD_OUT/NAME.log. Import it BEFORE tests/e2e/lib.mjs: it points
// CHATD_URL at its own port, which lib.mjs reads once.
//
//   const d = await Daemon.create('name', ['store.path=...']);   // not started
//   await d.start(); d.kill9(); await d.start(); await d.stop();

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const top = process.env.CHATD_TOP || path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const bin = process.env.CHATD_BIN || path.join(process.env.CHATD_BUILD || path.join(top, 'build'), 'core', 'chatd');
const outDir = process.env.CHATD_OUT || path.join(top, 'tests', 'out');

export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/* wait until pred() resolves truthy, polling every `every` ms, or throw */
export async function waitUntil(pred, ms, what, every = 50) {
    const deadline = Date.now() + ms;
    for (;;) {
        if (await pred()) return;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, every));
    }
}

export class Daemon {
    static async create(name, sets = [], conf = path.join(top, 'etc', 'chatd.conf')) {
        const d = new Daemon();
        d.name = name;
        d.conf = conf;
        d.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-delivery-'));
        d.port = await freePort();
        d.url = `http://127.0.0.1:${d.port}`;
        d.sets = [
            `ws.listen=127.0.0.1:${d.port}`,
            `ws.allowed_origins=${d.url}`,
            `ws.web_root=${path.join(top, 'web')}`,
            `store.path=${path.join(d.dir, 'chatd.db')}`,
            ...sets,
        ];
        d.proc = null;
        d.starts = 0;
        fs.mkdirSync(outDir, { recursive: true });
        return d;
    }

    /* start and wait for /healthz (the whole pipeline up) */
    async start() {
        if (this.proc) throw new Error(`${this.name}: already running`);
        const log = fs.openSync(path.join(outDir, `${this.name}.log`), 'a');
        const args = ['-c', this.conf];
        for (const s of this.sets) args.push('--set', s);
        this.proc = spawn(bin, args, { cwd: top, stdio: ['ignore', log, log] });
        fs.closeSync(log);
        this.starts++;
        const proc = this.proc;
        this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
        await waitUntil(async () => {
            if (proc.exitCode !== null) throw new Error(`${this.name}: chatd exited during start-up (see ${this.name}.log)`);
            try {
                const r = await fetch(this.url + '/healthz');
                return r.status === 200;
            } catch {
                return false;
            }
        }, 30000, `${this.name} /healthz`);
    }

    /* SIGKILL, and wait until the process is gone */
    async kill9() {
        if (!this.proc) return;
        this.proc.kill('SIGKILL');
        await this.exited;
        this.proc = null;
    }

    /* SIGTERM (graceful stop); resolves with the exit code */
    async stop() {
        if (!this.proc) return 0;
        this.proc.kill('SIGTERM');
        const { code } = await this.exited;
        this.proc = null;
        return code;
    }

    async cleanup() {
        await this.kill9();
        fs.rmSync(this.dir, { recursive: true, force: true });
    }
}
