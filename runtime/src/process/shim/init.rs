//! The container's init: PID 1 of its PID namespace, a fork of the shim
//! that never execs.
//!
//! It builds the container's root ([`super::setup`]), enters its user
//! namespace if it has one, tells the shim `ready` and waits for `go`
//! (rsupd puts it into its cgroups meanwhile), then forks the command
//! ([`super::command`]), confines itself ([`confine`]: `/dev/null` for
//! stdio, no other host file, only `CAP_KILL`, no_new_privs, seccomp) and
//! only then lets the command go on, forwards every signal it gets to it,
//! reaps every
//! zombie in the container, and exits with the command's status once the
//! command exits (the kernel then kills what is left in the PID namespace).
//! Everything it has to say goes to the shim on the status pipe
//! ([`super::status`]).
//!
//! Invariants: it dies with the shim (parent-death signal), since nobody
//! else would record the container's exit; signals from outside the PID
//! namespace reach it because it has a handler for each, and it collects
//! them with `sigwait` (all blocked). No code of the container runs while
//! the init holds more than `CAP_KILL` or any host file: the command's
//! process does its setup meanwhile but waits on a release pipe right before
//! its execve until the init is confined, because a container process with
//! `CAP_SYS_PTRACE` can attach to PID 1 and run code as it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::sys::stat::{Mode, SFlag, fstat, major, minor};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, pipe2};

use super::setup::{self, Setup, SetupError, Step};
use super::status::Status;
use crate::seccomp::Filter;
use crate::spec::ContainerSpec;
use crate::sys;
use crate::sys::setup::LinuxSetup;

/// The init's ends of the pipes to the shim.
pub(super) struct InitPipes {
    /// The command's stdout and stderr.
    pub out_w: OwnedFd,
    pub err_w: OwnedFd,
    /// Status lines to the shim.
    pub st_w: OwnedFd,
    /// One byte: start the command.
    pub go_r: OwnedFd,
    /// One byte: the id maps are written.
    pub map_r: OwnedFd,
}

/// Body of the container's init. Returns its exit code.
pub(super) fn main(spec: &ContainerSpec, dir: &Path, lowers: &[PathBuf], pipes: InitPipes) -> i32 {
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
    // shim.log names the step; rsupd gets the message as it always has.
    let fail = |st: &mut File, e: SetupError| {
        eprintln!("rsup-init: step {} failed: {e}", e.step());
        let _ = Status::SetupError {
            step: e.step(),
            message: e.to_string(),
        }
        .send(st);
        1
    };
    let linux = LinuxSetup;
    if let Err(e) = Setup::new(&linux, spec, dir).build(lowers) {
        return fail(&mut st, e);
    }
    if spec.userns.is_some() {
        let wait_for_maps = || {
            Status::Userns
                .send(&mut st)
                .map_err(|source| SetupError::Io {
                    step: Step::UserNamespace,
                    what: "status pipe".into(),
                    source,
                })?;
            let mut b = [0u8; 1];
            match File::from(map_r).read(&mut b) {
                Ok(1) => Ok(()),
                _ => Err(SetupError::Refused {
                    step: Step::UserNamespace,
                    message: "the shim did not write the id maps".into(),
                }),
            }
        };
        if let Err(e) = setup::enter_userns(&linux, wait_for_maps) {
            return fail(&mut st, e);
        }
    } else {
        drop(map_r);
    }
    let _ = Status::Ready.send(&mut st);
    // Compiled while rsupd places us into the container's cgroups (where
    // it waits), so off the start's path; an error is reported after `go`,
    // where rsupd expects one.
    let filter = spec.security.init_filter();
    let mut b = [0u8; 1];
    if !matches!(File::from(go_r).read(&mut b), Ok(1)) {
        return 1;
    }
    let filter = match filter {
        Ok(f) => f,
        Err(message) => {
            return fail(
                &mut st,
                SetupError::Refused {
                    step: Step::Confine,
                    message,
                },
            );
        }
    };
    // rsupd has put us into the container's cgroups.
    if let Err(e) = setup::enter_cgroupns(&linux) {
        return fail(&mut st, e);
    }
    // With the default profile the command's filter is the init's: it is
    // installed once, here, and the command inherits it (see
    // SecuritySpec::command_inherits_init_filter). Without a program there
    // is nothing to inherit: the command then applies its own setting.
    let inherited = spec.security.command_inherits_init_filter() && filter.is_some();
    if inherited && let Some(Err(message)) = filter.as_ref().map(|f| f.install()) {
        return fail(
            &mut st,
            SetupError::Refused {
                step: Step::Confine,
                message,
            },
        );
    }

    // Block every signal (sigwait collects them) and give each a handler, so
    // that signals from outside the PID namespace are delivered to us.
    let all = SigSet::all();
    let _ = all.thread_block();
    sys::install_noop_handlers();

    let start_err = |what: &'static str| {
        move |source| SetupError::Sys {
            step: Step::Start,
            what: what.into(),
            source,
        }
    };
    let (exec_r, exec_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&mut st, start_err("pipe")(e)),
    };
    let (release_r, release_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&mut st, start_err("pipe")(e)),
    };
    // SAFETY: the init is a fork of the single-threaded shim: single-threaded.
    let cmd = match unsafe { sys::fork() } {
        Ok(ForkResult::Child) => {
            drop((exec_r, st, release_w));
            // The command's setup runs while the init confines itself; it
            // waits for the release right before its execve, so no code of
            // the container runs before the init is confined.
            super::command::exec(spec, out_w, err_w, exec_w, release_r, inherited)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return fail(&mut st, start_err("fork")(e)),
    };
    drop((out_w, err_w, exec_w, release_r));
    let keep = [st.as_raw_fd(), exec_r.as_raw_fd(), release_w.as_raw_fd()];
    let filter = if inherited { None } else { filter.as_ref() };
    let confined = confine(spec, &keep, filter).and_then(|()| {
        match File::from(release_w).write_all(b"r") {
            // The command failed its setup and exited: its report follows.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => Ok(()),
            r => r.map_err(|source| SetupError::Io {
                step: Step::Confine,
                what: "releasing the command".into(),
                source,
            }),
        }
    });
    if let Err(e) = confined {
        // The command's process exits on its own (its release pipe closed).
        let _ = waitpid(cmd, None);
        return fail(&mut st, e);
    }
    let mut why = String::new();
    let _ = File::from(exec_r).read_to_string(&mut why);
    if !why.is_empty() {
        // "CODE MESSAGE" from the child; one line to the shim.
        let (code, message) = why
            .split_once(' ')
            .and_then(|(c, m)| Some((c.parse::<i32>().ok()?, m)))
            .unwrap_or((0, why.as_str()));
        let _ = Status::ExecError {
            code,
            message: message.to_string(),
        }
        .send(&mut st);
        let _ = waitpid(cmd, None);
        return if code == 0 { 127 } else { code };
    }
    let _ = Status::Started.send(&mut st);
    // From here the container's processes run, and with CAP_SYS_PTRACE they
    // can open this pipe through /proc/1/fd and fill it: the exit line must
    // not block the init on a full pipe (the shim then takes the exit from
    // the init's wait status).
    let _ = nix::fcntl::fcntl(&st, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    reap(&all, cmd, &mut st)
}

/// Makes the init worth nothing to a container process that ptraces it
/// (PID 1 in the container's PID namespace, and with `--cap-add SYS_PTRACE`
/// container root may attach to it: non-dumpable does not stop a tracer
/// with `CAP_SYS_PTRACE`): stdin, stdout and stderr become the container's
/// `/dev/null` (they were rsupd's pipes and `shim.log`), every other fd but
/// `keep` (the status pipe to the shim, the command's exec and release
/// pipes: close-on-exec pipes between rsup's own processes) is closed
/// (`container.log` and its drop counter were among them), and its
/// capabilities, no_new_privs and seccomp filter become what
/// [`crate::security::SecuritySpec::confine_init`] says. After this the
/// init can only read and write its two pipes, wait for children and
/// signal processes of its own PID namespace.
fn confine(
    spec: &ContainerSpec,
    keep: &[RawFd],
    filter: Option<&Filter>,
) -> Result<(), SetupError> {
    let err = |what: &'static str| {
        move |source| SetupError::Sys {
            step: Step::Confine,
            what: what.into(),
            source,
        }
    };
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(err("open /dev/null"))?;
    let st = fstat(&null).map_err(err("fstat /dev/null"))?;
    let is_null = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
        && (major(st.st_rdev), minor(st.st_rdev)) == (1, 3);
    if !is_null {
        return Err(SetupError::Refused {
            step: Step::Confine,
            message: "the container's /dev/null is not the null device".into(),
        });
    }
    nix::unistd::dup2_stdin(&null)
        .and_then(|_| nix::unistd::dup2_stdout(&null))
        .and_then(|_| nix::unistd::dup2_stderr(&null))
        .map_err(err("dup2 /dev/null"))?;
    drop(null);
    sys::close_inherited_fds(keep).map_err(err("close_range"))?;
    spec.security
        .confine_init(filter)
        .map_err(|message| SetupError::Refused {
            step: Step::Confine,
            message,
        })
}

/// Forwards signals to the command and reaps zombies until the command
/// exits; reports its exit and returns the init's exit code.
fn reap(all: &SigSet, cmd: Pid, st: &mut File) -> i32 {
    loop {
        let sig = match sys::sigwait(all) {
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
                    let _ = Status::Exit { code, signal: 0 }.send(st);
                    return code;
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == cmd => {
                    let code = 128 + s as i32;
                    let _ = Status::Exit {
                        code,
                        signal: s as i32,
                    }
                    .send(st);
                    return code;
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {} // another zombie reaped
            }
        }
    }
}
