//! The shifted copies of a remapped container's lower directories: where
//! they are cached, how one is looked up or built once (in a temporary
//! directory renamed into place, charged against the state filesystem's
//! reserves), and the sweep of builds abandoned by a dead builder. The copy
//! itself is `copy.rs`.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::copy::{CopyError, copy_shifted};
use super::error::UsernsError;
use super::map::{IdMap, fnv1a};
use crate::error::Error;
use crate::imagestore::limits::{Budget, UnpackLimits};

/// Directory of the shifted copies of `state`.
pub fn cache_dir(state: &Path) -> PathBuf {
    state.join("userns")
}

/// Returns, for each of `lowers` (in the same order, top first), a copy of
/// it whose every entry is owned by the host ids `map` gives its owner
/// (ids the map lacks keep their host owner, and so show as nobody), so that
/// container root owns what host root owned. Copies are cached under
/// `<state>/userns/<map key>/<lower key>/root` and built once: in a
/// temporary directory renamed into place. The lower key covers the lower
/// dir's path and its mtime and ctime: a rootfs changed in place below its
/// top directory is not noticed (layers are immutable; a rootfs changed in
/// place needs a new path or a touch of its top directory).
///
/// Blocking (it may copy a whole tree). Checks no reserve: rsupd builds
/// the copies with [`shifted_lowerdirs_within`] before the shim's call
/// finds them here.
pub fn shifted_lowerdirs(
    state: &Path,
    lowers: &[PathBuf],
    map: &IdMap,
) -> Result<Vec<PathBuf>, Error> {
    shifted_lowerdirs_within(state, lowers, map, None)
}

/// [`shifted_lowerdirs`] that charges what it copies (bytes of data and
/// one inode per entry) against the free-space and inode reserves of
/// `limits` on the state filesystem (its per-image maximum does not apply):
/// past one, the copy stops, is removed, and the error is
/// RESOURCE_EXHAUSTED.
pub fn shifted_lowerdirs_within(
    state: &Path,
    lowers: &[PathBuf],
    map: &IdMap,
    limits: Option<&UnpackLimits>,
) -> Result<Vec<PathBuf>, Error> {
    let base = cache_dir(state);
    let map_dir = base.join(map.key());
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| Error::from(UsernsError::Cache { op, path, source })
    };
    // Only root walks the cache.
    crate::store::private_dir(&base)?;
    std::fs::create_dir_all(&map_dir).map_err(io("mkdir", &map_dir))?;
    remove_abandoned_builds(&map_dir);
    let desc = map.describe();
    let map_file = map_dir.join("map");
    if !map_file.exists() {
        write_atomic(&map_file, desc.as_bytes()).map_err(io("write", &map_file))?;
    }
    lowers
        .iter()
        .map(|lower| {
            let md = std::fs::metadata(lower).map_err(io("stat", lower))?;
            let key = format!(
                "{}\n{}.{}\n{}.{}\n{desc}\n",
                lower.display(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec()
            );
            let entry = map_dir.join(format!("{:016x}", fnv1a(key.as_bytes())));
            let root = entry.join("root");
            if root.is_dir() {
                let stored = std::fs::read_to_string(entry.join("source")).unwrap_or_default();
                if stored == key {
                    return Ok(root);
                }
                return Err(UsernsError::Collision {
                    path: entry.to_path_buf(),
                }
                .into());
            }
            build(lower, &entry, &key, map, limits)?;
            Ok(root)
        })
        .collect()
}

/// Removes `.tmp-<entry>-<pid>` build directories whose builder is gone
/// (a shim killed mid-copy); those of live builders stay.
fn remove_abandoned_builds(map_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(map_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Builds `entry` (`root` + `source`) for `lower` in a temporary directory
/// next to it and renames it into place; when another builder won the race,
/// its copy is kept and ours removed.
fn build(
    lower: &Path,
    entry: &Path,
    key: &str,
    map: &IdMap,
    limits: Option<&UnpackLimits>,
) -> Result<(), Error> {
    let name = entry
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = entry.with_file_name(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let budget = limits.map(|l| {
        let limits = UnpackLimits {
            max_image_bytes: u64::MAX,
            ..*l
        };
        Budget::new("the shifted copy", limits, entry.parent().unwrap_or(entry))
    });
    let result = (|| -> Result<(), Error> {
        let err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            let lower = lower.to_path_buf();
            let map = map.describe();
            move |source| UsernsError::Shift {
                lower,
                map,
                op,
                path,
                source,
            }
        };
        std::fs::create_dir(&tmp).map_err(err("mkdir", &tmp))?;
        let mut links = HashMap::new();
        copy_shifted(lower, &tmp.join("root"), map, &mut links, budget.as_ref()).map_err(|e| {
            match e {
                CopyError::Io(op, path, e) => Error::from(err(op, &path)(e)),
                CopyError::Limit(limit) => Error::from(limit),
            }
        })?;
        let src = tmp.join("source");
        write_atomic(&src, key.as_bytes()).map_err(err("write", &src))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, entry) {
        Ok(()) => Ok(()),
        Err(_) if entry.join("root").is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(UsernsError::Rename {
                from: tmp.clone(),
                to: entry.to_path_buf(),
                source: e,
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::map::IdRange;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn shifted_copy_chowns_through_the_map_and_is_cached() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let lower = d.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).expect("mkdir");
        std::fs::write(lower.join("etc/passwd"), "root\n").expect("write");
        std::fs::set_permissions(
            lower.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("chmod");
        std::fs::hard_link(lower.join("etc/passwd"), lower.join("etc/hl")).expect("link");
        symlink("passwd", lower.join("etc/link")).expect("ln");
        // Symlinks out of the tree are copied as symlinks, never followed.
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "s").expect("write");
        let before = std::fs::metadata(outside.join("secret")).expect("stat");
        symlink(&outside, lower.join("out")).expect("ln");
        symlink(outside.join("secret"), lower.join("etc/secret")).expect("ln");
        std::fs::write(lower.join("app"), "x").expect("write");
        std::os::unix::fs::chown(lower.join("app"), Some(1000), Some(50)).expect("chown");
        std::os::unix::fs::chown(d.path().join("lower/etc"), Some(70000), Some(0)).expect("chown");
        let map = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: 200000,
                size: 65536,
            }],
            gids: vec![IdRange {
                container: 0,
                host: 300000,
                size: 65536,
            }],
        };
        let state = d.path().join("state");
        let out = shifted_lowerdirs(&state, std::slice::from_ref(&lower), &map).expect("copy");
        let root = &out[0];
        let owner = |p: &str| {
            let m = std::fs::symlink_metadata(root.join(p)).expect("stat");
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(owner(""), (200000, 300000, 0o755));
        assert_eq!(owner("etc/passwd"), (200000, 300000, 0o4755));
        assert_eq!(owner("app"), (201000, 300050, 0o644));
        assert_eq!(owner("etc").0, 70000, "unmapped owners are kept");
        assert_eq!(owner("etc/link").0, 200000);
        assert_eq!(
            std::fs::read_link(root.join("etc/link")).expect("readlink"),
            Path::new("passwd")
        );
        for (link, to) in [
            ("out", outside.clone()),
            ("etc/secret", outside.join("secret")),
        ] {
            let m = std::fs::symlink_metadata(root.join(link)).expect("lstat");
            assert!(m.file_type().is_symlink(), "{link}");
            assert_eq!(std::fs::read_link(root.join(link)).expect("readlink"), to);
        }
        let theirs = std::fs::metadata(outside.join("secret")).expect("stat");
        assert_eq!(
            (theirs.uid(), theirs.gid(), theirs.mode()),
            (before.uid(), before.gid(), before.mode()),
            "outside untouched"
        );
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);
        let ino = |p: &str| std::fs::metadata(root.join(p)).expect("stat").ino();
        assert_eq!(ino("etc/passwd"), ino("etc/hl"), "hard links stay linked");
        // The original is untouched.
        assert_eq!(
            std::fs::metadata(lower.join("etc/passwd"))
                .expect("stat")
                .uid(),
            0
        );
        // A second call reuses the copy.
        std::fs::write(root.join("reused"), "").expect("write");
        let again = shifted_lowerdirs(&state, std::slice::from_ref(&lower), &map).expect("copy");
        assert_eq!(again, out);
        assert!(again[0].join("reused").exists());
        // Another map gets its own copy.
        let other = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: 400000,
                size: 10,
            }],
            gids: map.gids.clone(),
        };
        let o = shifted_lowerdirs(&state, std::slice::from_ref(&lower), &other).expect("copy");
        assert_ne!(o, out);
        assert_eq!(std::fs::metadata(&o[0]).expect("stat").uid(), 400000);
        // A build abandoned by a dead builder is swept; a live one's is kept.
        let map_dir = out[0].parent().and_then(Path::parent).expect("map dir");
        let dead = map_dir.join(format!(".tmp-abc-{}", u32::MAX - 1));
        let live = map_dir.join(format!(".tmp-abc-{}", std::process::id()));
        std::fs::create_dir(&dead).expect("mkdir");
        std::fs::create_dir(&live).expect("mkdir");
        shifted_lowerdirs(&state, &[lower], &map).expect("copy");
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[test]
    fn a_shifted_copy_stops_at_the_reserve_and_leaves_nothing() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let lower = d.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).expect("mkdir");
        std::fs::write(lower.join("etc/passwd"), "root\n").expect("write");
        let map = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: 200000,
                size: 65536,
            }],
            gids: vec![IdRange {
                container: 0,
                host: 200000,
                size: 65536,
            }],
        };
        let state = d.path().join("state");
        let full = UnpackLimits {
            max_image_bytes: 1,
            min_free: crate::imagestore::limits::FreeReserve::Bytes(u64::MAX),
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(0),
        };
        let lowers = std::slice::from_ref(&lower);
        match shifted_lowerdirs_within(&state, lowers, &map, Some(&full)) {
            Err(Error::ResourceExhausted(msg)) => {
                assert!(msg.contains("--image-min-free"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        let inodes = UnpackLimits {
            min_free: crate::imagestore::limits::FreeReserve::Bytes(0),
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(u64::MAX),
            ..full
        };
        match shifted_lowerdirs_within(&state, lowers, &map, Some(&inodes)) {
            Err(Error::ResourceExhausted(msg)) => {
                assert!(msg.contains("--image-min-free-inodes"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // Nothing left of either try but the map's directory and file; the
        // per-image maximum does not apply to a copy.
        let map_dir = cache_dir(&state).join(map.key());
        let names: Vec<String> = std::fs::read_dir(&map_dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["map".to_string()]);
        let fits = UnpackLimits {
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(0),
            ..inodes
        };
        shifted_lowerdirs_within(&state, lowers, &map, Some(&fits)).expect("copy");
    }
}
