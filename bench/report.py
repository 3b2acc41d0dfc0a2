#!/usr/bin/env python3
"""bench/report.py - turns one bench/run.sh results directory into the figures
section of docs/benchmarks.md (between the FIGURES markers) and gnuplot PNGs.

    report.py RESULTS_DIR DOC.md IMG_DIR

Only numbers from RESULTS_DIR/results.csv are written; a missing server or
scenario is shown as "-" (never estimated).
"""
import csv
import os
import re
import subprocess
import sys

BEGIN = "<!-- BEGIN FIGURES (written by bench/run.sh; do not edit by hand) -->"
END = "<!-- END FIGURES -->"

SCEN = {
    "1-chat1to1": "(1) 1:1 chat, many rooms, 1 msg/s per member",
    "2-fanout": "(2) fan-out: one destination, many subscribers, flat out",
    "3-flatout": "(3) flat-out publish with persistence (receipts, window per publisher)",
    "4-idle": "(4) idle connections (connected + one subscription each)",
    "5-latency50": "(5) latency at 50% of the flat-out peak",
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


def main():
    out, doc, img = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = []
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    targets = []
    labels = {}
    tpath = os.path.join(out, "targets.txt")
    if os.path.exists(tpath):
        for line in open(tpath):
            p = line.rstrip("\n").split("|")
            if len(p) >= 2:
                targets.append(p[0])
                labels[p[0]] = p[1]
    mach = {}
    mpath = os.path.join(out, "machine.txt")
    if os.path.exists(mpath):
        for line in open(mpath):
            k, _, v = line.rstrip("\n").partition("|")
            mach[k] = v

    R = {}  # (target, scenario) -> row (last one wins)
    for r in rows:
        R[(r["label"], r["scenario"])] = r

    def get(t, s, k):
        r = R.get((t, s))
        return num(r.get(k)) if r else None

    def cpu_per_delivery(t, s):
        """Server CPU time per delivered message, in microseconds."""
        cpu, d = get(t, s, "server_cpu_pct"), get(t, s, "deliv_per_s")
        if cpu is None or not d:
            return None
        return cpu / 100.0 * 1e6 / d

    floor = num(mach.get("floor"))

    L = []
    L.append(BEGIN)
    L.append("")
    L.append(f"Run of `bench/run.sh{' --quick' if mach.get('quick') == '1' else ''}` "
             f"(results directory `{os.path.basename(os.path.normpath(out))}`; whole run "
             f"{mach.get('elapsed', '?')} s including builds and member registration, "
             f"{mach.get('duration', '?')} s per measured run).")
    L.append("")
    L.append("| machine | |")
    L.append("|---|---|")
    for k in ("date", "cpu", "mem", "kernel", "os", "load", "chatd", "rabbitmq", "libevent"):
        if k in mach:
            L.append(f"| {k} | {mach[k]} |")
    L.append("")
    L.append("Servers measured:")
    L.append("")
    for t in targets:
        L.append(f"- `{t}`: {labels.get(t, t)}")
    if not any(t.startswith("chatd") for t in targets):
        L.append("- **chatd was not measured in this run** (it did not build or start); "
                 "only RabbitMQ figures are shown.")
    L.append("")

    for s, title in SCEN.items():
        if not any((t, s) in R for t in targets):
            continue
        L.append(f"#### {title}")
        L.append("")
        if s == "4-idle":
            L.append("| server | connections | set-up conn/s | RSS before (MB) | RSS connected (MB) | bytes / connection |")
            L.append("|---|---:|---:|---:|---:|---:|")
            for t in targets:
                if (t, s) not in R:
                    continue
                L.append(f"| {t} | {fmt(get(t, s, 'ready'))} | {fmt(get(t, s, 'conn_per_s'))} | "
                         f"{fmt((get(t, s, 'rss_before_kb') or 0) / 1024)} | "
                         f"{fmt((get(t, s, 'rss_conn_kb') or 0) / 1024)} | "
                         f"{fmt(get(t, s, 'rss_bytes_per_conn'))} |")
        else:
            L.append("| server | conns | published/s | delivered/s | lost | dup | dropped conns | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % | server CPU µs / delivery | loadgen CPU % |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for t in targets:
                if (t, s) not in R:
                    continue
                ms = lambda k: (get(t, s, k) or 0) / 1000.0
                L.append(f"| {t} | {fmt(get(t, s, 'ready'))} | {fmt(get(t, s, 'pub_per_s'))} | "
                         f"{fmt(get(t, s, 'deliv_per_s'))} | {fmt(get(t, s, 'lost'))} | "
                         f"{fmt(get(t, s, 'dups'))} | {fmt(get(t, s, 'dropped'))} | "
                         f"{fmt(ms('p50_us'))} | {fmt(ms('p99_us'))} | "
                         f"{fmt(ms('p999_us'))} | {fmt(ms('max_us'))} | "
                         f"{fmt(get(t, s, 'server_cpu_pct'))} | {fmt(cpu_per_delivery(t, s))} | "
                         f"{fmt(get(t, s, 'loadgen_cpu_pct'))} |")
        L.append("")

    # ratios against RabbitMQ
    chatds = [t for t in targets if t.startswith("chatd")]
    if "rabbitmq" in targets and chatds:
        L.append("#### Ratios against RabbitMQ Web-STOMP (same machine, same client, same run)")
        L.append("")
        L.append("| measure | better is | " + " | ".join(f"{t} / rabbitmq" for t in chatds) +
                 " | issue 7 target |")
        L.append("|---|---|" + "---:|" * len(chatds) + "---|")

        def line(name, s, k, higher, target):
            cells = []
            for t in chatds:
                a, b = get(t, s, k), get("rabbitmq", s, k)
                cells.append(fmt(ratio(a, b), "x") if ratio(a, b) is not None else "-")
            L.append(f"| {name} | {'higher' if higher else 'lower'} | " + " | ".join(cells) +
                     f" | {target} |")

        line("fan-out deliveries/s", "2-fanout", "deliv_per_s", True, ">= 5x")
        line("flat-out (persisted) publishes/s", "3-flatout", "pub_per_s", True, "")
        line("flat-out (persisted) deliveries/s", "3-flatout", "deliv_per_s", True, ">= 5x")
        line("1:1 chat server CPU", "1-chat1to1", "server_cpu_pct", False, "")
        line("1:1 chat p99 latency", "1-chat1to1", "p99_us", False, "")
        line("idle bytes per connection", "4-idle", "rss_bytes_per_conn", False, "< 8 KB absolute")
        line("p99 latency at 50% of own peak", "5-latency50", "p99_us", False, "< 5 ms absolute")
        line("connection set-up rate (idle run)", "4-idle", "conn_per_s", True, "")
        L.append("")
        L.append("Absolute targets of issue 7:")
        L.append("")
        for t in chatds:
            p99 = get(t, "5-latency50", "p99_us")
            bpc = get(t, "4-idle", "rss_bytes_per_conn")
            fo = ratio(get(t, "2-fanout", "deliv_per_s"), get("rabbitmq", "2-fanout", "deliv_per_s"))
            fl = ratio(get(t, "3-flatout", "deliv_per_s"), get("rabbitmq", "3-flatout", "deliv_per_s"))

            def ok(c):
                return "-" if c is None else ("met" if c else "**not met**")
            L.append(f"- `{t}`: p99 at 50% peak {fmt(p99 / 1000 if p99 is not None else None, ' ms')} "
                     f"(< 5 ms: {ok(None if p99 is None else p99 < 5000)}); "
                     f"idle memory {fmt(bpc, ' B')}/connection (< 8 KB: {ok(None if bpc is None else bpc < 8192)}); "
                     f"fan-out {fmt(fo, 'x')} (>= 5x: {ok(None if fo is None else fo >= 5)}); "
                     f"flat-out deliveries {fmt(fl, 'x')} (>= 5x: {ok(None if fl is None else fl >= 5)}).")
        L.append("")

    # the targets of issue 15, each said met or not
    if chatds:
        L.append("#### Targets (issue 15)")
        L.append("")
        if floor:
            L.append(f"Floor measured in this run by `bench/floor`: {fmt(floor)} µs of CPU per "
                     "write() of a 200-byte message to a loopback socket.")
            L.append("")

        def verdict(v, limit):
            if v is None:
                return "not measured"
            return "met" if v <= limit else "**not met**"
        for t in chatds:
            fo = cpu_per_delivery(t, "2-fanout")
            fr = fo / floor if fo is not None and floor else None
            p99 = get(t, "1-chat1to1", "p99_us")
            p999 = get(t, "1-chat1to1", "p999_us")
            rp99 = get("rabbitmq", "1-chat1to1", "p99_us")
            rp999 = get("rabbitmq", "1-chat1to1", "p999_us")
            l50 = get(t, "5-latency50", "p99_us")
            bpc = get(t, "4-idle", "rss_bytes_per_conn")
            ms = lambda v: None if v is None else v / 1000.0
            L.append(f"- `{t}`:")
            L.append(f"  - fan-out CPU per delivery {fmt(fo, ' µs')} = {fmt(fr, 'x')} the floor "
                     f"(target <= 1.5x): {verdict(fr, 1.5)}")
            below = (None if p99 is None or rp99 is None or p999 is None or rp999 is None
                     else p99 < rp99 and p999 < rp999)
            L.append(f"  - 1:1 chat p99 {fmt(ms(p99), ' ms')} (target <= 1.5 ms): {verdict(ms(p99), 1.5)}; "
                     f"p99.9 {fmt(ms(p999), ' ms')} (target <= 2.5 ms): {verdict(ms(p999), 2.5)}; "
                     f"both below RabbitMQ's: {'-' if below is None else ('yes' if below else '**no**')}")
            L.append(f"  - fan-out at half of own peak p99 {fmt(ms(l50), ' ms')} (target <= 5 ms): "
                     f"{verdict(ms(l50), 5)}")
            L.append(f"  - idle subscribed connection {fmt(bpc, ' B')} (target <= 3 KB): "
                     f"{verdict(bpc, 3072)}")
        L.append("")

    # plots
    os.makedirs(img, exist_ok=True)
    plots = make_plots(out, img, targets, R, get)
    rel = os.path.relpath(img, os.path.dirname(os.path.abspath(doc)))
    for name, caption in plots:
        L.append(f"![{caption}]({rel}/{name})")
        L.append("")

    for scen in ("2-fanout", "3-flatout"):
        flat = os.path.join(out, f"perf-{scen}-flat.txt")
        dso = os.path.join(out, f"perf-{scen}-dso.txt")
        if not (os.path.exists(flat) and os.path.getsize(flat) > 0):
            continue
        prun = os.path.join(out, "logs", f"profile-{scen}.txt")
        L.append(f"#### perf profile of chatd (embedded) during an extra `{scen}` run")
        L.append("")
        if os.path.exists(prun):
            L.append("That run: " + "; ".join(l.strip() for l in open(prun)
                                               if l.startswith(("delivered", "server CPU")))
                     + ".")
            L.append("")
        L.append("```")
        if os.path.exists(dso):
            L.extend(l.rstrip() for l in open(dso) if not l.startswith("#") or "Samples" in l)
            L.append("")
        L.extend(re.sub(r"(\s+-)+\s*$", "", l.rstrip()) for l in open(flat)
                 if not l.startswith("#"))
        L.append("```")
        L.append("")
    L.append(END)

    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n"
    block = "\n".join(L) + "\n"
    if BEGIN in text and END in text:
        pre = text[: text.index(BEGIN)]
        post = text[text.index(END) + len(END):]
        text = pre + block.rstrip("\n") + post
    else:
        text = text.rstrip("\n") + "\n\n## Figures\n\n" + block
    os.makedirs(os.path.dirname(os.path.abspath(doc)), exist_ok=True)
    with open(doc, "w") as f:
        f.write(text)


def gnuplot(script, img):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, cwd=img,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"report.py: gnuplot failed: {getattr(e, 'stderr', e)}", file=sys.stderr)
        return False


def make_plots(out, img, targets, R, get):
    plots = []
    head = ("set terminal pngcairo noenhanced size 900,480 font 'DejaVu Sans,10'\n"
            if has_cairo() else "set terminal png noenhanced size 900,480\n")
    # throughput bars
    dat = os.path.join(img, "throughput.dat")
    with open(dat, "w") as f:
        for name, s, k in (("fan-out_deliveries/s", "2-fanout", "deliv_per_s"),
                           ("flat-out_publishes/s", "3-flatout", "pub_per_s"),
                           ("flat-out_deliveries/s", "3-flatout", "deliv_per_s"),
                           ("1:1_deliveries/s", "1-chat1to1", "deliv_per_s")):
            f.write(name + " " + " ".join(str(get(t, s, k) or 0) for t in targets) + "\n")
    cols = " , ".join(f"'throughput.dat' using {i + 2}:xtic(1) title '{t}'"
                      for i, t in enumerate(targets))
    if targets and gnuplot(head + "set output 'throughput.png'\nset style data histograms\n"
                           "set style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
                           "set logscale y\nset ylabel 'messages per second (log)'\nset key top right\n"
                           "set grid ytics\nset title 'Throughput, same client, same machine'\n"
                           f"plot {cols}\n", img):
        plots.append(("throughput.png", "throughput per scenario"))
    # latency percentile distribution
    for sc, name, title in (("5", "latency50.png", "Latency at 50% of each server's own flat-out peak"),
                            ("1", "latency-chat1to1.png", "Latency, 1:1 chat at 1 msg/s per member")):
        series = [(t, os.path.join(out, f"hist-{sc}-{t}.dat")) for t in targets
                  if os.path.exists(os.path.join(out, f"hist-{sc}-{t}.dat"))]
        if not series:
            continue
        plot = " , ".join(f"'{p}' using 3:2 with linespoints title '{t}'" for t, p in series)
        if gnuplot(head + f"set output '{name}'\nset logscale x\nset logscale y\n"
                   "set xtics ('50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, "
                   "'99.999%%' 100000, 'max' 1000000)\nset xlabel 'percentile'\n"
                   "set ylabel 'publish-to-delivery latency (us, log)'\nset grid\nset key top left\n"
                   f"set title \"{title}\"\nplot {plot}\n", img):
            plots.append((name, title))
    # latency over time in scenario 5: stalls show up as spikes of the max
    series = [(t, os.path.join(out, f"timeline-5-{t}.dat")) for t in targets
              if os.path.exists(os.path.join(out, f"timeline-5-{t}.dat"))]
    if series:
        plot = " , ".join(f"'{p}' using 1:($4/1000) with linespoints lc {i + 1} title '{t} max', "
                          f"'{p}' using 1:($3/1000) with lines dashtype 2 lc {i + 1} "
                          f"title '{t} mean'"
                          for i, (t, p) in enumerate(series))
        if gnuplot(head + "set output 'latency50-timeline.png'\nset logscale y\n"
                   "set xlabel 'second of the run'\nset ylabel 'latency per second (ms, log)'\n"
                   "set grid\nset key outside right\n"
                   "set title 'Scenario 5 over time: mean and max latency of each second'\n"
                   f"plot {plot}\n", img):
            plots.append(("latency50-timeline.png", "scenario 5, latency per second"))
    # memory per idle connection
    dat = os.path.join(img, "memory.dat")
    have = [t for t in targets if get(t, "4-idle", "rss_bytes_per_conn") is not None]
    if have:
        with open(dat, "w") as f:
            for t in have:
                f.write(f"{t} {get(t, '4-idle', 'rss_bytes_per_conn') / 1024.0:.2f}\n")
        if gnuplot(head + "set output 'memory.png'\nset style fill solid 0.8 border -1\n"
                   "set boxwidth 0.6\nset ylabel 'server RSS per idle connection (KB)'\n"
                   "set grid ytics\nset yrange [0:*]\nset title 'Memory per idle connection'\n"
                   "plot 'memory.dat' using 0:2:xtic(1) with boxes notitle, "
                   "'' using 0:2:(sprintf('%.1f', $2)) with labels offset 0,1 notitle\n", img):
            plots.append(("memory.png", "server memory per idle connection"))
    for f in ("throughput.dat", "memory.dat"):
        p = os.path.join(img, f)
        if os.path.exists(p):
            os.unlink(p)
    # the latency plots read the .dat files from the results dir: embed absolute paths only there
    return plots


def has_cairo():
    try:
        r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
        return "pngcairo" in (r.stdout + r.stderr)
    except OSError:
        return False


if __name__ == "__main__":
    main()
