//! rsup's integration tests: one test binary (so the busybox rootfs is built
//! once) whose every test starts its own real `rsupd` on a temporary socket
//! and state dir, waits for health SERVING, and drives it as a user would,
//! through `rsupctl` and the `rsup-client` library.
//!
//! They need root, a built workspace (`cargo build --workspace`) and
//! `/bin/busybox` from busybox-static. Run them all with `scripts/test.sh`,
//! one with `cargo test -p rsup-tests --test integration -- NAME`.

// Output and exit codes through `rsupctl`, and its error format.
#[path = "integration/cli.rs"]
mod cli;
// What a process inside a container can see: hostname, processes, network,
// files, and the identity it runs as.
#[path = "integration/isolation.rs"]
mod isolation;
// Stop, kill, restart and the init's reaping.
#[path = "integration/lifecycle.rs"]
mod lifecycle;
// Log files, `logs --tail`, `logs -f` and rotation.
#[path = "integration/logs.rs"]
mod logs;
// State that survives a restart of `rsupd`.
#[path = "integration/persistence.rs"]
mod persistence;
// Crash safety: containers outlive a kill -9 of rsupd, a restarted rsupd
// finds everything again, and the store and the kernel agree after any crash.
#[path = "integration/crash.rs"]
mod crash;
// Unreadable records are quarantined, never acted on: listed "unknown" with
// the reason, their processes, network and cgroup left alone (also across
// twenty kill -9s under churn), and cleaned up completely by rm -f.
#[path = "integration/quarantine.rs"]
mod quarantine;
// Bad input gets its gRPC status code and leaves nothing behind.
#[path = "integration/errors.rs"]
mod errors;
// User networks: names and addresses, DNS that follows state, isolation
// between networks, bad input, published ports, and what removal and a
// restart of rsupd leave behind.
#[path = "integration/networks.rs"]
mod networks;
// Many concurrent lifecycles leave no process, mount or file behind.
#[path = "integration/stress.rs"]
mod stress;
// Limits, usage and OOM accounting (cgroup v1 and v2), update, and /metrics
// as Prometheus sees it.
#[path = "integration/resources.rs"]
mod resources;
// The Grafana dashboards and alert rules of dashboards/ against the metrics
// rsupd exports (and a real Prometheus), and promtool's checks of the rules.
#[path = "integration/observability.rs"]
mod observability;
// Restart policies and backoff, supervisor trees, health checks, exec, and
// the event stream.
#[path = "integration/supervision.rs"]
mod supervision;
// Least privilege: capabilities, seccomp, masked and read-only paths, the
// devices cgroup, --privileged, --cap-add/--cap-drop and --security-opt.
#[path = "integration/security.rs"]
mod security;
// Named volumes, bind mounts, tmpfs mounts and read-only roots.
#[path = "integration/volumes.rs"]
mod volumes;
// The host boundary of mounts: symlinked targets (image, rootfs, volume,
// --userns remap) stay inside the root, /dev nodes are the container's own,
// /etc files are bind mounts, and the command is looked up after the mounts.
#[path = "integration/mounts.rs"]
mod mounts;
// Images: OCI layout and docker-save imports, layers, config defaults.
#[path = "integration/images.rs"]
mod images;
// The authenticated control plane: gRPC over TCP with mutual TLS (and
// refused without a certificate of the configured CA), --insecure-tcp on
// loopback only, and the Unix socket's mode and group.
#[path = "integration/tls.rs"]
mod tls;
// User namespaces: --userns remap, --uidmap/--gidmap, container root as an
// unprivileged host uid, the shifted rootfs copy, and bad maps.
#[path = "integration/userns.rs"]
mod userns;
// Private state: what containers write, their environment and logs are
// root's alone on the host (checked as uid 65534); modes fixed at start.
#[path = "integration/private.rs"]
mod private;
// Failures leave state as it was: no leaked lease, stop and rm on a full
// disk, idempotent removal, failed starts undone.
#[path = "integration/robust.rs"]
mod robust;
// The registry fixture (rsup_tests::registry): a real docker-registry of
// each kind seeded with skopeo, restarted after a kill, and the throttling
// proxy in front of it.
#[path = "integration/registry_fixture.rs"]
mod registry_fixture;
// Pull and push through real registries: plain, htpasswd, TLS; resumed
// pulls, corrupt blobs, login, push read back by skopeo.
#[path = "integration/registries.rs"]
mod registries;
// The Docker CLI (Debian's docker 20.10, API 1.41) on `rsupd --docker-socket`:
// run, logs, ps, inspect, exec, networks, volumes, ports, restarts, and the
// errors, compared with what Docker documents.
#[path = "integration/docker_cli.rs"]
mod docker_cli;
