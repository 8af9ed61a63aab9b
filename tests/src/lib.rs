//! Harness for rsup's integration tests and benchmarks: a real `rsupd` on a
//! temporary socket and state dir, driven through `rsupctl` and the client
//! library, and what the tests look at around it (`/proc`, mounts, cgroups,
//! host links, HTTP).
//!
//! One module per concern; everything public is re-exported here, so a test
//! writes `use rsup_tests::{Daemon, eventually, ...}` whatever module an
//! item lives in:
//! - [`daemon`]: [`Daemon`] (start, restart, stop, crash, paths) and its
//!   [`DaemonOptions`]; [`teardown`]: what dropping it does, and
//!   [`Daemon::shutdown`];
//! - [`cli`]: `rsupctl` on a daemon; [`api`]: the gRPC API through the
//!   client library;
//! - [`tempdir`]: temporary directories and unique names; [`rootfs`]: the
//!   busybox rootfs;
//! - [`procfs`]: processes and mounts from `/proc`; [`cgroupfs`]: cgroups;
//!   [`netlinks`]: host links; [`process`]: child processes; [`wait`]:
//!   bounded polling and blocking work;
//! - [`http`]: HTTP over loopback; [`prometheus`]: a Prometheus server;
//!   [`registry`]: a real image registry (plain, htpasswd, bearer tokens or
//!   TLS) seeded with skopeo, and a throttling TCP proxy to put in front of
//!   it; [`tokenserver`]: the token server of a bearer-token registry;
//! - [`benchstats`]: the benchmarks' statistics.
//!
//! Invariants the harness keeps are stated in each module; the main ones:
//! every directory it creates is `/tmp/rsup-test-<pid>-<n>` (so that
//! `scripts/test.sh` can sweep what a killed run left behind), no wait is a
//! fixed sleep, and teardown never panics.

pub mod api;
pub mod benchstats;
pub mod cgroupfs;
pub mod cli;
pub mod daemon;
pub mod docker;
pub mod http;
pub mod netlinks;
pub mod process;
pub mod procfs;
pub mod prometheus;
pub mod registry;
pub mod rootfs;
pub mod teardown;
pub mod tempdir;
pub mod tokenserver;
pub mod wait;

pub use api::*;
pub use cgroupfs::*;
pub use cli::*;
pub use daemon::*;
pub use docker::*;
pub use http::*;
pub use netlinks::*;
pub use process::*;
pub use procfs::*;
pub use prometheus::*;
pub use registry::*;
pub use rootfs::*;
pub use teardown::*;
pub use tempdir::*;
pub use tokenserver::*;
pub use wait::*;
