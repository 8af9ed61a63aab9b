//! The containers service: every container's desired and observed state,
//! and the operations users run on them (create, start, stop, kill,
//! remove, exec, logs, stats, health).
//!
//! It stands on the services below it, which know containers only by id
//! and by what their specs name: the networks ([`Networks`]: addresses,
//! sandboxes, DNS names, published ports), the images ([`Images`]) and
//! the volumes ([`Volumes`]). Supervisors stand above it: a supervised
//! container's exit is handed to them as a `SupervisedExit` on a
//! channel, never called.
//!
//! Invariants:
//! * A container's observed state lives in one `watch` channel
//!   (`Entry::status`); every change goes through `Entry::set_status`
//!   (see [`entry`]). Stop, kill and remove act first and report what was
//!   not saved (`OpReport`).
//! * Whatever a create or a start takes (leases, directory, sandbox, port
//!   proxies, cgroup, the shim's pids) is pushed on one
//!   [`Rollback`](crate::rollback::Rollback) and given back, last first, when
//!   it fails: a failed create leaves nothing, a failed start leaves the
//!   container as it was. A start and a removal's teardown run on tasks of
//!   their own, so a cancelled request cannot stop them half-way.
//! * Start, stop and remove of one container are serialised by its `op` lock;
//!   the exit monitor does not take it, so a stop can wait for the exit the
//!   monitor records.
//! * Every background task (exit monitors, log followers, health checks,
//!   port proxies) is spawned on the runtime's `TaskTracker`. A container's
//!   own tasks end with its token (`Entry::cancel`, cancelled when it is
//!   removed), a child of the service's, which ends with the runtime's:
//!   nothing outlives the shutdown. Running containers are
//!   left running on shutdown: their shims are re-adopted by the next
//!   `rsupd` (see [`Containers::load_all`]).

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cgroups::{AnyManager, Driver, Manager};
use crate::config::RuntimeConfig;
use crate::error::Error;
use crate::images::Images;
use crate::lifecycle::container::{OnOpen, on_open};
use crate::lifecycle::{Event, EventBus, EventKind};
use crate::lock::lock;
use crate::names::{ContainerRef, VolumeName, quote};
use crate::networks::{Holder, Networks};
use crate::process::ExitInfo;
use crate::spec::mounts::MountKind;
use crate::store;
use crate::volumes::Volumes;
use backend::Backend;
use entry::{ContainerCounts, ContainerInfo, ContainerState, Entry, Status};

pub(crate) mod backend;
mod connect;
mod create;
pub mod entry;
pub mod exec;
mod health;
pub mod quarantine;
mod run;
pub mod stats;
#[cfg(test)]
mod tests;
mod watch;

/// Removed containers whose exit status `wait` can still report.
const GRAVEYARD: usize = 256;

/// The exit of a supervised container whose restart type says it should
/// be restarted: handed to the supervisors (see the module's doc).
pub(crate) struct SupervisedExit {
    pub(crate) supervisor: crate::names::SupervisorName,
    pub(crate) entry: Arc<Entry>,
    /// How long it ran (for its backoff).
    pub(crate) ran: Duration,
}

/// What loading one container's directory did.
enum Load {
    /// It was collected (an interrupted create or remove): the directory
    /// is gone.
    Gone,
    /// Loaded (or quarantined).
    Kept,
    /// Loaded; it was running and exited while rsupd was down.
    DiedWhileDown,
}

/// What [`Containers::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Those that died while rsupd was down (for
    /// [`Containers::restart_on_open`]).
    pub died_while_down: Vec<String>,
    /// Every directory under `containers/`, loaded or not: one that could
    /// not be loaded is still somebody's, and its addresses are not handed
    /// to another container.
    pub on_disk: HashSet<String>,
}

/// The containers service. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Containers {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RuntimeConfig,
    pub(crate) containers: Mutex<Vec<Arc<Entry>>>,
    /// (id, name, last status) of removed containers, newest last.
    pub(crate) graveyard: Mutex<VecDeque<(String, String, Status)>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) cgroups: Option<Arc<AnyManager>>,
    /// What runs the containers' processes.
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) networks: Networks,
    pub(crate) images: Images,
    pub(crate) volumes: Volumes,
    /// Container dirs whose state could not be read at start: while there
    /// are any, no image layer is deleted (they may mount them).
    pub(crate) unreadable_containers: std::sync::atomic::AtomicUsize,
    /// Containers whose record could not be read at start.
    pub(crate) quarantined: quarantine::examine::Registry,
    /// Where supervised exits go (set once the supervisors are up).
    pub(crate) supervised_exits: OnceLock<mpsc::UnboundedSender<SupervisedExit>>,
}

/// A number in [0, 1) for backoff jitter (not cryptographic).
fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let f = store::io_err(op, path);
    move |e| Error::from(f(e))
}

fn name_exists(name: &str) -> Error {
    Error::AlreadyExists(format!("a container named {name} already exists"))
}

pub(crate) fn remove_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}
impl Containers {
    /// The service over the containers under `config.state_dir`; nothing
    /// is loaded before [`Containers::load_all`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: RuntimeConfig,
        cgroups: Option<Arc<AnyManager>>,
        backend: Arc<dyn Backend>,
        events: Arc<EventBus>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        networks: Networks,
        images: Images,
        volumes: Volumes,
    ) -> Containers {
        Containers {
            inner: Arc::new(Inner {
                config,
                containers: Mutex::new(Vec::new()),
                graveyard: Mutex::new(VecDeque::new()),
                tracker,
                shutdown,
                cgroups,
                backend,
                events,
                networks,
                images,
                volumes,
                unreadable_containers: std::sync::atomic::AtomicUsize::new(0),
                quarantined: Default::default(),
                supervised_exits: OnceLock::new(),
            }),
        }
    }

    /// Sends the exits of supervised containers to `tx` from now on.
    pub(crate) fn supervise_with(&self, tx: mpsc::UnboundedSender<SupervisedExit>) {
        let _ = self.inner.supervised_exits.set(tx);
    }

    /// Loads every container under `containers/`, re-adopting the ones whose
    /// shim still runs, and starts the background work (sampler, flusher,
    /// DNS sync).
    pub fn load_all(&self) -> Result<Loaded, Error> {
        let containers_dir = self.inner.config.state_dir.join("containers");
        let dirs = std::fs::read_dir(&containers_dir).map_err(io_err("read", &containers_dir))?;
        let mut loaded = Loaded::default();
        for d in dirs.flatten() {
            let dir = d.path();
            let id = d.file_name().to_string_lossy().into_owned();
            match self.load(&id, &dir) {
                Ok(Load::Gone) => {}
                Ok(Load::Kept) => {
                    loaded.on_disk.insert(id);
                }
                Ok(Load::DiedWhileDown) => {
                    loaded.on_disk.insert(id.clone());
                    loaded.died_while_down.push(id);
                }
                Err(e) => {
                    loaded.on_disk.insert(id.clone());
                    self.inner
                        .unreadable_containers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(container = %id, error = %e, "skipping a container whose state cannot be read")
                }
            }
        }
        self.spawn_sampler();
        self.spawn_flusher();
        for e in lock(&self.inner.containers).clone() {
            self.spawn_dns_sync(&e);
        }
        Ok(loaded)
    }

    /// At start, after [`Containers::load_all`]: deletes links of ours that
    /// no container or network owns, brings the networks' leases in line
    /// with the containers and removes cgroups of unknown containers.
    pub async fn sweep_after_load(&self, loaded: &Loaded) {
        let entries = self.entries();
        let holders = Containers::holders(&entries);
        let this = self.clone();
        self.inner
            .networks
            .sweep_links(&holders, &move |l| this.is_quarantined_link(l))
            .await;
        // The table as it is now: a container may have gone meanwhile.
        let entries = self.entries();
        self.inner
            .networks
            .reconcile(&Containers::holders(&entries), &loaded.on_disk);
        self.sweep_orphans();
    }

    /// Collects what a crash may have left without an owner: cgroups of
    /// containers rsupd does not know (reported in the log). Leases are
    /// [`Networks::reconcile`]'s.
    fn sweep_orphans(&self) {
        let known: Vec<String> = lock(&self.inner.containers)
            .iter()
            .map(|e| e.id.clone())
            .collect();
        if let Some(cg) = &self.inner.cgroups {
            for name in cg.list() {
                if !known.contains(&name) {
                    warn!(cgroup = %name, "removing the cgroup of an unknown container");
                    if let Err(e) = cg.remove(&name) {
                        warn!(cgroup = %name, error = %e, "cannot remove it");
                    }
                }
            }
        }
    }

    /// Every container, in the order they were loaded or created.
    pub(crate) fn entries(&self) -> Vec<Arc<Entry>> {
        lock(&self.inner.containers).clone()
    }

    /// The containers of `entries` (a snapshot of the table, see
    /// [`Containers::entries`]) as the networks see them: borrowed, no copy.
    pub(crate) fn holders(entries: &[Arc<Entry>]) -> Vec<Holder<'_>> {
        entries
            .iter()
            .map(|e| Holder {
                id: &e.id,
                name: &e.spec.name,
                attachments: e.attachments(),
            })
            .collect()
    }

    /// Names of the containers made from image `id`.
    pub fn users_of_image(&self, id: &str) -> Vec<String> {
        lock(&self.inner.containers)
            .iter()
            .filter(|e| e.spec.image.as_ref().is_some_and(|i| i.id == id))
            .map(|e| e.spec.name.clone())
            .collect()
    }

    /// Layers the containers mount; `None` when a container's config could
    /// not be read at start (it may be running on layers nobody knows of):
    /// then no layer is deleted.
    pub fn layers_in_use(&self) -> Option<HashSet<String>> {
        if self
            .inner
            .unreadable_containers
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            return None;
        }
        Some(
            lock(&self.inner.containers)
                .iter()
                .filter_map(|e| e.spec.image.as_ref())
                .flat_map(|i| i.layers.iter().cloned())
                .collect(),
        )
    }

    /// After a container made from an image is gone: deletes layers that
    /// only force-removed images had.
    pub(crate) async fn collect_layers(&self) {
        let this = self.clone();
        self.inner
            .images
            .collect_layers(move || this.layers_in_use())
            .await;
    }

    /// Names of the containers that mount volume `name`.
    pub fn users_of_volume(&self, name: &VolumeName) -> Vec<String> {
        lock(&self.inner.containers)
            .iter()
            .filter(|e| {
                e.spec
                    .mounts
                    .iter()
                    .any(|m| matches!(&m.kind, MountKind::Volume { name: n, .. } if n == name))
            })
            .map(|e| e.spec.name.clone())
            .collect()
    }

    /// Loads one container (see [`Load`]).
    fn load(&self, id: &str, dir: &Path) -> Result<Load, Error> {
        use quarantine::examine::{Examined, examine};
        let (spec, mut status) = match examine(dir) {
            Examined::Loaded(spec, status) => (*spec, *status),
            // A create (or the deletion of a removed container's directory)
            // interrupted by a crash: nothing of it runs, collect it.
            Examined::Collect(what) => {
                warn!(container = %id, "{what}");
                let _ = crate::networks::sandbox::unmount_netns(&dir.join("netns"));
                return remove_dir(dir).map(|()| Load::Gone);
            }
            // Unreadable: never acted on.
            Examined::Quarantine(d) => {
                self.quarantine(id, dir, *d);
                return Ok(Load::Kept);
            }
        };
        if status.state == ContainerState::Removed {
            // Its veths, leases and cgroup are collected by the sweeps that
            // follow (they have no owner now); the netns mount goes first.
            info!(container = %spec.name, "finishing an interrupted remove");
            let _ = crate::networks::sandbox::unmount_netns(&dir.join("netns"));
            return remove_dir(dir).map(|()| Load::Gone);
        }
        let mut adopted = None;
        let mut died = false;
        // What load decides holds even if it cannot be saved now (a full
        // disk): the flusher saves it later.
        let mut saved = Ok(());
        // A live shim recorded in state.json is ours whatever the state says
        // (rsupd may have died between the start and recording it).
        if status.shim_pid > 0 {
            adopted = self.inner.backend.adopt(&spec.name, dir, &status);
            if adopted.is_some() && status.state != ContainerState::Running {
                info!(container = %spec.name, "found its shim running: it was being started");
                status.state = ContainerState::Running;
                status.next_start_at = None;
                saved = store::write_json(&dir.join("state.json"), &status);
            }
        }
        if status.state == ContainerState::Running && adopted.is_none() {
            let exit: Option<ExitInfo> = store::read_json(&dir.join("exit.json")).unwrap_or(None);
            status.error = if exit.is_some() {
                String::new()
            } else {
                "the container's shim was lost while rsupd was down".into()
            };
            status.exit = exit;
            status.state = ContainerState::Exited;
            status.shim_pid = 0;
            status.init_pid = 0;
            saved = store::write_json(&dir.join("state.json"), &status);
            info!(container = %spec.name, "exited while rsupd was down");
            died = true;
        }
        let entry = Arc::new(Entry::new(
            id.to_string(),
            spec,
            dir.to_path_buf(),
            status,
            self.inner.shutdown.child_token(),
        ));
        if let Err(e) = &saved {
            warn!(container = %entry.spec.name, error = %e, "its state is not saved yet");
        }
        entry.note_saved(&saved);
        if let Some(run) = adopted {
            *lock(&entry.init) = run.init;
            info!(container = %entry.spec.name, "re-adopted a running container");
            self.monitor(entry.clone(), run.ended);
            self.spawn_health(&entry);
        }
        lock(&self.inner.containers).push(entry);
        Ok(if died {
            Load::DiedWhileDown
        } else {
            Load::Kept
        })
    }

    /// At start: applies restart policies as if rsupd had watched all along.
    /// A container that died while rsupd was down gets its policy's decision;
    /// `always` (and `unless-stopped` unless the user stopped it) containers
    /// that are not running are started; pending restarts are rescheduled.
    pub fn restart_on_open(&self, died_while_down: &[String]) {
        let list = lock(&self.inner.containers).clone();
        let now = SystemTime::now();
        for e in list {
            let died = died_while_down.contains(&e.id);
            match on_open(&e.spec.restart.policy, &e.status(), died, now) {
                OnOpen::Exited => self.after_exit(e.clone(), Duration::ZERO),
                OnOpen::StartIn(delay) => self.schedule_start(e.clone(), delay),
                OnOpen::Leave => {}
            }
        }
    }

    /// The container `key` names (see [`Containers::find_any`]), which must not
    /// be quarantined: every verb but list, inspect, stats and rm.
    pub(crate) fn find(&self, key: &ContainerRef) -> Result<Arc<Entry>, Error> {
        let entry = self.find_any(key)?;
        self.refuse_quarantined(&entry)?;
        Ok(entry)
    }

    /// The container `key` names: by id or name, else by a unique id
    /// prefix.
    pub(crate) fn find_any(&self, key: &ContainerRef) -> Result<Arc<Entry>, Error> {
        let key = key.as_str();
        let list = lock(&self.inner.containers);
        if let Some(e) = list.iter().find(|e| e.id == key || e.spec.name == key) {
            return Ok(e.clone());
        }
        // A ContainerRef is never empty: a prefix never matches them all.
        let matches: Vec<_> = list.iter().filter(|e| e.id.starts_with(key)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!("no such container: {key}"))),
            _ => Err(Error::InvalidArgument {
                field: "container",
                reason: format!("{} matches more than one container id", quote(key)),
            }),
        }
    }

    /// Takes a removed container out of the table (its last status stays
    /// for `wait`) and ends its tasks.
    pub(crate) fn forget(&self, entry: &Arc<Entry>) {
        lock(&self.inner.containers).retain(|e| !Arc::ptr_eq(e, entry));
        entry.cancel.cancel();
        let mut g = lock(&self.inner.graveyard);
        g.push_back((entry.id.clone(), entry.spec.name.clone(), entry.status()));
        while g.len() > GRAVEYARD {
            g.pop_front();
        }
    }

    pub(crate) fn event(&self, entry: &Entry, kind: EventKind, attrs: &[(&str, String)]) {
        self.inner.events.publish(Event {
            time: SystemTime::now(),
            kind,
            subject_type: "container",
            subject: entry.spec.name.clone(),
            id: entry.id.clone(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        });
    }

    /// Running containers, or all with `all`, oldest first.
    pub fn list(&self, all: bool) -> Vec<ContainerInfo> {
        let list = lock(&self.inner.containers).clone();
        let mut out: Vec<_> = list
            .iter()
            .map(|e| e.info())
            .filter(|i| all || i.state == ContainerState::Running)
            .collect();
        out.sort_by_key(|i| i.created_at);
        out
    }

    pub fn inspect(&self, key: &ContainerRef) -> Result<ContainerInfo, Error> {
        Ok(self.find_any(key)?.info())
    }

    /// The cgroup driver in use, if any.
    pub fn cgroup_driver(&self) -> Option<Driver> {
        self.inner.cgroups.as_ref().map(|c| c.driver())
    }

    /// How many containers there are and how many of them run.
    pub fn counts(&self) -> ContainerCounts {
        let list = lock(&self.inner.containers);
        let running = list
            .iter()
            .filter(|e| e.status.borrow().state == ContainerState::Running)
            .count();
        ContainerCounts {
            total: list.len(),
            running,
        }
    }
}
