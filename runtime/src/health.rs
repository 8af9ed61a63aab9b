//! `exec` into running containers, and health checks built on it.
//!
//! A health check runs its command inside the container every `interval`
//! (through the exec helper, see [`crate::process::exec`]), with Docker's
//! meaning: a check that fails or times out `retries` times in a row makes
//! the container unhealthy; failures during `start_period` do not count, a
//! success makes it healthy at once. With `restart_on_unhealthy` an unhealthy
//! container is killed (SIGKILL), and its restart policy restarts it, as a
//! Kubernetes liveness probe does.

use std::fmt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::cgroups::Manager;
use crate::container::{ContainerState, Entry, Runtime, lock};
use crate::names::{ContainerRef, quote};
use crate::process::exec::{EXEC_ARG, ExecSpec};
use crate::supervise::EventKind;
use crate::{Error, bounds};

/// Output kept of an exec (per stream).
const MAX_OUTPUT: usize = 1 << 20;
/// Output kept of a health check, as Docker does.
const HEALTH_OUTPUT: usize = 4096;

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

/// Where a container's health checks stand (Docker's three states).
/// Persisted in `state.json` and sent over gRPC as its [`as_str`] name.
///
/// [`as_str`]: HealthStatus::as_str
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No check has passed yet and too few have failed to say unhealthy.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed (outside the start period).
    Unhealthy,
}

impl HealthStatus {
    /// Every status, in the order metrics list them.
    pub const ALL: [HealthStatus; 3] = [
        HealthStatus::Starting,
        HealthStatus::Healthy,
        HealthStatus::Unhealthy,
    ];

    /// The name in `state.json`, the API, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of a container, as `ps` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub last_output: String,
    pub last_check: Option<SystemTime>,
}

impl HealthState {
    pub fn starting() -> HealthState {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            last_output: String::new(),
            last_check: None,
        }
    }
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

impl Runtime {
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

    /// Starts the health checker of a container that just started.
    pub(crate) fn spawn_health(&self, entry: &Arc<Entry>) {
        let Some(hc) = entry.spec.health.clone() else {
            return;
        };
        let token = self.inner.shutdown.child_token();
        if let Some(old) = lock(&entry.health_cancel).replace(token.clone()) {
            old.cancel();
        }
        let _ = entry.set_status(|s| s.health = Some(HealthState::starting()));
        let rt = self.clone();
        let entry = entry.clone();
        self.inner.tracker.spawn(async move {
            let started = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(hc.interval) => {}
                    _ = token.cancelled() => return,
                }
                let req = ExecRequest {
                    argv: hc.test.clone(),
                    timeout: Some(hc.timeout),
                    ..Default::default()
                };
                let (ok, output) = match rt.exec_entry(&entry, req).await {
                    Ok(o) if o.timed_out => (false, format!("health check timed out after {:?}", hc.timeout)),
                    Ok(o) => {
                        let mut text = o.stdout;
                        text.extend_from_slice(&o.stderr);
                        text.truncate(HEALTH_OUTPUT);
                        (o.exit_code == 0, String::from_utf8_lossy(&text).into_owned())
                    }
                    Err(e) => (false, e.to_string()),
                };
                if token.is_cancelled() {
                    return;
                }
                let before = entry.status().health.map(|h| h.status);
                let in_start_period = started.elapsed() < hc.start_period;
                let mut after = before;
                let _ = entry.set_status(|s| {
                    let h = s.health.get_or_insert_with(HealthState::starting);
                    h.last_output = output;
                    h.last_check = Some(SystemTime::now());
                    if ok {
                        h.failing_streak = 0;
                        h.status = HealthStatus::Healthy;
                    } else if !in_start_period {
                        h.failing_streak += 1;
                        if h.failing_streak >= hc.retries {
                            h.status = HealthStatus::Unhealthy;
                        }
                    }
                    after = Some(h.status);
                });
                if let Some(after) = after.filter(|a| Some(*a) != before) {
                    info!(container = %entry.spec.name, status = %after, "health status");
                    rt.event(&entry, EventKind::HealthStatus, &[("status", after.to_string())]);
                    if after == HealthStatus::Unhealthy && hc.restart_on_unhealthy {
                        warn!(container = %entry.spec.name, "unhealthy: killing it for its restart policy");
                        let _ = entry.signal(libc::SIGKILL);
                        return;
                    }
                }
            }
        });
    }
}

/// Stops a container's health checker (at exit).
pub(crate) fn stop_health(entry: &Entry) {
    if let Some(t) = lock(&entry.health_cancel).take() {
        t.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_status_names() {
        let names: Vec<&str> = HealthStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["starting", "healthy", "unhealthy"]);
        assert_eq!(HealthStatus::Unhealthy.to_string(), "unhealthy");
        assert_eq!(HealthState::starting().status, HealthStatus::Starting);
    }

    #[test]
    fn health_status_is_persisted_by_its_name() {
        for s in HealthStatus::ALL {
            let json = serde_json::to_string(&s).expect("serialize");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            let back: HealthStatus = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<HealthStatus>("\"Healthy\"").is_err());
    }

    #[test]
    fn health_state_reads_what_earlier_versions_wrote() {
        // state.json's `health` as rsupd wrote it when the status was a string.
        let old = r#"{"status":"unhealthy","failing_streak":3,"last_output":"down\n","last_check":{"secs_since_epoch":1700000000,"nanos_since_epoch":5}}"#;
        let h: HealthState = serde_json::from_str(old).expect("old state.json");
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.failing_streak, 3);
        assert_eq!(h.last_output, "down\n");
        assert_eq!(
            h.last_check,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        assert_eq!(serde_json::to_string(&h).expect("serialize"), old);
    }
}
