// tests/e2e/paging.mjs - the paged lists GET /api/members and GET /api/rooms
// against a chatd with a fresh, empty store (tests/suites/30-e2e.sh starts
// one for this file alone, so every member in the store is one made here):
// limit (default 50, clamped to 100), after=, q=, the RFC 8288 Link header
// to the next page until the last one, every member seen exactly once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http, makeMember, uid } from './lib.mjs';

const TOTAL = 105; /* more than the largest page */

/* the URL of the rel="next" link of a response, or null */
function nextLink(r) {
    const h = r.headers.get('link');
    if (!h) return null;
    const m = /^<([^>]+)>;\s*rel="next"$/.exec(h);
    assert.ok(m, `a Link header of RFC 8288 form: ${h}`);
    return m[1];
}

/* every page from `first`, following Link; returns the pages' arrays */
async function walk(first, token) {
    const pages = [];
    for (let url = first; url; ) {
        const r = await http('GET', url, { token });
        assert.equal(r.status, 200, `${url}: ${r.text}`);
        assert.ok(Array.isArray(r.json), 'the list keeps its array shape');
        pages.push(r.json);
        url = nextLink(r);
        assert.ok(pages.length <= TOTAL + 1, 'the pages end');
    }
    return pages;
}

test('GET /api/members is paged by id with limit, after, q and Link', async () => {
    const tag = uid('pg').replace(/[^a-z0-9]/gi, '').slice(0, 10).toLowerCase();
    const made = [];
    for (let i = 0; i < TOTAL; i += 8) { /* under max_hashes_per_addr */
        const batch = [];
        for (let j = i; j < Math.min(TOTAL, i + 8); j++)
            batch.push(makeMember(j % 2 ? `${tag}odd` : `${tag}even`, j % 3 ? undefined : `Zed ${tag} ${j}`));
        made.push(...(await Promise.all(batch)));
    }
    const token = made[0].token;
    const ids = made.map((m) => Number(m.id)).sort((a, b) => a - b);

    const dflt = await http('GET', '/api/members', { token });
    assert.equal(dflt.status, 200);
    assert.equal(dflt.json.length, 50, 'default limit 50');
    assert.deepEqual(dflt.json.map((m) => Number(m.id)), ids.slice(0, 50), 'ordered by id');
    assert.equal(nextLink(dflt), `/api/members?after=${ids[49]}&limit=50`);

    const big = await http('GET', '/api/members?limit=1000', { token });
    assert.equal(big.json.length, 100, 'limit clamped to 100');
    assert.equal(nextLink(big), `/api/members?after=${ids[99]}&limit=100`);
    const max = await http('GET', '/api/members?limit=100', { token });
    assert.equal(max.json.length, 100);

    const after = await http('GET', `/api/members?after=${ids[10]}&limit=5`, { token });
    assert.deepEqual(after.json.map((m) => Number(m.id)), ids.slice(11, 16), 'after= starts past that id');

    const last = await http('GET', `/api/members?after=${ids[TOTAL - 3]}`, { token });
    assert.deepEqual(last.json.map((m) => Number(m.id)), ids.slice(TOTAL - 2));
    assert.equal(last.headers.get('link'), null, 'no Link on the last page');
    const past = await http('GET', `/api/members?after=${ids[TOTAL - 1]}`, { token });
    assert.deepEqual(past.json, []);
    assert.equal(past.headers.get('link'), null);

    for (const limit of [7, 50, 100]) {
        const pages = await walk(`/api/members?limit=${limit}`, token);
        assert.equal(pages.length, Math.ceil(TOTAL / limit), `pages of ${limit}`);
        for (const p of pages.slice(0, -1)) assert.equal(p.length, limit);
        const seen = pages.flat().map((m) => Number(m.id));
        assert.equal(seen.length, TOTAL, 'every member once');
        assert.deepEqual(seen, ids, 'exactly the members, in id order, each once');
    }

    /* q: a prefix of the login id or of the name, letters without case */
    const odd = made.filter((m) => m.loginId.startsWith(`${tag}odd`)).map((m) => Number(m.id)).sort((a, b) => a - b);
    const oddPages = await walk(`/api/members?q=${encodeURIComponent(tag.toUpperCase() + 'ODD')}&limit=10`, token);
    assert.deepEqual(oddPages.flat().map((m) => Number(m.id)), odd, 'q= on the login id, paged');
    assert.equal(oddPages.length, Math.ceil(odd.length / 10));
    const zed = made.filter((m) => m.name.startsWith('Zed ')).map((m) => Number(m.id)).sort((a, b) => a - b);
    const zedPages = await walk(`/api/members?q=${encodeURIComponent('zed ' + tag)}&limit=4`, token);
    assert.deepEqual(zedPages.flat().map((m) => Number(m.id)), zed, 'q= on the name (with a space), paged');
    const first = await http('GET', `/api/members?q=${encodeURIComponent('zed ' + tag)}&limit=4`, { token });
    assert.match(nextLink(first), new RegExp(`^/api/members\\?after=\\d+&limit=4&q=zed%20${tag}$`));
    const none = await http('GET', '/api/members?q=nobody-has-this', { token });
    assert.deepEqual(none.json, []);

    for (const bad of ['limit=0', 'limit=abc', 'limit=-1', 'after=x', 'after=', `q=${'a'.repeat(65)}`]) {
        const r = await http('GET', `/api/members?${bad}`, { token });
        assert.equal(r.status, 400, `${bad}: ${r.text}`);
    }
    assert.equal((await http('GET', '/api/members?limit=5')).status, 401);
});

test('GET /api/rooms is paged the same way (the store order, newest first)', async () => {
    const me = await makeMember('rooms');
    const peers = [];
    for (let i = 0; i < 5; i++) peers.push(await makeMember('peer'));
    for (const p of peers) {
        const a = Math.min(me.id, p.id), b = Math.max(me.id, p.id);
        const r = await http('POST', `/api/rooms/${a}&${b}/messages`, { token: me.token, body: { message: `hi ${p.loginId}` } });
        assert.ok(r.status === 201 || r.status === 200, r.text);
    }
    const all = await http('GET', '/api/rooms', { token: me.token });
    assert.equal(all.json.length, 5);
    assert.equal(all.headers.get('link'), null);
    const pages = await walk('/api/rooms?limit=2', me.token);
    assert.deepEqual(pages.map((p) => p.length), [2, 2, 1]);
    assert.deepEqual(pages.flat().map((r) => r.roomId), all.json.map((r) => r.roomId), 'each room once, in order');
    const one = await http('GET', `/api/rooms?limit=1&q=${encodeURIComponent(peers[2].loginId)}`, { token: me.token });
    assert.equal(one.json.length, 1);
    assert.equal(Number(one.json[0].peer.id ?? one.json[0].peer), peers[2].id);
});
