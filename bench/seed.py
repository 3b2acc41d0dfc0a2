#!/usr/bin/env python3
"""bench/seed.py - puts the load generator's members and their login sessions
straight into a running chatd's store, so that a benchmark run does not spend
its minutes on argon2id (two hashes per member through the REST API: about
4,000 for 2,000 members, 64 MiB each, on 2 cores).

    seed.py --sqlite DB.sqlite  --prefix lg --rooms N --cache TOKENS [--ttl S]
    seed.py --psql "psql command line" --prefix lg --rooms N --cache TOKENS

It writes the rows chatd's own registration and login write (members: login
id, name, the password hash; sessions: the BLAKE2b-256 of a random token, the
member, the expiry), copying the password hash of member <prefix>a0, which
must have been registered through the REST API first (so every seeded member
can also log in with the bench password). Members already in the cache file
or in the store are left alone. The cache lines are "login id token", as
bench/loadgen --token-cache reads them.
"""
import argparse
import hashlib
import os
import secrets
import sqlite3
import subprocess
import sys
import time


def logins(prefix, rooms):
    for r in range(rooms):
        yield f"{prefix}a{r}"
        yield f"{prefix}b{r}"


def read_cache(path):
    have = {}
    if os.path.exists(path):
        for line in open(path):
            p = line.split()
            if len(p) == 3:
                have[p[0]] = line
    return have


def token_pair():
    tok = secrets.token_hex(32)  # chatd's tokens: 32 random bytes in hex
    return tok, hashlib.blake2b(tok.encode(), digest_size=32).hexdigest()


def seed_sqlite(path, want, expires, now):
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA busy_timeout = 60000")
    row = db.execute("SELECT pw_hash FROM members WHERE login_id = ?", (want[0][1],)).fetchone()
    if not row or not row[0]:
        sys.exit(f"seed.py: member {want[0][1]} is not registered in {path}")
    pw = row[0]
    out = []
    with db:
        for login in (w[0] for w in want):
            db.execute("INSERT OR IGNORE INTO members(login_id, name, pw_hash, created_ms) "
                       "VALUES (?, ?, ?, ?)", (login, login, pw, now))
            (mid,) = db.execute("SELECT id FROM members WHERE login_id = ?", (login,)).fetchone()
            tok, h = token_pair()
            db.execute("INSERT INTO sessions(token_hash, member_id, expires_ms) VALUES (?, ?, ?)",
                       (h, mid, expires))
            out.append(f"{login} {mid} {tok}\n")
    db.close()
    return out


def psql(cmd, sql):
    r = subprocess.run(cmd + ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-F", " "], input=sql,
                       text=True, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"seed.py: psql failed: {r.stderr.strip()}")
    return r.stdout


def seed_pg(cmd, want, expires, now):
    first = want[0][1]
    if not psql(cmd, f"SELECT 1 FROM members WHERE login_id = '{first}' AND pw_hash IS NOT NULL;\n").strip():
        sys.exit(f"seed.py: member {first} is not registered in the PostgreSQL store")
    values = ",".join(f"('{w[0]}')" for w in want)
    sql = (f"INSERT INTO members(login_id, name, pw_hash, created_ms) "
           f"SELECT v.l, v.l, (SELECT pw_hash FROM members WHERE login_id = '{first}'), {now} "
           f"FROM (VALUES {values}) AS v(l) ON CONFLICT (login_id) DO NOTHING;\n"
           f"SELECT login_id, id FROM members WHERE login_id IN ({values.replace('(', '').replace(')', '')});\n")
    ids = dict(line.split() for line in psql(cmd, sql).splitlines() if line.strip())
    out, rows = [], []
    for login, _ in want:
        tok, h = token_pair()
        rows.append(f"('{h}', {ids[login]}, {expires})")
        out.append(f"{login} {ids[login]} {tok}\n")
    psql(cmd, "INSERT INTO sessions(token_hash, member_id, expires_ms) VALUES " + ",".join(rows) + ";\n")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--sqlite")
    g.add_argument("--psql")
    ap.add_argument("--prefix", default="lg")
    ap.add_argument("--rooms", type=int, required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--ttl", type=int, default=604800, help="session lifetime, seconds")
    a = ap.parse_args()
    if not a.prefix.isalnum() or not 1 <= a.rooms <= 10000:
        sys.exit("seed.py: --prefix must be alphanumeric and --rooms 1..10000")
    have = read_cache(a.cache)
    first = f"{a.prefix}a0"
    if first not in have:
        sys.exit(f"seed.py: {first} is not in {a.cache}: register it through the REST API first")
    want = [(login, first) for login in logins(a.prefix, a.rooms) if login not in have]
    if not want:
        return
    now = int(time.time() * 1000)
    expires = now + a.ttl * 1000
    if a.sqlite:
        lines = seed_sqlite(a.sqlite, want, expires, now)
    else:
        lines = seed_pg(a.psql.split(), want, expires, now)
    with open(a.cache, "a") as f:
        f.writelines(lines)
    print(f"seed.py: {len(lines)} members and sessions written, {len(have)} were there")


if __name__ == "__main__":
    main()
