//! cgroups as the tests see them: where a process' cgroups are (mount table
//! and `/proc/<pid>/cgroup`, v1 and v2), the subtree a test daemon puts its
//! containers in, the removal of that subtree once the daemon is gone (or,
//! for a daemon in a mount namespace of its own, while it still runs), and
//! named v1 hierarchies made for one test ([`NamedCgroup`]).
//!
//! rsupd makes its containers' cgroups as `<its own cgroup>/<subtree>/<id>`
//! in every hierarchy (`RSUP_CGROUP_SUBTREE`); on v2 it may first move the
//! processes of its own cgroup into a leaf `<own>/rsupd`, this process
//! included. Cleanup only ever uses rmdir, which the kernel refuses for a
//! cgroup that still has processes or children: nothing in use is touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::netlinks::net_identity;
use crate::tempdir::{TempDir, unique_name};
use crate::wait::wait_until;

/// The cgroup subtree of the daemon on `state_dir` (`rsup-<link prefix>`):
/// daemons of one test run share rsupd's own cgroup, and each sweeps the
/// cgroups of containers it does not know at start.
pub fn cgroup_subtree(state_dir: &Path) -> String {
    format!("rsup-{}", net_identity(state_dir).0)
}

/// Removes a daemon's (empty, once its containers are gone) cgroup subtree
/// `<own cgroup>/<subtree>` in every hierarchy, where "own" is this
/// process' cgroup or its parent (on v2 rsupd may have moved us into
/// `<own>/rsupd`); rmdir never removes a cgroup that still has processes.
pub fn remove_cgroup_subtree(subtree: &str) {
    remove_cgroup_subtree_under(&[], subtree);
}

/// [`remove_cgroup_subtree`] that also looks under `bases`: the cgroups
/// rsupd itself was seen in (see [`cgroup_dirs_of`]), wherever it was
/// placed.
pub fn remove_cgroup_subtree_under(bases: &[PathBuf], subtree: &str) {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = mounts_or_none();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in cgroup_dirs(&own, &mounts) {
        let parent = dir.parent().map(Path::to_path_buf);
        dirs.push(dir);
        dirs.extend(parent);
    }
    dirs.extend(bases.iter().cloned());
    remove_subtrees(dirs, subtree);
}

/// [`remove_cgroup_subtree`] in every cgroup hierarchy mounted in the mount
/// namespace of process `pid` (rsupd in a mount namespace of its own, say),
/// below its cgroups there and their parents, reached through
/// `/proc/<pid>/root`.
pub fn remove_cgroup_subtree_seen_by(pid: i32, subtree: &str) {
    let (Ok(mountinfo), Ok(own)) = (
        fs::read_to_string(format!("/proc/{pid}/mountinfo")),
        fs::read_to_string(format!("/proc/{pid}/cgroup")),
    ) else {
        return;
    };
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in cgroup_dirs(&own, &parse_cgroup_mounts(&mountinfo)) {
        let dir = root.join(dir.strip_prefix("/").unwrap_or(&dir));
        // On v2 rsupd may have moved itself into <own>/rsupd.
        let parent = dir.parent().map(Path::to_path_buf);
        dirs.push(dir);
        dirs.extend(parent);
    }
    remove_subtrees(dirs, subtree);
}

/// rmdir of `<base>/<subtree>` and of the directories right below it, for
/// each of `bases`.
fn remove_subtrees(mut bases: Vec<PathBuf>, subtree: &str) {
    bases.sort();
    bases.dedup();
    for d in bases.iter().map(|base| base.join(subtree)) {
        if let Ok(children) = fs::read_dir(&d) {
            for c in children.flatten() {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(c.path());
                }
            }
        }
        let _ = fs::remove_dir(&d);
    }
}

/// The directories of the cgroups of process `pid`, one per mounted
/// hierarchy it is in (none once it is gone).
pub fn cgroup_dirs_of(pid: i32) -> Vec<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroup_dirs(&text, &mounts_or_none())
}

/// The directory of each line of a `/proc/<pid>/cgroup` text under the
/// mount of its hierarchy (lines whose hierarchy is not mounted are left
/// out).
fn cgroup_dirs(proc_cgroup: &str, mounts: &[CgroupMount]) -> Vec<PathBuf> {
    parse_proc_cgroup(proc_cgroup)
        .into_iter()
        .filter_map(|line| {
            let v2 = line.id == "0" && line.controllers.is_empty();
            let mount = mounts.iter().find(|m| {
                if v2 {
                    m.unified
                } else {
                    !m.unified
                        && line
                            .controllers
                            .iter()
                            .all(|c| m.options.iter().any(|o| o == c))
                }
            })?;
            Some(mount.dir_of(line.path))
        })
        .collect()
}

fn mounts_or_none() -> Vec<CgroupMount> {
    parse_cgroup_mounts(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// One cgroup mount of a `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    /// The path inside the hierarchy that is mounted (usually `/`).
    pub root: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// cgroup2 (`true`) or a v1 hierarchy.
    pub unified: bool,
    /// Super options: the v1 controllers, among others.
    pub options: Vec<String>,
}

impl CgroupMount {
    /// The directory of the cgroup `path` (as `/proc/<pid>/cgroup` names it,
    /// relative to our cgroup namespace) under this mount.
    pub fn dir_of(&self, path: &str) -> PathBuf {
        let rel = path
            .strip_prefix(self.root.trim_end_matches('/'))
            .unwrap_or(path);
        let mut dir = self.point.clone();
        dir.extend(rel.split('/').filter(|c| !c.is_empty()));
        dir
    }
}

/// The cgroup mounts (v1 and v2) of a mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let unified = match *post.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                root: (*pre.get(3)?).to_owned(),
                point: PathBuf::from(*pre.get(4)?),
                unified,
                options: post.get(2)?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The cgroup mounts this process sees (the host's: the tests run there).
pub fn cgroup_mounts() -> Vec<CgroupMount> {
    let path = "/proc/self/mountinfo";
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_cgroup_mounts(&text)
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup<'a> {
    /// The hierarchy id (`0` for cgroup v2).
    pub id: &'a str,
    /// The v1 controllers of the hierarchy (none on v2).
    pub controllers: Vec<&'a str>,
    /// The cgroup's path in the hierarchy.
    pub path: &'a str,
}

/// The lines of a `/proc/<pid>/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup<'_>> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?;
            let controllers = it.next()?.split(',').filter(|c| !c.is_empty()).collect();
            Some(ProcCgroup {
                id,
                controllers,
                path: it.next()?,
            })
        })
        .collect()
}

/// A named v1 cgroup hierarchy (`name=<name>`) made for one test. It is
/// only ever mounted in private mount namespaces (that of a daemon started
/// with [`Daemon::start_in_mount_namespace`]`(&h.mount_command(), ..)`, say),
/// so no other daemon of the run sees it. The kernel keeps such a hierarchy
/// (it shows in every process's `/proc/<pid>/cgroup`) while a cgroup below
/// its root exists or, if one still did when its last mount went away,
/// until it is mounted and unmounted again with none: drop destroys it
/// that way, after the daemon using it (declare it first).
///
/// [`Daemon::start_in_mount_namespace`]: crate::Daemon::start_in_mount_namespace
pub struct NamedCgroup {
    name: String,
    dir: TempDir,
}

impl NamedCgroup {
    /// A new hierarchy name; nothing is mounted yet.
    pub fn new() -> NamedCgroup {
        let dir = TempDir::new();
        fs::create_dir(dir.path().join("cg")).expect("mkdir");
        NamedCgroup {
            name: unique_name("rsupt").replace('-', "_"),
            dir,
        }
    }

    /// The hierarchy's name (`name=` option).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where [`NamedCgroup::mount_command`] mounts it.
    pub fn mount_point(&self) -> PathBuf {
        self.dir.path().join("cg")
    }

    /// A shell command that mounts (creating, the first time) the
    /// hierarchy at [`NamedCgroup::mount_point`].
    pub fn mount_command(&self) -> String {
        format!(
            "mount -t cgroup -o none,name={} cgroup {}",
            self.name,
            self.mount_point().display()
        )
    }

    /// Whether the kernel still has the hierarchy.
    pub fn exists(&self) -> bool {
        let line = format!(":name={}:", self.name);
        fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| t.contains(&line))
    }
}

impl Default for NamedCgroup {
    fn default() -> Self {
        NamedCgroup::new()
    }
}

impl Drop for NamedCgroup {
    fn drop(&mut self) {
        // A mount and unmount (in a private namespace of their own) with no
        // cgroup left below the root ends the hierarchy; cgroups removed a
        // moment ago may still be dying: try again for a while.
        let script = format!(
            "{} && umount {}",
            self.mount_command(),
            self.mount_point().display()
        );
        let gone = wait_until(Duration::from_secs(20), || {
            if !self.exists() {
                return true;
            }
            let _ = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            !self.exists()
        });
        if !gone {
            eprintln!(
                "warning: the cgroup hierarchy name={} is left (a cgroup below its root?)",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid host: v1 controllers (cpu and cpuacct co-mounted), a named
    /// systemd hierarchy and an unused cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn each_hierarchy_resolves_to_its_mount() {
        let mounts = parse_cgroup_mounts(HYBRID);
        let own = "9:name=systemd:/user.slice\n4:memory:/a/b\n2:cpu,cpuacct:/\n\
                   7:blkio:/not-mounted\n0::/user.slice/x\n";
        assert_eq!(
            cgroup_dirs(own, &mounts),
            [
                "/sys/fs/cgroup/systemd/user.slice",
                "/sys/fs/cgroup/memory/a/b",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/unified/user.slice/x",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_mounted_sub_hierarchy_is_stripped() {
        let mounts = parse_cgroup_mounts(
            "50 1 0:40 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(
            cgroup_dirs("0::/kubepods/pod1/c\n", &mounts),
            [PathBuf::from("/sys/fs/cgroup/c")]
        );
    }
}
