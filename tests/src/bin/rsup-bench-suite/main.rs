//! rsup-bench-suite: rsup's operational benchmarks, beside the peers' figures.
//!
//! A benchmark, not a test: it prints figures and never judges them (the one
//! stated goal, a `/metrics` scrape under 50 ms at 500 containers, is
//! reported as "holds" or "does not hold", never asserted). Each subcommand
//! starts its own `rsupd` (release binaries from `--bin-dir`) on a socket and
//! state dir under `--work`, with its own link prefix (`--net-prefix`, `bx`),
//! default subnet, cgroup subtree and a free loopback metrics port, so that it
//! cannot touch another daemon's links, addresses or cgroups; and removes
//! everything it started before it returns (containers, networks, the daemon,
//! links with its prefix), also after an error.
//!
//! * `fleet`: N running `sleep 100000` containers (`-m 64m`), started through
//!   the client library with bounded concurrency, for each N of `--counts`
//!   (100 and 500): `/metrics` scrape time, one-shot Stats RPC latency,
//!   `rsupctl ps` and `rsupctl stats --no-stream`, rsupd's and the per-
//!   container shim and init RSS/PSS; then SIGKILL of rsupd and the time until
//!   a new one is SERVING and lists all N running again (re-adoption).
//! * `net`: a user network with `db` (`--restart always --restart-delay 0`, a
//!   `nc -l` loop) and `app`: DNS query latency from app's netns, busybox
//!   nslookup, `rsupctl exec nslookup`; crash cycles as the peers' 04 script
//!   runs them (SIGKILL of db's pid 1 from the host while a prober in app's
//!   netns asks for `db` every 5 ms); and the time from `kill db` until app
//!   connects to `db:8080` by name again.
//! * `restart`: restart latency of a `--restart always --restart-delay 0`
//!   container over `--crashes` SIGKILLs (kill call -> `start` event received,
//!   and rsupd's own die -> start gap); the restart schedule of a container
//!   that exits 1 at once, as the peers' 03 script measures podman's.
//!
//! Rows go to `--json FILE` (JSON lines in the format of
//! `shared/peers/stats.py`, plus `p95` and `p99`), the per-run values to
//! `--values DIR/<id>.txt`. `scripts/bench.sh` runs all of it with the
//! matching peer scripts; `docs/benchmarks.md` says what each figure means.

mod common;
mod fleet;
mod net;
mod restart;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use common::Common;

/// rsup's resource, network, supervision and crash-safety benchmarks.
#[derive(Parser)]
#[command(name = "rsup-bench-suite")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// /metrics scrape, Stats RPC, memory, re-adoption with N containers.
    Fleet(fleet::Args),
    /// DNS latency and reachability by name across crashes.
    Net(net::Args),
    /// Restart latency and restart schedule.
    Restart(restart::Args),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Fleet(args) => fleet::run(&cli.common, args).await,
        Bench::Net(args) => net::run(&cli.common, args).await,
        Bench::Restart(args) => restart::run(&cli.common, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rsup-bench-suite: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
