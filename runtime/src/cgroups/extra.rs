//! The other cgroup hierarchies: every mounted one that the driver does not
//! use for limits. On a v1 host those are the v1 hierarchies without the
//! memory, cpu, cpuacct, pids or devices controller (name=systemd,
//! freezer, blkio, cpuset, net_cls, perf_event, any named hierarchy...)
//! and, on a hybrid host, the cgroup2 one; on a v2 host, any v1 hierarchy
//! mounted beside it (a named one, say).
//!
//! Why a container must sit in a leaf of each: its init unshares its cgroup
//! namespace, and the namespace roots every hierarchy at the cgroup the
//! init is in at that moment. In a hierarchy rsup did not place it in, that
//! is rsupd's own cgroup, often the hierarchy's root: container root with
//! CAP_SYS_ADMIN could mount the hierarchy, see the root's `release_agent`
//! and have the kernel run a program of its choice as host root. So, for
//! every hierarchy mounted when a container starts, [`Extra`] creates
//! `<rsupd's cgroup there>/<subtree>/<container id>` and moves the init
//! into it before it unshares, exactly as the driver does for its own
//! hierarchies; [`Extra::remove`] removes those directories again.
//!
//! Invariants: the set of hierarchies is current at every operation, so a
//! hierarchy mounted while rsupd runs is used by the next container start,
//! and one unmounted since is skipped: `/proc/self/cgroup` is read every
//! time, and `/proc/self/mountinfo` (costly for the kernel to write out)
//! whenever the kernel reports that the mount table changed, which it does
//! through `poll(2)` on an open mountinfo file (`POLLPRI`, see proc(5)).
//! A mounted hierarchy that does not
//! show rsupd's own cgroup (mounted from a cgroup below it) cannot hold the
//! container's leaf: starting a container then fails rather than leaving
//! that hierarchy's root in reach. A hierarchy mounted only after a
//! container started, or one that exists without being mounted anywhere in
//! rsupd's mount namespace, stays rooted at rsupd's cgroup for that
//! container (see docs/security.md). Nothing is created at a hierarchy's
//! root, and new cpuset cgroups get their parent's CPUs and memory nodes
//! (an empty cpuset refuses tasks).

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{CgroupError, parse_mountinfo, parse_proc_cgroup, read, remove_dir, write};

/// Which hierarchies the driver places containers in itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The v1 driver: hierarchies with any of these controllers.
    Controllers(Vec<String>),
    /// The v2 driver: the unified hierarchy.
    Unified,
}

/// One hierarchy a container is placed in besides the driver's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// How `/proc/self/cgroup` names it: `freezer`, `net_cls,net_prio`,
    /// `name=systemd`; `cgroup2` for the unified hierarchy.
    pub name: String,
    /// `<rsupd's cgroup in it>/<subtree>`, under one of its mounts.
    pub base: PathBuf,
}

/// What a scan found: the hierarchies to use, and the mounted ones that
/// cannot be used (each an [`CgroupError::Unplaceable`]).
#[derive(Debug, Default)]
pub struct Scan {
    pub hierarchies: Vec<Hierarchy>,
    pub unplaceable: Vec<CgroupError>,
}

/// The extra hierarchies of one driver (see the module documentation).
#[derive(Debug, Clone)]
pub struct Extra {
    subtree: String,
    skip: Skip,
    mountinfo: PathBuf,
    proc_cgroup: PathBuf,
    /// The open mount table and its last text (none for
    /// [`Extra::with_sources`]: files cannot tell that they changed).
    cache: Option<Arc<Mutex<Cache>>>,
}

/// The open mount table and its last text (see the module documentation).
#[derive(Debug, Default)]
struct Cache {
    mountinfo: Option<File>,
    text: String,
}

impl Cache {
    /// The mount table as it is now: the last text if the kernel reports
    /// no change since (the poll itself resets the report), else read
    /// again. A change made during the read is reported at the next poll.
    fn mountinfo(&mut self, path: &Path) -> Result<(), CgroupError> {
        let mut f = match self.mountinfo.take() {
            Some(f) if !changed(&f) => {
                self.mountinfo = Some(f);
                return Ok(());
            }
            Some(f) => f,
            // The first poll of a new file reports nothing: the open took
            // the table's state, and the read below is of that or newer.
            None => File::open(path).map_err(super::io("open", path))?,
        };
        let mut text = String::new();
        // On an error the file is dropped and opened again next time: the
        // last text is no longer current.
        f.rewind()
            .and_then(|_| f.read_to_string(&mut text))
            .map_err(super::io("read", path))?;
        self.text = text;
        self.mountinfo = Some(f);
        Ok(())
    }
}

/// Whether the kernel reports a change of the mount table since the last
/// poll of `f` (an open mountinfo file); a failed poll counts as one.
fn changed(f: &File) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

impl Extra {
    /// The extra hierarchies of this process, with rsup's cgroups in
    /// `<own>/<subtree>` of each.
    pub fn new(subtree: &str, skip: Skip) -> Extra {
        Extra {
            subtree: subtree.to_string(),
            skip,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            proc_cgroup: PathBuf::from("/proc/self/cgroup"),
            cache: Some(Arc::default()),
        }
    }

    /// Reads the mount table and the own cgroups from these files instead
    /// (tests, with a fake cgroupfs).
    pub fn with_sources(mut self, mountinfo: &Path, proc_cgroup: &Path) -> Extra {
        self.mountinfo = mountinfo.to_path_buf();
        self.proc_cgroup = proc_cgroup.to_path_buf();
        self.cache = None;
        self
    }

    /// The hierarchies mounted now.
    pub fn scan(&self) -> Result<Scan, CgroupError> {
        let pc = read(&self.proc_cgroup)?;
        let Some(cache) = &self.cache else {
            let mi = read(&self.mountinfo)?;
            return Ok(self.scan_from(&mi, &pc));
        };
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        c.mountinfo(&self.mountinfo)?;
        Ok(self.scan_from(&c.text, &pc))
    }

    /// [`Extra::scan`] of the given texts (pure).
    pub fn scan_from(&self, mountinfo: &str, proc_cgroup: &str) -> Scan {
        let mounts = parse_mountinfo(mountinfo);
        let mut scan = Scan::default();
        for (id, ctrls, own) in parse_proc_cgroup(proc_cgroup) {
            let unified = id == 0 && ctrls.is_empty();
            let skipped = match &self.skip {
                Skip::Unified => unified,
                Skip::Controllers(used) => ctrls.iter().any(|c| used.contains(c)),
            };
            if skipped {
                continue;
            }
            let name = if unified {
                "cgroup2".to_string()
            } else {
                ctrls.join(",")
            };
            let candidates: Vec<_> = mounts
                .iter()
                .filter(|m| {
                    if unified {
                        m.unified
                    } else {
                        !m.unified
                            && ctrls.iter().any(|c| match c.strip_prefix("name=") {
                                Some(n) => m.name.as_deref() == Some(n),
                                None => m.controllers.contains(c),
                            })
                    }
                })
                .collect();
            // Not mounted in this mount namespace: nothing to create it in.
            let Some(first) = candidates.first() else {
                continue;
            };
            let placed = candidates.iter().find_map(|m| {
                let rel = relative(&m.root, &own)?;
                let mut base = m.mount_point.clone();
                base.extend(rel);
                base.push(&self.subtree);
                Some(base)
            });
            match placed {
                Some(base) => scan.hierarchies.push(Hierarchy { name, base }),
                None => scan.unplaceable.push(CgroupError::Unplaceable {
                    hierarchy: name,
                    mount_point: first.mount_point.clone(),
                    root: first.root.clone(),
                    own,
                }),
            }
        }
        scan
    }

    /// The scan, or the first hierarchy that cannot hold a container.
    fn usable(&self) -> Result<Vec<Hierarchy>, CgroupError> {
        let scan = self.scan()?;
        match scan.unplaceable.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(scan.hierarchies),
        }
    }

    /// Creates the container's cgroup in every extra hierarchy
    /// (idempotent).
    pub fn create(&self, name: &str) -> Result<(), CgroupError> {
        for h in self.usable()? {
            place(&h, name)?;
        }
        Ok(())
    }

    /// Moves `pid` into the container's cgroup of every extra hierarchy
    /// (creating one mounted since [`Extra::create`]).
    pub fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        for h in self.usable()? {
            let procs = h.base.join(name).join("cgroup.procs");
            // Made by create(): one stat instead of mkdirs on every start.
            if !procs.exists() {
                place(&h, name)?;
            }
            write(&procs, &pid.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files of the container's cgroups that exist.
    pub fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        let Ok(scan) = self.scan() else {
            return Vec::new();
        };
        scan.hierarchies
            .iter()
            .map(|h| h.base.join(name).join("cgroup.procs"))
            .filter(|p| p.exists())
            .collect()
    }

    /// Names of the container cgroups in any extra hierarchy.
    pub fn list(&self) -> Vec<String> {
        let Ok(scan) = self.scan() else {
            return Vec::new();
        };
        let mut names: Vec<String> = Vec::new();
        for h in &scan.hierarchies {
            for n in super::subdirs(&h.base) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    /// Removes the container's cgroup from every extra hierarchy mounted
    /// now, killing what is left in it; missing is fine. Tries them all.
    pub fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let mut first_err = None;
        for h in self.scan()?.hierarchies {
            if let Err(e) = remove_dir(&h.base.join(name)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// `<base>/<name>`, created (with `<base>`) if missing, cpusets filled in.
/// Outside a cpuset hierarchy the leaf is made first and `<base>` only
/// when that finds it missing (one mkdir on most starts).
fn place(h: &Hierarchy, name: &str) -> Result<PathBuf, CgroupError> {
    let leaf = h.base.join(name);
    let cpuset = h.name.split(',').any(|c| c == "cpuset");
    if !cpuset {
        match std::fs::create_dir(&leaf) {
            Ok(()) => return Ok(leaf),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(leaf),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(super::io("mkdir", &leaf)(e)),
        }
    }
    mkdir(&h.base, true, cpuset)?;
    mkdir(&leaf, false, cpuset)?;
    Ok(leaf)
}

fn mkdir(dir: &Path, parents: bool, cpuset: bool) -> Result<(), CgroupError> {
    let made = if parents {
        std::fs::create_dir_all(dir)
    } else {
        std::fs::create_dir(dir)
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(super::io("mkdir", dir)(e)),
    }
    if cpuset { inherit_cpuset(dir) } else { Ok(()) }
}

/// A new v1 cpuset cgroup has no CPUs and no memory nodes, and refuses
/// tasks until it has: give it its parent's (what runc does). Directories
/// without those files (any other controller) are left alone.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !own.exists() || !read(&own)?.trim().is_empty() {
            continue;
        }
        if let Some(parent) = dir.parent() {
            let value = read(&parent.join(file))?;
            if !value.trim().is_empty() {
                write(&own, value.trim())?;
            }
        }
    }
    Ok(())
}

/// The components of cgroup `path` below a mount's `root`, if the mount
/// shows it (`..`, as a path outside a cgroup namespace reads, never does).
fn relative(root: &str, path: &str) -> Option<Vec<String>> {
    let parts = |p: &str| -> Option<Vec<String>> {
        let v: Vec<String> = p
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(String::from)
            .collect();
        (!v.iter().any(|c| c == "..")).then_some(v)
    };
    let (root, path) = (parts(root)?, parts(path)?);
    path.strip_prefix(root.as_slice()).map(<[String]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 22 0:50 / /tmp/my\\040cg rw,relatime - cgroup cgroup rw,name=rvx
";
    const HYBRID_SELF: &str = "\
12:name=rvx:/
11:blkio:/
10:net_cls,net_prio:/
9:name=systemd:/system.slice/rsupd.service
8:pids:/system.slice/rsupd.service
7:freezer:/
6:devices:/system.slice/rsupd.service
5:cpuset:/
4:memory:/system.slice/rsupd.service
2:cpu,cpuacct:/system.slice/rsupd.service
0::/system.slice/rsupd.service
";

    fn v1_skip() -> Skip {
        Skip::Controllers(
            ["memory", "cpu", "cpuacct", "pids", "devices"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn names(scan: &Scan) -> Vec<(String, String)> {
        scan.hierarchies
            .iter()
            .map(|h| (h.name.clone(), h.base.display().to_string()))
            .collect()
    }

    #[test]
    fn hybrid_host_every_hierarchy_but_the_drivers() {
        let scan = Extra::new("rsup", v1_skip()).scan_from(HYBRID, HYBRID_SELF);
        assert!(scan.unplaceable.is_empty(), "{:?}", scan.unplaceable);
        let pairs = [
            ("name=rvx", "/tmp/my cg/rsup"),
            // blkio is not mounted: nowhere to make a cgroup in.
            ("net_cls,net_prio", "/sys/fs/cgroup/net_cls,net_prio/rsup"),
            (
                "name=systemd",
                "/sys/fs/cgroup/systemd/system.slice/rsupd.service/rsup",
            ),
            ("freezer", "/sys/fs/cgroup/freezer/rsup"),
            ("cpuset", "/sys/fs/cgroup/cpuset/rsup"),
            (
                "cgroup2",
                "/sys/fs/cgroup/unified/system.slice/rsupd.service/rsup",
            ),
        ];
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(names(&scan), want);
    }

    #[test]
    fn v2_host_only_v1_hierarchies() {
        let mi = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
90 22 0:50 / /mnt/cg rw,relatime - cgroup cgroup rw,name=rvx
";
        let own = "1:name=rvx:/\n0::/rsupd.service\n";
        let scan = Extra::new("rsup", Skip::Unified).scan_from(mi, own);
        assert_eq!(
            names(&scan),
            vec![("name=rvx".to_string(), "/mnt/cg/rsup".to_string())]
        );
        // Pure v2: nothing.
        let pure = Extra::new("rsup", Skip::Unified).scan_from(mi, "0::/rsupd.service\n");
        assert!(pure.hierarchies.is_empty() && pure.unplaceable.is_empty());
    }

    #[test]
    fn a_mount_that_hides_the_own_cgroup_is_unplaceable() {
        // Only a subtree of the hierarchy is mounted, not rsupd's cgroup.
        let mi = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
90 22 0:50 /other /mnt/cg rw - cgroup cgroup rw,freezer
";
        let own = "4:memory:/\n7:freezer:/rsupd\n";
        let scan = Extra::new("rsup", v1_skip()).scan_from(mi, own);
        assert!(scan.hierarchies.is_empty());
        let [CgroupError::Unplaceable { hierarchy, .. }] = scan.unplaceable.as_slice() else {
            panic!("{:?}", scan.unplaceable)
        };
        assert_eq!(hierarchy, "freezer");
        // A second mount that does show it is used instead.
        let mi2 = format!("{mi}91 22 0:50 / /mnt/cg2 rw - cgroup cgroup rw,freezer\n");
        let scan = Extra::new("rsup", v1_skip()).scan_from(&mi2, own);
        assert!(scan.unplaceable.is_empty());
        assert_eq!(
            names(&scan),
            vec![("freezer".to_string(), "/mnt/cg2/rsupd/rsup".to_string())]
        );
        // A mount root below a cgroup namespace's root (`/..`) never shows it.
        assert_eq!(relative("/", "/../x"), None);
        assert_eq!(relative("/a", "/a/b"), Some(vec!["b".to_string()]));
        assert_eq!(relative("/a", "/ab"), None);
    }

    /// A fake host: a named hierarchy and a cpuset one under a temp dir,
    /// with the mountinfo and /proc/self/cgroup texts that describe them.
    fn fake() -> (tempfile::TempDir, Extra) {
        let t = tempfile::tempdir().expect("tempdir");
        let (named, cpuset) = (t.path().join("named"), t.path().join("cpuset"));
        for d in [&named, &cpuset] {
            std::fs::create_dir_all(d.join("own")).expect("mkdir");
        }
        std::fs::write(cpuset.join("own/cpuset.cpus"), "0-3\n").expect("w");
        std::fs::write(cpuset.join("own/cpuset.mems"), "0\n").expect("w");
        let mi = format!(
            "90 22 0:50 / {} rw - cgroup cgroup rw,name=rvx\n\
             91 22 0:51 / {} rw - cgroup cgroup rw,cpuset\n\
             92 22 0:52 / /nonexistent/memory rw - cgroup cgroup rw,memory\n",
            named.display(),
            cpuset.display()
        );
        let mi_path = t.path().join("mountinfo");
        let pc_path = t.path().join("cgroup");
        std::fs::write(&mi_path, mi).expect("w");
        std::fs::write(&pc_path, "3:name=rvx:/own\n2:cpuset:/own\n1:memory:/\n").expect("w");
        let extra = Extra::new("rsup", v1_skip()).with_sources(&mi_path, &pc_path);
        (t, extra)
    }

    #[test]
    fn create_join_list_and_remove_in_every_hierarchy() {
        let (t, x) = fake();
        let leaf_n = t.path().join("named/own/rsup/c1");
        let leaf_c = t.path().join("cpuset/own/rsup/c1");
        // The kernel makes a cpuset cgroup's files, empty: so does the fake.
        std::fs::create_dir_all(t.path().join("cpuset/own/rsup")).expect("mkdir");
        std::fs::write(t.path().join("cpuset/own/rsup/cpuset.cpus"), "\n").expect("w");
        std::fs::write(t.path().join("cpuset/own/rsup/cpuset.mems"), "").expect("w");
        x.create("c1").expect("create");
        assert!(leaf_n.is_dir() && leaf_c.is_dir());
        let r = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        assert_eq!(r(t.path().join("cpuset/own/rsup/cpuset.cpus")), "0-3");
        assert_eq!(r(t.path().join("cpuset/own/rsup/cpuset.mems")), "0");
        x.create("c1").expect("idempotent");

        x.add_process("c1", 4242).expect("join");
        assert_eq!(r(leaf_n.join("cgroup.procs")), "4242");
        assert_eq!(r(leaf_c.join("cgroup.procs")), "4242");
        assert_eq!(
            x.procs_files("c1"),
            vec![leaf_n.join("cgroup.procs"), leaf_c.join("cgroup.procs")]
        );
        assert!(x.procs_files("c2").is_empty());
        assert_eq!(x.list(), vec!["c1".to_string()]);

        // A real cgroup dir is empty to rmdir; a fake one must be too.
        for l in [&leaf_n, &leaf_c] {
            std::fs::remove_file(l.join("cgroup.procs")).expect("rm");
        }
        x.remove("c1").expect("remove");
        assert!(!leaf_n.exists() && !leaf_c.exists());
        x.remove("c1").expect("again");
        assert!(x.list().is_empty());
    }

    #[test]
    fn an_unplaceable_hierarchy_stops_create_but_not_remove() {
        let (t, x) = fake();
        let mi_path = t.path().join("mountinfo");
        let mut mi = std::fs::read_to_string(&mi_path).expect("read");
        mi.push_str("93 22 0:53 /elsewhere /mnt/fz rw - cgroup cgroup rw,freezer\n");
        std::fs::write(&mi_path, mi).expect("w");
        let pc_path = t.path().join("cgroup");
        let mut pc = std::fs::read_to_string(&pc_path).expect("read");
        pc.push_str("4:freezer:/own\n");
        std::fs::write(&pc_path, pc).expect("w");
        let e = x.create("c1").expect_err("unplaceable");
        assert!(
            e.to_string().contains("freezer") && e.to_string().contains("/mnt/fz"),
            "{e}"
        );
        assert!(x.add_process("c1", 1).is_err());
        x.remove("c1").expect("remove skips it");
    }
}
