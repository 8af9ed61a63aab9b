//! A container's observed state, the data at the bottom of its lifecycle:
//! `ContainerState`, the persisted `Status` (`state.json`) and how one
//! run ended ([`ExitInfo`], the shim's `exit.json`), with the transitions
//! each event makes to them. Pure: the containers service reads the
//! kernel, applies these and persists the result.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Backoff;
use super::health::HealthState;

/// Version of `state.json`.
pub(crate) const STATE_VERSION: u32 = 1;

/// Lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// Exited, and its restart policy will start it again at `next_start_at`.
    Restarting,
    Removed,
    /// Its record could not be read at start: quarantined, nothing acts on
    /// it until `rm -f` (see [`crate::containers::quarantine`]). Never persisted.
    Unknown,
}

impl ContainerState {
    /// Start is allowed from these states.
    pub fn can_start(self) -> bool {
        matches!(
            self,
            ContainerState::Created | ContainerState::Exited | ContainerState::Restarting
        )
    }
}

/// `state.json`: the persisted, observed state of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) version: u32,
    pub(crate) state: ContainerState,
    pub(crate) created_at: SystemTime,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) shim_pid: i32,
    pub(crate) shim_start_time: u64,
    pub(crate) init_pid: i32,
    pub(crate) init_start_time: u64,
    pub(crate) exit: Option<ExitInfo>,
    /// Why the exit is unknown or the last start failed.
    pub(crate) error: String,
    pub(crate) start_count: u32,
    /// The cgroup's kernel OOM-kill counter, as last read.
    #[serde(default)]
    pub(crate) oom_kills: u64,
    /// The counter when the current (or last) run started.
    #[serde(default)]
    pub(crate) oom_kills_at_start: u64,
    /// The last run ended by SIGKILL after an OOM kill in the container.
    #[serde(default)]
    pub(crate) oom_killed: bool,
    /// Restarts done by the restart policy since the last user start.
    #[serde(default)]
    pub(crate) restart_count: u32,
    /// The user stopped the container: no policy restart until a user start.
    #[serde(default)]
    pub(crate) stopped_by_user: bool,
    #[serde(default)]
    pub(crate) backoff: Backoff,
    /// When a pending policy restart is due.
    #[serde(default)]
    pub(crate) next_start_at: Option<SystemTime>,
    /// Its supervisor is stopping it (to restart it with its siblings).
    #[serde(default)]
    pub(crate) supervisor_stopping: bool,
    /// Restarts by policy or supervisor over the container's whole life.
    #[serde(default)]
    pub(crate) restarts_total: u64,
    /// Health of the current run (containers with a health check).
    #[serde(default)]
    pub(crate) health: Option<HealthState>,
}

impl Status {
    /// A container's record before any start: `state` since `created_at`,
    /// every counter at zero.
    pub(crate) fn fresh(state: ContainerState, created_at: SystemTime) -> Status {
        Status {
            version: STATE_VERSION,
            state,
            created_at,
            started_at: None,
            shim_pid: 0,
            shim_start_time: 0,
            init_pid: 0,
            init_start_time: 0,
            exit: None,
            error: String::new(),
            start_count: 0,
            oom_kills: 0,
            oom_kills_at_start: 0,
            oom_killed: false,
            restart_count: 0,
            stopped_by_user: false,
            backoff: Backoff::default(),
            next_start_at: None,
            supervisor_stopping: false,
            restarts_total: 0,
            health: None,
        }
    }
}

/// Who starts a container: the user, its restart policy or its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartBy {
    User,
    Policy,
    Supervisor,
}

/// How a container's command ended; written by the shim as `exit.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, or 128+signal.
    pub code: i32,
    /// The signal that killed the command, 0 if none.
    pub signal: i32,
    pub finished_at: SystemTime,
}

/// The processes of a run: the shim and the init, each with its start
/// time (a pid alone may be reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pids {
    pub shim_pid: i32,
    pub shim_start_time: u64,
    pub init_pid: i32,
    pub init_start_time: u64,
}

impl Status {
    /// The processes recorded for the current run.
    pub fn pids(&self) -> Pids {
        Pids {
            shim_pid: self.shim_pid,
            shim_start_time: self.shim_start_time,
            init_pid: self.init_pid,
            init_start_time: self.init_start_time,
        }
    }

    /// Records the processes of a run (before its command runs, and put
    /// back as they were when the start fails).
    pub fn set_pids(&mut self, p: Pids) {
        self.shim_pid = p.shim_pid;
        self.shim_start_time = p.shim_start_time;
        self.init_pid = p.init_pid;
        self.init_start_time = p.init_start_time;
    }

    /// A start went through: running since `now` with `pids`, the cgroup's
    /// OOM counter at `oom_base`. A user start clears a user stop and the
    /// restart history; a restart (policy, supervisor) counts.
    pub fn started(&mut self, by: StartBy, pids: Pids, oom_base: u64, now: SystemTime) {
        self.state = ContainerState::Running;
        self.started_at = Some(now);
        self.set_pids(pids);
        self.error.clear();
        self.start_count += 1;
        self.oom_kills = oom_base;
        self.oom_kills_at_start = oom_base;
        self.oom_killed = false;
        self.next_start_at = None;
        self.supervisor_stopping = false;
        if by == StartBy::User {
            self.stopped_by_user = false;
            self.restart_count = 0;
            self.backoff.reset();
        } else {
            self.restart_count += 1;
            self.restarts_total += 1;
        }
    }

    /// A start failed with `error`; a command that could not be run has
    /// Docker's exit code (`exit`), which inspect shows.
    pub fn start_failed(&mut self, error: String, exit: Option<ExitInfo>) {
        self.error = error;
        if exit.is_some() {
            self.exit = exit;
        }
    }

    /// The run ended: `exit` as the shim recorded it (`None`: the shim
    /// ended without recording one), the cgroup's OOM counter `oom_now` if
    /// it could be read. An OOM kill is a SIGKILL while the counter grew.
    pub fn exited(&mut self, exit: Option<ExitInfo>, oom_now: Option<u64>) {
        if let Some(n) = oom_now {
            self.oom_kills = self.oom_kills.max(n);
        }
        self.oom_killed = self.oom_kills > self.oom_kills_at_start
            && exit.is_some_and(|e| e.signal == libc::SIGKILL);
        self.state = ContainerState::Exited;
        self.error = match exit {
            Some(_) => String::new(),
            None => "the shim ended without recording an exit status".into(),
        };
        self.exit = exit;
        self.shim_pid = 0;
        self.init_pid = 0;
    }

    /// A restart is due at `at`, with the backoff state `backoff`.
    pub fn restart_at(&mut self, backoff: Backoff, at: SystemTime) {
        self.state = ContainerState::Restarting;
        self.backoff = backoff;
        self.next_start_at = Some(at);
    }

    /// A policy restart failed with `error`: it counts as an attempt, and
    /// the exit's decision is made again (with backoff).
    pub fn restart_failed(&mut self, error: String) {
        self.state = ContainerState::Exited;
        self.restart_count += 1;
        self.error = error;
    }

    /// The user stopped it: a pending restart is called off, and the exit
    /// that the stop causes is not restarted.
    pub fn stop_by_user(&mut self) {
        self.stopped_by_user = true;
        if self.state == ContainerState::Restarting {
            self.state = ContainerState::Exited;
            self.next_start_at = None;
        }
    }
}
