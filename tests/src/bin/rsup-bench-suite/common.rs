//! What the benchmarks share: flags, the result rows, the bench daemon (the
//! tests' harness, `rsup_tests::Daemon`, with the bench's options), events
//! and timing helpers.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rsup_client::{Client, proto};
use rsup_tests::{Daemon, DaemonOptions, free_loopback_addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Flags of every subcommand (they may come before or after its name).
#[derive(clap::Args)]
pub struct Common {
    /// Directory holding the rsupd and rsupctl to measure (default: the
    /// directory of this binary, i.e. target/release).
    #[arg(long, global = true, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Directory under which the daemon's own directory (socket, state dir,
    /// log, pid file) is made, as WORK/<subcommand>; it must not exist yet.
    /// Use /tmp/rsup-test-<pid>-bench... so scripts/test.sh can sweep it.
    #[arg(long, global = true, value_name = "WORK")]
    pub work: Option<PathBuf>,
    /// Busybox rootfs for the containers.
    #[arg(long, global = true, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Link prefix of the bench daemon (bridges <prefix>b…, veths
    /// <prefix>v…); links with it are deleted at the end.
    #[arg(long, global = true, default_value = "bx")]
    pub net_prefix: String,
    /// Subnet of the bench daemon's `default` network.
    #[arg(long, global = true, default_value = "10.91.0.0/16")]
    pub default_subnet: String,
    /// cgroup subtree of the bench daemon (under its own cgroup), apart from
    /// any other rsupd's.
    #[arg(long, global = true, default_value = "bxbench")]
    pub cgroup_subtree: String,
    /// rsupd's --log-level.
    #[arg(long, global = true, default_value = "info")]
    pub rsupd_log: String,
    /// Append stats.py-format rows (JSON lines) to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the per-run values of each measure to DIR/<id>.txt.
    #[arg(long, global = true, value_name = "DIR")]
    pub values: Option<PathBuf>,
    /// Free text for the rows' `notes` field (e.g. how busy the host was).
    #[arg(long, global = true, default_value = "")]
    pub notes: String,
}

/// The resolved common flags.
pub struct Ctx {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
    pub rootfs: String,
    pub net_prefix: String,
    pub default_subnet: String,
    pub cgroup_subtree: String,
    pub rsupd_log: String,
    pub rec: Recorder,
}

impl Ctx {
    pub fn new(c: &Common) -> anyhow::Result<Ctx> {
        let bin_dir = match &c.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this binary has no directory")?
                .to_path_buf(),
        };
        for b in ["rsupd", "rsupctl"] {
            if !bin_dir.join(b).is_file() {
                bail!("{}/{b} not found (--bin-dir)", bin_dir.display());
            }
        }
        let work = std::path::absolute(c.work.as_ref().context("--work is required")?)?;
        let rootfs = std::path::absolute(c.rootfs.as_ref().context("--rootfs is required")?)?;
        if !rootfs.join("bin/busybox").is_file() {
            bail!(
                "{}/bin/busybox not found: not a busybox rootfs",
                rootfs.display()
            );
        }
        Ok(Ctx {
            bin_dir,
            work,
            rootfs: rootfs
                .to_str()
                .context("--rootfs is not valid UTF-8")?
                .to_owned(),
            net_prefix: c.net_prefix.clone(),
            default_subnet: c.default_subnet.clone(),
            cgroup_subtree: c.cgroup_subtree.clone(),
            rsupd_log: c.rsupd_log.clone(),
            rec: Recorder {
                json: c.json.clone(),
                values: c.values.clone(),
                notes: c.notes.clone(),
            },
        })
    }

    pub fn rsupctl(&self) -> PathBuf {
        self.bin_dir.join("rsupctl")
    }
}

// ------------------------------------------------------------------ rows

/// Writes result rows as they are measured (so an error later keeps them).
pub struct Recorder {
    json: Option<PathBuf>,
    values: Option<PathBuf>,
    notes: String,
}

/// One figure: its id and meaning, and how it was obtained.
pub struct Row<'a> {
    pub id: &'a str,
    pub what: &'a str,
    pub cmd: &'a str,
    pub unit: &'a str,
    pub notes: &'a str,
}

impl Recorder {
    /// A measure with many samples: printed, its values written to
    /// `<values>/<id>.txt`, a row appended.
    pub fn values(&self, row: Row<'_>, samples: &[f64]) -> anyhow::Result<Summary> {
        let s = Summary::of(samples);
        println!(
            "{:<34} n={:<4} median {:>9.3}  p95 {:>9.3}  p99 {:>9.3}  min {:>9.3}  max {:>9.3} {}",
            row.id, s.n, s.median, s.p95, s.p99, s.min, s.max, row.unit
        );
        if let Some(dir) = &self.values {
            fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
            let path = dir.join(format!("{}.txt", row.id));
            let text: String = samples.iter().map(|v| format!("{v:.6}\n")).collect();
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        self.append(&row, &s)?;
        Ok(s)
    }

    /// A single figure (n = 1).
    pub fn single(&self, row: Row<'_>, value: f64) -> anyhow::Result<()> {
        println!("{:<34} {:>12.3} {}", row.id, value, row.unit);
        self.append(&row, &Summary::of(&[value]))
    }

    fn append(&self, row: &Row<'_>, s: &Summary) -> anyhow::Result<()> {
        if !row.notes.is_empty() {
            println!("{:<34}   ({})", "", row.notes);
        }
        let Some(path) = &self.json else {
            return Ok(());
        };
        let notes = match (self.notes.is_empty(), row.notes.is_empty()) {
            (true, _) => row.notes.to_owned(),
            (false, true) => self.notes.clone(),
            (false, false) => format!("{}; {}", row.notes, self.notes),
        };
        let value = serde_json::json!({
            "id": row.id,
            "what": row.what,
            "cmd": row.cmd,
            "unit": row.unit,
            "date": utc_minute(SystemTime::now()),
            "notes": notes,
            "ok": s.n > 0,
            "n": s.n,
            "median": finite(s.median),
            "min": finite(s.min),
            "max": finite(s.max),
            "mean": finite(s.mean),
            "stdev": finite(s.stdev),
            "p95": finite(s.p95),
            "p99": finite(s.p99),
        });
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{value}").with_context(|| format!("writing {}", path.display()))
    }
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        v.into()
    } else {
        serde_json::Value::Null
    }
}

pub use rsup_tests::benchstats::{Summary, utc_minute};

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nanoseconds since the epoch, now (the clock rsupd stamps events with).
pub fn now_ns() -> i128 {
    ts_of(SystemTime::now())
}

fn ts_of(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Nanoseconds since the epoch of an event's time (0 when unset).
pub fn event_ns(e: &proto::Event) -> i128 {
    e.time.as_ref().map_or(0, |t| {
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
    })
}

// ------------------------------------------------------------------ daemon

/// How long a fresh rsupd may take to report SERVING.
const SERVING_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the health check is polled while waiting for SERVING (the
/// re-adoption figures are read at this resolution).
const SERVING_POLL: Duration = Duration::from_millis(5);
/// How long rsupd may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Concurrent requests when removing every container.
pub const REMOVE_CONCURRENCY: usize = 8;

/// The bench's own rsupd (the tests' harness, with the bench's binaries,
/// link prefix, subnet and cgroup subtree and a free metrics port) on
/// `<work>/<name>`, which must not exist; returns once it is SERVING.
/// `Daemon::shutdown` removes everything it started.
pub async fn start_daemon(ctx: &Ctx, name: &str) -> anyhow::Result<(Daemon, Client)> {
    let daemon = Daemon::try_start(DaemonOptions {
        bin_dir: Some(ctx.bin_dir.clone()),
        dir: Some(ctx.work.join(name)),
        net_prefix: Some(ctx.net_prefix.clone()),
        default_subnet: Some(ctx.default_subnet.clone()),
        cgroup_subtree: Some(ctx.cgroup_subtree.clone()),
        metrics_addr: Some(free_loopback_addr()),
        log_filter: Some(ctx.rsupd_log.clone()),
        serving_timeout: SERVING_TIMEOUT,
        serving_poll: SERVING_POLL,
        stop_grace: STOP_GRACE,
        ..DaemonOptions::default()
    })
    .await?;
    let client = daemon.client().clone();
    Ok((daemon, client))
}

// ------------------------------------------------------------------ containers

/// A container spec on the bench rootfs.
pub fn spec(ctx: &Ctx, name: &str, command: &[&str]) -> proto::ContainerSpec {
    proto::ContainerSpec {
        name: name.to_owned(),
        rootfs: ctx.rootfs.clone(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// `--restart always --restart-delay 0`.
pub fn restart_always_now() -> proto::RestartPolicy {
    proto::RestartPolicy {
        policy: "always".into(),
        delay_ms: Some(0),
        ..Default::default()
    }
}

/// Events with the instant the bench received them.
pub type Events = mpsc::UnboundedReceiver<(proto::Event, Instant)>;

/// Forwards the daemon's events (of `types`; all when empty) to a channel,
/// each with the instant it was received.
pub async fn subscribe(client: &Client, types: &[&str]) -> anyhow::Result<Events> {
    let mut stream = client
        .events(proto::EventsRequest {
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .context("subscribing to events")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(e)) = stream.message().await {
            if tx.send((e, Instant::now())).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The next event of `subject` with type `kind` (others are dropped), or an
/// error after `timeout`.
pub async fn next_event(
    rx: &mut Events,
    subject: &str,
    kind: &str,
    timeout: Duration,
) -> anyhow::Result<(proto::Event, Instant)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => bail!("no {kind} event of {subject} within {timeout:?}"),
            Ok(None) => bail!("the event stream ended"),
            Ok(Some((e, at))) if e.subject == subject && e.r#type == kind => return Ok((e, at)),
            Ok(Some(_)) => {}
        }
    }
}

/// Drops the events already received.
pub fn drain(rx: &mut Events) {
    while rx.try_recv().is_ok() {}
}

/// Polls until the container is running; returns it.
pub async fn wait_running(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<proto::Container> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = client.inspect(name).await?;
        if c.state == proto::ContainerState::Running as i32 && c.pid > 0 {
            return Ok(c);
        }
        if Instant::now() >= deadline {
            bail!("{name} not running after {timeout:?} (state {})", c.state);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------------------ processes

/// Wall times (ms) of `runs` runs of the command `make()` builds (after
/// `warmup` untimed ones), spawn to exit, output discarded; a failed run is
/// an error.
pub fn time_command(
    make: impl Fn() -> Command,
    warmup: usize,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let mut cmd = make();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let output = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "{cmd:?}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        if i >= warmup {
            out.push(ms(elapsed));
        }
    }
    Ok(out)
}

/// `GET path` over a fresh loopback TCP connection (HTTP/1.1, `Connection:
/// close`); returns the status code and the body length, after the whole
/// response has been read.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, usize, String)> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256 * 1024);
    s.read_to_end(&mut buf).await?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP header")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = String::from_utf8_lossy(&buf[head_end + 4..]).into_owned();
    Ok((code, buf.len() - head_end - 4, body))
}
