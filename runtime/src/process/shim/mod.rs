//! The shim and the container init: the single-threaded side of
//! [`crate::process`].
//!
//! Both run in processes that have exactly one thread (the shim checks), so
//! they may fork, allocate and take locks freely. Nothing here runs inside
//! `rsupd` itself.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::SigSet;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, pipe2};

use super::{ExitInfo, Report};
use crate::logs::{DROPPED_FILE, DropCounter, LineSplitter, LogWriter, Stream};
use crate::paths::{PathError, RootDir, Target};
use crate::spec::ContainerSpec;
use crate::store;
use crate::sys;

/// Entry point of `rsupd __rsup-shim DIR`. Returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    match run(dir) {
        Ok(()) => 0,
        Err(Failure { message, exit_code }) => {
            eprintln!("rsup-shim {}: {message}", dir.display());
            report(&Report::Error { message, exit_code });
            1
        }
    }
}

/// Why a start failed, and the exit code to record for the container when
/// its command could not be run (Docker's 126 and 127).
struct Failure {
    message: String,
    exit_code: Option<i32>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            exit_code: None,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::from(message.to_string())
    }
}

/// A status line of the init that is not the one expected: its `error
/// MESSAGE` or `exec-error CODE MESSAGE`.
fn init_failure(line: &str) -> Failure {
    if let Some(rest) = line.strip_prefix("exec-error ") {
        let (code, message) = rest
            .split_once(' ')
            .and_then(|(c, m)| Some((c.parse::<i32>().ok()?, m)))
            .unwrap_or((0, rest));
        return Failure {
            message: message.to_string(),
            exit_code: (code != 0).then_some(code),
        };
    }
    Failure::from(line.strip_prefix("error ").unwrap_or(line))
}

fn report(r: &Report) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Lines the init writes to the shim on the status pipe.
struct StatusReader {
    fd: File,
    buf: Vec<u8>,
    eof: bool,
}

impl StatusReader {
    /// Reads what is available (blocking once) and returns complete lines.
    fn fill(&mut self) -> Vec<String> {
        let mut chunk = [0u8; 512];
        match self.fd.read(&mut chunk) {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
        }
        let mut lines = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line[..pos]).into_owned());
        }
        lines
    }

    /// Blocks until one line arrives; `None` at EOF.
    fn next_line(&mut self, pending: &mut Vec<String>) -> Option<String> {
        while pending.is_empty() && !self.eof {
            pending.extend(self.fill());
        }
        if pending.is_empty() {
            None
        } else {
            Some(pending.remove(0))
        }
    }
}

fn run(dir: &Path) -> Result<(), Failure> {
    // First thing: this binary is rsupd's, and the init we fork (which never
    // execs) is the container's PID 1: no container process may open its
    // /proc/<pid>/exe or ptrace it. The init inherits the flag; the
    // command's execve resets it.
    sys::set_non_dumpable().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    // rsupd runs with umask 0077; what the init makes for the container
    // (/etc/hosts, mount targets, ...) and the command get runc's 0022.
    // rsup's own files here are created with explicit modes.
    sys::set_umask(0o022);
    // Our own session: a signal to rsupd's process group or the loss of its
    // terminal does not reach the containers.
    let _ = nix::unistd::setsid();
    if sys::thread_count() != 1 {
        return Err("the shim must be single-threaded".into());
    }
    let spec: ContainerSpec = store::read_json(&dir.join("config.json"))
        .map_err(|e| e.to_string())?
        .ok_or("config.json is missing")?;
    let mut log = LogWriter::open(&dir.join("container.log"), spec.log)
        .map_err(|e| format!("container.log: {e}"))?
        .with_drop_counter(DropCounter::open(&dir.join(DROPPED_FILE)));
    let _ = std::fs::remove_file(dir.join("exit.json"));

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let lowers = lower_dirs(&spec, dir)?;
    let (st_r, st_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (map_r, map_w) = pipe()?;

    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;
    // SAFETY: the shim is single-threaded (checked above).
    let init_pid = match unsafe { sys::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop((out_r, err_r, st_r, go_w, map_w));
            let pipes = InitPipes {
                out_w,
                err_w,
                st_w,
                go_r,
                map_r,
            };
            let code = init_main(&spec, dir, &lowers, pipes);
            sys::exit_now(code);
        }
        ForkResult::Parent { child } => child,
    };
    drop((out_w, err_w, st_w, go_r, map_r));
    let mut status = StatusReader {
        fd: File::from(st_r),
        buf: Vec::new(),
        eof: false,
    };
    let mut pending = Vec::new();
    let fail = |f: Failure| -> Result<(), Failure> {
        let _ = sys::kill(init_pid.as_raw(), libc::SIGKILL);
        let _ = waitpid(init_pid, None);
        Err(f)
    };

    let mut line = status.next_line(&mut pending);
    if let Some(map) = &spec.userns {
        // The init is in its new user namespace and waits for its maps: we
        // write them from the host's user namespace, where we hold
        // CAP_SETUID and CAP_SETGID (so no setgroups "deny" is needed).
        match line {
            Some(l) if l == "userns" => {}
            Some(l) => return fail(init_failure(&l)),
            None => return fail("the container init died during setup".into()),
        }
        if let Err(e) = write_id_maps(init_pid, map) {
            return fail(e.into());
        }
        if File::from(map_w).write_all(b"m").is_err() {
            return fail("the container init died before its id maps were set".into());
        }
        line = status.next_line(&mut pending);
    } else {
        drop(map_w);
    }
    match line {
        Some(l) if l == "ready" => {}
        Some(l) => return fail(init_failure(&l)),
        None => return fail("the container init died during setup".into()),
    }
    report(&Report::Ready {
        shim_pid: std::process::id() as i32,
        init_pid: init_pid.as_raw(),
    });
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    if go.trim() != "go" {
        return fail("rsupd went away before the start".into());
    }
    let mut go_w = File::from(go_w);
    if go_w.write_all(b"g").is_err() {
        return fail("the container init died before the start".into());
    }
    drop(go_w);
    match status.next_line(&mut pending) {
        Some(l) if l == "started" => report(&Report::Started),
        Some(l) => return fail(init_failure(&l)),
        None => return fail("the container init died at the start".into()),
    }
    // Done talking to rsupd: point stdin/stdout at /dev/null so that its pipes
    // close and a crash of rsupd cannot hurt us with SIGPIPE.
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }

    let exit = pump(&mut log, out_r, err_r, &mut status, &mut pending);
    let info = match (exit, waitpid(init_pid, None)) {
        (Some(info), _) => info,
        (None, Ok(WaitStatus::Exited(_, code))) => ExitInfo {
            code,
            signal: 0,
            finished_at: SystemTime::now(),
        },
        (None, Ok(WaitStatus::Signaled(_, sig, _))) => ExitInfo {
            code: 128 + sig as i32,
            signal: sig as i32,
            finished_at: SystemTime::now(),
        },
        (None, other) => return Err(format!("lost the container init: {other:?}").into()),
    };
    store::write_json(&dir.join("exit.json"), &info).map_err(|e| e.to_string().into())
}

/// Copies the command's output into the log until both streams and the
/// status pipe are closed; returns the exit the init reported, if any.
fn pump(
    log: &mut LogWriter,
    out_r: OwnedFd,
    err_r: OwnedFd,
    status: &mut StatusReader,
    pending: &mut Vec<String>,
) -> Option<ExitInfo> {
    let mut exit = None;
    let mut parse = |lines: &mut Vec<String>| {
        for l in lines.drain(..) {
            let mut it = l.split_whitespace();
            if it.next() == Some("exit") {
                let code = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let signal = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                exit = Some(ExitInfo {
                    code,
                    signal,
                    finished_at: SystemTime::now(),
                });
            }
        }
    };
    parse(pending);
    let mut streams = [
        (
            Some(File::from(out_r)),
            Stream::Stdout,
            LineSplitter::default(),
        ),
        (
            Some(File::from(err_r)),
            Stream::Stderr,
            LineSplitter::default(),
        ),
    ];
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut fds = Vec::new();
        let mut who = Vec::new();
        for (i, (f, _, _)) in streams.iter().enumerate() {
            if let Some(f) = f {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                who.push(i);
            }
        }
        if !status.eof {
            fds.push(PollFd::new(status.fd.as_fd(), PollFlags::POLLIN));
            who.push(2);
        }
        if fds.is_empty() {
            break;
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&who)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, &w)| w)
            .collect();
        drop(fds);
        for w in ready {
            if w == 2 {
                let mut lines = status.fill();
                parse(&mut lines);
                continue;
            }
            let (file, stream, splitter) = &mut streams[w];
            let n = file
                .as_mut()
                .map_or(Ok(0), |f| f.read(&mut chunk))
                .unwrap_or(0);
            let stream = *stream;
            let mut emit = |partial: bool, line: &[u8]| {
                let _ = log.write(stream, partial, line);
            };
            if n == 0 {
                splitter.finish(&mut emit);
                *file = None;
            } else {
                splitter.feed(&chunk[..n], &mut emit);
            }
        }
    }
    exit
}

// ---------------------------------------------------------------- init (PID 1)

/// The init's ends of the pipes to the shim.
struct InitPipes {
    /// The command's stdout and stderr.
    out_w: OwnedFd,
    err_w: OwnedFd,
    /// Status lines to the shim.
    st_w: OwnedFd,
    /// One byte: start the command.
    go_r: OwnedFd,
    /// One byte: the id maps are written.
    map_r: OwnedFd,
}

/// Body of the container's init. Returns its exit code.
fn init_main(spec: &ContainerSpec, dir: &Path, lowers: &[PathBuf], pipes: InitPipes) -> i32 {
    let InitPipes {
        out_w,
        err_w,
        st_w,
        go_r,
        map_r,
    } = pipes;
    // If the shim dies, so does the container: nobody would record its exit.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
    let _ = sys::set_name("rsup-init");
    let mut st = File::from(st_w);
    if let Err(e) = setup(spec, dir, lowers) {
        let _ = writeln!(st, "error {e}");
        return 1;
    }
    if spec.userns.is_some() {
        if let Err(e) = enter_userns(&mut st, map_r) {
            let _ = writeln!(st, "error {e}");
            return 1;
        }
    } else {
        drop(map_r);
    }
    let _ = writeln!(st, "ready");
    let mut b = [0u8; 1];
    if !matches!(File::from(go_r).read(&mut b), Ok(1)) {
        return 1;
    }
    // rsupd has put us into the container's cgroups: make them the root of
    // a cgroup namespace, so the command sees "/" in /proc/self/cgroup and a
    // cgroupfs it mounts (with CAP_SYS_ADMIN) shows only its own subtree.
    if let Err(e) = sys::unshare_cgroup() {
        let _ = writeln!(st, "error unshare(CLONE_NEWCGROUP): {e}");
        return 1;
    }

    // Block every signal (sigwait collects them) and give each a handler, so
    // that signals from outside the PID namespace are delivered to us.
    let all = SigSet::all();
    let _ = all.thread_block();
    sys::install_noop_handlers();

    let (exec_r, exec_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(st, "error pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the init is a fork of the single-threaded shim: single-threaded.
    let cmd = match unsafe { sys::fork() } {
        Ok(ForkResult::Child) => {
            drop(exec_r);
            drop(st);
            exec_command(spec, out_w, err_w, exec_w)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            let _ = writeln!(st, "error fork: {e}");
            return 1;
        }
    };
    drop((out_w, err_w, exec_w));
    let mut why = String::new();
    let _ = File::from(exec_r).read_to_string(&mut why);
    if !why.is_empty() {
        // "CODE MESSAGE" from the child; one line to the shim.
        let (code, msg) = why
            .split_once(' ')
            .and_then(|(c, m)| Some((c.parse::<i32>().ok()?, m)))
            .unwrap_or((0, why.as_str()));
        let msg = msg.replace('\n', " ");
        let _ = writeln!(st, "exec-error {code} {msg}");
        let _ = waitpid(cmd, None);
        return if code == 0 { 127 } else { code };
    }
    let _ = writeln!(st, "started");

    loop {
        let sig = match sys::sigwait(&all) {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != libc::SIGCHLD {
            let _ = sys::kill(cmd.as_raw(), sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == cmd => {
                    let _ = writeln!(st, "exit {code} 0");
                    return code;
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == cmd => {
                    let _ = writeln!(st, "exit {} {}", 128 + s as i32, s as i32);
                    return 128 + s as i32;
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {} // another zombie reaped
            }
        }
    }
}

/// The child that becomes the command. Never returns.
fn exec_command(spec: &ContainerSpec, out_w: OwnedFd, err_w: OwnedFd, exec_w: OwnedFd) -> ! {
    let report = File::from(exec_w);
    // "CODE MESSAGE": the exit code to record (0: none) and why.
    let fail_code = |code: i32, msg: &str| -> ! {
        let _ = write!(&report, "{code} {msg}");
        sys::exit_now(if code == 0 { 127 } else { code });
    };
    let fail =
        |what: &str, e: &dyn std::fmt::Display| -> ! { fail_code(0, &format!("{what}: {e}")) };
    if let Err(e) = SigSet::all().thread_unblock() {
        fail("sigprocmask", &e);
    }
    // Handlers installed by the init are reset to the default by execve; the
    // noop ones must not be inherited as SIG_IGN, and they are not.
    let null = match nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => fail("open /dev/null", &e),
    };
    if let Err(e) = nix::unistd::dup2_stdin(&null)
        .and_then(|_| nix::unistd::dup2_stdout(&out_w))
        .and_then(|_| nix::unistd::dup2_stderr(&err_w))
    {
        fail("dup2", &e);
    }
    drop((null, out_w, err_w));
    // A user that a mount may define is resolved now, in the container.
    let (user, env) = if spec.user_at_start {
        match crate::spec::resolve_user_in_container(&spec.user_spec) {
            Ok((user, home)) => {
                let mut env = spec.env.clone();
                if !env.iter().any(|kv| kv.starts_with("HOME=")) {
                    env.push(format!("HOME={home}"));
                }
                (user, env)
            }
            Err(e) => fail("user", &e),
        }
    } else {
        (spec.user, spec.env.clone())
    };
    if let Err(e) = spec.security.drop_bounding() {
        fail("capabilities", &e);
    }
    if let Err(e) = nix::unistd::setgroups(&[]) {
        fail("setgroups", &e);
    }
    if let Err(e) = nix::unistd::setgid(Gid::from_raw(user.gid)) {
        fail("setgid", &e);
    }
    if let Err(e) = nix::unistd::setuid(Uid::from_raw(user.uid)) {
        fail("setuid", &e);
    }
    if let Err(e) = nix::unistd::chdir(spec.working_dir.as_str()) {
        fail(&format!("chdir {}", spec.working_dir), &e);
    }
    // The command is looked up here, inside the container after its mounts
    // (as runc does): a bind mount or a volume may provide it.
    let cmd = spec.command.first().map(String::as_str).unwrap_or_default();
    let executable = match find_command(cmd, &env) {
        Ok(p) => p,
        Err((code, msg)) => fail_code(code, &msg),
    };
    if let Err(e) = spec.security.apply_after_setuid(user.uid) {
        fail("capabilities", &e);
    }
    if let Err(e) = spec.security.apply_seccomp() {
        fail("seccomp", &e);
    }
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let path = cstr(&executable);
    let argv: Vec<CString> = spec.command.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = env.iter().map(|a| cstr(a)).collect();
    let Err(e) = nix::unistd::execve(&path, &argv, &env);
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    fail_code(code, &format!("exec: {cmd:?}: {}", e.desc().to_lowercase()))
}

/// Finds `cmd` as Docker (runc) does, in the caller's root and working
/// directory: a name with a '/' is taken as is (relative to the working
/// directory), a bare name is searched in the absolute directories of the
/// env's PATH (Docker's default PATH when it has none). `Err((code,
/// message))` with Docker's exit codes: 127 not found, 126 found but not
/// executable.
fn find_command(cmd: &str, env: &[String]) -> Result<String, (i32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |m: &std::fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
    if cmd.is_empty() {
        return Err((127, "exec: no command".to_string()));
    }
    if cmd.contains('/') {
        return match std::fs::metadata(cmd) {
            Ok(m) if executable(&m) => Ok(cmd.to_string()),
            Ok(m) if m.is_dir() => Err((126, format!("exec: {cmd:?}: is a directory"))),
            Ok(_) => Err((126, format!("exec: {cmd:?}: permission denied"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
                127,
                format!("exec: {cmd:?}: stat {cmd}: no such file or directory"),
            )),
            Err(e) => Err((126, format!("exec: {cmd:?}: stat {cmd}: {e}"))),
        };
    }
    let path_var = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    let mut denied = false;
    for d in path_var.split(':').filter(|d| d.starts_with('/')) {
        let c = format!("{}/{cmd}", d.trim_end_matches('/'));
        match std::fs::metadata(&c) {
            Ok(m) if executable(&m) => return Ok(c),
            Ok(m) if m.is_file() => denied = true,
            _ => {}
        }
    }
    if denied {
        return Err((126, format!("exec: {cmd:?}: permission denied")));
    }
    Err((
        127,
        format!("exec: {cmd:?}: executable file not found in $PATH"),
    ))
}

/// The overlay's lower directories, top first: the rootfs, or its shifted
/// copy when the container has a user namespace (see
/// [`crate::userns::shifted_lowerdirs`]); then the upper and work
/// directories are made the container root's too, so that it owns `/`.
fn lower_dirs(spec: &ContainerSpec, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let lowers = spec.lowerdirs();
    let Some(map) = &spec.userns else {
        return Ok(lowers);
    };
    // <state>/containers/<id>: see crate::store.
    let state = dir
        .parent()
        .and_then(Path::parent)
        .ok_or("the container directory is not inside a state directory")?;
    let shifted =
        crate::userns::shifted_lowerdirs(state, &lowers, map).map_err(|e| e.to_string())?;
    let (uid, gid) = map.root();
    for d in ["upper", "work"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {d}: {e}"))?;
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))
            .map_err(|e| format!("chown {d}: {e}"))?;
    }
    Ok(shifted)
}

/// Writes the init's uid and gid maps (from the shim, in the host's user
/// namespace). Each file takes exactly one write.
fn write_id_maps(init: Pid, map: &crate::userns::IdMap) -> Result<(), String> {
    for (file, ranges) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
        let path = format!("/proc/{init}/{file}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(crate::userns::proc_map_text(ranges).as_bytes()))
            .map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

/// In the init, after every mount: moves into a new user namespace, has the
/// shim write its maps, and becomes the namespace's root. The mount, PID,
/// UTS, IPC and network namespaces stay owned by the host's user namespace,
/// so even with capabilities container root cannot mount or configure the
/// network; the capability sets the command gets apply in the new
/// namespace only.
fn enter_userns(st: &mut File, map_r: OwnedFd) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
    writeln!(st, "userns").map_err(|e| format!("status pipe: {e}"))?;
    let mut b = [0u8; 1];
    if !matches!(File::from(map_r).read(&mut b), Ok(1)) {
        return Err("the shim did not write the id maps".into());
    }
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups in the user namespace: {e}"))?;
    nix::unistd::setresgid(root.1, root.1, root.1)
        .map_err(|e| format!("setresgid(0) in the user namespace: {e}"))?;
    nix::unistd::setresuid(root.0, root.0, root.0)
        .map_err(|e| format!("setresuid(0) in the user namespace: {e}"))?;
    // A change of the effective uid clears the parent-death signal.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
    Ok(())
}

fn mount_err(what: &str, target: &str) -> impl FnOnce(nix::errno::Errno) -> String {
    let msg = format!("mount {what} on {target}");
    move |e| format!("{msg}: {e}")
}

fn path_err(e: PathError) -> String {
    e.to_string()
}

/// `mount(2)` onto a resolved target, by its fd: the kernel mounts on
/// exactly that inode (see [`crate::paths`]).
fn mount_on(
    source: Option<&str>,
    target: &Target,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> Result<(), String> {
    mount(source, target.proc_path().as_str(), fstype, flags, data)
        .map_err(mount_err(what, target.path()))
}

/// `<state>` of a container directory `<state>/containers/<id>` (see
/// [`crate::store`]).
fn state_dir(dir: &Path) -> Result<&Path, String> {
    dir.parent()
        .and_then(Path::parent)
        .ok_or_else(|| "the container directory is not inside a state directory".to_string())
}

/// Namespaces and mounts of a new container, as its PID 1 (still host root:
/// the user namespace, if any, comes after). New directories and nodes get
/// exactly the modes asked for (umask 0); the umask is restored at the end.
fn setup(spec: &ContainerSpec, dir: &Path, lowers: &[PathBuf]) -> Result<(), String> {
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let r = setup_root(spec, dir, lowers);
    nix::sys::stat::umask(umask);
    r
}

fn setup_root(spec: &ContainerSpec, dir: &Path, lowers: &[PathBuf]) -> Result<(), String> {
    // tmpfs mounts of rsup's own (/dev, /dev/shm) belong to container root.
    let root_ids = spec.userns.as_ref().map(|m| m.root());
    let owner = root_ids
        .map(|(u, g)| format!(",uid={u},gid={g}"))
        .unwrap_or_default();
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.networks.is_empty() {
        flags |= CloneFlags::CLONE_NEWNET;
    } else {
        // The container's persistent network namespace (its sandbox), made
        // and wired by rsupd before the start.
        let path = dir.join("netns");
        let ns = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("joining the network namespace: {e}"))?;
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    // Nothing we mount from here on propagates back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;

    let rootfs = dir.join("rootfs");
    for d in ["rootfs", "upper", "work"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    let opts = crate::spec::overlay_options(lowers, Some((&dir.join("upper"), &dir.join("work"))))?;
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount overlay on {}: {e}", rootfs.display()))?;

    // From here on, every path inside the root is resolved in it by fd
    // (crate::paths): nothing in the image or in a volume can steer a mount
    // or a write out of it.
    let root = RootDir::open(&rootfs).map_err(path_err)?;
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let proc_dir = root.plain_dir("proc", 0o555).map_err(path_err)?;
    mount_on(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_noexec_nodev,
        None,
        "proc",
    )?;
    let dev_dir = root.plain_dir("dev", 0o755).map_err(path_err)?;
    mount_on(
        Some("tmpfs"),
        &dev_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(format!("mode=755,size=65536k{owner}").as_str()),
        "tmpfs",
    )?;
    make_dev(&root, root_ids)?;
    let sys_dir = root.plain_dir("sys", 0o555).map_err(path_err)?;
    mount_on(
        Some("sysfs"),
        &sys_dir,
        Some("sysfs"),
        nosuid_noexec_nodev | MsFlags::MS_RDONLY,
        None,
        "sysfs",
    )?;

    mount_volumes(spec, &root, dir)?;
    mount_etc_files(spec, &root, dir)?;
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    sys::set_link_up("lo").map_err(|e| format!("setting lo up: {e}"))?;

    // pivot_root(".", "."): the old root ends up stacked on top of the new
    // one, and the lazy unmount of "." takes it away; no directory for the
    // old root is needed inside the rootfs.
    let top = root.target().map_err(path_err)?;
    nix::unistd::fchdir(&top).map_err(|e| format!("chdir rootfs: {e}"))?;
    drop((top, proc_dir, dev_dir, sys_dir, root));
    sys::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    // From here on every path is the container's, and /proc is its own.
    if !spec.security.privileged {
        mask_paths()?;
    }
    let root = RootDir::open(Path::new("/")).map_err(path_err)?;
    let (wd, made_working_dir) = match root.resolve(&spec.working_dir) {
        Ok(t) if t.is_dir() => (t, false),
        _ => (
            root.mkdir_all(&spec.working_dir, 0o755)
                .map_err(|e| format!("working directory: {e}"))?,
            true,
        ),
    };
    wd.ensure_mountable(&root)
        .map_err(|e| format!("working directory: {e}"))?;
    if let (true, Some((u, g))) = (made_working_dir, root_ids) {
        let _ = wd.chown(u, g);
    }
    if spec.read_only {
        // Only this mount point turns read-only: /proc, /dev, volumes and
        // tmpfs mounts below keep their own flags.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("making the root read-only: {e}"))?;
    }
    Ok(())
}

/// The standard device nodes: (name, major, minor).
const DEV_NODES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Fills the container's own /dev tmpfs (just mounted on the root's `dev`):
/// device nodes made with mknod, so a chmod or chown inside changes the
/// container's inode and never the host's; devpts, shm and the usual links.
/// The init is host root here (before its user namespace), so mknod works
/// with `--userns remap` too; the nodes then belong to the container's root.
/// Only if mknod is refused (EPERM) are the host's nodes bind-mounted, and
/// shim.log says so.
fn make_dev(root: &RootDir, root_ids: Option<(u32, u32)>) -> Result<(), String> {
    // Resolved again: the fd now leads into the tmpfs mounted on it.
    let t = root.resolve_nofollow("dev").map_err(path_err)?;
    if t.fs_type().ok() != Some(nix::sys::statfs::TMPFS_MAGIC) {
        return Err("/dev in the rootfs is not the tmpfs just mounted".into());
    }
    let dev = RootDir::from_target(t, root.label().join("dev")).map_err(path_err)?;
    for (name, major, minor) in DEV_NODES {
        let node = match dev.mknod_char(name, major, minor, 0o666) {
            Ok(n) => n,
            Err(e) if e.errno() == Some(nix::errno::Errno::EPERM) => {
                eprintln!(
                    "rsup-init: mknod /dev/{name}: {e}; bind-mounting the host's node instead"
                );
                let node = dev.create_file(name, 0o666).map_err(path_err)?;
                let host = crate::paths::open_host_path(&Path::new("/dev").join(name))
                    .map_err(path_err)?;
                mount_on(
                    Some(host.proc_path().as_str()),
                    &node,
                    None,
                    MsFlags::MS_BIND,
                    None,
                    name,
                )?;
                continue;
            }
            Err(e) => return Err(path_err(e)),
        };
        if let Some((u, g)) = root_ids {
            node.chown(u, g)
                .map_err(|e| format!("chown /dev/{name}: {e}"))?;
        }
    }
    let pts = dev.mkdir("pts", 0o755).map_err(path_err)?;
    mount_on(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
        "devpts",
    )?;
    let shm = dev.mkdir("shm", 0o1777).map_err(path_err)?;
    let owner = root_ids
        .map(|(u, g)| format!(",uid={u},gid={g}"))
        .unwrap_or_default();
    mount_on(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size=65536k{owner}").as_str()),
        "tmpfs",
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        dev.symlink(link, target).map_err(path_err)?;
    }
    Ok(())
}

/// /etc/hostname, /etc/hosts and (with a network) /etc/resolv.conf, as
/// Docker does them: written into the container's own directory
/// (`containers/<id>/hostname|hosts|resolv.conf`, 0644, the container
/// root's with a user namespace) and bind-mounted, read-write, onto the
/// files in the root, which are resolved (or created) inside the root. So
/// nothing is ever written through an image's symlink, and a read-only root
/// keeps them working. A file is left alone (with a line in shim.log) when
/// /etc is missing or its target is not a regular file inside the root (a
/// dangling symlink, a directory, something on procfs or sysfs), and when
/// the user mounts something there.
fn mount_etc_files(spec: &ContainerSpec, root: &RootDir, dir: &Path) -> Result<(), String> {
    if !root.resolve("etc").is_ok_and(|t| t.is_dir()) {
        eprintln!(
            "rsup-init: no /etc directory in the rootfs: hostname, hosts and resolv.conf not mounted"
        );
        return Ok(());
    }
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match spec.networks.first() {
        Some(a) => hosts.push_str(&format!("{}\t{} {}\n", a.ip, spec.hostname, spec.name)),
        None => hosts.push_str(&format!("127.0.1.1\t{}\n", spec.hostname)),
    }
    let mut files = vec![
        ("hostname", format!("{}\n", spec.hostname)),
        ("hosts", hosts),
    ];
    // The network's embedded DNS server answers on its gateway.
    if let Some(a) = spec.networks.first() {
        files.push((
            "resolv.conf",
            format!("nameserver {}\noptions ndots:0\n", a.gateway),
        ));
    }
    let state = RootDir::open(dir).map_err(path_err)?;
    let owner = spec.userns.as_ref().map(|m| m.root());
    for (name, content) in files {
        let target_path = format!("/etc/{name}");
        if spec.mounts.iter().any(|m| m.target == target_path) {
            continue;
        }
        let target = match root.create_file(&target_path, 0o644) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("rsup-init: {target_path} not mounted: {e}");
                continue;
            }
        };
        let usable = match target.stat() {
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFREG => {
                Err(format!("{target_path} is not a regular file"))
            }
            Ok(_) => target.ensure_mountable(root).map_err(path_err),
            Err(e) => Err(format!("stat {target_path}: {e}")),
        };
        if let Err(e) = usable {
            eprintln!("rsup-init: {target_path} not mounted: {e}");
            continue;
        }
        state
            .write_file(name, content.as_bytes(), 0o644, owner)
            .map_err(path_err)?;
        let source = state.resolve_nofollow(name).map_err(path_err)?;
        mount_on(
            Some(source.proc_path().as_str()),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
            name,
        )?;
    }
    Ok(())
}

/// Docker's masked and read-only paths (after pivot_root).
fn mask_paths() -> Result<(), String> {
    use crate::security::{MASKED_DIRS, MASKED_FILES, READONLY_PATHS};
    for f in MASKED_FILES {
        if Path::new(f).exists() {
            mount(
                Some("/dev/null"),
                f,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("masking {f}: {e}"))?;
        }
    }
    for d in MASKED_DIRS {
        if Path::new(d).is_dir() {
            mount(
                Some("tmpfs"),
                d,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
            .map_err(|e| format!("masking {d}: {e}"))?;
        }
    }
    for p in READONLY_PATHS {
        if Path::new(p).exists() {
            mount(
                Some(p),
                p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("binding {p}: {e}"))?;
            mount(
                None::<&str>,
                p,
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| format!("making {p} read-only: {e}"))?;
        }
    }
    Ok(())
}

/// Volumes, bind mounts and tmpfs mounts, before pivot_root. Targets are
/// resolved (or made) inside `root` by fd and refused on procfs or sysfs;
/// mounts go parent first (by depth of the target, as Docker sorts them),
/// so a volume inside another lands in it. A named volume's source is
/// `volumes/<name>/_data` under the state dir, resolved with no symlink
/// allowed in any component; a bind source is the absolute host path the
/// (root-equivalent) client gave, as in Docker.
fn mount_volumes(spec: &ContainerSpec, root: &RootDir, dir: &Path) -> Result<(), String> {
    use crate::volumes::MountKind;
    let mut order: Vec<&crate::volumes::MountSpec> = spec.mounts.iter().collect();
    order.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
    let mut volumes: Option<RootDir> = None;
    for m in order {
        let source = match &m.kind {
            MountKind::Volume { name, .. } => {
                // A VolumeName is checked when config.json is read.
                let vols = match &mut volumes {
                    Some(v) => v,
                    None => volumes.insert(
                        RootDir::open_no_symlinks(&state_dir(dir)?.join("volumes"))
                            .map_err(path_err)?,
                    ),
                };
                let data = vols
                    .resolve_nofollow(&format!("{}/_data", name.as_str()))
                    .map_err(|e| format!("volume {name}: {e}"))?;
                if !data.is_dir() {
                    return Err(format!("volume {name}: _data is not a directory"));
                }
                Some(data)
            }
            MountKind::Bind { source } => {
                Some(crate::paths::open_host_path(source).map_err(path_err)?)
            }
            MountKind::Tmpfs { .. } => None,
        };
        let target = match &source {
            Some(s) if !s.is_dir() => root.create_file(&m.target, 0o644),
            _ => root.mkdir_all(&m.target, 0o755),
        }
        .map_err(|e| format!("mount target {}: {e}", m.target))?;
        target
            .ensure_mountable(root)
            .map_err(|e| format!("mount target {}: {e}", m.target))?;
        match (&m.kind, &source) {
            (MountKind::Tmpfs { options }, _) => {
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if m.read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                mount_on(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    flags,
                    Some(options.as_str()),
                    "tmpfs",
                )?;
            }
            (_, Some(source)) => {
                mount_on(
                    Some(source.proc_path().as_str()),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                    "a volume",
                )?;
                if m.read_only {
                    // The fd still names the directory under the new mount:
                    // resolve again, and make sure it is the mount just made
                    // (same inode as its source) before remounting it.
                    let mounted = root
                        .resolve(&m.target)
                        .map_err(|e| format!("mount target {}: {e}", m.target))?;
                    let same = match (mounted.stat(), source.stat()) {
                        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
                        _ => false,
                    };
                    if !same {
                        return Err(format!(
                            "mount target {} changed while it was mounted",
                            m.target
                        ));
                    }
                    mount_on(
                        None,
                        &mounted,
                        None,
                        MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT
                            | MsFlags::MS_RDONLY
                            | MsFlags::MS_REC,
                        None,
                        "a read-only volume",
                    )?;
                }
            }
            (_, None) => return Err(format!("mount {}: no source", m.target)),
        }
    }
    Ok(())
}
