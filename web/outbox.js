/* outbox.js - the chat page's outbox: messages typed but not yet receipted.
 *
 * Each entry gets a random idempotency key when it is typed and keeps it until
 * a RECEIPT names the stored message, so a retry can never make a second
 * message (the server keeps one message per member and key). Entries persist
 * in sessionStorage (per member), so a reload of the tab keeps them; they are
 * sent one at a time in the order typed (a retry after a drop cannot overtake
 * an earlier message), and sent again with the same key after every reconnect
 * or a receipt timeout. An ERROR that names the SEND marks the entry failed
 * (the user retries, same key, or deletes it), unless it says the server may
 * succeed later (busy, rate, the queue, shutting down): then it waits for the
 * reconnect like a dropped one.
 *
 * No DOM here: the page renders from entries() and onChange(entry, what) with
 * what in 'added' | 'state' | 'delivered' | 'removed'. window.ChatdOutbox.
 */
(function (root) {
    'use strict';

    var RETRY_MS = 3000; /* after a receipt timeout on a live connection */
    var TEXT_MAX = 64 * 1024; /* what one stored entry may hold */
    /* ERROR messages of chatd that mean "not now" rather than "never" */
    var TRANSIENT_RE = /retry later|queue failed|slow down|shutting down|out of memory|busy/i;

    function randomKey() {
        var b = new Uint8Array(16);
        root.crypto.getRandomValues(b);
        return Array.prototype.map.call(b, function (x) { return (x < 16 ? '0' : '') + x.toString(16); }).join('');
    }

    /* Outbox(opts): opts.storage (a Storage or null), opts.storageKey,
     * opts.destination (the SEND destination), opts.client() -> the current
     * STOMP client (web/stomp.js) or null, opts.onChange(entry, what). */
    function Outbox(opts) {
        this.storage = opts.storage || null;
        this.storageKey = opts.storageKey;
        this.destination = opts.destination;
        this.client = opts.client;
        this.onChange = opts.onChange || function () {};
        this.list = [];
        this.busy = null; /* the entry in flight */
        this.timer = null;
        this.load();
    }

    Outbox.prototype.load = function () {
        var raw = null;
        try { raw = this.storage ? this.storage.getItem(this.storageKey) : null; } catch (e) { raw = null; }
        var list = [];
        try { list = raw ? JSON.parse(raw) : []; } catch (e) { list = []; }
        this.list = (Array.isArray(list) ? list : []).filter(function (e) {
            return e && typeof e.key === 'string' && /^[\x21-\x7e]{1,128}$/.test(e.key) &&
                typeof e.roomId === 'string' && typeof e.text === 'string';
        }).map(function (e) {
            return { key: e.key, roomId: e.roomId, text: e.text, at: e.at || Date.now(),
                state: e.error ? 'failed' : 'queued', error: e.error || null };
        });
    };

    Outbox.prototype.save = function () {
        if (!this.storage) return;
        var rows = this.list.map(function (e) {
            return { key: e.key, roomId: e.roomId, text: e.text, at: e.at, error: e.state === 'failed' ? e.error : undefined };
        });
        try {
            if (rows.length) this.storage.setItem(this.storageKey, JSON.stringify(rows));
            else this.storage.removeItem(this.storageKey);
        } catch (e) {
            /* storage full or denied: the outbox still works for this page's life */
        }
    };

    Outbox.prototype._changed = function (entry, what) {
        this.save();
        try { this.onChange(entry, what); } catch (e) { /* the page's rendering is not ours */ }
    };

    /* add(roomId, text) -> entry; sends as soon as the connection allows */
    Outbox.prototype.add = function (roomId, text) {
        var entry = { key: randomKey(), roomId: roomId, text: String(text).slice(0, TEXT_MAX), at: Date.now(),
            state: 'queued', error: null };
        this.list.push(entry);
        this._changed(entry, 'added');
        this.pump();
        return entry;
    };

    /* entries(roomId) -> the entries of that room, oldest first */
    Outbox.prototype.entries = function (roomId) {
        return this.list.filter(function (e) { return e.roomId === roomId; });
    };

    Outbox.prototype._find = function (key) {
        for (var i = 0; i < this.list.length; i++) if (this.list[i].key === key) return this.list[i];
        return null;
    };

    /* retry(key): a failed entry goes back in line, with its own key */
    Outbox.prototype.retry = function (key) {
        var e = this._find(key);
        if (!e || e.state !== 'failed') return;
        e.state = 'queued';
        e.error = null;
        this._changed(e, 'state');
        this.pump();
    };

    /* discard(key): drop a failed entry (one in flight is left alone) */
    Outbox.prototype.discard = function (key) {
        var e = this._find(key);
        if (!e || e === this.busy) return;
        this.list.splice(this.list.indexOf(e), 1);
        this._changed(e, 'removed');
    };

    /* clear(): forget everything (logout) */
    Outbox.prototype.clear = function () {
        clearTimeout(this.timer);
        this.list = [];
        this.busy = null;
        this.save();
    };

    /* pump(): send the oldest waiting entry if connected and nothing is in flight */
    Outbox.prototype.pump = function () {
        var self = this;
        clearTimeout(this.timer);
        this.timer = null;
        var client = this.client();
        if (this.busy || !client || !client.connected) return;
        var entry = null;
        for (var i = 0; i < this.list.length; i++) {
            if (this.list[i].state === 'queued') { entry = this.list[i]; break; }
        }
        if (!entry) return;
        this.busy = entry;
        entry.state = 'sending';
        this._changed(entry, 'state');
        client.send(this.destination, { roomId: entry.roomId, message: entry.text },
            { headers: { 'idempotency-key': entry.key } }).then(function (frame) {
            if (self.busy !== entry) return;
            self.busy = null;
            var i = self.list.indexOf(entry);
            if (i >= 0) self.list.splice(i, 1);
            entry.state = 'delivered';
            entry.messageId = (frame && frame.headers && frame.headers['message-id']) || null;
            self._changed(entry, 'delivered');
            self.pump();
        }, function (err) {
            if (self.busy !== entry) return;
            self.busy = null;
            if (self.list.indexOf(entry) < 0) return;
            if (err && err.frame && !TRANSIENT_RE.test(err.message)) {
                /* the server refused this SEND; the user decides */
                entry.state = 'failed';
                entry.error = err.message;
                self._changed(entry, 'state');
                self.pump();
                return;
            }
            /* dropped or no receipt in time: same key again, after a reconnect or a pause */
            entry.state = 'queued';
            self._changed(entry, 'state');
            var c = self.client();
            if (c && c.connected) self.timer = setTimeout(function () { self.pump(); }, RETRY_MS);
        });
    };

    root.ChatdOutbox = { Outbox: Outbox, randomKey: randomKey };
})(typeof window !== 'undefined' ? window : globalThis);
