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
    /// `crate::containers::quarantine`).
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

/// Which events a watcher wants; an empty list lets every event through.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Event types (`start`, `die`, ...).
    pub types: Vec<String>,
    /// Subjects: a container's (or supervisor's, or network's) name, or a
    /// container id or a prefix of one.
    pub subjects: Vec<String>,
}

impl EventFilter {
    pub fn wants(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == e.kind.as_str()))
            && (self.subjects.is_empty()
                || self
                    .subjects
                    .iter()
                    .any(|s| *s == e.subject || (!s.is_empty() && e.id.starts_with(s.as_str()))))
    }
}

/// A subscription that sees only the events its filter wants.
pub struct Watch {
    /// Remembered events since the time asked for, filtered.
    pub past: Vec<Event>,
    rx: broadcast::Receiver<Event>,
    filter: EventFilter,
}

impl Watch {
    /// The next wanted event; `Lagged` when the watcher fell behind and
    /// events were dropped, `Closed` when the bus is gone.
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        loop {
            let e = self.rx.recv().await?;
            if self.filter.wants(&e) {
                return Ok(e);
            }
        }
    }
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

    /// Like [`Self::subscribe`], for the events `filter` wants.
    pub fn watch(&self, since: Option<SystemTime>, filter: EventFilter) -> Watch {
        let (mut past, rx) = self.subscribe(since);
        past.retain(|e| filter.wants(e));
        Watch { past, rx, filter }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, subject: &str, id: &str) -> Event {
        Event {
            time: SystemTime::now(),
            kind,
            subject_type: "container",
            subject: subject.into(),
            id: id.into(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn filters_match_types_names_and_id_prefixes() {
        let web = event(EventKind::Start, "web", "0123abcd");
        let all = EventFilter::default();
        assert!(all.wants(&web));
        let f = |types: &[&str], subjects: &[&str]| EventFilter {
            types: types.iter().map(|s| s.to_string()).collect(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(&["start"], &[]).wants(&web));
        assert!(!f(&["die"], &[]).wants(&web));
        assert!(f(&[], &["web"]).wants(&web));
        assert!(f(&[], &["0123"]).wants(&web), "an id prefix");
        assert!(f(&[], &["0123abcd"]).wants(&web));
        assert!(!f(&[], &["we"]).wants(&web), "a name is matched whole");
        assert!(!f(&[], &[""]).wants(&web), "an empty subject matches none");
        assert!(!f(&["start"], &["db"]).wants(&web));
    }

    #[tokio::test]
    async fn a_watch_sees_only_what_it_wants() {
        let bus = EventBus::default();
        bus.publish(event(EventKind::Create, "web", "01"));
        bus.publish(event(EventKind::Create, "db", "02"));
        let filter = EventFilter {
            subjects: vec!["db".into()],
            ..Default::default()
        };
        let mut w = bus.watch(Some(SystemTime::UNIX_EPOCH), filter);
        assert_eq!(w.past.len(), 1);
        assert_eq!(w.past[0].subject, "db");
        bus.publish(event(EventKind::Start, "web", "01"));
        bus.publish(event(EventKind::Start, "db", "02"));
        let e = w.recv().await.expect("an event");
        assert_eq!((e.kind, e.subject.as_str()), (EventKind::Start, "db"));
    }
}
