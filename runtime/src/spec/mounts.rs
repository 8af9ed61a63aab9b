//! The mounts part of a container spec: named volumes, bind mounts and
//! tmpfs mounts as the user writes them (`-v NAME:/path[:ro]`,
//! `-v /host/dir:/path[:ro]`, `--tmpfs PATH[:OPTIONS]`), parsed into
//! [`MountSpec`]s.
//!
//! Every target is an absolute container path without `..`, normalised
//! (no `.` or `//`), never the root itself, and no two mounts share one; a
//! volume name is one path component (see [`VolumeName`]); a bind source
//! is an absolute host path that exists; tmpfs options are the few that
//! `mount` takes for it. Parsing makes nothing: named volumes are made on
//! first use by the create, and the init does the mounts inside the
//! container.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::Error;
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

/// Parses a request's `-v` and `--tmpfs` specs, in mount order (volumes and
/// binds first, then tmpfs mounts); refuses two mounts on one target.
pub fn parse_mounts(
    volumes: &[String],
    tmpfs: &[String],
    volumes_dir: &Path,
) -> Result<Vec<MountSpec>, Error> {
    let mounts: Vec<MountSpec> = volumes
        .iter()
        .map(|v| parse_volume(v, volumes_dir))
        .chain(tmpfs.iter().map(|t| parse_tmpfs(t)))
        .collect::<Result<_, _>>()?;
    let mut targets: Vec<&str> = mounts.iter().map(|m| m.target.as_str()).collect();
    targets.sort_unstable();
    if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid("volumes", format!("{} is mounted twice", w[0])));
    }
    Ok(mounts)
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

    #[test]
    fn mounts_keep_their_order_and_targets_are_unique() {
        let vd = Path::new("/state/volumes");
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = parse_mounts(&v(&["b:/b", "a:/a"]), &v(&["/t"]), vd).expect("valid");
        let targets: Vec<&str> = m.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/b", "/a", "/t"]);
        for (vols, tmpfs) in [
            (v(&["a:/x", "b:/x/"]), v(&[])),
            (v(&["a:/x"]), v(&["/./x:size=1m"])),
            (v(&[]), v(&["/x", "//x"])),
        ] {
            match parse_mounts(&vols, &tmpfs, vd) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "volumes");
                    assert!(reason.contains("/x is mounted twice"), "{reason}");
                }
                other => panic!("{vols:?} {tmpfs:?}: {other:?}"),
            }
        }
    }
}
