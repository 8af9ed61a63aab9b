//! `rsupd __rsup-exec JSON`: runs a command inside a running container (for
//! `rsupctl exec` and health checks).
//!
//! Like the shim, this is a fresh single-threaded process, so it may setns
//! and fork safely. It makes itself non-dumpable (no container process may
//! open its `/proc/<pid>/exe`, rsup-shim or rsupd), joins the
//! container's cgroup, then its IPC, UTS, NET, PID, MNT and cgroup
//! namespaces (opening every namespace fd first, while `/proc/<init>` is
//! still the host's, with the init pinned by a pidfd and its recorded start
//! time against pid reuse), then its user namespace if it has one (last:
//! the others belong to the host's user namespace). Then, still outside the
//! container's PID namespace, it takes on the command's user, capabilities,
//! no_new_privs, working directory and seccomp filter and finds the command
//! in the container's PATH; only then does it fork (a PID namespace applies
//! to children only), and the child just execs.
//!
//! Invariant: no process of ours ever appears in the container's PID
//! namespace with more than the container's privileges (a container process
//! with `CAP_SYS_PTRACE` may attach to anything there, dumpable or not).
//! The parent, not visible from the container, waits and exits with the
//! command's status (128+signal when killed; 127 when the command is not
//! found, 126 when it cannot be run). It runs under the container's seccomp
//! filter from before the fork: a custom profile that denies `clone`,
//! `wait4` or `write` breaks `exec` for that container (Docker's default
//! allows them). The child sets its parent-death signal after the uid
//! change (a change of credentials clears it).

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::sys;

/// argv\[1\] of the exec helper.
pub const EXEC_ARG: &str = "__rsup-exec";

/// What to run, passed as JSON in argv\[2\].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    pub init_pid: i32,
    /// The init's start time (`/proc/<pid>/stat` field 22) recorded when
    /// the container started, to tell it from a process that got its pid
    /// later; 0: unknown.
    #[serde(default)]
    pub init_start_time: u64,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<std::path::PathBuf>,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// A user to resolve inside the container instead of `uid`/`gid` (a
    /// container whose user is resolved at start, see
    /// [`crate::spec::ContainerSpec::user_at_start`]).
    #[serde(default)]
    pub user_spec: Option<String>,
    /// The container's capabilities and no_new_privs.
    #[serde(default)]
    pub security: crate::security::SecuritySpec,
}

/// Entry point; returns the exit code.
pub fn main(json: &str) -> i32 {
    match run(json) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rsup exec: {e}");
            126
        }
    }
}

fn run(json: &str) -> Result<i32, String> {
    // First thing: this process is one of rsup's binaries and is about to enter the
    // container's namespaces, so no container process may open its
    // /proc/<pid>/exe or ptrace it (the command's execve resets the flag).
    sys::set_non_dumpable().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    let _ = sys::set_name("rsup-exec");
    super::enter_helper()?;
    // rsupd's own umask (0077) is not the command's: it gets runc's 0022.
    sys::set_umask(0o022);
    if sys::thread_count() != 1 {
        return Err("the exec helper must be single-threaded".into());
    }
    let spec: ExecSpec = serde_json::from_str(json).map_err(|e| format!("bad spec: {e}"))?;
    if spec.argv.is_empty() {
        return Err("no command".into());
    }
    for p in &spec.cgroup_procs {
        std::fs::write(p, std::process::id().to_string())
            .map_err(|e| format!("joining {}: {e}", p.display()))?;
    }
    let (fds, user) = open_namespaces(&spec)?;
    let own = std::fs::metadata("/proc/self/ns/user").map_err(|e| format!("own user ns: {e}"))?;
    let theirs = user.metadata().map_err(|e| format!("user ns: {e}"))?;
    let join_user = (own.dev(), own.ino()) != (theirs.dev(), theirs.ino());
    for (name, flag, f) in &fds {
        setns(f, *flag).map_err(|e| format!("setns {name}: {e}"))?;
    }
    // A container with a user namespace: join it last. Its other namespaces
    // belong to the host's user namespace (the init unshares the user
    // namespace after them), so joining them needs host root's
    // capabilities, which setns(CLONE_NEWUSER) gives up.
    if join_user {
        setns(&user, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns user: {e}"))?;
    }
    drop((fds, user));
    // Everything up to the exec itself happens here, before the fork: the
    // child is the first of our processes inside the container's PID
    // namespace, and it is born with the container's user, capabilities,
    // no_new_privs and seccomp filter. A container process with
    // CAP_SYS_PTRACE that attaches to it gains nothing (non-dumpable does
    // not stop such a tracer).
    let (path, argv, env) = match confine(&spec) {
        Ok(prepared) => prepared,
        Err(Prepare::NotFound(e)) => {
            eprintln!("rsup exec: {e}");
            return Ok(127);
        }
        Err(Prepare::Failed(e)) => return Err(e),
    };
    // SAFETY: this helper is single-threaded (checked above).
    match unsafe { sys::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // A health check that times out kills the helper; take the
            // command along.
            let _ = sys::set_parent_death_signal(libc::SIGKILL);
            let Err(e) = nix::unistd::execve(&path, &argv, &env);
            eprintln!("rsup exec: exec {}: {}", path.to_string_lossy(), e.desc());
            sys::exit_now(if e == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            });
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waitpid: {e}")),
            }
        },
    }
}

/// The container's namespaces to join (IPC, UTS, NET, PID, MNT and cgroup
/// if the kernel has it), in that order, and its user namespace. The init
/// is named by a pid, which could be recycled: it is pinned with a pidfd,
/// whose process must have the start time recorded when the container
/// started, and must still be there after every file is opened (so the pid
/// named the same process throughout).
type Namespaces = (Vec<(&'static str, CloneFlags, File)>, File);

fn open_namespaces(spec: &ExecSpec) -> Result<Namespaces, String> {
    let gone = || format!("the container's init (pid {}) is gone", spec.init_pid);
    let pidfd = sys::pidfd_open(spec.init_pid).map_err(|_| gone())?;
    // An unknown start time (0) pins nothing: refuse rather than trust the
    // pid alone (rsupd records it at every start and only adopts a
    // container whose init still has it).
    if spec.init_start_time == 0
        || sys::process_start_time(spec.init_pid) != Some(spec.init_start_time)
    {
        return Err(gone());
    }
    let open = |name: &str| {
        let path = format!("/proc/{}/ns/{name}", spec.init_pid);
        File::open(&path).map_err(|e| (e.kind(), format!("{path}: {e}")))
    };
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds = Vec::new();
    for (name, flag) in kinds {
        fds.push((name, flag, open(name).map_err(|(_, m)| m)?));
    }
    // The container's cgroup namespace (its cgroup as "/"), after joining
    // the cgroups: on v2 a move is checked against the mover's cgroup
    // namespace. A kernel without cgroup namespaces has no such file.
    match open("cgroup") {
        Ok(f) => fds.push(("cgroup", CloneFlags::CLONE_NEWCGROUP, f)),
        Err((std::io::ErrorKind::NotFound, _)) => {}
        Err((_, m)) => return Err(m),
    }
    let user = open("user").map_err(|(_, m)| m)?;
    // Signal 0 checks that the pidfd's process is not yet reaped: its pid
    // could not have been reused while the files were opened.
    sys::pidfd_send_signal(&pidfd, 0).map_err(|_| gone())?;
    Ok((fds, user))
}

/// Why the command cannot be run: not found (exit 127) or anything else
/// (126).
enum Prepare {
    NotFound(String),
    Failed(String),
}

/// In the container's namespaces: resolves the user, sets the identity,
/// capabilities, no_new_privs, working directory and seccomp filter of
/// this process, and finds the command in the container's PATH. Returns
/// execve's arguments.
fn confine(spec: &ExecSpec) -> Result<(CString, Vec<CString>, Vec<CString>), Prepare> {
    use Prepare::{Failed, NotFound};
    let mut env = spec.env.clone();
    let (uid, gid) = match &spec.user_spec {
        None => (spec.uid, spec.gid),
        Some(u) => match crate::spec::resolve_user_in_container(u) {
            Ok((user, home)) => {
                if !env.iter().any(|kv| kv.starts_with("HOME=")) {
                    env.push(format!("HOME={home}"));
                }
                (user.uid, user.gid)
            }
            Err(e) => return Err(Failed(format!("user: {e}"))),
        },
    };
    spec.security.drop_bounding().map_err(Failed)?;
    nix::unistd::setgroups(&[]).map_err(|e| Failed(format!("setgroups: {e}")))?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(|e| Failed(format!("setgid: {e}")))?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| Failed(format!("setuid: {e}")))?;
    nix::unistd::chdir(spec.cwd.as_str())
        .map_err(|e| Failed(format!("chdir {}: {e}", spec.cwd)))?;
    spec.security.apply_after_setuid(uid).map_err(Failed)?;
    // Still non-dumpable: a uid change resets the flag to the system's
    // suid_dumpable, which need not be 0.
    sys::set_non_dumpable().map_err(|e| Failed(format!("PR_SET_DUMPABLE: {e}")))?;
    let cmd = &spec.argv[0];
    let path_var = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        path_var
            .split(':')
            .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
            .collect()
    };
    let Some(path) = candidates.into_iter().find(|c| {
        std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }) else {
        return Err(NotFound(format!(
            "{cmd}: executable file not found in the container's PATH"
        )));
    };
    // Last: the filter may deny what the steps above needed.
    spec.security.apply_seccomp().map_err(Failed)?;
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = env.iter().map(|a| cstr(a)).collect();
    Ok((cstr(&path), argv, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_for(pid: i32, start_time: u64) -> ExecSpec {
        ExecSpec {
            init_pid: pid,
            init_start_time: start_time,
            cgroup_procs: Vec::new(),
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            user_spec: None,
            security: crate::security::SecuritySpec::default(),
        }
    }

    #[test]
    fn the_init_is_pinned_by_its_start_time() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let started = sys::process_start_time(me).expect("start time");
        let (fds, _user) = open_namespaces(&spec_for(me, started)).expect("the same process");
        assert!(fds.iter().any(|(name, _, _)| *name == "pid"));
        // Another process that got the pid later has another start time.
        let e = open_namespaces(&spec_for(me, started + 1)).expect_err("reused pid");
        assert!(e.contains("is gone"), "{e}");
        // A pid that names nothing.
        let e = open_namespaces(&spec_for(i32::MAX, started)).expect_err("no such pid");
        assert!(e.contains("is gone"), "{e}");
        // No recorded start time: nothing pins the pid.
        let e = open_namespaces(&spec_for(me, 0)).expect_err("unknown start time");
        assert!(e.contains("is gone"), "{e}");
    }
}
