//! Quarantine of container records that cannot be read.
//!
//! A container's record is its `config.json` (the spec) and `state.json`
//! (the last status). When rsupd starts and one of them cannot be read (empty,
//! garbage, a version it does not know, an I/O error) or one is missing while
//! the other says the create had finished, rsupd does not know what the
//! container is, so it must not act on it: its processes may run, its
//! address, veths, netns mount and cgroup are in use. Such a record is
//! **quarantined**:
//!
//! * the unreadable files are renamed aside (`state.json.quarantined-<unix
//!   time>`), never deleted, and `quarantine.json` records why (both
//!   best-effort: a full or read-only disk only leaves the files in place,
//!   and the next start quarantines them again);
//! * the container stays in the runtime's list in state
//!   [`ContainerState::Unknown`], addressable by id, id prefix and, when
//!   `config.json` was readable, by name; `inspect` shows the reason and
//!   its pid: the init of its live shim, found through the pid and start time
//!   `state.json` recorded, or else by a scan of `/proc` for a root process in
//!   rsupd's PID namespace whose argv is `rsup-shim __rsup-shim <its
//!   directory>`, plus that shim's child with the same argv (the init, a
//!   fork of the shim);
//! * nothing acts on it: being in the list, its id keeps its leases and
//!   cgroup through the start sweeps, [`Runtime::is_quarantined_link`] keeps
//!   its veths (named after its id), image layers are not collected while a
//!   quarantined container exists (it may mount any), and every verb but
//!   list, inspect, stats and `rm` is FAILED_PRECONDITION;
//! * `rm -f` cleans it up completely: SIGKILL to its shim and init through
//!   pidfds (the init's other processes die with it), then its leases on
//!   every network, its veths, its netns mount, its cgroup and its directory.
//!
//! Which partial records are still collected as before (nothing of them can
//! run; see [`examine`]): a directory with neither file, or with a readable
//! `config.json` and no `state.json` (a create that a crash cut short, or a
//! removal whose directory deletion was cut short), provided no shim of it
//! runs and no netns is mounted in it; and any record whose readable
//! `state.json` says it was being removed. A directory that an earlier rsupd
//! quarantined (it holds `quarantine.json` or a `*.quarantined-*` file)
//! stays quarantined until `rm -f`; to restore one by hand, put back good
//! files and delete the quarantine files while rsupd is stopped.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::container::{
    ContainerState, Entry, KILL_WAIT, OpReport, Runtime, STATE_VERSION, Status, adopt, lock,
};
use crate::names::quote;
use crate::process::SHIM_ARG;
use crate::spec::{ContainerSpec, LogConfig, User};
use crate::store::{self, StoreError};
use crate::supervise::EventKind;
use crate::{Error, sys};

/// The file that says why a directory is quarantined, and what the name of
/// a file renamed aside contains: both named in the store's layout.
pub use crate::store::{QUARANTINE_FILE, QUARANTINED_MARK};
const QUARANTINE_VERSION: u32 = 1;

/// `quarantine.json`.
#[derive(Debug, Serialize, Deserialize)]
struct QuarantineFile {
    version: u32,
    reason: String,
    quarantined_at: SystemTime,
    /// The files renamed aside, as they are named now.
    files: Vec<String>,
}

/// The quarantined containers of a runtime, by id.
pub(crate) type Registry = Mutex<HashMap<String, Arc<Quarantined>>>;

/// What the runtime keeps of a quarantined container besides its entry.
#[derive(Debug)]
pub(crate) struct Quarantined {
    pub(crate) reason: String,
    /// Its live processes as found at start (shims first, then inits).
    procs: Vec<Found>,
}

impl Quarantined {
    /// Whether any of its processes still runs.
    fn alive(&self) -> bool {
        self.procs.iter().any(|p| !has_exited(&p.fd))
    }
}

/// A live process of a container, pinned by a pidfd.
#[derive(Debug)]
struct Found {
    pid: i32,
    fd: Arc<OwnedFd>,
    /// Its init (else its shim).
    init: bool,
}

/// One of the two files of a record.
#[derive(Debug)]
enum Read<T> {
    Missing,
    Good(T),
    Bad(String),
}

fn read<T: DeserializeOwned>(path: &Path) -> Read<T> {
    match store::read_json::<T>(path) {
        Ok(None) => Read::Missing,
        Ok(Some(v)) => Read::Good(v),
        Err(StoreError::Json { source, .. }) => Read::Bad(source.to_string()),
        Err(StoreError::Io { op, source, .. }) => Read::Bad(format!("{op}: {source}")),
        Err(e) => Read::Bad(e.to_string()),
    }
}

/// Why a record is quarantined, and what of it could be read.
#[derive(Debug)]
pub(crate) struct Diagnosis {
    reason: String,
    /// Files to rename aside (unreadable ones).
    bad_files: Vec<&'static str>,
    spec: Option<ContainerSpec>,
    status: Option<Status>,
    /// An earlier rsupd quarantined it: nothing to rename or record.
    earlier: bool,
}

/// What [`examine`] found in a container directory.
#[derive(Debug)]
pub(crate) enum Examined {
    /// Both files read: load it as usual.
    Loaded(Box<ContainerSpec>, Box<Status>),
    /// Nothing of it can run (see the module documentation): collect it as
    /// before; the message says what it was.
    Collect(&'static str),
    Quarantine(Box<Diagnosis>),
}

/// Reads the record in `dir` and decides what to do with it.
pub(crate) fn examine(dir: &Path) -> Examined {
    let spec: Read<ContainerSpec> = read(&dir.join("config.json"));
    let mut status: Read<Status> = read(&dir.join("state.json"));
    if let Read::Good(s) = &status
        && s.version != STATE_VERSION
    {
        status = Read::Bad(format!(
            "version {} (this rsupd reads version {STATE_VERSION})",
            s.version
        ));
    }
    if let Some(reason) = quarantined_before(dir) {
        return Examined::Quarantine(Box::new(Diagnosis {
            reason,
            bad_files: Vec::new(),
            spec: good(spec),
            status: good(status),
            earlier: true,
        }));
    }
    let nothing_runs = || find_processes(dir, None).is_empty() && !netns_mounted(dir);
    let mut bad_files = Vec::new();
    let mut reasons = Vec::new();
    for (file, r) in [
        ("config.json", bad_of(&spec)),
        ("state.json", bad_of(&status)),
    ] {
        if let Some(r) = r {
            bad_files.push(file);
            reasons.push(format!("{file} is unreadable ({r})"));
        }
    }
    match (spec, status) {
        (Read::Good(spec), Read::Good(status)) => {
            Examined::Loaded(Box::new(spec), Box::new(status))
        }
        // Marked removed, then cut short: finish the removal (as before).
        (_, Read::Good(status)) if status.state == ContainerState::Removed => {
            Examined::Collect("finishing an interrupted remove")
        }
        (Read::Missing | Read::Good(_), Read::Missing) if nothing_runs() => {
            Examined::Collect("removing a half-created container")
        }
        (spec, status) => {
            if matches!(spec, Read::Missing) {
                reasons.push("config.json is missing".into());
            }
            if matches!(status, Read::Missing) {
                reasons.push("state.json is missing".into());
            }
            Examined::Quarantine(Box::new(Diagnosis {
                reason: reasons.join("; "),
                bad_files,
                spec: good(spec),
                status: good(status),
                earlier: false,
            }))
        }
    }
}

fn good<T>(r: Read<T>) -> Option<T> {
    match r {
        Read::Good(v) => Some(v),
        _ => None,
    }
}

fn bad_of<T>(r: &Read<T>) -> Option<&str> {
    match r {
        Read::Bad(reason) => Some(reason),
        _ => None,
    }
}

/// The reason an earlier rsupd recorded, if it quarantined `dir`.
fn quarantined_before(dir: &Path) -> Option<String> {
    let marked = std::fs::read_dir(dir).ok()?.flatten().any(|e| {
        let n = e.file_name();
        n == QUARANTINE_FILE
            || n.as_bytes()
                .windows(QUARANTINED_MARK.len())
                .any(|w| w == QUARANTINED_MARK.as_bytes())
    });
    if !marked {
        return None;
    }
    Some(match read::<QuarantineFile>(&dir.join(QUARANTINE_FILE)) {
        Read::Good(q) => q.reason,
        _ => "quarantined by an earlier rsupd (its quarantine.json is unreadable)".into(),
    })
}

fn netns_mounted(dir: &Path) -> bool {
    nix::sys::statfs::statfs(&dir.join("netns"))
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Renames `dir/file` aside as `file.quarantined-<unix time>[-N]`; returns
/// the new name.
fn rename_aside(dir: &Path, file: &str, now: SystemTime) -> Result<String, std::io::Error> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let base = format!("{file}{QUARANTINED_MARK}{secs}");
    let mut name = base.clone();
    let mut n = 1;
    while std::fs::symlink_metadata(dir.join(&name)).is_ok() {
        name = format!("{base}-{n}");
        n += 1;
    }
    std::fs::rename(dir.join(file), dir.join(&name))?;
    Ok(name)
}

// ---------------------------------------------------------------------------
// Finding the processes of a container whose record cannot be trusted

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    pid: i32,
    ppid: i32,
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: skip to the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let ppid = rest.nth(1)?.parse().ok()?;
    let start = rest.nth(17)?.parse().ok()?;
    Some(ProcStat { pid, ppid, start })
}

fn argv(pid: i32) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    Some(raw.split(|b| *b == 0).map(<[u8]>::to_vec).collect())
}

/// The directory a shim's argv names (`rsup-shim __rsup-shim DIR`; the
/// init, a fork of the shim, keeps it), if `argv` is a shim's.
fn shim_dir(argv: &[Vec<u8>]) -> Option<&Path> {
    match argv {
        [_, arg, path] if arg.as_slice() == SHIM_ARG.as_bytes() => {
            Some(Path::new(std::ffi::OsStr::from_bytes(path)))
        }
        _ => None,
    }
}

/// Whether `named` (from a shim's argv) is `dir`, spelled the same or
/// another way. Only ever asked of a root process of the host (see
/// [`is_host_root`]): anyone's argv could name a path whose `stat` hangs.
fn same_dir(named: &Path, dir: &Path) -> bool {
    if named == dir {
        return true;
    }
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    match (std::fs::metadata(named), std::fs::metadata(dir)) {
        (Ok(a), Ok(b)) => same(&a, &b),
        _ => false,
    }
}

/// Whether `pid` is in rsupd's own PID namespace and runs as real uid 0:
/// a shim, not a container process that copied a shim's argv (containers
/// have PID namespaces of their own).
fn is_host_root(pid: i32) -> bool {
    let ns = |p: &str| std::fs::metadata(format!("/proc/{p}/ns/pid")).map(|m| (m.dev(), m.ino()));
    let same_ns = match (ns("self"), ns(&pid.to_string())) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let uid0 = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            == Some("0")
    });
    same_ns && uid0
}

/// A pidfd on `p` if it is still the process that was read (same start
/// time once the fd pins it).
fn pin(p: ProcStat, init: bool) -> Option<Found> {
    let fd = sys::pidfd_open(p.pid).ok()?;
    (sys::process_start_time(p.pid) == Some(p.start)).then(|| Found {
        pid: p.pid,
        fd: Arc::new(fd),
        init,
    })
}

/// The live shims of the container in `dir`, then their inits, each pinned
/// by a pidfd. Through the pid and start time `status` recorded when it
/// has them, else (or when they are gone) by a scan of `/proc`.
fn find_processes(dir: &Path, status: Option<&Status>) -> Vec<Found> {
    if let Some(s) = status.filter(|s| s.shim_pid > 0)
        && let Some((shim, init)) = adopt(s)
    {
        let mut out = vec![Found {
            pid: s.shim_pid,
            fd: Arc::new(shim),
            init: false,
        }];
        out.extend(init.map(|fd| Found {
            pid: s.init_pid,
            fd: Arc::new(fd),
            init: true,
        }));
        return out;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    // Every process with a shim's argv (cheap: no path is looked up yet).
    let candidates: Vec<(ProcStat, Vec<Vec<u8>>)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != own))
        .filter_map(|pid| {
            let argv = argv(pid).filter(|a| shim_dir(a).is_some())?;
            Some((proc_stat(pid)?, argv))
        })
        .collect();
    // Its shims: root processes of rsupd's PID namespace naming `dir`.
    let shims: Vec<&(ProcStat, Vec<Vec<u8>>)> = candidates
        .iter()
        .filter(|(p, a)| is_host_root(p.pid) && shim_dir(a).is_some_and(|d| same_dir(d, dir)))
        .collect();
    // Their inits: a child of one with its very argv.
    let inits = candidates.iter().filter(|(p, a)| {
        shims
            .iter()
            .any(|(s, shim_argv)| s.pid == p.ppid && shim_argv == a)
    });
    let mut out: Vec<_> = shims.iter().filter_map(|(p, _)| pin(*p, false)).collect();
    out.extend(inits.filter_map(|(p, _)| pin(*p, true)));
    out
}

/// Whether the process behind `pidfd` has exited (it polls readable).
fn has_exited(pidfd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// Waits until the process behind `pidfd` has exited, at most `timeout`.
async fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    if has_exited(pidfd) {
        return true;
    }
    let Ok(fd) = pidfd.try_clone() else {
        return false;
    };
    match sys::async_pidfd(fd) {
        Ok(afd) => tokio::time::timeout(timeout, afd.readable()).await.is_ok(),
        Err(_) => {
            let deadline = tokio::time::Instant::now() + timeout;
            while !has_exited(pidfd) {
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            true
        }
    }
}

// ---------------------------------------------------------------------------
// The runtime side

/// The spec of a container whose `config.json` could not be read: no name
/// (it is addressed by id), nothing to run, no network, mount or limit
/// known.
fn unknown_spec() -> ContainerSpec {
    ContainerSpec {
        name: String::new(),
        rootfs: PathBuf::new(),
        image: None,
        command: Vec::new(),
        executable: String::new(),
        env: Vec::new(),
        working_dir: String::new(),
        user_spec: String::new(),
        user: User { uid: 0, gid: 0 },
        user_at_start: false,
        hostname: String::new(),
        auto_remove: false,
        log: LogConfig::default(),
        resources: Default::default(),
        restart: Default::default(),
        supervisor: None,
        health: None,
        networks: Vec::new(),
        ports: Vec::new(),
        security: Default::default(),
        mounts: Vec::new(),
        read_only: false,
        userns: None,
    }
}

/// The status of a container whose `state.json` could not be read.
fn unknown_status(dir: &Path) -> Status {
    let created_at = std::fs::metadata(dir)
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .unwrap_or_else(|_| SystemTime::now());
    Status::fresh(ContainerState::Unknown, created_at)
}

/// How a message names a container: its name, else its short id.
fn label(entry: &Entry) -> String {
    if entry.spec.name.is_empty() {
        entry.id.chars().take(12).collect()
    } else {
        entry.spec.name.clone()
    }
}

impl Runtime {
    /// Quarantines the container in `dir` (at start, see the module
    /// documentation): renames its unreadable files aside, records why,
    /// finds its live processes and lists it in state "unknown".
    pub(crate) fn quarantine(&self, id: &str, dir: &Path, d: Diagnosis) {
        let Diagnosis {
            mut reason,
            bad_files,
            spec,
            status,
            earlier,
        } = d;
        if !earlier {
            let now = SystemTime::now();
            let mut moved = Vec::new();
            for f in bad_files {
                match rename_aside(dir, f, now) {
                    Ok(name) => moved.push(name),
                    Err(e) => {
                        warn!(container = %id, file = f, error = %e, "cannot rename an unreadable file aside")
                    }
                }
            }
            if !moved.is_empty() {
                reason = format!("{reason}; moved aside to {}", moved.join(", "));
            }
            let record = QuarantineFile {
                version: QUARANTINE_VERSION,
                reason: reason.clone(),
                quarantined_at: now,
                files: moved,
            };
            if let Err(e) = store::write_json(&dir.join(QUARANTINE_FILE), &record) {
                warn!(container = %id, error = %e, "cannot record the quarantine");
            }
        }
        let procs = find_processes(dir, status.as_ref());
        let mut status = status.unwrap_or_else(|| unknown_status(dir));
        // The init is the pid a container shows.
        let pid = |init: bool| procs.iter().find(|p| p.init == init).map_or(0, |p| p.pid);
        let (shim, init) = (pid(false), pid(true));
        status.state = ContainerState::Unknown;
        status.error = reason.clone();
        status.shim_pid = shim;
        status.init_pid = init;
        status.next_start_at = None;
        let entry = Arc::new(Entry::new(
            id.to_string(),
            spec.unwrap_or_else(unknown_spec),
            dir.to_path_buf(),
            status,
        ));
        warn!(
            container = %id,
            name = %entry.spec.name,
            %reason,
            shim,
            init,
            "quarantined a container whose record cannot be read: nothing acts on it until `rm -f`"
        );
        let q = Arc::new(Quarantined {
            reason: reason.clone(),
            procs,
        });
        self.watch_quarantined(&entry, &q);
        lock(&self.inner.quarantined).insert(id.to_string(), q);
        lock(&self.inner.containers).push(entry.clone());
        self.inner
            .unreadable_containers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.event(
            &entry,
            EventKind::Quarantine,
            &[("reason", reason), ("pid", init.to_string())],
        );
    }

    /// Clears the pids a quarantined container shows once its shim exits
    /// (in memory only: its record is not written).
    fn watch_quarantined(&self, entry: &Arc<Entry>, q: &Quarantined) {
        let Some(fd) = q
            .procs
            .iter()
            .find(|p| !p.init)
            .and_then(|p| p.fd.try_clone().ok())
        else {
            return;
        };
        let weak = Arc::downgrade(entry);
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let Ok(afd) = sys::async_pidfd(fd) else {
                return;
            };
            tokio::select! {
                _ = afd.readable() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Some(e) = weak.upgrade() {
                info!(container = %e.id, "the shim of a quarantined container exited");
                e.status.send_modify(|s| {
                    s.shim_pid = 0;
                    s.init_pid = 0;
                });
            }
        });
    }

    /// The quarantine of container `id`, if it is quarantined.
    pub(crate) fn quarantined(&self, id: &str) -> Option<Arc<Quarantined>> {
        lock(&self.inner.quarantined).get(id).cloned()
    }

    /// Whether container `id` is quarantined (its record could not be read:
    /// whatever it holds is its own).
    pub fn is_quarantined(&self, id: &str) -> bool {
        lock(&self.inner.quarantined).contains_key(id)
    }

    /// Ids of the quarantined containers.
    pub fn quarantined_ids(&self) -> Vec<String> {
        lock(&self.inner.quarantined).keys().cloned().collect()
    }

    /// FAILED_PRECONDITION for every verb but list, inspect, stats and rm
    /// on a quarantined container.
    pub(crate) fn refuse_quarantined(&self, entry: &Entry) -> Result<(), Error> {
        let Some(q) = self.quarantined(&entry.id) else {
            return Ok(());
        };
        Err(Error::FailedPrecondition(format!(
            "container {} is quarantined: its record cannot be read ({}); nothing acts on it, \
             `rsupctl rm -f {}` stops its processes and cleans it up",
            label(entry),
            q.reason,
            entry.id.chars().take(12).collect::<String>()
        )))
    }

    /// The host end of a veth is named after its container's id (see
    /// [`Runtime::lease`]): whether `link` is one of a quarantined
    /// container's, whose attachments may not be known.
    pub(crate) fn is_quarantined_link(&self, link: &str) -> bool {
        let prefix = &self.inner.config.net.prefix;
        lock(&self.inner.quarantined)
            .keys()
            .any(|id| link.starts_with(&veth_prefix(prefix, id)))
    }

    /// FAILED_PRECONDITION when a quarantined container holds an address on
    /// network `n` (removing it would pull the bridge from under it).
    pub(crate) fn refuse_quarantined_on_network(
        &self,
        n: &crate::network::Network,
    ) -> Result<(), Error> {
        let ids = self.quarantined_ids();
        let users: Vec<String> = lock(&n.pool)
            .leases()
            .filter(|(_, owner)| ids.iter().any(|id| id == owner))
            .map(|(_, owner)| owner.chars().take(12).collect())
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "network {} is in use by quarantined container {}: `rsupctl rm -f` it first",
            n.spec.name,
            users.join(", ")
        )))
    }

    /// FAILED_PRECONDITION while a quarantined container whose spec is
    /// unknown exists: it may mount volume `name`.
    pub(crate) fn refuse_unknown_mounts(&self, name: &str) -> Result<(), Error> {
        let unknown: Vec<String> = lock(&self.inner.containers)
            .iter()
            .filter(|e| e.spec.name.is_empty() && self.is_quarantined(&e.id))
            .map(|e| e.id.chars().take(12).collect())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "volume {} may be in use by quarantined container {} (its config cannot be read): \
             `rsupctl rm -f` it first",
            quote(name),
            unknown.join(", ")
        )))
    }

    /// Removes a quarantined container: a live one only with `force`, which
    /// kills its shim and init first (pidfds), then releases its leases on
    /// every network and deletes its veths, netns mount, cgroup and
    /// directory. What is already gone is fine; the rest goes on after an
    /// error, which is reported at the end.
    pub(crate) async fn remove_quarantined(
        &self,
        entry: &Arc<Entry>,
        force: bool,
    ) -> Result<OpReport, Error> {
        let op = entry.op.clone().lock_owned().await;
        let Some(q) = self.quarantined(&entry.id) else {
            // Removed meanwhile.
            return Ok(OpReport::default());
        };
        let name = label(entry);
        if q.alive() && !force {
            return Err(Error::FailedPrecondition(format!(
                "container {name} is quarantined and its processes run: force the removal \
                 (`rsupctl rm -f`) to stop them"
            )));
        }
        for Found { pid, fd, .. } in &q.procs {
            match sys::pidfd_send_signal(&**fd, libc::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Sys {
                        op: "pidfd_send_signal",
                        container: format!("{name} (pid {pid})"),
                        source,
                    });
                }
            }
        }
        for Found { pid, fd, .. } in &q.procs {
            if !wait_exit(fd, KILL_WAIT).await {
                return Err(Error::FailedPrecondition(format!(
                    "container {name}: pid {pid} did not die after SIGKILL"
                )));
            }
        }
        lock(&self.inner.quarantined).remove(&entry.id);
        self.inner
            .unreadable_containers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // Ends its DNS follower and any waiter (in memory: its record is
        // not written).
        entry
            .status
            .send_modify(|s| s.state = ContainerState::Removed);
        self.forget(entry);
        self.event(entry, EventKind::Destroy, &[]);
        // The rest runs to its end even if the caller goes away.
        let (rt, e) = (self.clone(), entry.clone());
        let teardown = self.inner.tracker.spawn(async move {
            let _op = op;
            rt.tear_down_quarantined(&e).await
        });
        let warnings = teardown
            .await
            .map_err(|e| Error::FailedPrecondition(format!("remove task failed: {e}")))?;
        for w in &warnings {
            warn!(container = %entry.id, warning = %w, "removed, but");
        }
        info!(container = %entry.id, "removed a quarantined container");
        Ok(OpReport { warnings })
    }

    /// Removes what a quarantined container holds once its processes are
    /// gone: its leases on every network, its veths, netns mount, cgroup and
    /// directory. Every part is tried; returns what could not be removed.
    async fn tear_down_quarantined(&self, entry: &Arc<Entry>) -> Vec<String> {
        let name = label(entry);
        let mut warnings: Vec<String> = Vec::new();
        for f in self.release_all_leases(&entry.id) {
            warnings.push(format!(
                "container {name}: its addresses are released, but not saved: {f}"
            ));
        }
        for f in self.delete_quarantined_links(entry).await {
            warnings.push(format!("container {name}: network: {f}"));
        }
        if let Err(f) = crate::network::unmount_netns(&entry.dir.join("netns")) {
            warnings.push(format!("container {name}: network: {f}"));
        }
        warnings.extend(
            self.remove_cgroup_and_dir(
                entry,
                "rsupd lists it again at its next start, for another rm -f",
            )
            .await,
        );
        // It may have mounted any layer: collect what nothing uses now.
        self.collect_layers().await;
        warnings
    }

    /// Releases every lease `id` holds, on every network, and its DNS
    /// records; returns the networks whose release could not be saved.
    fn release_all_leases(&self, id: &str) -> Vec<String> {
        let mut failures = Vec::new();
        for n in lock(&self.inner.networks).clone() {
            n.records
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            let freed = lock(&n.pool).release_owner(id);
            if !freed.is_empty()
                && let Err(e) = self.persist_network(&n)
            {
                warn!(network = %n.spec.name, error = %e, "cannot persist the released lease");
                failures.push(format!("network {}: {e}", n.spec.name));
            }
        }
        failures
    }

    /// Deletes the host ends of a quarantined container's veths: the ones
    /// its spec names, if known, and every link named after its id. Returns
    /// what could not be deleted.
    async fn delete_quarantined_links(&self, entry: &Entry) -> Vec<String> {
        let nl = match self.netlink().await {
            Ok(nl) => nl,
            Err(e) => return vec![e.to_string()],
        };
        let prefix = veth_prefix(&self.inner.config.net.prefix, &entry.id);
        let mut failures = Vec::new();
        let mut links: Vec<String> = match nl.links_with_prefix(&prefix).await {
            Ok(l) => l,
            Err(e) => {
                failures.push(e.to_string());
                Vec::new()
            }
        };
        for a in &entry.spec.networks {
            if !links.contains(&a.host_ifname) {
                links.push(a.host_ifname.clone());
            }
        }
        for l in links {
            if let Err(e) = nl.delete_link(&l).await {
                warn!(link = %l, error = %e, "cannot delete the veth");
                failures.push(format!("veth {l}: {e}"));
            }
        }
        failures
    }
}

/// The common start of the host ends of container `id`'s veths.
fn veth_prefix(prefix: &str, id: &str) -> String {
    format!("{prefix}v{}", &crate::network::hash8(id)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        let mut s = unknown_status(Path::new("/"));
        s.state = ContainerState::Running;
        s
    }

    fn spec() -> ContainerSpec {
        let mut s = unknown_spec();
        s.name = "web".into();
        s
    }

    fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(t.path().join(name), content).expect("write");
        }
        t
    }

    fn json<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("json")
    }

    fn reason(e: Examined) -> Diagnosis {
        match e {
            Examined::Quarantine(d) => *d,
            other => panic!("expected a quarantine, got {other:?}"),
        }
    }

    #[test]
    fn readable_records_load() {
        let t = dir_with(&[
            ("config.json", &json(&spec())),
            ("state.json", &json(&status())),
        ]);
        assert!(matches!(examine(t.path()), Examined::Loaded(..)));
    }

    #[test]
    fn empty_garbage_and_wrong_version_are_quarantined() {
        let (c, s) = (json(&spec()), json(&status()));
        let mut v2 = status();
        v2.version = 2;
        let v2 = json(&v2);
        for (config, state, bad, what) in [
            (&c[..], &b""[..], "state.json", "EOF"),
            (
                &c[..],
                &b"{garbage"[..],
                "state.json",
                "key must be a string",
            ),
            (&b""[..], &s[..], "config.json", "EOF"),
            (&b"\x00\x01"[..], &s[..], "config.json", "expected value"),
            (&c[..], &v2[..], "state.json", "version 2"),
        ] {
            let t = dir_with(&[("config.json", config), ("state.json", state)]);
            let d = reason(examine(t.path()));
            assert_eq!(d.bad_files, vec![bad], "{}", d.reason);
            assert!(
                d.reason.contains(bad) && d.reason.contains(what),
                "{}",
                d.reason
            );
            assert!(!d.earlier);
            // What could be read is kept.
            assert_eq!(d.spec.is_some(), bad != "config.json");
            assert_eq!(d.status.is_some(), bad != "state.json");
        }
    }

    #[test]
    fn a_missing_config_beside_a_state_is_quarantined() {
        let t = dir_with(&[("state.json", &json(&status()))]);
        let d = reason(examine(t.path()));
        assert!(d.bad_files.is_empty());
        assert!(d.reason.contains("config.json is missing"), "{}", d.reason);
    }

    #[test]
    fn half_made_and_removed_records_are_collected() {
        let t = dir_with(&[]);
        assert!(matches!(examine(t.path()), Examined::Collect(m) if m.contains("half-created")));
        let t = dir_with(&[("config.json", &json(&spec()))]);
        assert!(matches!(examine(t.path()), Examined::Collect(m) if m.contains("half-created")));
        let mut removed = status();
        removed.state = ContainerState::Removed;
        for config in [&b""[..], &b"junk"[..]] {
            let t = dir_with(&[("config.json", config), ("state.json", &json(&removed))]);
            assert!(
                matches!(examine(t.path()), Examined::Collect(m) if m.contains("interrupted remove"))
            );
        }
        let t = dir_with(&[("state.json", &json(&removed))]);
        assert!(matches!(examine(t.path()), Examined::Collect(_)));
    }

    #[test]
    fn a_quarantine_is_kept_across_starts() {
        let t = dir_with(&[("config.json", &json(&spec())), ("state.json", b"")]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let name = rename_aside(t.path(), "state.json", now).expect("rename");
        assert_eq!(name, "state.json.quarantined-1700000000");
        assert!(!t.path().join("state.json").exists());
        // Without quarantine.json (it could not be written) the renamed
        // file alone keeps the record quarantined, not "half-created".
        let d = reason(examine(t.path()));
        assert!(d.earlier && d.spec.is_some(), "{d:?}");
        let record = QuarantineFile {
            version: QUARANTINE_VERSION,
            reason: "state.json is unreadable (EOF)".into(),
            quarantined_at: now,
            files: vec![name],
        };
        store::write_json(&t.path().join(QUARANTINE_FILE), &record).expect("record");
        let d = reason(examine(t.path()));
        assert_eq!(d.reason, "state.json is unreadable (EOF)");
        // A second rename in the same second gets another name.
        std::fs::write(t.path().join("state.json"), b"").expect("write");
        let again = rename_aside(t.path(), "state.json", now).expect("rename");
        assert_eq!(again, "state.json.quarantined-1700000000-1");
    }

    #[test]
    fn shim_argv_must_name_the_directory() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("c");
        std::fs::create_dir(&dir).expect("mkdir");
        let v = |args: &[&[u8]]| args.iter().map(|a| a.to_vec()).collect::<Vec<_>>();
        let d = dir.as_os_str().as_bytes();
        let named = |args: &[&[u8]]| shim_dir(&v(args)).is_some_and(|n| same_dir(n, &dir));
        assert!(named(&[b"rsup-shim", b"__rsup-shim", d]));
        // Spelled another way.
        let other = t.path().join(".").join("c");
        assert!(named(&[b"x", b"__rsup-shim", other.as_os_str().as_bytes()]));
        assert!(!named(&[b"rsup-shim", b"__rsup-exec", d]));
        assert!(!named(&[b"rsup-shim", b"__rsup-shim", b"/elsewhere"]));
        assert!(!named(&[b"rsup-shim", b"__rsup-shim", d, b"extra"]));
        assert!(!named(&[b"__rsup-shim", d]));
    }

    #[test]
    fn proc_stat_reads_ppid_and_start_time() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let s = proc_stat(me).expect("own stat");
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(Some(s.start), sys::process_start_time(me));
        // This test process is not a shim of anything.
        assert!(find_processes(Path::new("/nonexistent/dir"), None).is_empty());
    }
}
