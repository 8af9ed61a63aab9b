//! rsup's hostile suite (issue 13, "Host boundary"): tries, as an attacker
//! and as a fuzzing tester would, to make a real `rsupd` reach a host path
//! it does not own, and asserts that it cannot.
//!
//! These tests may delete or change host files if rsup regresses, so they
//! run ONLY inside the throwaway VM (`../shared/v2vm/run-in-v2vm`, whose
//! root filesystem is a tmpfs overlay over a read-only share of the host's),
//! with nothing writable shared but a scratch directory: `scripts/test.sh`
//! builds this executable on the host and runs it there directly. Every test
//! (but the pure check of the fuzz table against the .proto) begins with
//! [`common::in_throwaway_vm`], which returns early with "skipped: ..."
//! anywhere else, so `cargo test --workspace` on the host touches nothing.
//!
//! Run in the VM by hand (after `cargo build --workspace` and
//! `cargo test -p rsup-tests --test hostile --no-run`), from an empty scratch
//! dir: `RSUP_IN_V2VM=1 RSUP_BIN_DIR=<copy of rsupd, rsupctl>
//! run-in-v2vm --rw <scratch> -- <target/debug/deps/hostile-HASH>`.

// The guard, canary trees and their fingerprints, small hostile roots and
// images, containers run to the end over gRPC, commands as host `nobody`.
#[path = "hostile/common.rs"]
mod common;
// (a) Every RPC, every string field, set to hostile values.
#[path = "hostile/fuzz.rs"]
mod fuzz;
// Hostile names and references against every RPC that takes one, with the
// runtime's own containers, volumes and a canary checked after each call.
#[path = "hostile/names.rs"]
mod names;
// (b) Mount targets through symlinks (image, rootfs, a symlink left in a
// volume; also under --userns remap) and (f) /etc files symlinked out.
#[path = "hostile/mounts.rs"]
mod mounts;
// (c) The host's /dev nodes against chmod/chown/mknod from a container.
#[path = "hostile/devices.rs"]
mod devices;
// (d) What a container writes is out of reach of other host users.
#[path = "hostile/privacy.rs"]
mod privacy;
// (e) A decompression bomb and a fork bomb stop at the daemon's limits.
#[path = "hostile/limits.rs"]
mod limits;
// (g) The container init and the exec helper are not dumpable.
#[path = "hostile/dumpable.rs"]
mod dumpable;
// (h) A v1 hierarchy's release_agent out of reach of --cap-add SYS_ADMIN.
#[path = "hostile/cgroups.rs"]
mod cgroups;
// (i) A SYS_PTRACE container makes its init run a system call for it.
#[path = "hostile/ptrace.rs"]
mod ptrace;
// (j) The Docker Engine API socket (issue 18): hostile names, fields,
// bodies, methods and abandoned streams, in raw HTTP/1.1.
#[path = "hostile/docker.rs"]
mod docker;
