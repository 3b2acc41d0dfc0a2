/* app.js - the chatd chat page: sign-in and sign-up over the REST API, the
 * conversation list (live from /sub/chat/side/{me}), the member list, and the
 * room (history pages over REST, live messages from /sub/chat/room/{roomId},
 * SEND to /pub/chat/message with a receipt, /pub/chat/read when read).
 *
 * Every piece of user text is put in the page with textContent, never as HTML.
 * Times arrive as ISO-8601 UTC and are shown in the browser's local time.
 */
(function () {
    'use strict';

    var PAGE = 50;
    var ROOM_RE = /^[0-9]+&[0-9]+$/;

    /* ---- strings (Korean when the browser prefers it, else English) ---- */
    var STRINGS = {
        en: {
            lead: 'Sign in to chat.', login: 'Log in', register: 'Sign up', loginId: 'Login ID',
            name: 'Name', password: 'Password', logout: 'Log out', chats: 'Chats', people: 'People',
            noRooms: 'No conversations yet. Pick someone under People.',
            pickRoom: 'Pick a conversation, or someone under People to start one.',
            typeMessage: 'Message', send: 'Send', connecting: 'connecting…', online: 'online',
            offline: 'offline, retrying in {s}s', closed: 'offline', loadingOlder: 'Loading older messages…',
            noOlder: 'Beginning of the conversation', sendFailed: 'Not sent: {e}', retry: 'Retry',
            sending: 'sending…', needFields: 'Fill in every field.', unreadLabel: '{n} unread',
            noMembers: 'Nobody else has signed up yet.', me: 'me', sessionEnded: 'Your session ended. Please log in again.',
        },
        ko: {
            lead: '로그인하고 대화를 시작하세요.', login: '로그인', register: '회원가입', loginId: '아이디',
            name: '이름', password: '비밀번호', logout: '로그아웃', chats: '채팅', people: '멤버',
            noRooms: '아직 대화가 없습니다. 멤버에서 상대를 고르세요.',
            pickRoom: '대화를 고르거나, 멤버에서 상대를 골라 대화를 시작하세요.',
            typeMessage: '메시지 입력', send: '전송', connecting: '연결 중…', online: '연결됨',
            offline: '연결 끊김, {s}초 후 다시 연결', closed: '연결 끊김', loadingOlder: '이전 메시지를 불러오는 중…',
            noOlder: '대화의 시작', sendFailed: '전송 실패: {e}', retry: '다시 보내기',
            sending: '보내는 중…', needFields: '모든 칸을 채워 주세요.', unreadLabel: '읽지 않은 메시지 {n}개',
            noMembers: '아직 다른 멤버가 없습니다.', me: '나', sessionEnded: '세션이 끝났습니다. 다시 로그인해 주세요.',
        },
    };
    var langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
    var LANG = /^ko\b/i.test(langs[0] || '') ? 'ko' : 'en';
    document.documentElement.lang = LANG;

    function t(key, vars) {
        var s = STRINGS[LANG][key] || STRINGS.en[key] || key;
        return s.replace(/\{(\w+)\}/g, function (m, k) { return vars && k in vars ? String(vars[k]) : m; });
    }

    /* ---- small DOM helpers: text only, never HTML ---- */
    function $(id) { return document.getElementById(id); }

    function el(tag, cls, text) {
        var e = document.createElement(tag);
        if (cls) e.className = cls;
        if (text != null) e.textContent = text;
        return e;
    }

    function applyStrings() {
        document.querySelectorAll('[data-i18n]').forEach(function (e) { e.textContent = t(e.dataset.i18n); });
        document.querySelectorAll('[data-i18n-placeholder]').forEach(function (e) {
            e.placeholder = t(e.dataset.i18nPlaceholder);
        });
    }

    var toastTimer = null;
    function toast(text) {
        var box = $('toast');
        box.textContent = text;
        box.hidden = false;
        clearTimeout(toastTimer);
        toastTimer = setTimeout(function () { box.hidden = true; }, 5000);
    }

    /* ---- time ---- */
    var timeFmt = new Intl.DateTimeFormat(LANG, { hour: 'numeric', minute: '2-digit' });
    var dayFmt = new Intl.DateTimeFormat(LANG, { month: 'short', day: 'numeric' });
    var longDayFmt = new Intl.DateTimeFormat(LANG, { year: 'numeric', month: 'long', day: 'numeric', weekday: 'short' });
    var fullFmt = new Intl.DateTimeFormat(LANG, { dateStyle: 'medium', timeStyle: 'medium' });

    function parseTime(iso) {
        var d = new Date(iso);
        return isNaN(d.getTime()) ? null : d;
    }

    function sameDay(a, b) {
        return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
    }

    function shortTime(iso) {
        var d = parseTime(iso);
        if (!d) return '';
        return sameDay(d, new Date()) ? timeFmt.format(d) : dayFmt.format(d);
    }

    /* ---- ids ---- */
    function cmpId(a, b) {
        var x = BigInt(a), y = BigInt(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }

    function roomIdFor(a, b) {
        a = Number(a);
        b = Number(b);
        return Math.min(a, b) + '&' + Math.max(a, b);
    }

    function peerIdOf(roomId) {
        var p = roomId.split('&').map(Number);
        return p[0] === state.me.id ? p[1] : p[0];
    }

    /* ---- REST ---- */
    function api(method, path, body) {
        var opts = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
        if (body !== undefined) {
            opts.headers['Content-Type'] = 'application/json';
            opts.body = JSON.stringify(body);
        }
        return fetch(path, opts).then(function (res) {
            var parse = res.status === 204 ? Promise.resolve(null) : res.json().catch(function () { return null; });
            return parse.then(function (data) {
                if (!res.ok) {
                    var err = new Error((data && data.error) || res.status + ' ' + res.statusText);
                    err.status = res.status;
                    throw err;
                }
                return data;
            });
        });
    }

    /* a 401 while signed in means the session is gone */
    function guard(promise) {
        return promise.catch(function (err) {
            if (err.status === 401 && state.me) {
                toast(t('sessionEnded'));
                endSession();
            }
            throw err;
        });
    }

    /* ---- state ---- */
    var state = {
        me: null,
        members: new Map(),   /* id -> member */
        rooms: new Map(),     /* roomId -> {roomId, peer, lastMessage, lastTimestamp, unread, lastId} */
        client: null,
        current: null,        /* the open room */
        roomGen: 0,
        tab: 'rooms',
    };

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

    function endSession() {
        var client = state.client;
        state.client = null;
        state.me = null;
        closeRoom();
        if (client) client.deactivate();
        history.replaceState(null, '', location.pathname + location.search);
        showAuth();
    }

    function logout() {
        api('POST', '/api/logout').catch(function () { /* the session is gone either way */ })
            .then(endSession);
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
        return guard(api('GET', '/api/members')).then(function (list) {
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
        return guard(api('GET', '/api/rooms')).then(function (list) {
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
                if (room.lastId && cmpId(room.lastId, cur.readSent) <= 0) room.unread = 0;
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
            $('send-btn').disabled = s !== 'connected';
        };
        client.onConnect = function (frame, isReconnect) {
            if (state.client !== client) return;
            if (isReconnect) resync();
            else scheduleRead();
        };
        client.onStompError = function (frame) {
            if (state.client !== client) return;
            toast(frame.headers.message || 'error');
            if (!client.connected) {
                /* refused before CONNECTED: is the session still valid? */
                guard(api('GET', '/api/me')).catch(function () {});
            }
        };
        client.subscribe('/sub/chat/side/' + state.me.id, onSideMessage);
        client.activate();
    }

    function onSideMessage(frame) {
        var msg;
        try { msg = JSON.parse(frame.body); } catch (e) { return; }
        if (!msg || typeof msg.roomId !== 'string') return;
        var room = state.rooms.get(msg.roomId);
        if (msg.type === 'read') {
            /* I read this room (here or in another tab) */
            if (room && room.lastId && cmpId(msg.upTo, room.lastId) >= 0) {
                room.unread = 0;
                renderRooms();
            } else {
                reloadRoomsSoon();
            }
            return;
        }
        if (msg.type && msg.type !== 'chat') return;
        var peerId = peerIdOf(msg.roomId);
        if (!room) {
            room = { roomId: msg.roomId, peer: state.members.get(peerId) || null, unread: 0, lastId: null };
            state.rooms.set(msg.roomId, room);
            if (!room.peer) loadMembers().catch(function () {});
        }
        var order = room.lastId ? cmpId(msg.id, room.lastId) : 1;
        if (order < 0) return; /* older than what the list shows */
        room.lastId = msg.id;
        room.lastMessage = msg.message;
        room.lastTimestamp = msg.timestamp;
        if (order === 0) {
            /* already seen in the open room */
        } else if (msg.writerId === state.me.id) {
            room.unread = 0;
        } else if (!(state.current && state.current.roomId === msg.roomId && document.visibilityState === 'visible')) {
            room.unread += 1;
        }
        renderRooms();
    }

    /* after a reconnect: fetch what was missed while offline */
    function resync() {
        loadRooms().catch(function () {});
        var cur = state.current;
        if (!cur || !cur.loaded) return;
        guard(api('GET', messagesPath(cur.roomId, null))).then(function (page) {
            if (state.current !== cur) return;
            var msgs = page.messages || [];
            var newest = newestId();
            if (msgs.length && newest && cmpId(msgs[0].id, newest) > 0 && page.next != null) {
                /* more was missed than one page: start the room over from this page */
                $('message-list').replaceChildren();
                cur.ids.clear();
                cur.next = page.next;
                showOlderStatus();
            }
            addMessages(msgs);
            scrollToBottom();
            scheduleRead();
        }).catch(function (err) { toast(err.message); });
    }

    /* ---- room ---- */
    function messagesPath(roomId, before) {
        if (!ROOM_RE.test(roomId)) throw new Error('bad room id');
        var q = 'limit=' + PAGE + (before != null ? '&before=' + encodeURIComponent(before) : '');
        return '/api/rooms/' + roomId + '/messages?' + q;
    }

    function openRoom(roomId, peer) {
        if (!ROOM_RE.test(roomId) || !state.me) return;
        var parts = roomId.split('&').map(Number);
        var pid0 = peerIdOf(roomId);
        /* only a room of mine with a member we know: a refused SUBSCRIBE would
         * be an ERROR (and a closed connection) on every reconnect */
        if (parts.indexOf(state.me.id) < 0 || pid0 === state.me.id ||
            !(state.members.has(pid0) || state.rooms.has(roomId) || peer)) {
            return;
        }
        document.body.classList.add('room-open');
        if (state.current && state.current.roomId === roomId) {
            scheduleRead();
            return;
        }
        closeRoom();
        document.body.classList.add('room-open');
        var pid = peerIdOf(roomId);
        var room = state.rooms.get(roomId);
        peer = peer || (room && room.peer) || state.members.get(pid) || { id: pid, name: '#' + pid };
        var cur = {
            roomId: roomId, peer: peer, ids: new Set(), next: null, loaded: false,
            pendingLive: [], loadingOlder: false, readSent: null, gen: ++state.roomGen,
        };
        state.current = cur;
        history.replaceState(null, '', '#' + roomId);
        $('room-title').textContent = peer.name || peer.loginId;
        $('room-title').title = peer.loginId ? '@' + peer.loginId : '';
        avatar($('room-avatar'), peer);
        $('room-avatar').hidden = false;
        $('room-placeholder').hidden = true;
        $('messages').hidden = false;
        $('send-form').hidden = false;
        $('message-list').replaceChildren();
        $('pending-list') && $('pending-list').remove();
        var pend = el('ol', 'message-list pending-list');
        pend.id = 'pending-list';
        $('messages').appendChild(pend);
        $('older-status').hidden = true;
        $('messages').dataset.roomId = roomId;
        renderRooms();
        cur.sub = state.client.subscribe('/sub/chat/room/' + roomId, function (frame) { onRoomMessage(cur, frame); });
        guard(api('GET', messagesPath(roomId, null))).then(function (page) {
            if (state.current !== cur) return;
            addMessages(page.messages || []);
            cur.next = page.next == null ? null : page.next;
            cur.loaded = true;
            addMessages(cur.pendingLive);
            cur.pendingLive = [];
            showOlderStatus();
            scrollToBottom();
            scheduleRead();
            fillScreen();
        }).catch(function (err) {
            toast(err.message);
            /* the server refuses this room: do not keep subscribing to it */
            if (state.current === cur && err.status >= 400 && err.status < 500) closeRoom();
        });
        if (window.matchMedia('(min-width: 721px)').matches) $('msg-input').focus();
    }

    function closeRoom() {
        var cur = state.current;
        state.current = null;
        document.body.classList.remove('room-open');
        if (cur && cur.sub) cur.sub.unsubscribe();
        $('room-title').textContent = '';
        $('room-avatar').hidden = true;
        $('room-placeholder').hidden = false;
        $('messages').hidden = true;
        $('send-form').hidden = true;
        $('message-list').replaceChildren();
        if ($('pending-list')) $('pending-list').replaceChildren();
        if (state.me) {
            history.replaceState(null, '', location.pathname + location.search);
            renderRooms();
        }
    }

    function onRoomMessage(cur, frame) {
        if (state.current !== cur) return;
        var msg;
        try { msg = JSON.parse(frame.body); } catch (e) { return; }
        if (!msg || (msg.type && msg.type !== 'chat') || msg.roomId !== cur.roomId) return;
        if (!cur.loaded) {
            cur.pendingLive.push(msg);
            return;
        }
        var box = $('messages');
        var nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
        addMessages([msg]);
        if (nearBottom || msg.writerId === state.me.id) scrollToBottom();
        if (msg.writerId !== state.me.id) scheduleRead();
    }

    function renderMessage(msg) {
        var mine = msg.writerId === state.me.id;
        var li = el('li', 'msg ' + (mine ? 'mine' : 'theirs'));
        li.dataset.testid = 'message';
        li.dataset.id = msg.id;
        li.dataset.writer = msg.writer;
        var d = parseTime(msg.timestamp);
        if (d) li.dataset.day = longDayFmt.format(d);
        var bubble = el('div', 'bubble');
        bubble.appendChild(el('span', 'msg-text', msg.message));
        var time = el('time', 'msg-time', d ? timeFmt.format(d) : '');
        if (d) {
            time.dateTime = msg.timestamp;
            time.title = fullFmt.format(d);
        }
        li.append(bubble, time);
        return li;
    }

    /* addMessages(list): insert in id order, skipping ids already shown */
    function addMessages(list) {
        var cur = state.current;
        var ol = $('message-list');
        var summaryChanged = false;
        list.forEach(function (msg) {
            if (!msg || typeof msg.id !== 'string' || cur.ids.has(msg.id)) return;
            cur.ids.add(msg.id);
            if (msg.writerId === state.me.id) dropPending(msg.message);
            var li = renderMessage(msg);
            var first = ol.firstElementChild, last = ol.lastElementChild;
            if (!last || cmpId(last.dataset.id, msg.id) < 0) {
                ol.appendChild(li);
            } else if (cmpId(first.dataset.id, msg.id) > 0) {
                ol.insertBefore(li, first);
            } else {
                var node = last;
                while (node && cmpId(node.dataset.id, msg.id) > 0) node = node.previousElementSibling;
                ol.insertBefore(li, node ? node.nextElementSibling : ol.firstElementChild);
            }
            var room = state.rooms.get(cur.roomId);
            if (room && (!room.lastId || cmpId(room.lastId, msg.id) < 0)) {
                room.lastId = msg.id;
                room.lastMessage = msg.message;
                room.lastTimestamp = msg.timestamp;
                summaryChanged = true;
            }
        });
        markDays();
        if (summaryChanged) renderRooms();
    }

    function markDays() {
        var prev = null;
        $('message-list').querySelectorAll('li.msg').forEach(function (li) {
            li.classList.toggle('new-day', !!li.dataset.day && li.dataset.day !== prev);
            prev = li.dataset.day || prev;
        });
    }

    function newestId() {
        var last = $('message-list').lastElementChild;
        return last ? last.dataset.id : null;
    }

    function scrollToBottom() {
        var box = $('messages');
        box.scrollTop = box.scrollHeight;
    }

    function showOlderStatus() {
        var cur = state.current;
        var s = $('older-status');
        if (!cur) return;
        if (cur.loadingOlder) {
            s.textContent = t('loadingOlder');
            s.hidden = false;
        } else if (cur.next == null && cur.ids.size > 0) {
            s.textContent = t('noOlder');
            s.hidden = false;
        } else {
            s.hidden = true;
        }
    }

    function loadOlder() {
        var cur = state.current;
        if (!cur || !cur.loaded || cur.loadingOlder || cur.next == null) return;
        cur.loadingOlder = true;
        showOlderStatus();
        guard(api('GET', messagesPath(cur.roomId, cur.next))).then(function (page) {
            if (state.current !== cur) return;
            var box = $('messages');
            var fromBottom = box.scrollHeight - box.scrollTop;
            var got = page.messages || [];
            addMessages(got);
            /* an empty page ends the history whatever the cursor says */
            cur.next = page.next == null || got.length === 0 ? null : page.next;
            box.scrollTop = box.scrollHeight - fromBottom;
        }).catch(function (err) {
            toast(err.message);
        }).finally(function () {
            cur.loadingOlder = false;
            if (state.current === cur) {
                showOlderStatus();
                fillScreen();
            }
        });
    }

    /* load older pages until the list can scroll (so scrolling up can load more) */
    function fillScreen() {
        var box = $('messages');
        var cur = state.current;
        if (cur && cur.next != null && box.scrollHeight <= box.clientHeight + 10) loadOlder();
    }

    var readTimer = null;
    function scheduleRead() {
        clearTimeout(readTimer);
        readTimer = setTimeout(sendRead, 200);
    }

    function sendRead() {
        var cur = state.current;
        var client = state.client;
        if (!cur || !cur.loaded || !client || !client.connected || document.visibilityState !== 'visible') return;
        var newest = newestId();
        var room = state.rooms.get(cur.roomId);
        if (!newest) return;
        if (cur.readSent && cmpId(newest, cur.readSent) <= 0 && !(room && room.unread > 0)) return;
        cur.readSent = newest;
        client.send('/pub/chat/read', { roomId: cur.roomId, upTo: newest }, { receipt: false }).catch(function (err) {
            cur.readSent = null;
            toast(err.message);
        });
        if (room && room.unread) {
            room.unread = 0;
            renderRooms();
        }
    }

    /* ---- sending ---- */
    function pendingList() {
        return $('pending-list');
    }

    function dropPending(text) {
        var list = pendingList();
        if (!list) return;
        var items = list.querySelectorAll('li.msg');
        for (var i = 0; i < items.length; i++) {
            if (items[i].dataset.state !== 'failed' && items[i].dataset.text === text) {
                items[i].remove();
                return;
            }
        }
    }

    function sendText(text) {
        var cur = state.current;
        if (!cur || !text) return;
        var li = el('li', 'msg mine pending');
        li.dataset.testid = 'message-pending';
        li.dataset.state = 'sending';
        li.dataset.text = text;
        var bubble = el('div', 'bubble');
        bubble.appendChild(el('span', 'msg-text', text));
        var status = el('span', 'msg-time', t('sending'));
        li.append(bubble, status);
        pendingList().appendChild(li);
        scrollToBottom();
        var p = state.client && state.client.connected
            ? state.client.send('/pub/chat/message', { roomId: cur.roomId, message: text })
            : Promise.reject(new Error(t('closed')));
        p.then(function () {
            li.dataset.state = 'sent';
        }).catch(function (err) {
            if (!li.isConnected) return;
            li.dataset.state = 'failed';
            status.textContent = t('sendFailed', { e: err.message }) + ' ';
            var retry = el('button', 'link', t('retry'));
            retry.type = 'button';
            retry.addEventListener('click', function () {
                li.remove();
                sendText(text);
            });
            status.appendChild(retry);
        });
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

    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
    else init();
})();
