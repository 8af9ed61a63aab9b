//! cgroup v2: one unified tree. rsupd enables the memory, cpu and pids
//! controllers for `<own>/rsup` once: the "no internal processes" rule means
//! a cgroup that delegates controllers must hold no process itself, so when
//! rsupd's own cgroup is not the root and has processes, they are moved to a
//! leaf `<own>/rsupd` first.
//!
//! v2 has no devices controller: device access is an eBPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`, compiled by [`super::devices`]) attached
//! to the container's cgroup with `BPF_F_ALLOW_MULTI`, so that programs of
//! ancestors (systemd's, say) still run too. The kernel keeps it attached
//! for as long as the cgroup exists: nothing to restore after an rsupd
//! restart, nothing to detach before the rmdir. Every program attached to a
//! container's cgroup is rsup's: setting the filter again attaches the new
//! one and then detaches all that were there before, so there is never a
//! moment without one and never two after.

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::devices::{self, DeviceRule};
use super::extra::Extra;
use super::{
    CgroupError, Driver, Limits, Manager, Stats, read, read_keyed, read_pids, read_u64, remove_dir,
    write,
};
use crate::sys;

/// The name rsup's device programs carry (`bpftool prog` shows it).
const DEVICE_PROGRAM_NAME: &str = "rsup_devices";

/// The v2 driver.
#[derive(Debug)]
pub struct V2 {
    own: PathBuf,
    base: PathBuf,
    /// Whether controllers were enabled; done at the first create.
    prepared: Mutex<bool>,
    /// Any v1 hierarchy mounted beside, placed in too; `None` in tests.
    extra: Option<Extra>,
}

const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl V2 {
    pub fn new(own: PathBuf, subtree: &str) -> V2 {
        V2 {
            base: own.join(subtree),
            own,
            prepared: Mutex::new(false),
            extra: None,
        }
    }

    /// Also places containers in the hierarchies of `extra`.
    pub fn with_extra(mut self, extra: Extra) -> V2 {
        self.extra = Some(extra);
        self
    }

    pub fn extra(&self) -> Option<&Extra> {
        self.extra.as_ref()
    }

    /// rsupd's own cgroup directory.
    pub fn own(&self) -> &Path {
        &self.own
    }

    fn path(&self, name: &str, file: &str) -> PathBuf {
        self.base.join(name).join(file)
    }

    fn enable(dir: &Path) -> Result<(), CgroupError> {
        let available = read(&dir.join("cgroup.controllers"))?;
        let wanted: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
    }

    fn prepare(&self) -> Result<(), CgroupError> {
        let mut done = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return Ok(());
        }
        // The root cgroup has no cgroup.type (and is exempt from the rule).
        let is_root = !self.own.join("cgroup.type").exists();
        let procs = read_pids(&self.own.join("cgroup.procs"))?;
        if !is_root && !procs.is_empty() {
            let leaf = self.own.join("rsupd");
            std::fs::create_dir_all(&leaf).map_err(super::io("mkdir", &leaf))?;
            for pid in procs {
                // A process may have exited meanwhile: ignore ESRCH.
                let _ = write(&leaf.join("cgroup.procs"), &pid.to_string());
            }
        }
        Self::enable(&self.own)?;
        std::fs::create_dir_all(&self.base).map_err(super::io("mkdir", &self.base))?;
        Self::enable(&self.base)?;
        *done = true;
        Ok(())
    }
}

impl Manager for V2 {
    fn driver(&self) -> Driver {
        Driver::V2
    }

    fn create(&self, name: &str) -> Result<(), CgroupError> {
        self.prepare()?;
        let d = self.base.join(name);
        std::fs::create_dir_all(&d).map_err(super::io("mkdir", &d))?;
        self.extra.as_ref().map_or(Ok(()), |x| x.create(name))
    }

    fn apply(&self, name: &str, l: &Limits) -> Result<(), CgroupError> {
        let max = |v: Option<u64>| v.map_or_else(|| "max".to_string(), |v| v.to_string());
        write(&self.path(name, "memory.max"), &max(l.memory))?;
        let swap_file = self.path(name, "memory.swap.max");
        if swap_file.exists() {
            // v2 limits swap alone; Docker's flag is memory+swap.
            let swap = l
                .effective_swap()
                .map(|s| s.saturating_sub(l.memory.unwrap_or(0)));
            write(&swap_file, &max(swap))?;
        }
        write(
            &self.path(name, "cpu.max"),
            &format!("{} {}", max(l.cfs_quota_us()), super::CFS_PERIOD_US),
        )?;
        // runc's conversion of v1 shares (2-262144) to a weight (1-10000).
        let weight = l
            .cpu_shares
            .map_or(100, |s| 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142);
        write(&self.path(name, "cpu.weight"), &weight.to_string())?;
        write(&self.path(name, "pids.max"), &max(l.pids))?;
        Ok(())
    }

    fn restrict_devices(&self, name: &str, all: bool) -> Result<(), CgroupError> {
        let rules = (!all).then_some(&devices::DEFAULT_RULES[..]);
        set_device_filter(&self.base.join(name), rules)
    }

    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        write(&self.path(name, "cgroup.procs"), &pid.to_string())?;
        self.add_created_process(name, pid)
    }

    fn clone_into_dir(&self, name: &str) -> Option<PathBuf> {
        Some(self.base.join(name))
    }

    fn add_created_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        self.extra
            .as_ref()
            .map_or(Ok(()), |x| x.add_process(name, pid))
    }

    fn stats(&self, name: &str) -> Result<Stats, CgroupError> {
        let usage = read_u64(&self.path(name, "memory.current"))?;
        let inactive = read_keyed(&self.path(name, "memory.stat"), "inactive_file")?;
        let cpu_stat = self.path(name, "cpu.stat");
        Ok(Stats {
            memory_usage: usage,
            memory_working_set: usage.saturating_sub(inactive),
            memory_limit: read(&self.path(name, "memory.max"))?.trim().parse().ok(),
            cpu_usage_ns: read_keyed(&cpu_stat, "usage_usec")? * 1000,
            cpu_periods: read_keyed(&cpu_stat, "nr_periods")?,
            cpu_throttled_periods: read_keyed(&cpu_stat, "nr_throttled")?,
            cpu_throttled_ns: read_keyed(&cpu_stat, "throttled_usec")? * 1000,
            pids: read_u64(&self.path(name, "pids.current"))?,
            pids_limit: read(&self.path(name, "pids.max"))?.trim().parse().ok(),
            oom_kills: read_keyed(&self.path(name, "memory.events"), "oom_kill")?,
        })
    }

    fn processes(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        read_pids(&self.path(name, "cgroup.procs"))
    }

    fn list(&self) -> Vec<String> {
        let mut names = super::subdirs(&self.base);
        for n in self.extra.iter().flat_map(|x| x.list()) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        let mut files = vec![self.path(name, "cgroup.procs")];
        files.extend(self.extra.iter().flat_map(|x| x.procs_files(name)));
        files
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let d = self.base.join(name);
        if d.join("cgroup.kill").exists() {
            let _ = write(&d.join("cgroup.kill"), "1");
        }
        let own = remove_dir(&d);
        let extra = self.extra.as_ref().map_or(Ok(()), |x| x.remove(name));
        own.and(extra)
    }
}

/// Makes `rules` the device filter of the cgroup directory `dir`, or
/// removes every device program there when `rules` is `None` (all devices).
pub fn set_device_filter(dir: &Path, rules: Option<&[DeviceRule]>) -> Result<(), CgroupError> {
    let bpf_err = |op: &'static str| {
        move |errno| CgroupError::Bpf {
            op,
            path: dir.to_path_buf(),
            errno,
            log: String::new(),
        }
    };
    let cgroup = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(super::io("open", dir))?;
    let cgroup = cgroup.as_fd();
    let old = sys::bpf_prog_query(cgroup, sys::BPF_CGROUP_DEVICE)
        .map_err(bpf_err("query device programs of"))?;
    if let Some(rules) = rules {
        let program = devices::filter_program(rules);
        let prog = sys::bpf_load_device_program(&program, c"Apache-2.0", DEVICE_PROGRAM_NAME)
            .map_err(|e| CgroupError::Bpf {
                op: "load the device program for",
                path: dir.to_path_buf(),
                errno: e.errno,
                log: e.log,
            })?;
        sys::bpf_prog_attach(
            cgroup,
            prog.as_fd(),
            sys::BPF_CGROUP_DEVICE,
            sys::BPF_F_ALLOW_MULTI,
        )
        .map_err(bpf_err("attach the device program to"))?;
        // The attached program stays alive without our fd.
    }
    for id in old {
        // Gone meanwhile (ENOENT): nothing to detach.
        let prog = match sys::bpf_prog_get_fd_by_id(id) {
            Ok(p) => p,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(bpf_err("open an old device program of")(e)),
        };
        match sys::bpf_prog_detach(cgroup, prog.as_fd(), sys::BPF_CGROUP_DEVICE) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(bpf_err("detach an old device program from")(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> (tempfile::TempDir, V2) {
        let t = tempfile::tempdir().expect("tempdir");
        let own = t.path().join("own");
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::write(own.join("cgroup.type"), "domain\n").expect("w");
        std::fs::write(own.join("cgroup.procs"), "4242\n").expect("w");
        std::fs::write(
            own.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("w");
        std::fs::create_dir_all(own.join("rsup")).expect("mkdir");
        std::fs::write(own.join("rsup/cgroup.controllers"), "cpu memory pids\n").expect("w");
        (t, V2::new(own, "rsup"))
    }

    #[test]
    fn create_enables_controllers_and_moves_daemon_to_a_leaf() {
        let (_t, v) = fake();
        v.create("c1").expect("create");
        let r = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert_eq!(
            r(&v.own.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(
            r(&v.base.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(r(&v.own.join("rsupd/cgroup.procs")), "4242");
        assert!(v.base.join("c1").is_dir());
    }

    #[test]
    fn apply_and_stats() {
        let (_t, v) = fake();
        v.create("c1").expect("create");
        std::fs::write(v.path("c1", "memory.swap.max"), "").expect("w");
        let l = Limits {
            memory: Some(32 << 20),
            cpus: Some(1.5),
            cpu_shares: Some(512),
            pids: Some(64),
            ..Default::default()
        };
        v.apply("c1", &l).expect("apply");
        let r = |f: &str| std::fs::read_to_string(v.path("c1", f)).expect("read");
        assert_eq!(r("memory.max"), (32u64 << 20).to_string());
        assert_eq!(r("memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(r("cpu.max"), "150000 100000");
        assert_eq!(r("cpu.weight"), "20");
        assert_eq!(r("pids.max"), "64");

        let put = |f: &str, s: &str| std::fs::write(v.path("c1", f), s).expect("w");
        put("memory.current", "5000\n");
        put("memory.stat", "anon 1\ninactive_file 1000\n");
        put(
            "cpu.stat",
            "usage_usec 2000\nnr_periods 7\nnr_throttled 3\nthrottled_usec 50\n",
        );
        put("pids.current", "2\n");
        put("memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n");
        let s = v.stats("c1").expect("stats");
        assert_eq!(
            (s.memory_usage, s.memory_working_set, s.memory_limit),
            (5000, 4000, Some(32 << 20))
        );
        assert_eq!(
            (
                s.cpu_usage_ns,
                s.cpu_periods,
                s.cpu_throttled_periods,
                s.cpu_throttled_ns
            ),
            (2_000_000, 7, 3, 50_000)
        );
        assert_eq!((s.pids, s.pids_limit, s.oom_kills), (2, Some(64), 1));
    }
}

/// The device filter on the running kernel: needs root and a cgroup2 mount
/// (`/sys/fs/cgroup` on v2, `/sys/fs/cgroup/unified` on a hybrid host,
/// where device programs are enforced just the same); skipped otherwise.
#[cfg(test)]
mod kernel_tests {
    use super::*;
    use std::process::Command;

    /// A fresh cgroup2 directory, removed on drop.
    struct TestCgroup(PathBuf);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = remove_dir(&self.0);
        }
    }

    fn test_cgroup() -> Option<TestCgroup> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return None;
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let Some(mount) = super::super::parse_mountinfo(&mounts)
            .into_iter()
            .find(|m| m.unified && m.root == "/")
        else {
            eprintln!("skipped: no cgroup2 mount");
            return None;
        };
        let dir = mount
            .mount_point
            .join(format!("rsup-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir test cgroup");
        Some(TestCgroup(dir))
    }

    /// Runs `script` with sh inside the cgroup; (exit code, stdout+stderr).
    fn sh_in(cg: &Path, script: &str) -> (Option<i32>, String) {
        let procs = cg.join("cgroup.procs");
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("echo $$ > {} && {script}", procs.display()))
            .output()
            .expect("sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    }

    fn programs(cg: &Path) -> usize {
        let f = std::fs::File::open(cg).expect("open cgroup");
        sys::bpf_prog_query(f.as_fd(), sys::BPF_CGROUP_DEVICE)
            .expect("query")
            .len()
    }

    #[test]
    fn filter_denies_a_disk_and_allows_dev_null() {
        let Some(cg) = test_cgroup() else { return };
        let nodes = tempfile::tempdir().expect("tempdir");
        let disk = nodes.path().join("sda");
        let zero = nodes.path().join("zero");
        let dev = |major, minor| nix::sys::stat::makedev(major, minor);
        use nix::sys::stat::{Mode, SFlag, mknod};
        mknod(
            &disk,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            dev(8, 0),
        )
        .expect("mknod");
        mknod(
            &zero,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            dev(1, 5),
        )
        .expect("mknod");
        let read_disk = format!("head -c1 {} >/dev/null", disk.display());
        let read_zero = format!("head -c1 {} | wc -c", zero.display());

        set_device_filter(&cg.0, Some(&devices::DEFAULT_RULES)).expect("filter");
        assert_eq!(programs(&cg.0), 1);
        let (code, out) = sh_in(&cg.0, &read_disk);
        assert_ne!(code, Some(0), "{out}");
        assert!(out.contains("Operation not permitted"), "{out}");
        let (code, out) = sh_in(&cg.0, &read_zero);
        assert_eq!((code, out.trim()), (Some(0), "1"), "{out}");
        // Writing to /dev/null is allowed; mknod too (the node exists: EEXIST).
        let (code, out) = sh_in(&cg.0, "echo x > /dev/null");
        assert_eq!(code, Some(0), "{out}");

        // Again: replaced, not stacked.
        set_device_filter(&cg.0, Some(&devices::DEFAULT_RULES)).expect("again");
        assert_eq!(programs(&cg.0), 1);

        // All devices: no program; the disk is no longer refused by us
        // (it may not exist here: ENXIO is fine, EPERM is not).
        set_device_filter(&cg.0, None).expect("all");
        assert_eq!(programs(&cg.0), 0);
        let (_, out) = sh_in(&cg.0, &read_disk);
        assert!(!out.contains("Operation not permitted"), "{out}");
    }
}
