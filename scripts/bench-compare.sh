#!/usr/bin/env bash
# Prints rsup's figures beside the peers' from one results directory (the table of
# docs/benchmarks.md): median, and p95 / p99 where the per-run values are known.
#
#   scripts/bench-compare.sh [RESULTS]        # default /tmp/rsup-bench-results
#
# scripts/bench.sh runs it at the end; it only reads $RESULTS/*.jsonl and $RESULTS/raw.
set -euo pipefail
RESULTS=${1:-${RESULTS:-/tmp/rsup-bench-results}}
[[ -d $RESULTS ]] || { echo "no results directory $RESULTS" >&2; exit 1; }
exec python3 - "$RESULTS" <<'EOF'
import glob
import json
import math
import os
import re
import statistics
import sys

res = sys.argv[1]
raw = os.path.join(res, "raw")
rows = {}
for path in sorted(glob.glob(os.path.join(res, "*.jsonl"))):
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[r["id"]] = r

# per-run values of the peers' rows: hyperfine exports and values files they keep in raw/
PEER_RAW = {
    "crun-run-true": "01-crun.json", "crun-run-true-nocgroup": "01-crun-nocg.json",
    "runc-run-true": "01-runc.json",
    "aardvark-query-rtt": "04-dns-rtt.txt", "busybox-nslookup-db": "04-nslookup.json",
    "nsenter-true-baseline": "04-nsenter-true.json",
    "podman-exec-nslookup-db": "04-podman-exec-nslookup.json",
    "dns-outage-crash": "04-crash-outage.txt", "restart-event-crash": "04-crash-restart.txt",
    "podman-restart-delay": "03-podman.delays", "docker-restart-delay": "03-docker.delays",
    "conmon-rss-each-none": "05-none-conmon-rss-kb.txt",
    "conmon-rss-each-bridge": "05-bridge-conmon-rss-kb.txt",
}
for net in ("none", "bridge"):
    for k, f in (("ps", "ps"), ("ps-a", "ps-a"), ("stats", "stats")):
        for rid in [i for i in rows if re.fullmatch(rf"podman-{k}-\d+-{net}", i)]:
            PEER_RAW[rid] = f"05-{net}-{f}.json"


def values(rid):
    f = os.path.join(raw, f"{rid}.txt")
    if not os.path.exists(f) and rid in PEER_RAW:
        f = os.path.join(raw, PEER_RAW[rid])
    if not os.path.exists(f):
        return None
    if f.endswith(".json"):
        return [t * 1e3 for t in json.load(open(f))["results"][0]["times"]]
    return [float(x) for x in open(f).read().split()]


def pct(v, q):
    s = sorted(v)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def fmt(x):
    if x is None:
        return "-"
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.3f}"


def cell(rid, scale=1.0):
    """median (p95/p99) of a row, or its single value."""
    r = rows.get(rid)
    if r is None or not r.get("n"):
        return "-", None
    v = values(rid)
    if v and len(v) > 1:
        v = [x * scale for x in v]
        return f"{fmt(statistics.median(v))} ({fmt(pct(v, 95))} / {fmt(pct(v, 99))})", r["unit"]
    return fmt(r["median"] * scale), r["unit"]


def first_delay(rid):
    m = re.search(r"first delays \(ms\): \[([0-9.]+)", rows.get(rid, {}).get("notes", ""))
    return m.group(1) if m else "-"


out = []


def line(label, rid, pid, unit_hint="", pscale=1.0, ptext=None):
    a, ua = cell(rid) if rid else ("-", None)
    if ptext is not None:
        b, ub = ptext, None
    else:
        b, ub = cell(pid, pscale) if pid else ("-", None)
    if a == "-" and b == "-":
        return
    unit = ua or ub or unit_hint
    out.append(f"| {label} | {a} | {b} {'(' + pid + ')' if pid and b != '-' else ''} | {unit} |")


def section(title):
    out.append(f"\n**{title}**\n")
    out.append("| figure | rsup: median (p95 / p99) | peer: median (p95 / p99) | unit |")
    out.append("|---|---:|---:|---|")


section("Cold start (01)")
line("create+start+wait /bin/true: rsup client library vs crun run", "rsup-run-true", "crun-run-true")
line("same, crun without cgroups", None, "crun-run-true-nocgroup")
line("same, runc run", None, "runc-run-true")
line("rsupctl run --rm (whole CLI process)", "rsup-cli-run-true", None)
line("create+start+wait on the default bridge network (goal: <= +10 ms over the first row)",
     "rsup-run-true-bridge", None)

section("Supervision (03, 04): rsup --restart-delay 0 vs podman --restart=always (no backoff)")
line("crash (SIGKILL) -> restarted, end to end: rsup kill call -> start event received; "
     "podman kill -9 pid 1 -> start event", "rsup-restart-crash-e2e", "restart-event-crash")
line("die -> start, the daemon's own event times (rsup: SIGKILL loop; podman: exit-1 loop)",
     "rsup-restart-die-to-start", "podman-restart-delay")
line("kill call -> die event (rsup)", "rsup-restart-kill-to-die", None)
line("exit-1 loop: die -> next start", "rsup-restart-delay", "podman-restart-delay")
for rid in sorted(i for i in rows if re.fullmatch(r"rsup-restarts-in-[0-9.]+s", i)):
    secs = rid[len("rsup-restarts-in-"):]
    line(f"exit-1 loop: restarts in {secs}", rid, f"podman-restarts-in-{secs}")
    line(f"exit-1 loop, rsup default backoff vs docker: restarts in {secs}",
         f"{rid}-default-backoff", f"docker-restarts-in-{secs}")
if "rsup-restart-delay" in rows or "podman-restart-delay" in rows:
    p = first_delay("podman-restart-delay")
    out.append(f"| exit-1 loop: first die -> start delay | {first_delay('rsup-restart-delay')} | "
               f"{p}{' (podman-restart-delay)' if p != '-' else ''} | ms |")
line("exit-1 loop, rsup default backoff: die -> next start", "rsup-restart-delay-default-backoff",
     "docker-restart-delay")

section("Networks and DNS (04): rsup embedded DNS vs netavark + aardvark-dns")
line("A query for `db`, raw UDP RTT from the client's netns", "rsup-dns-query-rtt", "aardvark-query-rtt")
line("busybox nslookup db inside the client (nsenter net+mnt)", "rsup-busybox-nslookup-db", "busybox-nslookup-db")
line("baseline: nsenter net+mnt /bin/true", "rsup-nsenter-true-baseline", "nsenter-true-baseline")
line("rsupctl exec / podman exec ... nslookup db", "rsup-exec-nslookup-db", "podman-exec-nslookup-db")
line("baseline: rsupctl exec app true", "rsup-exec-true", None)
line("crash of db (kill -9 pid 1): kill -> client resolves db again", "rsup-dns-outage-crash", "dns-outage-crash")
line("crash of db: kill -> daemon's start event of db", "rsup-restart-event-crash", "restart-event-crash")
line("kill db -> app connects to db:8080 by name again (exec poll)", "rsup-reconnect-crash", None)
line("kill db -> db's start event received", "rsup-reconnect-kill-to-start", None)

counts = sorted({int(x) for i in rows for x in re.findall(r"^rsup-rsupd-rss-(\d+)$", i)})
fleet_net = "bridge" if "rsup-create-start-each-default" in rows else "none"
pn = next((int(m.group(1)) for i in rows for m in [re.fullmatch(rf"podman-ps-(\d+)-{fleet_net}", i)] if m), None)
conmon_pss = None
if f"conmon-pss-sum-{fleet_net}" in rows and pn:
    conmon_pss = rows[f"conmon-pss-sum-{fleet_net}"]["median"] * 1024 / pn
section(f"Resources, memory, crash safety (05): rsup fleet (network {'default' if fleet_net == 'bridge' else 'none'}) "
        f"vs podman {pn or '?'} containers (--network {'benchnet' if fleet_net == 'bridge' else 'none'})")
for n in counts:
    line(f"{n}: GET /metrics (goal at 1000: p95 < 50 ms)", f"rsup-metrics-scrape-{n}", None)
    line(f"{n}: Stats RPC, all containers, one shot", f"rsup-stats-rpc-{n}", None)
    line(f"{n}: rsupctl stats --no-stream vs podman stats --no-stream", f"rsup-cli-stats-{n}",
         f"podman-stats-{pn}-{fleet_net}")
    line(f"{n}: rsupctl ps vs podman ps", f"rsup-cli-ps-{n}", f"podman-ps-{pn}-{fleet_net}")
    line(f"{n}: rsupd VmRSS", f"rsup-rsupd-rss-{n}", None)
    line(f"{n}: rsupd CPU, idle containers, no client", f"rsup-rsupd-cpu-idle-{n}", None)
    line(f"{n}: per container, shim vs conmon VmRSS", f"rsup-shim-rss-each-{n}", f"conmon-rss-each-{fleet_net}")
    line(f"{n}: per container, shim Pss vs conmon Pss (sum / N)", f"rsup-shim-pss-each-{n}", None,
         ptext=f"{fmt(conmon_pss)} (conmon-pss-sum-{fleet_net} / {pn})" if conmon_pss else "-")
    line(f"{n}: per container, rsup init (PID 1) VmRSS", f"rsup-init-rss-each-{n}", None)
    line(f"{n}: per container, init Pss", f"rsup-init-pss-each-{n}", None)
    line(f"{n}: per container, shim + init Pss (keeping it supervised)",
         f"rsup-keepalive-pss-per-container-{n}", None,
         ptext=f"{fmt(conmon_pss)} (conmon)" if conmon_pss else "-")
    line(f"{n}: SIGKILL rsupd -> new rsupd SERVING", f"rsup-readopt-serving-{n}", None)
    line(f"{n}: SIGKILL rsupd -> List shows all {n} running", f"rsup-readopt-all-running-{n}", None)
line("create+start one container while filling (8 at a time) vs podman run -d (sequential)",
     f"rsup-create-start-each-{'default' if fleet_net == 'bridge' else 'none'}",
     f"podman-run-d-each-{fleet_net}")
for rid in sorted(i for i in rows if i.startswith("rsup-start-") or i.startswith("rsup-rm-")):
    line(rows[rid]["what"][len("rsup: "):] if rows[rid]["what"].startswith("rsup: ") else rid, rid, None)
for rid in sorted(i for i in rows if re.fullmatch(rf"podman-(start|rm)-\d+-{fleet_net}", i)):
    line(rows[rid]["what"], None, rid)

# The goals of issue 16, each with its figure from this run and whether it holds.
def med(rid):
    r = rows.get(rid)
    return r["median"] if r and r.get("n") else None


def p95(rid):
    v = values(rid)
    return pct(v, 95) if v else (rows[rid].get("p95") if rid in rows else None)


if any(i in rows for i in ("rsup-image-pull", "podman-image-pull")):
    section("Images: cold pull from a docker-registry on loopback (pull part)")
    line("pull of a two-layer ~100 MB image (gzip) into an empty store: rsupctl pull vs podman pull",
         "rsup-image-pull", "podman-image-pull")
    a, b = med("rsup-image-pull"), med("podman-image-pull")
    if a and b:
        out.append(f"| rsup / podman (medians) | {a / b:.2f}x | | |")

if any(i in rows for i in ("rsup-docker-run", "podman-docker-run")):
    section("Docker API: docker run --rm IMAGE true against rsupd's Docker socket (docker-run part)")
    line("docker run --rm IMAGE true (docker CLI -> rsupd --docker-socket) vs podman run --rm IMAGE true",
         "rsup-docker-run", "podman-docker-run")
    a, b = med("rsup-docker-run"), med("podman-docker-run")
    if a and b:
        out.append(f"| rsup / podman (medians) | {a / b:.2f}x | | |")

goals = []


def goal(text, figure, holds):
    goals.append((text, figure, "-" if holds is None else ("holds" if holds else "does not hold")))


crun = med("crun-run-true")
for rid, what in (("rsup-run-true", "cold start (client library)"), ("rsup-cli-run-true", "whole CLI run --rm")):
    r = med(rid)
    goal(f"{what} <= 0.5x crun run", f"{fmt(r)} ms vs crun {fmt(crun)} ms" + (f" ({r / crun:.2f}x)" if r and crun else ""),
         (r <= 0.5 * crun) if r and crun else None)
b, n0 = med("rsup-run-true-bridge"), med("rsup-run-true")
goal("the same start on the default bridge: <= +10 ms over --network none",
     f"+{fmt(b - n0)} ms" if b and n0 else "-", (b - n0 <= 10) if b and n0 else None)
d = med("rsup-restart-die-to-start")
goal("die -> next start, --restart-delay 0: <= 10 ms", f"{fmt(d)} ms", (d <= 10) if d else None)
if counts:
    k = med(f"rsup-keepalive-pss-per-container-{counts[-1]}")
    goal("memory to keep one container supervised (shim + init PSS) <= 0.25x conmon",
         f"{fmt(k)} kB vs conmon {fmt(conmon_pss)} kB" if k else "-",
         (k <= 0.25 * conmon_pss) if k and conmon_pss else None)
fleet_suffix = "default" if fleet_net == "bridge" else "none"
spans = [(int(m.group(1)), int(m.group(2)), rows[i]["median"]) for i in rows
         for m in [re.fullmatch(rf"rsup-start-(\d+)-to-(\d+)-{fleet_suffix}", i)] if m]
if spans and max(e for _, e, _ in spans) >= 1000:
    total = sum(v for a, e, v in spans if e <= 1000)
    goal("1000 containers (--restart always, default network, 8 clients) started < 30 s",
         f"{total:.1f} s", total < 30)
sp = p95("rsup-metrics-scrape-1000") if "rsup-metrics-scrape-1000" in rows else None
goal("/metrics scrape at 1000 running containers: p95 < 50 ms", f"p95 {fmt(sp)} ms" if sp else "-",
     (sp < 50) if sp else None)
out.append("\n**Goals (issue 16)**\n")
out.append("| goal | this run | verdict |")
out.append("|---|---|---|")
for g in goals:
    out.append(f"| {g[0]} | {g[1]} | {g[2]} |")
print("\n".join(out))
EOF
