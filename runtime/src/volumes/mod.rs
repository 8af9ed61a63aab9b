//! Volumes and mounts: data that outlives a container.
//!
//! * A **named volume** is a directory `volumes/<name>/_data` under the state
//!   dir, created by `volume create` or on first use by `-v NAME:/path`, and
//!   removed only by `volume rm` (refused while a container uses it). It
//!   survives the container's crash, restart and removal, and rsupd restarts.
//! * A **bind mount** `-v /host/dir:/path` mounts a host directory (which must
//!   exist) into the container. `:ro` makes either read-only.
//! * `--tmpfs PATH[:OPTIONS]` mounts a tmpfs with Docker's options (by default
//!   `rw,noexec,nosuid,nodev`); `--read-only` makes the root read-only
//!   (volumes, binds and tmpfs mounts stay as asked).
//!
//! The init does the mounts inside the container's mount namespace, after
//! the root and before `pivot_root`; mount points that are symlinks in the
//! rootfs are refused.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::Error;
use crate::names::VolumeName;
pub use crate::names::is_volume_name;
pub use crate::spec::mounts::{MountKind, MountSpec, parse_tmpfs, parse_volume};
pub use crate::spec::tmpfs::{TmpfsOptions, TmpfsSize};

/// What `volume ls/inspect` shows.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: PathBuf,
    pub created_at: SystemTime,
    /// Containers that mount it.
    pub users: Vec<String>,
    /// Metadata given at create (`volume create --label`).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The file beside a volume's `_data` that keeps its labels (containers
/// see only `_data`).
const LABELS_FILE: &str = "labels.json";

/// The volumes service: named volumes as directories under the state
/// dir's `volumes/` (`<name>/_data` is what containers mount). It does not
/// know the containers: who mounts a volume comes in as `users`.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// The volumes under `dir` (`<state>/volumes`).
    pub fn new(dir: PathBuf) -> Volumes {
        Volumes { dir }
    }

    /// The directory of all volumes.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The directory of volume `name`: one component below the volumes dir
    /// (a [`VolumeName`] is never `.`, `..` or anything with a `/`).
    fn volume_dir(&self, name: &VolumeName) -> PathBuf {
        self.dir.join(name.as_str())
    }

    /// Creates a named volume (no-op if it exists: its labels stay).
    pub fn create(
        &self,
        name: &VolumeName,
        labels: std::collections::BTreeMap<String, String>,
        users: Vec<String>,
    ) -> Result<VolumeInfo, Error> {
        let labels = crate::names::labels(labels)?;
        let dir = self.volume_dir(name);
        let existed = dir.exists();
        // volumes/<name> 0700, a new _data 0755 (see crate::store).
        crate::store::volume_dir(&dir)?;
        if !existed && !labels.is_empty() {
            crate::store::write_json(&dir.join(LABELS_FILE), &labels)?;
        }
        self.inspect(name, users)
    }

    /// Makes sure every named volume of `mounts` exists (first use).
    pub fn ensure(&self, mounts: &[MountSpec]) -> Result<(), Error> {
        for m in mounts {
            if let MountKind::Volume { name, .. } = &m.kind {
                crate::store::volume_dir(&self.volume_dir(name))?;
            }
        }
        Ok(())
    }

    /// Volume `name`, mounted by `users`.
    pub fn inspect(&self, name: &VolumeName, users: Vec<String>) -> Result<VolumeInfo, Error> {
        let dir = self.volume_dir(name);
        let meta = std::fs::metadata(&dir)
            .map_err(|_| Error::NotFound(format!("no such volume: {name}")))?;
        Ok(VolumeInfo {
            name: name.to_string(),
            mountpoint: dir.join("_data"),
            created_at: meta
                .created()
                .or_else(|_| meta.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            users,
            labels: match crate::store::read_json(&dir.join(LABELS_FILE)) {
                Ok(Some(l)) => l,
                Ok(None) => Default::default(),
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "cannot read the volume's labels");
                    Default::default()
                }
            },
        })
    }

    /// Every volume, each with `users(name)`.
    pub fn list(&self, users: &dyn Fn(&VolumeName) -> Vec<String>) -> Vec<VolumeInfo> {
        // Only entries that are volume names: anything else in the dir is
        // not a volume (and could not be inspected or removed).
        let mut names: Vec<VolumeName> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| VolumeName::parse(n).ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|n| self.inspect(n, users(n)).ok())
            .collect()
    }

    /// Removes a volume and its data; refused while one of `users` mounts
    /// it, or `may_be_mounted` says a container might.
    pub fn remove(
        &self,
        name: &VolumeName,
        users: Vec<String>,
        may_be_mounted: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let v = self.inspect(name, users)?;
        if !v.users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {name} is in use by {}: remove them first",
                v.users.join(", ")
            )));
        }
        may_be_mounted()?;
        let dir = self.volume_dir(name);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::Store(crate::store::io_err("remove", &dir)(e)))
    }
}
