//! One container as the runtime holds it: its spec, its observed state
//! (`Status`, persisted as `state.json`) and the handles of its running
//! processes and tasks. The data the containers service works on; it
//! knows no service.
//!
//! A container's observed state lives in one `watch` channel
//! (`Entry::status`); every change goes through `Entry::set_status`, which
//! writes `state.json` before anyone can observe the new state. A write
//! that fails (a full disk) does not hold the change back: the state in
//! memory is the truth, the entry is marked unsaved, and the file catches
//! up with the next write that succeeds (a flusher retries every second).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cgroups::{Limits, Stats};
use crate::error::Error;
use crate::lifecycle::container::Plan;
use crate::lifecycle::health::HealthState;
pub use crate::lifecycle::state::{ContainerState, ExitInfo};
pub(crate) use crate::lifecycle::state::{StartBy, Status};
use crate::lock::lock;
use crate::logs::{self, LogRecord};
use crate::spec::ContainerSpec;
use crate::store::{self, StoreError};
use crate::sys;

/// How long a forced kill may take before we give up waiting.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(30);

/// The init of a run, to signal (see [`super::backend`]).
pub(crate) trait Init: Send + Sync {
    /// Sends `sig`; ESRCH when it is gone.
    fn signal(&self, sig: i32) -> nix::Result<()>;
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
    /// The init of the current run, to signal.
    pub(crate) init: Mutex<Option<Arc<dyn Init>>>,
    /// The container's own token: every task of it (exit monitor, pending
    /// restart, health checks, port proxies, DNS sync) ends with it. A child
    /// of the containers service's token; cancelled at its removal.
    pub(crate) cancel: CancellationToken,
    /// Shared so that a removal's teardown task can hold it to its end.
    pub(crate) op: Arc<tokio::sync::Mutex<()>>,
    /// Limits in force (changed by `update`).
    pub(crate) resources: Mutex<Limits>,
    /// Network attachments in force (changed by `connect`/`disconnect`;
    /// `spec.networks` is what it was created with).
    pub(crate) networks: Mutex<Vec<crate::spec::net::NetAttach>>,
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

    /// A container whose tasks end with `cancel` (a child of the
    /// service's token).
    pub(crate) fn new(
        id: String,
        spec: ContainerSpec,
        dir: PathBuf,
        status: Status,
        cancel: CancellationToken,
    ) -> Entry {
        Entry {
            id,
            cancel,
            resources: Mutex::new(spec.resources),
            networks: Mutex::new(spec.networks.clone()),
            spec,
            dir,
            status: watch::Sender::new(status),
            init: Mutex::new(None),
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
        spec.networks = self.attachments();
        spec
    }

    /// The network attachments in force.
    pub(crate) fn attachments(&self) -> Vec<crate::spec::net::NetAttach> {
        lock(&self.networks).clone()
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
        let init = lock(&self.init).clone();
        let Some(init) = init else {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                self.spec.name
            )));
        };
        match init.signal(sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(Error::Sys {
                op: "pidfd_send_signal",
                container: self.spec.name.clone(),
                source,
            }),
        }
    }

    /// What the lifecycle decisions need of its spec.
    pub(crate) fn plan(&self) -> Plan<'_> {
        Plan {
            auto_remove: self.spec.auto_remove,
            supervised: self.spec.supervisor.is_some(),
            policy: &self.spec.restart.policy,
            backoff: &self.spec.restart.backoff,
        }
    }

    /// Whether the exit recorded in `s` will be followed by a restart (its
    /// policy, or its supervisor's restart type, says so).
    pub(crate) fn will_restart(&self, s: &Status) -> bool {
        crate::lifecycle::container::will_restart(&self.plan(), s)
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
