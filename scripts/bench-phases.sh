#!/usr/bin/env bash
# Where the time of one `rsupctl run --rm --network none --rootfs R true` goes, phase by phase,
# from the kernel's own process events (perf's sched_process_fork/exec/exit tracepoints: no
# strace, next to no overhead), for one or more builds measured alternately in the same run.
#
#   sudo scripts/bench-phases.sh [RUNS] [BIN_DIR...]     # default: 60 runs, target/release
#   sudo scripts/bench-phases.sh 60 /tmp/rsup-base/target/release target/release
#   sudo PAUSE=0.05 scripts/bench-phases.sh ...   # a pause between runs (see below)
#   sudo RESTART=1 SECS=3 scripts/bench-phases.sh 0 [BIN_DIR...]   # a restart loop instead
#
# Moving a process into a cgroup (a cgroup.procs write) waits for an RCU grace period when no
# other move happened in the last one (the kernel's cgroup_threadgroup_rwsem, unless a
# cgroup2 mount has `favordynmods`): 10-17 ms on this machine. Back-to-back runs faster than
# a grace period skip that wait, slower ones pay it, so a small difference between builds can
# flip which regime a run is in; PAUSE puts every run in the paying regime.
#
# Phases (medians over RUNS, ms):
#   client+create+start  rsupctl's exec -> rsupd forks the shim (client start, Create, Start
#                        up to the spawn: validation, state files, cgroups, rollback guard)
#   shim exec            fork -> the shim's execve (of rsup-shim; of /proc/self/exe before
#                        2026-12-06 or when rsup-shim is missing)
#   shim -> init fork    the shim's start until it forks the container's init
#   init setup + go      the init's namespaces, mounts, /dev, pivot_root, masks, `ready`,
#                        rsupd's cgroup placement and `go`, until the init forks the command
#   command start        the command's fork -> its execve (user, caps, seccomp; the init's
#                        confinement and the release pipe since issue 13)
#   exit + removal       the command's execve -> rsupctl exits (exit record, wait, rm)
#   total                rsupctl's exec -> rsupctl's exit
#
# Each build gets its own rsupd under /tmp/rsup-test-<pid>-phases, its own link prefix (bp0,
# bp1, ...) and cgroup subtree; everything is removed at the end (and scripts/test.sh sweeps
# what an interrupted run left, by those prefixes). Needs perf
# (apt-get install linux-perf) and busybox-static.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${1:-60}
shift || true
BINS=("$@")
[[ ${#BINS[@]} -gt 0 ]] || BINS=("$REPO/target/release")
command -v perf >/dev/null || { echo "perf missing (apt-get install linux-perf)" >&2; exit 1; }
WORK=/tmp/rsup-test-$$-phases
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
    for i in "${!BINS[@]}"; do
        find /sys/fs/cgroup -depth -type d -path "*/phases$$n$i*" -exec rmdir {} \; 2>/dev/null || true
        # rsupd keeps its default bridge when it stops: remove this run's links.
        for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^bp$i[bv]" || true); do
            ip link del "$l" 2>/dev/null || true
        done
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/rootfs"/{bin,proc,dev,sys,tmp,etc,root}
chmod 1777 "$WORK/rootfs/tmp"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
    [[ $a == busybox || $a == */* ]] || ln -s busybox "$WORK/rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$WORK/rootfs/etc/passwd"
echo 'root:x:0:' >"$WORK/rootfs/etc/group"

for i in "${!BINS[@]}"; do
    b=$(cd "${BINS[$i]}" && pwd)
    BINS[$i]=$b
    d=$WORK/d$i
    mkdir -p "$d"
    "$b/rsupd" --socket "$d/s.sock" --state-dir "$d/state" --metrics-addr "" \
        --net-prefix "bp$i" --default-subnet "10.9$((4 + i)).0.0/16" \
        --cgroup-subtree "phases$$n$i" >"$d/rsupd.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do "$b/rsupctl" --socket "$d/s.sock" info >/dev/null 2>&1 && break; sleep 0.1; done
    for _ in 1 2 3 4 5; do
        "$b/rsupctl" --socket "$d/s.sock" run --rm --network none --rootfs "$WORK/rootfs" true
    done
done

if [[ ${RESTART:-0} == 1 ]]; then
    # A restart, phase by phase: a container that exits at once under
    # `--restart always --restart-delay 0`, traced for SECS seconds per build.
    for i in "${!BINS[@]}"; do
        b=${BINS[$i]}
        "$b/rsupctl" --socket "$WORK/d$i/s.sock" run -d --name loop --network none --restart always \
            --restart-delay 0 --rootfs "$WORK/rootfs" true >/dev/null
        perf record -q -a -e sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit \
            -o "$WORK/r$i.data" -- sleep "${SECS:-3}" >/dev/null 2>&1
        "$b/rsupctl" --socket "$WORK/d$i/s.sock" rm -f loop >/dev/null
        echo "== ${BINS[$i]} ($(git -C "${BINS[$i]}" rev-parse --short HEAD 2>/dev/null || echo ?)), restarts"
        perf script -i "$WORK/r$i.data" -F comm,pid,time,event,trace 2>/dev/null | python3 -c '
import statistics, sys
# One cycle: the command (true) exits -> the init and the shim exit -> rsupd forks the
# next shim -> it execs -> forks the init -> the init forks the command -> execve(true).
cycles, cur = [], {}
for line in sys.stdin:
    x = line.split()
    if len(x) < 4:
        continue
    comm, ev, text = x[0], x[3], " ".join(x)
    t = float(x[2].rstrip(":")) * 1000
    exit_, fork, exe = (ev.startswith("sched:sched_process_" + k) for k in ("exit", "fork", "exec"))
    if exit_ and comm == "true":
        cur = {"cmdexit": t}
    elif exit_ and comm in ("exe", "rsup-shim") and "cmdexit" in cur and "shimexit" not in cur:
        cur["shimexit"] = t
    elif fork and "child_comm=tokio-rt-worker" in text and "shimexit" in cur and "shimfork" not in cur:
        cur["forks"] = cur.get("forks", {}) | {text.split("child_pid=")[1].split()[0]: t}
    elif exe and ("filename=/proc/self/exe" in text or "filename=/proc/self/fd/" in text) and "shimexit" in cur and "shimexec" not in cur:
        cur["shimexec"] = t
        pid = text.split(" pid=")[1].split()[0]
        cur["shimfork"] = cur.get("forks", {}).get(pid, t)
    elif fork and comm in ("exe", "rsup-shim") and "shimexec" in cur and "initfork" not in cur:
        cur["initfork"] = t
    elif fork and comm == "rsup-init" and "initfork" in cur and "cmdfork" not in cur:
        cur["cmdfork"] = t
    elif exe and "filename=/bin/true" in text and "cmdfork" in cur:
        cur["exec"] = t
        cycles.append(cur)
        cur = {}
phases = [
    ("command exit -> shim exit", "cmdexit", "shimexit"),
    ("shim exit -> next shim fork", "shimexit", "shimfork"),
    ("shim fork -> exec", "shimfork", "shimexec"),
    ("shim -> init fork", "shimexec", "initfork"),
    ("init setup + go", "initfork", "cmdfork"),
    ("command start", "cmdfork", "exec"),
    ("total: exit -> next exec", "cmdexit", "exec"),
]
for name, a, b in phases:
    v = sorted(c[b] - c[a] for c in cycles if a in c and b in c)
    if v:
        print(f"  {name:<28} {statistics.median(v):7.2f}  (p95 {v[min(len(v) - 1, int(len(v) * 0.95))]:6.2f}, n {len(v)})")
'
    done
    exit 0
fi

# Alternate the builds in rounds of 10, so that a busy moment hurts them alike.
for i in "${!BINS[@]}"; do : >"$WORK/events$i.txt"; done
for ((r = 0; r < RUNS; r += 10)); do
    for i in "${!BINS[@]}"; do
        b=${BINS[$i]}
        perf record -q -a -e sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit \
            -o "$WORK/p$i.data" -- bash -c "for _ in \$(seq 10); do '$b/rsupctl' --socket '$WORK/d$i/s.sock' run --rm --network none --rootfs '$WORK/rootfs' true; sleep ${PAUSE:-0}; done" \
            >/dev/null 2>&1
        perf script -i "$WORK/p$i.data" -F comm,pid,time,event,trace 2>/dev/null >>"$WORK/events$i.txt"
    done
done

for i in "${!BINS[@]}"; do
    echo "== ${BINS[$i]} ($(git -C "${BINS[$i]}" rev-parse --short HEAD 2>/dev/null || echo ?))"
    python3 - "$WORK/events$i.txt" <<'EOF'
import statistics, sys
runs, cur = [], None
for line in open(sys.argv[1]):
    x = line.split()
    if len(x) < 4:
        continue
    comm, ev, text = x[0], x[3], " ".join(x)
    t = float(x[2].rstrip(":")) * 1000
    if ev.startswith("sched:sched_process_exec") and "/rsupctl " in text:
        cur = {"ctl": t}
        runs.append(cur)
        continue
    if cur is None:
        continue
    fork, exe = ev.startswith("sched:sched_process_fork"), ev.startswith("sched:sched_process_exec")
    if fork and "child_comm=tokio-rt-worker" in text:
        # a thread or the shim: the shim is the child that execs rsup-shim (or rsupd's binary)
        child = text.split("child_pid=")[1].split()[0]
        cur.setdefault("forks", {})[child] = t
    elif exe and ("filename=/proc/self/exe" in text or "filename=/proc/self/fd/" in text) and "shimexec" not in cur:
        cur["shimexec"] = t
        pid = text.split(" pid=")[1].split()[0]
        if pid in cur.get("forks", {}):
            cur["shim"] = cur["forks"][pid]
    elif fork and comm in ("exe", "rsup-shim") and "initfork" not in cur:
        cur["initfork"] = t
    elif fork and comm == "rsup-init" and "cmdfork" not in cur:
        cur["cmdfork"] = t
    elif exe and "filename=/bin/true" in text:
        cur["exec"] = t
    elif ev.startswith("sched:sched_process_exit") and comm == "rsupctl":
        cur["end"] = t
phases = [
    ("client+create+start", "ctl", "shim"),
    ("shim exec", "shim", "shimexec"),
    ("shim -> init fork", "shimexec", "initfork"),
    ("init setup + go", "initfork", "cmdfork"),
    ("command start", "cmdfork", "exec"),
    ("exit + removal", "exec", "end"),
    ("total", "ctl", "end"),
]
for name, a, b in phases:
    v = [r[b] - r[a] for r in runs if a in r and b in r]
    if v:
        v.sort()
        p95 = v[min(len(v) - 1, int(len(v) * 0.95))]
        print(f"  {name:<22} {statistics.median(v):7.2f}  (p95 {p95:6.2f}, n {len(v)})")
EOF
done
