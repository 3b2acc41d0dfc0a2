/* page.js - what the chat page's scripts share: the strings (English and
 * Korean), DOM helpers that only ever set text, time formats, ids and
 * cursors, the REST helper, and the page's state. Loaded before room.js and
 * app.js, which add their functions to the same window.ChatdPage.
 */
(function () {
    'use strict';

    var P = window.ChatdPage = window.ChatdPage || {};

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
            sending: 'sending…', discard: 'Delete', needFields: 'Fill in every field.', unreadLabel: '{n} unread',
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
            sending: '보내는 중…', discard: '삭제', needFields: '모든 칸을 채워 주세요.', unreadLabel: '읽지 않은 메시지 {n}개',
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

    /* ---- ids and cursors ---- */
    var CURSOR_RE = /^[\x20-\x7e]{1,256}$/;
    var SEEN_MAX = 5000;

    function cursorOf(v) {
        return typeof v === 'string' && CURSOR_RE.test(v) ? v : null;
    }

    /* remember(room, id): ids this page has counted for a room (bounded) */
    function remember(room, id) {
        room.seen.set(id, true);
        if (room.seen.size > SEEN_MAX) room.seen.delete(room.seen.keys().next().value);
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

    /* a paged list (GET /api/members, /api/rooms): the arrays of up to
     * `pages` pages, following each response's Link rel="next" */
    function apiPages(path, pages) {
        var all = [];
        function step(url, left) {
            var opts = { method: 'GET', credentials: 'same-origin', headers: { Accept: 'application/json' } };
            return fetch(url, opts).then(function (res) {
                return res.json().catch(function () { return null; }).then(function (data) {
                    if (!res.ok) {
                        var err = new Error((data && data.error) || res.status + ' ' + res.statusText);
                        err.status = res.status;
                        throw err;
                    }
                    all = all.concat(data || []);
                    var m = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('Link') || '');
                    return m && left > 1 ? step(m[1], left - 1) : all;
                });
            });
        }
        return step(path, pages);
    }

    /* a 401 while signed in means the session is gone */
    function guard(promise) {
        return promise.catch(function (err) {
            if (err.status === 401 && state.me) {
                toast(t('sessionEnded'));
                P.endSession();
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
        outbox: null,
        current: null,        /* the open room */
        sideCursor: null,     /* cursor of the last /sub/chat/side message */
        sideResumed: false,   /* the side SUBSCRIBE of this connection resumed */
        resumeOff: false,     /* the server refused resumes: reload instead */
        resumeRefusals: 0,
        receiptIds: false,    /* RECEIPTs name the message (message-id) */
        connMessages: 0,      /* MESSAGE frames on this connection */
        roomGen: 0,
        tab: 'rooms',
    };

    P.PAGE = PAGE;
    P.ROOM_RE = ROOM_RE;
    P.LANG = LANG;
    P.t = t;
    P.$ = $;
    P.el = el;
    P.applyStrings = applyStrings;
    P.toast = toast;
    P.timeFmt = timeFmt;
    P.longDayFmt = longDayFmt;
    P.fullFmt = fullFmt;
    P.parseTime = parseTime;
    P.shortTime = shortTime;
    P.cursorOf = cursorOf;
    P.remember = remember;
    P.roomIdFor = roomIdFor;
    P.peerIdOf = peerIdOf;
    P.api = api;
    P.apiPages = apiPages;
    P.guard = guard;
    P.state = state;
})();
