//! Least privilege inside containers: capabilities, no_new_privs, and
//! masked and read-only paths, as Docker sets them by default.
//!
//! The init applies the paths after `pivot_root`; the command's process
//! applies the capability sets and no_new_privs right before `execve`:
//! the bounding set is cut to the container's capabilities (needs
//! CAP_SETPCAP, which it still holds), then after the uid change the
//! permitted, effective and inheritable sets are set (root) or left empty
//! (any other uid), and the ambient set is cleared. The seccomp filter
//! (see [`crate::seccomp`]) comes last, after no_new_privs; under the
//! default profile the command inherits it from the init instead
//! ([`SecuritySpec::command_inherits_init_filter`]). The container's init,
//! which never execs, confines itself the same way once it has forked the
//! command ([`SecuritySpec::confine_init`]).

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use serde::{Deserialize, Serialize};

use crate::seccomp::{Filter, Seccomp};

/// Docker's default capabilities.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Files hidden behind /dev/null (Docker's masked paths).
pub const MASKED_FILES: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/timer_stats",
];
/// Directories hidden behind an empty read-only tmpfs.
pub const MASKED_DIRS: [&str; 4] = ["/proc/scsi", "/proc/acpi", "/proc/asound", "/sys/firmware"];
/// Remounted read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The validated security settings of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    /// Capability names (`CAP_…`) in the bounding, permitted and effective sets.
    pub caps: Vec<String>,
    /// All capabilities, no masked paths, no no_new_privs.
    pub privileged: bool,
    pub no_new_privs: bool,
    /// The seccomp filter (none with `seccomp=unconfined` or
    /// `--privileged`). Configs written before custom profiles hold a bool
    /// here: true is the default profile, false unconfined.
    #[serde(default = "default_seccomp", deserialize_with = "seccomp_compat")]
    pub seccomp: Seccomp,
}

fn default_seccomp() -> Seccomp {
    Seccomp::Default
}

fn seccomp_compat<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Seccomp, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Old(bool),
        New(Seccomp),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::Old(true) => Seccomp::Default,
        Stored::Old(false) => Seccomp::Unconfined,
        Stored::New(s) => s,
    })
}

impl Default for SecuritySpec {
    fn default() -> Self {
        SecuritySpec {
            caps: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            privileged: false,
            no_new_privs: true,
            seccomp: Seccomp::Default,
        }
    }
}

impl SecuritySpec {
    /// The container's capabilities that the calling process can still
    /// grant (a privileged container gets all of rsupd's, not more).
    fn cap_set(&self) -> CapsHashSet {
        let wanted = self
            .caps
            .iter()
            .filter_map(|c| Capability::from_str(c).ok());
        match caps::read(None, CapSet::Bounding) {
            Ok(bounding) => wanted.filter(|c| bounding.contains(c)).collect(),
            Err(_) => wanted.collect(),
        }
    }

    /// Cuts the bounding set (before the uid change; needs CAP_SETPCAP).
    pub fn drop_bounding(&self) -> Result<(), String> {
        let keep = self.cap_set();
        for c in caps::all() {
            if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c)
                    .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
            }
        }
        Ok(())
    }

    /// Sets the other sets for `uid` and no_new_privs (after the uid change,
    /// right before execve).
    pub fn apply_after_setuid(&self, uid: u32) -> Result<(), String> {
        caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing the ambient set: {e}"))?;
        let set = if uid == 0 {
            self.cap_set()
        } else {
            CapsHashSet::new()
        };
        caps::set(None, CapSet::Inheritable, &set).map_err(|e| format!("inheritable set: {e}"))?;
        caps::set(None, CapSet::Effective, &set).map_err(|e| format!("effective set: {e}"))?;
        caps::set(None, CapSet::Permitted, &set).map_err(|e| format!("permitted set: {e}"))?;
        if self.no_new_privs {
            crate::sys::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
        }
        Ok(())
    }

    /// The init's seccomp program, compiled ahead (the init compiles it
    /// while rsupd places it into the container's cgroups): Docker's default
    /// profile for the container's capabilities unless the container is
    /// unconfined. A custom profile is written for the container's command,
    /// not for rsup's init: one that denied `wait4` or `write` would
    /// silently stop the exit from being recorded, so the init gets the
    /// default profile instead.
    pub fn init_filter(&self) -> Result<Option<Filter>, String> {
        match self.seccomp {
            Seccomp::Unconfined => Ok(None),
            Seccomp::Default | Seccomp::Custom(_) => Seccomp::Default.filter(&self.caps),
        }
    }

    /// Whether the command's filter is the init's: then the init installs
    /// it before it forks the command, which inherits it (one program
    /// compiled and loaded per start, not two). Only for the default
    /// profile, whose rules allow every call of the command's own setup
    /// (stdio, setgroups/setgid/setuid, chdir, capset, prctl); a custom
    /// profile is applied by the command itself, last before execve, so
    /// that it never stacks on the default one.
    pub fn command_inherits_init_filter(&self) -> bool {
        self.seccomp == Seccomp::Default
    }

    /// Confines the container's init once it has forked the command (it is
    /// PID 1 of the container and never execs, so a container process with
    /// `CAP_SYS_PTRACE` can ptrace it and run code as it): the bounding set
    /// is cut to the container's, the ambient and inheritable sets are
    /// cleared, the permitted and effective sets keep only `CAP_KILL` (to
    /// forward signals to a command that runs as another uid; `kill` from
    /// the init reaches only the container's PID namespace), no_new_privs is
    /// set, and the process stays non-dumpable. Then `filter` is installed,
    /// [`SecuritySpec::init_filter`]'s program unless it is already in place
    /// (see [`SecuritySpec::command_inherits_init_filter`]).
    pub fn confine_init(&self, filter: Option<&Filter>) -> Result<(), String> {
        self.drop_bounding()?;
        caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing the ambient set: {e}"))?;
        caps::clear(None, CapSet::Inheritable)
            .map_err(|e| format!("clearing the inheritable set: {e}"))?;
        let kill: CapsHashSet = [Capability::CAP_KILL].into_iter().collect();
        caps::set(None, CapSet::Effective, &kill).map_err(|e| format!("effective set: {e}"))?;
        caps::set(None, CapSet::Permitted, &kill).map_err(|e| format!("permitted set: {e}"))?;
        crate::sys::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
        crate::sys::set_non_dumpable().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
        filter.map_or(Ok(()), Filter::install)
    }

    /// Installs the container's seccomp filter, if any (last step before
    /// execve, after no_new_privs).
    pub fn apply_seccomp(&self) -> Result<(), String> {
        self.seccomp.apply(&self.caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_setting_in_old_and_new_configs() {
        let load = |json: &str| -> SecuritySpec { serde_json::from_str(json).expect(json) };
        let old = r#"{"caps":[],"privileged":false,"no_new_privs":true"#;
        assert_eq!(load(&format!("{old}}}")).seccomp, Seccomp::Default);
        assert_eq!(
            load(&format!("{old},\"seccomp\":true}}")).seccomp,
            Seccomp::Default
        );
        assert_eq!(
            load(&format!("{old},\"seccomp\":false}}")).seccomp,
            Seccomp::Unconfined
        );
        for s in [
            Seccomp::Default,
            Seccomp::Unconfined,
            Seccomp::Custom(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.into()),
        ] {
            let spec = SecuritySpec {
                seccomp: s.clone(),
                ..SecuritySpec::default()
            };
            let text = serde_json::to_string(&spec).expect("serialize");
            assert_eq!(load(&text).seccomp, s, "{text}");
        }
    }
}
