/* stomp.js - a small STOMP 1.2 client over WebSocket for the chatd page.
 *
 * No dependencies and no build step. Works in browsers (window.ChatdStomp) and
 * in Node (globalThis.ChatdStomp, with a WebSocket implementation passed in).
 *
 * What it does:
 *   - CONNECT with accept-version 1.2,1.1,1.0 and heart-beat; heart-beats both
 *     ways (sends EOL, drops the socket when the server falls silent);
 *   - SUBSCRIBE / UNSUBSCRIBE; subscriptions survive reconnects (they are sent
 *     again after every CONNECTED, with headers the caller may recompute, e.g.
 *     a resume point);
 *   - SEND with an optional receipt: send() returns a Promise settled by the
 *     RECEIPT (or rejected by an ERROR carrying its receipt-id, or a drop);
 *   - frame parsing on bytes: several frames in one WebSocket message, one frame
 *     over several messages, content-length bodies (which may contain NUL),
 *     STOMP 1.2 header escaping, EOL heart-beats between frames;
 *   - reconnects after a drop with exponential backoff and jitter.
 */
(function (root) {
    'use strict';

    var encoder = new TextEncoder();
    var MAX_HEADER_BYTES = 64 * 1024;
    var MAX_FRAME_BYTES = 8 * 1024 * 1024;

    function escapeHeader(s) {
        return String(s)
            .replace(/\\/g, '\\\\')
            .replace(/\r/g, '\\r')
            .replace(/\n/g, '\\n')
            .replace(/:/g, '\\c');
    }

    function unescapeHeader(s) {
        return s.replace(/\\(.)/g, function (m, c) {
            switch (c) {
                case 'r': return '\r';
                case 'n': return '\n';
                case 'c': return ':';
                case '\\': return '\\';
                default: throw new Error('invalid header escape \\' + c);
            }
        });
    }

    /* encodeFrame(command, headers, body) -> Uint8Array. CONNECT/STOMP headers
     * are not escaped (STOMP 1.2 section "Value Encoding"). A body gets a
     * content-length unless the caller already set one. */
    function encodeFrame(command, headers, body) {
        var bodyBytes = body == null ? new Uint8Array(0)
            : (body instanceof Uint8Array ? body : encoder.encode(String(body)));
        var raw = command === 'CONNECT' || command === 'STOMP';
        var lines = [command];
        var hasLength = false;
        Object.keys(headers || {}).forEach(function (k) {
            var v = headers[k];
            if (v === undefined || v === null) return;
            if (k === 'content-length') hasLength = true;
            lines.push((raw ? k : escapeHeader(k)) + ':' + (raw ? String(v) : escapeHeader(v)));
        });
        if (bodyBytes.length > 0 && !hasLength) lines.push('content-length:' + bodyBytes.length);
        var head = encoder.encode(lines.join('\n') + '\n\n');
        var out = new Uint8Array(head.length + bodyBytes.length + 1);
        out.set(head, 0);
        out.set(bodyBytes, head.length);
        out[out.length - 1] = 0;
        return out;
    }

    /* FrameParser: push(bytes or string) -> array of frames
     * {command, headers, body (string), binaryBody (Uint8Array)}; throws on a
     * malformed frame. Heart-beat EOLs between frames are skipped. */
    function FrameParser() {
        this.buf = new Uint8Array(0);
        this.decoder = new TextDecoder('utf-8');
    }

    FrameParser.prototype.push = function (chunk) {
        var bytes = typeof chunk === 'string' ? encoder.encode(chunk)
            : (chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk));
        if (this.buf.length === 0) {
            this.buf = bytes;
        } else {
            var joined = new Uint8Array(this.buf.length + bytes.length);
            joined.set(this.buf, 0);
            joined.set(bytes, this.buf.length);
            this.buf = joined;
        }
        var frames = [];
        var pos = 0;
        var buf = this.buf;
        for (;;) {
            /* heart-beats: EOL (LF or CRLF) between frames */
            while (pos < buf.length && (buf[pos] === 10 || (buf[pos] === 13 && buf[pos + 1] === 10))) {
                pos += buf[pos] === 13 ? 2 : 1;
            }
            if (pos >= buf.length || (buf[pos] === 13 && pos + 1 === buf.length)) break;
            /* header block ends at the first empty line */
            var lineStart = pos, headEnd = -1, bodyStart = -1, i;
            for (i = pos; i < buf.length; i++) {
                if (buf[i] !== 10) continue;
                var lineLen = i - lineStart;
                if (lineLen === 0 || (lineLen === 1 && buf[lineStart] === 13)) {
                    headEnd = lineStart;
                    bodyStart = i + 1;
                    break;
                }
                lineStart = i + 1;
            }
            if (headEnd < 0) {
                if (buf.length - pos > MAX_HEADER_BYTES) throw new Error('STOMP header block too large');
                break;
            }
            var headText = this.decoder.decode(buf.subarray(pos, headEnd));
            var lines = headText.split('\n').map(function (l) {
                return l.charAt(l.length - 1) === '\r' ? l.slice(0, -1) : l;
            });
            var command = lines[0];
            if (!/^[A-Z]+$/.test(command)) throw new Error('bad STOMP command line');
            var unescape = command !== 'CONNECTED';
            var headers = {};
            for (var h = 1; h < lines.length; h++) {
                if (lines[h] === '') continue;
                var colon = lines[h].indexOf(':');
                if (colon < 0) throw new Error('bad STOMP header line');
                var key = lines[h].slice(0, colon), val = lines[h].slice(colon + 1);
                if (unescape) {
                    key = unescapeHeader(key);
                    val = unescapeHeader(val);
                }
                if (!Object.prototype.hasOwnProperty.call(headers, key)) headers[key] = val; /* first wins */
            }
            var bodyEnd;
            if (Object.prototype.hasOwnProperty.call(headers, 'content-length')) {
                var len = Number(headers['content-length']);
                if (!/^[0-9]+$/.test(headers['content-length']) || len > MAX_FRAME_BYTES) {
                    throw new Error('bad content-length');
                }
                if (bodyStart + len + 1 > buf.length) break; /* incomplete */
                if (buf[bodyStart + len] !== 0) throw new Error('frame not NUL-terminated after content-length');
                bodyEnd = bodyStart + len;
            } else {
                bodyEnd = buf.indexOf(0, bodyStart);
                if (bodyEnd < 0) {
                    if (buf.length - pos > MAX_FRAME_BYTES) throw new Error('STOMP frame too large');
                    break;
                }
            }
            var binaryBody = buf.slice(bodyStart, bodyEnd);
            frames.push({
                command: command,
                headers: headers,
                binaryBody: binaryBody,
                body: this.decoder.decode(binaryBody),
            });
            pos = bodyEnd + 1;
        }
        this.buf = pos >= buf.length ? new Uint8Array(0) : buf.slice(pos);
        return frames;
    };

    /* Client options:
     *   url              ws:// or wss:// address (or brokerURL)
     *   webSocketFactory function returning a WebSocket-like object (optional)
     *   WebSocket        constructor to use (default: globalThis.WebSocket)
     *   connectHeaders   extra CONNECT headers (login, passcode, Authorization...)
     *   heartbeatOutgoing, heartbeatIncoming   ms (default 10000 both)
     *   reconnectMin, reconnectMax             backoff bounds in ms (500, 15000)
     *   reconnect        false to never reconnect
     *   debug            function(string) for a trace
     * Callbacks (assign as properties): onConnect(frame, isReconnect),
     *   onDisconnect(), onStompError(frame, about), onWebSocketClose(event),
     *   onStateChange(state, info) with state in
     *   'connecting' | 'connected' | 'reconnect-wait' | 'closed'.
     *   onStompError's about says what the ERROR's receipt-id answered:
     *   {command: 'SEND' | 'SUBSCRIBE', destination, id (a subscription's)}, or null. */
    function Client(opts) {
        opts = opts || {};
        this.url = opts.url || opts.brokerURL;
        this.webSocketFactory = opts.webSocketFactory || null;
        this.WebSocketImpl = opts.WebSocket || root.WebSocket;
        this.connectHeaders = opts.connectHeaders || {};
        this.heartbeatOutgoing = opts.heartbeatOutgoing == null ? 10000 : opts.heartbeatOutgoing;
        this.heartbeatIncoming = opts.heartbeatIncoming == null ? 10000 : opts.heartbeatIncoming;
        this.reconnectMin = opts.reconnectMin || 500;
        this.reconnectMax = opts.reconnectMax || 15000;
        this.reconnectEnabled = opts.reconnect !== false;
        this.debug = opts.debug || function () {};
        this.onConnect = function () {};
        this.onDisconnect = function () {};
        this.onStompError = function () {};
        this.onWebSocketClose = function () {};
        this.onStateChange = function () {};

        this.state = 'closed';
        this.active = false;
        this.connected = false;
        this.version = null;
        this.ws = null;
        this.parser = null;
        this.subs = new Map();       /* id -> {destination, callback, headers} */
        this.receipts = new Map();   /* receipt id -> {resolve, reject, timer} */
        this.nextSub = 1;
        this.nextReceipt = 1;
        this.attempt = 0;
        this.everConnected = false;
        this.reconnectTimer = null;
        this.hbOutTimer = null;
        this.hbInTimer = null;
        this.lastRx = 0;
    }

    Client.prototype._setState = function (state, info) {
        this.state = state;
        try { this.onStateChange(state, info || {}); } catch (e) { this.debug('onStateChange: ' + e); }
    };

    /* activate(): start connecting (and keep reconnecting until deactivate()). */
    Client.prototype.activate = function () {
        if (this.active) return;
        this.active = true;
        this.attempt = 0;
        this._open();
    };

    Client.prototype._open = function () {
        var self = this;
        this.reconnectTimer = null;
        if (!this.active) return;
        this._setState('connecting');
        var ws;
        try {
            ws = this.webSocketFactory ? this.webSocketFactory()
                : new this.WebSocketImpl(this.url, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
        } catch (e) {
            this.debug('WebSocket constructor failed: ' + e);
            this._scheduleReconnect();
            return;
        }
        this.ws = ws;
        this.parser = new FrameParser();
        ws.binaryType = 'arraybuffer';
        ws.onopen = function () {
            if (self.ws !== ws) return;
            var headers = {
                'accept-version': '1.2,1.1,1.0',
                'host': self._host(),
                'heart-beat': self.heartbeatOutgoing + ',' + self.heartbeatIncoming,
            };
            Object.keys(self.connectHeaders).forEach(function (k) { headers[k] = self.connectHeaders[k]; });
            self._write('CONNECT', headers);
        };
        ws.onmessage = function (ev) {
            if (self.ws !== ws) return;
            self._onData(ev.data);
        };
        ws.onerror = function () {
            self.debug('WebSocket error');
        };
        ws.onclose = function (ev) {
            if (self.ws !== ws) return;
            self._onClose(ev);
        };
    };

    Client.prototype._host = function () {
        try {
            return new URL(this.url).hostname;
        } catch (e) {
            return 'localhost';
        }
    };

    Client.prototype._write = function (command, headers, body) {
        if (!this.ws || this.ws.readyState !== 1) throw new Error('not connected');
        this.debug('>>> ' + command + ' ' + JSON.stringify(headers));
        this.ws.send(encodeFrame(command, headers, body));
    };

    Client.prototype._onData = function (data) {
        this.lastRx = Date.now();
        var frames;
        try {
            if (typeof data !== 'string' && !(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
                /* Node 'ws' may hand a Buffer or an array of Buffers */
                data = Array.isArray(data) ? concatChunks(data) : data;
            }
            frames = this.parser.push(ArrayBuffer.isView(data)
                ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data);
        } catch (e) {
            this.debug('protocol error from server: ' + e.message);
            this._drop();
            return;
        }
        for (var i = 0; i < frames.length; i++) {
            this._onFrame(frames[i]);
        }
    };

    function concatChunks(list) {
        var n = 0, i;
        for (i = 0; i < list.length; i++) n += list[i].length;
        var out = new Uint8Array(n), off = 0;
        for (i = 0; i < list.length; i++) { out.set(list[i], off); off += list[i].length; }
        return out;
    }

    Client.prototype._onFrame = function (f) {
        this.debug('<<< ' + f.command + ' ' + JSON.stringify(f.headers));
        var self = this;
        switch (f.command) {
            case 'CONNECTED': {
                var isReconnect = this.everConnected;
                this.connected = true;
                this.everConnected = true;
                this.attempt = 0;
                this.version = f.headers.version || '1.0';
                this._startHeartbeat(f.headers['heart-beat']);
                this.subs.forEach(function (s, id) { self._subscribeFrame(id, s); });
                this._setState('connected', { version: this.version });
                try { this.onConnect(f, isReconnect); } catch (e) { this.debug('onConnect: ' + e); }
                break;
            }
            case 'MESSAGE': {
                var sub = this.subs.get(f.headers.subscription);
                if (sub) {
                    try { sub.callback(f); } catch (e) { this.debug('subscription callback: ' + e); }
                }
                break;
            }
            case 'RECEIPT': {
                var r = this.receipts.get(f.headers['receipt-id']);
                if (r) {
                    this.receipts.delete(f.headers['receipt-id']);
                    clearTimeout(r.timer);
                    r.resolve(f);
                }
                break;
            }
            case 'ERROR': {
                var rid = f.headers['receipt-id'];
                var err = new Error(f.headers.message || 'STOMP ERROR');
                err.frame = f;
                var about = null;
                if (rid && this.receipts.has(rid)) {
                    var pr = this.receipts.get(rid);
                    this.receipts.delete(rid);
                    clearTimeout(pr.timer);
                    about = pr.about || null;
                    pr.reject(err);
                }
                try { this.onStompError(f, about); } catch (e) { this.debug('onStompError: ' + e); }
                /* the server closes after an ERROR; make sure we do too */
                this._drop();
                break;
            }
            default:
                this.debug('ignoring frame ' + f.command);
        }
    };

    Client.prototype._startHeartbeat = function (serverHb) {
        var self = this;
        this._stopHeartbeat();
        var parts = String(serverHb || '0,0').split(',');
        var sx = parseInt(parts[0], 10) || 0, sy = parseInt(parts[1], 10) || 0;
        var out = this.heartbeatOutgoing && sy ? Math.max(this.heartbeatOutgoing, sy) : 0;
        var inc = this.heartbeatIncoming && sx ? Math.max(this.heartbeatIncoming, sx) : 0;
        if (out > 0) {
            this.hbOutTimer = setInterval(function () {
                if (self.ws && self.ws.readyState === 1) self.ws.send('\n');
            }, out);
        }
        if (inc > 0) {
            this.lastRx = Date.now();
            this.hbInTimer = setInterval(function () {
                if (Date.now() - self.lastRx > inc * 2 + 1000) {
                    self.debug('no data from server for ' + (Date.now() - self.lastRx) + ' ms; dropping');
                    self._drop();
                }
            }, Math.max(1000, Math.floor(inc / 2)));
        }
    };

    Client.prototype._stopHeartbeat = function () {
        if (this.hbOutTimer) clearInterval(this.hbOutTimer);
        if (this.hbInTimer) clearInterval(this.hbInTimer);
        this.hbOutTimer = this.hbInTimer = null;
    };

    /* _drop(): close the socket now and go through the normal close path */
    Client.prototype._drop = function () {
        var ws = this.ws;
        if (!ws) return;
        try { ws.close(); } catch (e) { /* already closing */ }
        this._onClose({ code: 1006, reason: 'dropped by client', wasClean: false });
    };

    Client.prototype._onClose = function (ev) {
        var wasConnected = this.connected;
        this.ws = null;
        this.connected = false;
        this._stopHeartbeat();
        var err = new Error('connection closed before the receipt');
        this.receipts.forEach(function (r) { clearTimeout(r.timer); r.reject(err); });
        this.receipts.clear();
        try { this.onWebSocketClose(ev); } catch (e) { this.debug('onWebSocketClose: ' + e); }
        if (wasConnected) {
            try { this.onDisconnect(); } catch (e) { this.debug('onDisconnect: ' + e); }
        }
        if (this.active) this._scheduleReconnect();
        else this._setState('closed');
    };

    Client.prototype._scheduleReconnect = function () {
        var self = this;
        if (!this.active || !this.reconnectEnabled) {
            this.active = false;
            this._setState('closed');
            return;
        }
        var base = Math.min(this.reconnectMax, this.reconnectMin * Math.pow(2, this.attempt));
        var delay = Math.round(base / 2 + Math.random() * base / 2);
        this.attempt++;
        this._setState('reconnect-wait', { delay: delay, attempt: this.attempt });
        this.reconnectTimer = setTimeout(function () { self._open(); }, delay);
    };

    /* drop(): close the socket now as if the network failed (reconnects) */
    Client.prototype.drop = function () {
        this._drop();
    };

    /* reconnectNow(): skip the remaining backoff (e.g. when the network is back) */
    Client.prototype.reconnectNow = function () {
        if (!this.active || this.ws || !this.reconnectTimer) return;
        clearTimeout(this.reconnectTimer);
        this._open();
    };

    /* subscribe(destination, callback(frame), headers, onActive) -> {id, unsubscribe()}.
     * Kept across reconnects. headers is an object, or a function returning
     * one, called for every SUBSCRIBE (the first and each after a reconnect).
     * onActive(), if given, is called when the RECEIPT of each SUBSCRIBE
     * arrives: from then on every message of the destination comes here, so
     * history loaded after it leaves no gap. */
    Client.prototype.subscribe = function (destination, callback, headers, onActive) {
        var id = 'sub-' + this.nextSub++;
        var s = { destination: destination, callback: callback, headers: headers || {}, onActive: onActive || null };
        this.subs.set(id, s);
        if (this.connected) this._subscribeFrame(id, s);
        var self = this;
        return {
            id: id,
            unsubscribe: function () { self.unsubscribe(id); },
        };
    };

    /* _subscribeFrame(id, sub): write the SUBSCRIBE; a headers function is
     * asked each time (so a resume point can follow what was received) */
    Client.prototype._subscribeFrame = function (id, s) {
        var h = { id: id, destination: s.destination, ack: 'auto' };
        var extra = typeof s.headers === 'function' ? s.headers() || {} : s.headers;
        Object.keys(extra).forEach(function (k) { h[k] = extra[k]; });
        if (s.onActive) {
            var self = this, rid = 'sub-r-' + this.nextReceipt++;
            h.receipt = rid;
            this.receipts.set(rid, {
                about: { command: 'SUBSCRIBE', id: id, destination: s.destination },
                resolve: function () {
                    if (self.subs.get(id) !== s) return;
                    try { s.onActive(); } catch (e) { self.debug('onActive: ' + e); }
                },
                reject: function () { /* dropped: the next CONNECTED subscribes again */ },
                timer: null,
            });
        }
        this._write('SUBSCRIBE', h);
    };

    Client.prototype.unsubscribe = function (id) {
        if (!this.subs.delete(id)) return;
        if (this.connected) this._write('UNSUBSCRIBE', { id: id });
    };

    /* send(destination, body, {receipt: true|false, headers, timeout}) -> Promise.
     * With a receipt (the default) the promise resolves on the RECEIPT frame;
     * without, once the frame is handed to the socket. */
    Client.prototype.send = function (destination, body, opts) {
        opts = opts || {};
        var self = this;
        var wantReceipt = opts.receipt !== false;
        return new Promise(function (resolve, reject) {
            if (!self.connected) {
                reject(new Error('not connected'));
                return;
            }
            var headers = { destination: destination, 'content-type': 'application/json;charset=utf-8' };
            var extra = opts.headers || {};
            Object.keys(extra).forEach(function (k) { headers[k] = extra[k]; });
            var rid = null;
            if (wantReceipt) {
                rid = 'r-' + self.nextReceipt++;
                headers.receipt = rid;
                var timer = setTimeout(function () {
                    if (self.receipts.delete(rid)) reject(new Error('no receipt within ' + (opts.timeout || 15000) + ' ms'));
                }, opts.timeout || 15000);
                self.receipts.set(rid, { resolve: resolve, reject: reject, timer: timer,
                    about: { command: 'SEND', destination: destination } });
            }
            try {
                self._write('SEND', headers, typeof body === 'string' ? body : JSON.stringify(body));
            } catch (e) {
                if (rid) {
                    clearTimeout(self.receipts.get(rid).timer);
                    self.receipts.delete(rid);
                }
                reject(e);
                return;
            }
            if (!wantReceipt) resolve(null);
        });
    };

    /* deactivate(): DISCONNECT (waiting briefly for its receipt), close, and stop
     * reconnecting. Resolves when the socket is closed. */
    Client.prototype.deactivate = function () {
        var self = this;
        this.active = false;
        if (this.reconnectTimer) {
            clearTimeout(this.reconnectTimer);
            this.reconnectTimer = null;
        }
        var ws = this.ws;
        if (!ws) {
            this._setState('closed');
            return Promise.resolve();
        }
        return new Promise(function (resolve) {
            var done = false;
            function finish() {
                if (done) return;
                done = true;
                if (self.ws === ws) self._drop();
                resolve();
            }
            if (self.connected) {
                var rid = 'disconnect-' + self.nextReceipt++;
                var timer = setTimeout(finish, 1000);
                self.receipts.set(rid, {
                    resolve: function () { clearTimeout(timer); finish(); },
                    reject: function () { clearTimeout(timer); finish(); },
                    timer: timer,
                });
                try {
                    self._write('DISCONNECT', { receipt: rid });
                } catch (e) {
                    finish();
                }
            } else {
                finish();
            }
        });
    };

    root.ChatdStomp = {
        Client: Client,
        FrameParser: FrameParser,
        encodeFrame: encodeFrame,
        escapeHeader: escapeHeader,
        unescapeHeader: unescapeHeader,
    };
})(typeof window !== 'undefined' ? window : globalThis);
