//! What the benchmarks share: flags, the result rows, the bench daemon and
//! its teardown, process memory, events, concurrency and timing helpers.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rsup_client::{Client, proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a fresh rsupd may take to report SERVING.
pub const SERVING_TIMEOUT: Duration = Duration::from_secs(120);
/// How long rsupd may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Concurrent requests when removing containers at teardown.
const TEARDOWN_CONCURRENCY: usize = 8;

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

pub use crate::benchstats::{Summary, utc_minute};

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

/// The bench's own rsupd: a child process on `<work>/<name>`.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub metrics: SocketAddr,
    net_prefix: String,
    cgroup_subtree: String,
    rsupd: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
}

impl Daemon {
    /// Makes `<work>/<name>` (which must not exist), spawns rsupd on it and
    /// waits until it is SERVING.
    pub async fn start(ctx: &Ctx, name: &str) -> anyhow::Result<(Daemon, Client)> {
        let dir = ctx.work.join(name);
        fs::create_dir_all(&ctx.work).with_context(|| format!("mkdir {}", ctx.work.display()))?;
        fs::create_dir(&dir)
            .with_context(|| format!("mkdir {} (must not exist)", dir.display()))?;
        let metrics = free_loopback_port()?;
        let socket = dir.join("rsupd.sock");
        let state_dir = dir.join("state");
        let args: Vec<OsString> = vec![
            "--socket".into(),
            socket.clone().into(),
            "--state-dir".into(),
            state_dir.clone().into(),
            "--metrics-addr".into(),
            metrics.to_string().into(),
            "--net-prefix".into(),
            ctx.net_prefix.clone().into(),
            "--default-subnet".into(),
            ctx.default_subnet.clone().into(),
            "--cgroup-subtree".into(),
            ctx.cgroup_subtree.clone().into(),
            "--log-level".into(),
            ctx.rsupd_log.clone().into(),
        ];
        let mut daemon = Daemon {
            log: dir.join("rsupd.log"),
            dir,
            socket,
            state_dir,
            metrics,
            net_prefix: ctx.net_prefix.clone(),
            cgroup_subtree: ctx.cgroup_subtree.clone(),
            rsupd: ctx.bin_dir.join("rsupd"),
            args,
            child: None,
        };
        daemon.launch()?;
        let client = match daemon.serving().await {
            Ok(c) => c,
            Err(e) => {
                daemon.terminate();
                daemon.delete_links();
                return Err(e);
            }
        };
        Ok((daemon, client))
    }

    /// Spawns rsupd (again) with the same flags; its pid goes to
    /// `<dir>/rsupd.pid` for scripts/bench.sh's fallback cleanup.
    pub fn launch(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("rsupd is already running");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.rsupd);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for var in [
            "RSUP_SOCKET",
            "RSUP_STATE_DIR",
            "RSUP_LOG",
            "RSUP_METRICS_ADDR",
            "RSUP_NET_PREFIX",
            "RSUP_DEFAULT_SUBNET",
            "RSUP_CGROUP_SUBTREE",
            "RSUP_SOCKET_GROUP",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.rsupd.display()))?;
        fs::write(self.dir.join("rsupd.pid"), format!("{}\n", child.id()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Host pid of the running rsupd (0 if none).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Polls grpc.health.v1 (service "") every 5 ms until SERVING.
    pub async fn serving(&mut self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + SERVING_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "rsupd exited ({status}) before serving; see {}",
                    self.log.display()
                );
            }
            let last = match probe(&self.socket).await {
                Ok(Some(client)) => return Ok(client),
                Ok(None) => "not SERVING yet".to_owned(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!(
                    "rsupd not SERVING after {SERVING_TIMEOUT:?} (last: {last}); see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL to rsupd (a crash), reaped at once. Containers stay.
    pub fn kill_hard(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("rsupd is not running")?;
        // Our own, not yet reaped child: the pid is still ours.
        child.kill().context("SIGKILL to rsupd")?;
        child.wait().context("reaping rsupd")?;
        Ok(())
    }

    /// SIGTERM, up to STOP_GRACE to exit, then SIGKILL.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while let Ok(None) = child.try_wait() {
                if Instant::now() >= deadline {
                    eprintln!("warning: rsupd ignored SIGTERM for {STOP_GRACE:?}; SIGKILL");
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.wait();
        let _ = fs::remove_file(self.dir.join("rsupd.pid"));
    }

    /// Removes every container and network, stops rsupd, deletes the links
    /// with the bench prefix. Starts rsupd again first if it is not running
    /// (containers outlive it). Reports problems and goes on.
    pub async fn teardown(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.child.is_none()
            && let Err(e) = self.launch()
        {
            problems.push(format!("restarting rsupd for the teardown: {e:#}"));
        }
        match self.serving().await {
            Ok(client) => {
                if let Err(e) = remove_all(&client).await {
                    problems.push(format!("removing containers: {e:#}"));
                }
                let mut nets = networks_stub(&client);
                if let Ok(list) = nets.list(proto::ListNetworksRequest {}).await {
                    for n in list.into_inner().networks {
                        if n.name != "default"
                            && let Err(e) = nets
                                .remove(proto::RemoveNetworkRequest {
                                    name: n.name.clone(),
                                })
                                .await
                        {
                            problems.push(format!("removing network {}: {}", n.name, e.message()));
                        }
                    }
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        self.terminate();
        self.delete_links();
        remove_cgroup_subtree(&self.cgroup_subtree);
        if problems.is_empty() {
            // Nothing runs or is mounted there any more: drop the directory
            // (kept after a problem, for its rsupd.log).
            let mounted = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|m| Path::new(m).starts_with(&self.dir));
            if mounted {
                eprintln!(
                    "warning: mounts remain under {}; leaving it",
                    self.dir.display()
                );
            } else if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("warning: removing {}: {e}", self.dir.display());
            }
            Ok(())
        } else {
            bail!("teardown: {}", problems.join("; "))
        }
    }

    /// `ip link del` of every link named `<prefix>b…` or `<prefix>v…`.
    fn delete_links(&self) {
        let Ok(entries) = fs::read_dir("/sys/class/net") else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&self.net_prefix) else {
                continue;
            };
            if !(rest.starts_with('b') || rest.starts_with('v')) {
                continue;
            }
            let status = Command::new("ip")
                .args(["link", "del", &name])
                .stderr(Stdio::null())
                .status();
            if !matches!(status, Ok(s) if s.success())
                && Path::new("/sys/class/net").join(&name).exists()
            {
                eprintln!("warning: cannot delete link {name}");
            }
        }
    }

    /// `<state>/containers/<id>`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    /// `shim_pid` and `init_pid` from the container's state.json.
    pub fn recorded_pids(&self, id: &str) -> Option<(i32, i32)> {
        let text = fs::read_to_string(self.container_dir(id).join("state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let pid = |k: &str| v[k].as_i64().and_then(|p| i32::try_from(p).ok());
        Some((pid("shim_pid")?, pid("init_pid")?))
    }

    /// Whether `pid` is one of this daemon's shims or inits (its command line
    /// names our state dir), so that a signal never hits a stranger.
    pub fn owns(&self, pid: i32) -> bool {
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let text = String::from_utf8_lossy(&raw);
        let dir = self.state_dir.to_string_lossy();
        text.split('\0').any(|arg| arg.starts_with(dir.as_ref()))
    }
}

/// Removes the (empty) `<subtree>` cgroup directories rsupd made under its
/// own cgroup in every hierarchy: directories of that name at most 5 levels
/// below /sys/fs/cgroup. rmdir refuses a cgroup that has children or tasks,
/// so nothing in use is touched.
fn remove_cgroup_subtree(subtree: &str) {
    fn walk(dir: &Path, depth: usize, subtree: &str) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if e.file_name() == subtree {
                let _ = fs::remove_dir(&path);
            } else if depth < 5 {
                walk(&path, depth + 1, subtree);
            }
        }
    }
    walk(Path::new("/sys/fs/cgroup"), 1, subtree);
}

/// A Networks stub on the client's channel (the proto's own, so that this
/// does not depend on the client library's convenience methods).
pub fn networks_stub(
    client: &Client,
) -> proto::networks_client::NetworksClient<tonic::transport::Channel> {
    proto::networks_client::NetworksClient::new(client.channel())
}

async fn probe(socket: &Path) -> Result<Option<Client>, String> {
    if !socket.exists() {
        return Err("no socket".into());
    }
    let step = Duration::from_secs(2);
    let client = tokio::time::timeout(step, Client::connect(socket))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let mut health = HealthClient::new(client.channel());
    let reply = tokio::time::timeout(
        step,
        health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map_err(|_| "health check timed out".to_owned())?
    .map_err(|e| format!("health check: {}", e.message()))?;
    Ok((reply.into_inner().status == ServingStatus::Serving as i32).then_some(client))
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

// ------------------------------------------------------------------ containers

/// Runs `job(i)` for i in 0..n with at most `concurrency` at once; returns
/// the results in index order.
pub async fn concurrently<T, F, Fut>(n: usize, concurrency: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1).min(n.max(1)) {
        let job = job.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push((i, job(i).await));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(part) => all.extend(part),
            Err(e) => eprintln!("warning: worker task failed: {e}"),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, v)| v).collect()
}

/// Force-removes every container of the daemon, 8 at a time.
pub async fn remove_all(client: &Client) -> anyhow::Result<()> {
    let names: Vec<String> = client
        .list(true)
        .await
        .context("listing containers")?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let names = Arc::new(names);
    let c = client.clone();
    let list = names.clone();
    let results = concurrently(names.len(), TEARDOWN_CONCURRENCY, move |i| {
        let c = c.clone();
        let id = list[i].clone();
        async move { c.remove(&id, true).await.map_err(|e| format!("{id}: {e}")) }
    })
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{} removals failed: {}", failed.len(), failed.join("; "))
    }
}

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

/// A field of `/proc/<pid>/status` in kB (e.g. "VmRSS").
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&text, field)
}

/// `Pss` of `/proc/<pid>/smaps_rollup` in kB.
pub fn pss_kb(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kb_field(&text, "Pss")
}

fn kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_fields() {
        let t = "Name:\tx\nVmRSS:\t    4996 kB\nRss:  1 kB\n";
        assert_eq!(kb_field(t, "VmRSS"), Some(4996));
        assert_eq!(kb_field("Pss:                 597 kB\n", "Pss"), Some(597));
        assert_eq!(kb_field(t, "Pss"), None);
    }
}
