#!/usr/bin/env bash
# rsup's benchmarks beside the peers' (crun, podman), in one run on this machine.
# What each figure means: docs/benchmarks.md.
#
#   sudo scripts/bench.sh                        # everything: ~10-15 min on 2 idle cores, <= ~30 min
#   sudo scripts/bench.sh net restart            # only these parts (and their peers)
#   sudo SKIP_PEERS=1 RUNS=50 scripts/bench.sh coldstart
#
# Parts (all by default, in this order; SKIP_<PART>=1 drops one):
#   coldstart  create+start+wait of /bin/true (rsup-bench)          peers 01-oci-coldstart.sh
#   restart    restart latency over RESTART_CRASHES SIGKILLs, and the
#              restart schedule of a container that exits 1         peers 03-restart-backoff.sh
#   net        DNS latency, DNS and TCP reachability of `db` by name
#              across crashes (rsup-bench-suite net)                peers 04-dns-restart.sh
#   resources  /metrics scrape, Stats RPC, rsupctl ps/stats, memory
#              with FLEET_COUNTS running containers                 peers 05-podman-density.sh
#   adopt      SIGKILL rsupd with them running; time until a new one
#              is SERVING and lists all running (re-adoption)       (05: conmon memory)
#   (resources and adopt share one fleet of containers: rsup-bench-suite fleet)
#   images     import of a ~100 MB image, create and run --rm from it
#              (scripts/bench-images.sh, podman load/create/run beside it)
#
# Every rsup part starts its own release rsupd under /tmp/rsup-test-<pid>-bench (the prefix
# scripts/test.sh sweeps; the pid keeps a live run from being swept), with its own link prefix
# (bx), default subnet (10.91.0.0/16), user network (10.90.77.0/24), cgroup subtree (bxbench)
# and a free loopback metrics port, so it never touches another rsupd's links, addresses or
# cgroups. Everything it starts is removed at the end, also after an error or Ctrl-C.
# The peer scripts wait until the machine is idle (QUIET_*), and so does this script.
#
# Environment:
#   RESULTS            writable results dir (/tmp/rsup-bench-results); rsup's rows go to
#                      $RESULTS/NN-rsup-*.jsonl (stats.py format), per-run values to $RESULTS/raw
#   PEERS              the peer harness (../shared/peers next to the repository)
#   SKIP_PEERS=1       measure rsup only; SKIP_BUILD=1: use target/release as it is
#   RUNS, WARMUP       coldstart runs (200, 10); RUNS is also 01's and 04's hyperfine run count
#   RESTART_CRASHES    crashes of the restart loop (100); RESTART_SECS schedule window (20 s,
#                      also 03's window)
#   NET_CRASH_CYCLES   DNS crash cycles (20); NET_RECONNECT_CYCLES reconnect cycles (20);
#                      DNS_QUERIES raw queries (2000); PEER_CYCLES / PEER_KILL_CYCLES: 04's
#                      CYCLES / KILL_CYCLES (10 / 2; each podman-kill cycle may take 75 s)
#   FLEET_COUNTS       running containers to measure at (100,250,500,1000: the cost curve,
#                      drawn into $RESULTS/cost-curve.png); FLEET_NET default|none
#                      (default); FLEET_CONCURRENCY (8); SCRAPES (50); ADOPT_RUNS (3);
#                      PEER_N: 05's container count (50)
#   PEER_DOCKER=1      also run 03's docker half (dockerd is started for it)
#   QUIET_WAIT_MAX, QUIET_BUSY_PCT   idle wait before each part (1800 s, 10 %), shared with the
#                      peer scripts; QUIET_WAIT_MAX=0: no wait
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=${PEERS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/peers}
RESULTS=${RESULTS:-/tmp/rsup-bench-results}
RUNS=${RUNS:-200}
WARMUP=${WARMUP:-10}
export RUNS WARMUP RESULTS
BIN=$REPO/target/release
NET_PREFIX=bx
DEFAULT_SUBNET=10.91.0.0/16
CG_SUBTREE=bxbench

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "scripts/bench.sh: $*" >&2; exit 1; }

ALL_PARTS=(coldstart restart net resources adopt images)
declare -A WANT=()
if (($# == 0)); then
    for p in "${ALL_PARTS[@]}"; do WANT[$p]=1; done
else
    for p in "$@"; do
        [[ " ${ALL_PARTS[*]} " == *" $p "* ]] || die "unknown part '$p' (parts: ${ALL_PARTS[*]})"
        WANT[$p]=1
    done
fi
for p in "${ALL_PARTS[@]}"; do
    v=SKIP_${p^^}
    if [[ ${!v:-0} == 1 ]]; then unset "WANT[$p]"; fi
done
want() { [[ -n ${WANT[$1]:-} ]]; }

[[ $(id -u) -eq 0 ]] || die "run as root: rsupd creates namespaces, mounts and cgroups"
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "RUNS must be >= 1 and WARMUP >= 0"
if [[ ${SKIP_PEERS:-0} != 1 && ! -f $PEERS/lib.sh ]]; then
    die "peer harness not found at $PEERS (set PEERS, or SKIP_PEERS=1)"
fi
if want net && [[ ! -f $PEERS/dns_probe.py ]]; then
    die "the net part needs the peers' dns_probe.py (PEERS=$PEERS)"
fi
mkdir -p "$RESULTS/raw"
[[ -w $RESULTS ]] || die "RESULTS=$RESULTS is not writable"
# a real interpreter, not a pyenv shim: the DNS probes run under nsenter (as in the peers' 04)
PYBIN=$(python3 -c 'import sys; print(sys.executable)')

# ------------------------------------------------------------------ cleanup
WORK=/tmp/rsup-test-$$-bench
RSUPD_PID=        # the coldstart part's rsupd (the suite's daemons are the suite's children)

# True when an argument of process $1 is $2 or a path under it.
mentions() {
    local args
    args=$'\n'"$(tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" || true)"$'\n'
    [[ $args == *"$2/"* || $args == *"$2"$'\n'* ]]
}

# Stop the rsupd of daemon dir $1 (its pid file, checked against its command line) after
# removing its containers; then kill whatever shim or init its state dir still records (only
# after an interrupted run: containers outlive rsupd).
stop_daemon_dir() {
    local dir=$1 pid ids i state p
    [[ -d $dir ]] || return 0
    if [[ -f $dir/rsupd.pid ]]; then
        pid=$(cat "$dir/rsupd.pid")
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && mentions "$pid" "$dir"; then
            ids=$("$BIN/rsupctl" --socket "$dir/rsupd.sock" ps -a -q 2>/dev/null || true)
            if [[ -n $ids ]]; then
                # shellcheck disable=SC2086
                "$BIN/rsupctl" --socket "$dir/rsupd.sock" rm -f $ids >/dev/null 2>&1 ||
                    echo "warning: rm -f in $dir failed" >&2
            fi
            kill -TERM "$pid"
            for i in $(seq 150); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "warning: rsupd $pid ignored SIGTERM for 15 s; SIGKILL" >&2
                kill -KILL "$pid"
            fi
        fi
        rm -f "$dir/rsupd.pid"
    fi
    while IFS= read -r -d '' state; do
        for p in $(grep -o '"\(init\|shim\)_pid"[[:space:]]*:[[:space:]]*[0-9]*' "$state" | grep -o '[0-9]*$'); do
            if ((p > 1)) && mentions "$p" "$dir"; then
                echo "killing leftover container process $p of $dir" >&2
                kill -KILL "$p" 2>/dev/null || true
            fi
        done
    done < <(find "$dir" -xdev -name state.json -print0 2>/dev/null || true)
}

stop_rsupd() {
    [[ -n $RSUPD_PID ]] || return 0
    stop_daemon_dir "$WORK/coldstart"
    wait "$RSUPD_PID" 2>/dev/null || true
    RSUPD_PID=
}

remove_work() {
    [[ -d $WORK ]] || return 0
    local d m l
    for d in "$WORK"/*/; do stop_daemon_dir "${d%/}"; done
    # deepest first; mountinfo escapes spaces, which our paths do not have
    for m in $(awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null || echo "warning: umount $m failed" >&2
    done
    # links of the bench daemons (bridges bxb..., veths bxv...), by name
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^${NET_PREFIX}[bv]" || true); do
        ip link del "$l" 2>/dev/null || true
    done
    # the bench daemons' (now empty) cgroups; rmdir refuses a cgroup that still has tasks
    find /sys/fs/cgroup -maxdepth 5 -type d -name "$CG_SUBTREE" -prune -print0 2>/dev/null |
        while IFS= read -r -d '' d; do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
    if awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
        echo "warning: mounts remain under $WORK; leaving it for scripts/test.sh's sweep" >&2
    else
        rm -rf --one-file-system "$WORK"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_rsupd
    remove_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ idle wait
# Same method and thresholds as the peers' lib.sh wait_quiet: % of CPU time busy over 3 s.
cpu_busy_pct() {
    local a b
    read -r -a a < <(head -1 /proc/stat); sleep 3; read -r -a b < <(head -1 /proc/stat)
    awk -v u=$((b[1] - a[1] + b[2] - a[2] + b[3] - a[3] + b[6] - a[6] + b[7] - a[7] + b[8] - a[8])) \
        -v i=$((b[4] - a[4] + b[5] - a[5])) 'BEGIN {printf "%.0f", (u + i) ? 100 * u / (u + i) : 0}'
}
wait_quiet() {
    local max=${QUIET_WAIT_MAX:-1800} thr=${QUIET_BUSY_PCT:-10} start=$SECONDS
    while :; do
        BUSY=$(cpu_busy_pct)
        ((BUSY < thr)) && break
        if ((SECONDS - start >= max)); then
            echo "WARNING: machine still ${BUSY}% busy after ${max}s; measuring anyway" >&2
            break
        fi
        echo "machine ${BUSY}% busy ($(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | awk '{printf "%s(%s%%) ", $2, $1}')); waiting" >&2
        sleep 20
    done
}
conditions() {
    echo "release build; host ${BUSY}% busy before measuring; loadavg $(cut -d' ' -f1-3 /proc/loadavg); a spaced cgroup move: $CGROUP_MOVE"
}

# Whether a cgroup move waits for an RCU grace period on this host (the largest part of a
# spaced start on v1; see scripts/cgroup-favordynmods.py), measured once: a sleeping process
# moved into a scratch cgroup after 0.3 s without moves, three times, the median in ms. The
# kernel's favordynmods (or, on Linux 6.17+, its per-thread-group lock, which stays on until
# boot once it was on) makes it a fraction of a millisecond.
cgroup_move_ms() {
    python3 - "$$" <<'PY' 2>/dev/null || echo "unknown"
import os, statistics, subprocess, sys, time
v2 = any(l.split(" - ")[1].startswith("cgroup2 ") and l.split()[4] == "/sys/fs/cgroup"
         for l in open("/proc/self/mountinfo"))
base = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/pids"
scratch = f"{base}/rsup-bench-move-{sys.argv[1]}"
os.mkdir(scratch)
p = subprocess.Popen(["sleep", "30"])
try:
    home = next(l.split(":", 2)[2].strip() for l in open(f"/proc/{p.pid}/cgroup")
                if (l.split(":")[1] == "" if v2 else "pids" in l.split(":")[1].split(",")))
    times = []
    for _ in range(3):
        time.sleep(0.3)
        t = time.perf_counter()
        open(f"{scratch}/cgroup.procs", "w").write(str(p.pid))
        times.append((time.perf_counter() - t) * 1000)
        open(f"{base}{home}/cgroup.procs", "w").write(str(p.pid))
    print(f"{statistics.median(times):.2f} ms")
finally:
    p.kill()
    p.wait()
    os.rmdir(scratch)
PY
}
CGROUP_MOVE=$(cgroup_move_ms)

# Run peer script $1 with extra environment ($2...), unless SKIP_PEERS=1.
peer() {
    if [[ ${SKIP_PEERS:-0} == 1 ]]; then return 0; fi
    local script=$1
    shift
    step "peers: $script ($*)"
    env "$@" RESULTS="$RESULTS" bash "$PEERS/$script" || echo "warning: $script failed" >&2
}

SUITE_COMMON=()
suite() {
    "$BIN/rsup-bench-suite" "$@" "${SUITE_COMMON[@]}" --notes "$(conditions)"
}

# ------------------------------------------------------------------ build
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    step "cargo build --release --workspace"
    (cd "$REPO" && cargo build --release --workspace)
fi
for b in rsupd rsupctl rsup-bench rsup-bench-suite; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace"
done

# ------------------------------------------------------------------ rootfs
step "busybox rootfs in $WORK/rootfs"
BUSYBOX=${RSUP_BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing: apt-get install busybox-static"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,proc,dev,sys,tmp,etc,root}
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for a in $("$BUSYBOX" --list); do
    # the list names busybox itself: a link would replace the binary
    [[ $a == busybox || $a == */* ]] || ln -s busybox "$ROOTFS/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
echo 'root:x:0:' >"$ROOTFS/etc/group"
SUITE_COMMON=(--bin-dir "$BIN" --work "$WORK" --rootfs "$ROOTFS" --net-prefix "$NET_PREFIX"
    --default-subnet "$DEFAULT_SUBNET" --cgroup-subtree "$CG_SUBTREE" --values "$RESULTS/raw")

# ------------------------------------------------------------------ coldstart
if want coldstart; then
    step "coldstart: rsup-bench, RUNS=$RUNS WARMUP=$WARMUP"
    D=$WORK/coldstart
    mkdir -p "$D"
    "$BIN/rsupd" --socket "$D/rsupd.sock" --state-dir "$D/state" --metrics-addr "" \
        --net-prefix "$NET_PREFIX" --default-subnet "$DEFAULT_SUBNET" \
        --cgroup-subtree "$CG_SUBTREE" >"$D/rsupd.log" 2>&1 &
    RSUPD_PID=$!
    echo "$RSUPD_PID" >"$D/rsupd.pid"
    for _ in $(seq 200); do
        "$BIN/rsupctl" --socket "$D/rsupd.sock" info >/dev/null 2>&1 && break
        kill -0 "$RSUPD_PID" 2>/dev/null || { tail -20 "$D/rsupd.log" >&2; die "rsupd exited"; }
        sleep 0.1
    done
    "$BIN/rsupctl" --socket "$D/rsupd.sock" info >/dev/null || { tail -20 "$D/rsupd.log" >&2; die "rsupd not answering after 20 s"; }
    wait_quiet
    OUT=$RESULTS/01-rsup-coldstart.jsonl
    : >"$OUT"
    "$BIN/rsup-bench" --socket "$D/rsupd.sock" --rootfs "$ROOTFS" --runs "$RUNS" --warmup "$WARMUP" \
        --rsupctl "$BIN/rsupctl" --json "$OUT" --values "$RESULTS/raw" --notes "$(conditions)"
    stop_rsupd
    peer 01-oci-coldstart.sh
fi

# ------------------------------------------------------------------ restart
if want restart; then
    step "restart: rsup-bench-suite restart (${RESTART_CRASHES:-100} crashes, ${RESTART_SECS:-20} s schedules)"
    wait_quiet
    OUT=$RESULTS/03-rsup-restart.jsonl
    : >"$OUT"
    suite restart --crashes "${RESTART_CRASHES:-100}" --window-secs "${RESTART_SECS:-20}" --json "$OUT"
    if [[ ${PEER_DOCKER:-0} == 1 ]]; then
        peer 03-restart-backoff.sh RESTART_SECS="${RESTART_SECS:-20}"
    else
        peer 03-restart-backoff.sh RESTART_SECS="${RESTART_SECS:-20}" SKIP_DOCKER=1
    fi
fi

# ------------------------------------------------------------------ net
if want net; then
    step "net: rsup-bench-suite net"
    wait_quiet
    OUT=$RESULTS/04-rsup-dns.jsonl
    : >"$OUT"
    suite net --peers "$PEERS" --python "$PYBIN" --dns-queries "${DNS_QUERIES:-2000}" \
        --nslookup-runs "$RUNS" --crash-cycles "${NET_CRASH_CYCLES:-20}" \
        --reconnect-cycles "${NET_RECONNECT_CYCLES:-20}" --json "$OUT"
    peer 04-dns-restart.sh CYCLES="${PEER_CYCLES:-10}" KILL_CYCLES="${PEER_KILL_CYCLES:-2}"
fi

# ------------------------------------------------------------------ resources + adopt
if want resources || want adopt; then
    FLEET=(--counts "${FLEET_COUNTS:-100,250,500,1000}" --network "${FLEET_NET:-default}"
        --concurrency "${FLEET_CONCURRENCY:-8}" --scrapes "${SCRAPES:-50}" --stats-calls "${SCRAPES:-50}"
        --adopt-runs "${ADOPT_RUNS:-3}")
    want resources || FLEET+=(--skip-resources)
    want adopt || FLEET+=(--skip-adopt)
    step "fleet: rsup-bench-suite fleet ${FLEET[*]}"
    wait_quiet
    OUT=$RESULTS/05-rsup-fleet.jsonl
    : >"$OUT"
    suite fleet "${FLEET[@]}" --json "$OUT"
    peer 05-podman-density.sh N="${PEER_N:-50}"
    if want resources; then
        # The cost curve (docs/cost-curve.png is one such run), podman beside it if measured.
        # Like the peer harness (00-setup.sh), this installs the one package it needs.
        /usr/bin/python3 -c 'import matplotlib' 2>/dev/null ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-matplotlib >/dev/null ||
            echo "warning: python3-matplotlib missing: no cost curve" >&2
        /usr/bin/python3 "$REPO/scripts/plot-cost-curve.py" "$RESULTS" "$RESULTS/cost-curve.png" ||
            echo "warning: the cost curve failed" >&2
    fi
fi

# ------------------------------------------------------------------ images
if want images; then
    step "images: scripts/bench-images.sh"
    wait_quiet
    SKIP_BUILD=1 RESULTS=$RESULTS PEERS=$PEERS bash "$REPO/scripts/bench-images.sh" ||
        echo "warning: the images part failed" >&2
fi

remove_work

# ------------------------------------------------------------------ report
step "report"
if [[ -f $PEERS/report.py ]]; then
    RESULTS=$RESULTS python3 "$PEERS/report.py" >/dev/null && echo "full table: $RESULTS/RESULTS.md" >&2
fi
bash "$REPO/scripts/bench-compare.sh" "$RESULTS"
