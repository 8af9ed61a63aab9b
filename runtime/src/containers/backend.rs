//! The seam between the containers service and the kernel: what runs a
//! container's processes ([`Backend`]). [`LinuxBackend`] is the real one
//! (its cgroup, the shim and the init through [`crate::process`], pidfds);
//! the unit tests drive the service's lifecycle (restarts, backoff,
//! supervisors, health) on a fake one, under tokio's paused clock.
//!
//! Everything else a start does (the network sandbox, published ports,
//! shifted lower dirs) stays in the service: a container without networks,
//! ports or a user namespace needs none of it.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};

use super::entry::{Entry, ExitInfo, Init, Status};
use super::exec::ExecOutput;
use crate::cgroups::{AnyManager, Limits, Manager};
use crate::error::{Error, SpawnError};
use crate::lifecycle::state::Pids;
use crate::process::exec::{EXEC_ARG, ExecSpec};
use crate::{process, store, sys};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Output kept of an exec (per stream).
const MAX_OUTPUT: usize = 1 << 20;

/// A run that started (or was found running at rsupd's start).
pub(crate) struct Launched {
    pub(crate) pids: Pids,
    /// The cgroup's OOM-kill counter when it started.
    pub(crate) oom_base: u64,
    /// Its init, while it runs (`None`: re-adopted, but the init is gone).
    pub(crate) init: Option<Arc<dyn Init>>,
    /// Resolves once the run has ended, with the exit its shim recorded
    /// (`None`: it recorded none).
    pub(crate) ended: BoxFuture<'static, Option<ExitInfo>>,
}

/// What runs a container's processes.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Starts a run of `entry` with `limits` (its cgroup made and
    /// limited, the shim and the init started); `record` gets the pids
    /// before the command runs and fails the start if it cannot record
    /// them. On error nothing of the run is left.
    fn spawn(
        &self,
        entry: &Arc<Entry>,
        limits: Limits,
        record: Box<dyn FnOnce(Pids) -> Result<(), String> + Send>,
    ) -> BoxFuture<'static, Result<Launched, Error>>;

    /// The run recorded in `status`, if its shim still runs (at rsupd's
    /// start).
    fn adopt(&self, name: &str, dir: &Path, status: &Status) -> Option<Launched>;

    /// Runs a command in the running container; `None` timeout: a day.
    fn exec(
        &self,
        spec: ExecSpec,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ExecOutput, Error>>;
}

/// The kernel's: cgroups, the shim binary, pidfds.
pub(crate) struct LinuxBackend {
    shim_exe: PathBuf,
    cgroups: Option<Arc<AnyManager>>,
}

impl LinuxBackend {
    pub(crate) fn new(shim_exe: PathBuf, cgroups: Option<Arc<AnyManager>>) -> LinuxBackend {
        LinuxBackend { shim_exe, cgroups }
    }
}

/// An init signalled through its pidfd.
struct Pidfd(OwnedFd);

impl Init for Pidfd {
    fn signal(&self, sig: i32) -> nix::Result<()> {
        sys::pidfd_send_signal(&self.0, sig)
    }
}

/// Waits for the shim behind `shim_pidfd` to end, reaps it if it is our
/// child, and reads the exit it recorded in `dir`.
fn ended(
    name: String,
    shim_pid: i32,
    shim_pidfd: OwnedFd,
    dir: PathBuf,
) -> BoxFuture<'static, Option<ExitInfo>> {
    Box::pin(async move {
        match sys::async_pidfd(shim_pidfd) {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(e) => warn!(container = %name, error = %e, "cannot watch the shim; polling"),
        }
        // Reap the shim if it is our child (it is not after a re-adoption).
        let shim = nix::unistd::Pid::from_raw(shim_pid);
        while let Ok(WaitStatus::StillAlive) = waitpid(shim, Some(WaitPidFlag::WNOHANG)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        store::read_json(&dir.join("exit.json")).unwrap_or(None)
    })
}

impl Backend for LinuxBackend {
    fn spawn(
        &self,
        entry: &Arc<Entry>,
        limits: Limits,
        record: Box<dyn FnOnce(Pids) -> Result<(), String> + Send>,
    ) -> BoxFuture<'static, Result<Launched, Error>> {
        let cg = self.cgroups.clone();
        let exe = self.shim_exe.clone();
        let id = entry.id.clone();
        let name = entry.spec.name.clone();
        let dir = entry.dir.clone();
        let privileged = entry.spec.security.privileged;
        Box::pin(async move {
            let (d, n) = (dir.clone(), name.clone());
            let started = tokio::task::spawn_blocking(move || {
                let mut oom_base = 0;
                if let Some(cg) = &cg {
                    cg.create(&id)
                        .and_then(|()| cg.restrict_devices(&id, privileged))
                        .and_then(|()| cg.apply(&id, &limits))
                        .map_err(|e| SpawnError::Setup(format!("cgroup: {e}")))?;
                    oom_base = cg.stats(&id).map(|s| s.oom_kills).unwrap_or(0);
                }
                // On v2 the init is created in its cgroup, not moved there.
                let into = cg.as_ref().and_then(|cg| cg.clone_into_dir(&id));
                // On error the shim and its init are killed and reaped, and
                // their pidfds closed, by process::start.
                let mut record = Some(record);
                let started = process::start(&exe, &d, into.as_deref(), |s| {
                    debug!(
                        container = %id,
                        init = s.init_pid,
                        in_cgroup = s.init_in_cgroup,
                        "init ready"
                    );
                    if let Some(cg) = &cg {
                        let placed = if s.init_in_cgroup {
                            cg.add_created_process(&id, s.init_pid)
                        } else {
                            cg.add_process(&id, s.init_pid)
                        };
                        placed.map_err(|e| format!("cgroup: {e}"))?;
                    }
                    // Record the processes before the command runs: an
                    // rsupd that dies from here on finds and re-adopts them
                    // instead of starting a second instance.
                    let record = record.take().ok_or("recorded twice")?;
                    record(s.pids())
                })?;
                Ok::<_, SpawnError>((started, oom_base))
            })
            .await
            .map_err(|e| Error::FailedPrecondition(format!("start task failed: {e}")))?;
            let (s, oom_base) = started.map_err(|source| Error::Spawn {
                container: n.clone(),
                source,
            })?;
            Ok(Launched {
                pids: s.pids(),
                oom_base,
                init: Some(Arc::new(Pidfd(s.init_pidfd))),
                ended: ended(n, s.shim_pid, s.shim_pidfd, dir),
            })
        })
    }

    fn adopt(&self, name: &str, dir: &Path, status: &Status) -> Option<Launched> {
        let (shim_fd, init_fd) = super::entry::adopt(status)?;
        Some(Launched {
            pids: status.pids(),
            oom_base: status.oom_kills_at_start,
            init: init_fd.map(|fd| Arc::new(Pidfd(fd)) as Arc<dyn Init>),
            ended: ended(
                name.to_string(),
                status.shim_pid,
                shim_fd,
                dir.to_path_buf(),
            ),
        })
    }

    fn exec(
        &self,
        spec: ExecSpec,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ExecOutput, Error>> {
        let exe = self.shim_exe.clone();
        Box::pin(async move {
            let json = serde_json::to_string(&spec)
                .map_err(|e| Error::FailedPrecondition(format!("exec spec: {e}")))?;
            let mut child = tokio::process::Command::new(&exe)
                .arg0("rsup-exec")
                .arg(EXEC_ARG)
                .arg(json)
                .env_clear()
                .envs(crate::process::helper_env())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::FailedPrecondition(format!("starting the exec helper: {e}")))?;
            let (out, err) = (child.stdout.take(), child.stderr.take());
            let run = async {
                let (stdout, stderr, status) =
                    tokio::join!(read_capped(out), read_capped(err), child.wait());
                (stdout, stderr, status)
            };
            match tokio::time::timeout(timeout, run).await {
                Ok((stdout, stderr, status)) => {
                    let status = status.map_err(|e| {
                        Error::FailedPrecondition(format!("waiting for the exec helper: {e}"))
                    })?;
                    use std::os::unix::process::ExitStatusExt;
                    let exit_code = status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                    Ok(ExecOutput {
                        exit_code,
                        stdout,
                        stderr,
                        timed_out: false,
                    })
                }
                Err(_) => Ok(ExecOutput {
                    exit_code: -1,
                    timed_out: true,
                    ..Default::default()
                }),
            }
        })
    }
}

async fn read_capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(r) = r {
        let _ = r.take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
    }
    out
}
