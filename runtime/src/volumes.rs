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

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::container::{Runtime, lock};
pub use crate::names::is_volume_name;
use crate::names::{VolumeName, quote};

/// One mount of a container, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MountKind {
    /// A named volume (its host directory is resolved by the runtime).
    Volume {
        name: VolumeName,
        source: PathBuf,
    },
    Bind {
        source: PathBuf,
    },
    Tmpfs {
        options: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// An absolute container path without `..` (normalised: no `.` or `//`).
fn container_path(p: &str, field: &'static str) -> Result<String, Error> {
    if !p.starts_with('/') {
        return Err(invalid(
            field,
            format!("{}: the container path must be absolute", quote(p)),
        ));
    }
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(invalid(
                    field,
                    format!("{}: the container path must not contain '..'", quote(p)),
                ));
            }
            Component::Prefix(_) => {
                return Err(invalid(field, format!("{} is not a path", quote(p))));
            }
        }
    }
    if parts.is_empty() {
        return Err(invalid(
            field,
            format!("{}: cannot mount over the root", quote(p)),
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses `-v SOURCE:TARGET[:ro|:rw]`; `volumes_dir` is where named volumes
/// live.
pub fn parse_volume(s: &str, volumes_dir: &Path) -> Result<MountSpec, Error> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, "rw"),
        [src, dst, m] => (*src, *dst, *m),
        _ => {
            return Err(invalid(
                "volumes",
                format!("{}: use NAME:/path[:ro] or /host/dir:/path[:ro]", quote(s)),
            ));
        }
    };
    let read_only = match mode {
        "ro" => true,
        "rw" | "" => false,
        other => {
            return Err(invalid(
                "volumes",
                format!("{}: unknown mode {} (ro or rw)", quote(s), quote(other)),
            ));
        }
    };
    let target = container_path(target, "volumes")?;
    let kind = if source.starts_with('/') {
        let src = PathBuf::from(source);
        match std::fs::metadata(&src) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "bind source {}: no such file or directory",
                    quote(source)
                )));
            }
            Err(e) => {
                return Err(invalid(
                    "volumes",
                    format!("bind source {}: {e}", quote(source)),
                ));
            }
        }
        MountKind::Bind { source: src }
    } else {
        let Ok(name) = VolumeName::parse_as(source, "volumes") else {
            return Err(invalid(
                "volumes",
                format!(
                    "{} is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*) nor an absolute host path",
                    quote(source)
                ),
            ));
        };
        MountKind::Volume {
            source: volumes_dir.join(name.as_str()).join("_data"),
            name,
        }
    };
    Ok(MountSpec {
        kind,
        target,
        read_only,
    })
}

/// Parses `--tmpfs PATH[:OPTIONS]` (options as for mount, e.g. size=64m).
pub fn parse_tmpfs(s: &str) -> Result<MountSpec, Error> {
    let (path, opts) = s.split_once(':').unwrap_or((s, ""));
    let target = container_path(path, "tmpfs")?;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let key = o.split('=').next().unwrap_or(o);
        if !matches!(
            key,
            "size"
                | "mode"
                | "nr_inodes"
                | "uid"
                | "gid"
                | "noexec"
                | "exec"
                | "nosuid"
                | "nodev"
                | "ro"
                | "rw"
        ) {
            return Err(invalid(
                "tmpfs",
                format!("{}: unsupported option {}", quote(s), quote(o)),
            ));
        }
    }
    let read_only = opts.split(',').any(|o| o == "ro");
    let options = opts
        .split(',')
        .filter(|o| {
            !o.is_empty() && !matches!(*o, "ro" | "rw" | "noexec" | "exec" | "nosuid" | "nodev")
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(MountSpec {
        kind: MountKind::Tmpfs {
            options: if options.is_empty() {
                "mode=1777".into()
            } else {
                options
            },
        },
        target,
        read_only,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs() {
        let vd = Path::new("/state/volumes");
        let m = parse_volume("data:/var/lib/data:ro", vd).expect("named");
        assert_eq!(m.target, "/var/lib/data");
        assert!(m.read_only);
        assert_eq!(
            m.kind,
            MountKind::Volume {
                name: VolumeName::parse("data").expect("name"),
                source: vd.join("data/_data")
            }
        );
        let b = parse_volume("/tmp:/mnt/x/", vd).expect("bind");
        assert_eq!((b.target.as_str(), b.read_only), ("/mnt/x", false));
        assert!(matches!(
            parse_volume("/nonexistent-rsup:/x", vd),
            Err(Error::NotFound(_))
        ));
        for bad in [
            "data:rel",
            "data:/a/../b",
            "Bad Name:/x",
            "data:/x:rx",
            "data",
            "-x:/y",
            "data:/",
            "..:/x",
            ".:/x",
            "a/../..:/x",
            "x/../../..:/x",
            "../../canary:/x",
        ] {
            assert!(
                matches!(parse_volume(bad, vd), Err(Error::InvalidArgument { .. })),
                "{bad}"
            );
        }
        let t = parse_tmpfs("/run:size=1m,mode=755").expect("tmpfs");
        assert_eq!(
            t.kind,
            MountKind::Tmpfs {
                options: "size=1m,mode=755".into()
            }
        );
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/run:bogus=1").is_err());
    }
}
