//! The supervisors service: supervisor trees applied to real containers
//! (the policy side is pure, in [`crate::lifecycle::tree`]). It stands above
//! the containers service: it reads their states and stops and starts
//! them; the containers hand it the exits of supervised containers on a
//! channel (`SupervisedExit`).
//!
//! Each supervisor is persisted as `supervisors/<name>.json` under the state
//! dir (spec, creation time, failed flag, restart window). Its children are
//! the containers that joined it and the supervisors created under it, in the
//! order they joined (creation time). Strategy applications of one supervisor
//! are serialised by its `op` lock; they run as tracked tasks, so a failure
//! never blocks the exit monitor that reported it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::containers::entry::{ContainerState, Entry, StartBy};
use crate::containers::{Containers, SupervisedExit};
use crate::error::Error;
use crate::lifecycle::tree::{self, OnFailure, Strategy, SupState, SupervisorSpec};
use crate::lifecycle::{Event, EventBus, EventKind};
use crate::lock::lock;
use crate::names::SupervisorName;
use crate::{bounds, store};

/// Grace period of a supervisor stopping one of its containers.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct SupFile {
    version: u32,
    spec: SupervisorSpec,
    created_at: SystemTime,
    state: SupState,
}

/// A supervisor of the runtime.
pub(crate) struct Sup {
    pub spec: SupervisorSpec,
    pub created_at: SystemTime,
    pub state: Mutex<SupState>,
    op: tokio::sync::Mutex<()>,
    /// Its own token (a child of the service's): a pending restart of its
    /// children ends with it; cancelled when it is removed.
    cancel: CancellationToken,
}

/// A child of a supervisor.
#[derive(Clone)]
pub(crate) enum Child {
    Container(Arc<Entry>),
    Supervisor(Arc<Sup>),
}

impl Child {
    fn key(&self) -> String {
        match self {
            Child::Container(e) => format!("c:{}", e.id),
            Child::Supervisor(s) => format!("s:{}", s.spec.name),
        }
    }
    fn name(&self) -> &str {
        match self {
            Child::Container(e) => &e.spec.name,
            Child::Supervisor(s) => s.spec.name.as_str(),
        }
    }
}

/// A supervisor request (its names checked, the rest not yet validated).
#[derive(Debug, Clone)]
pub struct SupervisorRequest {
    pub name: SupervisorName,
    pub strategy: String,
    pub intensity: u32,
    pub period: Duration,
    pub parent: Option<SupervisorName>,
}

impl SupervisorRequest {
    /// Checks the strategy, the intensity and the period (see
    /// [`bounds`]); returns the strategy.
    fn validate(&self) -> Result<Strategy, Error> {
        let strategy: Strategy = self
            .strategy
            .parse()
            .map_err(|e: String| invalid("strategy", e))?;
        if self.intensity == 0 {
            return Err(invalid(
                "intensity",
                "must be at least 1: a supervisor allowed no restart within its period cannot supervise",
            ));
        }
        bounds::count(
            "intensity",
            self.intensity.into(),
            &bounds::SUPERVISOR_INTENSITY,
            "restarts",
        )?;
        bounds::duration("period_ms", self.period, &bounds::SUPERVISOR_PERIOD)?;
        Ok(strategy)
    }
}

/// What `tree` shows of a supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorInfo {
    pub spec: SupervisorSpec,
    pub failed: bool,
    pub restarts: u64,
    /// In start order.
    pub children: Vec<ChildInfo>,
}

/// What a supervisor's child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Container,
    Supervisor,
}

impl ChildKind {
    /// "container" or "supervisor", as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Container => "container",
            ChildKind::Supervisor => "supervisor",
        }
    }
}

/// One child of a supervisor, as `tree` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    pub kind: ChildKind,
    /// The container's or the supervisor's name.
    pub name: String,
    /// A container's state ("created", "running", "exited", "restarting",
    /// "removed", "unknown"); a supervisor's "running" or "failed".
    pub state: &'static str,
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// The supervisors service. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Supervisors {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: std::path::PathBuf,
    list: Mutex<Vec<Arc<Sup>>>,
    events: Arc<EventBus>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    containers: Containers,
}

impl Supervisors {
    /// The service over the supervisors persisted under `state_dir`;
    /// nothing is loaded before [`Supervisors::load`].
    pub fn new(
        state_dir: std::path::PathBuf,
        events: Arc<EventBus>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        containers: Containers,
    ) -> Supervisors {
        Supervisors {
            inner: Arc::new(Inner {
                state_dir,
                list: Mutex::new(Vec::new()),
                events,
                tracker,
                shutdown,
                containers,
            }),
        }
    }

    /// Takes over the exits of supervised containers: each one that
    /// `exits` delivers is a failed child of its supervisor.
    pub(crate) fn watch(&self, mut exits: mpsc::UnboundedReceiver<SupervisedExit>) {
        let this = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let x = tokio::select! {
                    x = exits.recv() => match x { Some(x) => x, None => return },
                    _ = shutdown.cancelled() => return,
                };
                this.child_failed(x.supervisor, Child::Container(x.entry), x.ran);
            }
        });
    }

    fn sup_path(&self, name: &SupervisorName) -> std::path::PathBuf {
        self.inner
            .state_dir
            .join("supervisors")
            .join(format!("{name}.json"))
    }

    fn persist_sup(&self, sup: &Sup) -> Result<(), Error> {
        let file = SupFile {
            version: 1,
            spec: sup.spec.clone(),
            created_at: sup.created_at,
            state: lock(&sup.state).clone(),
        };
        store::write_json(&self.sup_path(&sup.spec.name), &file)?;
        Ok(())
    }

    /// Loads the persisted supervisors (at start, before the containers).
    pub fn load(&self) -> Result<(), Error> {
        let dir = self.inner.state_dir.join("supervisors");
        let mut list = Vec::new();
        for (p, f) in store::read_json_dir::<SupFile>(&dir)? {
            match f {
                Ok(f) => list.push(Arc::new(Sup {
                    spec: f.spec,
                    created_at: f.created_at,
                    state: Mutex::new(f.state),
                    op: tokio::sync::Mutex::new(()),
                    cancel: self.inner.shutdown.child_token(),
                })),
                Err(e) => {
                    warn!(path = %p.display(), error = %e, "skipping an unreadable supervisor")
                }
            }
        }
        list.sort_by_key(|s| s.created_at);
        *lock(&self.inner.list) = list;
        Ok(())
    }

    pub(crate) fn find_sup(&self, name: &SupervisorName) -> Option<Arc<Sup>> {
        lock(&self.inner.list)
            .iter()
            .find(|s| s.spec.name == *name)
            .cloned()
    }

    /// Checks that a container may join `name`.
    pub fn check_exists(&self, name: &SupervisorName) -> Result<(), Error> {
        match self.find_sup(name) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("no such supervisor: {name}"))),
        }
    }

    /// Creates a supervisor.
    pub fn create(&self, req: SupervisorRequest) -> Result<SupervisorInfo, Error> {
        let strategy = req.validate()?;
        let parent = req.parent.clone();
        if let Some(p) = &parent {
            let parent_of = |n: &str| {
                lock(&self.inner.list)
                    .iter()
                    .find(|s| s.spec.name == n)
                    .and_then(|s| s.spec.parent.clone())
                    .map(String::from)
            };
            if *p == req.name || tree::creates_cycle(req.name.as_str(), p.as_str(), parent_of) {
                return Err(invalid(
                    "parent",
                    format!("{p} as the parent of {} makes a cycle", req.name),
                ));
            }
            if self.find_sup(p).is_none() {
                return Err(Error::NotFound(format!("no such supervisor: {p}")));
            }
        }
        let sup = Arc::new(Sup {
            spec: SupervisorSpec {
                name: req.name.clone(),
                strategy,
                intensity: req.intensity,
                period: req.period,
                parent,
            },
            created_at: SystemTime::now(),
            state: Mutex::new(SupState::default()),
            op: tokio::sync::Mutex::new(()),
            cancel: self.inner.shutdown.child_token(),
        });
        {
            let mut list = lock(&self.inner.list);
            if list.iter().any(|s| s.spec.name == req.name) {
                return Err(Error::AlreadyExists(format!(
                    "a supervisor named {} already exists",
                    req.name
                )));
            }
            list.push(sup.clone());
        }
        if let Err(e) = self.persist_sup(&sup) {
            lock(&self.inner.list).retain(|s| !Arc::ptr_eq(s, &sup));
            return Err(e);
        }
        info!(supervisor = %req.name, %strategy, "supervisor created");
        Ok(self.sup_info(&sup))
    }

    /// Removes a supervisor that has no children.
    pub fn remove(&self, name: &SupervisorName) -> Result<(), Error> {
        let sup = self
            .find_sup(name)
            .ok_or_else(|| Error::NotFound(format!("no such supervisor: {name}")))?;
        if !self.children_of(&sup).is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "supervisor {name} still has children: remove them first"
            )));
        }
        lock(&self.inner.list).retain(|s| !Arc::ptr_eq(s, &sup));
        sup.cancel.cancel();
        let p = self.sup_path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Store(store::io_err("remove", &p)(e))),
        }
    }

    /// Every supervisor, roots first, then in creation order.
    pub fn list(&self) -> Vec<SupervisorInfo> {
        let list = lock(&self.inner.list).clone();
        list.iter().map(|s| self.sup_info(s)).collect()
    }

    fn sup_info(&self, sup: &Arc<Sup>) -> SupervisorInfo {
        let st = lock(&sup.state).clone();
        SupervisorInfo {
            spec: sup.spec.clone(),
            failed: st.failed,
            restarts: st.restarts,
            children: self
                .children_of(sup)
                .iter()
                .map(|c| match c {
                    Child::Container(e) => ChildInfo {
                        kind: ChildKind::Container,
                        name: e.spec.name.clone(),
                        state: state_name(e.status().state),
                    },
                    Child::Supervisor(s) => ChildInfo {
                        kind: ChildKind::Supervisor,
                        name: s.spec.name.to_string(),
                        state: if lock(&s.state).failed {
                            "failed"
                        } else {
                            "running"
                        },
                    },
                })
                .collect(),
        }
    }

    /// Children of `sup` in the order they joined.
    fn children_of(&self, sup: &Sup) -> Vec<Child> {
        let name = &sup.spec.name;
        let mut kids: Vec<(SystemTime, Child)> = self
            .inner
            .containers
            .entries()
            .iter()
            .filter(|e| e.spec.supervisor.as_ref() == Some(name))
            .map(|e| (e.status().created_at, Child::Container(e.clone())))
            .collect();
        kids.extend(
            lock(&self.inner.list)
                .iter()
                .filter(|s| s.spec.parent.as_ref() == Some(name))
                .map(|s| (s.created_at, Child::Supervisor(s.clone()))),
        );
        kids.sort_by_key(|(t, _)| *t);
        kids.into_iter().map(|(_, c)| c).collect()
    }

    fn sup_event(&self, sup: &Sup, kind: EventKind, attrs: &[(&str, String)]) {
        self.inner.events.publish(Event {
            time: SystemTime::now(),
            kind,
            subject_type: "supervisor",
            subject: sup.spec.name.to_string(),
            id: sup.spec.name.to_string(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        });
    }

    /// A child of supervisor `sup_name` failed and should be restarted:
    /// applies the supervisor's strategy (in a tracked task).
    pub(crate) fn child_failed(&self, sup_name: SupervisorName, failed: Child, ran: Duration) {
        let rt = self.clone();
        self.inner
            .tracker
            .spawn(async move { rt.apply_strategy(sup_name, failed, ran).await });
    }

    fn apply_strategy(&self, sup_name: SupervisorName, failed: Child, ran: Duration) -> BoxFut<'_> {
        Box::pin(async move {
            let Some(sup) = self.find_sup(&sup_name) else {
                warn!(supervisor = %sup_name, "a child failed but its supervisor is gone");
                return;
            };
            let _op = sup.op.lock().await;
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let children = self.children_of(&sup);
            let keys: Vec<String> = children.iter().map(Child::key).collect();
            let failed_key = failed.key();
            let child = |k: &String| children.iter().find(|c| c.key() == *k).cloned();
            let decision = tree::on_child_failure(
                &sup.spec,
                &mut lock(&sup.state),
                SystemTime::now(),
                &keys,
                &failed_key,
            );
            let (stop, affected): (Vec<Child>, Vec<Child>) = match decision {
                OnFailure::Ignore => return,
                OnFailure::Escalate => {
                    drop(_op);
                    self.escalate(sup).await;
                    return;
                }
                OnFailure::Restart { stop, start } => (
                    stop.into_iter().filter_map(child).collect(),
                    start.into_iter().filter_map(child).collect(),
                ),
            };
            let _ = self.persist_sup(&sup);
            info!(supervisor = %sup.spec.name, strategy = %sup.spec.strategy, child = failed.name(), restarting = affected.len(), "applying the strategy");
            self.sup_event(
                &sup,
                EventKind::SupervisorRestart,
                &[
                    ("strategy", sup.spec.strategy.to_string()),
                    ("child", failed.name().to_string()),
                    (
                        "restarting",
                        affected
                            .iter()
                            .map(Child::name)
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ],
            );
            // The others first, in reverse start order.
            for c in &stop {
                self.stop_child(c).await;
            }
            // The failed container's backoff throttles a crash loop.
            let delay = match &failed {
                Child::Container(e) => {
                    let mut backoff = e.status().backoff;
                    let d = backoff.next_delay(&e.spec.restart.backoff, ran, || 0.0);
                    let _ = e.set_status(|s| s.restart_at(backoff, SystemTime::now() + d));
                    d
                }
                Child::Supervisor(_) => Duration::ZERO,
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = sup.cancel.cancelled() => return,
            }
            for c in &affected {
                self.start_child(c).await;
            }
        })
    }

    /// A supervisor exceeded its intensity: stop its children, mark it
    /// failed, and let its parent handle it as a failed child.
    fn escalate(&self, sup: Arc<Sup>) -> BoxFut<'_> {
        Box::pin(async move {
            {
                let _op = sup.op.lock().await;
                let children = self.children_of(&sup);
                for c in children.iter().rev() {
                    self.stop_child(c).await;
                }
                lock(&sup.state).failed = true;
                let _ = self.persist_sup(&sup);
            }
            match sup.spec.parent.clone() {
                Some(parent) => {
                    warn!(supervisor = %sup.spec.name, %parent, "restart intensity exceeded: escalating");
                    self.sup_event(
                        &sup,
                        EventKind::SupervisorEscalate,
                        &[("parent", parent.to_string())],
                    );
                    self.apply_strategy(parent, Child::Supervisor(sup), Duration::ZERO)
                        .await;
                }
                None => {
                    error!(supervisor = %sup.spec.name, "restart intensity exceeded at a root: the tree failed");
                    self.sup_event(&sup, EventKind::SupervisorFail, &[]);
                }
            }
        })
    }

    /// Stops a child on behalf of its supervisor (not a user stop: the child
    /// is started again by the supervisor).
    fn stop_child<'a>(&'a self, child: &'a Child) -> BoxFut<'a> {
        Box::pin(async move {
            match child {
                Child::Container(e) => {
                    let _op = e.op.lock().await;
                    e.cancel_restart();
                    let state = e.status().state;
                    if state == ContainerState::Restarting {
                        let _ = e.set_status(|s| s.state = ContainerState::Exited);
                    }
                    if state != ContainerState::Running {
                        return;
                    }
                    let _ = e.set_status(|s| s.supervisor_stopping = true);
                    let _ = e.signal(libc::SIGTERM);
                    if !e.wait_not_running(STOP_TIMEOUT).await {
                        let _ = e.signal(libc::SIGKILL);
                        e.wait_not_running(STOP_TIMEOUT).await;
                    }
                }
                Child::Supervisor(s) => {
                    for c in self.children_of(s).iter().rev() {
                        self.stop_child(c).await;
                    }
                }
            }
        })
    }

    /// Starts a child on behalf of its supervisor; a child supervisor is
    /// reset (no longer failed) and starts its children in order.
    fn start_child<'a>(&'a self, child: &'a Child) -> BoxFut<'a> {
        Box::pin(async move {
            match child {
                Child::Container(e) => {
                    if let Err(err) = self
                        .inner
                        .containers
                        .start_entry(e, StartBy::Supervisor)
                        .await
                    {
                        warn!(container = %e.spec.name, error = %err, "supervisor restart failed");
                    }
                }
                Child::Supervisor(s) => {
                    {
                        let mut st = lock(&s.state);
                        st.failed = false;
                        st.window.clear();
                    }
                    let _ = self.persist_sup(s);
                    for c in &self.children_of(s) {
                        self.start_child(c).await;
                    }
                }
            }
        })
    }
}

fn state_name(s: ContainerState) -> &'static str {
    match s {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Restarting => "restarting",
        ContainerState::Removed => "removed",
        ContainerState::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(intensity: u32, period: Duration) -> SupervisorRequest {
        SupervisorRequest {
            name: SupervisorName::parse("s").expect("name"),
            strategy: "one_for_one".into(),
            intensity,
            period,
            parent: None,
        }
    }

    #[test]
    fn intensity_and_period_have_ranges() {
        let ms = Duration::from_millis;
        let field = |r: SupervisorRequest| match r.validate() {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert!(req(1, ms(1)).validate().is_ok());
        assert!(req(10_000, bounds::DAY).validate().is_ok());
        for bad in [0, 10_001, u32::MAX] {
            assert_eq!(field(req(bad, ms(5000))), "intensity", "{bad}");
        }
        for bad in [ms(0), bounds::DAY + ms(1), ms(u64::MAX)] {
            assert_eq!(field(req(3, bad)), "period_ms", "{bad:?}");
        }
    }

    #[test]
    fn child_names_are_the_api_strings() {
        assert_eq!(ChildKind::Container.as_str(), "container");
        assert_eq!(ChildKind::Supervisor.as_str(), "supervisor");
        assert_eq!(state_name(ContainerState::Restarting), "restarting");
    }
}
