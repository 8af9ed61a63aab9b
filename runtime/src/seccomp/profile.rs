//! Docker's JSON seccomp profile format (the one of moby's
//! `profiles/seccomp/default.json` and `docker run --security-opt
//! seccomp=FILE`), parsed with serde, and resolved for one container.
//!
//! Parsing refuses what Docker's format does not have (unknown fields,
//! actions, comparison operators), what rsup cannot do (SCMP_ACT_NOTIFY and
//! its listener), and what cannot be right (an argument index over 5, an
//! entry without names, a name that is not a system call identifier).
//! Resolution keeps the entries whose `includes` hold and whose `excludes`
//! do not, for the container's capabilities, this machine's architecture
//! and kernel, and turns names into numbers; names this architecture does
//! not know are skipped, as libseccomp and Docker do.

use std::collections::HashSet;

use caps::Capability;
use serde::{Deserialize, Deserializer, Serialize};

use super::table;
use crate::names::quote;

/// What the kernel does with a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionName {
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// libseccomp's name for KILL_THREAD.
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// Parsed to be refused with a clear reason.
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

/// A comparison of one system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    /// `(arg & value) == valueTwo`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

/// A whole profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    pub default_action: ActionName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Old style: `SCMP_ARCH_*` names.
    #[serde(default, deserialize_with = "null_default")]
    pub architectures: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub arch_map: Vec<ArchMap>,
    /// `SECCOMP_FILTER_FLAG_*` names.
    #[serde(default, deserialize_with = "null_default")]
    pub flags: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub listener_path: String,
    #[serde(default, deserialize_with = "null_default")]
    pub listener_metadata: String,
    #[serde(default, deserialize_with = "null_default")]
    pub syscalls: Vec<Syscall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sub_architectures: Vec<String>,
}

/// One entry of `syscalls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Syscall {
    /// Legacy single name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub names: Vec<String>,
    pub action: ActionName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<Arg>,
    #[serde(default, deserialize_with = "null_default")]
    pub comment: String,
    #[serde(default, deserialize_with = "null_default")]
    pub includes: Filter,
    #[serde(default, deserialize_with = "null_default")]
    pub excludes: Filter,
}

/// A condition on the container (`includes`: all must hold; `excludes`:
/// the entry is dropped if any holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, deserialize_with = "null_default")]
    pub caps: Vec<String>,
    /// Go's architecture names: amd64, arm64, riscv64, ...
    #[serde(default, deserialize_with = "null_default")]
    pub arches: Vec<String>,
    /// "MAJOR.MINOR".
    #[serde(default, deserialize_with = "null_default")]
    pub min_kernel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: Op,
}

/// `null` reads as the default, as Go's encoding/json writes empty slices.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The architectures rsup compiles filters for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// This machine's, if supported.
    pub fn native() -> Result<Arch, String> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(format!("seccomp filters are not supported on {other}")),
        }
    }

    /// libseccomp's name, as in `architectures`.
    pub fn scmp_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }

    /// Go's name, as in `includes.arches`.
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The system call number of `name`, if this architecture has it.
    pub fn syscall_nr(self, name: &str) -> Option<i64> {
        let table = match self {
            Arch::X86_64 => table::X86_64,
            Arch::Aarch64 => table::AARCH64,
        };
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }
}

/// libseccomp's architecture names.
const SCMP_ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// The filter flags of seccomp(2). rsup installs its filter without them:
/// TSYNC has no use in a single-threaded process before execve, and LOG,
/// SPEC_ALLOW and WAIT_KILLABLE_RECV only loosen logging, a mitigation or
/// notification, so leaving them out is never less strict.
const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// The highest errno the kernel passes on (MAX_ERRNO).
const MAX_ERRNO: u32 = 4095;

/// An action with its data, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Log,
    Trace(u32),
}

impl Action {
    fn resolve(name: ActionName, errno: Option<u32>, what: &str) -> Result<Action, String> {
        let data = match errno {
            Some(e) if e > MAX_ERRNO => {
                return Err(format!("{what}: errno {e} is over {MAX_ERRNO}"));
            }
            Some(e) => e,
            None => libc::EPERM as u32,
        };
        let no_errno = |action: &str| match errno {
            Some(_) => Err(format!(
                "{what}: an errno value is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}"
            )),
            None => Ok(()),
        };
        Ok(match name {
            ActionName::Errno => Action::Errno(data),
            ActionName::Trace => Action::Trace(data),
            ActionName::Allow => no_errno("SCMP_ACT_ALLOW").map(|_| Action::Allow)?,
            ActionName::Kill | ActionName::KillThread => {
                no_errno("SCMP_ACT_KILL_THREAD").map(|_| Action::KillThread)?
            }
            ActionName::KillProcess => {
                no_errno("SCMP_ACT_KILL_PROCESS").map(|_| Action::KillProcess)?
            }
            ActionName::Trap => no_errno("SCMP_ACT_TRAP").map(|_| Action::Trap)?,
            ActionName::Log => no_errno("SCMP_ACT_LOG").map(|_| Action::Log)?,
            ActionName::Notify => {
                return Err(format!(
                    "{what}: SCMP_ACT_NOTIFY is not supported (rsup has no seccomp agent)"
                ));
            }
        })
    }

    /// The filter's return value (SECCOMP_RET_*).
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | (e & libc::SECCOMP_RET_DATA),
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Trace(d) => libc::SECCOMP_RET_TRACE | (d & libc::SECCOMP_RET_DATA),
        }
    }

    /// The kernel's order of precedence: lower is more restrictive (the
    /// action part of the return value as a signed number, as
    /// `seccomp_run_filters` compares them).
    pub fn precedence(self) -> i32 {
        (self.ret() & libc::SECCOMP_RET_ACTION_FULL) as i32
    }
}

/// One argument condition, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

/// A rule of the resolved profile: the call, its conditions (all must
/// hold; none: always), its action, and its place in the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub nr: i64,
    pub conds: Vec<Cond>,
    pub action: Action,
    pub order: usize,
}

/// A profile resolved for one container on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// The most argument conditions one entry may have (each compiles to at
/// most 6 BPF instructions, and a jump reaches at most 255 ahead).
pub const MAX_CONDS: usize = 32;

/// `[a-z_][a-z0-9_]*`, at most 64 characters: the shape of every name in
/// the kernel's system call tables.
pub fn is_syscall_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 64
}

fn parse_cap_name(s: &str) -> Result<Capability, String> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    name.parse()
        .map_err(|_| format!("{} is not a capability", quote(s)))
}

/// "MAJOR.MINOR[...]" as (major, minor).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's version, from uname.
pub fn running_kernel() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    parse_kernel(uts.release().to_str()?)
}

impl Profile {
    /// Parses and checks a profile in Docker's format.
    pub fn parse(json: &str) -> Result<Profile, String> {
        let profile: Profile =
            serde_json::from_str(json).map_err(|e| format!("not a valid profile: {e}"))?;
        profile.check()?;
        Ok(profile)
    }

    /// Everything that does not depend on the container or the machine.
    pub fn check(&self) -> Result<(), String> {
        Action::resolve(self.default_action, self.default_errno_ret, "defaultAction")?;
        if !self.listener_path.is_empty() || !self.listener_metadata.is_empty() {
            return Err(
                "listenerPath: seccomp user notification is not supported (rsup has no seccomp agent)"
                    .into(),
            );
        }
        for f in &self.flags {
            if !FLAGS.contains(&f.as_str()) {
                return Err(format!(
                    "flags: unknown flag {} (known: {})",
                    quote(f),
                    FLAGS.join(", ")
                ));
            }
        }
        let arches = self.architectures.iter().chain(
            self.arch_map
                .iter()
                .flat_map(|m| std::iter::once(&m.architecture).chain(&m.sub_architectures)),
        );
        for a in arches {
            if !SCMP_ARCHES.contains(&a.as_str()) {
                return Err(format!("architectures: unknown architecture {}", quote(a)));
            }
        }
        for (i, s) in self.syscalls.iter().enumerate() {
            let what = format!("syscalls[{i}]");
            if s.name.is_empty() && s.names.is_empty() {
                return Err(format!("{what}: no system call names"));
            }
            for n in s
                .names
                .iter()
                .chain((!s.name.is_empty()).then_some(&s.name))
            {
                if !is_syscall_name(n) {
                    return Err(format!("{what}: {} is not a system call name", quote(n)));
                }
            }
            Action::resolve(s.action, s.errno_ret, &what)?;
            if s.args.len() > MAX_CONDS {
                return Err(format!(
                    "{what}: {} argument conditions, at most {MAX_CONDS}",
                    s.args.len()
                ));
            }
            for (j, a) in s.args.iter().enumerate() {
                if a.index > 5 {
                    return Err(format!(
                        "{what}.args[{j}]: index {} (a system call has arguments 0 to 5)",
                        a.index
                    ));
                }
            }
            for (filter, part) in [(&s.includes, "includes"), (&s.excludes, "excludes")] {
                for c in &filter.caps {
                    parse_cap_name(c).map_err(|e| format!("{what}.{part}.caps: {e}"))?;
                }
                if !filter.min_kernel.is_empty() && parse_kernel(&filter.min_kernel).is_none() {
                    return Err(format!(
                        "{what}.{part}.minKernel: {} is not MAJOR.MINOR",
                        quote(&filter.min_kernel)
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rules that apply to a container with `caps` on `arch` with a
    /// `kernel` of this version (None: unknown, minKernel entries are kept).
    pub fn resolve(
        &self,
        caps: &HashSet<Capability>,
        arch: Arch,
        kernel: Option<(u32, u32)>,
    ) -> Result<Resolved, String> {
        self.check()?;
        if !self.architectures.is_empty()
            && !self
                .architectures
                .iter()
                .any(|a| a == arch.scmp_name() || a == "SCMP_ARCH_NATIVE")
        {
            return Err(format!(
                "architectures: the profile does not cover this machine's {}",
                arch.scmp_name()
            ));
        }
        let default =
            Action::resolve(self.default_action, self.default_errno_ret, "defaultAction")?;
        let has = |c: &String| parse_cap_name(c).is_ok_and(|c| caps.contains(&c));
        let kernel_at_least = |min: &str| match (kernel, parse_kernel(min)) {
            (Some(k), Some(m)) => k >= m,
            _ => true,
        };
        let mut rules = Vec::new();
        for (order, s) in self.syscalls.iter().enumerate() {
            let inc = &s.includes;
            let exc = &s.excludes;
            let included = inc.caps.iter().all(has)
                && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == arch.go_name()))
                && (inc.min_kernel.is_empty() || kernel_at_least(&inc.min_kernel));
            let excluded = exc.caps.iter().any(has)
                || exc.arches.iter().any(|a| a == arch.go_name())
                || (!exc.min_kernel.is_empty() && kernel_at_least(&exc.min_kernel));
            if !included || excluded {
                continue;
            }
            let action = Action::resolve(s.action, s.errno_ret, "syscalls")?;
            let conds: Vec<Cond> = s
                .args
                .iter()
                .map(|a| Cond {
                    index: a.index as u8,
                    op: a.op,
                    value: a.value,
                    value_two: a.value_two,
                })
                .collect();
            let names = s
                .names
                .iter()
                .chain((!s.name.is_empty()).then_some(&s.name));
            for n in names {
                match arch.syscall_nr(n) {
                    Some(nr) => rules.push(Rule {
                        nr,
                        conds: conds.clone(),
                        action,
                        order,
                    }),
                    None => {
                        tracing::debug!(syscall = %n, "seccomp: not a system call here, skipped")
                    }
                }
            }
        }
        Ok(Resolved { default, rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[Capability]) -> HashSet<Capability> {
        names.iter().copied().collect()
    }

    /// A profile in Docker's format with most of its features.
    const FIXTURE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write", "not_on_this_arch_call"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}},
            {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 28, "args": null},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["getpid"], "action": "SCMP_ACT_LOG", "includes": {"arches": ["amd64", "arm64"], "minKernel": "4.14"}},
            {"names": ["gettid"], "action": "SCMP_ACT_TRAP", "includes": {"minKernel": "99.0"}},
            {"names": ["kill"], "action": "SCMP_ACT_KILL"},
            {"names": ["tkill"], "action": "SCMP_ACT_KILL_PROCESS", "excludes": {"arches": ["s390x"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7}
        ]
    }"#;

    #[test]
    fn docker_format_fixture_resolves() {
        let p = Profile::parse(FIXTURE).expect("parse");
        assert_eq!(p.default_action, ActionName::Errno);
        let arch = Arch::X86_64;
        let r = p.resolve(&caps(&[]), arch, Some((6, 1))).expect("resolve");
        assert_eq!(r.default, Action::Errno(1));
        let of = |name: &str| -> Vec<&Rule> {
            let nr = arch.syscall_nr(name).expect(name);
            r.rules.iter().filter(|r| r.nr == nr).collect()
        };
        assert_eq!(of("read")[0].action, Action::Allow);
        assert_eq!(of("write").len(), 1);
        assert_eq!(of("mkdir")[0].action, Action::Errno(28));
        let pers = of("personality");
        assert_eq!(
            pers[0].conds,
            [Cond {
                index: 0,
                op: Op::Eq,
                value: 8,
                value_two: 0
            }]
        );
        assert!(of("mount").is_empty(), "mount needs CAP_SYS_ADMIN");
        assert_eq!(of("clone3")[0].action, Action::Errno(38));
        assert_eq!(of("getpid")[0].action, Action::Log);
        assert!(of("gettid").is_empty(), "minKernel 99.0");
        assert_eq!(of("kill")[0].action, Action::KillThread);
        assert_eq!(of("tkill")[0].action, Action::KillProcess);
        assert_eq!(of("ptrace")[0].action, Action::Trace(7));
        // read, write, mkdir, personality, clone3, getpid, kill, tkill, ptrace
        assert_eq!(r.rules.len(), 9, "{:?}", r.rules);

        // With CAP_SYS_ADMIN: mount in, the clone3 ENOSYS out.
        let r = p
            .resolve(&caps(&[Capability::CAP_SYS_ADMIN]), arch, Some((6, 1)))
            .expect("resolve");
        let has = |name: &str| {
            let nr = arch.syscall_nr(name).expect(name);
            r.rules.iter().any(|r| r.nr == nr)
        };
        assert!(has("mount") && !has("clone3"));
        // An old kernel drops getpid's entry.
        let r = p.resolve(&caps(&[]), arch, Some((4, 9))).expect("resolve");
        assert!(!r.rules.iter().any(|r| r.action == Action::Log));
    }

    #[test]
    fn defaults_and_legacy_fields() {
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_AARCH64"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"name":"mkdirat","action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("parse");
        let r = p.resolve(&caps(&[]), Arch::Aarch64, None).expect("resolve");
        assert_eq!(r.default, Action::Allow);
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.rules[0].action, Action::Errno(libc::EPERM as u32));
        assert_eq!(Some(r.rules[0].nr), Arch::Aarch64.syscall_nr("mkdirat"));
        // A profile only for another architecture is refused here.
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_S390X"]}"#,
        )
        .expect("parse");
        let e = p
            .resolve(&caps(&[]), Arch::X86_64, None)
            .expect_err("another architecture");
        assert!(e.contains("SCMP_ARCH_X86_64"), "{e}");
    }

    #[test]
    fn malformed_profiles_say_why() {
        let cases: &[(&str, &str)] = &[
            ("{", "not a valid profile"),
            ("[]", "not a valid profile"),
            (r#"{"syscalls":[]}"#, "missing field `defaultAction`"),
            (r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "SCMP_ACT_MAYBE"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultActon":"x"}"#,
                "defaultActon",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}"#,
                "SCMP_CMP_ABOUT",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0]: index 6",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0]: no system call names",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["mk dir"],"action":"SCMP_ACT_ERRNO"}]}"#,
                "syscalls[1]: \"mk dir\" is not a system call name",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "SCMP_ACT_NOTIFY is not supported",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock"}"#,
                "listenerPath",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
                "only valid with SCMP_ACT_ERRNO",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#,
                "errno 70000",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_FLY"]}}]}"#,
                "syscalls[0].includes.caps",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"new"}}]}"#,
                "syscalls[0].excludes.minKernel",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_FAST"]}"#,
                "unknown flag",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#,
                "unknown architecture",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","colour":"red"}]}"#,
                "colour",
            ),
        ];
        for (json, want) in cases {
            let e = Profile::parse(json).expect_err(json);
            assert!(e.contains(want), "{json}: {e:?} does not say {want:?}");
        }
    }

    #[test]
    fn syscall_names_and_tables() {
        assert!(is_syscall_name("mkdirat") && is_syscall_name("_llseek"));
        assert!(!is_syscall_name("") && !is_syscall_name("Mkdir") && !is_syscall_name("9p"));
        assert_eq!(Arch::X86_64.syscall_nr("read"), Some(0));
        assert_eq!(Arch::X86_64.syscall_nr("mkdir"), Some(83));
        assert_eq!(Arch::Aarch64.syscall_nr("mkdir"), None);
        assert_eq!(Arch::Aarch64.syscall_nr("mkdirat"), Some(34));
        for t in [table::X86_64, table::AARCH64] {
            assert!(
                t.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, no duplicates"
            );
        }
        assert_eq!(parse_kernel("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel("3.12"), Some((3, 12)));
        assert_eq!(parse_kernel("3"), None);
    }

    #[test]
    fn native_table_matches_libc() {
        let arch = Arch::native().expect("supported arch");
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("execve", libc::SYS_execve),
            ("clone3", libc::SYS_clone3),
            ("mkdirat", libc::SYS_mkdirat),
            ("keyctl", libc::SYS_keyctl),
            ("personality", libc::SYS_personality),
        ] {
            assert_eq!(arch.syscall_nr(name), Some(nr), "{name}");
        }
    }
}
