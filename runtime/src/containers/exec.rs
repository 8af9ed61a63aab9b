//! `exec`: a command run in a running container by the exec helper
//! (`rsup-exec`, see [`crate::process::exec`]), which joins the
//! container's namespaces and cgroup; its output is collected, capped.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::Containers;
use super::entry::{ContainerState, Entry};
use crate::bounds;
use crate::cgroups::Manager;
use crate::error::Error;
use crate::names::{ContainerRef, quote};
use crate::process::exec::{EXEC_ARG, ExecSpec};

/// Output kept of an exec (per stream).
const MAX_OUTPUT: usize = 1 << 20;

/// A command to run in a running container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Extra KEY=VALUE pairs over the container's environment.
    pub env: Vec<String>,
    /// "uid[:gid]"; empty: the container's user.
    pub user: String,
    /// Empty: the container's working directory.
    pub workdir: String,
    pub timeout: Option<Duration>,
}

/// What an exec printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

fn parse_ids(user: &str) -> Option<(u32, u32)> {
    let (u, g) = user.split_once(':').unwrap_or((user, "0"));
    Some((u.parse().ok()?, g.parse().ok()?))
}

async fn read_capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(r) = r {
        let _ = r.take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
    }
    out
}

impl Containers {
    /// Runs a command inside a running container and collects its output.
    pub async fn exec(&self, key: &ContainerRef, req: ExecRequest) -> Result<ExecOutput, Error> {
        if let Some(t) = req.timeout {
            bounds::duration("timeout_ms", t, &bounds::EXEC_TIMEOUT)?;
        }
        let entry = self.find(key)?;
        self.exec_entry(&entry, req).await
    }

    pub(crate) async fn exec_entry(
        &self,
        entry: &Entry,
        req: ExecRequest,
    ) -> Result<ExecOutput, Error> {
        let status = entry.status();
        if status.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                entry.spec.name
            )));
        }
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(Error::InvalidArgument {
                field: "command",
                reason: "a command is required".into(),
            });
        }
        let (uid, gid) = if req.user.is_empty() {
            (entry.spec.user.uid, entry.spec.user.gid)
        } else {
            parse_ids(&req.user).ok_or_else(|| Error::InvalidArgument {
                field: "user",
                reason: format!("{} is not UID[:GID]", quote(&req.user)),
            })?
        };
        let mut env = entry.spec.env.clone();
        for kv in &req.env {
            let Some((k, _)) = kv.split_once('=') else {
                return Err(Error::InvalidArgument {
                    field: "env",
                    reason: format!("{} is not KEY=VALUE", quote(kv)),
                });
            };
            env.retain(|e| e.split_once('=').is_none_or(|(ek, _)| ek != k));
            env.push(kv.clone());
        }
        let spec = ExecSpec {
            init_pid: status.init_pid,
            init_start_time: status.init_start_time,
            cgroup_procs: self
                .inner
                .cgroups
                .as_ref()
                .map(|c| c.procs_files(&entry.id))
                .unwrap_or_default(),
            argv: req.argv,
            env,
            cwd: if req.workdir.is_empty() {
                entry.spec.working_dir.clone()
            } else {
                req.workdir
            },
            uid,
            gid,
            // A user resolved at start is resolved again inside the container.
            user_spec: (req.user.is_empty() && entry.spec.user_at_start)
                .then(|| entry.spec.user_spec.clone()),
            security: entry.spec.security.clone(),
        };
        let json = serde_json::to_string(&spec)
            .map_err(|e| Error::FailedPrecondition(format!("exec spec: {e}")))?;
        let mut child = tokio::process::Command::new(&self.inner.config.shim_exe)
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
        let timeout = req.timeout.unwrap_or(Duration::from_secs(3600 * 24));
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
    }
}
