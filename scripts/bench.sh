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
#   pull       cold pull of a ~100 MB two-layer image from a docker-registry on
#              loopback, rsupctl pull and podman pull alternating (podman in a store
#              of its own under the bench dir, never the machine's)
#   docker-run `docker run --rm IMG true` (the docker CLI against a release rsupd's Docker
#              socket, rsupd --docker-socket) beside `podman run --rm IMG true`, alternating;
#              the same busybox image (tests/python/busybox_image.py) in both, loaded from
#              one `docker save` tarball; podman in a config and store of its own
#              (SKIP_DOCKER_RUN=1 drops it)
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
#   SKIP_PEERS=1       measure rsup only; SKIP_BUILD=1: use target/release (in CARGO_TARGET_DIR
#                      if set) as it is
#   RUNS, WARMUP       coldstart runs (200, 10); RUNS is also 01's and 04's hyperfine run count
#   PULL_RUNS          timed pulls of each tool (RUNS if given, else 5; a pull takes 1-4 s);
#                      PULL_MB: MiB of random data in the image's second layer (100)
#   DOCKER_RUN_RUNS    timed runs of each tool in docker-run (RUNS if given, else 50);
#                      DOCKER_RUN_NET: default (each tool's default network: rsupd's `default`,
#                      podman's netavark `podman` bridge) or none (--network none on both);
#                      DOCKER_CLI: the docker CLI (the one on PATH); PODMAN_RUNTIME (crun, or
#                      runc where cgroup2 holds controllers beside v1, which crun refuses)
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
PULL_RUNS=${PULL_RUNS:-${RUNS:-5}}
PULL_MB=${PULL_MB:-100}
DOCKER_RUN_RUNS=${DOCKER_RUN_RUNS:-${RUNS:-50}}
DOCKER_RUN_NET=${DOCKER_RUN_NET:-default}
RUNS=${RUNS:-200}
WARMUP=${WARMUP:-10}
export RUNS WARMUP RESULTS
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
NET_PREFIX=bx
DEFAULT_SUBNET=10.91.0.0/16
CG_SUBTREE=bxbench

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "scripts/bench.sh: $*" >&2; exit 1; }

ALL_PARTS=(coldstart restart net resources adopt images pull docker-run)
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
    v=${v//-/_}  # SKIP_DOCKER_RUN
    if [[ ${!v:-0} == 1 ]]; then unset "WANT[$p]"; fi
done
want() { [[ -n ${WANT[$1]:-} ]]; }

[[ $(id -u) -eq 0 ]] || die "run as root: rsupd creates namespaces, mounts and cgroups"
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "RUNS must be >= 1 and WARMUP >= 0"
[[ $PULL_RUNS =~ ^[1-9][0-9]*$ && $PULL_MB =~ ^[1-9][0-9]*$ ]] || die "PULL_RUNS and PULL_MB must be >= 1"
[[ $DOCKER_RUN_RUNS =~ ^[1-9][0-9]*$ ]] || die "DOCKER_RUN_RUNS must be >= 1"
[[ $DOCKER_RUN_NET == default || $DOCKER_RUN_NET == none ]] || die "DOCKER_RUN_NET must be default or none"
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
RSUPD_PID=        # the coldstart, pull or docker-run part's rsupd (the suite's daemons are the suite's children)
RSUPD_DIR=        # and its dir under $WORK
REGISTRY_PID=     # the pull part's docker-registry
PODMAN_ENV=()     # the pull and docker-run parts' podman: its own config and store (podman_own_config)
PODMAN_ARGS=()
VARLIB=           # their /var/lib/containers for skopeo and podman (see own_varlib)
PODMAN_NET_TIDY=  # docker-run's podman used its default bridge: tidy netavark's leftovers at exit
VARLIB_MADE=      # /var/lib/containers was made by this script (as a mount point; removed at exit)
FOREIGN_PID=      # a foreign_cpu sampler

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
    local dir=$1 pid ids state p
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
            for _ in $(seq 150); do
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
        while read -r p; do
            if ((p > 1)) && mentions "$p" "$dir"; then
                echo "killing leftover container process $p of $dir" >&2
                kill -KILL "$p" 2>/dev/null || true
            fi
        done < <(grep -o '"\(init\|shim\)_pid"[[:space:]]*:[[:space:]]*[0-9]*' "$state" | grep -o '[0-9]*$')
    done < <(find "$dir" -xdev -name state.json -print0 2>/dev/null || true)
}

# Start a release rsupd in $1 (socket, state dir and log there; its pid in $1/rsupd.pid for
# stop_daemon_dir), with more flags $2..., and wait until it answers.
start_rsupd() {
    local d=$1
    shift
    mkdir -p "$d"
    "$BIN/rsupd" --socket "$d/rsupd.sock" --state-dir "$d/state" --metrics-addr "" \
        --net-prefix "$NET_PREFIX" --default-subnet "$DEFAULT_SUBNET" \
        --cgroup-subtree "$CG_SUBTREE" "$@" >"$d/rsupd.log" 2>&1 &
    RSUPD_PID=$!
    RSUPD_DIR=$d
    echo "$RSUPD_PID" >"$d/rsupd.pid"
    for _ in $(seq 200); do
        "$BIN/rsupctl" --socket "$d/rsupd.sock" info >/dev/null 2>&1 && break
        kill -0 "$RSUPD_PID" 2>/dev/null || { tail -20 "$d/rsupd.log" >&2; die "rsupd exited"; }
        sleep 0.1
    done
    "$BIN/rsupctl" --socket "$d/rsupd.sock" info >/dev/null || { tail -20 "$d/rsupd.log" >&2; die "rsupd not answering after 20 s"; }
}

stop_rsupd() {
    [[ -n $RSUPD_PID ]] || return 0
    stop_daemon_dir "$RSUPD_DIR"
    wait "$RSUPD_PID" 2>/dev/null || true
    RSUPD_PID=
}

# The pull part's registry (by its pid, which this script started) and podman's images.
stop_registry() {
    [[ -n $REGISTRY_PID ]] || return 0
    if kill -0 "$REGISTRY_PID" 2>/dev/null; then
        kill -TERM "$REGISTRY_PID"
        for _ in $(seq 50); do
            kill -0 "$REGISTRY_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$REGISTRY_PID" 2>/dev/null; then kill -KILL "$REGISTRY_PID"; fi
    fi
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=
}
# skopeo 1.9 and podman 4.3 keep a blob-info cache in /var/lib/containers/cache whatever
# --root says, so they run in a mount namespace of their own where /var/lib/containers is
# $VARLIB (podman's overlay driver's bind mount of its store stays in that namespace too).
own_varlib() {
    # shellcheck disable=SC2016
    unshare -m --propagation private sh -c 'mount --bind "$0" /var/lib/containers && exec "$@"' "$VARLIB" "$@"
}
pm() { own_varlib env "${PODMAN_ENV[@]}" podman "${PODMAN_ARGS[@]}" "$@"; }
# $1 (made if missing) becomes VARLIB, the /var/lib/containers of own_varlib; a
# /var/lib/containers made here as its mount point is removed at exit.
use_own_varlib() {
    VARLIB=$1
    mkdir -p "$VARLIB"
    if [[ ! -d /var/lib/containers ]]; then
        mkdir /var/lib/containers
        VARLIB_MADE=1
    fi
}
# podman on a config and store of its own under $1/podman (an isolated config as the peers'
# 00-setup.sh writes one: none of the machine's storage, caches, registries, networks, events or
# temporary files; its blobs staged in $1/tmp); sets PODMAN_ENV and PODMAN_ARGS for pm. The
# [containers] and runtime settings matter only where podman runs containers (docker-run): the
# peers' (cgroupfs, k8s-file logs, the ulimits this machine's bounding set allows).
podman_own_config() {
    local d=$1
    mkdir -p "$d"/podman/{root,runroot,tmp,networks} "$d/tmp"
    cat >"$d/podman/containers.conf" <<CONF
[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$d/podman/tmp"
runtime = "${PODMAN_RUNTIME:-crun}"

[network]
network_backend = "netavark"
network_config_dir = "$d/podman/networks"
CONF
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
        "$d/podman/root" "$d/podman/runroot" >"$d/podman/storage.conf"
    : >"$d/podman/registries.conf"
    # (TMPDIR: where podman stages the blobs it downloads)
    PODMAN_ENV=(CONTAINERS_CONF="$d/podman/containers.conf"
        CONTAINERS_STORAGE_CONF="$d/podman/storage.conf"
        CONTAINERS_REGISTRIES_CONF="$d/podman/registries.conf" TMPDIR="$d/tmp")
    PODMAN_ARGS=(--root "$d/podman/root" --runroot "$d/podman/runroot" --storage-driver overlay
        --tmpdir "$d/podman/tmp")
}
# podman's default network (docker-run with DOCKER_RUN_NET=default) is netavark's bridge, which
# turns on IPv4 forwarding and leaves its base iptables chains behind once the last container is
# gone: podman_net_guard notes what was there before, podman_net_tidy restores it (the peers'
# save_ip_forward and netavark_chains_guard/tidy).
PODMAN_NET_FORWARD=
PODMAN_NET_CHAINS_BEFORE=
podman_net_guard() {
    PODMAN_NET_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
    if iptables -S 2>/dev/null | grep -q NETAVARK || iptables -t nat -S 2>/dev/null | grep -q NETAVARK; then
        PODMAN_NET_CHAINS_BEFORE=1
    fi
    PODMAN_NET_TIDY=1
}
podman_net_tidy() {
    if [[ -z $PODMAN_NET_CHAINS_BEFORE ]]; then
        if iptables -t nat -S 2>/dev/null | grep -- '^-N NETAVARK-' | grep -vqE 'NETAVARK-HOSTPORT-(DNAT|MASQ|SETMARK)$'; then
            echo "warning: per-network netavark chains remain; leaving iptables alone" >&2
        else
            iptables -D FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD 2>/dev/null || true
            if iptables -F NETAVARK_FORWARD 2>/dev/null; then iptables -X NETAVARK_FORWARD 2>/dev/null || true; fi
            iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT 2>/dev/null || true
            iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT 2>/dev/null || true
            iptables -t nat -D POSTROUTING -j NETAVARK-HOSTPORT-MASQ 2>/dev/null || true
            local c
            for c in NETAVARK-HOSTPORT-DNAT NETAVARK-HOSTPORT-MASQ NETAVARK-HOSTPORT-SETMARK; do
                if iptables -t nat -F "$c" 2>/dev/null; then iptables -t nat -X "$c" 2>/dev/null || true; fi
            done
        fi
    fi
    if [[ -n $PODMAN_NET_FORWARD ]]; then
        echo "$PODMAN_NET_FORWARD" >/proc/sys/net/ipv4/ip_forward || true
    fi
}
stop_podman_store() {
    if ((${#PODMAN_ARGS[@]})); then
        pm rm -a -f >/dev/null 2>&1 || true
        pm rmi -a -f >/dev/null 2>&1 || echo "warning: podman rmi -a (${PODMAN_ARGS[1]}) failed" >&2
        PODMAN_ARGS=()
    fi
    # podman's (empty) parent cgroups, as the peers' podman_cgroup_tidy
    local d
    for d in /sys/fs/cgroup/*/libpod_parent; do
        if [[ -d $d ]]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    done
    if [[ -n $PODMAN_NET_TIDY ]]; then
        podman_net_tidy
        PODMAN_NET_TIDY=
    fi
    if [[ -n $VARLIB_MADE ]]; then
        rmdir /var/lib/containers 2>/dev/null || echo "warning: /var/lib/containers (made by this script) not empty" >&2
        VARLIB_MADE=
    fi
}

remove_work() {
    [[ -d $WORK ]] || return 0
    local d m l
    for d in "$WORK"/*/; do stop_daemon_dir "${d%/}"; done
    # deepest first; mountinfo escapes spaces, which our paths do not have
    while IFS= read -r m; do
        umount -l "$m" 2>/dev/null || echo "warning: umount $m failed" >&2
    done < <(awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
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
    if [[ -n $FOREIGN_PID ]]; then kill -TERM "$FOREIGN_PID" 2>/dev/null || true; fi
    stop_rsupd
    stop_registry
    stop_podman_store
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
# foreign_cpu_start FILE ... foreign_cpu_stop: the CPU that processes other than this script's
# descendants (and kernel threads) used meanwhile, sampled from /proc every 0.5 s (a lower
# bound: a process that starts and ends between two samples is missed), like the peers'
# cpu_monitor.py but by ancestry, so rsupd, the registry and podman count as ours. The stop
# sets FOREIGN to "<avg cores> cores (top, CPU s: comm s ...)" and warns above 0.1 cores.
foreign_cpu_start() {
    FOREIGN_OUT=$1
    python3 - "$FOREIGN_OUT" "$$" <<'PY' &
import json, os, signal, sys, time
out, root = sys.argv[1], int(sys.argv[2])

def snap():
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            r = s.rfind(")")
            f = s[r + 2:].split()
            procs[int(d)] = (int(f[1]), s[s.find("(") + 1:r], int(f[11]) + int(f[12]))
    return procs

def foreign(procs, pid):
    seen = set()
    while pid not in seen:
        if pid == root:
            return False
        if pid in (0, 1) or procs.get(pid, (0,))[0] == 2 or pid == 2:
            return pid == 1  # init's other children are foreign; kernel threads are not
        seen.add(pid)
        pid = procs.get(pid, (0,))[0]
    return False

start, last, used, top = time.time(), snap(), 0, {}
done = False
def stop(*_):
    global done
    done = True
signal.signal(signal.SIGTERM, stop)
while not done and os.path.exists(f"/proc/{root}"):
    time.sleep(0.5)
    now = snap()
    for pid, (ppid, comm, ticks) in now.items():
        prev = last.get(pid)
        d = ticks - prev[2] if prev and prev[1] == comm else ticks
        if d > 0 and foreign(now, pid):
            used += d
            top[comm] = top.get(comm, 0) + d
    last = now
tck, wall = os.sysconf("SC_CLK_TCK"), time.time() - start
json.dump({"wall_s": wall, "foreign_cpu_s": used / tck, "foreign_cores_avg": used / tck / wall,
           "top": {k: v / tck for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:3]}}, open(out, "w"))
PY
    FOREIGN_PID=$!
}
foreign_cpu_stop() {
    [[ -n $FOREIGN_PID ]] || return 0
    kill -TERM "$FOREIGN_PID" 2>/dev/null || true
    wait "$FOREIGN_PID" 2>/dev/null || true
    FOREIGN_PID=
    FOREIGN=$(python3 - "$FOREIGN_OUT" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
top = " ".join(f"{k} {v:.1f}" for k, v in f["top"].items())
print(f"{f['foreign_cores_avg']:.2f} cores (top, CPU s: {top or 'none'})")
if f["foreign_cores_avg"] > 0.1:
    print(f"WARNING: other processes used {f['foreign_cores_avg']:.2f} cores on average while measuring; "
          "the times are inflated", file=sys.stderr)
PY
)
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
    start_rsupd "$D"
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

# ------------------------------------------------------------------ pull
# A cold pull of the same image from the same registry, rsup and podman in turns: each round
# (after one untimed round) times one pull of each, alternating which goes first. Before every
# pull the image is removed from that tool's store and the store checked to hold no layer, and
# `sync` writes out what earlier runs left dirty (rsup's pull ends with an fsync and a syncfs of
# the store's filesystem, which would otherwise also write the other tool's data).
if want pull; then
    step "pull: a ${PULL_MB} MiB two-layer image in a docker-registry on loopback; PULL_RUNS=$PULL_RUNS"
    for t in docker-registry skopeo curl; do
        command -v "$t" >/dev/null || die "the pull part needs $t (apt-get install docker-registry skopeo curl)"
    done
    [[ ${SKIP_PEERS:-0} == 1 ]] || command -v podman >/dev/null || die "podman missing (or SKIP_PEERS=1)"
    [[ -x $BIN/rsup-image-archive ]] || die "$BIN/rsup-image-archive missing: cargo build --release --workspace"
    D=$WORK/pull
    mkdir -p "$D"/{registry/storage,tmp}
    use_own_varlib "$D/varlib"
    "$BIN/rsup-image-archive" "$D/image.tar" --mb "$PULL_MB" --format oci --gzip --name bench:latest >&2

    REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    REG=127.0.0.1:$REG_PORT
    REF=$REG/bench:latest
    cat >"$D/registry/config.yml" <<YAML
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $D/registry/storage
http:
  addr: $REG
YAML
    # REGISTRY_* variables would override the config file
    (
        while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^REGISTRY_' || true)
        exec docker-registry serve "$D/registry/config.yml"
    ) >"$D/registry/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true) == 200 ]] && break
        kill -0 "$REGISTRY_PID" 2>/dev/null || { tail -20 "$D/registry/registry.log" >&2; die "docker-registry exited"; }
        sleep 0.1
    done
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/") == 200 ]] ||
        { tail -20 "$D/registry/registry.log" >&2; die "docker-registry not serving on $REG after 10 s"; }
    # skopeo unpacks the oci-archive into TMPDIR
    TMPDIR=$D/tmp own_varlib skopeo copy -q --insecure-policy --dest-tls-verify=false --preserve-digests \
        "oci-archive:$D/image.tar" "docker://$REF" >&2
    rm -f "$D/image.tar"
    LAYERS=$(own_varlib skopeo inspect --raw --tls-verify=false "docker://$REF" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(" + ".join("%.2f" % (l["size"] / 1048576) for l in m["layers"]), "MiB",
      ", ".join(sorted({l["mediaType"] for l in m["layers"]})))')
    echo "registry $REG (pid $REGISTRY_PID) holds $REF: layers $LAYERS" >&2

    start_rsupd "$D"
    LAYER_DIR=$D/state/images/layers
    ctl() { "$BIN/rsupctl" --socket "$D/rsupd.sock" "$@"; }
    rsup_clear() {
        ctl image rm -f "$REF" >/dev/null 2>&1 || true
        [[ -z $(ls -A "$LAYER_DIR" 2>/dev/null) ]] || die "$LAYER_DIR not empty after image rm: $(ls "$LAYER_DIR")"
    }
    rsup_pull() { ctl pull -q "$REF" >/dev/null; }
    TOOLS=(rsup)
    if [[ ${SKIP_PEERS:-0} != 1 ]]; then
        podman_own_config "$D"
        podman_clear() {
            pm rmi -a -f >/dev/null 2>&1 || true
            # a layer is a directory in overlay/ (overlay/l holds the layers' short links)
            [[ -z $(find "$D/podman/root/overlay" -mindepth 1 -maxdepth 1 -type d ! -name l 2>/dev/null) ]] ||
                die "podman's store still holds layers after rmi -a: $(ls -A "$D/podman/root/overlay")"
        }
        podman_pull() { pm pull -q --tls-verify=false "$REF" >/dev/null; }
        TOOLS+=(podman)
    fi

    # One timed pull of tool $1 (after clearing its store) -> ms on stdout.
    time_pull() {
        local t0 t1
        "$1_clear"
        sync
        t0=${EPOCHREALTIME/./}
        "$1_pull" || { tail -20 "$D/rsupd.log" "$D/registry/registry.log" >&2; die "$1 pull of $REF failed"; }
        t1=${EPOCHREALTIME/./}
        "$1_clear"
        printf '%d.%03d\n' $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000))
    }
    wait_quiet
    foreign_cpu_start "$RESULTS/raw/08-pull-foreign-cpu.json"
    NOTE="$(conditions); $REF from docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null) on loopback, layers $LAYERS; each pull into an empty store; $PULL_RUNS rounds after 1 untimed, alternating which tool goes first"
    for t in "${TOOLS[@]}"; do : >"$RESULTS/raw/$t-image-pull.txt"; done
    for round in $(seq 0 "$PULL_RUNS"); do
        order=("${TOOLS[@]}")
        if ((round % 2 == 1 && ${#TOOLS[@]} == 2)); then order=(podman rsup); fi
        line="round $round:"
        ((round > 0)) || line="round 0 (untimed):"
        for t in "${order[@]}"; do
            ms=$(time_pull "$t")
            line+=" $t $ms ms"
            ((round == 0)) || echo "$ms" >>"$RESULTS/raw/$t-image-pull.txt"
        done
        echo "$line" >&2
    done
    foreign_cpu_stop
    echo "CPU of other processes while measuring: $FOREIGN" >&2
    NOTE+="; other processes used $FOREIGN while measuring"
    OUT=$RESULTS/08-pull.jsonl
    : >"$OUT"
    python3 - "$RESULTS" "$OUT" "$REF" "$NOTE" "${TOOLS[@]}" <<'PY'
import datetime, json, statistics, sys
res, out, ref, note, tools = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
cmds = {"rsup": f"rsupctl pull -q {ref}",
        "podman": f"podman --root R --runroot RR --storage-driver overlay --tmpdir T pull -q --tls-verify=false {ref}"
                  " (in a mount namespace of its own: unshare -m + a bind mount on /var/lib/containers)"}
med = {}
with open(out, "w") as f:
    for t in tools:
        v = [float(x) for x in open(f"{res}/raw/{t}-image-pull.txt").read().split()]
        med[t] = statistics.median(v)
        row = {"id": f"{t}-image-pull", "what": f"{t}: cold pull of a two-layer image (the store emptied before each)",
               "cmd": cmds[t], "unit": "ms",
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "notes": note, "ok": True, "n": len(v), "median": med[t], "min": min(v), "max": max(v),
               "mean": statistics.fmean(v), "stdev": statistics.stdev(v) if len(v) > 1 else 0.0}
        f.write(json.dumps(row) + "\n")
        print(f"{row['id']:18} median {row['median']:7.0f} ms  (min {row['min']:.0f}, max {row['max']:.0f}, "
              f"stdev {row['stdev']:.0f}, n {row['n']})", file=sys.stderr)
if len(med) == 2:
    print(f"rsup / podman: {med['rsup'] / med['podman']:.2f}x (medians)", file=sys.stderr)
PY
    # rsupd's log (info: each pull's end) and the registry's (each request), for a profile
    cp "$D/rsupd.log" "$RESULTS/raw/08-pull-rsupd.log"
    cp "$D/registry/registry.log" "$RESULTS/raw/08-pull-registry.log"
    stop_rsupd
    stop_podman_store
    stop_registry
fi

# ------------------------------------------------------------------ docker-run
# `docker run --rm IMG true`, the docker CLI against a release rsupd's Docker socket (rsupd
# --docker-socket), beside `podman run --rm IMG true`, each round (after one untimed round) one
# run of each, alternating which goes first. The image is the same busybox in both, from one
# `docker save` tarball (tests/python/busybox_image.py). The docker CLI gets an empty config dir
# (no contexts, no credential helpers) and DOCKER_HOST; podman its own config and store. The
# rounds run in one process inside podman's mount namespace (own_varlib), so neither tool pays
# for an unshare per run; a run counts only if it exits 0 and leaves no container behind.
if want docker-run; then
    step "docker-run: docker run --rm vs podman run --rm, DOCKER_RUN_RUNS=$DOCKER_RUN_RUNS, network $DOCKER_RUN_NET"
    DOCKER_CLI=${DOCKER_CLI:-$(command -v docker || true)}
    [[ -n $DOCKER_CLI && -x $DOCKER_CLI ]] || die "the docker-run part needs the docker CLI (apt-get install docker.io; dockerd is never started)"
    [[ ${SKIP_PEERS:-0} == 1 ]] || command -v podman >/dev/null || die "podman missing (or SKIP_PEERS=1)"
    [[ $("$BIN/rsupd" --help 2>&1) == *--docker-socket* ]] || die "$BIN/rsupd has no --docker-socket"
    D=$WORK/drun  # short: podman refuses a runroot path longer than 50 characters
    mkdir -p "$D/docker-config"
    IMG=rsupbench/busybox:1
    python3 "$REPO/tests/python/busybox_image.py" "$D/busybox.tar" --tag "$IMG" >/dev/null
    start_rsupd "$D" --docker-socket "$D/docker.sock"
    DK=(env DOCKER_CONFIG="$D/docker-config" DOCKER_HOST="unix://$D/docker.sock" "$DOCKER_CLI")
    for _ in $(seq 100); do
        "${DK[@]}" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    "${DK[@]}" version >&2 || { tail -20 "$D/rsupd.log" >&2; die "docker version against $D/docker.sock failed"; }
    "${DK[@]}" load -i "$D/busybox.tar" >&2 || { tail -20 "$D/rsupd.log" >&2; die "docker load into rsupd failed"; }
    NETARGS=()
    [[ $DOCKER_RUN_NET == default ]] || NETARGS=(--network none)
    CMDS=("rsup" "$(printf '%q ' "${DK[@]}" run --rm "${NETARGS[@]}" "$IMG" true)")
    if [[ ${SKIP_PEERS:-0} != 1 ]]; then
        if [[ -z ${PODMAN_RUNTIME:-} ]]; then
            # crun refuses a hybrid hierarchy whose cgroup2 holds controllers (hugetlb on some
            # kernels); the peers mount hugetlb on v1 for it, which this script does not do
            PODMAN_RUNTIME=crun
            if [[ -n $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null) ]]; then PODMAN_RUNTIME=runc; fi
        fi
        command -v "$PODMAN_RUNTIME" >/dev/null || die "podman's runtime $PODMAN_RUNTIME missing"
        use_own_varlib "$D/varlib"
        podman_own_config "$D"
        pm load -q -i "$D/busybox.tar" >&2
        [[ $DOCKER_RUN_NET == none ]] || podman_net_guard
        CMDS+=("podman" "$(printf '%q ' env "${PODMAN_ENV[@]}" podman "${PODMAN_ARGS[@]}" run --rm "${NETARGS[@]}" "$IMG" true)")
    fi
    wait_quiet
    foreign_cpu_start "$RESULTS/raw/09-docker-run-foreign-cpu.json"
    # the rounds, inside podman's mount namespace when podman takes part (nothing to bind otherwise)
    inner=()
    [[ -z $VARLIB ]] || inner=(own_varlib)
    "${inner[@]}" python3 - "$RESULTS/raw" "$DOCKER_RUN_RUNS" "${CMDS[@]}" <<'PY' ||
import shlex, subprocess, sys, time
raw, runs, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
tools = dict(zip(pairs[0::2], pairs[1::2]))
names = list(tools)
files = {t: open(f"{raw}/{t}-docker-run.txt", "w") for t in names}
for rnd in range(runs + 1):
    order = names if rnd % 2 == 0 else names[::-1]
    line = [f"round {rnd}:" if rnd else "round 0 (untimed):"]
    for t in order:
        t0 = time.perf_counter()
        res = subprocess.run(shlex.split(tools[t]), stdin=subprocess.DEVNULL, capture_output=True)
        ms = (time.perf_counter() - t0) * 1000
        if res.returncode != 0:
            sys.exit(f"{t}: `{tools[t]}` exited {res.returncode}: {res.stderr.decode(errors='replace')[-2000:]}")
        line.append(f"{t} {ms:.1f} ms")
        if rnd:
            files[t].write(f"{ms:.3f}\n")
    print(" ".join(line), file=sys.stderr, flush=True)
PY
        { foreign_cpu_stop; tail -20 "$D/rsupd.log" >&2; die "docker-run: a run failed"; }
    foreign_cpu_stop
    echo "CPU of other processes while measuring: $FOREIGN" >&2
    left=$("${DK[@]}" ps -aq | wc -l)
    ((left == 0)) || die "docker-run: $left containers left in rsupd after docker run --rm"
    if ((${#PODMAN_ARGS[@]})); then
        left=$(pm ps -aq | wc -l)
        ((left == 0)) || die "docker-run: $left containers left in podman after podman run --rm"
    fi
    NOTE="$(conditions); docker CLI $("${DK[@]}" version --format '{{.Client.Version}}' 2>/dev/null) (API $("${DK[@]}" version --format '{{.Client.APIVersion}}' 2>/dev/null)) against rsupd's Docker socket; network: $DOCKER_RUN_NET"
    if ((${#PODMAN_ARGS[@]})); then
        NOTE+="; podman $(podman --version | awk '{print $3}') with $PODMAN_RUNTIME, in a store of its own"
    fi
    NOTE+="; $DOCKER_RUN_RUNS rounds after 1 untimed, alternating which tool goes first; other processes used $FOREIGN while measuring"
    OUT=$RESULTS/09-docker-run.jsonl
    python3 - "$RESULTS" "$OUT" "$IMG" "$DOCKER_RUN_NET" "$NOTE" "${CMDS[@]}" <<'PY'
import datetime, json, statistics, sys
res, out, img, net, note, pairs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
tools = dict(zip(pairs[0::2], pairs[1::2]))
flag = "" if net == "default" else " --network none"
what = {"rsup": f"docker run --rm{flag} IMAGE true: the docker CLI against rsupd --docker-socket",
        "podman": f"podman run --rm{flag} IMAGE true (the same image, from the same tarball)"}
med = {}
with open(out, "w") as f:
    for t, cmd in tools.items():
        v = [float(x) for x in open(f"{res}/raw/{t}-docker-run.txt").read().split()]
        med[t] = statistics.median(v)
        row = {"id": f"{t}-docker-run", "what": what[t], "cmd": cmd, "unit": "ms",
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "notes": note, "ok": True, "n": len(v), "median": med[t], "min": min(v), "max": max(v),
               "mean": statistics.fmean(v), "stdev": statistics.stdev(v) if len(v) > 1 else 0.0}
        f.write(json.dumps(row) + "\n")
        print(f"{row['id']:18} median {row['median']:7.1f} ms  (min {row['min']:.1f}, max {row['max']:.1f}, "
              f"stdev {row['stdev']:.1f}, n {row['n']})", file=sys.stderr)
if len(med) == 2:
    print(f"rsup (docker CLI) / podman: {med['rsup'] / med['podman']:.2f}x (medians)", file=sys.stderr)
PY
    cp "$D/rsupd.log" "$RESULTS/raw/09-docker-run-rsupd.log"
    stop_rsupd
    stop_podman_store
fi

remove_work

# ------------------------------------------------------------------ report
step "report"
if [[ -f $PEERS/report.py ]]; then
    RESULTS=$RESULTS python3 "$PEERS/report.py" >/dev/null && echo "full table: $RESULTS/RESULTS.md" >&2
fi
bash "$REPO/scripts/bench-compare.sh" "$RESULTS"
