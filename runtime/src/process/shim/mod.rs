//! The shim and the container init: the single-threaded side of
//! [`crate::process`].
//!
//! Both run in processes that have exactly one thread (the shim checks), so
//! they may fork, allocate and take locks freely. Nothing here runs inside
//! `rsupd` itself.
//!
//! * this file: the shim (`rsup-shim __rsup-shim DIR`): its pipes, the fork of
//!   the init, the id maps, the handshake with rsupd on its stdin/stdout
//!   ([`Report`] lines) and with the init on the status pipe;
//! * [`status`]: the status pipe's lines;
//! * [`output`]: the command's output into `container.log` while it runs;
//! * [`init`]: the container's PID 1;
//! * [`setup`]: the container's root, built in named steps behind
//!   [`crate::sys::setup::SetupSys`];
//! * [`command`]: the child that execs the command.
//!
//! Invariants: the shim reports exactly one of `error`, or `ready` then
//! `started` or `error`, to rsupd; after an error it kills and reaps the
//! init it forked. Its failures and the init's are typed ([`ShimError`],
//! [`SetupError`]) and reach rsupd as their one-line messages.

mod command;
mod init;
mod output;
mod setup;
mod status;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, pipe2};

pub use setup::{SetupError, Step};

use super::{ExitInfo, Report};
use crate::logs::{DROPPED_FILE, DropCounter, LogWriter};
use crate::spec::ContainerSpec;
use crate::store::{self, StoreError};
use crate::sys;
use crate::sys::setup::LinuxSetup;
use status::{Status, StatusReader};

/// Why the shim could not start (or keep track of) a container's command.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: Errno },
    #[error("the shim must be single-threaded")]
    NotSingleThreaded,
    #[error("{0}")]
    OtherBuild(String),
    #[error("{0}")]
    Config(#[source] StoreError),
    #[error("config.json is missing")]
    NoConfig,
    #[error("container.log: {0}")]
    Log(#[source] std::io::Error),
    /// The shim's part of the setup (the lower layers).
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("writing {path}: {source}")]
    IdMap {
        path: String,
        source: std::io::Error,
    },
    /// The init closed its status pipe (died) at the point `when` says.
    #[error("the container init died {when}")]
    InitDied { when: &'static str },
    /// What the init reported: its setup failed, or the command could not
    /// be run (then with Docker's exit code, 126 or 127).
    #[error("{message}")]
    Init {
        message: String,
        exit_code: Option<i32>,
    },
    /// A named step of the init's setup failed.
    #[error("{message}")]
    InitSetup { step: Step, message: String },
    #[error("rsupd went away before the start")]
    DaemonGone,
    #[error("lost the container init: {0}")]
    LostInit(String),
    #[error("{0}")]
    ExitFile(#[source] StoreError),
}

impl ShimError {
    /// The exit code to record for the container when its command could not
    /// be run (Docker's 126 and 127).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ShimError::Init { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    /// The setup step that failed, if one did (in the shim or the init).
    pub fn step(&self) -> Option<Step> {
        match self {
            ShimError::Setup(e) => Some(e.step()),
            ShimError::InitSetup { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// A status line of the init that is not the one expected (`None`: the
    /// pipe closed; the init died `when`).
    fn unexpected(line: Option<Status>, when: &'static str) -> ShimError {
        match line {
            None => ShimError::InitDied { when },
            Some(Status::SetupError { step, message }) => ShimError::InitSetup { step, message },
            Some(Status::Error(message)) => ShimError::Init {
                message,
                exit_code: None,
            },
            Some(Status::ExecError { code, message }) => ShimError::Init {
                message,
                exit_code: (code != 0).then_some(code),
            },
            Some(other) => ShimError::Init {
                message: other.line(),
                exit_code: None,
            },
        }
    }
}

fn sys_err(what: &'static str) -> impl FnOnce(Errno) -> ShimError {
    move |source| ShimError::Sys { what, source }
}

/// Entry point of `rsup-shim __rsup-shim DIR` (or of rsupd in that mode). Returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            let message = e.to_string();
            eprintln!("rsup-shim {}: {message}", dir.display());
            report(&Report::Error {
                message,
                exit_code: e.exit_code(),
                step: e.step().map(|s| s.token().to_string()),
            });
            1
        }
    }
}

fn report(r: &Report) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))
}

fn run(dir: &Path) -> Result<(), ShimError> {
    // First thing: this binary is rsupd's, and the init we fork (which never
    // execs) is the container's PID 1: no container process may open its
    // /proc/<pid>/exe or ptrace it. The init inherits the flag; the
    // command's execve resets it.
    sys::set_non_dumpable().map_err(sys_err("PR_SET_DUMPABLE"))?;
    // Its name in ps and in the kernel's events, whichever binary runs it
    // (an exec through `/proc/self/fd/N` would be called "N").
    let _ = sys::set_name("rsup-shim");
    super::enter_helper().map_err(ShimError::OtherBuild)?;
    // rsupd runs with umask 0077; what the init makes for the container
    // (/etc/hosts, mount targets, ...) and the command get runc's 0022.
    // rsup's own files here are created with explicit modes.
    sys::set_umask(0o022);
    // Our own session: a signal to rsupd's process group or the loss of its
    // terminal does not reach the containers.
    let _ = nix::unistd::setsid();
    if sys::thread_count() != 1 {
        return Err(ShimError::NotSingleThreaded);
    }
    let spec: ContainerSpec = store::read_json(&dir.join("config.json"))
        .map_err(ShimError::Config)?
        .ok_or(ShimError::NoConfig)?;
    let mut log = LogWriter::open(&dir.join("container.log"), spec.log)
        .map_err(ShimError::Log)?
        .with_drop_counter(DropCounter::open(&dir.join(DROPPED_FILE)));
    let _ = std::fs::remove_file(dir.join("exit.json"));

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let lowers = setup::lower_dirs(&LinuxSetup, &spec, dir)?;
    let (st_r, st_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (map_r, map_w) = pipe()?;

    // The container's cgroup (v2), to create the init in: see
    // `Manager::clone_into_dir`.
    let cgroup = std::env::var_os(super::CGROUP_ENV).and_then(|path| {
        nix::fcntl::open(
            path.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .inspect_err(|e| eprintln!("rsup-shim: opening the cgroup {path:?}: {e}"))
        .ok()
    });

    // The init is PID 1 of a new PID namespace: clone3 makes both at once,
    // or unshare and fork do. (Not unshare and then clone3: a clone3 that
    // fails in the cgroup's checks, which come after the namespace's first
    // pid was allocated, leaves that namespace unable to take any pid.)
    let fork_in_new_pid_ns = || -> Result<ForkResult, ShimError> {
        unshare(CloneFlags::CLONE_NEWPID).map_err(sys_err("unshare(CLONE_NEWPID)"))?;
        // SAFETY: the shim is single-threaded (checked above).
        unsafe { sys::fork() }.map_err(sys_err("fork"))
    };
    let (forked, in_cgroup) = match &cgroup {
        Some(fd) if sys::raw_clone_is_safe() => {
            // SAFETY: the shim is single-threaded (checked above), and the
            // init relies on no cached thread id (see fork_into_cgroup;
            // raw_clone_is_safe checks the C library).
            match unsafe { sys::fork_into_cgroup(fd.as_fd()) } {
                Ok(forked) => (forked, true),
                Err(e) => {
                    eprintln!(
                        "rsup-shim: clone3 into the cgroup: {e}; rsupd moves the init instead"
                    );
                    (fork_in_new_pid_ns()?, false)
                }
            }
        }
        _ => (fork_in_new_pid_ns()?, false),
    };
    drop(cgroup);
    let init_pid = match forked {
        ForkResult::Child => {
            drop((out_r, err_r, st_r, go_w, map_w));
            let pipes = init::InitPipes {
                out_w,
                err_w,
                st_w,
                go_r,
                map_r,
            };
            let code = init::main(&spec, dir, &lowers, pipes);
            sys::exit_now(code);
        }
        ForkResult::Parent { child } => child,
    };
    drop((out_w, err_w, st_w, go_r, map_r));
    let mut status = StatusReader::new(File::from(st_r));
    if let Err(e) = handshake(&spec, init_pid, in_cgroup, &mut status, map_w, go_w) {
        let _ = sys::kill(init_pid.as_raw(), libc::SIGKILL);
        let _ = waitpid(init_pid, None);
        return Err(e);
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

    let mut exit = output::pump(&mut log, out_r, err_r, &mut status);
    if let Some(why) = status.violation() {
        // Someone else wrote into the pipe (a container that opened the
        // init's fd through /proc): believe only the init's own status.
        eprintln!("rsup-shim: status pipe: {why}; the exit is taken from the init's wait status");
        exit = None;
    }
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
        (None, other) => return Err(ShimError::LostInit(format!("{other:?}"))),
    };
    store::write_json(&dir.join("exit.json"), &info).map_err(ShimError::ExitFile)
}

/// From the init's first status line to its `started`: the id maps (with a
/// user namespace), `ready` to rsupd, rsupd's `go` to the init.
fn handshake(
    spec: &ContainerSpec,
    init_pid: Pid,
    in_cgroup: bool,
    status: &mut StatusReader,
    map_w: OwnedFd,
    go_w: OwnedFd,
) -> Result<(), ShimError> {
    let mut line = status.next();
    if let Some(map) = &spec.userns {
        // The init is in its new user namespace and waits for its maps: we
        // write them from the host's user namespace, where we hold
        // CAP_SETUID and CAP_SETGID (so no setgroups "deny" is needed).
        if line != Some(Status::Userns) {
            return Err(ShimError::unexpected(line, "during setup"));
        }
        write_id_maps(init_pid, map)?;
        if File::from(map_w).write_all(b"m").is_err() {
            return Err(ShimError::InitDied {
                when: "before its id maps were set",
            });
        }
        line = status.next();
    } else {
        drop(map_w);
    }
    if line != Some(Status::Ready) {
        return Err(ShimError::unexpected(line, "during setup"));
    }
    report(&Report::Ready {
        shim_pid: std::process::id() as i32,
        init_pid: init_pid.as_raw(),
        in_cgroup,
    });
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    if go.trim() != "go" {
        return Err(ShimError::DaemonGone);
    }
    if File::from(go_w).write_all(b"g").is_err() {
        return Err(ShimError::InitDied {
            when: "before the start",
        });
    }
    match status.next() {
        Some(Status::Started) => {
            report(&Report::Started);
            Ok(())
        }
        other => Err(ShimError::unexpected(other, "at the start")),
    }
}

/// Writes the init's uid and gid maps (from the shim, in the host's user
/// namespace). Each file takes exactly one write.
fn write_id_maps(init: Pid, map: &crate::userns::IdMap) -> Result<(), ShimError> {
    for (file, ranges) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
        let path = format!("/proc/{init}/{file}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(crate::userns::proc_map_text(ranges).as_bytes()))
            .map_err(|source| ShimError::IdMap { path, source })?;
    }
    Ok(())
}
