//! `exec`: a command run in a running container by the exec helper
//! (`rsup-exec`, see [`crate::process::exec`]), which joins the
//! container's namespaces and cgroup; its output is collected, capped.

use std::time::Duration;

use super::Containers;
use super::entry::{ContainerState, Entry};
use crate::bounds;
use crate::cgroups::Manager;
use crate::error::Error;
use crate::names::{ContainerRef, quote};
use crate::process::exec::ExecSpec;

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
        let req_timeout = req.timeout;
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
        let timeout = req_timeout.unwrap_or(Duration::from_secs(3600 * 24));
        self.inner.backend.exec(spec, timeout).await
    }
}
