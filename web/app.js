/* app.js - the chatd chat page: sign-in and sign-up over the REST API, the
 * conversation list (live from /sub/chat/side/{me}), the member list, the
 * STOMP connection, and the wiring. The open room is room.js; messages are
 * sent through the outbox of outbox.js; shared helpers are in page.js.
 *
 * The side subscription remembers the cursor of its last message and resumes
 * after it on a reconnect (a server without cursors: the list is reloaded).
 *
 * Every piece of user text is put in the page with textContent, never as HTML.
 * Times arrive as ISO-8601 UTC and are shown in the browser's local time.
 */
(function () {
    'use strict';

    var P = window.ChatdPage;
    var state = P.state, t = P.t, $ = P.$, el = P.el, toast = P.toast, api = P.api, guard = P.guard;
    var LANG = P.LANG, ROOM_RE = P.ROOM_RE, cursorOf = P.cursorOf, remember = P.remember;
    var peerIdOf = P.peerIdOf, roomIdFor = P.roomIdFor, shortTime = P.shortTime, parseTime = P.parseTime;
    var fullFmt = P.fullFmt;
    var RESUME_REFUSALS_MAX = 3; /* refused resumes before the page stops resuming */
    var openRoom = P.openRoom, closeRoom = P.closeRoom;
    var loadOlder = P.loadOlder, scheduleRead = P.scheduleRead, renderPending = P.renderPending;
    var onOutboxChange = P.onOutboxChange, sendText = P.sendText, applyStrings = P.applyStrings;

    /* ---- auth view ---- */
    function setAuthMode(mode) {
        var form = $('auth-form');
        form.dataset.mode = mode;
        $('tab-login').setAttribute('aria-selected', String(mode === 'login'));
        $('tab-register').setAttribute('aria-selected', String(mode === 'register'));
        $('auth-submit').textContent = t(mode === 'login' ? 'login' : 'register');
        $('auth-password').autocomplete = mode === 'login' ? 'current-password' : 'new-password';
        $('auth-error').hidden = true;
    }

    function showAuth() {
        $('chat-view').hidden = true;
        $('auth-view').hidden = false;
        document.title = 'chatd';
        $('auth-login-id').focus();
    }

    function authError(text) {
        var e = $('auth-error');
        e.textContent = text;
        e.hidden = false;
    }

    function onAuthSubmit(ev) {
        ev.preventDefault();
        var mode = $('auth-form').dataset.mode;
        var loginId = $('auth-login-id').value.trim();
        var name = $('auth-name').value.trim();
        var password = $('auth-password').value;
        if (!loginId || !password || (mode === 'register' && !name)) {
            authError(t('needFields'));
            return;
        }
        var btn = $('auth-submit');
        btn.disabled = true;
        var first = mode === 'register'
            ? api('POST', '/api/members', { loginId: loginId, name: name, password: password })
            : Promise.resolve();
        first.then(function () {
            return api('POST', '/api/login', { loginId: loginId, password: password });
        }).then(function (res) {
            $('auth-password').value = '';
            $('auth-error').hidden = true;
            startChat(res.member);
        }).catch(function (err) {
            authError(err.message);
        }).finally(function () {
            btn.disabled = false;
        });
    }

    /* ---- chat view ---- */
    function avatar(node, member) {
        var name = (member && (member.name || member.loginId)) || '?';
        node.textContent = Array.from(name)[0].toUpperCase();
        node.style.setProperty('--hue', String(((member && member.id) || 0) * 67 % 360));
    }

    function startChat(me) {
        var wanted = /^#([0-9]+&[0-9]+)$/.exec(location.hash);
        me.id = Number(me.id);
        state.me = me;
        state.members.clear();
        state.rooms.clear();
        state.sideCursor = null;
        state.resumeOff = false;
        state.resumeRefusals = 0;
        var storage = null;
        try { storage = window.sessionStorage; } catch (e) { storage = null; }
        state.outbox = new ChatdOutbox.Outbox({
            storage: storage,
            storageKey: 'chatd.outbox.' + me.id,
            destination: '/pub/chat/message',
            client: function () { return state.me === me ? state.client : null; },
            onChange: onOutboxChange,
        });
        $('auth-view').hidden = true;
        $('chat-view').hidden = false;
        $('me-name').textContent = me.name || me.loginId;
        $('me-name').title = me.loginId;
        avatar($('me-avatar'), me);
        showTab('rooms');
        closeRoom();
        renderRooms();
        connect();
        Promise.all([loadMembers(), loadRooms()]).then(function () {
            if (wanted && !state.current && state.me === me) openRoom(canonical(wanted[1]));
        }).catch(function (err) {
            if (err.status !== 401) toast(err.message);
        });
    }

    function canonical(roomId) {
        var p = roomId.split('&');
        return roomIdFor(p[0], p[1]);
    }

    /* endSession(forget): forget=true (logout) also empties the outbox; a
     * session that merely expired keeps it for the next login */
    function endSession(forget) {
        var client = state.client;
        state.client = null;
        state.me = null;
        if (state.outbox && forget === true) state.outbox.clear();
        state.outbox = null;
        closeRoom();
        if (client) client.deactivate();
        history.replaceState(null, '', location.pathname + location.search);
        showAuth();
    }

    function logout() {
        api('POST', '/api/logout').catch(function () { /* the session is gone either way */ })
            .then(function () { endSession(true); });
    }

    function showTab(tab) {
        state.tab = tab;
        $('tab-rooms').setAttribute('aria-selected', String(tab === 'rooms'));
        $('tab-members').setAttribute('aria-selected', String(tab === 'members'));
        $('room-list').hidden = tab !== 'rooms';
        $('member-list').hidden = tab !== 'members';
        $('room-empty').hidden = !(tab === 'rooms' && state.rooms.size === 0);
        if (tab === 'members') loadMembers().catch(function () {});
    }

    function loadMembers() {
        return guard(P.apiPages('/api/members?limit=100', 20)).then(function (list) {
            state.members.clear();
            (list || []).forEach(function (m) {
                m.id = Number(m.id);
                state.members.set(m.id, m);
            });
            renderMembers();
            renderRooms();
        });
    }

    function renderMembers() {
        var ul = $('member-list');
        ul.replaceChildren();
        var list = Array.from(state.members.values()).filter(function (m) { return m.id !== state.me.id; });
        list.sort(function (a, b) { return String(a.name).localeCompare(String(b.name), LANG); });
        if (list.length === 0) ul.appendChild(el('li', 'empty', t('noMembers')));
        list.forEach(function (m) {
            var li = el('li', 'item');
            li.dataset.testid = 'member-item';
            li.dataset.memberId = String(m.id);
            li.tabIndex = 0;
            li.setAttribute('role', 'button');
            var av = el('span', 'avatar');
            avatar(av, m);
            var body = el('span', 'item-body');
            body.appendChild(el('span', 'item-name', m.name));
            body.appendChild(el('span', 'item-sub', '@' + m.loginId));
            li.append(av, body);
            ul.appendChild(li);
        });
    }

    function loadRooms() {
        return guard(P.apiPages('/api/rooms?limit=100', 20)).then(function (list) {
            var seen = new Set();
            (list || []).forEach(function (r) {
                var old = state.rooms.get(r.roomId) || {};
                seen.add(r.roomId);
                state.rooms.set(r.roomId, {
                    roomId: r.roomId,
                    peer: r.peer,
                    lastMessage: r.lastMessage,
                    lastTimestamp: r.lastTimestamp,
                    unread: Number(r.unread) || 0,
                    lastId: old.lastId || null,
                    seen: old.seen || new Map(),
                });
                if (r.peer && r.peer.id != null && !state.members.has(Number(r.peer.id))) {
                    state.members.set(Number(r.peer.id), r.peer);
                }
            });
            state.rooms.forEach(function (r, id) { if (!seen.has(id)) state.rooms.delete(id); });
            var cur = state.current;
            if (cur && cur.readSent && state.rooms.has(cur.roomId) && document.visibilityState === 'visible') {
                /* the open room is being read; the read event may still be on its way */
                var room = state.rooms.get(cur.roomId);
                if (room.lastId === cur.readSent) room.unread = 0;
            }
            renderRooms();
        });
    }

    var roomsReloadTimer = null;
    function reloadRoomsSoon() {
        clearTimeout(roomsReloadTimer);
        roomsReloadTimer = setTimeout(function () {
            if (state.me) loadRooms().catch(function () {});
        }, 150);
    }

    /* renderRoomsSoon(): once for a burst (a replay brings thousands) */
    var renderTimer = null;
    function renderRoomsSoon() {
        if (renderTimer) return;
        renderTimer = setTimeout(function () {
            renderTimer = null;
            renderRooms();
        }, 30);
    }

    function renderRooms() {
        if (!state.me) return;
        var ul = $('room-list');
        var rooms = Array.from(state.rooms.values());
        rooms.sort(function (a, b) {
            return (Date.parse(b.lastTimestamp) || 0) - (Date.parse(a.lastTimestamp) || 0);
        });
        var items = rooms.map(function (r) {
            var peer = r.peer || state.members.get(peerIdOf(r.roomId)) || { id: peerIdOf(r.roomId), name: '#' + peerIdOf(r.roomId) };
            var li = el('li', 'item room-item');
            li.dataset.testid = 'room-item';
            li.dataset.roomId = r.roomId;
            li.dataset.unread = String(r.unread);
            li.tabIndex = 0;
            li.setAttribute('role', 'button');
            if (state.current && state.current.roomId === r.roomId) li.classList.add('active');
            if (r.unread > 0) li.classList.add('unread');
            var av = el('span', 'avatar');
            avatar(av, peer);
            var body = el('span', 'item-body');
            var top = el('span', 'item-top');
            top.appendChild(el('span', 'item-name room-name', peer.name || peer.loginId));
            var time = el('time', 'room-time', shortTime(r.lastTimestamp));
            if (r.lastTimestamp) {
                time.dateTime = r.lastTimestamp;
                var d = parseTime(r.lastTimestamp);
                if (d) time.title = fullFmt.format(d);
            }
            top.appendChild(time);
            var bottom = el('span', 'item-bottom');
            bottom.appendChild(el('span', 'item-sub room-last', r.lastMessage || ''));
            if (r.unread > 0) {
                var mark = el('span', 'unread-marker', '·');
                mark.dataset.testid = 'unread-marker';
                mark.title = t('unreadLabel', { n: r.unread });
                mark.setAttribute('aria-label', t('unreadLabel', { n: r.unread }));
                bottom.appendChild(mark);
            }
            body.append(top, bottom);
            li.append(av, body);
            return li;
        });
        ul.replaceChildren.apply(ul, items);
        $('room-empty').hidden = !(state.tab === 'rooms' && rooms.length === 0);
        var unread = rooms.reduce(function (n, r) { return n + (r.unread > 0 ? 1 : 0); }, 0);
        document.title = (unread ? '· ' : '') + 'chatd';
    }

    /* ---- STOMP ---- */
    function connect() {
        var proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
        var client = new ChatdStomp.Client({ url: proto + '//' + location.host + '/ws' });
        state.client = client;
        client.onStateChange = function (s, info) {
            if (state.client !== client) return;
            var box = $('conn-status');
            box.dataset.state = s;
            if (s === 'connected') box.textContent = t('online');
            else if (s === 'connecting') box.textContent = t('connecting');
            else if (s === 'reconnect-wait') box.textContent = t('offline', { s: Math.max(1, Math.round(info.delay / 1000)) });
            else box.textContent = t('closed');
            renderPending();
        };
        client.onConnect = function (frame, isReconnect) {
            if (state.client !== client) return;
            state.connMessages = 0;
            if (!isReconnect) scheduleRead();
            if (state.outbox) state.outbox.pump();
        };
        client.onStompError = function (frame, about) {
            if (state.client !== client) return;
            var text = frame.headers.message || 'error';
            toast(text);
            var cur = state.current;
            if (!(about && about.command === 'SEND') && (state.sideResumed || (cur && cur.resumed)) &&
                ((about && about.command === 'SUBSCRIBE') || state.connMessages === 0 || /cursor|resume/i.test(text))) {
                /* the server refused a resume point: forget it (the history is
                 * reloaded instead); refused again and again, stop resuming */
                var dest = about && about.destination;
                if (!dest || dest.indexOf('/sub/chat/side/') === 0) state.sideCursor = null;
                if (cur && (!dest || dest === '/sub/chat/room/' + cur.roomId)) cur.lastCursor = null;
                if (++state.resumeRefusals >= RESUME_REFUSALS_MAX) state.resumeOff = true;
            }
            if (!client.connected) {
                /* refused before CONNECTED: is the session still valid? */
                guard(api('GET', '/api/me')).catch(function () {});
            }
        };
        /* the list: resumed after its last cursor, else loaded once the
         * subscription is active (so nothing falls between the two) */
        client.subscribe('/sub/chat/side/' + state.me.id, onSideMessage, function () {
            state.sideResumed = !state.resumeOff && state.sideCursor != null;
            return state.sideResumed ? { 'resume-after': state.sideCursor } : {};
        }, function () {
            if (state.client === client && !state.sideResumed) reloadRoomsSoon();
        });
        client.activate();
    }

    function newRoom(roomId) {
        var peerId = peerIdOf(roomId);
        var room = { roomId: roomId, peer: state.members.get(peerId) || null, unread: 0, lastId: null, seen: new Map() };
        state.rooms.set(roomId, room);
        if (!room.peer) loadMembers().catch(function () {});
        return room;
    }

    /* the side stream comes in the server's order, replays included: each chat
     * message is the newest of its room; one already counted is skipped */
    function onSideMessage(frame) {
        state.connMessages++;
        var cursor = cursorOf(frame.headers.cursor);
        if (cursor) state.sideCursor = cursor;
        var msg;
        try { msg = JSON.parse(frame.body); } catch (e) { return; }
        if (!msg || typeof msg.roomId !== 'string' || !ROOM_RE.test(msg.roomId)) return;
        var room = state.rooms.get(msg.roomId);
        if (msg.type === 'read') {
            /* I read this room (here or in another tab) */
            if (room && room.lastId && msg.upTo === room.lastId) {
                room.unread = 0;
                renderRooms();
            } else {
                reloadRoomsSoon();
            }
            return;
        }
        if ((msg.type && msg.type !== 'chat') || typeof msg.id !== 'string') return;
        if (!room) room = newRoom(msg.roomId);
        if (room.seen.has(msg.id)) return; /* already counted: the open room, or a replay */
        remember(room, msg.id);
        room.lastId = msg.id;
        room.lastMessage = msg.message;
        room.lastTimestamp = msg.timestamp;
        if (msg.writerId === state.me.id) {
            room.unread = 0;
        } else if (!(state.current && state.current.roomId === msg.roomId && document.visibilityState === 'visible')) {
            room.unread += 1;
        }
        renderRoomsSoon();
    }

    function onSend(ev) {
        ev.preventDefault();
        var input = $('msg-input');
        var text = input.value.replace(/^\s+|\s+$/g, '');
        if (!text) return;
        input.value = '';
        autoGrow();
        sendText(text);
        input.focus();
    }

    function autoGrow() {
        var input = $('msg-input');
        input.style.height = 'auto';
        input.style.height = Math.min(input.scrollHeight, 140) + 'px';
    }

    /* ---- wiring ---- */
    function onListActivate(listId, handler) {
        var list = $(listId);
        list.addEventListener('click', function (ev) {
            var li = ev.target.closest('li.item');
            if (li && list.contains(li)) handler(li);
        });
        list.addEventListener('keydown', function (ev) {
            if (ev.key !== 'Enter' && ev.key !== ' ') return;
            var li = ev.target.closest('li.item');
            if (li && list.contains(li)) {
                ev.preventDefault();
                handler(li);
            }
        });
    }

    function init() {
        applyStrings();
        setAuthMode('login');
        $('tab-login').addEventListener('click', function () { setAuthMode('login'); });
        $('tab-register').addEventListener('click', function () { setAuthMode('register'); });
        $('auth-form').addEventListener('submit', onAuthSubmit);
        $('logout').addEventListener('click', logout);
        $('tab-rooms').addEventListener('click', function () { showTab('rooms'); });
        $('tab-members').addEventListener('click', function () { showTab('members'); });
        onListActivate('room-list', function (li) { openRoom(li.dataset.roomId); });
        onListActivate('member-list', function (li) {
            var m = state.members.get(Number(li.dataset.memberId));
            if (m) openRoom(roomIdFor(state.me.id, m.id), m);
        });
        $('back-btn').addEventListener('click', closeRoom);
        $('send-form').addEventListener('submit', onSend);
        var input = $('msg-input');
        input.addEventListener('keydown', function (ev) {
            /* Enter sends; Shift+Enter is a new line; never while an IME (Korean) composes */
            if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) onSend(ev);
        });
        input.addEventListener('input', autoGrow);
        $('messages').addEventListener('scroll', function () {
            if ($('messages').scrollTop < 120) loadOlder();
        }, { passive: true });
        document.addEventListener('visibilitychange', function () {
            if (document.visibilityState === 'visible') scheduleRead();
        });
        window.addEventListener('offline', function () {
            if (state.client) state.client.drop();
        });
        window.addEventListener('online', function () {
            if (state.client) state.client.reconnectNow();
        });
        api('GET', '/api/me').then(function (me) {
            startChat(me.member || me);
        }).catch(function () {
            showAuth();
        });
    }

    P.renderRooms = renderRooms;
    P.renderRoomsSoon = renderRoomsSoon;
    P.avatar = avatar;
    P.endSession = endSession;

    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
    else init();
})();
