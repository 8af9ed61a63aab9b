//! The rootfs lookups of a create: the `--rootfs` directory, the command
//! (looked up in PATH inside the image or rootfs) and the user (through its
//! `/etc/passwd` and `/etc/group`).
//!
//! Lookups in the image or rootfs go through [`crate::paths`] (rsupd reads them
//! as root in its own namespace: no symlink in them may lead out). They are
//! decided at create only where they cannot be wrong: when a `-v` or `--tmpfs`
//! target lands on or above a path a lookup looked at, a mount may provide (or
//! hide) the command or `/etc/passwd`, so the command is left to the init
//! (which always looks it up inside the container after the mounts, as runc
//! does: a missing command then fails the start with exit code 127) and the
//! user is resolved there too ([`super::ContainerSpec::user_at_start`]).

use std::path::{Path, PathBuf};

use super::{User, invalid};
use crate::error::Error;
use crate::names::quote;

/// PATH used when the spec's env has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Checks a `--rootfs` directory and returns its canonical path.
pub(super) fn check_rootfs(given: &str) -> Result<PathBuf, Error> {
    if given.is_empty() {
        return Err(invalid(
            "rootfs",
            "a root filesystem is required: an image or a directory (--rootfs)",
        ));
    }
    let rootfs = PathBuf::from(given);
    if !rootfs.is_absolute() {
        return Err(invalid(
            "rootfs",
            format!("{} is not an absolute path", quote(given)),
        ));
    }
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::FailedPrecondition(format!(
                "rootfs {} is not a directory",
                quote(given)
            )));
        }
        Err(e) => {
            return Err(Error::FailedPrecondition(format!(
                "rootfs {}: {e}",
                quote(given)
            )));
        }
    }
    rootfs
        .canonicalize()
        .map_err(|e| Error::FailedPrecondition(format!("rootfs {}: {e}", quote(given))))
}

/// Largest `/etc/passwd` or `/etc/group` read (a bigger one is ignored).
const MAX_DB_FILE: usize = 4 << 20;

/// Where the mounts of a request land in the image or rootfs, to tell which
/// lookups at create a mount could change. A lookup is decided at create
/// only when no mount lands on (or above) any path it looked at; otherwise
/// it is left to the init, which does it inside the container after the
/// mounts (Docker's semantics).
pub(super) struct MountLandings {
    /// Each mount's target with the symlinks of the image resolved, as the
    /// init will mount it; `None` when that cannot be told (a target through
    /// a symlink loop, or reached through another mount).
    landings: Option<Vec<String>>,
}

/// A `-v` or `--tmpfs` target, normalised; `None` if it is not a plain
/// absolute path (such a spec is refused later anyway).
fn normal_target(t: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in t.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return None;
        }
        parts.push(c);
    }
    (t.starts_with('/') && !parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

impl MountLandings {
    pub(super) fn of(root: &crate::paths::RootDir, volumes: &[String], tmpfs: &[String]) -> Self {
        use crate::paths::{WalkEnd, is_ancestor_or_self};
        let targets = volumes
            .iter()
            .map(|v| v.split(':').nth(1).unwrap_or(""))
            .chain(
                tmpfs
                    .iter()
                    .map(|t| t.split_once(':').map_or(t.as_str(), |(p, _)| p)),
            );
        let mut walks = Vec::new();
        for t in targets {
            let Some(t) = normal_target(t) else {
                return MountLandings { landings: None };
            };
            let w = root.walk(&t);
            let landing = match &w.end {
                WalkEnd::Found(p) => p.clone(),
                WalkEnd::Missing { full, .. } => full.clone(),
                WalkEnd::Unknown(_) => return MountLandings { landings: None },
            };
            walks.push((w, landing));
        }
        // A target reached through another mount lands where that mount's
        // content says: unknown here.
        for (i, (w, _)) in walks.iter().enumerate() {
            for (j, (_, l)) in walks.iter().enumerate() {
                if i != j && w.visited.iter().any(|v| is_ancestor_or_self(l, v)) {
                    return MountLandings { landings: None };
                }
            }
        }
        MountLandings {
            landings: Some(walks.into_iter().map(|(_, l)| l).collect()),
        }
    }

    /// True if a mount could change where `walk` leads.
    fn affects(&self, walk: &crate::paths::Walk) -> bool {
        let Some(landings) = &self.landings else {
            return true;
        };
        if landings.is_empty() {
            return false;
        }
        matches!(walk.end, crate::paths::WalkEnd::Unknown(_))
            || landings.iter().any(|l| {
                walk.visited
                    .iter()
                    .any(|v| crate::paths::is_ancestor_or_self(l, v))
            })
    }

    /// True if a mount could change where any of `paths` leads (no walk
    /// at all when there is no mount).
    pub(super) fn affects_any(&self, root: &crate::paths::RootDir, paths: &[&str]) -> bool {
        if matches!(&self.landings, Some(l) if l.is_empty()) {
            return false;
        }
        paths.iter().any(|p| self.affects(&root.walk(p)))
    }
}

/// Finds `cmd` inside the rootfs: a path with a '/' is taken as is (relative
/// to the working directory), a bare name is searched in `path_var`. A
/// command that is not there is refused only when no mount could provide
/// it; otherwise it is returned as given and the init looks it up at start.
pub(super) fn resolve_command(
    root: &crate::paths::RootDir,
    root_label: &str,
    cmd: &str,
    path_var: &str,
    working_dir: &str,
    landings: &MountLandings,
) -> Result<String, Error> {
    let candidates: Vec<String> = if cmd.contains('/') {
        if cmd.starts_with('/') {
            vec![cmd.to_string()]
        } else {
            vec![format!("{}/{cmd}", working_dir.trim_end_matches('/'))]
        }
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
            .collect()
    };
    let mut deferred = false;
    for c in &candidates {
        let w = root.walk(c);
        if let crate::paths::WalkEnd::Found(p) = &w.end
            && root.stat(p).is_ok_and(|st| {
                st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0
            })
        {
            return Ok(c.clone());
        }
        deferred = deferred || landings.affects(&w);
    }
    if deferred {
        return Ok(cmd.to_string());
    }
    Err(invalid(
        "command",
        format!(
            "{}: executable file not found in {root_label} (PATH {})",
            quote(cmd),
            quote(path_var)
        ),
    ))
}

/// The lines of a passwd- or group-style file under `root`, split into
/// fields; empty when it is missing or not a readable regular file.
fn read_db(root: &crate::paths::RootDir, file: &str) -> Vec<Vec<String>> {
    let Ok(bytes) = root.read_file(file, MAX_DB_FILE) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| l.split(':').map(String::from).collect())
        .collect()
}

/// Looks `name` up in a passwd- or group-style file: returns the fields of
/// the first line whose first field is `name`.
fn lookup_db(root: &crate::paths::RootDir, file: &str, name: &str) -> Option<Vec<String>> {
    read_db(root, file)
        .into_iter()
        .find(|f| f.first().is_some_and(|n| n == name))
}

fn lookup_uid(root: &crate::paths::RootDir, uid: u32) -> Option<Vec<String>> {
    read_db(root, "/etc/passwd")
        .into_iter()
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
}

/// Resolves a user inside the container, from its own `/etc/passwd` and
/// `/etc/group` (for the init, after `pivot_root`, and for exec, after
/// joining the container's mount namespace): the user and its HOME.
pub fn resolve_user_in_container(spec: &str) -> Result<(User, String), Error> {
    let root = crate::paths::RootDir::open(Path::new("/"))
        .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    resolve_user(&root, spec)
}

/// Resolves "", "uid", "uid:gid", "name" or "name:group" against the rootfs;
/// returns the user and its home directory. Like Docker, a numeric uid not in
/// /etc/passwd runs with gid 0 and HOME=/.
pub(super) fn resolve_user(
    root: &crate::paths::RootDir,
    spec: &str,
) -> Result<(User, String), Error> {
    if spec.is_empty() {
        let home = lookup_uid(root, 0)
            .and_then(|f| f.get(5).cloned())
            .unwrap_or_else(|| "/root".into());
        return Ok((User { uid: 0, gid: 0 }, home));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(invalid(
            "user",
            format!("{} is not USER[:GROUP]", quote(spec)),
        ));
    }
    let entry = match u.parse::<u32>() {
        Ok(uid) => lookup_uid(root, uid),
        Err(_) => Some(lookup_db(root, "/etc/passwd", u).ok_or_else(|| {
            invalid(
                "user",
                format!("user {} not found in the rootfs' /etc/passwd", quote(u)),
            )
        })?),
    };
    let uid = match u.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f.get(2))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                invalid(
                    "user",
                    format!("malformed /etc/passwd entry for {}", quote(u)),
                )
            })?,
    };
    let primary_gid = entry
        .as_ref()
        .and_then(|f| f.get(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_db(root, "/etc/group", g)
                .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                .ok_or_else(|| {
                    invalid(
                        "user",
                        format!("group {} not found in the rootfs' /etc/group", quote(g)),
                    )
                })?,
        },
    };
    let home = entry
        .and_then(|f| f.get(5).cloned())
        .unwrap_or_else(|| "/".into());
    Ok((User { uid, gid }, home))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::rootfs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn lookups_never_leave_root() {
        let r = rootfs();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            outside.path().join("passwd"),
            "evil:x:4242:4242::/evil:/bin/sh\n",
        )
        .expect("write");
        let exe = outside.path().join("evil");
        std::fs::write(&exe, b"x").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        symlink("/../../../../etc", r.path().join("escape")).expect("ln");
        symlink(outside.path(), r.path().join("out")).expect("ln");
        let root = crate::paths::RootDir::open(r.path()).expect("open");
        assert_eq!(
            lookup_db(&root, "/escape/passwd", "app").and_then(|f| f.get(2).cloned()),
            Some("1000".to_string())
        );
        assert!(lookup_db(&root, "/out/passwd", "evil").is_none());
        let cmd = |c: &str| {
            resolve_command(
                &root,
                "rootfs",
                c,
                DEFAULT_PATH,
                "/",
                &MountLandings {
                    landings: Some(Vec::new()),
                },
            )
        };
        assert_eq!(cmd("/../../bin/sh").expect("found"), "/../../bin/sh");
        let evil = format!("/out/{}", "evil");
        assert!(
            cmd(&evil).is_err(),
            "a symlink out of the root is not followed"
        );
    }

    #[test]
    fn lookups_a_mount_could_change_are_left_to_the_init() {
        let r = rootfs();
        let root = crate::paths::RootDir::open(r.path()).expect("open");
        let landings = |vols: &[&str], tmpfs: &[&str]| {
            let v: Vec<String> = vols.iter().map(|s| s.to_string()).collect();
            let t: Vec<String> = tmpfs.iter().map(|s| s.to_string()).collect();
            MountLandings::of(&root, &v, &t)
        };
        let cmd =
            |c: &str, l: &MountLandings| resolve_command(&root, "rootfs", c, DEFAULT_PATH, "/", l);
        // No mount: a missing command is refused at create.
        assert!(cmd("redis-server", &landings(&[], &[])).is_err());
        // A mount on /usr may provide /usr/bin/redis-server (and, through
        // the image's usr/bin -> /bin symlink, /bin too): left to the init.
        let usr = landings(&["/usr:/usr:ro"], &[]);
        assert_eq!(cmd("redis-server", &usr).expect("deferred"), "redis-server");
        assert_eq!(
            cmd("/usr/bin/redis-server", &usr).expect("deferred"),
            "/usr/bin/redis-server"
        );
        // usr/bin is a symlink to /bin: a mount on /bin lands where
        // /usr/bin leads.
        let bin = landings(&[], &["/bin"]);
        assert!(cmd("/usr/bin/redis-server", &bin).is_ok());
        // A mount elsewhere changes nothing: still refused at create.
        let data = landings(&["data:/data", "/srv:/srv"], &["/tmp"]);
        assert!(cmd("redis-server", &data).is_err());
        assert!(cmd("/opt/x", &data).is_err());
        assert!(cmd("/data/x", &data).is_ok(), "under a mount");
        // A found command is found whatever the mounts.
        assert_eq!(cmd("sh", &data).expect("found"), "/usr/bin/sh");
        // Nested mounts: where the inner one lands depends on the outer
        // one's content: every lookup is left to the init.
        let nested = landings(&["a:/data", "b:/data/sub"], &[]);
        assert!(cmd("redis-server", &nested).is_ok());
        // Users: /etc/passwd from a mount is read at start.
        assert!(
            landings(&["/etc/passwd:/etc/passwd:ro"], &[]).affects_any(&root, &["/etc/passwd"])
        );
        assert!(landings(&[], &["/etc"]).affects_any(&root, &["/etc/group"]));
        assert!(!landings(&["/srv:/srv"], &[]).affects_any(&root, &["/etc/passwd", "/etc/group"]));
    }

    #[test]
    fn users_resolve_from_rootfs() {
        let r = rootfs();
        let root = crate::paths::RootDir::open(r.path()).expect("open");
        let u = |s: &str| resolve_user(&root, s);
        assert_eq!(u("").expect("root").0, User { uid: 0, gid: 0 });
        assert_eq!(
            u("1000").expect("uid").0,
            User {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(u("app").expect("name").1, "/home/app");
        assert_eq!(
            u("1000:1000").expect("uid:gid").0,
            User {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            u("app:staff").expect("names").0,
            User { uid: 1000, gid: 50 }
        );
        assert_eq!(
            u("4242").expect("unknown uid").0,
            User { uid: 4242, gid: 0 }
        );
        for bad in ["nobody", "app:nogroup", ":1", "1:"] {
            assert!(u(bad).is_err(), "{bad}");
        }
    }
}
