#!/usr/bin/env python3
"""bench/report.py - turns one bench/run.sh results directory into the figures
section of docs/benchmarks.md (between the FIGURES markers) and PNG plots
(matplotlib), and prints the comparison and the targets on stdout.

    report.py RESULTS_DIR DOC.md IMG_DIR

Only numbers from RESULTS_DIR (results.csv, timeline-*.dat, hist-*.dat,
floor.txt, perf-*.txt, synctrace-*.txt, logs/*.metrics) are written; a server or scenario that
was not measured is shown as "-" (never estimated).
"""
import csv
import os
import re
import sys

BEGIN = "<!-- BEGIN FIGURES (written by bench/run.sh; do not edit by hand) -->"
END = "<!-- END FIGURES -->"

SCEN = {
    "2-fanout": "(2) fan-out at in-flight 1: one publisher, one room, every subscriber has a message before the next is sent",
    "5-fanout-half": "(5) fan-out paced at half of the server's own in-flight-1 peak",
    "1-chat1to1": "(1) 1:1 rooms: two members per room, each sends 1 msg/s",
    "3-flatout": "(3) persisted messages flat out (RECEIPT after the commit; 100 connections in 50 rooms, 16 in flight each)",
    "4-idle": "(4) idle subscribed connections",
}


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}" + unit
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def read_kv(path):
    d = {}
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("|")
            d[k] = v
    return d


def lag_buckets(path):
    """Cumulative bucket counts of chatd_loop_lag_seconds in a /metrics scrape."""
    b = {}
    if os.path.exists(path):
        for line in open(path):
            m = re.match(r'chatd_loop_lag_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\}\s+(\S+)', line)
            if m:
                b[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
    return b


def loop_lag(before, after):
    """p50/p99/p99.9 bucket bounds (seconds) of the loop lag observed between two scrapes."""
    a, b = lag_buckets(after), lag_buckets(before)
    if not a:
        return None
    d = sorted((le, c - b.get(le, 0)) for le, c in a.items())
    n = d[-1][1]
    if n <= 0:
        return None

    def q(p):
        for le, c in d:
            if c >= p * n:
                return le
        return float("inf")
    return {"n": n, "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": next(
        (le for le, c in d if c >= n), float("inf"))}


def syncfloor_of(line):
    """The percentiles of a `syncfloor` line, in ms, or None."""
    v = dict(re.findall(r"(\w+)_ms=([0-9.]+)", line or ""))
    v.update({k: x for k, x in re.findall(r"\b(n|secs|over_2\.5ms|over_20ms)=([0-9.]+)", line or "")})
    return {k: float(x) for k, x in v.items()} if "p99" in v else None


def sync_trace(path):
    """Durations (ms) of the fdatasync calls in a `perf trace` output, sorted."""
    if not os.path.exists(path):
        return []
    d = [float(m.group(1)) for m in (re.search(r"\(\s*([0-9.]+) ms\): .*fdatasync", x) for x in open(path))
         if m]
    return sorted(d)


def pct(sorted_vals, p):
    return sorted_vals[int((len(sorted_vals) - 1) * p)] if sorted_vals else None


def main():
    out, doc, img = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    targets, labels = [], {}
    for line in open(os.path.join(out, "targets.txt")):
        p = line.rstrip("\n").split("|")
        if len(p) >= 2:
            targets.append(p[0])
            labels[p[0]] = p[1]
    mach = read_kv(os.path.join(out, "machine.txt"))
    R = {(r["label"], r["scenario"]): r for r in rows}

    def get(t, s, k):
        r = R.get((t, s))
        return num(r.get(k)) if r else None

    def ms(t, s, k):
        v = get(t, s, k)
        return None if v is None else v / 1000.0

    def cpu_per_delivery(t, s):
        """Server CPU time per delivered message while publishing, in µs."""
        cpu, d = get(t, s, "server_cpu_pct"), get(t, s, "deliv_per_s")
        if cpu is None or not d:
            return None
        return cpu / 100.0 * 1e6 / d

    floor = num(mach.get("floor"))
    sf = syncfloor_of(mach.get("syncfloor"))
    L = [BEGIN, ""]
    L.append(f"Run of `bench/run.sh{' --quick' if mach.get('quick') == '1' else ''}` "
             f"(results directory `{os.path.basename(os.path.normpath(out))}`; the whole run took "
             f"{mach.get('elapsed', '?')} s with builds and member registration, "
             f"{mach.get('duration', '?')} s per measured run, twice that for the latency runs).")
    L += ["", "| machine | |", "|---|---|"]
    for k in ("date", "chatd", "cpu", "mem", "kernel", "os", "load", "rabbitmq", "postgresql",
              "libevent"):
        if k in mach:
            L.append(f"| {k} | {mach[k]} |")
    L += ["", "Servers measured:", ""]
    for t in targets:
        L.append(f"- `{t}`: {labels.get(t, t)}")
    L.append("")
    if floor:
        L.append(f"Floor (`bench/floor`, same run): **{fmt(floor)} µs** of CPU per `write()` of a "
                 "200-byte message to one of 1,000 loopback TCP sockets, the reader in another "
                 "process.")
        L.append("")
    if sf:
        L.append(f"Sync floor (`bench/syncfloor`, same run, before the servers start): "
                 f"{fmt(sf.get('n'))} `fdatasync()` calls of a 4 KB append each to a file in the results "
                 f"directory, one at a time, in {fmt(sf.get('secs'), ' s')}: p50 "
                 f"{fmt(sf['p50'], ' ms')}, p99 {fmt(sf['p99'], ' ms')}, p99.9 {fmt(sf['p999'], ' ms')}, "
                 f"max {fmt(sf['max'], ' ms')}; {fmt(sf.get('over_2.5ms'))} took more than 2.5 ms and "
                 f"{fmt(sf.get('over_20ms'))} more than 20 ms: what the disk alone adds to a delivery "
                 "that waits for a sync.")
        L.append("")

    # ------------------------------------------------------------ tables
    for s, title in SCEN.items():
        have = [t for t in targets if (t, s) in R]
        if not have:
            continue
        L += [f"#### {title}", ""]
        if s == "4-idle":
            L.append("| server | connections | set-up conn/s | RSS before (MB) | RSS connected (MB) | bytes / connection |")
            L.append("|---|---:|---:|---:|---:|---:|")
            for t in have:
                L.append(f"| {t} | {fmt(get(t, s, 'ready'))} | {fmt(get(t, s, 'conn_per_s'))} | "
                         f"{fmt((get(t, s, 'rss_before_kb') or 0) / 1024)} | "
                         f"{fmt((get(t, s, 'rss_conn_kb') or 0) / 1024)} | "
                         f"{fmt(get(t, s, 'rss_bytes_per_conn'))} |")
        else:
            L.append("| server | conns | published/s | delivered/s | lost | dup | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % of a core | server CPU µs / delivery | loadgen CPU % |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for t in have:
                L.append(f"| {t} | {fmt(get(t, s, 'ready'))} | {fmt(get(t, s, 'pub_per_s'))} | "
                         f"{fmt(get(t, s, 'deliv_per_s'))} | {fmt(get(t, s, 'lost'))} | "
                         f"{fmt(get(t, s, 'dups'))} | {fmt(ms(t, s, 'p50_us'))} | "
                         f"{fmt(ms(t, s, 'p99_us'))} | {fmt(ms(t, s, 'p999_us'))} | "
                         f"{fmt(ms(t, s, 'max_us'))} | {fmt(get(t, s, 'server_cpu_pct'))} | "
                         f"{fmt(cpu_per_delivery(t, s))} | {fmt(get(t, s, 'loadgen_cpu_pct'))} |")
            lags = [(t, loop_lag(os.path.join(out, "logs", f"{s}-{t}.metrics0"),
                                 os.path.join(out, "logs", f"{s}-{t}.metrics"))) for t in have]
            lags = [(t, v) for t, v in lags if v]
            if lags:
                L.append("")
                L.append("chatd's own loop lag during this run (`chatd_loop_lag_seconds`, scraped "
                         "before and after; bucket upper bounds): " + "; ".join(
                             f"`{t}` p50 ≤ {fmt(v['p50'] * 1e3, ' ms')}, p99 ≤ {fmt(v['p99'] * 1e3, ' ms')}, "
                             f"p99.9 ≤ {fmt(v['p999'] * 1e3, ' ms')}, max ≤ {fmt(v['max'] * 1e3, ' ms')} "
                             f"({fmt(v['n'])} ticks)" for t, v in lags) + ".")
        L.append("")

    # ------------------------------------------------------- comparison
    c, r = "chatd", "rabbitmq"
    fo_c, fo_r = cpu_per_delivery(c, "2-fanout"), cpu_per_delivery(r, "2-fanout")
    comp = [
        ("fan-out deliveries/s (in-flight 1)", get(c, "2-fanout", "deliv_per_s"),
         get(r, "2-fanout", "deliv_per_s"), "higher", None, None),
        ("server CPU per fan-out delivery (µs)", fo_c, fo_r, "lower", ratio(fo_c, floor),
         ratio(fo_r, floor)),
    ]
    for k, n in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
        comp.append((f"fan-out at half of own peak: {n} (ms)", ms(c, "5-fanout-half", k),
                     ms(r, "5-fanout-half", k), "lower", None, None))
    for k, n in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
        comp.append((f"1:1 rooms at 1 msg/s: {n} (ms)", ms(c, "1-chat1to1", k),
                     ms(r, "1-chat1to1", k), "lower", None, None))
    cc, cr = cpu_per_delivery(c, "1-chat1to1"), cpu_per_delivery(r, "1-chat1to1")
    comp += [
        ("1:1 rooms: server CPU (% of a core)", get(c, "1-chat1to1", "server_cpu_pct"),
         get(r, "1-chat1to1", "server_cpu_pct"), "lower", None, None),
        ("1:1 rooms: server CPU per delivery (µs)", cc, cr, "lower", ratio(cc, floor),
         ratio(cr, floor)),
        ("memory per idle subscribed connection (bytes)", get(c, "4-idle", "rss_bytes_per_conn"),
         get(r, "4-idle", "rss_bytes_per_conn"), "lower", None, None),
        ("persisted messages/s flat out (chatd: SQLite)", get(c, "3-flatout", "pub_per_s"),
         get(r, "3-flatout", "pub_per_s"), "higher", None, None),
        ("persisted messages/s flat out (chatd: PostgreSQL)", get("chatd-pg", "3-flatout", "pub_per_s"),
         get(r, "3-flatout", "pub_per_s"), "higher", None, None),
    ]
    L += ["#### chatd against RabbitMQ Web-STOMP and the floor (same machine, same client, same run)", ""]
    L.append("| measure | better | chatd | RabbitMQ | chatd / RabbitMQ | chatd / floor | RabbitMQ / floor |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    summary = []
    for name, a, b, better, fa, fb in comp:
        L.append(f"| {name} | {better} | {fmt(a)} | {fmt(b)} | {fmt(ratio(a, b), 'x')} | "
                 f"{fmt(fa, 'x')} | {fmt(fb, 'x')} |")
        summary.append(f"{name:52s} chatd {fmt(a):>10s}  rabbitmq {fmt(b):>10s}  ratio {fmt(ratio(a, b), 'x')}")
    L.append("")

    # ------------------------------------------------------------ targets
    def verdict(ok):
        return "not measured" if ok is None else ("**met**" if ok else "**not met**")

    def le(v, lim):
        return None if v is None else v <= lim

    def ge(v, lim):
        return None if v is None else v >= lim
    p99, p999 = ms(c, "1-chat1to1", "p99_us"), ms(c, "1-chat1to1", "p999_us")
    rp99, rp999 = ms(r, "1-chat1to1", "p99_us"), ms(r, "1-chat1to1", "p999_us")
    below = None if None in (p99, p999, rp99, rp999) else (p99 < rp99 and p999 < rp999)
    t2 = None if None in (p99, p999, below) else (p99 <= 1.5 and p999 <= 2.5 and below)
    np99, np999 = ms("chatd-nosync", "1-chat1to1", "p99_us"), ms("chatd-nosync", "1-chat1to1", "p999_us")
    t2_more = ""
    if np99 is not None:
        t2_more += f"; without fsync (`chatd-nosync`) p99 {fmt(np99, ' ms')}, p99.9 {fmt(np999, ' ms')}"
    if sf:
        t2_more += f"; the sync floor p99 {fmt(sf['p99'], ' ms')}, p99.9 {fmt(sf['p999'], ' ms')}"
    kp50, kp99 = ms("chatd-kafka-pg", "1-chat1to1", "p50_us"), ms("chatd-kafka-pg", "1-chat1to1", "p99_us")
    sq, pg = get(c, "3-flatout", "pub_per_s"), get("chatd-pg", "3-flatout", "pub_per_s")
    bpc = get(c, "4-idle", "rss_bytes_per_conn")
    tg = [
        ("1. fan-out CPU per delivery ≤ 1.5x the floor",
         f"{fmt(fo_c, ' µs')} / {fmt(floor, ' µs')} = {fmt(ratio(fo_c, floor), 'x')}",
         verdict(le(ratio(fo_c, floor), 1.5))),
        ("2. 1:1 p99 ≤ 1.5 ms, p99.9 ≤ 2.5 ms, both below RabbitMQ's",
         f"p99 {fmt(p99, ' ms')}, p99.9 {fmt(p999, ' ms')} (RabbitMQ {fmt(rp99, ' ms')}, {fmt(rp999, ' ms')})"
         + t2_more,
         verdict(t2)),
        ("3. fan-out at half of own peak: p99 ≤ 5 ms",
         f"p99 {fmt(ms(c, '5-fanout-half', 'p99_us'), ' ms')} at {fmt(get(c, '5-fanout-half', 'pub_per_s'))} msg/s",
         verdict(le(ms(c, "5-fanout-half", "p99_us"), 5))),
        ("4. idle subscribed connection ≤ 3 KB at 10,000",
         f"{fmt(bpc, ' B')} at {fmt(get(c, '4-idle', 'ready'))} connections",
         verdict(le(bpc, 3072))),
        ("5. Kafka + PostgreSQL, 1:1 at 1 msg/s: p50 ≤ 5 ms, p99 ≤ 20 ms",
         f"p50 {fmt(kp50, ' ms')}, p99 {fmt(kp99, ' ms')}",
         verdict(None if None in (kp50, kp99) else (kp50 <= 5 and kp99 <= 20))),
        ("6a. persisted msgs/s with SQLite ≥ 150,000", fmt(sq), verdict(ge(sq, 150000))),
        ("6b. persisted msgs/s with PostgreSQL (synchronous_commit=on) ≥ 50,000", fmt(pg),
         verdict(ge(pg, 50000))),
    ]
    L += ["#### Targets of issue 15 in this run", ""]
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for name, val, v in tg:
        L.append(f"| {name} | {val} | {v} |")
        summary.append(f"{name:72s} {val}: {v.replace('*', '')}")
    L.append("")

    # -------------------------------------------------------------- plots
    os.makedirs(img, exist_ok=True)
    rel = os.path.relpath(img, os.path.dirname(os.path.abspath(doc)))
    for name, caption in make_plots(out, img, targets):
        L += [f"![{caption}]({rel}/{name})", ""]

    # ------------------------------------------------------- sync trace
    st = sync_trace(os.path.join(out, "synctrace-1-chat1to1.txt"))
    if st:
        L += ["#### chatd's fdatasync calls during an extra `1-chat1to1` run", ""]
        prun = os.path.join(out, "logs", "synctrace-1-chat1to1.txt")
        if os.path.exists(prun):
            L.append("That run (`perf trace -e fdatasync` attached): " + "; ".join(
                re.sub(r"\s+", " ", x.strip()) for x in open(prun)
                if x.startswith(("delivered", "latency"))) + ".")
            L.append("")
        slow = sum(1 for x in st if x > 2.5)
        L.append(f"{fmt(len(st))} calls (the store's sync threads and its checkpoints): p50 {fmt(pct(st, 0.5), ' ms')}, "
                 f"p99 {fmt(pct(st, 0.99), ' ms')}, p99.9 {fmt(pct(st, 0.999), ' ms')}, "
                 f"max {fmt(st[-1], ' ms')}; {fmt(slow)} took more than 2.5 ms. Every message "
                 "committed during a slow sync waits for it (its RECEIPT and its MESSAGEs follow the sync).")
        L.append("")

    # ------------------------------------------------------------ profiles
    for scen in ("2-fanout", "1-chat1to1", "3-flatout"):
        flat = os.path.join(out, f"perf-{scen}-flat.txt")
        if not (os.path.exists(flat) and os.path.getsize(flat) > 0):
            continue
        L += [f"#### perf profile of chatd (embedded) during an extra `{scen}` run", ""]
        prun = os.path.join(out, "logs", f"profile-{scen}.txt")
        if os.path.exists(prun):
            L.append("That run (perf attached): " + "; ".join(
                re.sub(r"\s+", " ", x.strip()) for x in open(prun)
                if x.startswith(("delivered", "server CPU", "latency"))) + ".")
            L.append("")
        for part, title in (("dso", "samples by thread and object"),
                            ("flat", "self time by symbol"),
                            ("children", "inclusive time (self + callees) of user-space symbols, ≥ 1.5%")):
            p = os.path.join(out, f"perf-{scen}-{part}.txt")
            if not os.path.exists(p):
                continue
            lines = [re.sub(r"(\s+-)+\s*$", "", x.rstrip()) for x in open(p)
                     if not x.startswith("#") or "Samples" in x]
            if part == "children":
                lines = [x for x in lines if "[.]" in x or x.startswith("#")]
            lines = [x for x in lines if x.strip()][:32]
            L += [f"{title}:", "", "```"] + lines + ["```", ""]
    L.append(END)

    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n"
    block = "\n".join(L)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Figures\n\n" + block + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(doc)), exist_ok=True)
    with open(doc, "w") as f:
        f.write(text)
    print("\n".join(summary))
    print(f"report.py: wrote {doc} and the plots in {img}")


def read_cols(path):
    rows = []
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        rows.append([float(x) for x in line.split()])
    return rows


def make_plots(out, img, targets):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: python3-matplotlib missing; no plots", file=sys.stderr)
        return []
    plots = []
    colours = {"chatd": "tab:blue", "chatd-nosync": "tab:cyan", "chatd-kafka-pg": "tab:green",
               "chatd-pg": "tab:purple", "rabbitmq": "tab:orange"}
    # per-second timeline of every latency scenario: p50, p99 and max of each second
    panels = [(sc, title) for sc, title in (("1", "1:1 rooms at 1 msg/s per member"),
                                            ("5", "fan-out at half of own peak"))
              if any(os.path.exists(os.path.join(out, f"timeline-{sc}-{t}.dat")) for t in targets)]
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 4.2 * len(panels)), squeeze=False)
        for ax, (sc, title) in zip(axes[:, 0], panels):
            for t in targets:
                p = os.path.join(out, f"timeline-{sc}-{t}.dat")
                if not os.path.exists(p):
                    continue
                rows = [x for x in read_cols(p) if x[1] > 0]
                if not rows:
                    continue
                sec = [x[0] for x in rows]
                col = colours.get(t)
                ax.plot(sec, [x[2] / 1e3 for x in rows], color=col, ls=":", label=f"{t} p50")
                ax.plot(sec, [x[3] / 1e3 for x in rows], color=col, ls="--", label=f"{t} p99")
                ax.plot(sec, [x[5] / 1e3 for x in rows], color=col, ls="-", marker=".",
                        label=f"{t} max")
            ax.set_yscale("log")
            ax.set_xlabel("second of the run (from the first SEND)")
            ax.set_ylabel("publish-to-delivery latency (ms, log)")
            ax.set_title(f"{title}: p50 / p99 / max of each second")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        fig.savefig(os.path.join(img, "latency-timeline.png"), dpi=90)
        plt.close(fig)
        plots.append(("latency-timeline.png", "latency per second (p50, p99, max) of each latency scenario"))
    # percentile distributions
    panels = [(sc, title) for sc, title in (("1", "1:1 rooms at 1 msg/s"), ("2", "fan-out at in-flight 1"),
                                            ("5", "fan-out at half of own peak"))
              if any(os.path.exists(os.path.join(out, f"hist-{sc}-{t}.dat")) for t in targets)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for ax, (sc, title) in zip(axes[0], panels):
            for t in targets:
                p = os.path.join(out, f"hist-{sc}-{t}.dat")
                if not os.path.exists(p):
                    continue
                rows = [x for x in read_cols(p) if 0 < x[0] < 100]
                ax.plot([x[2] for x in rows], [x[1] / 1e3 for x in rows], marker="o", ms=3,
                        color=colours.get(t), label=t)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([2, 10, 100, 1000, 10000])
            ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%"])
            ax.set_xlabel("percentile")
            ax.set_ylabel("latency (ms, log)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(img, "latency-percentiles.png"), dpi=90)
        plt.close(fig)
        plots.append(("latency-percentiles.png", "latency percentiles"))
    return plots


if __name__ == "__main__":
    main()
