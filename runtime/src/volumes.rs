//! Volumes and mounts: data that outlives a container.
//!
//! * A **named volume** is a directory `volumes/<name>/_data` under the state
//!   dir, created by `volume create` or on first use by `-v NAME:/path`, and
//!   removed only by `volume rm` (refused while a container uses it). It
//!   survives the container's crash, restart and removal, and rsupd restarts.
//! * A **bind mount** `-v /host/dir:/path` mounts a host directory (which must
//!   exist) into the container. `:ro` makes either read-only.
//! * `--tmpfs PATH[:size=64m,mode=1777]` mounts a tmpfs; `--read-only` makes the
//!   root read-only (volumes, binds and tmpfs mounts stay as asked).
//!
//! The init does the mounts inside the container's mount namespace, after
//! the root and before `pivot_root`; mount points that are symlinks in the
//! rootfs are refused.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::Error;
use crate::container::{Runtime, lock};
use crate::names::VolumeName;
pub use crate::names::is_volume_name;
pub use crate::spec::mounts::{MountKind, MountSpec, parse_tmpfs, parse_volume};

/// What `volume ls/inspect` shows.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: PathBuf,
    pub created_at: SystemTime,
    /// Containers that mount it.
    pub users: Vec<String>,
}

impl Runtime {
    pub(crate) fn volumes_dir(&self) -> PathBuf {
        self.inner.config.state_dir.join("volumes")
    }

    /// The directory of volume `name`: one component below the volumes dir
    /// (a [`VolumeName`] is never `.`, `..` or anything with a `/`).
    fn volume_dir(&self, name: &VolumeName) -> PathBuf {
        self.volumes_dir().join(name.as_str())
    }

    /// Creates a named volume (no-op if it exists).
    pub fn create_volume(&self, name: &VolumeName) -> Result<VolumeInfo, Error> {
        // volumes/<name> 0700, a new _data 0755 (see crate::store).
        crate::store::volume_dir(&self.volume_dir(name))?;
        self.inspect_volume(name)
    }

    /// Makes sure every named volume of `mounts` exists (first use).
    pub(crate) fn ensure_volumes(&self, mounts: &[MountSpec]) -> Result<(), Error> {
        for m in mounts {
            if let MountKind::Volume { name, .. } = &m.kind {
                self.create_volume(name)?;
            }
        }
        Ok(())
    }

    pub fn inspect_volume(&self, name: &VolumeName) -> Result<VolumeInfo, Error> {
        let dir = self.volume_dir(name);
        let meta = std::fs::metadata(&dir)
            .map_err(|_| Error::NotFound(format!("no such volume: {name}")))?;
        let users = lock(&self.inner.containers)
            .iter()
            .filter(|e| {
                e.spec
                    .mounts
                    .iter()
                    .any(|m| matches!(&m.kind, MountKind::Volume { name: n, .. } if n == name))
            })
            .map(|e| e.spec.name.clone())
            .collect();
        Ok(VolumeInfo {
            name: name.to_string(),
            mountpoint: dir.join("_data"),
            created_at: meta
                .created()
                .or_else(|_| meta.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            users,
        })
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        // Only entries that are volume names: anything else in the dir is
        // not a volume (and could not be inspected or removed).
        let mut names: Vec<VolumeName> = std::fs::read_dir(self.volumes_dir())
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
            .filter_map(|n| self.inspect_volume(n).ok())
            .collect()
    }

    /// Removes a volume and its data; refused while a container uses it.
    pub fn remove_volume(&self, name: &VolumeName) -> Result<(), Error> {
        let v = self.inspect_volume(name)?;
        if !v.users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {name} is in use by {}: remove them first",
                v.users.join(", ")
            )));
        }
        self.refuse_unknown_mounts(name.as_str())?;
        let dir = self.volume_dir(name);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::Store(crate::store::io_err("remove", &dir)(e)))
    }
}
