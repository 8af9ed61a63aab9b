//! Harness for rsup's integration tests: a real `rsupd` on a temporary socket
//! and state dir, driven through `rsupctl` and the client library.
//!
//! Invariants the harness keeps:
//! - every directory it creates is `/tmp/rsup-test-<pid>-<n>`, so that
//!   `scripts/test.sh` can sweep what a killed run left behind;
//! - [`Daemon::start`] returns only once `grpc.health.v1.Health` reports
//!   SERVING for service `""` (polled, bounded), never after a fixed sleep;
//! - dropping a [`Daemon`], also while a test panics, force-removes every
//!   container, stops `rsupd`, kills (by pid, after checking its command line)
//!   any shim or init still running, unmounts anything left under its
//!   directory and deletes it. Teardown never panics: it reports and goes on.
//!
//! The binaries are taken from the directory two levels above the test
//! executable (`target/debug`), or from `RSUP_BIN_DIR`; build them first with
//! `cargo build --workspace`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rsup_client::{Client, proto};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Prefix of every directory the tests create under `/tmp`.
pub const TEMP_PREFIX: &str = "rsup-test-";
/// How long `rsupd` may take to report SERVING.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `rsupctl` invocation may take before it is killed.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `rsupd` may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Interval between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
static ROOTFS: OnceLock<PathBuf> = OnceLock::new();

/// A container name no other test of this run uses: `<prefix>-<pid>-<n>`.
/// Keep `prefix` a short lowercase DNS label.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

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

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace` first (or set RSUP_BIN_DIR)",
        path.display()
    );
    path
}

/// A fresh, empty `/tmp/rsup-test-<pid>-<n>`, removed (after unmounting
/// anything mounted below it) on drop. `RSUP_TEST_KEEP=1` keeps it.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        loop {
            let path = Path::new("/tmp").join(format!(
                "{TEMP_PREFIX}{}-{}",
                std::process::id(),
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                // Left by an earlier run whose pid was ours: take the next n.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("RSUP_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("RSUP_TEST_KEEP=1: keeping {}", self.path.display());
            return;
        }
        remove_tree(&self.path);
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first, then
/// removes `dir`. Errors are reported, not raised.
fn remove_tree(dir: &Path) {
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("warning: umount {}: {e}", point.display());
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("warning: removing {}: {e}", dir.display()),
    }
}

/// Mount points of this process' mount namespace (`/proc/self/mountinfo`
/// field 5, octal escapes decoded).
fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .collect()
}

fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| s.get(i + 1..i + 4))
            .flatten()
            .and_then(|octal| u8::from_str_radix(octal, 8).ok());
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `text` mentions `path` itself or a path under it: an occurrence
/// not followed by a character that could continue a file name, so that
/// `/tmp/rsup-test-1-1` is not found in `/tmp/rsup-test-1-10`.
pub fn mentions_path(text: &str, path: &Path) -> bool {
    let needle = path.to_string_lossy();
    let needle = needle.trim_end_matches('/');
    if needle.is_empty() {
        return false;
    }
    text.match_indices(needle).any(|(at, _)| {
        text[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
    })
}

/// Lines of `/proc/self/mountinfo` that mention `needle`.
pub fn mounts_mentioning(needle: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| mentions_path(l, needle))
        .map(str::to_owned)
        .collect()
}

/// The root filesystem every test uses: a static busybox with one symlink per
/// applet in `/bin`, built once per test process under a temporary directory
/// that is removed when the process exits.
pub fn busybox_rootfs() -> PathBuf {
    ROOTFS
        .get_or_init(|| {
            let dir = TempDir::new();
            let rootfs = dir.path().join("rootfs");
            if let Err(e) = build_rootfs(&rootfs) {
                panic!("building the busybox rootfs in {}: {e:#}", rootfs.display());
            }
            // The directory outlives every test; remove it when the process exits.
            std::mem::forget(dir);
            // SAFETY: `remove_rootfs_at_exit` is a plain `extern "C" fn()` that
            // never unwinds; registering it has no other precondition.
            let rc = unsafe { libc::atexit(remove_rootfs_at_exit) };
            if rc != 0 {
                eprintln!("warning: atexit failed; {} stays behind", rootfs.display());
            }
            rootfs
        })
        .clone()
}

extern "C" fn remove_rootfs_at_exit() {
    if let Some(parent) = ROOTFS.get().and_then(|r| r.parent()) {
        remove_tree(parent);
    }
}

/// Applets the tests rely on.
const REQUIRED_APPLETS: &[&str] = &[
    "true", "sh", "hostname", "ps", "ip", "sleep", "id", "ls", "cat", "grep", "echo",
];

fn build_rootfs(root: &Path) -> anyhow::Result<()> {
    let busybox = std::env::var_os("RSUP_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .with_context(|| {
            format!(
                "running {} --list (install busybox-static)",
                busybox.display()
            )
        })?;
    if !list.status.success() {
        bail!("{} --list failed: {}", busybox.display(), list.status);
    }
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    for need in REQUIRED_APPLETS {
        if !applets.iter().any(|a| a == need) {
            bail!("{} has no `{need}` applet", busybox.display());
        }
    }

    for dir in [
        "bin", "proc", "dev", "sys", "tmp", "etc", "root", "home/app", "usr", "var",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000))?;

    let target = root.join("bin/busybox");
    fs::copy(&busybox, &target)
        .with_context(|| format!("copying {} to {}", busybox.display(), target.display()))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    for applet in &applets {
        let link = root.join("bin").join(applet);
        symlink("busybox", &link).with_context(|| format!("symlink {}", link.display()))?;
    }
    // Whatever PATH the daemon uses, it finds the applets.
    symlink("bin", root.join("sbin"))?;
    symlink("../bin", root.join("usr/bin"))?;
    symlink("../bin", root.join("usr/sbin"))?;

    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    fs::write(root.join(ROOTFS_MARKER), "lower\n")?;
    Ok(())
}

/// A file of the rootfs (relative to its root) that tests overwrite inside a
/// container to show the rootfs directory is never written.
pub const ROOTFS_MARKER: &str = "etc/rsup-test-marker";

/// Runs `cmd` with stdin closed and captured output; kills it once `timeout`
/// has passed. Never panics.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Our own, not yet reaped child: its pid cannot have been reused.
                let _ = child.kill();
                let _ = child.wait();
                let out = join_output(stdout);
                let err = join_output(stderr);
                return Err(format!(
                    "{cmd:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: join_output(stdout),
        stderr: join_output(stderr),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn join_output(handle: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// stdout of `out` as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of `out` as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything about `out`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and panics
/// with `what` and the last `Err` once `timeout` has passed.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Blocking form of [`eventually`] for teardown: returns whether `check`
/// became true in time.
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A process identified by pid and start time, so that a reused pid is not
/// mistaken for the original process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcId {
    /// The process now running as `pid`, if any.
    pub fn of(pid: i32) -> Option<ProcId> {
        let stat = proc_stat(pid)?;
        Some(ProcId {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this very process still has an entry in `/proc`, zombies
    /// included.
    pub fn exists(&self) -> bool {
        proc_stat(self.pid).is_some_and(|s| s.start_time == self.start_time)
    }
}

/// The fields of `/proc/<pid>/stat` the tests use.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Command line of `pid` with NULs turned into spaces (empty for zombies and
/// kernel threads).
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim_end()
            .to_owned(),
    )
}

/// Pids of every process in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Processes other than this one whose command line mentions `needle`.
pub fn pids_mentioning(needle: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| cmdline(pid).is_some_and(|c| mentions_path(&c, needle)))
        .collect()
}

/// Processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.ppid == parent))
        .collect()
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
    ["shim_pid", "init_pid"]
        .iter()
        .filter_map(|key| state[*key].as_i64())
        .filter_map(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid > 1)
        .filter_map(ProcId::of)
        .collect()
}

/// The cgroup subtree of the daemon on `state_dir` (`rsup-<link prefix>`):
/// daemons of one test run share rsupd's own cgroup, and each sweeps the
/// cgroups of containers it does not know at start.
pub fn cgroup_subtree(state_dir: &Path) -> String {
    format!("rsup-{}", net_identity(state_dir).0)
}

/// Link prefix and default subnet of the daemon on `state_dir`: `z` + 3
/// hex digits, and a /24 in 10.100.0.0-10.163.255.0, from a hash of the path.
pub fn net_identity(state_dir: &Path) -> (String, String) {
    let mut h: u32 = 0x811c_9dc5;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (
        format!("z{:03x}", h & 0xfff),
        format!("10.{}.{}.0/24", 100 + ((h >> 12) & 0x3f), (h >> 18) & 0xff),
    )
}

/// The start of the host-side names of container `id`'s veths on a daemon
/// whose link prefix is `link_prefix` (rsupd names them
/// `<prefix>v<8 hex of an FNV-1a hash of the id><n>`): how a test tells the
/// veths of a container whose spec it cannot see.
pub fn veth_prefix(link_prefix: &str, id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{link_prefix}v{h:08x}")
}

/// The `rsupd` child process; SIGTERMed (then SIGKILLed) and reaped on drop.
#[derive(Debug)]
struct RsupdProcess {
    child: Child,
}

impl RsupdProcess {
    fn spawn(
        socket: &Path,
        state_dir: &Path,
        log: &Path,
        extra_args: &[OsString],
        wrapper: &[OsString],
    ) -> RsupdProcess {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let log_out = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        // A wrapper execs rsupd in the end: the child's pid is rsupd's.
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary("rsupd"));
                c
            }
            None => Command::new(binary("rsupd")),
        };
        cmd.arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state_dir)
            .env_remove("RSUP_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log_file);
        // Many daemons run at once: none may take a fixed TCP port.
        cmd.env("RSUP_METRICS_ADDR", "")
            .env_remove("RSUP_STATE_DIR");
        // Nor the same links or subnets: a per-daemon link prefix (`z` + 3
        // hex, swept by scripts/test.sh) and default subnet, both stable
        // across restarts of the daemon on this state dir.
        let (prefix, subnet) = net_identity(state_dir);
        cmd.env("RSUP_CGROUP_SUBTREE", cgroup_subtree(state_dir))
            .env("RSUP_NET_PREFIX", prefix)
            .env("RSUP_DEFAULT_SUBNET", subnet);
        // After the defaults: a flag beats its environment variable.
        cmd.args(extra_args);
        if std::env::var_os("RSUP_LOG").is_none() {
            cmd.env(
                "RSUP_LOG",
                "info,rsupd=debug,rsup_server=debug,rsup_runtime=debug",
            );
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        RsupdProcess { child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL. Returns how it
    /// ended.
    fn terminate(&mut self) -> Result<ExitStatus, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        // Our own, not yet reaped child: the pid is still ours.
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "rsupd ignored SIGTERM for {STOP_GRACE:?} and was killed ({status})"
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
    }
}

/// Connects to `socket` and polls health until service `""` is SERVING.
async fn wait_ready(socket: &Path, rsupd: &mut RsupdProcess, log: &Path) -> Client {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    let mut last = String::from("socket not created yet");
    loop {
        if let Ok(Some(status)) = rsupd.child.try_wait() {
            panic!(
                "rsupd exited ({status}) before serving; its log:\n{}",
                log_tail(log, 60)
            );
        }
        if socket.exists() {
            match probe(socket).await {
                Ok(Some(client)) => return client,
                Ok(None) => last = "health reports not SERVING yet".into(),
                Err(e) => last = e,
            }
        }
        assert!(
            Instant::now() < deadline,
            "rsupd not SERVING after {HEALTH_TIMEOUT:?} (last: {last}); its log:\n{}",
            log_tail(log, 60)
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

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

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `rsupd` with its own socket and state dir under a fresh
/// temporary directory, and a connected client.
pub struct Daemon {
    socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    rsupd: Option<RsupdProcess>,
    /// Extra `rsupd` arguments, passed again on every restart.
    extra_args: Vec<OsString>,
    /// The command rsupd runs under (see [`Daemon::start_in_mount_namespace`]);
    /// empty: none.
    wrapper: Vec<OsString>,
    /// `None` only during teardown.
    client: Option<Client>,
    /// Last field: removed after `Drop::drop` has stopped everything.
    dir: TempDir,
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
        Daemon::start_wrapped(args, Vec::new(), setup).await
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
        Daemon::start_wrapped(args, wrapper, |_| {}).await
    }

    async fn start_wrapped<S: AsRef<OsStr>>(
        args: &[S],
        wrapper: Vec<OsString>,
        setup: impl FnOnce(&Path),
    ) -> Daemon {
        let extra_args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let dir = TempDir::new();
        let socket = dir.path().join("rsupd.sock");
        let state_dir = dir.path().join("state");
        let log = dir.path().join("rsupd.log");
        setup(&state_dir);
        let mut rsupd = RsupdProcess::spawn(&socket, &state_dir, &log, &extra_args, &wrapper);
        let client = wait_ready(&socket, &mut rsupd, &log).await;
        Daemon {
            socket,
            state_dir,
            log,
            rsupd: Some(rsupd),
            extra_args,
            wrapper,
            client: Some(client),
            dir,
        }
    }

    /// For a daemon in its own mount namespace: removes its cgroup
    /// subtree as it sees the hierarchies, while it still runs.
    fn remove_private_cgroups(&self) {
        if let (false, Some(p)) = (self.wrapper.is_empty(), &self.rsupd) {
            remove_cgroup_subtree_seen_by(Some(p.pid()), &cgroup_subtree(&self.state_dir));
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
        let mut rsupd = RsupdProcess::spawn(
            &self.socket,
            &self.state_dir,
            &self.log,
            &self.extra_args,
            &self.wrapper,
        );
        self.client = Some(wait_ready(&self.socket, &mut rsupd, &self.log).await);
        self.rsupd = Some(rsupd);
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

    /// This daemon's temporary directory (socket, state dir, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host pid of `rsupd`.
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

    /// The shim and init recorded in the container's `state.json` (present
    /// while it runs), as they are now.
    pub fn recorded_procs(&self, id: &str) -> Vec<ProcId> {
        recorded_procs(&self.state_dir, id)
    }

    /// `rsupctl --socket <socket>`, ready for more arguments.
    pub fn ctl_command(&self) -> Command {
        self.ctl_command_at(binary("rsupctl"))
    }

    /// [`Daemon::ctl_command`] without the check that the binary exists,
    /// which panics: for teardown, where a failure to spawn is reported.
    fn ctl_command_at(&self, rsupctl: PathBuf) -> Command {
        let mut cmd = Command::new(rsupctl);
        cmd.env_remove("RSUP_SOCKET")
            .arg("--socket")
            .arg(&self.socket);
        cmd
    }

    /// Runs `rsupctl --socket <socket> ARGS...` to completion (bounded by
    /// [`CTL_TIMEOUT`]). Blocks the calling thread: call it from the test
    /// body, not from a spawned task.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.ctl_command();
        cmd.args(args);
        blocking(|| output_with_timeout(cmd, CTL_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::ctl`] that must succeed; returns its stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args);
        assert!(
            out.status.success(),
            "rsupctl {args:?} failed\n{}",
            describe(&out)
        );
        stdout(&out)
    }

    /// `rsupctl run --rootfs <busybox> FLAGS... -- COMMAND...`.
    pub fn run(&self, flags: &[&str], command: &[&str]) -> Output {
        let rootfs = busybox_rootfs();
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("run"),
            OsStr::new("--rootfs"),
            rootfs.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        args.push(OsStr::new("--"));
        args.extend(command.iter().map(OsStr::new));
        self.ctl(args)
    }

    /// `rsupctl ps -a --format json`, one value per container.
    pub fn ps_json(&self) -> Vec<serde_json::Value> {
        self.ctl_ok(["ps", "-a", "--format", "json"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ps line {l:?}: {e}")))
            .collect()
    }

    /// `rsupctl inspect NAME`, element 0.
    pub fn inspect_json(&self, name: &str) -> serde_json::Value {
        let text = self.ctl_ok(["inspect", name]);
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {text:?}: {e}"));
        value
            .get(0)
            .cloned()
            .unwrap_or_else(|| panic!("inspect printed no element: {text}"))
    }

    /// Polls the container until its state is `state`, and returns it.
    pub async fn wait_state(
        &self,
        name: &str,
        state: proto::ContainerState,
        timeout: Duration,
    ) -> proto::Container {
        eventually(&format!("{name} to be {state:?}"), timeout, async || {
            let c = self
                .client()
                .inspect(name)
                .await
                .map_err(|e| format!("inspect: {e}"))?;
            if c.state == state as i32 {
                Ok(c)
            } else {
                Err(format!(
                    "state is {:?}",
                    proto::ContainerState::try_from(c.state)
                ))
            }
        })
        .await
    }

    /// Polls `rsupctl logs NAME` until a line equals `line`.
    pub async fn wait_log_line(&self, name: &str, line: &str, timeout: Duration) {
        eventually(&format!("{name} to log {line:?}"), timeout, async || {
            let out = self.ctl(["logs", name]);
            if out.status.success() && stdout(&out).lines().any(|l| l == line) {
                Ok(())
            } else {
                Err(describe(&out))
            }
        })
        .await;
    }

    /// A spec running `command` on the busybox rootfs.
    pub fn spec(&self, name: &str, command: &[&str]) -> proto::ContainerSpec {
        proto::ContainerSpec {
            name: name.to_owned(),
            rootfs: busybox_rootfs().to_string_lossy().into_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    /// Ids of every container, from `rsupctl ps -a` and the state dir.
    fn known_container_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cmd = self.ctl_command_at(bin_dir().join("rsupctl"));
        cmd.args(["ps", "-a", "--format", "json"]);
        match output_with_timeout(cmd, Duration::from_secs(30)) {
            Ok(out) if out.status.success() => {
                for line in stdout(&out).lines().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(v) => ids.extend(v["id"].as_str().map(str::to_owned)),
                        Err(e) => eprintln!("warning: teardown: ps line {line:?}: {e}"),
                    }
                }
            }
            Ok(out) => eprintln!("warning: teardown: rsupctl ps failed\n{}", describe(&out)),
            Err(e) => eprintln!("warning: teardown: {e}"),
        }
        if let Ok(entries) = fs::read_dir(self.state_dir.join("containers")) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    fn remove_all_containers(&self) {
        for id in self.known_container_ids() {
            let mut cmd = self.ctl_command_at(bin_dir().join("rsupctl"));
            cmd.args(["rm", "-f", &id]);
            match output_with_timeout(cmd, Duration::from_secs(30)) {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "warning: teardown: rsupctl rm -f {id} failed\n{}",
                        describe(&out)
                    )
                }
                Err(e) => eprintln!("warning: teardown: {e}"),
            }
        }
    }

    /// Kills, by pid, shims and inits recorded in `state.json` files and any
    /// other process whose command line mentions this daemon's directory.
    fn kill_leftovers(&self) {
        let state_dir = &self.state_dir;
        let mut victims: Vec<ProcId> = Vec::new();
        if let Ok(entries) = fs::read_dir(self.state_dir.join("containers")) {
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Some(state) = self.state_json(&id) else {
                    continue;
                };
                let pid_of = |key: &str| {
                    state[key]
                        .as_i64()
                        .and_then(|p| i32::try_from(p).ok())
                        .filter(|&p| p > 1)
                };
                let shim = pid_of("shim_pid")
                    .filter(|&p| cmdline(p).is_some_and(|c| mentions_path(&c, state_dir)));
                let init = pid_of("init_pid").filter(|&p| {
                    cmdline(p).is_some_and(|c| mentions_path(&c, state_dir))
                        || shim.is_some_and(|s| proc_stat(p).is_some_and(|st| st.ppid == s))
                });
                // The init first: once its shim is gone it would be reparented
                // and could no longer be recognised.
                victims.extend(init.and_then(ProcId::of));
                victims.extend(shim.and_then(ProcId::of));
            }
        }
        for pid in pids_mentioning(self.dir.path()) {
            if !victims.iter().any(|v| v.pid == pid) {
                victims.extend(ProcId::of(pid));
            }
        }
        for victim in &victims {
            eprintln!(
                "warning: teardown: killing leftover pid {} ({})",
                victim.pid,
                cmdline(victim.pid).unwrap_or_default()
            );
            if victim.exists() {
                let _ = kill(Pid::from_raw(victim.pid), Signal::SIGKILL);
            }
        }
        let gone = wait_until(Duration::from_secs(5), || {
            victims
                .iter()
                .all(|v| !v.exists() || proc_stat(v.pid).is_some_and(|s| s.state == 'Z'))
        });
        if !gone {
            eprintln!("warning: teardown: leftover processes survived SIGKILL: {victims:?}");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- rsupd log ({}), last lines ---\n{}\n--- end of rsupd log ---",
                self.log.display(),
                log_tail(&self.log, 80)
            );
        }
        // Close our connection first: its task needs the runtime, which the
        // blocking teardown below may be holding up.
        self.client = None;
        blocking(|| self.teardown());
    }
}

impl Daemon {
    fn teardown(&mut self) {
        let running = self
            .rsupd
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
        if running {
            self.remove_all_containers();
            self.remove_private_cgroups();
        } else {
            eprintln!("warning: teardown: rsupd is not running; containers cannot be removed");
        }
        if let Some(mut rsupd) = self.rsupd.take() {
            match rsupd.terminate() {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("warning: teardown: rsupd exited with {s}"),
                Err(e) => eprintln!("warning: teardown: {e}"),
            }
        }
        self.kill_leftovers();
        remove_links(&net_identity(self.state_dir()).0);
        remove_cgroup_subtree(&cgroup_subtree(self.state_dir()));
    }
}

/// Removes a daemon's (empty, once its containers are gone) cgroup subtree
/// `<own cgroup>/<subtree>` in every hierarchy; rmdir never removes a cgroup
/// that still has processes.
pub fn remove_cgroup_subtree(subtree: &str) {
    remove_cgroup_subtree_seen_by(None, subtree);
}

/// [`remove_cgroup_subtree`] in every cgroup hierarchy mounted in the mount
/// namespace of process `pid` (this process's: `None`), at its cgroups
/// there, reached through `/proc/<pid>/root`.
pub fn remove_cgroup_subtree_seen_by(pid: Option<i32>, subtree: &str) {
    let proc = pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    let (Ok(mountinfo), Ok(own)) = (
        fs::read_to_string(format!("/proc/{proc}/mountinfo")),
        fs::read_to_string(format!("/proc/{proc}/cgroup")),
    ) else {
        return;
    };
    let root = pid.map(|p| PathBuf::from(format!("/proc/{p}/root")));
    let mounts = parse_cgroup_mounts(&mountinfo);
    let mut dirs = Vec::new();
    for line in parse_proc_cgroup(&own) {
        let unified = line.id == "0" && line.controllers.is_empty();
        for m in &mounts {
            let matches = if unified {
                m.unified
            } else {
                !m.unified
                    && line
                        .controllers
                        .iter()
                        .any(|c| m.options.iter().any(|o| o == c))
            };
            if !matches {
                continue;
            }
            let mut dir = m.dir_of(line.path);
            if let Some(r) = &root {
                dir = r.join(dir.strip_prefix("/").unwrap_or(&dir));
            }
            // On v2 rsupd may have moved us into <own>/rsupd.
            for base in [
                dir.clone(),
                dir.parent().map(Path::to_path_buf).unwrap_or_default(),
            ] {
                dirs.push(base.join(subtree));
            }
        }
    }
    for d in dirs {
        if let Ok(children) = fs::read_dir(&d) {
            for c in children.flatten() {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(c.path());
                }
            }
        }
        let _ = fs::remove_dir(&d);
    }
}

/// Deletes every link whose name starts with `prefix` followed by `b`
/// (bridge) or `v` (veth): what a test daemon with that prefix made.
pub fn remove_links(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        let ours = name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('b') || rest.starts_with('v'));
        if ours {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// Runs blocking `f` (a child process, a poll of /proc), telling a
/// multi-threaded tokio runtime first (if this thread is in one) so that its
/// other tasks keep running meanwhile.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A child process killed (by its own handle) and reaped on drop, for
/// long-running `rsupctl logs -f` and the like.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Crash helpers: a `kill -9` of `rsupd` and what the tests need to look at
/// a daemon that is down.
impl Daemon {
    /// Kills `rsupd` with SIGKILL (a crash: no shutdown code runs) and reaps
    /// it. Containers keep running; call [`Daemon::start_again`] before the
    /// end of the test so that teardown can remove them. The signal goes to
    /// our own, not yet reaped child, so its pid cannot have been reused.
    pub fn kill9(&mut self) {
        self.client = None;
        let mut old = self.rsupd.take().expect("rsupd is running");
        if let Err(e) = old.child.kill() {
            panic!("SIGKILL to rsupd (pid {}): {e}", old.pid());
        }
        match old.child.wait() {
            Ok(status) => assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "rsupd ended with {status}, not by SIGKILL; its log:\n{}",
                log_tail(&self.log, 60)
            ),
            Err(e) => panic!("reaping rsupd: {e}"),
        }
    }

    /// The file `rsupd` writes its log to (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A command that starts another `rsupd` on this daemon's state dir (and
    /// its environment: cgroup subtree, link prefix, default subnet, no
    /// metrics) but listening on `socket`; spawning it is the caller's job.
    pub fn rsupd_command(&self, socket: &Path) -> Command {
        let mut cmd = Command::new(binary("rsupd"));
        let (prefix, subnet) = net_identity(&self.state_dir);
        cmd.arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .env_remove("RSUP_SOCKET")
            .env_remove("RSUP_STATE_DIR")
            .env("RSUP_METRICS_ADDR", "")
            .env("RSUP_CGROUP_SUBTREE", cgroup_subtree(&self.state_dir))
            .env("RSUP_NET_PREFIX", prefix)
            .env("RSUP_DEFAULT_SUBNET", subnet);
        cmd
    }
}

// ---------------------------------------------------------------------------
// Shared test helpers: running containers, bad input, host links, cgroups,
// HTTP and Prometheus.

/// `rsupctl run FLAGS... -- COMMAND...` with a `--name` made by
/// [`unique_name`]`(prefix)` put first, unless FLAGS already has a `--name`;
/// any outcome.
pub fn run_named(d: &Daemon, prefix: &str, flags: &[&str], command: &[&str]) -> Output {
    if flags.contains(&"--name") {
        return d.run(flags, command);
    }
    let name = unique_name(prefix);
    let mut all = vec!["--name", name.as_str()];
    all.extend_from_slice(flags);
    d.run(&all, command)
}

/// [`run_named`] that must exit 0; returns its stdout.
pub fn run_named_ok(d: &Daemon, prefix: &str, flags: &[&str], command: &[&str]) -> String {
    let out = run_named(d, prefix, flags, command);
    assert_eq!(
        out.status.code(),
        Some(0),
        "run {flags:?} {command:?}\n{}",
        describe(&out)
    );
    stdout(&out)
}

/// The gRPC status code of a call that must fail; panics (naming `what`) if
/// it succeeded or failed without a status.
pub fn code_of<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, rsup_client::Error>,
) -> tonic::Code {
    match result {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("{what}: not a gRPC status: {e}")),
    }
}

/// The ids of every container the daemon knows (`list(all)`), to check that
/// a rejected request left nothing behind.
pub async fn container_ids(client: &Client) -> std::collections::BTreeSet<String> {
    client
        .list(true)
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Links of the host whose name starts with `prefix`, sorted.
pub fn host_links(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// One cgroup mount of a `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    /// The path inside the hierarchy that is mounted (usually `/`).
    pub root: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// cgroup2 (`true`) or a v1 hierarchy.
    pub unified: bool,
    /// Super options: the v1 controllers, among others.
    pub options: Vec<String>,
}

impl CgroupMount {
    /// The directory of the cgroup `path` (as `/proc/<pid>/cgroup` names it,
    /// relative to our cgroup namespace) under this mount.
    pub fn dir_of(&self, path: &str) -> PathBuf {
        let rel = path
            .strip_prefix(self.root.trim_end_matches('/'))
            .unwrap_or(path);
        let mut dir = self.point.clone();
        dir.extend(rel.split('/').filter(|c| !c.is_empty()));
        dir
    }
}

/// The cgroup mounts (v1 and v2) of a mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let unified = match *post.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                root: (*pre.get(3)?).to_owned(),
                point: PathBuf::from(*pre.get(4)?),
                unified,
                options: post.get(2)?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The cgroup mounts this process sees (the host's: the tests run there).
pub fn cgroup_mounts() -> Vec<CgroupMount> {
    let path = "/proc/self/mountinfo";
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_cgroup_mounts(&text)
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup<'a> {
    /// The hierarchy id (`0` for cgroup v2).
    pub id: &'a str,
    /// The v1 controllers of the hierarchy (none on v2).
    pub controllers: Vec<&'a str>,
    /// The cgroup's path in the hierarchy.
    pub path: &'a str,
}

/// The lines of a `/proc/<pid>/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup<'_>> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?;
            let controllers = it.next()?.split(',').filter(|c| !c.is_empty()).collect();
            Some(ProcCgroup {
                id,
                controllers,
                path: it.next()?,
            })
        })
        .collect()
}

/// A named v1 cgroup hierarchy (`name=<name>`) made for one test. It is
/// only ever mounted in private mount namespaces (that of a daemon started
/// with [`Daemon::start_in_mount_namespace`]`(&h.mount_command(), ..)`, say),
/// so no other daemon of the run sees it. The kernel keeps such a hierarchy
/// (it shows in every process's `/proc/<pid>/cgroup`) while a cgroup below
/// its root exists or, if one still did when its last mount went away,
/// until it is mounted and unmounted again with none: drop destroys it
/// that way, after the daemon using it (declare it first).
pub struct NamedCgroup {
    name: String,
    dir: TempDir,
}

impl NamedCgroup {
    /// A new hierarchy name; nothing is mounted yet.
    pub fn new() -> NamedCgroup {
        let dir = TempDir::new();
        fs::create_dir(dir.path().join("cg")).expect("mkdir");
        NamedCgroup {
            name: unique_name("rsupt").replace('-', "_"),
            dir,
        }
    }

    /// The hierarchy's name (`name=` option).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where [`NamedCgroup::mount_command`] mounts it.
    pub fn mount_point(&self) -> PathBuf {
        self.dir.path().join("cg")
    }

    /// A shell command that mounts (creating, the first time) the
    /// hierarchy at [`NamedCgroup::mount_point`].
    pub fn mount_command(&self) -> String {
        format!(
            "mount -t cgroup -o none,name={} cgroup {}",
            self.name,
            self.mount_point().display()
        )
    }

    /// Whether the kernel still has the hierarchy.
    pub fn exists(&self) -> bool {
        let line = format!(":name={}:", self.name);
        fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| t.contains(&line))
    }
}

impl Default for NamedCgroup {
    fn default() -> Self {
        NamedCgroup::new()
    }
}

impl Drop for NamedCgroup {
    fn drop(&mut self) {
        // A mount and unmount (in a private namespace of their own) with no
        // cgroup left below the root ends the hierarchy; cgroups removed a
        // moment ago may still be dying: try again for a while.
        let script = format!(
            "{} && umount {}",
            self.mount_command(),
            self.mount_point().display()
        );
        let gone = wait_until(Duration::from_secs(20), || {
            if !self.exists() {
                return true;
            }
            let _ = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            !self.exists()
        });
        if !gone {
            eprintln!(
                "warning: the cgroup hierarchy name={} is left (a cgroup below its root?)",
                self.name
            );
        }
    }
}

/// A loopback address nothing listens on right now (the kernel's pick).
pub fn free_loopback_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// What [`http_get_reply`] got: the status code, the header block (status
/// line included) and the body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET http://ADDR/PATH` over a fresh HTTP/1.0 connection (so the body is
/// never chunked), bounded by 20 s; returns the whole reply, or why not.
pub async fn http_get_reply(addr: SocketAddr, path: &str) -> Result<HttpReply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| format!("GET {path} from {addr} timed out"))??;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// [`http_get_reply`] reduced to the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let reply = http_get_reply(addr, path).await?;
    Ok((reply.status, reply.body))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Daemon {
    /// A daemon serving `/metrics` on a free loopback port (with `extra`
    /// arguments for rsupd after `--metrics-addr`), and that port.
    pub async fn start_with_metrics(extra: &[&str]) -> (Daemon, SocketAddr) {
        let addr = free_loopback_addr();
        let mut args = vec!["--metrics-addr".to_owned(), addr.to_string()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        (Daemon::start_with_args(&args).await, addr)
    }
}

/// A Prometheus server on loopback, killed (by its own child handle, so by
/// pid) and reaped on drop, also when the test panics; then the last lines
/// of its log are shown.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` (job `rsupd`) every second, and
    /// evaluating `rules` (if any) every second, with its configuration,
    /// storage and log in `dir`.
    pub fn start(dir: &Path, target: SocketAddr, rules: Option<&Path>) -> Prometheus {
        let addr = free_loopback_addr();
        let config = dir.join("prometheus.yml");
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - '{}'\n", r.display()))
            .unwrap_or_default();
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}\
                 scrape_configs:\n  - job_name: rsupd\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let log = dir.join("prometheus.log");
        let log_file = fs::File::create(&log).expect("creating prometheus.log");
        let log_err = log_file.try_clone().expect("dup prometheus.log");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning prometheus: {e} (install Debian's `prometheus`; scripts/test.sh does)")
        });
        Prometheus { child, addr, log }
    }

    /// Where its HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `Some(status)` once the server has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The path of an instant query of the HTTP API.
    pub fn query_path(query: &str) -> String {
        format!("/api/v1/query?query={}", percent_encode(query))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own, not yet reaped child: the pid is still ours.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- prometheus log, last lines ---\n{}\n--- end ---",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }

    #[test]
    fn mentions_whole_path_components_only() {
        let dir = Path::new("/tmp/rsup-test-1-1");
        assert!(mentions_path(
            "rsupd --state-dir /tmp/rsup-test-1-1/state",
            dir
        ));
        assert!(mentions_path("x --dir=/tmp/rsup-test-1-1", dir));
        assert!(mentions_path("lowerdir=/tmp/rsup-test-1-1,upperdir=", dir));
        assert!(!mentions_path(
            "rsupd --state-dir /tmp/rsup-test-1-10/state",
            dir
        ));
        assert!(!mentions_path("/tmp/rsup-test-1-1.old", dir));
    }

    #[test]
    fn proc_stat_of_self() {
        let me = std::process::id() as i32;
        let stat = proc_stat(me).expect("own stat");
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
        assert!(ProcId::of(me).expect("own id").exists());
    }

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
