//! Lifecycle events (create, start, die, restart, stop, destroy, oom, ...),
//! published on a broadcast channel and kept in a small ring for late
//! subscribers that ask for recent history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Start,
    Die,
    Oom,
    Restart,
    Stop,
    Destroy,
    Update,
    HealthStatus,
    SupervisorRestart,
    SupervisorEscalate,
    SupervisorFail,
    /// rsupd fixed a network's leases at start (subject: the network).
    Reconcile,
    /// A container's record could not be read at start (see
    /// [`crate::quarantine`]).
    Quarantine,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Start => "start",
            EventKind::Die => "die",
            EventKind::Oom => "oom",
            EventKind::Restart => "restart",
            EventKind::Stop => "stop",
            EventKind::Destroy => "destroy",
            EventKind::Update => "update",
            EventKind::HealthStatus => "health_status",
            EventKind::SupervisorRestart => "supervisor_restart",
            EventKind::SupervisorEscalate => "supervisor_escalate",
            EventKind::SupervisorFail => "supervisor_fail",
            EventKind::Reconcile => "reconcile",
            EventKind::Quarantine => "quarantine",
        }
    }
}

/// One event. `subject` is a container name (or a supervisor's).
#[derive(Debug, Clone)]
pub struct Event {
    pub time: SystemTime,
    pub kind: EventKind,
    /// "container", "supervisor" or "network".
    pub subject_type: &'static str,
    pub subject: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

/// Broadcasts events; remembers the last `HISTORY` for `since` queries.
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

const HISTORY: usize = 1024;

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(4096).0,
            history: Mutex::new(VecDeque::new()),
        }
    }
}

impl EventBus {
    pub fn publish(&self, e: Event) {
        {
            let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            h.push_back(e.clone());
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        let _ = self.tx.send(e);
    }

    /// Subscribes, returning the remembered events at or after `since`
    /// (atomically with the subscription, so none is missed or doubled).
    pub fn subscribe(&self, since: Option<SystemTime>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let past = match since {
            Some(t) => h.iter().filter(|e| e.time >= t).cloned().collect(),
            None => Vec::new(),
        };
        (past, rx)
    }
}
