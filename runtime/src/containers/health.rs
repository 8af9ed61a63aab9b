//! The health checker of a running container: a check command on an
//! interval (through [`Containers::exec_entry`]), its result applied by
//! the pure [`HealthState::record`]; an unhealthy container with
//! `restart_on_unhealthy` is killed for its restart policy.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::{info, warn};

use super::Containers;
use super::entry::Entry;
use super::exec::ExecRequest;
use crate::lifecycle::EventKind;
use crate::lifecycle::health::{CheckResult, HealthState, HealthStatus};
use crate::lock::lock;

/// Output kept of a health check, as Docker does.
const HEALTH_OUTPUT: usize = 4096;

impl Containers {
    /// Starts the health checker of a container that just started.
    pub(crate) fn spawn_health(&self, entry: &Arc<Entry>) {
        let Some(hc) = entry.spec.health.clone() else {
            return;
        };
        let token = entry.cancel.child_token();
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
                let check = CheckResult {
                    passed: ok,
                    output,
                    at: SystemTime::now(),
                    in_start_period: started.elapsed() < hc.start_period,
                };
                let mut changed = None;
                let _ = entry.set_status(|s| {
                    changed = s
                        .health
                        .get_or_insert_with(HealthState::starting)
                        .record(check, hc.retries);
                });
                if let Some(after) = changed {
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
