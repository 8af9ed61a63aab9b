//! Starting container processes from the multi-threaded daemon.
//!
//! # Why this design is safe
//! `rsupd` runs a tokio runtime with many threads. Forking such a process and
//! doing real work in the child (allocating, taking locks, mounting) is
//! undefined behaviour waiting to happen: the child inherits locks held by
//! threads that do not exist in it. So the daemon never forks by hand. It
//! starts a helper, the **shim**, with `std::process::Command` (which only
//! runs async-signal-safe code between fork and exec): `rsup-shim
//! __rsup-shim DIR`, a small binary beside rsupd's (or rsupd's own binary,
//! `/proc/self/exe`, in that mode when it is missing; the daemon decides,
//! see `RuntimeConfig::shim_exe`). The shim is a fresh, single-threaded
//! process: it may fork freely.
//!
//! ```text
//! rsupd ──Command──▶ shim (host namespaces, new session)
//!                     │ unshare(CLONE_NEWPID); fork (on cgroup v2: clone3
//!                     │ right into the container's cgroup)
//!                     ▼
//!                    init = PID 1 (new PID, MNT, UTS, IPC, NET namespaces)
//!                     │ overlay root, /proc, /dev, /sys ro, pivot_root, hostname, lo up
//!                     │ [--userns: unshare(CLONE_NEWUSER); the shim writes the id maps;
//!                     │  setresuid/setresgid(0) inside]
//!                     │ waits for "go" (rsupd has put it into its cgroups,
//!                     │ or only into the extra ones when it was created in it);
//!                     │ unshare(CLONE_NEWCGROUP); fork; confines itself
//!                     │ (stdio /dev/null, host fds closed, caps: KILL only,
//!                     │ no_new_privs, seccomp), then releases the command
//!                     ▼
//!                    command = PID 2 (uid/gid, cwd, env; execve)
//! ```
//!
//! * The **init** (rsup's own code, PID 1) reaps every zombie in the
//!   container, forwards every signal it gets to the command, and exits with
//!   the command's status once the command exits (the kernel then kills what
//!   is left in the PID namespace). So the command is never PID 1 and needs
//!   no signal handling of its own.
//! * The **shim** holds the read ends of the command's stdout and stderr and
//!   writes them to `container.log`; it reaps the init and writes `exit.json`.
//!   It runs in its own session, so it and the container survive a crash or
//!   restart of `rsupd`; a new `rsupd` re-adopts it through a pidfd.
//! * Start is a handshake over the shim's stdin/stdout: the shim reports
//!   `ready` (namespaces and mounts done) with the pids, the daemon opens
//!   pidfds on both (they cannot have exited yet: the init is waiting) and
//!   writes `go`, the shim reports `started` or why the command could not
//!   run. The init looks the command up only then, inside the container
//!   after every mount (a volume or bind mount may provide it), and a
//!   missing one fails the start with Docker's exit code 127 (126 when it
//!   is not executable), which is recorded as the container's exit code.
//!
//! Every fd is opened close-on-exec, so no container's pipes leak into
//! another's helper.
//!
//! The shim (and so the init, which is a fork of it and never execs) and the
//! exec helper make themselves non-dumpable first thing: they run rsupd's
//! binary inside or next to the container, and a dumpable one would let a
//! container process open `/proc/<pid>/exe` and overwrite rsupd (runc's
//! CVE-2019-5736). The command's `execve` makes it dumpable again. They also
//! set the umask to runc's 0022 (rsupd itself runs with 0077): the command
//! and what the init makes inside the container get the modes they would
//! get under runc; rsup's own files are created with explicit modes.

pub mod exec;
pub mod shim;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub use crate::error::SpawnError;
pub use crate::lifecycle::state::ExitInfo;
use crate::sys;
use exec::EXEC_ARG;

/// This build's fingerprint (see runtime/build.rs): rsupd passes it to
/// every shim and exec helper in [`BUILD_ENV`], and they refuse to run
/// for a daemon of another build; `rsup-shim __rsup-build-id` prints it.
pub const BUILD_ID: &str = env!("RSUP_BUILD_ID");

/// The environment variable with rsupd's [`BUILD_ID`].
pub const BUILD_ENV: &str = "RSUP_BUILD";

/// argv\[1\] that makes `rsup-shim` print its [`BUILD_ID`].
pub const BUILD_ID_ARG: &str = "__rsup-build-id";

/// The helper modes of rsup's binaries, chosen by argv\[1\]: the shim
/// (`SHIM_ARG DIR`), the exec helper (`EXEC_ARG JSON`) and the build id
/// (`BUILD_ID_ARG`). `None` when argv\[1\] names none of them (rsupd then
/// starts as the daemon); otherwise the exit code. Call it first thing,
/// single-threaded.
pub fn helper_main(mut args: std::env::ArgsOs) -> Option<u8> {
    let mode = args.nth(1)?;
    let operand = args.next();
    let code = if mode == BUILD_ID_ARG {
        println!("{BUILD_ID}");
        0
    } else if mode == EXEC_ARG {
        let json = operand
            .and_then(|a| a.into_string().ok())
            .unwrap_or_default();
        u8::try_from(exec::main(&json)).unwrap_or(126)
    } else if mode == SHIM_ARG {
        let Some(dir) = operand else {
            eprintln!("usage: {SHIM_ARG} DIR");
            return Some(2);
        };
        u8::try_from(shim::main(Path::new(&dir))).unwrap_or(1)
    } else {
        return None;
    };
    Some(code)
}

/// First thing in the shim and the exec helper: refuses an rsupd of
/// another build ([`same_build`]) and puts back the open-file limit rsupd
/// started with ([`restore_nofile_limit`]).
pub(crate) fn enter_helper() -> Result<(), String> {
    same_build()?;
    restore_nofile_limit();
    Ok(())
}

/// What rsupd gives every shim and exec helper in an emptied environment:
/// its [`BUILD_ID`] and, when it raised its own, the open-file limit it
/// started with.
pub(crate) fn helper_env() -> impl Iterator<Item = (&'static str, String)> {
    let nofile = CHILD_NOFILE.get().map(|n| (NOFILE_ENV, n.to_string()));
    std::iter::once((BUILD_ENV, BUILD_ID.to_owned())).chain(nofile)
}

/// Whether the caller was started by an rsupd of this build.
fn same_build() -> Result<(), String> {
    match std::env::var(BUILD_ENV) {
        Ok(id) if id == BUILD_ID => Ok(()),
        Ok(id) => Err(format!(
            "started by an rsupd of another build ({id}, this is {BUILD_ID}): install rsupd and rsup-shim together"
        )),
        Err(_) => Err(format!(
            "started without {BUILD_ENV} (by an rsupd older than this rsup-shim?): install rsupd and rsup-shim together"
        )),
    }
}

/// The environment variable with the soft `RLIMIT_NOFILE` that rsupd had
/// when it started, which the shim and the exec helper put back before
/// anything of the container runs (see [`raise_nofile_limit`]).
pub const NOFILE_ENV: &str = "RSUP_NOFILE";

/// The soft `RLIMIT_NOFILE` rsupd started with, once it raised its own.
static CHILD_NOFILE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Raises the daemon's soft `RLIMIT_NOFILE` to its hard limit (as Go
/// programs and dockerd do): rsupd holds descriptors per running container
/// (pidfds of the shim and the init), so a soft limit of 1024, a shell's
/// default, would stop it at a few hundred containers. Containers keep the
/// limit rsupd started with: the shim and the exec helper set it back
/// ([`NOFILE_ENV`]). Returns `(before, now)`. Call it once, at start.
pub fn raise_nofile_limit() -> nix::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        let _ = CHILD_NOFILE.set(soft);
    }
    Ok((soft, hard))
}

/// In the shim and the exec helper: puts back the soft `RLIMIT_NOFILE`
/// rsupd started with (a value above the hard limit is not possible and
/// is left alone).
fn restore_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Some(want) = std::env::var(NOFILE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && want <= hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
    }
}

/// The environment variable that names the container's cgroup directory
/// to the shim, when the init can be created right in it (see
/// [`crate::cgroups::Manager::clone_into_dir`]).
pub const CGROUP_ENV: &str = "RSUP_CGROUP";

/// argv\[1\] that makes a shim of `rsup-shim` (or of rsupd's binary).
pub const SHIM_ARG: &str = "__rsup-shim";

/// What the shim tells the daemon on its stdout, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    Ready {
        shim_pid: i32,
        init_pid: i32,
        /// The init was created in the cgroup named by [`CGROUP_ENV`]
        /// (absent from an older shim: it was not).
        #[serde(default)]
        in_cgroup: bool,
    },
    Started,
    Error {
        message: String,
        /// The container's exit code when its command could not be run
        /// (126: not executable, 127: not found), as Docker records it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The setup step that failed ([`crate::error::Step::token`]), when
        /// one of them did (absent from an older shim).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
}

/// A started container: the shim and the init, each with a pidfd.
#[derive(Debug)]
pub struct Started {
    pub shim_pid: i32,
    pub shim_start_time: u64,
    pub shim_pidfd: OwnedFd,
    pub init_pid: i32,
    pub init_start_time: u64,
    pub init_pidfd: OwnedFd,
    /// The init was created in the cgroup passed to [`start`]; otherwise
    /// `on_ready` must move it there.
    pub init_in_cgroup: bool,
}

impl Started {
    /// The processes as the container's status records them.
    pub fn pids(&self) -> crate::lifecycle::state::Pids {
        crate::lifecycle::state::Pids {
            shim_pid: self.shim_pid,
            shim_start_time: self.shim_start_time,
            init_pid: self.init_pid,
            init_start_time: self.init_start_time,
        }
    }
}

/// Starts the shim for the container in `dir` and runs the handshake.
/// With `cgroup` (a cgroup v2 directory) the shim creates the init in it
/// when the kernel can ([`Started::init_in_cgroup`]). `on_ready(started)`
/// runs while the init waits for "go" (to put it into its cgroups): the
/// command starts only after it succeeded.
/// Blocking: call it from `spawn_blocking`.
pub fn start(
    exe: &Path,
    dir: &Path,
    cgroup: Option<&Path>,
    on_ready: impl FnOnce(&Started) -> Result<(), String>,
) -> Result<Started, SpawnError> {
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join("shim.log"))
        .map_err(|source| SpawnError::Exec {
            exe: exe.display().to_string(),
            source,
        })?;
    let mut command = Command::new(exe);
    command
        .arg0("rsup-shim")
        .arg(SHIM_ARG)
        .arg(dir)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(helper_env());
    if let Some(cgroup) = cgroup {
        command.env(CGROUP_ENV, cgroup);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(shim_log)
        .spawn()
        .map_err(|source| SpawnError::Exec {
            exe: exe.display().to_string(),
            source,
        })?;
    let shim_pid = i32::try_from(child.id()).unwrap_or(0);
    let result = handshake(&mut child, shim_pid, on_ready);
    if result.is_err() {
        // The shim exits on its own once its stdin closes or after an error;
        // make sure, then reap it.
        let _ = child.kill();
        let _ = child.wait();
    }
    // On success the shim lives on; it is reaped by the monitor (waitpid on
    // its pid) once its pidfd says it exited.
    result
}

fn handshake(
    child: &mut std::process::Child,
    shim_pid: i32,
    on_ready: impl FnOnce(&Started) -> Result<(), String>,
) -> Result<Started, SpawnError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SpawnError::ShimLost("no stdout".into()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| SpawnError::ShimLost("no stdin".into()))?;
    let mut lines = BufReader::new(stdout);
    let mut next = || -> Result<Report, SpawnError> {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(SpawnError::ShimLost(status))
            }
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| SpawnError::ShimLost(format!("bad report {line:?}: {e}"))),
        }
    };
    let (init_pid, init_in_cgroup) = match next()? {
        Report::Ready {
            shim_pid: reported,
            init_pid,
            in_cgroup,
        } if reported == shim_pid => (init_pid, in_cgroup),
        Report::Ready {
            shim_pid: reported, ..
        } => {
            return Err(SpawnError::ShimLost(format!(
                "shim says pid {reported}, expected {shim_pid}"
            )));
        }
        Report::Error { message, step, .. } => {
            return Err(
                match step.as_deref().and_then(crate::error::Step::from_token) {
                    Some(step) => SpawnError::Step { step, message },
                    None => SpawnError::Setup(message),
                },
            );
        }
        Report::Started => return Err(SpawnError::ShimLost("started before go".into())),
    };
    // Both processes are alive now: the init waits for "go", the shim waits
    // for us. So the pids cannot have been recycled yet.
    let sysop = |op| move |source| SpawnError::Sys { op, source };
    let shim_pidfd = sys::pidfd_open(shim_pid).map_err(sysop("pidfd_open shim"))?;
    let init_pidfd = sys::pidfd_open(init_pid).map_err(sysop("pidfd_open init"))?;
    let shim_start_time = sys::process_start_time(shim_pid).unwrap_or(0);
    let init_start_time = sys::process_start_time(init_pid).unwrap_or(0);
    let started = Started {
        shim_pid,
        shim_start_time,
        shim_pidfd,
        init_pid,
        init_start_time,
        init_pidfd,
        init_in_cgroup,
    };
    on_ready(&started).map_err(SpawnError::Setup)?;
    stdin
        .write_all(b"go\n")
        .map_err(|e| SpawnError::ShimLost(format!("writing go: {e}")))?;
    match next()? {
        Report::Started => Ok(started),
        Report::Error {
            message, exit_code, ..
        } => Err(SpawnError::Command { message, exit_code }),
        Report::Ready { .. } => Err(SpawnError::ShimLost("ready twice".into())),
    }
}
