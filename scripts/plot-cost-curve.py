#!/usr/bin/python3
"""Draws rsup's cost curve: what it costs to run N containers, from the rows that
`rsup-bench-suite fleet --counts 100,250,500,1000` writes (scripts/bench.sh's `resources` part,
FLEET_COUNTS), with podman's per-container start beside it where the peer harness measured one
(05-podman-density.sh: podman-run-d-each-<net>).

    /usr/bin/python3 scripts/plot-cost-curve.py RESULTS_DIR [OUT.png]
    # OUT defaults to docs/cost-curve.png, the committed picture: give OUT to keep it

RESULTS_DIR holds *.jsonl rows (05-rsup-fleet.jsonl, 05-density.jsonl). Needs matplotlib
(Debian: python3-matplotlib, for /usr/bin/python3). Prints the figures it plotted as a table too.
"""
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RESULTS", "/tmp/rsup-bench-results")
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "docs", "cost-curve.png")

rows = {}
for path in sorted(glob.glob(os.path.join(res, "*.jsonl"))):
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[r["id"]] = r

# Start: rsup-start-A-to-N-<net> is the wall time (s) of starting containers A..N.
starts = {}
net = None
for rid, r in rows.items():
    m = re.fullmatch(r"rsup-start-(\d+)-to-(\d+)-(\w+)", rid)
    if m:
        a, n, net = int(m.group(1)), int(m.group(2)), m.group(3)
        if isinstance(r.get("median"), (int, float)) and n > a:
            starts[n] = r["median"] * 1000.0 / (n - a)  # ms per container
counts = sorted(starts)
if not counts:
    sys.exit(f"no rsup-start-*-to-* rows in {res}/*.jsonl: run rsup-bench-suite fleet first")


def series(fmt, key="median", scale=1.0):
    """One value per count; None where the row (or its `key`) is missing."""
    out = []
    for n in counts:
        v = rows.get(fmt.format(n), {}).get(key)
        out.append(v * scale if isinstance(v, (int, float)) else None)
    return out


nan = float("nan")


def plotted(v):
    return [nan if x is None else x for x in v]


rss = series("rsup-rsupd-rss-{}", scale=1 / 1024)
keep = series("rsup-keepalive-pss-per-container-{}", scale=1 / 1024)
ps = series("rsup-cli-ps-{}")
stats = series("rsup-stats-rpc-{}")
scrape = series("rsup-metrics-scrape-{}")
scrape95 = series("rsup-metrics-scrape-{}", key="p95")
podman_net = {"default": "bridge", "none": "none"}.get(net, net)
podman = rows.get(f"podman-run-d-each-{podman_net}")

fig, ax = plt.subplots(2, 2, figsize=(11, 8))
fig.suptitle(f"rsup: cost of N running containers (network {net}, 2-core VM)")

start = [starts[n] for n in counts]
# (panel, title, y label, [(values, style, label)], [(y, color, style, label)] lines across)
panels = [
    (ax[0][0], "start", "ms per container",
     [(start, "o-", "rsup: create+start, ms per container (8 at a time)")],
     [(podman["median"], "tab:red", "--", f"podman run -d ({podman_net}): {podman['median']:.0f} ms each")]
     if podman else []),
    (ax[0][1], "memory", "MiB",
     [(rss, "o-", "rsupd RSS (MiB)"), (keep, "s-", "shim + init PSS per container (MiB)")], []),
    (ax[1][0], "listing", "ms",
     [(ps, "o-", "rsupctl ps (ms)"), (stats, "s-", "Stats RPC, all containers (ms)")], []),
    (ax[1][1], "scrape", "ms",
     [(scrape, "o-", "GET /metrics, median (ms)"), (scrape95, "s--", "GET /metrics, p95 (ms)")],
     [(50, "tab:green", ":", "goal: p95 < 50 ms at 1000")]),
]
for a, title, ylabel, curves, lines in panels:
    for values, style, label in curves:
        a.plot(counts, plotted(values), style, label=label)
    for y, color, style, label in lines:
        a.axhline(y, color=color, ls=style, label=label)
    a.set_xlabel("containers running")
    a.set_ylabel(ylabel)
    a.set_ylim(bottom=0)
    a.legend(fontsize=8)
    a.set_title(title)

fig.tight_layout()
fig.savefig(out, dpi=90)


def f(x):
    return "-" if x is None else f"{x:.1f}"


print("| containers | start, ms each | rsupd RSS, MiB | shim+init PSS each, MiB | ps, ms | Stats RPC, ms | scrape median (p95), ms |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, n in enumerate(counts):
    k = "-" if keep[i] is None else f"{keep[i]:.2f}"
    st = "-" if stats[i] is None else f"{stats[i]:.2f}"
    print(f"| {n} | {f(starts[n])} | {f(rss[i])} | {k} | {f(ps[i])} | {st} | {f(scrape[i])} ({f(scrape95[i])}) |")
if podman:
    print(f"\npodman run -d ({podman_net}), same machine: {podman['median']:.0f} ms per container")
print(f"\nwrote {out}", file=sys.stderr)
