#!/usr/bin/env bash
# Image benchmark, rsup beside podman in one run on this machine (never a test):
#
#   sudo scripts/bench-images.sh           # or: sudo scripts/bench.sh images
#
# One ~100 MB `docker save` archive (busybox + 100 MiB of random data in a second
# layer), built by target/release/rsup-image-archive, then with hyperfine:
#   import   rsupctl image import FILE       vs  podman load -i FILE
#            (the image removed before each run: every run stores and unpacks
#            both layers again)
#   create   rsupctl create --network none IMAGE true   vs  podman create --network none
#            (rsup looks the command up in a read-only overlay of the layers)
#   run      rsupctl run --rm --network none IMAGE true vs  podman run --rm --network none
#            (the container's overlay mount, its namespaces, the command, removal)
# Rows (peers' stats.py format) go to $RESULTS/07-images.jsonl, raw hyperfine JSON
# to $RESULTS/raw. Env: RESULTS (/tmp/rsup-bench-results), IMPORT_RUNS (10), RUNS (30),
# MB (100), SKIP_BUILD=1, SKIP_PEERS=1, PEERS (../shared/peers).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=${PEERS:-$(cd "$REPO/.." && pwd)/shared/peers}
RESULTS=${RESULTS:-/tmp/rsup-bench-results}
RAW=$RESULTS/raw
IMPORT_RUNS=${IMPORT_RUNS:-10}
RUNS=${RUNS:-30}
MB=${MB:-100}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
WORK=/tmp/rsup-test-$$-benchimg
D=$WORK/daemon
OUT=$RESULTS/07-images.jsonl
IMAGE=rsup-bench-img:latest
RSUPD_PID=

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "scripts/bench-images.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root"
command -v hyperfine >/dev/null || die "hyperfine missing (apt-get install hyperfine)"
mkdir -p "$RAW" "$WORK"

ctl() { "$BIN/rsupctl" --socket "$D/rsupd.sock" "$@"; }
cleanup() {
    local rc=$? ids
    trap - EXIT INT TERM
    if [[ -n $RSUPD_PID ]] && kill -0 "$RSUPD_PID" 2>/dev/null; then
        ids=$(ctl ps -a -q 2>/dev/null || true)
        # shellcheck disable=SC2086
        [[ -z $ids ]] || ctl rm -f $ids >/dev/null 2>&1 || true
        kill -TERM "$RSUPD_PID"
        wait "$RSUPD_PID" 2>/dev/null || true
    fi
    for m in $(awk -v w="$WORK" 'index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    step "cargo build --release --workspace"
    (cd "$REPO" && cargo build --release --workspace)
fi

step "a ${MB} MiB image archive"
ARCHIVE=$WORK/image.tar
"$BIN/rsup-image-archive" "$ARCHIVE" --mb "$MB" --name "$IMAGE" >&2
SIZE_MB=$(( $(stat -c %s "$ARCHIVE") / 1048576 ))
NOTE="docker-save archive ${SIZE_MB} MiB (2 layers, uncompressed); release build; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

step "rsupd"
mkdir -p "$D"
"$BIN/rsupd" --socket "$D/rsupd.sock" --state-dir "$D/state" --metrics-addr "" \
    --net-prefix bx --default-subnet 10.91.0.0/16 --cgroup-subtree bxbench >"$D/rsupd.log" 2>&1 &
RSUPD_PID=$!
for _ in $(seq 200); do
    ctl info >/dev/null 2>&1 && break
    kill -0 "$RSUPD_PID" 2>/dev/null || { tail -20 "$D/rsupd.log" >&2; die "rsupd exited"; }
    sleep 0.1
done

record() { python3 "$PEERS/stats.py" hyperfine --out "$OUT" --id "$1" --what "$2" --json "$RAW/$3.json" --notes "$NOTE"; }
: >"$OUT"
hf() {
    local name=$1 runs=$2
    shift 2
    hyperfine -N --style basic --runs "$runs" --export-json "$RAW/$name.json" "$@" >&2
}

step "rsup: import x$IMPORT_RUNS"
hf 07-rsup-import "$IMPORT_RUNS" \
    --prepare "sh -c '$BIN/rsupctl --socket $D/rsupd.sock image rm -f $IMAGE >/dev/null 2>&1 || true'" \
    "$BIN/rsupctl --socket $D/rsupd.sock image import $ARCHIVE"
record rsup-image-import "rsupctl image import (${SIZE_MB} MiB docker-save)" 07-rsup-import
ctl image import "$ARCHIVE" >/dev/null

step "rsup: create x$RUNS, run --rm x$RUNS"
hf 07-rsup-create "$RUNS" "$BIN/rsupctl --socket $D/rsupd.sock create --network none $IMAGE true"
record rsup-image-create "rsupctl create --network none IMAGE true" 07-rsup-create
ids=$(ctl ps -a -q)
# shellcheck disable=SC2086
[[ -z $ids ]] || ctl rm -f $ids >/dev/null
hf 07-rsup-run "$RUNS" --warmup 3 "$BIN/rsupctl --socket $D/rsupd.sock run --rm --network none $IMAGE true"
record rsup-image-run "rsupctl run --rm --network none IMAGE true" 07-rsup-run

if [[ ${SKIP_PEERS:-0} != 1 ]]; then
    step "podman: load, create, run (the peers' isolated podman config)"
    # shellcheck disable=SC2016
    RESULTS=$RESULTS ARCHIVE=$ARCHIVE IMAGE=$IMAGE RUNS=$RUNS IMPORT_RUNS=$IMPORT_RUNS NOTE=$NOTE bash -c '
        source "'"$PEERS"'/lib.sh"
        need_rootfs
        crun_hybrid_fix_up
        on_exit podman_cgroup_tidy
        on_exit podman_rm_ours
        on_exit "podman rmi -f $IMAGE >/dev/null 2>&1 || true"
        hyperfine -N --style basic --runs "$IMPORT_RUNS" --export-json "$RAW/07-podman-load.json" \
            --prepare "sh -c '\''podman rmi -f $IMAGE >/dev/null 2>&1 || true'\''" \
            "podman load -q -i $ARCHIVE" >&2
        python3 "$BENCH_DIR/stats.py" hyperfine --out "$RESULTS/07-images.jsonl" --id podman-image-load \
            --what "podman load -i (same archive)" --json "$RAW/07-podman-load.json" --notes "$NOTE"
        podman load -q -i "$ARCHIVE" >/dev/null
        hyperfine -N --style basic --runs "$RUNS" --export-json "$RAW/07-podman-create.json" \
            "podman create --label $LABEL --network none $IMAGE true" >&2
        python3 "$BENCH_DIR/stats.py" hyperfine --out "$RESULTS/07-images.jsonl" --id podman-image-create \
            --what "podman create --network none IMAGE true" --json "$RAW/07-podman-create.json" --notes "$NOTE"
        podman_rm_ours
        hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$RAW/07-podman-run.json" \
            "podman run --rm --label $LABEL --network none $IMAGE true" >&2
        python3 "$BENCH_DIR/stats.py" hyperfine --out "$RESULTS/07-images.jsonl" --id podman-image-run \
            --what "podman run --rm --network none IMAGE true" --json "$RAW/07-podman-run.json" --notes "$NOTE"
    ' || echo "warning: the podman half failed" >&2
fi

step "results ($OUT)"
python3 - "$OUT" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['id']:22} median {r['median']:9.1f} {r['unit']}  (min {r['min']:.1f}, max {r['max']:.1f}, n {r['n']})  {r['what']}")
PY
