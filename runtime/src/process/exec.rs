//! `rsupd __rsup-exec JSON`: runs a command inside a running container (for
//! `rsupctl exec` and health checks).
//!
//! Like the shim, this is a fresh single-threaded process, so it may setns
//! and fork safely. It makes itself non-dumpable (no container process may
//! open its `/proc/<pid>/exe`, which is rsupd's binary), joins the
//! container's cgroup, then its IPC, UTS, NET, PID, MNT and cgroup
//! namespaces (opening every namespace fd first, while `/proc/<init>` is
//! still the host's), then its user namespace if it has
//! one (last: the others belong to the host's user namespace), forks (a PID
//! namespace applies to children only), and the child sets the user and
//! working directory and execs the command found in the container's PATH.
//! The parent waits and exits with the command's status (128+signal when killed).

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
    // First thing: this process is rsupd's binary and is about to enter the
    // container's PID namespace, so no container process may open its
    // /proc/<pid>/exe or ptrace it (the command's execve resets the flag).
    sys::set_non_dumpable().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
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
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{}/ns/{name}", spec.init_pid);
        let f = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        fds.push((name, flag, f));
    }
    // The container's cgroup namespace (its cgroup as "/"), after joining
    // the cgroups above: on v2 a move is checked against the mover's cgroup
    // namespace. A kernel without cgroup namespaces has no such file.
    let cgroup_path = format!("/proc/{}/ns/cgroup", spec.init_pid);
    match File::open(&cgroup_path) {
        Ok(f) => fds.push(("cgroup", CloneFlags::CLONE_NEWCGROUP, f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{cgroup_path}: {e}")),
    }
    // A container with a user namespace: join it last. Its other namespaces
    // belong to the host's user namespace (the init unshares the user
    // namespace after them), so joining them needs host root's
    // capabilities, which setns(CLONE_NEWUSER) gives up.
    let user_path = format!("/proc/{}/ns/user", spec.init_pid);
    let user = File::open(&user_path).map_err(|e| format!("{user_path}: {e}"))?;
    let own = std::fs::metadata("/proc/self/ns/user").map_err(|e| format!("own user ns: {e}"))?;
    let theirs = user.metadata().map_err(|e| format!("{user_path}: {e}"))?;
    let join_user = (own.dev(), own.ino()) != (theirs.dev(), theirs.ino());
    for (name, flag, f) in &fds {
        setns(f, *flag).map_err(|e| format!("setns {name}: {e}"))?;
    }
    if join_user {
        setns(&user, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns user: {e}"))?;
    }
    drop((fds, user));
    // SAFETY: this helper is single-threaded (checked above).
    match unsafe { sys::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let e = exec_child(&spec);
            eprintln!("rsup exec: {e}");
            sys::exit_now(if e.contains("not found") { 127 } else { 126 });
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

/// Sets the identity and directory and execs; returns why it failed.
fn exec_child(spec: &ExecSpec) -> String {
    // A health check that times out kills the helper; take the command along.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
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
            Err(e) => return format!("user: {e}"),
        },
    };
    if let Err(e) = spec.security.drop_bounding() {
        return e;
    }
    if let Err(e) = nix::unistd::setgroups(&[]) {
        return format!("setgroups: {e}");
    }
    if let Err(e) = nix::unistd::setgid(Gid::from_raw(gid)) {
        return format!("setgid: {e}");
    }
    if let Err(e) = nix::unistd::setuid(Uid::from_raw(uid)) {
        return format!("setuid: {e}");
    }
    if let Err(e) = nix::unistd::chdir(spec.cwd.as_str()) {
        return format!("chdir {}: {e}", spec.cwd);
    }
    if let Err(e) = spec.security.apply_after_setuid(uid) {
        return e;
    }
    if let Err(e) = spec.security.apply_seccomp() {
        return e;
    }
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
        return format!("{cmd}: executable file not found in the container's PATH");
    };
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = env.iter().map(|a| cstr(a)).collect();
    let Err(e) = nix::unistd::execve(&cstr(&path), &argv, &env);
    format!("exec {path}: {}", e.desc())
}
