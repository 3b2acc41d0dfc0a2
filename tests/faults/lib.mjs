// tests/faults/lib.mjs - what the fault suites share: a chatd started and
// killed by the test itself (its command line after "--"), members sending
// with receipts through real @stomp/stompjs clients that reconnect after the
// daemon went away, and the read-back of what the store kept (REST history
// and the room list), checked against what the senders were told.
//
// Environment: FAULTS_URL (http://127.0.0.1:PORT the daemon listens on),
// FAULTS_LOG (the daemon's log, appended to), FAULTS_PIDFILE (the running
// daemon's pid, so that the suite's trap can kill it).
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import {
    sleep, http, connect, publish, makeMember, roomOf, waitHealthy, uid,
} from '../plugins/queue-kafka/kclient.mjs';

export { sleep, http, connect, publish, makeMember, roomOf, uid };

export const URL_ = (process.env.FAULTS_URL || '').replace(/\/+$/, '');
if (!URL_) throw new Error('FAULTS_URL is not set (run through tests/suites/55-faults.sh)');

/* the daemon's command line: everything after "--" on ours */
export function daemonArgv() {
    const i = process.argv.indexOf('--');
    if (i < 0 || i + 1 >= process.argv.length) throw new Error('usage: node SUITE.mjs -- CHATD ARGS...');
    return process.argv.slice(i + 1);
}

export class Daemon {
    constructor(argv, url = URL_) {
        this.argv = argv;
        this.url = url;
        this.proc = null;
        this.starts = 0;
    }

    start() {
        const fd = fs.openSync(process.env.FAULTS_LOG || '/dev/null', 'a');
        this.proc = spawn(this.argv[0], this.argv.slice(1), { stdio: ['ignore', fd, fd] });
        fs.closeSync(fd);
        const p = this.proc;
        this.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
        if (process.env.FAULTS_PIDFILE) fs.writeFileSync(process.env.FAULTS_PIDFILE, `${p.pid}\n`);
        this.starts++;
    }

    /* start and wait for /healthz 200 (the whole pipeline up) */
    async up(ms = 30000) {
        this.start();
        const dead = this.exited.then((x) => { throw new Error(`chatd exited during start-up: ${JSON.stringify(x)}`); });
        await Promise.race([waitHealthy(this.url, ms), dead]);
    }

    /* send SIG and wait for the exit, at most ms; returns {code, signal} */
    async stop(sig, ms = 30000) {
        const p = this.proc;
        p.kill(sig);
        let timer;
        const late = new Promise((resolve) => { timer = setTimeout(() => resolve(null), ms); });
        const x = await Promise.race([this.exited, late]);
        clearTimeout(timer);
        if (!x) {
            p.kill('SIGKILL');
            await this.exited;
            throw new Error(`chatd did not exit within ${ms} ms of ${sig}`);
        }
        this.proc = null;
        return x;
    }
}

/* Members that keep sending to their room with up to `window` publishes in
 * flight, reconnecting whenever the daemon went away. Every text is sent
 * once; outcome[text] is 'receipt', 'error' (an ERROR frame reached the
 * client before its connection closed), 'closed' (the connection closed
 * without an answer) or 'timeout'. */
export class Senders {
    constructor(url, tag, window = 3, paceMs = 4) {
        Object.assign(this, { url, tag, window, paceMs });
        this.outcome = new Map();
        this.inflight = 0;
        this.receipts = 0;
        this.unanswered = 0; // publishes that ended without a RECEIPT
        this.errors = new Map(); // the ERROR frames' message header -> count
        this.stopped = false;
        this.loops = [];
    }

    start(member, roomId) {
        this.loops.push(this.loop(member, roomId));
    }

    async loop(member, roomId) {
        let client = null, k = 0;
        const mine = new Set();
        const usable = () => client && !client.closed && client.errors.length === 0;
        while (!this.stopped) {
            if (!usable()) {
                await Promise.all([...mine]);
                if (client && !client.closed) await client.deactivate().catch(() => {});
                try {
                    client = await connect(this.url, member);
                } catch {
                    client = null;
                    await sleep(50);
                }
                continue;
            }
            if (mine.size >= this.window) {
                await Promise.race([...mine]);
                continue;
            }
            const text = `${this.tag} ${member.loginId} ${k++}`;
            this.outcome.set(text, 'pending');
            this.inflight++;
            const p = publish(client, roomId, text, 15000).then((r) => {
                this.inflight--;
                this.outcome.set(text, r.status);
                if (r.status === 'receipt') this.receipts++;
                else this.unanswered++;
                if (r.status === 'error') {
                    const why = r.frame?.headers?.message || '';
                    this.errors.set(why, (this.errors.get(why) || 0) + 1);
                }
                mine.delete(p);
            });
            mine.add(p);
            await sleep(this.paceMs);
        }
        await Promise.all([...mine]);
        if (client && !client.closed) await client.deactivate().catch(() => {});
    }

    async stop() {
        this.stopped = true;
        await Promise.all(this.loops);
    }

    texts(status) {
        return [...this.outcome].filter(([, s]) => s === status).map(([t]) => t);
    }

    /* outcome -> count */
    tally() {
        const t = {};
        for (const s of this.outcome.values()) t[s] = (t[s] || 0) + 1;
        return t;
    }
}

/* every message of a room, oldest first, through REST history pages */
export async function history(member, roomId) {
    const all = [];
    let before = '';
    for (;;) {
        const q = `limit=200${before ? `&before=${before}` : ''}`;
        const r = await http(URL_, 'GET', `/api/rooms/${encodeURIComponent(roomId)}/messages?${q}`, undefined, member.token);
        if (r.status !== 200) throw new Error(`history of ${roomId}: ${r.status} ${r.text}`);
        all.push(...r.json.messages);
        if (!r.json.next) break;
        before = r.json.next;
    }
    return all.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : BigInt(a.id) > BigInt(b.id) ? 1 : 0));
}

/* Check what the store kept against the senders' outcomes, for rooms
 * [{roomId, a, b}] (two members each). Pushes failures; returns counts. */
export async function checkStored(senders, rooms, failures) {
    const seen = new Map();
    let stored = 0;
    for (const { roomId, a, b } of rooms) {
        const msgs = await history(a, roomId);
        stored += msgs.length;
        const ids = new Set(msgs.map((m) => m.id));
        if (ids.size !== msgs.length) failures.push(`${roomId}: ${msgs.length - ids.size} ids appear twice in history`);
        for (const m of msgs) seen.set(m.message, (seen.get(m.message) || 0) + 1);
        for (const m of msgs) {
            if (!senders.outcome.has(m.message) && !m.message.startsWith(`${senders.tag} final`))
                failures.push(`${roomId}: stored text nobody sent: ${m.message}`);
        }
        await checkRoomList(a, b, roomId, msgs, failures);
        await checkRoomList(b, a, roomId, msgs, failures);
    }
    const count = (t) => seen.get(t) || 0;
    const receipted = senders.texts('receipt');
    const missing = receipted.filter((t) => count(t) === 0);
    const doubled = receipted.filter((t) => count(t) > 1);
    const others = [...senders.outcome].filter(([, s]) => s !== 'receipt').map(([t]) => t);
    const othersTwice = others.filter((t) => count(t) > 1);
    if (missing.length) failures.push(`${missing.length} of ${receipted.length} receipted messages missing from history, e.g. ${missing.slice(0, 3)}`);
    if (doubled.length) failures.push(`${doubled.length} receipted messages stored more than once, e.g. ${doubled.slice(0, 3)}`);
    if (othersTwice.length) failures.push(`${othersTwice.length} unreceipted messages stored more than once, e.g. ${othersTwice.slice(0, 3)}`);
    return { stored, receipted: receipted.length, unreceiptedStored: others.filter((t) => count(t) === 1).length, count };
}

/* the room list of `me` agrees with the room's messages: last message and
 * its id are the newest; lastReadId is my own newest message (no READ is
 * sent by these tests, and writing marks everything before it read);
 * unread is the number of the peer's messages after it */
async function checkRoomList(me, peer, roomId, msgs, failures) {
    const r = await http(URL_, 'GET', '/api/rooms', undefined, me.token);
    if (r.status !== 200) {
        failures.push(`room list of ${me.loginId}: ${r.status}`);
        return;
    }
    const row = r.json.find((x) => x.roomId === roomId);
    if (!row) {
        failures.push(`room list of ${me.loginId} lacks ${roomId}`);
        return;
    }
    const last = msgs[msgs.length - 1];
    const mineIds = msgs.filter((m) => Number(m.writerId) === me.id).map((m) => BigInt(m.id));
    const lastRead = mineIds.length ? mineIds[mineIds.length - 1] : 0n;
    const unread = msgs.filter((m) => Number(m.writerId) === peer.id && BigInt(m.id) > lastRead).length;
    const where = `room list of ${me.loginId}, ${roomId}`;
    if (row.lastMessageId !== last.id || row.lastMessage !== last.message)
        failures.push(`${where}: last message ${row.lastMessageId} "${row.lastMessage}", history ends with ${last.id} "${last.message}"`);
    if (BigInt(row.lastReadId || 0) !== lastRead)
        failures.push(`${where}: lastReadId ${row.lastReadId}, own newest message ${lastRead}`);
    if (row.unread !== unread) failures.push(`${where}: unread ${row.unread}, history says ${unread}`);
}

/* a final message per room, sent after everything else settled: once it has
 * its RECEIPT, the stream of that room is complete */
export async function finalMarkers(tag, rooms, failures) {
    for (const { roomId, a } of rooms) {
        const c = await connect(URL_, a);
        const r = await publish(c, roomId, `${tag} final ${roomId}`, 15000);
        if (r.status !== 'receipt') failures.push(`final marker in ${roomId}: ${r.status}`);
        await c.deactivate();
    }
}

/* n rooms of two fresh members each */
export async function makeRooms(n, prefix) {
    const rooms = [];
    for (let i = 0; i < n; i++) {
        const a = await makeMember(URL_, `${prefix}a`), b = await makeMember(URL_, `${prefix}b`);
        rooms.push({ roomId: roomOf(a, b), a, b });
    }
    return rooms;
}

/* the daemon of our command line up, nrooms rooms, both members of each
 * sending with receipts (Senders); texts start with the returned tag */
export async function underLoad(nrooms, prefix) {
    const d = new Daemon(daemonArgv());
    await d.up();
    const rooms = await makeRooms(nrooms, prefix);
    const tag = `${prefix}${Date.now().toString(36)}`;
    const s = new Senders(URL_, tag);
    for (const r of rooms) {
        s.start(r.a, r.roomId);
        s.start(r.b, r.roomId);
    }
    return { d, rooms, tag, s };
}

export function until(pred, ms, what) {
    return (async () => {
        const end = Date.now() + ms;
        while (Date.now() < end) {
            if (pred()) return;
            await sleep(20);
        }
        if (!pred()) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    })();
}

export function report(name, failures, summary) {
    console.log(`${name}: ${JSON.stringify(summary)}`);
    if (failures.length) {
        for (const f of failures) console.error(`${name}: FAIL: ${f}`);
        process.exit(1);
    }
    console.log(`${name}: ok`);
}
