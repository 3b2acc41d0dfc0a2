/* room.js - the open conversation of the chat page: its history (pages over
 * REST, older ones on scrolling up), its live messages (/sub/chat/room/{roomId}),
 * the read marker (/pub/chat/read) and the pending items of the outbox.
 *
 * No gap, no duplicate: the room is subscribed before its history is loaded,
 * live messages wait until the page is in and are merged by id; the
 * subscription remembers the cursor of the last message of the list and, after
 * a reconnect, resumes after it (resume-after). Without a cursor (a server that
 * sends none, or refused a resume) the history is fetched back to a message
 * already shown and merged instead. The list keeps the server's order (older
 * pages first, then history, then live) and never re-sorts by id.
 */
(function () {
    'use strict';

    var P = window.ChatdPage;
    var state = P.state, t = P.t, $ = P.$, el = P.el, toast = P.toast, api = P.api, guard = P.guard;
    var PAGE = P.PAGE, ROOM_RE = P.ROOM_RE, cursorOf = P.cursorOf, remember = P.remember, peerIdOf = P.peerIdOf;
    var parseTime = P.parseTime, timeFmt = P.timeFmt, longDayFmt = P.longDayFmt, fullFmt = P.fullFmt;

    /* ---- room ---- */
    var CATCHUP_PAGES = 20; /* pages fetched back after a reconnect without a cursor */
    var RETRY_MS = 3000;    /* before loading a room again after a failure */

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
        /* buffering: live messages wait in pendingLive while history loads;
         * lastCursor: the cursor of the last message of the list (resume point) */
        var cur = {
            roomId: roomId, peer: peer, ids: new Set(), next: null, loaded: false, loading: false,
            buffering: true, pendingLive: [], lastCursor: null, resumed: false, catching: false,
            syncAgain: false, scrollSoon: null, stick: false, sent: [], loadingOlder: false, readSent: null, gen: ++state.roomGen,
        };
        state.current = cur;
        history.replaceState(null, '', '#' + roomId);
        $('room-title').textContent = peer.name || peer.loginId;
        $('room-title').title = peer.loginId ? '@' + peer.loginId : '';
        P.avatar($('room-avatar'), peer);
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
        P.renderRooms();
        renderPending();
        /* subscribe first, load once the subscription is active (its RECEIPT):
         * whatever is published in between comes live and is merged by id;
         * after a reconnect, resume after the last message, or catch up */
        cur.sub = state.client.subscribe('/sub/chat/room/' + roomId, function (frame) { onRoomMessage(cur, frame); },
            function () {
                cur.resumed = !state.resumeOff && cur.loaded && !cur.buffering && cur.lastCursor != null;
                return cur.resumed ? { 'resume-after': cur.lastCursor } : {};
            },
            function () { if (state.current === cur && !cur.resumed) syncRoom(cur); });
        /* offline: show the history now, catch up when the subscription is active */
        if (!state.client.connected) loadRoom(cur);
        if (window.matchMedia('(min-width: 721px)').matches) $('msg-input').focus();
    }

    /* syncRoom(cur): the subscription is (again) active without a resume:
     * load the room, or catch up; one already under way runs again after */
    function syncRoom(cur) {
        if (cur.loading || cur.catching) cur.syncAgain = true;
        else if (!cur.loaded) loadRoom(cur);
        else catchUp(cur);
    }

    function syncDone(cur) {
        if (state.current !== cur || !cur.syncAgain) return;
        cur.syncAgain = false;
        syncRoom(cur);
    }

    /* syncFailed(cur, err): a 4xx closes the room (the server refuses it: do
     * not keep subscribing); anything else is tried again, live messages
     * waiting meanwhile, so a failed load never leaves a gap */
    function syncFailed(cur, err) {
        toast(err.message);
        if (state.current !== cur) return;
        if (err.status >= 400 && err.status < 500) {
            closeRoom();
            return;
        }
        cur.syncAgain = false;
        setTimeout(function () {
            if (state.current === cur && state.client && state.client.connected) syncRoom(cur);
        }, RETRY_MS);
    }

    /* loadRoom(cur): the newest page, then what came live meanwhile */
    function loadRoom(cur) {
        cur.loading = true;
        guard(api('GET', messagesPath(cur.roomId, null))).then(function (page) {
            if (state.current !== cur) return;
            addMessages(page.messages || []);
            cur.next = page.next == null ? null : page.next;
            cur.loaded = true;
            endBuffering(cur);
            showOlderStatus();
            fillScreen();
            cur.loading = false;
            syncDone(cur);
        }, function (err) {
            cur.loading = false;
            syncFailed(cur, err);
        });
    }

    function endBuffering(cur) {
        var live = cur.pendingLive;
        cur.pendingLive = [];
        cur.buffering = false;
        addMessages(live);
        scrollToBottom();
        scheduleRead();
    }

    /* catchUp(cur): after a reconnect that could not resume: fetch pages back
     * until one holds a message already shown, then add what is newer than it.
     * Live messages wait meanwhile, so the order stays the server's. */
    function catchUp(cur) {
        cur.catching = true;
        cur.buffering = true;
        var pages = [];
        function step(before) {
            return guard(api('GET', messagesPath(cur.roomId, before))).then(function (page) {
                if (state.current !== cur) return null;
                var msgs = page.messages || [];
                pages.unshift({ msgs: msgs, next: page.next == null ? null : page.next });
                var known = cur.ids.size === 0 || msgs.some(function (m) { return cur.ids.has(m.id); });
                if (known || page.next == null || msgs.length === 0) return true;
                return pages.length >= CATCHUP_PAGES ? false : step(page.next);
            });
        }
        step(null).then(function (joined) {
            if (joined === null) return;
            var all = [].concat.apply([], pages.map(function (p) { return p.msgs; }));
            if (!joined) {
                /* more was missed than we fetch: start the room over from these pages */
                $('message-list').replaceChildren();
                cur.ids.clear();
                cur.lastCursor = null;
                cur.next = pages[0].next;
                addMessages(all);
            } else {
                /* what is older than the last shown message belongs to older pages */
                var from = 0;
                all.forEach(function (m, i) { if (cur.ids.has(m.id)) from = i + 1; });
                if (cur.ids.size === 0) cur.next = pages[0].next;
                addMessages(all.slice(from));
            }
            showOlderStatus();
            cur.catching = false;
            endBuffering(cur);
            syncDone(cur);
        }, function (err) {
            cur.catching = false;
            syncFailed(cur, err);
        });
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
            P.renderRooms();
        }
    }

    function onRoomMessage(cur, frame) {
        if (state.current !== cur) return;
        state.connMessages++;
        var msg;
        try { msg = JSON.parse(frame.body); } catch (e) { return; }
        if (!msg || (msg.type && msg.type !== 'chat') || msg.roomId !== cur.roomId) return;
        /* the frame's cursor (the room stream's); the body's if it has only that */
        msg.cursor = cursorOf(frame.headers.cursor) || cursorOf(msg.cursor);
        if (cur.buffering) {
            cur.pendingLive.push(msg);
            return;
        }
        /* measured once per burst (a replay brings thousands), scrolled once after */
        if (!cur.scrollSoon) {
            var box = $('messages');
            cur.stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
            cur.scrollSoon = setTimeout(function () {
                cur.scrollSoon = null;
                if (cur.stick && state.current === cur) scrollToBottom();
            }, 0);
        }
        if (msg.writerId === state.me.id) cur.stick = true;
        addMessages([msg]);
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

    /* addMessages(list, older): list is in the server's order; append it (or,
     * older=true, put it before the first message), skipping ids already shown */
    function addMessages(list, older) {
        var cur = state.current;
        var ol = $('message-list');
        var anchor = older ? ol.firstElementChild : null;
        var room = state.rooms.get(cur.roomId);
        var summaryChanged = false, settled = false;
        list.forEach(function (msg) {
            if (!msg || typeof msg.id !== 'string' || cur.ids.has(msg.id)) return;
            cur.ids.add(msg.id);
            if (room) remember(room, msg.id);
            if (msg.writerId === state.me.id) settled = settlePending(cur, msg) || settled;
            var li = renderMessage(msg);
            if (older) {
                ol.insertBefore(li, anchor);
                markDay(li);
                return;
            }
            ol.appendChild(li);
            markDay(li);
            cur.lastCursor = cursorOf(msg.cursor);
            if (room) {
                room.lastId = msg.id;
                room.lastMessage = msg.message;
                room.lastTimestamp = msg.timestamp;
                summaryChanged = true;
            }
        });
        if (anchor) markDay(anchor);
        if (settled) renderPending();
        if (summaryChanged) P.renderRoomsSoon();
    }

    /* markDay(li): a day line above the first message of each day */
    function markDay(li) {
        var prev = li.previousElementSibling;
        li.classList.toggle('new-day', !!li.dataset.day && (!prev || prev.dataset.day !== li.dataset.day));
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
            addMessages(got, true);
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
        if (!cur || !cur.loaded || cur.buffering || !client || !client.connected ||
            document.visibilityState !== 'visible') return;
        var newest = newestId();
        var room = state.rooms.get(cur.roomId);
        if (!newest) return;
        if (newest === cur.readSent && !(room && room.unread > 0)) return;
        cur.readSent = newest;
        client.send('/pub/chat/read', { roomId: cur.roomId, upTo: newest }, { receipt: false }).catch(function (err) {
            cur.readSent = null;
            toast(err.message);
        });
        if (room && room.unread) {
            room.unread = 0;
            P.renderRooms();
        }
    }

    /* ---- sending: the outbox (outbox.js) and its pending items ----
     * An entry shows as pending until a RECEIPT names its message; it then
     * waits in cur.sent until that message is in the list (live or resumed),
     * so it is never shown twice. */
    function onOutboxChange(entry, what) {
        var cur = state.current;
        if (what === 'delivered') {
            if (entry.messageId) state.receiptIds = true;
            if (cur && cur.roomId === entry.roomId && !(entry.messageId && cur.ids.has(entry.messageId)) &&
                !entry.shown) {
                cur.sent.push({ key: entry.key, id: entry.messageId, text: entry.text });
            }
        }
        if (cur && cur.roomId === entry.roomId) renderPending();
    }

    /* settlePending(cur, msg): my message msg is now in the list; drop its
     * pending item (by id; by text from a server whose RECEIPTs name no message) */
    function settlePending(cur, msg) {
        var i;
        for (i = 0; i < cur.sent.length; i++) {
            if (cur.sent[i].id === msg.id) {
                cur.sent.splice(i, 1);
                return true;
            }
        }
        if (state.receiptIds) return false;
        for (i = 0; i < cur.sent.length; i++) {
            if (cur.sent[i].id == null && cur.sent[i].text === msg.message) {
                cur.sent.splice(i, 1);
                return true;
            }
        }
        var waiting = state.outbox ? state.outbox.entries(cur.roomId) : [];
        for (i = 0; i < waiting.length; i++) {
            if (waiting[i].state === 'sending' && !waiting[i].shown && waiting[i].text === msg.message) {
                waiting[i].shown = true;
                return true;
            }
        }
        return false;
    }

    function pendingItem(key, text, stateName, error) {
        var li = el('li', 'msg mine pending');
        li.dataset.testid = 'message-pending';
        li.dataset.state = stateName;
        li.dataset.key = key;
        var bubble = el('div', 'bubble');
        bubble.appendChild(el('span', 'msg-text', text));
        var status = el('span', 'msg-time');
        if (stateName === 'failed') {
            status.textContent = t('sendFailed', { e: error || '' }) + ' ';
            var retry = el('button', 'link', t('retry'));
            retry.type = 'button';
            retry.addEventListener('click', function () { if (state.outbox) state.outbox.retry(key); });
            var discard = el('button', 'link', t('discard'));
            discard.type = 'button';
            discard.addEventListener('click', function () { if (state.outbox) state.outbox.discard(key); });
            status.append(retry, ' ', discard);
        } else {
            status.textContent = t('sending');
        }
        li.append(bubble, status);
        return li;
    }

    /* renderPending(): the open room's pending items, in the order sent */
    function renderPending() {
        var cur = state.current;
        var list = $('pending-list');
        if (!cur || !list) return;
        var items = cur.sent.map(function (s) { return pendingItem(s.key, s.text, 'sent'); });
        (state.outbox ? state.outbox.entries(cur.roomId) : []).forEach(function (e) {
            if (!e.shown) items.push(pendingItem(e.key, e.text, e.state, e.error));
        });
        var box = $('messages');
        var nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
        list.replaceChildren.apply(list, items);
        if (nearBottom) scrollToBottom();
    }

    function sendText(text) {
        var cur = state.current;
        if (!cur || !text || !state.outbox) return;
        state.outbox.add(cur.roomId, text);
        scrollToBottom();
    }
    P.openRoom = openRoom;
    P.closeRoom = closeRoom;
    P.loadOlder = loadOlder;
    P.scheduleRead = scheduleRead;
    P.renderPending = renderPending;
    P.onOutboxChange = onOutboxChange;
    P.sendText = sendText;
})();
