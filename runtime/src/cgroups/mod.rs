//! Control groups: one interface over cgroup v1 and v2, chosen once at start.
//!
//! Container cgroups live in a subtree of rsupd's own cgroup (read from
//! `/proc/self/cgroup`) in every hierarchy, as `<own>/rsup/<container id>`,
//! so that limits placed on rsupd (by systemd, say) hold for its containers
//! too. Nothing is ever created at a hierarchy's root.
//!
//! * [`detect`] reads `/proc/self/mountinfo` and `/proc/self/cgroup`: a
//!   cgroup2 mount at `/sys/fs/cgroup` means the unified hierarchy (v2);
//!   otherwise the v1 controllers rsup needs (memory, cpu, cpuacct, pids)
//!   are used wherever they are mounted (this machine: v1 with an unused
//!   cgroup2 at `/sys/fs/cgroup/unified`, the "hybrid" layout).
//! * [`Manager`] is the narrow interface the runtime uses; [`AnyManager`] is
//!   the enum of the two drivers. Both take their root paths as data, so unit
//!   tests run them against fake trees in a temp dir.
//! * Device access ([`devices`]): one allow-list, written to the v1 devices
//!   controller or compiled into the eBPF program v2 attaches.
//! * The kernel's own counters are the truth for OOM kills: v1
//!   `memory.oom_control` (`oom_kill`), v2 `memory.events` (`oom_kill`).

pub mod devices;
pub mod extra;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};

/// Errors of cgroup operations, with the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {what}")]
    Parse { path: PathBuf, what: String },
    #[error("no usable cgroup hierarchy: {0}")]
    Unavailable(String),
    /// A bpf(2) command on a cgroup failed; `log` is the verifier's output
    /// when the kernel refused a program.
    #[error("{op} {path}: {errno}{}", if log.is_empty() { String::new() } else { format!("; verifier log:\n{log}") })]
    Bpf {
        op: &'static str,
        path: PathBuf,
        errno: nix::errno::Errno,
        log: String,
    },
    /// A mounted hierarchy that does not show rsupd's own cgroup, so no
    /// container cgroup can be made in it (see [`extra`]).
    #[error(
        "the cgroup hierarchy {hierarchy} is mounted at {} from its cgroup {root}, which does not hold rsupd's cgroup {own}: a container could not be placed in it and would reach cgroups above its own there (unmount it, or mount the hierarchy's root)",
        mount_point.display()
    )]
    Unplaceable {
        hierarchy: String,
        mount_point: PathBuf,
        root: String,
        own: String,
    },
}

pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// Resource limits of a container. `None` means "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Memory plus swap in bytes (Docker's `--memory-swap`); `Some(u64::MAX)`
    /// is unlimited swap. `None` with a memory limit means twice the memory,
    /// as in Docker.
    pub memory_swap: Option<u64>,
    /// CPUs, as a CFS quota over a 100 ms period.
    pub cpus: Option<f64>,
    /// Relative CPU weight (v1 shares, 2-262144).
    pub cpu_shares: Option<u64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
}

/// The CFS period rsup uses (100 ms, as Docker).
pub const CFS_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The memory+swap limit to write, if any: Docker's rule.
    pub fn effective_swap(&self) -> Option<u64> {
        match (self.memory, self.memory_swap) {
            (_, Some(u64::MAX)) => None,
            (_, Some(s)) => Some(s),
            (Some(m), None) => Some(m.saturating_mul(2)),
            (None, None) => None,
        }
    }

    /// CFS quota in microseconds per [`CFS_PERIOD_US`].
    pub fn cfs_quota_us(&self) -> Option<u64> {
        self.cpus
            .map(|c| ((c * CFS_PERIOD_US as f64).round() as u64).max(1000))
    }
}

/// Usage counters of one cgroup, as read from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub memory_usage: u64,
    /// Usage minus inactive file cache (Docker's and cAdvisor's "working set").
    pub memory_working_set: u64,
    /// The limit in force; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    /// OOM kills counted by the kernel for this cgroup since it was created.
    pub oom_kills: u64,
}

/// Which driver is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    V1,
    V2,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::V1 => "v1",
            Driver::V2 => "v2",
        }
    }
}

/// What the runtime needs from a cgroup driver. `name` is a container id.
pub trait Manager {
    fn driver(&self) -> Driver;
    /// Creates the container's cgroup (idempotent).
    fn create(&self, name: &str) -> Result<(), CgroupError>;
    /// Writes every limit (also resetting unset ones to unlimited).
    fn apply(&self, name: &str, limits: &Limits) -> Result<(), CgroupError>;
    /// Allows only the standard devices ([`devices::DEFAULT_RULES`]), or all
    /// for privileged containers, before any process runs in the cgroup:
    /// the devices controller on v1, an eBPF device program on v2.
    /// Calling it again replaces what an earlier call set.
    fn restrict_devices(&self, name: &str, all: bool) -> Result<(), CgroupError>;
    /// Moves a process into the container's cgroup.
    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError>;
    /// The container's cgroup directory, when a process can be created
    /// right in it (clone3 with `CLONE_INTO_CGROUP`, Linux 5.7) instead of
    /// moved there: on v2 only. A move (a `cgroup.procs` write) takes the
    /// kernel's `cgroup_threadgroup_rwsem` for writing, which waits for an
    /// RCU grace period unless another move happened within one (10-17 ms
    /// on the test machine); a process created in its cgroup does not.
    fn clone_into_dir(&self, _name: &str) -> Option<PathBuf> {
        None
    }
    /// Places a process that was created in [`Manager::clone_into_dir`]'s
    /// directory in whatever else the container's cgroup spans (the extra
    /// hierarchies of [`extra`]).
    fn add_created_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        self.add_process(name, pid)
    }
    fn stats(&self, name: &str) -> Result<Stats, CgroupError>;
    /// Pids in the container's cgroup.
    fn processes(&self, name: &str) -> Result<Vec<i32>, CgroupError>;
    /// The `cgroup.procs` files a process must be written to, to join.
    fn procs_files(&self, name: &str) -> Vec<PathBuf>;
    /// Names of the container cgroups that exist under the subtree.
    fn list(&self) -> Vec<String>;
    /// Removes the cgroup, killing what is left in it; missing is fine.
    fn remove(&self, name: &str) -> Result<(), CgroupError>;
}

/// The driver chosen at start.
#[derive(Debug)]
pub enum AnyManager {
    V1(v1::V1),
    V2(v2::V2),
}

impl Manager for AnyManager {
    fn driver(&self) -> Driver {
        match self {
            AnyManager::V1(m) => m.driver(),
            AnyManager::V2(m) => m.driver(),
        }
    }
    fn create(&self, name: &str) -> Result<(), CgroupError> {
        match self {
            AnyManager::V1(m) => m.create(name),
            AnyManager::V2(m) => m.create(name),
        }
    }
    fn apply(&self, name: &str, limits: &Limits) -> Result<(), CgroupError> {
        match self {
            AnyManager::V1(m) => m.apply(name, limits),
            AnyManager::V2(m) => m.apply(name, limits),
        }
    }
    fn restrict_devices(&self, name: &str, all: bool) -> Result<(), CgroupError> {
        match self {
            AnyManager::V1(m) => m.restrict_devices(name, all),
            AnyManager::V2(m) => m.restrict_devices(name, all),
        }
    }
    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        match self {
            AnyManager::V1(m) => m.add_process(name, pid),
            AnyManager::V2(m) => m.add_process(name, pid),
        }
    }
    fn clone_into_dir(&self, name: &str) -> Option<PathBuf> {
        match self {
            AnyManager::V1(m) => m.clone_into_dir(name),
            AnyManager::V2(m) => m.clone_into_dir(name),
        }
    }
    fn add_created_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        match self {
            AnyManager::V1(m) => m.add_created_process(name, pid),
            AnyManager::V2(m) => m.add_created_process(name, pid),
        }
    }
    fn stats(&self, name: &str) -> Result<Stats, CgroupError> {
        match self {
            AnyManager::V1(m) => m.stats(name),
            AnyManager::V2(m) => m.stats(name),
        }
    }
    fn processes(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        match self {
            AnyManager::V1(m) => m.processes(name),
            AnyManager::V2(m) => m.processes(name),
        }
    }
    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        match self {
            AnyManager::V1(m) => m.remove(name),
            AnyManager::V2(m) => m.remove(name),
        }
    }
    fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        match self {
            AnyManager::V1(m) => m.procs_files(name),
            AnyManager::V2(m) => m.procs_files(name),
        }
    }
    fn list(&self) -> Vec<String> {
        match self {
            AnyManager::V1(m) => m.list(),
            AnyManager::V2(m) => m.list(),
        }
    }
}

impl AnyManager {
    /// The hierarchies a container started now would also be placed in
    /// (see [`extra`]), by name; problems with any are in the error.
    pub fn extra_hierarchies(&self) -> Result<Vec<String>, CgroupError> {
        let extra = match self {
            AnyManager::V1(m) => m.extra(),
            AnyManager::V2(m) => m.extra(),
        };
        let Some(extra) = extra else {
            return Ok(Vec::new());
        };
        let scan = extra.scan()?;
        if let Some(e) = scan.unplaceable.into_iter().next() {
            return Err(e);
        }
        Ok(scan.hierarchies.into_iter().map(|h| h.name).collect())
    }
}

/// One cgroup mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupMount {
    /// Path inside the hierarchy that is mounted (usually "/").
    pub root: String,
    pub mount_point: PathBuf,
    /// true for cgroup2.
    pub unified: bool,
    /// v1 controllers of this hierarchy (and its other option words,
    /// such as `xattr`).
    pub controllers: Vec<String>,
    /// The `name=` of a v1 hierarchy that has one (`systemd`).
    pub name: Option<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a
/// backslash, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                u8::try_from(v).ok()
            });
        if let Some(c) = octal {
            out.push(c);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the cgroup mounts of a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let fstype = *post.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let options: Vec<&str> = post
                .get(2)
                .map(|o| o.split(',').collect())
                .unwrap_or_default();
            let controllers = options
                .iter()
                .filter(|x| !matches!(**x, "rw" | "ro") && !x.contains('='))
                .map(|x| x.to_string())
                .collect();
            let name = options
                .iter()
                .find_map(|x| x.strip_prefix("name="))
                .map(String::from);
            Some(CgroupMount {
                root: unescape(pre.get(3)?),
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                unified: fstype == "cgroup2",
                controllers,
                name,
            })
        })
        .collect()
}

/// Parses /proc/self/cgroup into (hierarchy id, controllers, path).
pub fn parse_proc_cgroup(text: &str) -> Vec<(u32, Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctrls = it.next()?;
            let path = it.next()?.to_string();
            let ctrls = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(String::from).collect()
            };
            Some((id, ctrls, path))
        })
        .collect()
}

/// Directory of the process's own cgroup under a mount: the path from
/// /proc/self/cgroup made relative to the mount's root.
pub fn own_dir(mount: &CgroupMount, own_path: &str) -> PathBuf {
    let rel = own_path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(own_path);
    let mut p = mount.mount_point.clone();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

/// Picks the driver from the given texts (pure; see [`detect`]). `subtree`
/// is the directory name under the own cgroup ("rsup").
pub fn detect_from(
    mountinfo: &str,
    proc_cgroup: &str,
    subtree: &str,
) -> Result<AnyManager, CgroupError> {
    let mounts = parse_mountinfo(mountinfo);
    let own = parse_proc_cgroup(proc_cgroup);
    let v1_needed = ["memory", "cpu", "cpuacct", "pids"];
    let has_v1 = mounts
        .iter()
        .any(|m| !m.unified && m.controllers.iter().any(|c| c == "memory"));
    let unified_at_root = mounts
        .iter()
        .find(|m| m.unified && m.mount_point == Path::new("/sys/fs/cgroup"))
        .or_else(|| {
            if has_v1 {
                None
            } else {
                mounts.iter().find(|m| m.unified)
            }
        });
    if let Some(m) = unified_at_root {
        let path = own
            .iter()
            .find(|(id, c, _)| *id == 0 && c.is_empty())
            .map(|(_, _, p)| p.as_str())
            .ok_or_else(|| CgroupError::Unavailable("no 0:: line in /proc/self/cgroup".into()))?;
        let extra = extra::Extra::new(subtree, extra::Skip::Unified);
        return Ok(AnyManager::V2(
            v2::V2::new(own_dir(m, path), subtree).with_extra(extra),
        ));
    }
    let mut dirs = Vec::new();
    for ctrl in v1_needed {
        let mount = mounts
            .iter()
            .find(|m| !m.unified && m.controllers.iter().any(|c| c == ctrl))
            .ok_or_else(|| {
                CgroupError::Unavailable(format!("the v1 {ctrl} controller is not mounted"))
            })?;
        let path = own
            .iter()
            .find(|(_, c, _)| c.iter().any(|x| x == ctrl))
            .map(|(_, _, p)| p.as_str())
            .ok_or_else(|| {
                CgroupError::Unavailable(format!("no {ctrl} line in /proc/self/cgroup"))
            })?;
        dirs.push((ctrl, own_dir(mount, path).join(subtree)));
    }
    // Optional: the device allow-list (only the standard devices).
    let devices = mounts
        .iter()
        .find(|m| !m.unified && m.controllers.iter().any(|c| c == "devices"))
        .and_then(|m| {
            own.iter()
                .find(|(_, c, _)| c.iter().any(|x| x == "devices"))
                .map(|(_, _, p)| own_dir(m, p).join(subtree))
        });
    if let Some(d) = devices {
        dirs.push(("devices", d));
    }
    // Every other mounted hierarchy gets a leaf too (see [`extra`]).
    let used = dirs.iter().map(|(c, _)| c.to_string()).collect();
    let extra = extra::Extra::new(subtree, extra::Skip::Controllers(used));
    Ok(AnyManager::V1(v1::V1::new(dirs).with_extra(extra)))
}

/// Detects the host's cgroup layout from `/proc/self/*`.
pub fn detect(subtree: &str) -> Result<AnyManager, CgroupError> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let pc = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(io("read", Path::new("/proc/self/cgroup")))?;
    detect_from(&mi, &pc, subtree)
}

// ------------------------------------------------------------- file helpers

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io("write", path))
}

pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let s = read(path)?;
    s.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        what: format!("{:?} as a number", s.trim()),
    })
}

/// `key value` files (memory.stat, cpu.stat, memory.events, oom_control).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let s = read(path)?;
    Ok(s.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            if k == key {
                v.trim().parse().ok()
            } else {
                None
            }
        })
        .unwrap_or(0))
}

/// Sub-directory names of `dir` (missing: none).
pub(crate) fn subdirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(read(path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Removes a cgroup directory and every cgroup below it (a container with
/// CAP_SYS_ADMIN, or a delegated one, may have made some), deepest first:
/// kills what is left, retries while the kernel still counts tasks (EBUSY),
/// treats a missing directory as done. Tries every child; returns the
/// first error.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut first_err = None;
    for child in subdirs(dir) {
        if let Err(e) = remove_dir(&dir.join(child)) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    for attempt in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 99 => {
                for pid in read_pids(&dir.join("cgroup.procs")).unwrap_or_default() {
                    let _ = crate::sys::kill(pid, libc::SIGKILL);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(io("rmdir", dir)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_layout_uses_v1_under_own_cgroup() {
        let m = detect_from(HYBRID, HYBRID_SELF, "rsup").expect("detect");
        let AnyManager::V1(v1) = m else {
            panic!("expected v1, got {m:?}")
        };
        assert_eq!(
            v1.dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/process_api/abc/rsup"))
        );
        assert_eq!(v1.dir("cpu"), Some(Path::new("/sys/fs/cgroup/cpu/rsup")));
        assert_eq!(v1.dir("pids"), Some(Path::new("/sys/fs/cgroup/pids/rsup")));
        // Every other mounted hierarchy is placed in too: name=systemd and
        // the unified one (cpuacct, mounted on its own, is the driver's).
        let extra = v1.extra().expect("extra hierarchies");
        let scan = extra.scan_from(HYBRID, HYBRID_SELF);
        let found: Vec<(&str, &Path)> = scan
            .hierarchies
            .iter()
            .map(|h| (h.name.as_str(), h.base.as_path()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("name=systemd", Path::new("/sys/fs/cgroup/systemd/rsup")),
                ("cgroup2", Path::new("/sys/fs/cgroup/unified/rsup")),
            ]
        );
    }

    #[test]
    fn mountinfo_names_and_escapes() {
        let mi = "40 31 0:37 /a\\134b /mnt/my\\040cg rw - cgroup cgroup rw,xattr,name=systemd\n";
        let m = parse_mountinfo(mi);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name.as_deref(), Some("systemd"));
        assert_eq!(m[0].controllers, vec!["xattr".to_string()]);
        assert_eq!(m[0].mount_point, Path::new("/mnt/my cg"));
        assert_eq!(m[0].root, "/a\\b");
        assert_eq!(unescape("\\777x\\04"), "\\777x\\04");
    }

    #[test]
    fn unified_layout_uses_v2() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = detect_from(mi, "0::/system.slice/rsupd.service\n", "rsup").expect("detect");
        let AnyManager::V2(v2) = m else {
            panic!("expected v2")
        };
        assert_eq!(
            v2.own(),
            Path::new("/sys/fs/cgroup/system.slice/rsupd.service")
        );
    }

    #[test]
    fn cgroup_namespace_root_is_stripped() {
        let mi = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = detect_from(mi, "0::/kubepods/pod1/ctr\n", "rsup").expect("detect");
        let AnyManager::V2(v2) = m else {
            panic!("expected v2")
        };
        assert_eq!(v2.own(), Path::new("/sys/fs/cgroup/ctr"));
    }

    #[test]
    fn missing_controller_is_reported() {
        let mi = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(matches!(
            detect_from(mi, "4:memory:/\n", "rsup"),
            Err(CgroupError::Unavailable(_))
        ));
    }

    #[test]
    fn docker_swap_rule() {
        let l = |memory, memory_swap| Limits {
            memory,
            memory_swap,
            ..Default::default()
        };
        assert_eq!(l(Some(100), None).effective_swap(), Some(200));
        assert_eq!(l(Some(100), Some(150)).effective_swap(), Some(150));
        assert_eq!(l(Some(100), Some(u64::MAX)).effective_swap(), None);
        assert_eq!(l(None, None).effective_swap(), None);
        let c = Limits {
            cpus: Some(0.5),
            ..Default::default()
        };
        assert_eq!(c.cfs_quota_us(), Some(50_000));
    }
}
