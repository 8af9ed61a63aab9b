//! One container as the runtime holds it: its spec, its observed state
//! ([`Status`], persisted as `state.json`) and the handles of its running
//! processes and tasks. The data the containers service works on; it
//! knows no service.
//!
//! A container's observed state lives in one `watch` channel
//! ([`Entry::status`]); every change goes through [`Entry::set_status`], which
//! writes `state.json` before anyone can observe the new state. A write
//! that fails (a full disk) does not hold the change back: the state in
//! memory is the truth, the entry is marked unsaved, and the file catches
//! up with the next write that succeeds (a flusher retries every second).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cgroups::{Limits, Stats};
use crate::error::Error;
use crate::lock::lock;
use crate::logs::{self, LogRecord};
use crate::process::ExitInfo;
use crate::spec::ContainerSpec;
use crate::store::{self, StoreError};
use crate::supervise::health::HealthState;
use crate::supervise::{Backoff, ChildRestart, Ending};
use crate::sys;

/// Version of `state.json`.
pub(crate) const STATE_VERSION: u32 = 1;
/// How long a forced kill may take before we give up waiting.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(30);

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
    /// it until `rm -f` (see [`crate::quarantine`]). Never persisted.
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

/// A snapshot of one container, as `inspect` shows it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub spec: ContainerSpec,
    pub state: ContainerState,
    /// Host pid of the container's init while running, else 0.
    pub pid: i32,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub exit: Option<ExitInfo>,
    pub error: String,
    pub log_path: PathBuf,
    pub start_count: u32,
    /// OOM kills in the container over its whole life.
    pub oom_kills: u64,
    /// The last run died of an OOM kill.
    pub oom_killed: bool,
    pub restart_count: u32,
    /// The delay of the pending (or last) policy restart.
    pub restart_delay: Option<Duration>,
    pub next_start_at: Option<SystemTime>,
    pub stopped_by_user: bool,
    pub health: Option<HealthState>,
    /// Log output the shim could not write (a full disk), over the
    /// container's whole life.
    pub log_dropped: logs::Dropped,
}

/// The container counts of `info` ([`Containers::counts`](super::Containers::counts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerCounts {
    /// Every container the runtime knows, in any state.
    pub total: usize,
    /// Those in [`ContainerState::Running`].
    pub running: usize,
}

/// What a stop, kill or remove could not do besides its main work (which
/// it did: the signal went out, the container is gone from the API): a
/// state that is not saved, a part left behind. Sent to the client as
/// warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpReport {
    pub warnings: Vec<String>,
}

impl OpReport {
    /// Adds a warning when the container's state could not be saved.
    pub(crate) fn note_unsaved(&mut self, entry: &Entry) {
        if let Some(why) = lock(&entry.unsaved).clone() {
            self.warnings.push(format!(
                "container {}: its state is not saved ({why}); rsupd keeps it in memory and saves it once a write succeeds",
                entry.spec.name
            ));
        }
    }
}

/// The last two usage samples of a container.
#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) prev: Option<(Instant, Stats)>,
    pub(crate) last: Option<(Instant, Stats)>,
}

/// One item of a log stream.
pub type LogStreamItem = LogRecord;

pub(crate) struct Entry {
    pub(crate) id: String,
    /// The spec as created; its `resources` may be outdated, see `resources`.
    pub(crate) spec: ContainerSpec,
    pub(crate) dir: PathBuf,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) init_pidfd: Mutex<Option<Arc<OwnedFd>>>,
    /// Shared so that a removal's teardown task can hold it to its end.
    pub(crate) op: Arc<tokio::sync::Mutex<()>>,
    /// Limits in force (changed by `update`).
    pub(crate) resources: Mutex<Limits>,
    pub(crate) samples: Mutex<Samples>,
    /// Cancels a pending policy restart.
    pub(crate) pending_restart: Mutex<Option<CancellationToken>>,
    /// Stops the health checker of the current run.
    pub(crate) health_cancel: Mutex<Option<CancellationToken>>,
    /// Stops the published-port proxies.
    pub(crate) proxy: Mutex<Option<CancellationToken>>,
    /// Why the last write of `state.json` failed; `None` while the file
    /// holds the state in memory. Retried by the runtime's flusher.
    pub(crate) unsaved: Mutex<Option<String>>,
}

impl Entry {
    pub(crate) fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Applies `f`, persists the result, then publishes it. The change is
    /// published even when the write fails (the state in memory is the
    /// truth; the file catches up with the next write that succeeds, see
    /// [`Entry::save`]); the error says it is not on disk yet.
    pub(crate) fn set_status(&self, f: impl FnOnce(&mut Status)) -> Result<(), StoreError> {
        // Under the channel's lock: concurrent updates neither lose each
        // other's changes nor reach the disk out of order.
        let mut r = Ok(());
        let path = self.dir.join("state.json");
        self.status.send_modify(|st| {
            f(st);
            r = store::write_json(&path, st);
            self.note_saved(&r);
        });
        r
    }

    pub(crate) fn note_saved(&self, r: &Result<(), StoreError>) {
        let mut u = lock(&self.unsaved);
        match r {
            Ok(()) => *u = None,
            Err(e) => *u = Some(crate::error::describe_store_error(e)),
        }
    }

    /// Writes the state in memory to `state.json` again if the last write
    /// failed; true when the file is current.
    pub(crate) fn save(&self) -> bool {
        if lock(&self.unsaved).is_none() {
            return true;
        }
        let path = self.dir.join("state.json");
        let mut saved = false;
        // Under the channel's lock, without waking its watchers: nothing
        // they see changes.
        self.status.send_if_modified(|st| {
            let r = store::write_json(&path, st);
            saved = r.is_ok();
            self.note_saved(&r);
            false
        });
        saved
    }

    pub(crate) fn new(id: String, spec: ContainerSpec, dir: PathBuf, status: Status) -> Entry {
        Entry {
            id,
            resources: Mutex::new(spec.resources),
            spec,
            dir,
            status: watch::Sender::new(status),
            init_pidfd: Mutex::new(None),
            op: Arc::new(tokio::sync::Mutex::new(())),
            samples: Mutex::new(Samples::default()),
            pending_restart: Mutex::new(None),
            health_cancel: Mutex::new(None),
            proxy: Mutex::new(None),
            unsaved: Mutex::new(None),
        }
    }

    /// Cancels a pending policy restart, if any.
    pub(crate) fn cancel_restart(&self) {
        if let Some(t) = lock(&self.pending_restart).take() {
            t.cancel();
        }
    }

    pub(crate) fn current_spec(&self) -> ContainerSpec {
        let mut spec = self.spec.clone();
        spec.resources = *lock(&self.resources);
        spec
    }

    pub(crate) fn info(&self) -> ContainerInfo {
        let s = self.status();
        ContainerInfo {
            id: self.id.clone(),
            name: self.spec.name.clone(),
            spec: self.current_spec(),
            state: s.state,
            // A quarantined container shows the init of its live shim.
            pid: if matches!(s.state, ContainerState::Running | ContainerState::Unknown) {
                s.init_pid
            } else {
                0
            },
            created_at: s.created_at,
            started_at: s.started_at,
            exit: s.exit,
            error: s.error,
            log_path: self.dir.join("container.log"),
            start_count: s.start_count,
            oom_kills: s.oom_kills,
            oom_killed: s.oom_killed,
            restart_count: s.restart_count,
            restart_delay: s.backoff.last,
            next_start_at: s.next_start_at,
            stopped_by_user: s.stopped_by_user,
            health: s.health,
            log_dropped: logs::read_dropped(&self.dir.join(logs::DROPPED_FILE)),
        }
    }

    pub(crate) fn signal(&self, sig: i32) -> Result<(), Error> {
        let fd = lock(&self.init_pidfd).clone();
        let Some(fd) = fd else {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                self.spec.name
            )));
        };
        match sys::pidfd_send_signal(&*fd, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(Error::Sys {
                op: "pidfd_send_signal",
                container: self.spec.name.clone(),
                source,
            }),
        }
    }

    /// Whether the exit recorded in `s` will be followed by a restart (its
    /// policy, or its supervisor's restart type, says so).
    pub(crate) fn will_restart(&self, s: &Status) -> bool {
        if self.spec.auto_remove || s.stopped_by_user || s.supervisor_stopping {
            return false;
        }
        let code = s.exit.map_or(-1, |e| e.code);
        if self.spec.supervisor.is_some() {
            return ChildRestart::of(&self.spec.restart.policy).restarts(code, s.oom_killed);
        }
        self.spec.restart.policy.should_restart(&Ending {
            exit_code: code,
            oom_killed: s.oom_killed,
            stopped_by_user: s.stopped_by_user,
            restarts: s.restart_count,
        })
    }

    /// Like [`Entry::signal`], but a container that has just exited is not
    /// an error (stop and remove race with exits).
    pub(crate) fn signal_if_running(&self, sig: i32) -> Result<(), Error> {
        match self.signal(sig) {
            Err(Error::FailedPrecondition(_)) => Ok(()),
            other => other,
        }
    }

    /// Waits until the container is no longer running, at most `timeout`.
    pub(crate) async fn wait_not_running(&self, timeout: Duration) -> bool {
        let mut rx = self.status.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.state != ContainerState::Running))
            .await
            .is_ok()
    }
}

/// Re-opens pidfds on a running container's shim and init if they are the
/// processes recorded (same pid and start time).
pub(crate) fn adopt(status: &Status) -> Option<(OwnedFd, Option<OwnedFd>)> {
    let same =
        |pid: i32, start: u64| pid > 0 && start != 0 && sys::process_start_time(pid) == Some(start);
    if !same(status.shim_pid, status.shim_start_time) {
        return None;
    }
    let shim = sys::pidfd_open(status.shim_pid).ok()?;
    // Check again now that the fd pins the process.
    if !same(status.shim_pid, status.shim_start_time) {
        return None;
    }
    let init = if same(status.init_pid, status.init_start_time) {
        sys::pidfd_open(status.init_pid)
            .ok()
            .filter(|_| same(status.init_pid, status.init_start_time))
    } else {
        None
    };
    Some((shim, init))
}
