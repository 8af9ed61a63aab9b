//! cgroup v1: one directory per controller hierarchy (memory, cpu, cpuacct,
//! pids). Controllers that share a hierarchy (`cpu,cpuacct`) share a
//! directory; each directory is created, filled and removed once. The
//! devices hierarchy, when mounted, holds the allow-list of
//! [`super::devices::DEFAULT_RULES`] (`devices.deny` `a`, then one
//! `devices.allow` line per rule).

use std::path::{Path, PathBuf};

use super::extra::Extra;
use super::{
    CgroupError, Driver, Limits, Manager, Stats, read, read_keyed, read_pids, read_u64, remove_dir,
    write,
};

/// Values at or above this are the kernel's "no limit" (v1 reports
/// PAGE_COUNTER_MAX pages in bytes).
const UNLIMITED: u64 = 1 << 62;

/// The v1 driver: base directory (`<own>/rsup`) per controller.
#[derive(Debug)]
pub struct V1 {
    dirs: Vec<(&'static str, PathBuf)>,
    /// Every other mounted hierarchy, placed in too; `None` in tests.
    extra: Option<Extra>,
}

impl V1 {
    pub fn new(dirs: Vec<(&'static str, PathBuf)>) -> V1 {
        V1 { dirs, extra: None }
    }

    /// Also places containers in the hierarchies of `extra`.
    pub fn with_extra(mut self, extra: Extra) -> V1 {
        self.extra = Some(extra);
        self
    }

    pub fn extra(&self) -> Option<&Extra> {
        self.extra.as_ref()
    }

    /// Base directory of a controller.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| p.as_path())
    }

    fn path(&self, controller: &str, name: &str, file: &str) -> PathBuf {
        let mut p = self
            .dir(controller)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        p.push(name);
        p.push(file);
        p
    }

    /// Every distinct container directory.
    fn unique_dirs(&self, name: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, d) in &self.dirs {
            let p = d.join(name);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

impl Manager for V1 {
    fn driver(&self) -> Driver {
        Driver::V1
    }

    fn create(&self, name: &str) -> Result<(), CgroupError> {
        for d in self.unique_dirs(name) {
            std::fs::create_dir_all(&d).map_err(super::io("mkdir", &d))?;
        }
        self.extra.as_ref().map_or(Ok(()), |x| x.create(name))
    }

    fn restrict_devices(&self, name: &str, all: bool) -> Result<(), CgroupError> {
        if self.dir("devices").is_none() {
            return Ok(());
        }
        let deny = self.path("devices", name, "devices.deny");
        let allow = self.path("devices", name, "devices.allow");
        if all {
            return write(&allow, "a");
        }
        write(&deny, "a")?;
        for rule in super::devices::DEFAULT_RULES {
            write(&allow, &rule.to_string())?;
        }
        Ok(())
    }

    fn apply(&self, name: &str, l: &Limits) -> Result<(), CgroupError> {
        let mem = self.path("memory", name, "memory.limit_in_bytes");
        let memsw = self.path("memory", name, "memory.memsw.limit_in_bytes");
        // memory <= memory+swap must hold after every single write: try
        // memory first, and if the kernel refuses (new memory above the old
        // memsw), write memsw first.
        let swap = l.effective_swap();
        let first = write(&mem, &limit(l.memory));
        if memsw.exists() {
            write(&memsw, &limit(swap))?;
        }
        if first.is_err() {
            write(&mem, &limit(l.memory))?;
        }
        write(
            &self.path("cpu", name, "cpu.cfs_period_us"),
            &super::CFS_PERIOD_US.to_string(),
        )?;
        write(
            &self.path("cpu", name, "cpu.cfs_quota_us"),
            &limit(l.cfs_quota_us()),
        )?;
        write(
            &self.path("cpu", name, "cpu.shares"),
            &l.cpu_shares.unwrap_or(1024).to_string(),
        )?;
        write(
            &self.path("pids", name, "pids.max"),
            &l.pids.map_or_else(|| "max".to_string(), |p| p.to_string()),
        )?;
        Ok(())
    }

    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        for d in self.unique_dirs(name) {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        self.extra
            .as_ref()
            .map_or(Ok(()), |x| x.add_process(name, pid))
    }

    fn stats(&self, name: &str) -> Result<Stats, CgroupError> {
        let usage = read_u64(&self.path("memory", name, "memory.usage_in_bytes"))?;
        let stat = self.path("memory", name, "memory.stat");
        let inactive = read_keyed(&stat, "total_inactive_file")?;
        let mem_limit = read_u64(&self.path("memory", name, "memory.limit_in_bytes"))?;
        let cpu_stat = self.path("cpu", name, "cpu.stat");
        let pids_max = read(&self.path("pids", name, "pids.max"))?;
        Ok(Stats {
            memory_usage: usage,
            memory_working_set: usage.saturating_sub(inactive),
            memory_limit: (mem_limit < UNLIMITED).then_some(mem_limit),
            cpu_usage_ns: read_u64(&self.path("cpuacct", name, "cpuacct.usage"))?,
            cpu_periods: read_keyed(&cpu_stat, "nr_periods")?,
            cpu_throttled_periods: read_keyed(&cpu_stat, "nr_throttled")?,
            cpu_throttled_ns: read_keyed(&cpu_stat, "throttled_time")?,
            pids: read_u64(&self.path("pids", name, "pids.current"))?,
            pids_limit: pids_max.trim().parse().ok(),
            oom_kills: read_keyed(&self.path("memory", name, "memory.oom_control"), "oom_kill")?,
        })
    }

    fn processes(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        read_pids(&self.path("memory", name, "cgroup.procs"))
    }

    fn list(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (_, d) in &self.dirs {
            for n in super::subdirs(d) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        for n in self.extra.iter().flat_map(|x| x.list()) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .unique_dirs(name)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect();
        files.extend(self.extra.iter().flat_map(|x| x.procs_files(name)));
        files
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let mut first_err = None;
        for d in self.unique_dirs(name) {
            if let Err(e) = remove_dir(&d) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(Err(e)) = self.extra.as_ref().map(|x| x.remove(name)) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v1 tree: plain files where the kernel has control files.
    fn fake() -> (tempfile::TempDir, V1) {
        let t = tempfile::tempdir().expect("tempdir");
        let dirs = ["memory", "cpu", "cpuacct", "pids"]
            .into_iter()
            .map(|c| (c, t.path().join(c).join("own/rsup")))
            .collect();
        (t, V1::new(dirs))
    }

    fn put(v: &V1, ctrl: &str, name: &str, file: &str, value: &str) {
        std::fs::write(v.path(ctrl, name, file), value).expect("write");
    }

    #[test]
    fn apply_writes_docker_semantics() {
        let (_t, v) = fake();
        v.create("c1").expect("create");
        put(&v, "memory", "c1", "memory.memsw.limit_in_bytes", "");
        let l = Limits {
            memory: Some(32 << 20),
            cpus: Some(0.5),
            pids: Some(64),
            ..Default::default()
        };
        v.apply("c1", &l).expect("apply");
        let r = |c: &str, f: &str| std::fs::read_to_string(v.path(c, "c1", f)).expect("read");
        assert_eq!(
            r("memory", "memory.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(
            r("memory", "memory.memsw.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(r("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(r("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(r("cpu", "cpu.shares"), "1024");
        assert_eq!(r("pids", "pids.max"), "64");
        v.apply("c1", &Limits::default()).expect("reset");
        assert_eq!(r("memory", "memory.limit_in_bytes"), "-1");
        assert_eq!(r("cpu", "cpu.cfs_quota_us"), "-1");
        assert_eq!(r("pids", "pids.max"), "max");
    }

    #[test]
    fn stats_read_kernel_counters() {
        let (_t, v) = fake();
        v.create("c1").expect("create");
        put(&v, "memory", "c1", "memory.usage_in_bytes", "1000\n");
        put(
            &v,
            "memory",
            "c1",
            "memory.stat",
            "cache 5\ntotal_inactive_file 300\n",
        );
        put(
            &v,
            "memory",
            "c1",
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        put(
            &v,
            "memory",
            "c1",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        put(&v, "cpuacct", "c1", "cpuacct.usage", "123456789\n");
        put(
            &v,
            "cpu",
            "c1",
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 777\n",
        );
        put(&v, "pids", "c1", "pids.current", "3\n");
        put(&v, "pids", "c1", "pids.max", "max\n");
        let s = v.stats("c1").expect("stats");
        assert_eq!(s.memory_usage, 1000);
        assert_eq!(s.memory_working_set, 700);
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.oom_kills, 2);
        assert_eq!(
            (
                s.cpu_usage_ns,
                s.cpu_periods,
                s.cpu_throttled_periods,
                s.cpu_throttled_ns
            ),
            (123456789, 10, 4, 777)
        );
        assert_eq!((s.pids, s.pids_limit), (3, None));
    }

    #[test]
    fn extra_hierarchies_are_created_joined_listed_and_removed() {
        let (t, v) = fake();
        // A named hierarchy mounted beside the controllers.
        let named = t.path().join("named");
        std::fs::create_dir_all(named.join("own")).expect("mkdir");
        let mi = t.path().join("mountinfo");
        let pc = t.path().join("cgroup");
        let line = format!(
            "90 22 0:50 / {} rw - cgroup cgroup rw,name=rvx\n",
            named.display()
        );
        std::fs::write(&mi, line).expect("w");
        std::fs::write(&pc, "5:name=rvx:/own\n4:memory:/own\n").expect("w");
        let used = ["memory", "cpu", "cpuacct", "pids"]
            .map(String::from)
            .to_vec();
        let extra =
            Extra::new("rsup", super::super::extra::Skip::Controllers(used)).with_sources(&mi, &pc);
        let v = v.with_extra(extra);
        v.create("c1").expect("create");
        let leaf = named.join("own/rsup/c1");
        assert!(leaf.is_dir());
        v.add_process("c1", 7).expect("join");
        assert_eq!(
            std::fs::read_to_string(leaf.join("cgroup.procs")).expect("r"),
            "7"
        );
        assert!(v.procs_files("c1").contains(&leaf.join("cgroup.procs")));
        // Only there (a daemon that crashed before its other cgroups).
        std::fs::create_dir_all(named.join("own/rsup/orphan")).expect("mkdir");
        assert!(v.list().contains(&"orphan".to_string()), "{:?}", v.list());
        v.remove("orphan").expect("remove");
        assert!(!named.join("own/rsup/orphan").exists());
        for d in v.unique_dirs("c1") {
            let _ = std::fs::remove_file(d.join("cgroup.procs"));
        }
        std::fs::remove_file(leaf.join("cgroup.procs")).expect("rm");
        v.remove("c1").expect("remove");
        assert!(!leaf.exists());
    }

    #[test]
    fn remove_is_idempotent() {
        let (_t, v) = fake();
        v.create("c1").expect("create");
        // A real cgroup dir is empty to rmdir; a fake one must be too.
        v.remove("c1").expect("remove");
        v.remove("c1").expect("again");
        assert!(!v.path("memory", "c1", "").exists());
    }

    #[test]
    fn remove_takes_the_cgroups_a_container_made_below_its_own() {
        let (_t, v) = fake();
        v.create("c1").expect("create");
        let nested = v.path("memory", "c1", "x/y/z");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::create_dir_all(v.path("pids", "c1", "w")).expect("mkdir");
        v.remove("c1").expect("remove");
        assert!(!v.path("memory", "c1", "").exists());
        assert!(!v.path("pids", "c1", "").exists());
    }
}
