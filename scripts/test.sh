#!/usr/bin/env bash
# rsup's single test command, run by .ci/run and by hand:
#
#   sudo scripts/test.sh                  # everything
#   sudo scripts/test.sh cli::            # cargo tests whose name contains `cli::`
#
# Needs root (the integration tests start real containers) on Debian 12 or
# similar, with a Rust toolchain. It installs what is missing (busybox-static
# for the test rootfs, prometheus for promtool and a real Prometheus server,
# docker-registry, skopeo, apache2-utils (htpasswd) and curl for the real
# image registry of tests/src/registry.rs, Python packages for the
# cross-language test), sweeps what earlier, killed
# runs left in /tmp/rsup-test-*, builds the workspace, runs `cargo test`, then
# the resource tests (`resources::`), the device-filter tests
# (`security::dangerous_operations_fail`, `security::devices_`) and the
# cgroup-namespace tests (`security::cgroupns_`) again in a throwaway
# pure-cgroup-v2 VM
# (../shared/v2vm/run-in-v2vm, next to the repository), then the hostile
# suite (tests/tests/hostile.rs: hostile names and fuzzed fields against
# every RPC, symlinked mount targets, the host's /dev, private state, limits;
# it tries to make rsupd reach host paths, so it runs only in that VM and
# skips itself anywhere else), then the Python tests in tests/python if there are any;
# every suite runs, and the script fails at the end if any of them failed.
# Arguments are passed to the host's cargo test harness (a name filter,
# --nocapture); the VM steps always run the same filters. In the VM only a
# scratch dir under /var/tmp is writable from the guest: never the work tree.
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
# A real registry for the pull tests (tests/src/registry.rs): the CNCF
# distribution registry, skopeo to seed it, htpasswd for its basic auth, and
# curl to see it serve (over TLS too).
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v curl >/dev/null || missing+=(curl)
# The Docker API tests (tests/python/test_docker_api.py) drive rsupd's Docker socket
# (rsupd --docker-socket) with Docker's own clients: docker-compose 1.29 (Debian's, on
# Debian's python3-docker 5) and, for scripts/bench.sh docker-run, the docker CLI of
# Debian's docker.io. Neither dockerd nor containerd may ever run here: see below.
command -v docker >/dev/null || missing+=(docker.io)
[[ -x /usr/bin/docker-compose ]] || missing+=(docker-compose)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # docker.io's and containerd's maintainer scripts enable and start dockerd and
    # containerd, which would take over this machine's networking (iptables, a docker0
    # bridge) and cgroups beside the test daemons. Before installing them: their units
    # are masked (for good: a later boot or `systemctl start` does not start them
    # either; `systemctl unmask` undoes it), and a policy-rc.d that refuses every start
    # (exit 101: "action forbidden") covers machines without systemd, where invoke-rc.d
    # asks it. The policy-rc.d is removed afterwards unless it was already there.
    policy_made=
    if [[ " ${missing[*]} " == *" docker."* || " ${missing[*]} " == *" docker-compose "* ]]; then
        # (systemctl mask only writes links to /dev/null: it works without a running systemd)
        systemctl mask docker.service docker.socket containerd.service >/dev/null 2>&1 || {
            mkdir -p /etc/systemd/system
            for u in docker.service docker.socket containerd.service; do
                ln -sfn /dev/null "/etc/systemd/system/$u"
            done
        }
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\n# scripts/test.sh: no service starts while it installs packages\nexit 101\n' \
                >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            policy_made=1
        fi
    fi
    apt_rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
        apt_rc=$?
    if [[ -n $policy_made ]]; then rm -f /usr/sbin/policy-rc.d; fi
    ((apt_rc == 0)) || exit "$apt_rc"
else
    echo "busybox-static, cc, python3, pip, openssl, prometheus, docker-registry, skopeo," \
        "htpasswd (apache2-utils), curl, docker and docker-compose are present"
fi
# Nothing of Docker's may be running (the masks and policy-rc.d above should have made sure).
for daemon in dockerd containerd; do
    if pids=$(pgrep -x "$daemon" | tr '\n' ' '); [[ -n $pids ]]; then
        echo "scripts/test.sh: $daemon is running (pid ${pids% }): the tests never start it" \
            "and must not run beside it; stop it (systemctl stop docker containerd)" >&2
        exit 1
    fi
done

step "Python packages"
if python3 -c 'import grpc, grpc_tools, grpc_reflection, pytest' 2>/dev/null; then
    echo "grpcio, grpcio-tools, grpcio-reflection and pytest are present"
else
    # Debian marks its Python as externally managed; this is a test machine.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install --quiet -r tests/python/requirements.txt
fi
# Docker's Python SDK (PyPI `docker` 7) for test_docker_api.py goes into a directory of
# its own, RSUP_DOCKER_SDK_DIR, which only that test puts on its sys.path, never into
# site-packages: /usr/bin/docker-compose (1.29) runs on Debian's python3-docker 5 and
# calls kwargs_from_env(ssl_version=...), which docker 7 removed, and a pip-installed
# docker 7 in /usr/local/lib/python3.11/dist-packages would shadow Debian's for it
# ("TypeError: kwargs_from_env() got an unexpected keyword argument 'ssl_version'").
# Its dependencies (requests, urllib3, ...) come along into the same directory.
RSUP_DOCKER_SDK_DIR=${RSUP_DOCKER_SDK_DIR:-/usr/local/lib/rsup-tests/docker-sdk}
export RSUP_DOCKER_SDK_DIR
if python3 - "$RSUP_DOCKER_SDK_DIR" <<'PY' 2>/dev/null
import sys
sys.path.insert(0, sys.argv[1])
import docker
assert docker.__file__.startswith(sys.argv[1] + "/") and int(docker.__version__.split(".")[0]) >= 7
PY
then
    echo "the docker SDK is present in $RSUP_DOCKER_SDK_DIR"
else
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install --quiet --upgrade --target "$RSUP_DOCKER_SDK_DIR" \
        -r tests/python/requirements-docker-sdk.txt
fi
# ... and compose still gets Debian's SDK: the call compose 1.29 makes, in compose's own
# interpreter (`docker-compose version` would not notice: it makes no client).
if ! docker-compose version >/dev/null ||
    ! "$(head -n1 /usr/bin/docker-compose | sed 's/^#! *//; s/ .*//')" \
        -c 'from docker.utils import kwargs_from_env; kwargs_from_env(ssl_version=None)' 2>/dev/null; then
    echo "scripts/test.sh: docker-compose cannot use its docker SDK (a pip-installed docker 7 in" \
        "/usr/local/lib/python3*/dist-packages shadowing Debian's python3-docker 5?" \
        "pip uninstall docker; scripts/test.sh puts it in $RSUP_DOCKER_SDK_DIR)" >&2
    exit 1
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
# Test daemons name their links z<3 hex>b|v..., the Python tests' zpy... and zdk..., the
# benchmarks' bx... and bp<N>... (scripts/bench-phases.sh); their cgroup subtrees are rsup-z... (empty once their
# containers are gone: rmdir leaves any cgroup that still has processes).
while read -r link; do
    echo "deleting leftover link $link"
    ip link del "$link" 2>/dev/null || true
done < <(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
    grep -E '^(z[0-9a-f]{3}|zpy|zdk|bx|bp[0-9])[bv]' || true)
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

# The VM steps build here and run only the test executables there (TCG is
# slow). rsupd, rsup-shim, rsupctl and the executable are copied to a scratch dir under
# /var/tmp, which the guest reads through its cached read-only share of the
# host's root; an empty sibling is the only directory shared writable (and
# the command's cwd), so even a regression that deletes everything it can
# reach cannot touch this machine's files. The scratch dir is removed after.
v2vm="$(cd .. && pwd)/shared/v2vm/run-in-v2vm"
vm_scratch=()
trap 'rm -rf "${vm_scratch[@]}"' EXIT

# The executable of `cargo test -p rsup-tests --test $1`, built, not run
# (the first build shows any compiler errors; the second only names it).
test_executable() {
    cargo test -p rsup-tests --test "$1" --no-run >&2 &&
        cargo test -p rsup-tests --test "$1" --no-run --message-format=json 2>/dev/null |
        grep -o "\"executable\":\"[^\"]*/deps/$1-[0-9a-f]*\"" | cut -d'"' -f4 | tail -n1
}

# run_in_vm TIMEOUT CGROUP EXECUTABLE TEST-ARGS...: the test executable in
# the throwaway VM, in the systemd-like leaf cgroup CGROUP ("": the root
# cgroup).
run_in_vm() {
    local timeout=$1 cgroup=$2 exe=$3 scratch rc=0
    shift 3
    local -a placement=()
    [[ -z $cgroup ]] || placement=(--cgroup "$cgroup")
    scratch=$(mktemp -d /var/tmp/rsup-vm.XXXXXX)
    vm_scratch+=("$scratch")
    mkdir "$scratch/bin" "$scratch/rw"
    cp target/debug/rsupd target/debug/rsup-shim target/debug/rsupctl "$exe" "$scratch/bin/"
    (
        cd "$scratch/rw"
        RSUP_IN_V2VM=1 RSUP_BIN_DIR=$scratch/bin RUST_BACKTRACE=${RUST_BACKTRACE:-1} \
            bash "$v2vm" --timeout "$timeout" --rw "$scratch/rw" "${placement[@]}" -- \
            "$scratch/bin/$(basename "$exe")" "$@"
    ) || rc=$?
    rm -rf "$scratch"
    return "$rc"
}

step "cgroup v2 tests in a throwaway VM"
# This host may have cgroup v1 only: run the resource tests, the device
# filter tests (v2: an eBPF program instead of the devices cgroup) and the
# cgroup-namespace tests again in a VM whose /sys/fs/cgroup is pure cgroup2,
# placed in a systemd-like leaf cgroup.
if [[ ! -f $v2vm ]]; then
    echo "scripts/test.sh: $v2vm not found: the cgroup v2 tests need the shared" \
        "run-in-v2vm tool in ../shared next to the repository" >&2
    failed+=("cgroup v2 tests (VM)")
elif ! exe=$(test_executable integration) || [[ -z $exe ]]; then
    failed+=("cgroup v2 tests (VM)")
else
    run_in_vm 1200 rsup.slice/test "$exe" \
        resources:: security::dangerous_operations_fail security::devices_ security::cgroupns_ \
        --test-threads=1 ||
        failed+=("cgroup v2 tests (VM)")
fi

step "hostile suite in the throwaway VM"
# tests/tests/hostile.rs (issue 13): hostile input to every RPC, symlinked
# mount targets, the host's /dev, private state, image and pids limits. It
# may destroy what it can reach if rsup regresses, so it runs only there (its
# tests skip themselves anywhere else) with nothing writable but the
# scratch dir. Two tests at a time, each with its own rsupd, in the root
# cgroup: in a leaf, each new rsupd moves the processes of its cgroup (the
# test process and the other daemons) one level down, and two daemons doing
# so at once race.
if [[ ! -f $v2vm ]]; then
    echo "scripts/test.sh: $v2vm not found: the hostile suite runs only in the" \
        "throwaway VM" >&2
    failed+=("hostile suite (VM)")
elif ! exe=$(test_executable hostile) || [[ -z $exe ]]; then
    failed+=("hostile suite (VM)")
else
    run_in_vm 900 "" "$exe" --test-threads=2 ||
        failed+=("hostile suite (VM)")
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
