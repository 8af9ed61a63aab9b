//! Running a container: start (sandbox, ports, cgroup, the shim), the
//! exit monitor, what follows an exit (policy restart with backoff, or the
//! supervisor's decision), stop and kill.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{Instrument, info, instrument, warn};

use super::backend::{BoxFuture, Launched};
use super::entry::{ContainerInfo, ContainerState, Entry, KILL_WAIT, OpReport, StartBy, Status};
use super::{Containers, SupervisedExit, random_unit};
use crate::cgroups::Manager;
use crate::error::Error;
use crate::lifecycle::EventKind;
use crate::lifecycle::container::{AfterExit, StartGate, after_exit, start_gate};
use crate::lock::lock;
use crate::names::ContainerRef;
use crate::process::{ExitInfo, SpawnError};
use crate::rollback::Rollback;
use crate::signal;

impl Containers {
    /// Starts a created or exited container (a user start: it clears a
    /// user stop and the restart history).
    #[instrument(skip_all, fields(container = %key))]
    pub async fn start(&self, key: &ContainerRef) -> Result<ContainerInfo, Error> {
        let entry = self.find(key)?;
        self.start_entry(&entry, StartBy::User).await
    }

    /// Starts `entry` on a task of its own: a caller that goes away (a
    /// cancelled request) neither stops a start half-way nor its undo.
    pub(crate) async fn start_entry(
        &self,
        entry: &Arc<Entry>,
        by: StartBy,
    ) -> Result<ContainerInfo, Error> {
        let (rt, e) = (self.clone(), entry.clone());
        self.inner
            .tracker
            .spawn(async move { rt.start_now(&e, by).await }.instrument(tracing::Span::current()))
            .await
            .map_err(|e| Error::FailedPrecondition(format!("start task failed: {e}")))?
    }

    async fn start_now(&self, entry: &Arc<Entry>, by: StartBy) -> Result<ContainerInfo, Error> {
        let key = &entry.spec.name;
        let _op = entry.op.lock().await;
        let st = entry.status();
        let gate = start_gate(by, &st);
        if gate == StartGate::Moot {
            return Ok(entry.info());
        }
        entry.cancel_restart();
        match gate {
            StartGate::Removed => {
                return Err(Error::NotFound(format!("no such container: {key}")));
            }
            StartGate::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "container {key} is already running"
                )));
            }
            StartGate::Go | StartGate::Moot => {}
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // Everything this start makes (sandbox, port proxies, cgroup, the
        // shim's pids in state.json) is undone if it fails: the container
        // is left as it was, with the reason in its error.
        let mut undo = Rollback::new(
            format!("start of {}", entry.spec.name),
            Some(self.inner.tracker.clone()),
        );
        let run = match self.start_steps(entry, &st, &mut undo).await {
            Ok(s) => {
                undo.commit();
                s
            }
            Err(e) => {
                let failures = undo.undo().await;
                let e = e.with_cleanup_failures(&failures);
                let msg = e.to_string();
                // A command that could not be run gets Docker's exit code
                // (127 not found, 126 not executable), shown by inspect.
                let exit = match &e {
                    Error::Spawn {
                        source:
                            SpawnError::Command {
                                exit_code: Some(code),
                                ..
                            },
                        ..
                    } => Some(ExitInfo {
                        code: *code,
                        signal: 0,
                        finished_at: SystemTime::now(),
                    }),
                    _ => None,
                };
                let _ = entry.set_status(|s| s.start_failed(msg, exit));
                return Err(e);
            }
        };
        *lock(&entry.init) = run.init;
        let (pids, oom_base) = (run.pids, run.oom_base);
        let persisted = entry.set_status(|s| s.started(by, pids, oom_base, SystemTime::now()));
        self.monitor(entry.clone(), run.ended);
        self.spawn_health(entry);
        self.event(
            entry,
            EventKind::Start,
            &[("pid", pids.init_pid.to_string())],
        );
        // It runs: a state.json that cannot be written now is caught up
        // later (its shim was recorded before the command started, so a
        // restarted rsupd re-adopts it meanwhile).
        if let Err(e) = persisted {
            warn!(container = %entry.spec.name, error = %e, "started, but its state is not saved yet");
        }
        info!(container = %entry.spec.name, pid = pids.init_pid, "started");
        Ok(entry.info())
    }

    /// The steps of a start that make something, each followed by its
    /// undo on `undo`; `before` is the status before the start.
    async fn start_steps(
        &self,
        entry: &Arc<Entry>,
        before: &Status,
        undo: &mut Rollback,
    ) -> Result<Launched, Error> {
        let networks = &self.inner.networks;
        let netns = entry.dir.join("netns");
        let attachments = entry.attachments();
        if !networks.sandbox_complete(&netns, &attachments).await? {
            let (nets, e) = (networks.clone(), entry.clone());
            undo.push_async(
                "remove the network namespace and veths",
                move || async move {
                    let netns = e.dir.join("netns");
                    match nets.drop_sandbox(&netns, &e.attachments()).await.as_slice() {
                        [] => Ok(()),
                        failures => Err(failures.join("; ")),
                    }
                },
            );
            networks.make_sandbox(&netns, &attachments).await?;
        }
        if self.ensure_ports(entry).await? {
            let e = entry.clone();
            undo.push("close the published ports", move || {
                Containers::stop_ports(&e);
                Ok(())
            });
        }
        if let Some(map) = entry.spec.userns.clone() {
            // The shifted copies of the lower dirs, built here (against the
            // state filesystem's reserves, RESOURCE_EXHAUSTED past one)
            // rather than by the shim, which then finds them in the cache.
            let lowers = entry.spec.lowerdirs();
            let limits = self.inner.config.image_limits;
            // <state>/containers/<id>, as the shim reads it.
            let state = entry
                .dir
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| {
                    Error::FailedPrecondition(
                        "the container directory is not inside a state directory".into(),
                    )
                })?;
            tokio::task::spawn_blocking(move || {
                crate::userns::shifted_lowerdirs_within(&state, &lowers, &map, Some(&limits))
            })
            .await
            .map_err(|e| Error::FailedPrecondition(format!("shifted copy task failed: {e}")))??;
        }
        let cg = self.inner.cgroups.clone();
        let id = entry.id.clone();
        if let Some(cg) = &cg
            && !cg.procs_files(&id).iter().any(|p| p.exists())
        {
            let (cg, id) = (cg.clone(), id.clone());
            undo.push_async("remove the cgroup", move || async move {
                tokio::task::spawn_blocking(move || cg.remove(&id))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            });
        }
        {
            // The shim's pids are recorded before its command starts; a
            // failed start puts back what was there.
            let (e, b) = (entry.clone(), before.pids());
            undo.push("forget the shim's pids", move || {
                let _ = e.set_status(|s| s.set_pids(b));
                Ok(())
            });
        }
        let limits = *lock(&entry.resources);
        let e2 = entry.clone();
        let record = Box::new(move |pids| {
            e2.set_status(|st| st.set_pids(pids))
                .map_err(|e| format!("recording the shim: {}", Error::from(e)))
        });
        self.inner.backend.spawn(entry, limits, record).await
    }

    /// Carries out what follows a container's exit (see
    /// [`after_exit`]): auto-remove, its supervisor's decision, a policy
    /// restart after the backoff delay, or nothing.
    pub(crate) fn after_exit(&self, entry: Arc<Entry>, ran: Duration) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let s = entry.status();
        match after_exit(&entry.plan(), &s, ran, random_unit) {
            AfterExit::Stay => {}
            AfterExit::Remove => {
                let rt = self.clone();
                self.inner.tracker.spawn(async move {
                    if let Err(e) = rt.remove_entry(&entry, true).await {
                        warn!(container = %entry.spec.name, error = %e, "auto-remove failed");
                    }
                });
            }
            AfterExit::Supervisor => {
                if let (Some(sup), Some(tx)) = (
                    entry.spec.supervisor.clone(),
                    self.inner.supervised_exits.get(),
                ) {
                    let _ = tx.send(SupervisedExit {
                        supervisor: sup,
                        entry,
                        ran,
                    });
                }
            }
            AfterExit::Restart { delay, backoff } => {
                let r = entry.set_status(|st| st.restart_at(backoff, SystemTime::now() + delay));
                if let Err(e) = r {
                    warn!(container = %entry.spec.name, error = %e, "cannot persist the restart");
                }
                self.event(
                    &entry,
                    EventKind::Restart,
                    &[
                        ("attempt", (s.restart_count + 1).to_string()),
                        ("delay_ms", delay.as_millis().to_string()),
                    ],
                );
                self.schedule_start(entry, delay);
            }
        }
    }

    /// Starts `entry` after `delay` unless cancelled (user stop/start/rm).
    pub(crate) fn schedule_start(&self, entry: Arc<Entry>, delay: Duration) {
        let token = entry.cancel.child_token();
        if let Some(old) = lock(&entry.pending_restart).replace(token.clone()) {
            old.cancel();
        }
        if entry.status().state != ContainerState::Restarting {
            let _ = entry.set_status(|s| s.restart_at(s.backoff, SystemTime::now() + delay));
        }
        let rt = self.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => return,
            }
            if let Err(e) = rt.start_entry(&entry, StartBy::Policy).await {
                warn!(container = %entry.spec.name, error = %e, "restart failed");
                // Count the failed attempt and try again later with backoff.
                let _ = entry.set_status(|s| s.restart_failed(e.to_string()));
                rt.after_exit(entry, Duration::ZERO);
            }
        });
    }

    /// Watches the shim of a running container and records its exit.
    pub(super) fn monitor(&self, entry: Arc<Entry>, ended: BoxFuture<'static, Option<ExitInfo>>) {
        let rt = self.clone();
        let cancel = entry.cancel.clone();
        self.inner.tracker.spawn(async move {
            let exit = tokio::select! {
                exit = ended => exit,
                _ = cancel.cancelled() => return,
            };
            *lock(&entry.init) = None;
            super::health::stop_health(&entry);
            let oom_now = rt.sample(&entry).map(|s| s.oom_kills);
            let r = entry.set_status(|s| s.exited(exit, oom_now));
            if let Err(e) = r {
                warn!(container = %entry.spec.name, error = %e, "cannot persist the exit");
            }
            info!(container = %entry.spec.name, code = exit.map(|e| e.code), "exited");
            let s = entry.status();
            let mut attrs = vec![
                ("exit_code", exit.map_or(-1, |e| e.code).to_string()),
                ("signal", exit.map_or(0, |e| e.signal).to_string()),
                ("oom_killed", s.oom_killed.to_string()),
            ];
            if !s.error.is_empty() {
                attrs.push(("error", s.error.clone()));
            }
            if s.oom_killed {
                rt.event(&entry, EventKind::Oom, &[]);
            }
            rt.event(&entry, EventKind::Die, &attrs);
            let ran = match (s.started_at, exit) {
                (Some(a), Some(e)) => e.finished_at.duration_since(a).unwrap_or_default(),
                _ => Duration::ZERO,
            };
            rt.after_exit(entry, ran);
        });
    }

    /// Sends SIGTERM, then SIGKILL after `timeout`. Stopping a container that
    /// is not running is not an error (as in Docker). The signals go out
    /// whether or not the state can be saved (the report says when not).
    #[instrument(skip_all, fields(container = %key))]
    pub async fn stop(
        &self,
        key: &ContainerRef,
        timeout: Duration,
    ) -> Result<(ContainerInfo, OpReport), Error> {
        crate::bounds::duration("timeout_seconds", timeout, &crate::bounds::STOP_TIMEOUT)?;
        let entry = self.find(key)?;
        let _op = entry.op.lock().await;
        let mut report = OpReport::default();
        entry.cancel_restart();
        let state = entry.status().state;
        if state != ContainerState::Running {
            if state == ContainerState::Restarting {
                let _ = entry.set_status(Status::stop_by_user);
                self.event(&entry, EventKind::Stop, &[]);
            }
            report.note_unsaved(&entry);
            return Ok((entry.info(), report));
        }
        // Mark first: the exit this causes must not be restarted (in
        // memory at once, on disk when it can be).
        let _ = entry.set_status(Status::stop_by_user);
        self.event(
            &entry,
            EventKind::Stop,
            &[("timeout_s", timeout.as_secs().to_string())],
        );
        // It may exit by itself at this very moment: "not running" is fine.
        entry.signal_if_running(libc::SIGTERM)?;
        if !entry.wait_not_running(timeout).await {
            info!("did not stop after SIGTERM; sending SIGKILL");
            entry.signal_if_running(libc::SIGKILL)?;
            if !entry.wait_not_running(KILL_WAIT).await {
                return Err(Error::FailedPrecondition(format!(
                    "container {} did not die after SIGKILL",
                    entry.spec.name
                )));
            }
        }
        report.note_unsaved(&entry);
        Ok((entry.info(), report))
    }

    /// Sends a signal (see [`signal::parse`]) to the container's command.
    /// The report says when the container's state is not saved.
    #[instrument(skip_all, fields(container = %key))]
    pub async fn kill(&self, key: &ContainerRef, sig: &str) -> Result<OpReport, Error> {
        let sig = signal::parse(sig)?;
        let entry = self.find(key)?;
        if entry.status().state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                entry.spec.name
            )));
        }
        entry.signal(sig)?;
        let mut report = OpReport::default();
        report.note_unsaved(&entry);
        Ok(report)
    }
}
