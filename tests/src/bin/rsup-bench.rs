//! rsup-bench: cold-start latency of a `/bin/true` container on a running rsupd.
//!
//! A benchmark, not a test: it asserts nothing about the figures. Runs are
//! sequential, one container at a time, so each figure is one container's
//! latency on an otherwise idle daemon.
//!
//! * `rsup-run-true` (always): wall time of `create` + `start` + `wait` of
//!   `/bin/true` through the client library, over one gRPC channel opened
//!   before the first run. The `remove` that follows each run is not timed.
//! * `rsup-run-true-bridge` (always): the same on the daemon's default
//!   network (persistent netns, lease, veth pair, address and route), and
//!   how much more that costs than `--network none` (goal: at most 10 ms).
//! * `rsup-cli-run-true` (with `--rsupctl PATH`): wall time of the whole
//!   `rsupctl --socket S run --rm --rootfs R /bin/true` process, from spawn to
//!   exit, i.e. what a shell user sees (process start, connect, create, attach
//!   logs, start, wait, auto-remove).
//!
//! Prints n, median, p95 (nearest rank), min, mean, max in ms per measure.
//! `--json FILE` appends one row per measure in the format of
//! `shared/peers/stats.py` (plus a `p95` field), so `shared/peers/report.py`
//! puts them beside the peers' `crun-run-true`; `--values DIR` writes the
//! per-run times (ms, one a line) to `DIR/<id>.txt`.
//!
//! ```text
//! rsup-bench --socket /tmp/rsup-test-bench/rsupd.sock --rootfs /tmp/rsup-test-bench/rootfs \
//!     --runs 200 --warmup 10 --rsupctl target/release/rsupctl --json results/10-rsup.jsonl
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

use clap::Parser;
use rsup_client::{Client, proto};
use rsup_tests::benchstats::{Summary, utc_minute};

/// Deadline of one run (create+start+wait, or one rsupctl process).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Measure create+start+wait of /bin/true on a running rsupd.
#[derive(Parser)]
#[command(name = "rsup-bench")]
struct Args {
    /// Unix socket of the rsupd to measure.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Busybox rootfs for the containers (absolute or relative to here).
    #[arg(long, value_name = "DIR")]
    rootfs: PathBuf,
    /// Timed runs per measure.
    #[arg(long, default_value_t = 200, value_name = "N")]
    runs: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 10, value_name = "W")]
    warmup: usize,
    /// Also measure `rsupctl run --rm` end to end with this binary.
    #[arg(long, value_name = "PATH")]
    rsupctl: Option<PathBuf>,
    /// Append stats.py-format rows (JSON lines) to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the per-run times (ms) to DIR/<id>.txt.
    #[arg(long, value_name = "DIR")]
    values: Option<PathBuf>,
    /// Free text for the rows' `notes` field.
    #[arg(long, default_value = "")]
    notes: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rsup-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let rootfs = std::path::absolute(&args.rootfs)
        .with_context(|| format!("--rootfs {}", args.rootfs.display()))?;
    if !rootfs.join("bin/true").exists() {
        bail!(
            "{}/bin/true not found: not a busybox rootfs",
            rootfs.display()
        );
    }
    let rootfs = rootfs
        .to_str()
        .context("--rootfs is not valid UTF-8")?
        .to_owned();
    let client = Client::connect(&args.socket).await?;

    let mut measures = Vec::new();

    let api = Measure {
        id: "rsup-run-true",
        what: "rsup cold start via the gRPC client library: create+start+wait of /bin/true \
               (new pid/net/mnt/ipc/uts ns, overlay on a busybox rootfs, cgroup); rm not timed",
        cmd: format!(
            "rsup-bench: Client::create+start+wait {{rootfs: {rootfs}, command: [/bin/true]}}"
        ),
        samples: measure_api(&client, &rootfs, &["none"], args.warmup, args.runs).await?,
    };
    api.print();
    let none_median = api.median();
    measures.push(api);

    // Needs the daemon's default network: where it has none, the figure is
    // left out and the other measures still run.
    match measure_api(&client, &rootfs, &[], args.warmup, args.runs).await {
        Ok(samples) => {
            let bridge = Measure {
                id: "rsup-run-true-bridge",
                what: "the same on rsupd's default network (a bridge with DNS): also a persistent \
                       netns, a lease, a veth pair and the address and route inside; rm not timed",
                cmd: format!(
                    "rsup-bench: Client::create+start+wait {{rootfs: {rootfs}, command: [/bin/true], \
                     networks: [] (the default)}}"
                ),
                samples,
            };
            bridge.print();
            let extra = bridge.median() - none_median;
            println!(
                "{:<36} +{extra:.1} ms over --network none (goal: <= +10 ms: {})",
                "",
                if extra <= 10.0 {
                    "HOLDS"
                } else {
                    "DOES NOT HOLD"
                }
            );
            measures.push(bridge);
        }
        Err(e) => eprintln!("rsup-run-true-bridge left out: {e:#}"),
    }

    if let Some(rsupctl) = &args.rsupctl {
        let cli = Measure {
            id: "rsup-cli-run-true",
            what: "rsupctl run --rm of /bin/true, whole process (spawn to exit): connect, create, \
                   attach logs, start, wait, auto-remove",
            cmd: format!(
                "{} --socket {} run --rm --rootfs {rootfs} /bin/true",
                rsupctl.display(),
                args.socket.display()
            ),
            samples: measure_cli(rsupctl, &args.socket, &rootfs, args.warmup, args.runs).await?,
        };
        cli.print();
        measures.push(cli);
    }

    if let Some(dir) = &args.values {
        fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        for m in &measures {
            let path = dir.join(format!("{}.txt", m.id));
            let text: String = m.samples.iter().map(|v| format!("{v:.6}\n")).collect();
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.json {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        for m in &measures {
            writeln!(file, "{}", m.row(&args.notes))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Per-run wall times (ms) of create+start+wait through `client`.
async fn measure_api(
    client: &Client,
    rootfs: &str,
    networks: &[&str],
    warmup: usize,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let name = format!("bench-{}-{i}", std::process::id());
        let spec = proto::ContainerSpec {
            name: name.clone(),
            rootfs: rootfs.to_owned(),
            command: vec!["/bin/true".to_owned()],
            // ["none"]: like the peers' bundles, new namespaces with only
            // `lo`; []: the daemon's default network.
            networks: networks.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(RUN_TIMEOUT, async {
            client.create(spec).await?;
            client.start(&name).await?;
            client.wait(&name).await
        })
        .await;
        let elapsed = started.elapsed();
        // Untimed, and also after a failure: leave nothing behind.
        let removed = client.remove(&name, true).await;
        let status = match outcome {
            Ok(result) => result.with_context(|| format!("run {i} ({name})"))?,
            Err(_) => bail!("run {i} ({name}) took more than {RUN_TIMEOUT:?}"),
        };
        if status.exit_code != 0 || status.signal != 0 || !status.error.is_empty() {
            bail!("run {i} ({name}): /bin/true ended with {status:?}");
        }
        removed.with_context(|| format!("removing {name}"))?;
        if i >= warmup {
            samples.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    Ok(samples)
}

/// Per-run wall times (ms) of `rsupctl run --rm` processes.
async fn measure_cli(
    rsupctl: &Path,
    socket: &Path,
    rootfs: &str,
    warmup: usize,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let mut cmd = tokio::process::Command::new(rsupctl);
        cmd.arg("--socket")
            .arg(socket)
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--rootfs",
                rootfs,
                "/bin/true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", rsupctl.display()))?;
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("rsupctl run {i} took more than {RUN_TIMEOUT:?}"))?
            .with_context(|| format!("waiting for rsupctl run {i}"))?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "rsupctl run {i}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        if i >= warmup {
            samples.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    Ok(samples)
}

/// One measured figure and its samples (ms).
struct Measure {
    id: &'static str,
    what: &'static str,
    cmd: String,
    samples: Vec<f64>,
}

impl Measure {
    fn median(&self) -> f64 {
        Summary::of(&self.samples).median
    }

    fn print(&self) {
        let s = Summary::of(&self.samples);
        println!(
            "{:<20} n={:<4} median {:>8.3}  p95 {:>8.3}  min {:>8.3}  mean {:>8.3}  max {:>8.3} ms",
            self.id, s.n, s.median, s.p95, s.min, s.mean, s.max
        );
    }

    /// A row as `shared/peers/stats.py` writes it, plus `p95`.
    fn row(&self, notes: &str) -> serde_json::Value {
        let s = Summary::of(&self.samples);
        serde_json::json!({
            "id": self.id,
            "what": self.what,
            "cmd": self.cmd,
            "unit": "ms",
            "date": utc_minute(SystemTime::now()),
            "notes": notes,
            "ok": true,
            "n": s.n,
            "median": s.median,
            "min": s.min,
            "max": s.max,
            "mean": s.mean,
            "stdev": s.stdev,
            "p95": s.p95,
        })
    }
}
