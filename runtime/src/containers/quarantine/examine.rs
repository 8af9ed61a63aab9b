//! Reading a container's record at start, and what to do with a record
//! that cannot be read: the diagnosis, the files renamed aside, the live
//! processes found by their command line (see the module above). No
//! service: the containers service acts on what this finds.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::containers::entry::{ContainerState, Entry, Status, adopt};
use crate::lifecycle::state::STATE_VERSION;
use crate::process::SHIM_ARG;
use crate::spec::{ContainerSpec, LogConfig, User};
use crate::store::{self, StoreError};
use crate::sys;

/// The file that says why a directory is quarantined, and what the name of
/// a file renamed aside contains: both named in the store's layout.
pub use crate::store::{QUARANTINE_FILE, QUARANTINED_MARK};
pub(super) const QUARANTINE_VERSION: u32 = 1;

/// `quarantine.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct QuarantineFile {
    pub(super) version: u32,
    pub(super) reason: String,
    pub(super) quarantined_at: SystemTime,
    /// The files renamed aside, as they are named now.
    pub(super) files: Vec<String>,
}

/// The quarantined containers of a runtime, by id.
pub(crate) type Registry = Mutex<HashMap<String, Arc<Quarantined>>>;

/// What the runtime keeps of a quarantined container besides its entry.
#[derive(Debug)]
pub(crate) struct Quarantined {
    pub(crate) reason: String,
    /// Its live processes as found at start (shims first, then inits).
    pub(crate) procs: Vec<Found>,
}

impl Quarantined {
    /// Whether any of its processes still runs.
    pub(crate) fn alive(&self) -> bool {
        self.procs.iter().any(|p| !has_exited(&p.fd))
    }
}

/// A live process of a container, pinned by a pidfd.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) pid: i32,
    pub(crate) fd: Arc<OwnedFd>,
    /// Its init (else its shim).
    pub(crate) init: bool,
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
    pub(crate) reason: String,
    /// Files to rename aside (unreadable ones).
    pub(crate) bad_files: Vec<&'static str>,
    pub(crate) spec: Option<ContainerSpec>,
    pub(crate) status: Option<Status>,
    /// An earlier rsupd quarantined it: nothing to rename or record.
    pub(crate) earlier: bool,
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
pub(super) fn rename_aside(
    dir: &Path,
    file: &str,
    now: SystemTime,
) -> Result<String, std::io::Error> {
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
pub(super) fn find_processes(dir: &Path, status: Option<&Status>) -> Vec<Found> {
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
pub(super) fn has_exited(pidfd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// Waits until the process behind `pidfd` has exited, at most `timeout`.
pub(super) async fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
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
pub(super) fn unknown_spec() -> ContainerSpec {
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
        labels: Default::default(),
    }
}

/// The status of a container whose `state.json` could not be read.
pub(super) fn unknown_status(dir: &Path) -> Status {
    let created_at = std::fs::metadata(dir)
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .unwrap_or_else(|_| SystemTime::now());
    Status::fresh(ContainerState::Unknown, created_at)
}

/// How a message names a container: its name, else its short id.
pub(super) fn label(entry: &Entry) -> String {
    if entry.spec.name.is_empty() {
        entry.id.chars().take(12).collect()
    } else {
        entry.spec.name.clone()
    }
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
