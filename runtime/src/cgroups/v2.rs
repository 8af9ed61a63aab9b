//! cgroup v2: one unified tree. rsupd enables the memory, cpu and pids
//! controllers for `<own>/rsup` once: the "no internal processes" rule means
//! a cgroup that delegates controllers must hold no process itself, so when
//! rsupd's own cgroup is not the root and has processes, they are moved to a
//! leaf `<own>/rsupd` first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{
    CgroupError, Driver, Limits, Manager, Stats, read, read_keyed, read_pids, read_u64, remove_dir,
    write,
};

/// The v2 driver.
#[derive(Debug)]
pub struct V2 {
    own: PathBuf,
    base: PathBuf,
    /// Whether controllers were enabled; done at the first create.
    prepared: Mutex<bool>,
}

const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl V2 {
    pub fn new(own: PathBuf, subtree: &str) -> V2 {
        V2 {
            base: own.join(subtree),
            own,
            prepared: Mutex::new(false),
        }
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
        std::fs::create_dir_all(&d).map_err(super::io("mkdir", &d))
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

    /// v2 has no devices files (it takes an eBPF program): not enforced yet.
    fn restrict_devices(&self, _name: &str, _all: bool) -> Result<(), CgroupError> {
        Ok(())
    }

    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        write(&self.path(name, "cgroup.procs"), &pid.to_string())
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
        super::subdirs(&self.base)
    }

    fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        vec![self.path(name, "cgroup.procs")]
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let d = self.base.join(name);
        if d.join("cgroup.kill").exists() {
            let _ = write(&d.join("cgroup.kill"), "1");
        }
        remove_dir(&d)
    }
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
