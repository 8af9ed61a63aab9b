//! One harness for a real `rsupd`, shared by the integration tests and the
//! benchmarks: [`Daemon`] starts it on its own socket and state dir under a
//! directory of its own, waits until it is SERVING, restarts, stops or
//! crashes it on request, and tears everything down when dropped (see
//! `teardown.rs`).
//!
//! Invariants the harness keeps:
//! - every daemon gets its own link prefix, default subnet and cgroup
//!   subtree (by default derived from its state dir, stable across
//!   restarts; the bench names its own) and no fixed TCP port, so that many
//!   daemons run at once without touching each other;
//! - [`Daemon::start`] returns only once `grpc.health.v1.Health` reports
//!   SERVING for service `""` (polled, bounded), never after a fixed sleep;
//! - `rsupd` is only ever signalled through its own, not yet reaped child
//!   handle, so its pid cannot have been reused;
//! - dropping a [`Daemon`], also while a test panics, force-removes every
//!   container, stops `rsupd`, kills (by pid, after checking its command line)
//!   any shim or init still running, deletes its links and cgroups, unmounts
//!   anything left under its directory and deletes it. Teardown never
//!   panics: it reports and goes on.
//!
//! The tests take the binaries from the directory two levels above the test
//! executable (`target/debug`), or from `RSUP_BIN_DIR` (build them first
//! with `cargo build --workspace`); the bench names its release directory.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rsup_client::Client;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cgroupfs::{cgroup_dirs_of, cgroup_subtree};
use crate::http::free_loopback_addr;
use crate::netlinks::net_identity;
use crate::procfs::{ProcId, cmdline, mentions_path};
use crate::tempdir::TempDir;
use crate::wait::POLL_INTERVAL;

/// How long `rsupd` may take to report SERVING.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `rsupctl` invocation may take before it is killed.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `rsupd` may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Directory holding `rsupd` and `rsupctl`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RSUP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/debug/deps/<test>-<hash> -> target/debug
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// How to start a [`Daemon`]: what the tests leave at its default and the
/// benchmarks set (their release binaries, their own directory, link
/// prefix, subnet and cgroup subtree, a metrics port, quicker polling).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where `rsupd` and `rsupctl` are (default: [`bin_dir`]).
    pub bin_dir: Option<PathBuf>,
    /// The daemon's directory (socket, state dir, log), which must not exist
    /// yet (default: a fresh `/tmp/rsup-test-<pid>-<n>`). Removed on drop
    /// either way.
    pub dir: Option<PathBuf>,
    /// Extra `rsupd` arguments, passed again on every restart; they come
    /// after what the harness sets, so a flag beats the harness' choice.
    pub args: Vec<OsString>,
    /// Link prefix (default: from a hash of the state dir, see
    /// [`net_identity`]).
    pub net_prefix: Option<String>,
    /// Subnet of the `default` network (default: as the link prefix).
    pub default_subnet: Option<String>,
    /// cgroup subtree (default: [`cgroup_subtree`] of the state dir).
    pub cgroup_subtree: Option<String>,
    /// Where `/metrics` is served (default: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// rsupd's log filter (default: `RSUP_LOG` if set, else debug for rsup's
    /// own crates).
    pub log_filter: Option<String>,
    /// How long rsupd may take to report SERVING.
    pub serving_timeout: Duration,
    /// How often the health check is polled while waiting for SERVING.
    pub serving_poll: Duration,
    /// How long rsupd may take to exit after SIGTERM before it gets SIGKILL.
    pub stop_grace: Duration,
    /// A command rsupd runs under, which must exec its arguments in the end
    /// (so that the child's pid is rsupd's); empty: none. See
    /// [`Daemon::start_in_mount_namespace`].
    pub wrapper: Vec<OsString>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            bin_dir: None,
            dir: None,
            args: Vec::new(),
            net_prefix: None,
            default_subnet: None,
            cgroup_subtree: None,
            metrics_addr: None,
            log_filter: None,
            serving_timeout: HEALTH_TIMEOUT,
            serving_poll: POLL_INTERVAL,
            stop_grace: STOP_GRACE,
            wrapper: Vec::new(),
        }
    }
}

impl DaemonOptions {
    /// The defaults with extra `rsupd` arguments.
    pub fn with_args<S: AsRef<OsStr>>(args: &[S]) -> DaemonOptions {
        DaemonOptions {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            ..DaemonOptions::default()
        }
    }
}

/// [`DaemonOptions`] with every default filled in.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) bin_dir: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) net_prefix: String,
    pub(crate) default_subnet: String,
    pub(crate) cgroup_subtree: String,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) log_filter: Option<String>,
    pub(crate) serving_timeout: Duration,
    pub(crate) serving_poll: Duration,
    pub(crate) stop_grace: Duration,
    pub(crate) wrapper: Vec<OsString>,
}

/// The `rsupd` child process; SIGTERMed (then SIGKILLed) and reaped on drop.
#[derive(Debug)]
pub(crate) struct RsupdProcess {
    pub(crate) child: Child,
    grace: Duration,
    /// `<dir>/rsupd.pid`, for a script's fallback cleanup; removed once the
    /// process is reaped.
    pid_file: PathBuf,
}

impl RsupdProcess {
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, up to the grace period to exit, then SIGKILL. Returns how it
    /// ended.
    pub(crate) fn terminate(&mut self) -> Result<ExitStatus, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        // Our own, not yet reaped child: the pid is still ours.
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "rsupd ignored SIGTERM for {:?} and was killed ({status})",
                        self.grace
                    ));
                }
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(e) => return Err(format!("waiting for rsupd: {e}")),
            }
        }
    }
}

impl Drop for RsupdProcess {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("warning: {e}");
        }
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// Connects to `socket` and asks health for service `""`: the client when
/// SERVING, `None` when not yet, or why the check failed.
async fn probe(socket: &Path) -> Result<Option<Client>, String> {
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
    .map_err(|e| format!("health check: {e}"))?;
    Ok((reply.into_inner().status == ServingStatus::Serving as i32).then_some(client))
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `rsupd` with its own socket and state dir under a directory of
/// its own, and a connected client.
pub struct Daemon {
    pub(crate) socket: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) cfg: Config,
    pub(crate) rsupd: Option<RsupdProcess>,
    /// rsupd's own cgroups, as seen at each launch: its containers' subtree
    /// is made below them.
    pub(crate) rsupd_cgroups: Vec<PathBuf>,
    /// Set once the teardown has run, so that a drop does not run it again.
    pub(crate) torn_down: bool,
    /// `None` only while rsupd is down and during teardown.
    pub(crate) client: Option<Client>,
    /// Last field: removed after `Drop::drop` has stopped everything.
    pub(crate) dir: TempDir,
}

impl Daemon {
    /// Spawns `rsupd` and returns once it reports SERVING.
    pub async fn start() -> Daemon {
        Daemon::start_with_args::<&str>(&[]).await
    }

    /// [`Daemon::start`] with extra `rsupd` arguments, such as
    /// `--metrics-addr 127.0.0.1:PORT` (the harness otherwise disables the
    /// metrics endpoint) or `--stats-interval 0.1`. Restarts pass them again.
    pub async fn start_with_args<S: AsRef<OsStr>>(args: &[S]) -> Daemon {
        Daemon::start_with_state_setup(args, |_| {}).await
    }

    /// [`Daemon::start_with_args`] that first runs `setup` on the (not yet
    /// existing) state dir path, before rsupd makes anything there: e.g. to
    /// mount a small tmpfs on it. Whatever is mounted below the daemon's
    /// directory is unmounted when the daemon is dropped, even when the test
    /// failed.
    pub async fn start_with_state_setup<S: AsRef<OsStr>>(
        args: &[S],
        setup: impl FnOnce(&Path),
    ) -> Daemon {
        Daemon::start_and_setup(DaemonOptions::with_args(args), setup)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A daemon serving `/metrics` on a free loopback port (with `extra`
    /// arguments for rsupd), and that port.
    pub async fn start_with_metrics(extra: &[&str]) -> (Daemon, SocketAddr) {
        let addr = free_loopback_addr();
        let opts = DaemonOptions {
            metrics_addr: Some(addr),
            ..DaemonOptions::with_args(extra)
        };
        let d = Daemon::start_and_setup(opts, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        (d, addr)
    }

    /// [`Daemon::start_with_args`] with rsupd in a mount namespace of its
    /// own (a slave of the host's: host mounts show there, its own do not
    /// show on the host), where the shell command `setup` runs first: e.g.
    /// to mount a cgroup hierarchy that only this daemon sees. Restarts get
    /// a new namespace and run `setup` again. Before rsupd stops, its
    /// cgroup subtree is removed from every hierarchy it sees (through
    /// `/proc/<pid>/root`), so that none of its own is kept alive by it.
    pub async fn start_in_mount_namespace<S: AsRef<OsStr>>(setup: &str, args: &[S]) -> Daemon {
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sh",
            "-c",
            &format!("{setup} && exec \"$@\""),
            "sh",
        ]
        .map(OsString::from)
        .to_vec();
        let opts = DaemonOptions {
            wrapper,
            ..DaemonOptions::with_args(args)
        };
        Daemon::start_and_setup(opts, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a daemon as `opts` says and waits until it is SERVING; an
    /// error (with the end of rsupd's log) instead of a panic.
    pub async fn try_start(opts: DaemonOptions) -> anyhow::Result<Daemon> {
        Daemon::start_and_setup(opts, |_| {}).await
    }

    async fn start_and_setup(
        opts: DaemonOptions,
        setup: impl FnOnce(&Path),
    ) -> anyhow::Result<Daemon> {
        let dir = match &opts.dir {
            Some(path) => TempDir::create_at(path)
                .with_context(|| format!("mkdir {} (must not exist)", path.display()))?,
            None => TempDir::new(),
        };
        let state_dir = dir.path().join("state");
        let (prefix, subnet) = net_identity(&state_dir);
        let cfg = Config {
            bin_dir: opts.bin_dir.unwrap_or_else(bin_dir),
            args: opts.args,
            net_prefix: opts.net_prefix.unwrap_or(prefix),
            default_subnet: opts.default_subnet.unwrap_or(subnet),
            cgroup_subtree: opts
                .cgroup_subtree
                .unwrap_or_else(|| cgroup_subtree(&state_dir)),
            metrics_addr: opts.metrics_addr,
            log_filter: opts.log_filter,
            serving_timeout: opts.serving_timeout,
            serving_poll: opts.serving_poll,
            stop_grace: opts.stop_grace,
            wrapper: opts.wrapper,
        };
        let mut daemon = Daemon {
            socket: dir.path().join("rsupd.sock"),
            log: dir.path().join("rsupd.log"),
            state_dir,
            cfg,
            rsupd: None,
            rsupd_cgroups: Vec::new(),
            torn_down: false,
            client: None,
            dir,
        };
        setup(&daemon.state_dir);
        daemon.launch()?;
        if let Err(e) = daemon.serving().await {
            // Nothing can be asked of it: stop it before the drop tears down.
            daemon.rsupd = None;
            return Err(e);
        }
        Ok(daemon)
    }

    /// The path of binary `name` of this daemon's binary directory; panics
    /// when it is missing.
    pub(crate) fn binary(&self, name: &str) -> PathBuf {
        let path = self.cfg.bin_dir.join(name);
        assert!(
            path.is_file(),
            "{} not found: run `cargo build --workspace` first (or set RSUP_BIN_DIR)",
            path.display()
        );
        path
    }

    /// A command that starts another `rsupd` on this daemon's state dir (and
    /// its environment: cgroup subtree, link prefix, default subnet, metrics
    /// address or none, extra arguments) but listening on `socket`; spawning
    /// it is the caller's job.
    pub fn rsupd_command(&self, socket: &Path) -> Command {
        self.rsupd_command_under(&[], socket)
    }

    /// [`Daemon::rsupd_command`] run by `wrapper` (see
    /// [`DaemonOptions::wrapper`]; empty: none).
    fn rsupd_command_under(&self, wrapper: &[OsString], socket: &Path) -> Command {
        let metrics = self.cfg.metrics_addr.map(|a| a.to_string());
        let rsupd = self.cfg.bin_dir.join("rsupd");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(rsupd);
                c
            }
            None => Command::new(rsupd),
        };
        cmd.arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env_remove("RSUP_SOCKET")
            .env_remove("RSUP_STATE_DIR")
            .env_remove("RSUP_SOCKET_GROUP")
            // Many daemons run at once: none may take a fixed TCP port, nor
            // the same links, subnets or cgroups.
            .env("RSUP_METRICS_ADDR", metrics.unwrap_or_default())
            .env("RSUP_CGROUP_SUBTREE", &self.cfg.cgroup_subtree)
            .env("RSUP_NET_PREFIX", &self.cfg.net_prefix)
            .env("RSUP_DEFAULT_SUBNET", &self.cfg.default_subnet)
            // After the defaults: a flag beats its environment variable.
            .args(&self.cfg.args);
        cmd
    }

    /// Spawns `rsupd` (again, after [`Daemon::stop`] or
    /// [`Daemon::kill_hard`]) with the same environment and arguments,
    /// logging to [`Daemon::log_path`]; its pid goes to `<dir>/rsupd.pid`
    /// for a script's fallback cleanup. Does not wait: see
    /// [`Daemon::serving`].
    pub fn launch(&mut self) -> anyhow::Result<()> {
        if self.rsupd.is_some() {
            bail!("rsupd is already running");
        }
        let rsupd = self.cfg.bin_dir.join("rsupd");
        if !rsupd.is_file() {
            bail!(
                "{} not found: run `cargo build --workspace` first (or set RSUP_BIN_DIR)",
                rsupd.display()
            );
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = self.rsupd_command_under(&self.cfg.wrapper, &self.socket);
        match &self.cfg.log_filter {
            Some(filter) => {
                cmd.env("RSUP_LOG", filter);
            }
            None if std::env::var_os("RSUP_LOG").is_none() => {
                cmd.env(
                    "RSUP_LOG",
                    "info,rsupd=debug,rsup_server=debug,rsup_runtime=debug",
                );
            }
            None => {}
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("dup of the log file")?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let process = RsupdProcess {
            child,
            grace: self.cfg.stop_grace,
            pid_file: self.dir.path().join("rsupd.pid"),
        };
        let pid = process.pid();
        fs::write(&process.pid_file, format!("{pid}\n"))
            .with_context(|| format!("writing {}", process.pid_file.display()))?;
        self.rsupd = Some(process);
        for dir in cgroup_dirs_of(pid) {
            if !self.rsupd_cgroups.contains(&dir) {
                self.rsupd_cgroups.push(dir);
            }
        }
        Ok(())
    }

    /// Polls the health check until service `""` is SERVING (bounded), keeps
    /// the connection as [`Daemon::client`] and returns a clone of it. An
    /// error, with the end of rsupd's log, if rsupd exits first or the time
    /// runs out.
    pub async fn serving(&mut self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + self.cfg.serving_timeout;
        let mut last = String::from("socket not created yet");
        loop {
            if let Some(rsupd) = &mut self.rsupd
                && let Ok(Some(status)) = rsupd.child.try_wait()
            {
                self.rsupd = None;
                bail!(
                    "rsupd exited ({status}) before serving; its log:\n{}",
                    log_tail(&self.log, 60)
                );
            }
            if self.socket.exists() {
                match probe(&self.socket).await {
                    Ok(Some(client)) => {
                        self.client = Some(client.clone());
                        return Ok(client);
                    }
                    Ok(None) => last = "health reports not SERVING yet".into(),
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "rsupd not SERVING after {:?} (last: {last}); its log:\n{}",
                    self.cfg.serving_timeout,
                    log_tail(&self.log, 60)
                );
            }
            tokio::time::sleep(self.cfg.serving_poll).await;
        }
    }

    /// Stops `rsupd` with SIGTERM (it must exit cleanly), starts it again on
    /// the same socket and state dir, and reconnects once it is SERVING.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    /// Stops `rsupd` with SIGTERM and panics unless it exits cleanly within
    /// [`STOP_GRACE`]. Containers keep running; call [`Daemon::start_again`]
    /// before the end of the test so that teardown can remove them.
    pub fn stop(&mut self) {
        self.client = None;
        self.remove_private_cgroups();
        let mut old = self.rsupd.take().expect("rsupd is running");
        let status = old.terminate();
        drop(old);
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "rsupd exited with {s} on SIGTERM; its log:\n{}",
                log_tail(&self.log, 60)
            ),
            Err(e) => panic!("{e}; its log:\n{}", log_tail(&self.log, 60)),
        }
    }

    /// Starts `rsupd` again after [`Daemon::stop`], on the same socket and
    /// state dir, and reconnects once it is SERVING.
    pub async fn start_again(&mut self) {
        assert!(self.rsupd.is_none(), "rsupd is already running");
        if let Err(e) = self.launch() {
            panic!("{e:#}");
        }
        if let Err(e) = self.serving().await {
            panic!("{e:#}");
        }
    }

    /// SIGKILL to `rsupd` (a crash: no shutdown code runs), reaped at once.
    /// Containers keep running. The signal goes to our own, not yet reaped
    /// child, so its pid cannot have been reused.
    pub fn kill_hard(&mut self) -> anyhow::Result<ExitStatus> {
        self.client = None;
        let mut old = self.rsupd.take().context("rsupd is not running")?;
        old.child
            .kill()
            .with_context(|| format!("SIGKILL to rsupd (pid {})", old.pid()))?;
        old.child.wait().context("reaping rsupd")
    }

    /// Kills `rsupd` with SIGKILL (a crash: no shutdown code runs) and reaps
    /// it. Containers keep running; call [`Daemon::start_again`] before the
    /// end of the test so that teardown can remove them.
    pub fn kill9(&mut self) {
        match self.kill_hard() {
            Ok(status) => assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "rsupd ended with {status}, not by SIGKILL; its log:\n{}",
                log_tail(&self.log, 60)
            ),
            Err(e) => panic!("{e:#}"),
        }
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("connected to rsupd")
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// This daemon's directory (socket, state dir, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file `rsupd` writes its log to (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Where `/metrics` is served, if anywhere (see
    /// [`DaemonOptions::metrics_addr`]).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.cfg.metrics_addr
    }

    /// Host pid of `rsupd` (0 while it is down).
    pub fn pid(&self) -> i32 {
        self.rsupd.as_ref().map_or(0, RsupdProcess::pid)
    }

    /// `<state>/containers/<id>`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    /// `<state>/containers/<id>/state.json`, parsed.
    pub fn state_json(&self, id: &str) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.container_dir(id).join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `shim_pid` and `init_pid` of the container's `state.json`, both
    /// present while it runs.
    pub fn recorded_pids(&self, id: &str) -> Option<(i32, i32)> {
        let (shim, init) = state_pids(&self.state_json(id)?);
        Some((shim?, init?))
    }

    /// The shim and init recorded in the container's `state.json` (present
    /// while it runs), as they are now.
    pub fn recorded_procs(&self, id: &str) -> Vec<ProcId> {
        recorded_procs(&self.state_dir, id)
    }

    /// Whether `pid` is one of this daemon's shims or inits (its command
    /// line names the state dir: `rsup-shim __rsup-shim <state>/containers/<id>`,
    /// which the init inherits), so that a signal never hits a stranger.
    pub fn owns(&self, pid: i32) -> bool {
        cmdline(pid).is_some_and(|c| mentions_path(&c, &self.state_dir))
    }
}

/// `shim_pid` and `init_pid` of a parsed `state.json`, each when above 1.
pub(crate) fn state_pids(state: &serde_json::Value) -> (Option<i32>, Option<i32>) {
    let pid = |key: &str| {
        state[key]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|&p| p > 1)
    };
    (pid("shim_pid"), pid("init_pid"))
}

/// `shim_pid` and `init_pid` of `<state_dir>/containers/<id>/state.json`,
/// for those processes that exist now.
pub fn recorded_procs(state_dir: &Path, id: &str) -> Vec<ProcId> {
    let path = state_dir.join("containers").join(id).join("state.json");
    let Some(state) = fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return Vec::new();
    };
    let (shim, init) = state_pids(&state);
    [shim, init]
        .into_iter()
        .flatten()
        .filter_map(ProcId::of)
        .collect()
}
