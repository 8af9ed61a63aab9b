#!/usr/bin/env bash
# rsup's cold-start benchmark beside crun's, in one run on this machine:
#
#   sudo scripts/bench.sh                  # RUNS=200 WARMUP=10
#   sudo RUNS=50 SKIP_PEERS=1 scripts/bench.sh
#
# 1. builds the workspace in release mode;
# 2. builds a busybox-static rootfs in /tmp/rsup-test-<pid>-bench (the prefix
#    scripts/test.sh sweeps; the pid keeps a live run from being swept);
# 3. starts the release rsupd on a socket and state dir there;
# 4. waits until the machine is idle (as the peer scripts do), then runs
#    rsup-bench: create+start+wait of /bin/true through the client library
#    (`rsup-run-true`) and `rsupctl run --rm` end to end (`rsup-cli-run-true`);
# 5. removes every container and stops rsupd (SIGTERM, SIGKILL after 10 s);
# 6. runs the peers' crun/runc measurement, ../shared/peers/01-oci-coldstart.sh
#    (its 00-setup.sh apt-installs crun, runc, hyperfine, podman, docker.io...
#    on first use), with the same RUNS and WARMUP;
# 7. prints rsup against crun/runc and writes $RESULTS/RESULTS.md (report.py).
#
# Environment:
#   RUNS, WARMUP      timed and untimed runs per measure (200, 10)
#   RESULTS           writable results dir (/tmp/rsup-bench-results); rsup's rows
#                     go to $RESULTS/01-rsup-coldstart.jsonl in stats.py format
#   PEERS             the peer harness (../shared/peers next to the repository)
#   SKIP_PEERS=1      measure rsup only (and compare with earlier peer results)
#   SKIP_BUILD=1      use the release binaries already in target/release
#   QUIET_WAIT_MAX, QUIET_BUSY_PCT   idle wait before measuring (1800 s, 10 %);
#                     shared with the peer scripts. QUIET_WAIT_MAX=0: no wait.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=${PEERS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/peers}
RESULTS=${RESULTS:-/tmp/rsup-bench-results}
RUNS=${RUNS:-200}
WARMUP=${WARMUP:-10}
export RUNS WARMUP RESULTS
BIN=$REPO/target/release
OUT_JSONL=$RESULTS/01-rsup-coldstart.jsonl

step() { printf '\n==> %s\n' "$*" >&2; }
die() { echo "scripts/bench.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root: rsupd creates namespaces, mounts and cgroups"
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "RUNS must be >= 1 and WARMUP >= 0"
if [[ ${SKIP_PEERS:-0} != 1 && ! -f $PEERS/01-oci-coldstart.sh ]]; then
    die "peer harness not found at $PEERS (set PEERS, or SKIP_PEERS=1)"
fi
mkdir -p "$RESULTS/raw"
[[ -w $RESULTS ]] || die "RESULTS=$RESULTS is not writable"

# ------------------------------------------------------------------ cleanup
WORK=/tmp/rsup-test-$$-bench
SOCK=$WORK/rsupd.sock
RSUPD_PID=

stop_rsupd() {
    [[ -n $RSUPD_PID ]] || return 0
    if kill -0 "$RSUPD_PID" 2>/dev/null; then
        # Containers outlive rsupd (they are re-adopted later): remove them first.
        local ids
        ids=$("$BIN/rsupctl" --socket "$SOCK" ps -a -q 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            "$BIN/rsupctl" --socket "$SOCK" rm -f $ids >/dev/null || echo "warning: rm -f failed" >&2
        fi
        kill -TERM "$RSUPD_PID"
        local i
        for i in $(seq 100); do
            kill -0 "$RSUPD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$RSUPD_PID" 2>/dev/null; then
            echo "warning: rsupd $RSUPD_PID ignored SIGTERM for 10 s; SIGKILL" >&2
            kill -KILL "$RSUPD_PID"
        fi
    fi
    wait "$RSUPD_PID" 2>/dev/null || true
    RSUPD_PID=
}

remove_work() {
    [[ -d $WORK ]] || return 0
    local m
    # deepest first; mountinfo escapes spaces, which our paths do not have
    for m in $(awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null || echo "warning: umount $m failed" >&2
    done
    if awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
        echo "warning: mounts remain under $WORK; leaving it for scripts/test.sh's sweep" >&2
    else
        rm -rf "$WORK"
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

# ------------------------------------------------------------------ 1. build
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    step "cargo build --release --workspace"
    (cd "$REPO" && cargo build --release --workspace)
fi
for b in rsupd rsupctl rsup-bench; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace"
done

# ------------------------------------------------------------------ 2. rootfs
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

# ------------------------------------------------------------------ 3. rsupd
step "starting $BIN/rsupd on $SOCK"
"$BIN/rsupd" --socket "$SOCK" --state-dir "$WORK/state" >"$WORK/rsupd.log" 2>&1 &
RSUPD_PID=$!
for _ in $(seq 200); do
    "$BIN/rsupctl" --socket "$SOCK" info >/dev/null 2>&1 && break
    kill -0 "$RSUPD_PID" 2>/dev/null || { tail -20 "$WORK/rsupd.log" >&2; die "rsupd exited"; }
    sleep 0.1
done
"$BIN/rsupctl" --socket "$SOCK" info >/dev/null || { tail -20 "$WORK/rsupd.log" >&2; die "rsupd not answering after 20 s"; }

# ------------------------------------------------------------------ 4. measure rsup
step "rsup-bench: RUNS=$RUNS WARMUP=$WARMUP"
wait_quiet
: >"$OUT_JSONL"
"$BIN/rsup-bench" --socket "$SOCK" --rootfs "$ROOTFS" --runs "$RUNS" --warmup "$WARMUP" \
    --rsupctl "$BIN/rsupctl" --json "$OUT_JSONL" --values "$RESULTS/raw" \
    --notes "release build; host ${BUSY}% busy before measuring; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ 5. stop rsupd
step "stopping rsupd"
stop_rsupd
remove_work

# ------------------------------------------------------------------ 6. peers
if [[ ${SKIP_PEERS:-0} != 1 ]]; then
    step "peers: $PEERS/01-oci-coldstart.sh (RESULTS=$RESULTS)"
    RESULTS=$RESULTS bash "$PEERS/01-oci-coldstart.sh"
fi

# ------------------------------------------------------------------ 7. report
step "report"
if [[ -f $PEERS/report.py ]]; then
    RESULTS=$RESULTS python3 "$PEERS/report.py" >/dev/null && echo "full table: $RESULTS/RESULTS.md" >&2
fi
python3 - "$RESULTS" <<'EOF'
"""rsup's rows beside the peers' (median and p95 from the per-run times)."""
import json
import math
import os
import statistics
import sys

res = sys.argv[1]
raw = os.path.join(res, "raw")


def p95(vals):
    v = sorted(vals)
    return v[max(1, math.ceil(0.95 * len(v))) - 1]


def times(row_id, hyperfine_name):
    """Per-run ms: rsup-bench's values file or the peers' hyperfine export."""
    txt = os.path.join(raw, f"{row_id}.txt")
    if os.path.exists(txt):
        return [float(x) for x in open(txt).read().split()]
    hf = os.path.join(raw, f"{hyperfine_name}.json")
    if hyperfine_name and os.path.exists(hf):
        return [t * 1e3 for t in json.load(open(hf))["results"][0]["times"]]
    return []


rows = [
    ("rsup-run-true", None, "rsup: create+start+wait via the client library"),
    ("rsup-cli-run-true", None, "rsup: rsupctl run --rm (whole process)"),
    ("crun-run-true", "01-crun", "crun run (default spec cgroups)"),
    ("crun-run-true-nocgroup", "01-crun-nocg", "crun --cgroup-manager=disabled run"),
    ("runc-run-true", "01-runc", "runc run (default spec cgroups)"),
    ("host-unshare-true", "01-unshare-true", "host: unshare 5 ns + fork /bin/true"),
    ("host-exec-true", "01-host-true", "host: fork+exec /bin/true"),
]
print(f"\n{'id':<24} {'n':>4} {'median':>9} {'p95':>9} {'min':>9} {'mean':>9}  ms   what")
medians = {}
for row_id, hf, what in rows:
    v = times(row_id, hf)
    if not v:
        print(f"{row_id:<24} {'-':>4} {'(not measured)':>29}         {what}")
        continue
    medians[row_id] = statistics.median(v)
    print(f"{row_id:<24} {len(v):>4} {statistics.median(v):>9.2f} {p95(v):>9.2f} "
          f"{min(v):>9.2f} {statistics.fmean(v):>9.2f}       {what}")
if "rsup-run-true" in medians and "crun-run-true" in medians:
    print(f"\nrsup-run-true / crun-run-true (medians): "
          f"{medians['rsup-run-true'] / medians['crun-run-true']:.2f}x")
EOF
