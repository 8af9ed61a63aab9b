//! Seccomp: a BPF program the kernel runs on every system call of the
//! container's processes, which allows it, fails it with an errno, or
//! kills the caller.
//!
//! A container runs under one of three settings ([`Seccomp`]): rsup's
//! default profile (an allow-list, see [`default`]), none (`unconfined`,
//! implied by `--privileged`), or a custom profile in Docker's JSON format
//! ([`profile`]). A profile is resolved against the container's capability
//! set, this machine's architecture and kernel, then compiled to a single
//! program ([`bpf`]; the semantics of several rules on one call are
//! documented there). A custom profile is checked and compiled when the
//! container is created, so a bad one is refused before anything runs, and
//! its text is kept in the container's spec so every start (and every
//! exec) compiles the same filter.
//!
//! Order in the command's process (shim and exec): capabilities, then
//! no_new_privs, then the filter, as the last step before `execve` (so the
//! filter sees only the container's own calls; `execve` itself must pass
//! it). One exception: under the default profile the container's init
//! installs the filter before it forks the command, which inherits it, so
//! one program is compiled (while rsupd places the init into its cgroups)
//! and loaded per start instead of two; the command's own setup calls
//! (setgroups, setuid, capset, prctl, chdir) are all allowed by it.

pub mod bpf;
pub mod default;
pub mod profile;
mod table;

use std::collections::HashSet;
use std::str::FromStr;

use caps::Capability;
use serde::{Deserialize, Serialize};

pub use profile::{Arch, Profile};

/// Which filter a container runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    Default,
    Unconfined,
    /// A profile in Docker's format, as the user gave it (checked).
    Custom(String),
}

impl Seccomp {
    /// "default", "unconfined" or "custom", as `inspect` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Seccomp::Default => "default",
            Seccomp::Unconfined => "unconfined",
            Seccomp::Custom(_) => "custom",
        }
    }

    /// The program for a container with capabilities `caps` (names),
    /// or None when unconfined.
    pub fn program(
        &self,
        caps: &[String],
    ) -> Result<Option<Vec<seccompiler::sock_filter>>, String> {
        let profile = match self {
            Seccomp::Unconfined => return Ok(None),
            Seccomp::Default => default::profile(),
            Seccomp::Custom(json) => Profile::parse(json)?,
        };
        let caps: HashSet<Capability> = caps
            .iter()
            .filter_map(|c| Capability::from_str(c).ok())
            .collect();
        let arch = Arch::native()?;
        let resolved = profile.resolve(&caps, arch, profile::running_kernel())?;
        bpf::compile(&resolved, bpf::audit_arch(arch)).map(Some)
    }

    /// [`Seccomp::program`], ready to install.
    pub fn filter(&self, caps: &[String]) -> Result<Option<Filter>, String> {
        Ok(self.program(caps)?.map(Filter))
    }

    /// Installs the filter in the calling thread (the command's process,
    /// right before execve). Needs no_new_privs or CAP_SYS_ADMIN.
    pub fn apply(&self, caps: &[String]) -> Result<(), String> {
        self.filter(caps)?.map_or(Ok(()), |f| f.install())
    }
}

/// A compiled seccomp program, ready to install.
#[derive(Debug, Clone)]
pub struct Filter(Vec<seccompiler::sock_filter>);

impl Filter {
    /// Installs the program in the calling thread (needs no_new_privs or
    /// `CAP_SYS_ADMIN`); it is inherited by every child forked after.
    pub fn install(&self) -> Result<(), String> {
        seccompiler::apply_filter(&self.0).map_err(|e| format!("seccomp: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_compile() {
        let caps: Vec<String> = crate::security::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(Seccomp::Unconfined.program(&caps), Ok(None));
        let default = Seccomp::Default.program(&caps).expect("default");
        let len = default.map(|p| p.len()).unwrap_or(0);
        assert!(len > 100, "{len} instructions");
        let custom = Seccomp::Custom(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#
                .into(),
        );
        let prog = custom.program(&caps).expect("custom").expect("a program");
        let nr = Arch::native()
            .ok()
            .and_then(|a| a.syscall_nr("mkdirat"))
            .expect("mkdirat") as u32;
        let arch = bpf::audit_arch(Arch::native().expect("arch"));
        assert_eq!(
            bpf::run(&prog, arch, nr, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(bpf::run(&prog, arch, 0, [0; 6]), libc::SECCOMP_RET_ALLOW);
        assert!(Seccomp::Custom("{}".into()).program(&caps).is_err());
        assert_eq!(custom.kind(), "custom");
    }
}
