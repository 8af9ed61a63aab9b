//! What the tests and the benchmarks read from `/proc`: processes (their
//! `stat`, command line, memory, children) and this process' mount table.
//!
//! A pid alone names a process only for as long as that process lives: a
//! [`ProcId`] adds the start time, so that a reused pid is never mistaken for
//! the process that was meant (teardown signals nothing it has not matched
//! this way). Every reader returns `None` or nothing for a process that is
//! gone or unreadable; none panics.

use std::fs;
use std::path::{Path, PathBuf};

/// A process identified by pid and start time, so that a reused pid is not
/// mistaken for the original process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcId {
    /// The process now running as `pid`, if any.
    pub fn of(pid: i32) -> Option<ProcId> {
        let stat = proc_stat(pid)?;
        Some(ProcId {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this very process still has an entry in `/proc`, zombies
    /// included.
    pub fn exists(&self) -> bool {
        proc_stat(self.pid).is_some_and(|s| s.start_time == self.start_time)
    }
}

/// The fields of `/proc/<pid>/stat` the tests and the benchmarks use.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    /// CPU time in user and in kernel mode, in clock ticks (USER_HZ, which
    /// Linux fixes at 100 a second).
    pub utime: u64,
    pub stime: u64,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5).
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Command line of `pid` with NULs turned into spaces (empty for zombies and
/// kernel threads).
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim_end()
            .to_owned(),
    )
}

/// Pids of every process in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Processes other than this one whose command line mentions `needle`.
pub fn pids_mentioning(needle: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| cmdline(pid).is_some_and(|c| mentions_path(&c, needle)))
        .collect()
}

/// Processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.ppid == parent))
        .collect()
}

/// A field of `/proc/<pid>/status` in kB (e.g. "VmRSS").
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&text, field)
}

/// `Pss` of `/proc/<pid>/smaps_rollup` in kB.
pub fn pss_kb(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kb_field(&text, "Pss")
}

fn kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Mount points of this process' mount namespace (`/proc/self/mountinfo`
/// field 5, octal escapes decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .collect()
}

fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| s.get(i + 1..i + 4))
            .flatten()
            .and_then(|octal| u8::from_str_radix(octal, 8).ok());
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `text` mentions `path` itself or a path under it: an occurrence
/// not followed by a character that could continue a file name, so that
/// `/tmp/rsup-test-1-1` is not found in `/tmp/rsup-test-1-10`.
pub fn mentions_path(text: &str, path: &Path) -> bool {
    let needle = path.to_string_lossy();
    let needle = needle.trim_end_matches('/');
    if needle.is_empty() {
        return false;
    }
    text.match_indices(needle).any(|(at, _)| {
        text[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
    })
}

/// Lines of `/proc/self/mountinfo` that mention `needle`.
pub fn mounts_mentioning(needle: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| mentions_path(l, needle))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }

    #[test]
    fn mentions_whole_path_components_only() {
        let dir = Path::new("/tmp/rsup-test-1-1");
        assert!(mentions_path(
            "rsupd --state-dir /tmp/rsup-test-1-1/state",
            dir
        ));
        assert!(mentions_path("x --dir=/tmp/rsup-test-1-1", dir));
        assert!(mentions_path("lowerdir=/tmp/rsup-test-1-1,upperdir=", dir));
        assert!(!mentions_path(
            "rsupd --state-dir /tmp/rsup-test-1-10/state",
            dir
        ));
        assert!(!mentions_path("/tmp/rsup-test-1-1.old", dir));
    }

    #[test]
    fn proc_stat_of_self() {
        let me = std::process::id() as i32;
        let stat = proc_stat(me).expect("own stat");
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
        assert!(ProcId::of(me).expect("own id").exists());
    }

    #[test]
    fn kb_fields() {
        let t = "Name:\tx\nVmRSS:\t    4996 kB\nRss:  1 kB\n";
        assert_eq!(kb_field(t, "VmRSS"), Some(4996));
        assert_eq!(kb_field("Pss:                 597 kB\n", "Pss"), Some(597));
        assert_eq!(kb_field(t, "Pss"), None);
    }
}
