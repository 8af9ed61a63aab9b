#!/usr/bin/env bash
# rsup's single test command, run by .ci/run and by hand:
#
#   sudo scripts/test.sh                  # everything
#   sudo scripts/test.sh cli::            # cargo tests whose name contains `cli::`
#
# Needs root (the integration tests start real containers) on Debian 12 or
# similar, with a Rust toolchain. It installs what is missing (busybox-static
# for the test rootfs, prometheus for promtool and a real Prometheus server,
# Python packages for the cross-language test), sweeps what earlier, killed
# runs left in /tmp/rsup-test-*, builds the workspace, runs `cargo test`, then
# the resource tests (`resources::`), the device-filter tests
# (`security::dangerous_operations_fail`, `security::devices_`) and the
# cgroup-namespace tests (`security::cgroupns_`) again in a throwaway
# pure-cgroup-v2 VM
# (../shared/v2vm/run-in-v2vm, next to the repository), then the Python tests
# in tests/python if there are any; every suite runs, and the script fails at
# the end if any of them failed. Arguments are passed to the host's cargo
# test harness (a name filter, --nocapture); the VM step always runs the
# same four filters.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: run as root: the integration tests create namespaces and mounts" >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "scripts/test.sh: cargo not found; install a Rust toolchain (rustup)" >&2
    exit 1
fi

step "System packages"
missing=()
[[ -x /bin/busybox ]] || missing+=(busybox-static)
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v python3 >/dev/null || missing+=(python3)
# the Python TLS test makes its certificates with the openssl CLI
command -v openssl >/dev/null || missing+=(openssl)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# promtool and prometheus, for resources::metrics_are_valid_and_scraped_by_a_real_prometheus.
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "busybox-static, cc, python3, pip, openssl and prometheus are present"
fi

step "Python packages"
if python3 -c 'import grpc, grpc_tools, grpc_reflection, pytest' 2>/dev/null; then
    echo "grpcio, grpcio-tools, grpcio-reflection and pytest are present"
else
    # Debian marks its Python as externally managed; this is a test machine.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install --quiet -r tests/python/requirements.txt
fi

step "Sweeping leftovers of earlier runs (/tmp/rsup-test-*)"
# True when an argument of process $1 is $2 or a path under it.
mentions() {
    local args
    args=$'\n'"$(tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" || true)"$'\n'
    [[ $args == *"$2/"* || $args == *"$2"$'\n'* ]]
}
# The value of integer field $2 in the JSON file $1 (empty if absent).
json_int() {
    grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$1" 2>/dev/null | grep -o '[0-9]*$' | head -n1 || true
}
sweep() {
    local dir=$1 state shim init init_ppid shim_ok pid point
    local -a victims=()
    while IFS= read -r -d '' state; do
        shim=$(json_int "$state" shim_pid)
        init=$(json_int "$state" init_pid)
        shim_ok=
        if [[ -n $shim && $shim -gt 1 ]] && mentions "$shim" "$dir"; then
            shim_ok=$shim
        fi
        # The init goes first: once its shim is dead it can no longer be recognised.
        if [[ -n $init && $init -gt 1 ]]; then
            init_ppid=$(awk '/^PPid:/ {print $2}' "/proc/$init/status" 2>/dev/null || true)
            if mentions "$init" "$dir" || [[ -n $shim_ok && $init_ppid == "$shim_ok" ]]; then
                victims+=("$init")
            fi
        fi
        if [[ -n $shim_ok ]]; then
            victims+=("$shim_ok")
        fi
    done < <(find "$dir" -xdev -name state.json -print0 2>/dev/null || true)
    # Any other process still naming the directory, e.g. an orphaned rsupd.
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        if [[ $pid != "$$" && " ${victims[*]} " != *" $pid "* ]] && mentions "$pid" "$dir"; then
            victims+=("$pid")
        fi
    done
    for pid in "${victims[@]}"; do
        echo "killing leftover pid $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
        kill -KILL "$pid" 2>/dev/null || true
    done
    # Deepest mount points first; /proc/mounts escapes spaces as \040.
    awk '{print $2}' /proc/mounts | while IFS= read -r point; do
        point=$(printf '%b' "$point")
        if [[ $point == "$dir" || $point == "$dir"/* ]]; then
            echo "$point"
        fi
    done | sort -r | while IFS= read -r point; do
        echo "unmounting $point"
        umount -l "$point" || true
    done
    echo "removing $dir"
    rm -rf --one-file-system "$dir" || echo "warning: could not remove all of $dir" >&2
}
shopt -s nullglob
for dir in /tmp/rsup-test-*; do
    [[ -d $dir ]] || continue
    # /tmp/rsup-test-<pid>-<n>: leave the directories of a test run still going.
    owner=${dir#/tmp/rsup-test-}
    owner=${owner%%-*}
    if [[ $owner =~ ^[0-9]+$ && -n $(tr -d '\0' 2>/dev/null </proc/"$owner"/cmdline || true) ]]; then
        echo "skipping $dir: process $owner still runs"
        continue
    fi
    sweep "$dir"
done
shopt -u nullglob

step "Sweeping links and cgroups of earlier test daemons"
# Test daemons name their links z<3 hex>b|v..., the Python test's zpy..., the
# benchmark's bx...; their cgroup subtrees are rsup-z... (empty once their
# containers are gone: rmdir leaves any cgroup that still has processes).
while read -r link; do
    echo "deleting leftover link $link"
    ip link del "$link" 2>/dev/null || true
done < <(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
    grep -E '^(z[0-9a-f]{3}|zpy|bx)[bv]' || true)
# (find fails when a cgroup vanishes under it: that is not an error here)
{ find /sys/fs/cgroup -mindepth 1 -maxdepth 8 -type d -name 'rsup-z*' 2>/dev/null || true; } |
    sort -r |
    while read -r dir; do
        find "$dir" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
        rmdir "$dir" 2>/dev/null || true
    done

step "cargo build --workspace"
cargo build --workspace

# Every suite runs even when an earlier one fails; the script fails at the end.
failed=()

step "cargo test --workspace (integration tests as root)"
RUST_BACKTRACE=${RUST_BACKTRACE:-1} cargo test --workspace --no-fail-fast -- --test-threads=2 "$@" ||
    failed+=("cargo test")

step "cgroup v2 tests in a throwaway VM"
# This host may have cgroup v1 only: run the resource tests and the device
# filter tests (v2: an eBPF program instead of the devices cgroup) again in a VM
# whose /sys/fs/cgroup is pure cgroup2, placed in a systemd-like leaf cgroup.
# Everything is built here; the VM (TCG, slow) only runs the binaries.
v2vm="$(cd .. && pwd)/shared/v2vm/run-in-v2vm"
if [[ ! -f $v2vm ]]; then
    echo "scripts/test.sh: $v2vm not found: the cgroup v2 tests need the shared" \
        "run-in-v2vm tool in ../shared next to the repository" >&2
    failed+=("cgroup v2 tests (VM)")
elif ! cargo test -p rsup-tests --test integration --no-run; then
    failed+=("cgroup v2 tests (VM)")
else
    # rsupd and rsupctl run from a copy outside the workspace: the VM reads
    # the host's root with page caching but re-reads the writable workspace
    # share on every exec, which costs about a second per rsupctl there.
    v2vm_bin=$(mktemp -d /var/tmp/rsup-v2vm-bin.XXXXXX)
    trap 'rm -rf "$v2vm_bin"' EXIT
    cp target/debug/rsupd target/debug/rsupctl "$v2vm_bin/"
    RSUP_IN_V2VM=1 RSUP_BIN_DIR=$v2vm_bin RUST_BACKTRACE=${RUST_BACKTRACE:-1} \
        bash "$v2vm" --timeout 1200 --cgroup rsup.slice/test -- \
        cargo test -p rsup-tests --test integration -- \
        resources:: security::dangerous_operations_fail security::devices_ security::cgroupns_ \
        --test-threads=1 ||
        failed+=("cgroup v2 tests (VM)")
    rm -rf "$v2vm_bin"
fi

step "hostile-name tests in a throwaway VM (only a scratch dir writable)"
# Hostile names (/, .., paths to a canary) against every RPC: a regression
# would delete host paths, so they run only in a VM that shares nothing
# writable but a scratch directory holding the binaries (never the work tree);
# on the host the test skips itself.
if [[ ! -f $v2vm ]]; then
    failed+=("hostile-name tests (VM)")
else
    test_bin=$(cargo test -p rsup-tests --test integration --no-run --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\/deps\/integration-[0-9a-f]*\)".*/\1/p')
    scratch=$(mktemp -d /var/tmp/rsup-hostile.XXXXXX)
    trap 'rm -rf "$scratch"' EXIT
    if [[ -z $test_bin ]]; then
        failed+=("hostile-name tests (VM)")
    else
        cp target/debug/rsupd target/debug/rsupctl "$test_bin" "$scratch/"
        RSUP_IN_V2VM=1 RSUP_BIN_DIR=$scratch RUST_BACKTRACE=${RUST_BACKTRACE:-1} \
            bash "$v2vm" --timeout 1200 --rw "$scratch" -- \
            "$scratch/$(basename "$test_bin")" names:: --test-threads=1 ||
            failed+=("hostile-name tests (VM)")
    fi
    rm -rf "$scratch"
fi

if [[ -d tests/python ]]; then
    step "Python cross-language tests (tests/python)"
    python3 -m pytest -q tests/python || failed+=("pytest tests/python")
else
    step "Python cross-language tests: tests/python does not exist, skipped"
fi

if ((${#failed[@]})); then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "All tests passed"
