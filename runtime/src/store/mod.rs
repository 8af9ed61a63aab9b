//! On-disk state of rsupd.
//!
//! Layout under the state directory (default `/var/lib/rsup`):
//!
//! ```text
//! rsupd.lock                  flock(2)ed by the one rsupd that owns this dir
//! containers/<id>/
//!     config.json             the validated spec (written once, at create)
//!     state.json              last known status (rewritten on every change)
//!     exit.json               written by the shim when the command ended
//!     shim.log                the shim's own diagnostics
//!     container.log[.N]       stdout/stderr in CRI format, rotated by size
//!     hostname hosts resolv.conf
//!                             written by the init at each start (0644) and
//!                             bind-mounted onto the container's /etc files
//!     log-dropped             log output the shim could not write (bytes,
//!                             records), overwritten in place (see crate::logs)
//!     quarantine.json         why the record could not be read at a start,
//!     *.quarantined-<time>    and the unreadable files, renamed aside (see
//!                             `crate::containers::quarantine`)
//!     upper/ work/            overlayfs writable layer of the container
//!     rootfs/                 mount point of the overlay (inside the
//!                             container's mount namespace only)
//! ```
//!
//! Every JSON file carries a `version` and is replaced atomically: written to
//! a temporary file in the same directory, fsync'ed, renamed over the old one,
//! and the directory fsync'ed, so a crash leaves either the old or the new
//! content, never a torn file (a new container's `config.json` leaves the
//! directory's fsync to its `state.json`, written right after:
//! [`write_json_then`]). The temporary file (`.NAME.PID.N.tmp`) is
//! removed on every error; those a crash leaves are removed at the next
//! start ([`sweep_temp_files`]).
//!
//! # Modes
//! Everything under the state directory is root's: a container writes
//! setuid binaries into its upper dir and its volumes, and `config.json`
//! holds its environment (secrets). The root is 0710 (as Docker's
//! `/var/lib/docker`), its top-level directories ([`TOP_DIRS`]) and every
//! `containers/<id>` and `volumes/<name>` 0700, every file rsup writes
//! (config, state, exit, logs, records, temporary files) 0600, created with
//! that mode (never created wider and narrowed after). What a container
//! sees keeps Docker's modes: `upper/` and `work/` (the overlay root takes
//! the upper dir's attributes) and a new volume's `_data` are 0755; the 0700
//! directories above them keep host users out. [`fix_modes`] narrows an
//! existing state directory at start.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors of the state store, with the path they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state directory {0} is in use by another rsupd")]
    Locked(PathBuf),
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Writes `value` as JSON to `path` atomically (temp file, fsync, rename,
/// fsync of the directory).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    write_atomic(path, &json_bytes(path, value)?)
}

/// [`write_json`] without the directory's sync: for a file whose entry a
/// later [`write_atomic`] into the same directory makes durable (a new
/// container's `config.json`, before the `state.json` that marks the
/// create complete: a crash before that sync leaves an incomplete create,
/// which is collected as one).
pub(crate) fn write_json_then<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    replace(path, &json_bytes(path, value)?)
}

fn json_bytes<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `data` atomically; the file is 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    replace(path, data)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))?;
    Ok(())
}

/// [`write_atomic`] but the directory's sync.
fn replace(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    // Unique per write: two writers of one file never share a temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let mut f = create_private_file(&tmp)?;
    // From here until the rename, every error removes the temporary file:
    // a full disk must not fill up with half-written copies.
    let written = f
        .write_all(data)
        .map_err(io_err("write", &tmp))
        .and_then(|()| f.sync_all().map_err(io_err("fsync", &tmp)));
    drop(f);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename", path))) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Whether `name` is a temporary file of [`write_atomic`]
/// (`.NAME.PID.N.tmp`); returns its writer's pid.
fn temp_file_pid(name: &str) -> Option<i32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut it = inner.rsplitn(3, '.');
    let seq = it.next()?;
    let pid = it.next()?;
    let base = it.next()?;
    if base.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Removes the temporary files [`write_atomic`] left behind (a crash, or a
/// kill, between its create and its rename) in the directories it writes
/// to under `root`: every `containers/<id>/`, `networks/`, `supervisors/`,
/// the image store's `images/images/` and `images/layers/<hex>/`. A file
/// whose writer is still alive (a shim writing `exit.json` right now) is
/// left alone; a pid reused since is merely kept until the next sweep.
/// Returns what it removed, for the caller to log.
pub fn sweep_temp_files(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![
        root.join("networks"),
        root.join("supervisors"),
        root.join("images").join("images"),
    ];
    for parent in [root.join("containers"), root.join("images").join("layers")] {
        for e in read_dir_or_empty(&parent).unwrap_or_default() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    let own = std::process::id() as i32;
    let mut removed = Vec::new();
    for dir in dirs {
        for e in read_dir_or_empty(&dir).unwrap_or_default() {
            let Some(pid) = e.file_name().to_str().and_then(temp_file_pid) else {
                continue;
            };
            let alive = pid != own && Path::new(&format!("/proc/{pid}")).exists();
            if alive || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StoreError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// One file of [`read_json_dir`]: its path and its content or why not.
pub type JsonFile<T> = (PathBuf, Result<T, StoreError>);

/// Reads every `*.json` file of `dir` (created if missing). Unreadable files
/// are returned as errors beside the good ones, for the caller to report.
pub fn read_json_dir<T: DeserializeOwned>(dir: &Path) -> Result<Vec<JsonFile<T>>, StoreError> {
    if !dir.exists() {
        private_dir(dir)?;
    }
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("read", dir))?.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match read_json::<T>(&p) {
            Ok(Some(v)) => out.push((p, Ok(v))),
            Ok(None) => {}
            Err(err) => out.push((p, Err(err))),
        }
    }
    Ok(out)
}

/// Holds the exclusive lock of a state directory for as long as it lives.
#[derive(Debug)]
pub struct StateLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Mode of the state root: root's, and traversable by its group (root),
/// as Docker keeps `/var/lib/docker`.
pub const ROOT_MODE: u32 = 0o710;
/// Mode of every directory of rsup's own under the root.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file rsup writes under the root.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of the directories whose attributes a container sees: `upper/` and
/// `work/` (the overlay root) and a new volume's `_data`.
pub const VISIBLE_DIR_MODE: u32 = 0o755;
/// The file of a container directory that counts what its log writer
/// dropped (the log writer's record; see `logs`).
pub const LOG_DROPPED_FILE: &str = "log-dropped";
/// The file of a quarantined container directory that says why (see
/// `quarantine`).
pub const QUARANTINE_FILE: &str = "quarantine.json";
/// What the name of a record renamed aside by the quarantine contains.
pub const QUARANTINED_MARK: &str = ".quarantined-";
/// The top-level directories of the state root; all [`PRIVATE_DIR_MODE`].
pub const TOP_DIRS: &[&str] = &[
    "containers",
    "volumes",
    "networks",
    "supervisors",
    "run",
    "uploads",
    "images",
    "userns",
];

/// Creates `dir` (and its parents) and makes it root's alone (0700): for
/// trees that keep image files with their owners and setuid bits, which
/// containers reach through overlayfs (it reads lower dirs with the
/// mounter's credentials) and host users must not. Created with that mode
/// (no moment with a wider one); an existing directory is narrowed.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    make_dir(dir, PRIVATE_DIR_MODE)
}

/// Creates `dir` (and missing parents) with `mode` and sets `mode` on it
/// (mkdir applies the umask; an existing directory keeps another mode).
fn make_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err("mkdir", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dir))
}

/// Creates the state root (0710) and its [`TOP_DIRS`] (0700), but for
/// `userns/`, which is made with the first shifted copy.
pub fn create_root(root: &Path) -> Result<(), StoreError> {
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
    }
    make_dir(root, ROOT_MODE)?;
    for d in TOP_DIRS.iter().filter(|d| **d != "userns") {
        private_dir(&root.join(d))?;
    }
    Ok(())
}

/// Creates a directory whose attributes a container sees (`upper/`,
/// `work/`, a new volume's `_data`) with Docker's 0755, whatever the umask;
/// its private parents keep host users out.
pub(crate) fn visible_dir(dir: &Path) -> Result<(), StoreError> {
    make_dir(dir, VISIBLE_DIR_MODE)
}

/// Creates a new volume's directory `volumes/<name>` (0700) with its
/// `_data` (0755, the volume's root as the container sees it). An existing
/// `_data` keeps its mode: the container may have changed it.
pub(crate) fn volume_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    private_dir(dir)?;
    let data = dir.join("_data");
    match fs::DirBuilder::new().mode(VISIBLE_DIR_MODE).create(&data) {
        Ok(()) => fs::set_permissions(&data, fs::Permissions::from_mode(VISIBLE_DIR_MODE))
            .map_err(io_err("chmod", &data)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("mkdir", &data)(e)),
    }
}

/// Creates a new, empty file readable by root only (0600 from the start;
/// refuses an existing one).
pub(crate) fn create_private_file(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))
}

/// Opens a lock file for an flock, creating it if needed (never truncating:
/// its content, if any, is not ours to lose); a new one is 0600.
pub(crate) fn open_lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(io_err("open", path))
}

/// One mode [`fix_modes`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeFix {
    pub path: PathBuf,
    pub from: u32,
    pub to: u32,
}

/// Files of a container directory that are rsup's and private.
fn is_private_container_file(name: &str) -> bool {
    matches!(
        name,
        "config.json"
            | "state.json"
            | "exit.json"
            | "shim.log"
            | "container.log"
            | LOG_DROPPED_FILE
            | QUARANTINE_FILE
    ) || name.contains(QUARANTINED_MARK)
        || name
            .strip_prefix("container.log.")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// Brings an existing state directory to the modes described in the
/// module documentation: the root 0710; [`TOP_DIRS`], every
/// `containers/<id>` and `volumes/<name>` 0700; the lock, the files of
/// every container and the `networks/` and `supervisors/` records 0600.
/// What a container sees (`upper/`, `_data`, ...) is not touched. Symlinks
/// are never followed (nothing is opened through one). Returns what it
/// changed, for the caller to log; the first error stops it.
pub fn fix_modes(root: &Path) -> Result<Vec<ModeFix>, StoreError> {
    let mut fixes = Vec::new();
    let mut fix = |path: &Path, dir: bool, mode: u32| -> Result<(), StoreError> {
        if let Some(f) = set_mode_nofollow(path, dir, mode)? {
            fixes.push(f);
        }
        Ok(())
    };
    fix(root, true, ROOT_MODE)?;
    fix(&root.join("rsupd.lock"), false, PRIVATE_FILE_MODE)?;
    for d in TOP_DIRS {
        fix(&root.join(d), true, PRIVATE_DIR_MODE)?;
    }
    for top in ["containers", "volumes"] {
        for e in read_dir_or_empty(&root.join(top))? {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            fix(&p, true, PRIVATE_DIR_MODE)?;
            if top != "containers" {
                continue;
            }
            for f in read_dir_or_empty(&p)? {
                let name = f.file_name();
                if f.file_type().is_ok_and(|t| t.is_file())
                    && name.to_str().is_some_and(is_private_container_file)
                {
                    fix(&f.path(), false, PRIVATE_FILE_MODE)?;
                }
            }
        }
    }
    for top in ["networks", "supervisors"] {
        for e in read_dir_or_empty(&root.join(top))? {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                fix(&e.path(), false, PRIVATE_FILE_MODE)?;
            }
        }
    }
    Ok(fixes)
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("read", dir)(e)),
    }
}

/// Sets `mode` on the directory or regular file at `path` through an fd
/// opened with O_NOFOLLOW (a symlink, or something of another type, is left
/// alone); `None` when it is missing or already has that mode.
fn set_mode_nofollow(path: &Path, dir: bool, mode: u32) -> Result<Option<ModeFix>, StoreError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    // Only directories and regular files are opened (a device or fifo never
    // is); the fd's own type is checked again below.
    match fs::symlink_metadata(path) {
        Ok(m) if (m.is_dir() && dir) || (m.is_file() && !dir) => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat", path)(e)),
    }
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let f = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let md = f.metadata().map_err(io_err("stat", path))?;
    if md.is_dir() != dir || !(md.is_dir() || md.is_file()) {
        return Ok(None);
    }
    let from = md.mode() & 0o7777;
    if from == mode {
        return Ok(None);
    }
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))?;
    Ok(Some(ModeFix {
        path: path.to_path_buf(),
        from,
        to: mode,
    }))
}

impl StateLock {
    /// [`StateLock::acquire`], trying again for up to `patience` while the
    /// lock is held. An rsupd killed while it was starting a helper (a shim,
    /// an exec) leaves that child holding the lock's open file until the
    /// child's exec closes it: an rsupd started right after the crash waits
    /// that moment out instead of failing. A live rsupd is still refused,
    /// after `patience`.
    pub async fn acquire_patiently(
        dir: &Path,
        patience: std::time::Duration,
    ) -> Result<StateLock, StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match StateLock::acquire(dir) {
                Err(StoreError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Takes `dir/rsupd.lock` with a non-blocking exclusive flock; fails with
    /// [`StoreError::Locked`] if another process holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, StoreError> {
        let path = dir.join("rsupd.lock");
        let file = open_lock_file(&path)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Locked(dir.to_path_buf())),
            Err((_, e)) => Err(io_err("flock", &path)(e.into())),
        }
    }
}

/// A random 64-character hex id (containers, spooled uploads, views).
pub fn random_id() -> String {
    use std::io::Read;
    use std::time::SystemTime;
    let mut b = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Fall back on time and pid; ids only need to be unique here.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        b[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The mount point and source of the filesystem holding `path` (which need
/// not exist: its nearest existing parent is resolved), from this
/// process' mountinfo.
pub fn mount_of_path(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = path
        .ancestors()
        .find_map(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| path.to_path_buf());
    mount_of(&info, &path)
}

/// The mount point and source of the mount in `mountinfo` that holds
/// `path` (the longest mount point above it; the last one wins among
/// mounts stacked on one point).
pub(crate) fn mount_of(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    let mut best: Option<(usize, String, String)> = None;
    for l in mountinfo.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let Some(point) = pre.split(' ').nth(4) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if !path.starts_with(&point) {
            continue;
        }
        let source = post.split(' ').nth(1).unwrap_or("?").to_string();
        let len = Path::new(&point).components().count();
        if best.as_ref().is_none_or(|(l, _, _)| len >= *l) {
            best = Some((len, point, source));
        }
    }
    best.map(|(_, p, s)| (p, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        write_json(&p, &vec![1, 2, 3]).expect("write");
        write_json(&p, &vec![4]).expect("rewrite");
        let v: Vec<i32> = read_json(&p).expect("read").expect("exists");
        assert_eq!(v, vec![4]);
        // The variant that leaves the directory's sync to a later write
        // replaces the same way.
        write_json_then(&p, &vec![5]).expect("rewrite, no dir sync");
        let v: Vec<i32> = read_json(&p).expect("read").expect("exists");
        assert_eq!(v, vec![5]);
        assert!(
            read_json::<Vec<i32>>(&dir.path().join("none"))
                .expect("read")
                .is_none()
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(p).expect("lstat").mode() & 0o7777
    }

    #[test]
    fn files_and_dirs_are_made_private() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("state");
        create_root(&root).expect("root");
        assert_eq!(mode(&root), ROOT_MODE);
        for d in TOP_DIRS.iter().filter(|d| **d != "userns") {
            assert_eq!(mode(&root.join(d)), PRIVATE_DIR_MODE, "{d}");
        }
        let c = root.join("containers/abc");
        private_dir(&c).expect("container dir");
        visible_dir(&c.join("upper")).expect("upper");
        write_json(&c.join("config.json"), &vec!["SECRET=x"]).expect("config");
        create_private_file(&c.join("container.log")).expect("log");
        assert!(create_private_file(&c.join("container.log")).is_err());
        assert_eq!(mode(&c), 0o700);
        assert_eq!(mode(&c.join("upper")), 0o755);
        assert_eq!(mode(&c.join("config.json")), 0o600);
        assert_eq!(mode(&c.join("container.log")), 0o600);
        let v = root.join("volumes/v1");
        volume_dir(&v).expect("volume");
        assert_eq!((mode(&v), mode(&v.join("_data"))), (0o700, 0o755));
        // An existing _data keeps what the container made of it.
        fs::set_permissions(v.join("_data"), fs::Permissions::from_mode(0o1777)).expect("chmod");
        volume_dir(&v).expect("volume again");
        assert_eq!(mode(&v.join("_data")), 0o1777);
    }

    #[test]
    fn fix_modes_narrows_an_old_state_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("state");
        let c = root.join("containers/abc");
        for d in [
            c.join("upper"),
            root.join("volumes/v1/_data"),
            root.join("networks"),
        ] {
            fs::create_dir_all(&d).expect("mkdir");
        }
        let outside = t.path().join("outside");
        fs::write(&outside, "x").expect("write");
        let files = [
            c.join("config.json"),
            c.join("state.json"),
            c.join("container.log"),
            c.join("container.log.1"),
            c.join("shim.log"),
            root.join("networks/default.json"),
            root.join("rsupd.lock"),
        ];
        for f in &files {
            fs::write(f, "{}").expect("write");
        }
        let wide = |p: &Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod")
        };
        for p in [
            &root,
            &root.join("containers"),
            &c,
            &root.join("volumes/v1"),
        ] {
            wide(p, 0o755);
        }
        for f in files.iter().chain([&outside]) {
            wide(f, 0o644);
        }
        // A symlink in the tree is not followed.
        std::os::unix::fs::symlink(&outside, c.join("exit.json")).expect("symlink");
        let fixes = fix_modes(&root).expect("fix");
        assert_eq!(mode(&root), 0o710);
        assert_eq!(mode(&root.join("containers")), 0o700);
        assert_eq!(mode(&c), 0o700);
        assert_eq!(mode(&root.join("volumes/v1")), 0o700);
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        assert_eq!(mode(&outside), 0o644, "followed a symlink");
        // What the container sees is left alone.
        assert_eq!(mode(&c.join("upper")), 0o755);
        assert_eq!(mode(&root.join("volumes/v1/_data")), 0o755);
        assert!(
            fixes
                .iter()
                .any(|f| f.path == c && f.from == 0o755 && f.to == 0o700)
        );
        // root, containers/, volumes/, networks/, the container and the volume.
        assert_eq!(fixes.len(), 6 + files.len(), "{fixes:?}");
        // A second run has nothing to do.
        assert_eq!(fix_modes(&root).expect("again"), Vec::new());
    }

    #[tokio::test]
    async fn a_held_lock_is_waited_for_then_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = StateLock::acquire(dir.path()).expect("first");
        let patience = std::time::Duration::from_millis(200);
        let t = std::time::Instant::now();
        assert!(matches!(
            StateLock::acquire_patiently(dir.path(), patience).await,
            Err(StoreError::Locked(_))
        ));
        assert!(t.elapsed() >= patience);
        // Released meanwhile (the crashed rsupd's child exec'd): taken.
        let path = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move {
            StateLock::acquire_patiently(&path, std::time::Duration::from_secs(10)).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(held);
        waiter.await.expect("join").expect("taken once released");
    }

    #[test]
    fn temp_files_are_recognised() {
        assert_eq!(temp_file_pid(".state.json.123.0.tmp"), Some(123));
        assert_eq!(temp_file_pid(".a.b.json.7.42.tmp"), Some(7));
        for not in [
            "state.json",
            ".state.json",
            ".state.json.x.1.tmp",
            ".state.json.1.x.tmp",
            "..1.2.tmp",
            ".1.2.tmp",
            "state.json.1.2.tmp",
        ] {
            assert_eq!(temp_file_pid(not), None, "{not}");
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The rename fails: the target is a non-empty directory.
        let target = dir.path().join("x.json");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("keep"), "x").expect("write");
        assert!(write_json(&target, &vec![1]).is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn sweep_removes_dead_writers_temp_files_only() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        create_root(root).expect("root");
        let c = root.join("containers/abc");
        private_dir(&c).expect("dir");
        let layer = root.join("images/layers/ff");
        fs::create_dir_all(&layer).expect("layer");
        fs::create_dir_all(root.join("images/images")).expect("images");
        // No process has pid 0x7fff_fff0 (above pid_max's ceiling).
        let dead = 0x7fff_fff0;
        let stale = [
            c.join(format!(".state.json.{dead}.3.tmp")),
            root.join(format!("networks/.default.json.{dead}.0.tmp")),
            root.join(format!("supervisors/.s.json.{dead}.1.tmp")),
            root.join(format!("images/images/.ab.json.{dead}.2.tmp")),
            layer.join(format!(".layer.json.{dead}.9.tmp")),
        ];
        // A live writer (this process' parent) and files that only look
        // a bit like ours stay.
        let parent = std::os::unix::process::parent_id();
        let kept = [
            c.join(format!(".exit.json.{parent}.0.tmp")),
            c.join("state.json"),
            c.join(".hidden"),
            root.join(format!("volumes/.v.json.{dead}.0.tmp")),
        ];
        for f in stale.iter().chain(&kept) {
            fs::write(f, "x").expect("write");
        }
        let mut removed = sweep_temp_files(root);
        removed.sort();
        let mut want = stale.to_vec();
        want.sort();
        assert_eq!(removed, want);
        for f in &kept {
            assert!(f.exists(), "{}", f.display());
        }
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _a = StateLock::acquire(dir.path()).expect("first");
        // flock locks belong to the open file description: a second open in
        // the same process conflicts too.
        assert!(matches!(
            StateLock::acquire(dir.path()),
            Err(StoreError::Locked(_))
        ));
    }
}
