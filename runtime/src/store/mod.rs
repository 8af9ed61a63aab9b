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
//!     upper/ work/            overlayfs writable layer of the container
//!     rootfs/                 mount point of the overlay (inside the
//!                             container's mount namespace only)
//! ```
//!
//! Every JSON file carries a `version` and is replaced atomically: written to
//! a temporary file in the same directory, fsync'ed, renamed over the old one,
//! and the directory fsync'ed, so a crash leaves either the old or the new
//! content, never a torn file.

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
    let data = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &data)
}

/// Replaces `path` with `data` atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    // Unique per write: two writers of one file never share a temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(data).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))?;
    Ok(())
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
    fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
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

/// Creates `dir` (and its parents) and makes it root's alone (0700): for
/// trees that keep image files with their owners and setuid bits, which
/// containers reach through overlayfs (it reads lower dirs with the
/// mounter's credentials) and host users must not.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))
}

/// Opens a lock file for an flock, creating it if needed (never truncating:
/// its content, if any, is not ours to lose).
pub(crate) fn open_lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

impl StateLock {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        write_json(&p, &vec![1, 2, 3]).expect("write");
        write_json(&p, &vec![4]).expect("rewrite");
        let v: Vec<i32> = read_json(&p).expect("read").expect("exists");
        assert_eq!(v, vec![4]);
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
