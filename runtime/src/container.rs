//! The container manager: desired and observed state of every container,
//! and the operations users run on them.
//!
//! Invariants:
//! * A container's observed state lives in one `watch` channel
//!   ([`Entry::status`]); every change goes through [`Entry::set_status`], which
//!   writes `state.json` before anyone can observe the new state. A write
//!   that fails (a full disk) does not hold the change back: the state in
//!   memory is the truth, the entry is marked unsaved, and the file catches
//!   up with the next write that succeeds (a flusher retries every second).
//!   Stop, kill and remove act first and report what was not saved
//!   ([`OpReport`]).
//! * Whatever a create or a start takes (leases, directory, sandbox, port
//!   proxies, cgroup, the shim's pids) is pushed on one
//!   [`Rollback`](crate::rollback::Rollback) and given back, last first, when
//!   it fails: a failed create leaves nothing, a failed start leaves the
//!   container as it was. A start and a removal's teardown run on tasks of
//!   their own, so a cancelled request cannot stop them half-way.
//! * Start, stop and remove of one container are serialised by its `op` lock;
//!   the exit monitor does not take it, so a stop can wait for the exit the
//!   monitor records.
//! * Every background task (exit monitors, log followers) is spawned on the
//!   runtime's `TaskTracker` and ends when the root `CancellationToken` is
//!   cancelled. Running containers are left running on shutdown: their shims
//!   are re-adopted by the next `rsupd` (see [`Runtime::open`]).

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, instrument, warn};

use crate::cgroups::{self, AnyManager, Driver, Limits, Manager, Stats};
use crate::health::HealthState;
use crate::logs::{self, LogRecord};
use crate::names::{ContainerRef, quote};
use crate::process::SpawnError;
use crate::process::{self, ExitInfo};
use crate::rollback::Rollback;
use crate::spec::{self, ContainerSpec, LogConfig, ResourcesRequest, SpecRequest};
use crate::store::{self, StateLock, StoreError};
use crate::supervise::{Backoff, ChildRestart, Ending, Event, EventBus, EventKind};
use crate::supervisor::{Child, Sup};
use crate::{Error, signal, sys};

/// Version of `state.json`.
pub(crate) const STATE_VERSION: u32 = 1;
/// Removed containers whose exit status `wait` can still report.
const GRAVEYARD: usize = 256;
/// How long a forced kill may take before we give up waiting.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(30);
/// How long a new rsupd waits for the state dir's lock (see
/// [`StateLock::acquire_patiently`]).
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of all state (`/var/lib/rsup`).
    pub state_dir: PathBuf,
    /// Binary started as the shim and the exec helper: `rsup-shim`, held
    /// open by the daemon (`/proc/self/fd/N`), or rsupd's own binary
    /// (`/proc/self/exe`).
    pub shim_exe: PathBuf,
    /// Log rotation for containers that do not set their own.
    pub log: LogConfig,
    /// Name of the cgroup subtree under rsupd's own cgroup (`rsup`); `None`
    /// runs containers without cgroups.
    pub cgroup_subtree: Option<String>,
    /// How often usage is sampled (CPU %, OOM kills, metrics).
    pub stats_interval: Duration,
    pub net: NetConfig,
    /// The remap user and its subordinate id files (`--userns remap`).
    pub userns: crate::userns::UsernsConfig,
    /// The pids limit of a container created without `pids_limit`
    /// (`None`: unlimited). rsupd's `--default-pids-limit`.
    pub default_pids_limit: Option<u64>,
    /// Limits of image imports: the per-image maximum and the state
    /// device's free-space reserve.
    pub image_limits: crate::image::limits::UnpackLimits,
}

/// Network settings of the daemon.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Prefix of every link rsupd makes (bridges `<prefix>b…`, veths
    /// `<prefix>v…`), 1-4 characters; leftovers with it are swept at start.
    pub prefix: String,
    /// Subnet of the `default` network when it is first made.
    pub default_subnet: crate::net::Subnet,
    /// Port of the embedded DNS servers (53).
    pub dns_port: u16,
    /// Where names unknown to a network go; none: NXDOMAIN.
    pub dns_upstream: Vec<std::net::SocketAddr>,
}

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

/// The container counts of `info` ([`Runtime::counts`]).
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

/// Resource usage of one container, as `stats` shows it.
#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    pub state: ContainerState,
    /// CPU use over the last sampling interval; 100 is one full CPU.
    pub cpu_percent: f64,
    /// Working set against the memory limit, or the host's memory when
    /// there is none (see [`memory_percent`]).
    pub memory_percent: f64,
    pub usage: Stats,
    /// Whether `usage` was read from a cgroup (false: never started, or no cgroups).
    pub sampled: bool,
    /// Restarts by policy or supervisor over the container's whole life.
    pub restarts: u64,
}

/// Total memory of the host (`MemTotal` in `/proc/meminfo`); 0 when
/// unknown.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// MEM % as `stats` shows it (Docker's): the working set against the
/// memory limit, or against the host's memory `host_mem` for a container
/// without one; a limit above the host's memory counts as the host's.
pub fn memory_percent(working_set: u64, limit: Option<u64>, host_mem: u64) -> f64 {
    let limit = limit.unwrap_or(0);
    let base = if limit > 0 {
        limit.min(host_mem.max(1))
    } else {
        host_mem
    };
    if base > 0 {
        working_set as f64 / base as f64 * 100.0
    } else {
        0.0
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    fn note_saved(&self, r: &Result<(), StoreError>) {
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

pub(crate) struct Inner {
    pub(crate) config: RuntimeConfig,
    pub(crate) containers: Mutex<Vec<Arc<Entry>>>,
    /// (id, name, last status) of removed containers, newest last.
    pub(crate) graveyard: Mutex<VecDeque<(String, String, Status)>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) cgroups: Option<Arc<AnyManager>>,
    pub(crate) events: EventBus,
    pub(crate) supervisors: Mutex<Vec<Arc<Sup>>>,
    pub(crate) networks: Mutex<Vec<Arc<crate::network::Network>>>,
    pub(crate) netlink: tokio::sync::OnceCell<crate::net::Netlink>,
    pub(crate) images: Arc<crate::image::ImageStore>,
    /// Creates from an image hold it shared, image removals exclusively.
    pub(crate) image_gate: tokio::sync::RwLock<()>,
    /// Container dirs whose state could not be read at start: while there
    /// are any, no image layer is deleted (they may mount them).
    pub(crate) unreadable_containers: std::sync::atomic::AtomicUsize,
    /// Containers whose record could not be read at start.
    pub(crate) quarantined: crate::quarantine::Registry,
    _lock: StateLock,
}

/// The container runtime. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn random_id() -> String {
    let mut b = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Fall back on time and pid; ids only need to be unique here.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        b[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
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

impl Runtime {
    /// Opens the state directory (taking its lock), loads every container and
    /// re-adopts the ones whose shim still runs.
    pub async fn open(config: RuntimeConfig) -> Result<Runtime, Error> {
        let root = config.state_dir.clone();
        let containers_dir = root.join("containers");
        store::create_root(&root)?;
        let state_lock = StateLock::acquire_patiently(&root, LOCK_PATIENCE).await?;
        // A state dir of an older rsupd (or one whose modes were changed
        // by hand): only root may reach what containers wrote.
        for f in store::fix_modes(&root)? {
            warn!(
                path = %f.path.display(),
                from = format_args!("{:o}", f.from),
                to = format_args!("{:o}", f.to),
                "fixed the mode of a state file"
            );
        }
        let cgroups = match &config.cgroup_subtree {
            None => None,
            Some(sub) => match cgroups::detect(sub) {
                Ok(m) => {
                    // Containers are placed in these too, so that their
                    // cgroup namespace roots none at rsupd's own cgroup.
                    match m.extra_hierarchies() {
                        Ok(extra) => info!(driver = m.driver().as_str(), ?extra, "cgroups"),
                        Err(e) => warn!(
                            driver = m.driver().as_str(),
                            error = %e,
                            "cgroups: containers cannot start until this is fixed"
                        ),
                    }
                    Some(Arc::new(m))
                }
                Err(e) => {
                    warn!(error = %e, "running containers without cgroup limits");
                    None
                }
            },
        };
        let images = Arc::new(
            crate::image::ImageStore::open(&root.join("images"))?.with_limits(config.image_limits),
        );
        for f in store::sweep_temp_files(&root) {
            info!(path = %f.display(), "removed a temporary file left by an interrupted write");
        }
        crate::images::sweep_views(&root.join("run").join("views"));
        let _ = remove_dir(&root.join("uploads"));
        let runtime = Runtime {
            inner: Arc::new(Inner {
                config,
                containers: Mutex::new(Vec::new()),
                graveyard: Mutex::new(VecDeque::new()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                cgroups,
                events: EventBus::default(),
                supervisors: Mutex::new(Vec::new()),
                networks: Mutex::new(Vec::new()),
                netlink: tokio::sync::OnceCell::new(),
                images,
                image_gate: tokio::sync::RwLock::new(()),
                unreadable_containers: std::sync::atomic::AtomicUsize::new(0),
                quarantined: Default::default(),
                _lock: state_lock,
            }),
        };
        runtime.load_supervisors()?;
        runtime.open_networks().await?;
        let dirs = std::fs::read_dir(&containers_dir).map_err(io_err("read", &containers_dir))?;
        let mut died_while_down = Vec::new();
        for d in dirs.flatten() {
            let dir = d.path();
            let id = d.file_name().to_string_lossy().into_owned();
            match runtime.load(&id, &dir) {
                Ok(true) => died_while_down.push(id),
                Ok(false) => {}
                Err(e) => {
                    runtime
                        .inner
                        .unreadable_containers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(container = %id, error = %e, "skipping a container whose state cannot be read")
                }
            }
        }
        runtime.spawn_sampler();
        runtime.spawn_flusher();
        for e in lock(&runtime.inner.containers).clone() {
            runtime.spawn_dns_sync(&e);
        }
        runtime.sweep_links().await;
        runtime.reconcile_leases();
        runtime.sweep_orphans();
        runtime.restart_on_open(&died_while_down);
        // Layers an interrupted removal left without a user.
        runtime.collect_layers().await;
        Ok(runtime)
    }

    /// Loads one container; `Ok(true)` when it was running and exited while
    /// rsupd was down.
    fn load(&self, id: &str, dir: &Path) -> Result<bool, Error> {
        use crate::quarantine::{Examined, examine};
        let (spec, mut status) = match examine(dir) {
            Examined::Loaded(spec, status) => (*spec, *status),
            // A create (or the deletion of a removed container's directory)
            // interrupted by a crash: nothing of it runs, collect it.
            Examined::Collect(what) => {
                warn!(container = %id, "{what}");
                let _ = crate::network::unmount_netns(&dir.join("netns"));
                return remove_dir(dir).map(|()| false);
            }
            // Unreadable: never acted on.
            Examined::Quarantine(d) => {
                self.quarantine(id, dir, *d);
                return Ok(false);
            }
        };
        if status.state == ContainerState::Removed {
            // Its veths, leases and cgroup are collected by the sweeps that
            // follow (they have no owner now); the netns mount goes first.
            info!(container = %spec.name, "finishing an interrupted remove");
            let _ = crate::network::unmount_netns(&dir.join("netns"));
            return remove_dir(dir).map(|()| false);
        }
        let mut adopted = None;
        let mut died = false;
        // What load decides holds even if it cannot be saved now (a full
        // disk): the flusher saves it later.
        let mut saved = Ok(());
        // A live shim recorded in state.json is ours whatever the state says
        // (rsupd may have died between the start and recording it).
        if status.shim_pid > 0 {
            adopted = adopt(&status);
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
        let entry = Arc::new(Entry::new(id.to_string(), spec, dir.to_path_buf(), status));
        if let Err(e) = &saved {
            warn!(container = %entry.spec.name, error = %e, "its state is not saved yet");
        }
        entry.note_saved(&saved);
        if let Some((shim_fd, init_fd)) = adopted {
            *lock(&entry.init_pidfd) = init_fd.map(Arc::new);
            info!(container = %entry.spec.name, "re-adopted a running container");
            self.monitor(entry.clone(), shim_fd);
            self.spawn_health(&entry);
        }
        lock(&self.inner.containers).push(entry);
        Ok(died)
    }

    /// At start: applies restart policies as if rsupd had watched all along.
    /// A container that died while rsupd was down gets its policy's decision;
    /// `always` (and `unless-stopped` unless the user stopped it) containers
    /// that are not running are started; pending restarts are rescheduled.
    fn restart_on_open(&self, died_while_down: &[String]) {
        let list = lock(&self.inner.containers).clone();
        for e in list {
            let s = e.status();
            let policy = e.spec.restart.policy;
            if died_while_down.contains(&e.id) {
                self.after_exit(e.clone(), Duration::ZERO);
            } else if s.state == ContainerState::Restarting {
                let due = s
                    .next_start_at
                    .and_then(|t| t.duration_since(SystemTime::now()).ok());
                self.schedule_start(e.clone(), due.unwrap_or(Duration::ZERO));
            } else if s.state == ContainerState::Exited
                && policy.start_with_daemon(s.stopped_by_user)
            {
                self.schedule_start(e.clone(), Duration::ZERO);
            }
        }
    }

    /// The container `key` names (see [`Runtime::find_any`]), which must not
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

    pub(crate) fn forget(&self, entry: &Arc<Entry>) {
        lock(&self.inner.containers).retain(|e| !Arc::ptr_eq(e, entry));
        let mut g = lock(&self.inner.graveyard);
        g.push_back((entry.id.clone(), entry.spec.name.clone(), entry.status()));
        while g.len() > GRAVEYARD {
            g.pop_front();
        }
    }

    /// Records a new container. Nothing runs until [`Runtime::start`].
    #[instrument(skip_all, fields(container = req.name.as_ref().map_or("", |n| n.as_str())))]
    pub async fn create(&self, req: SpecRequest) -> Result<ContainerInfo, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let id = random_id();
        // Held until the container is recorded: its image cannot go away
        // in between.
        let _image_gate = match req.image {
            None => None,
            Some(_) => Some(self.inner.image_gate.read().await),
        };
        let (image, view) = match &req.image {
            None => (None, None),
            Some(r) => {
                let (source, view) = self.resolve_image(r).await?;
                (Some(source), Some(view))
            }
        };
        let config = &self.inner.config;
        let cx = spec::Context {
            default_name: format!("rsup-{}", &id[..12]),
            log: config.log,
            default_pids_limit: config.default_pids_limit,
            userns: config.userns.clone(),
            volumes_dir: self.volumes_dir(),
            dir: config.state_dir.join("containers").join(&id),
            image,
        };
        // Every check of the request, in one step that takes nothing (it
        // reads the rootfs or the image's view, so off the async threads).
        let spec::Validated { spec, net } = tokio::task::spawn_blocking(move || {
            let validated = spec::validate(req, cx);
            drop(view);
            validated
        })
        .await
        .map_err(|e| Error::FailedPrecondition(format!("validation task failed: {e}")))??;
        if let Some(sup) = &spec.supervisor {
            self.check_supervisor(sup)?;
        }
        self.ensure_volumes(&spec.mounts)?;
        // Refuse a taken name before anything is taken (checked again
        // when the container is recorded: another create may race us).
        if self.name_taken(&spec.name) {
            return Err(name_exists(&spec.name));
        }
        // From here on every step that takes something pushes its undo:
        // a failure at any point (or a cancelled request) gives it all
        // back. Named volumes made on first use above stay, as Docker
        // keeps them.
        let mut undo = Rollback::new(
            format!("create of {}", spec.name),
            Some(self.inner.tracker.clone()),
        );
        let made = self.create_steps(&id, spec, &net, &mut undo).await;
        match made {
            Ok(entry) => {
                undo.commit();
                self.spawn_dns_sync(&entry);
                info!(id = %id, "created");
                self.event(&entry, EventKind::Create, &[]);
                Ok(entry.info())
            }
            Err(e) => {
                let failures = undo.undo().await;
                Err(e.with_cleanup_failures(&failures))
            }
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        lock(&self.inner.containers)
            .iter()
            .any(|e| e.spec.name == name)
    }

    /// The steps of a create that take something (addresses, the
    /// directory, the name), each followed by its undo on `undo`.
    async fn create_steps(
        &self,
        id: &str,
        mut spec: ContainerSpec,
        net: &spec::NetPlan,
        undo: &mut Rollback,
    ) -> Result<Arc<Entry>, Error> {
        spec.networks = self.lease(id, net)?;
        if !spec.networks.is_empty() {
            let rt = self.clone();
            let (id, nets) = (id.to_string(), spec.networks.clone());
            undo.push("release the addresses", move || {
                rt.release_leases(&id, &nets);
                Ok(())
            });
        }
        let spec = spec;
        let dir = self.inner.config.state_dir.join("containers").join(id);
        let status = Status::fresh(ContainerState::Created, SystemTime::now());
        store::private_dir(&dir)?;
        {
            let dir = dir.clone();
            undo.push("remove the container directory", move || {
                remove_dir(&dir).map_err(|e| e.to_string())
            });
        }
        // The overlay root takes the upper dir's attributes: Docker's 0755.
        store::visible_dir(&dir.join("upper"))?;
        store::visible_dir(&dir.join("work"))?;
        // state.json's directory sync below makes this entry durable too.
        store::write_json_then(&dir.join("config.json"), &spec)?;
        store::create_private_file(&dir.join("container.log"))?;
        logs::DropCounter::create(&dir.join(logs::DROPPED_FILE))
            .map_err(io_err("create", &dir.join(logs::DROPPED_FILE)))?;
        // state.json last: its presence marks the create as complete.
        store::write_json(&dir.join("state.json"), &status)?;
        let entry = Arc::new(Entry::new(id.to_string(), spec, dir, status));
        let mut list = lock(&self.inner.containers);
        if list.iter().any(|e| e.spec.name == entry.spec.name) {
            return Err(name_exists(&entry.spec.name));
        }
        list.push(entry.clone());
        Ok(entry)
    }

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
        let state = st.state;
        let by_user = by == StartBy::User;
        match by {
            // The user stopped, started or removed it meanwhile.
            StartBy::Policy if state != ContainerState::Restarting => return Ok(entry.info()),
            StartBy::Supervisor
                if st.stopped_by_user
                    || matches!(state, ContainerState::Running | ContainerState::Removed) =>
            {
                return Ok(entry.info());
            }
            _ => {}
        }
        entry.cancel_restart();
        if state == ContainerState::Removed {
            return Err(Error::NotFound(format!("no such container: {key}")));
        }
        if !state.can_start() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is already running",
                entry.spec.name
            )));
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
        let (started, oom_base) = match self.start_steps(entry, &st, &mut undo).await {
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
                let _ = entry.set_status(|s| {
                    s.error = msg;
                    if exit.is_some() {
                        s.exit = exit;
                    }
                });
                return Err(e);
            }
        };
        *lock(&entry.init_pidfd) = Some(Arc::new(started.init_pidfd));
        let persisted = entry.set_status(|s| {
            s.state = ContainerState::Running;
            s.started_at = Some(SystemTime::now());
            s.shim_pid = started.shim_pid;
            s.shim_start_time = started.shim_start_time;
            s.init_pid = started.init_pid;
            s.init_start_time = started.init_start_time;
            s.error.clear();
            s.start_count += 1;
            s.oom_kills = oom_base;
            s.oom_kills_at_start = oom_base;
            s.oom_killed = false;
            s.next_start_at = None;
            s.supervisor_stopping = false;
            if by_user {
                s.stopped_by_user = false;
                s.restart_count = 0;
                s.backoff.reset();
            } else {
                s.restart_count += 1;
                s.restarts_total += 1;
            }
        });
        self.monitor(entry.clone(), started.shim_pidfd);
        self.spawn_health(entry);
        self.event(
            entry,
            EventKind::Start,
            &[("pid", started.init_pid.to_string())],
        );
        // It runs: a state.json that cannot be written now is caught up
        // later (its shim was recorded before the command started, so a
        // restarted rsupd re-adopts it meanwhile).
        if let Err(e) = persisted {
            warn!(container = %entry.spec.name, error = %e, "started, but its state is not saved yet");
        }
        info!(container = %entry.spec.name, pid = started.init_pid, "started");
        Ok(entry.info())
    }

    /// The steps of a start that make something, each followed by its
    /// undo on `undo`; `before` is the status before the start.
    async fn start_steps(
        &self,
        entry: &Arc<Entry>,
        before: &Status,
        undo: &mut Rollback,
    ) -> Result<(process::Started, u64), Error> {
        if !self.sandbox_complete(entry).await? {
            let (rt, e) = (self.clone(), entry.clone());
            undo.push_async(
                "remove the network namespace and veths",
                move || async move {
                    match rt.drop_sandbox(&e).await.as_slice() {
                        [] => Ok(()),
                        failures => Err(failures.join("; ")),
                    }
                },
            );
            self.make_sandbox(entry).await?;
        }
        if self.ensure_ports(entry).await? {
            let e = entry.clone();
            undo.push("close the published ports", move || {
                Runtime::stop_ports(&e);
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
            let (e, b) = (entry.clone(), before.clone());
            undo.push("forget the shim's pids", move || {
                let _ = e.set_status(|s| {
                    s.shim_pid = b.shim_pid;
                    s.shim_start_time = b.shim_start_time;
                    s.init_pid = b.init_pid;
                    s.init_start_time = b.init_start_time;
                });
                Ok(())
            });
        }
        let exe = self.inner.config.shim_exe.clone();
        let dir = entry.dir.clone();
        let limits = *lock(&entry.resources);
        let privileged = entry.spec.security.privileged;
        let e2 = entry.clone();
        let started = tokio::task::spawn_blocking(move || {
            let mut oom_base = 0;
            if let Some(cg) = &cg {
                cg.create(&id)
                    .and_then(|()| cg.restrict_devices(&id, privileged))
                    .and_then(|()| cg.apply(&id, &limits))
                    .map_err(|e| SpawnError::Setup(format!("cgroup: {e}")))?;
                oom_base = cg.stats(&id).map(|s| s.oom_kills).unwrap_or(0);
            }
            // On v2 the init is created in its cgroup, not moved there.
            let into = cg.as_ref().and_then(|cg| cg.clone_into_dir(&id));
            // On error the shim and its init are killed and reaped, and
            // their pidfds closed, by process::start.
            let started = process::start(&exe, &dir, into.as_deref(), |s| {
                debug!(
                    container = %id,
                    init = s.init_pid,
                    in_cgroup = s.init_in_cgroup,
                    "init ready"
                );
                if let Some(cg) = &cg {
                    let placed = if s.init_in_cgroup {
                        cg.add_created_process(&id, s.init_pid)
                    } else {
                        cg.add_process(&id, s.init_pid)
                    };
                    placed.map_err(|e| format!("cgroup: {e}"))?;
                }
                // Record the processes before the command runs: an rsupd
                // that dies from here on finds and re-adopts them instead of
                // starting a second instance.
                e2.set_status(|st| {
                    st.shim_pid = s.shim_pid;
                    st.shim_start_time = s.shim_start_time;
                    st.init_pid = s.init_pid;
                    st.init_start_time = s.init_start_time;
                })
                .map_err(|e| format!("recording the shim: {}", Error::from(e)))
            })?;
            Ok::<_, SpawnError>((started, oom_base))
        })
        .await
        .map_err(|e| Error::FailedPrecondition(format!("start task failed: {e}")))?;
        started.map_err(|source| Error::Spawn {
            container: entry.spec.name.clone(),
            source,
        })
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

    /// The event bus (for the Events RPC).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Decides what happens after a container's process ended: auto-remove,
    /// a policy restart after the backoff delay, or nothing.
    pub(crate) fn after_exit(&self, entry: Arc<Entry>, ran: Duration) {
        let s = entry.status();
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        if entry.spec.auto_remove {
            let rt = self.clone();
            self.inner.tracker.spawn(async move {
                if let Err(e) = rt.remove_entry(&entry, true).await {
                    warn!(container = %entry.spec.name, error = %e, "auto-remove failed");
                }
            });
            return;
        }
        if let Some(sup) = entry.spec.supervisor.clone() {
            // Supervised: the supervisor's strategy decides, with the
            // container's policy as its OTP restart type.
            if s.supervisor_stopping || s.stopped_by_user {
                return;
            }
            let restart = ChildRestart::of(&entry.spec.restart.policy)
                .restarts(s.exit.map_or(-1, |e| e.code), s.oom_killed);
            if restart {
                self.child_failed(sup, Child::Container(entry), ran);
            }
            return;
        }
        let ending = Ending {
            exit_code: s.exit.map_or(-1, |e| e.code),
            oom_killed: s.oom_killed,
            stopped_by_user: s.stopped_by_user,
            restarts: s.restart_count,
        };
        if !entry.spec.restart.policy.should_restart(&ending) {
            return;
        }
        let mut backoff = s.backoff;
        let delay = backoff.next_delay(&entry.spec.restart.backoff, ran, random_unit());
        let r = entry.set_status(|st| {
            st.state = ContainerState::Restarting;
            st.backoff = backoff;
            st.next_start_at = Some(SystemTime::now() + delay);
        });
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

    /// Starts `entry` after `delay` unless cancelled (user stop/start/rm).
    pub(crate) fn schedule_start(&self, entry: Arc<Entry>, delay: Duration) {
        let token = self.inner.shutdown.child_token();
        if let Some(old) = lock(&entry.pending_restart).replace(token.clone()) {
            old.cancel();
        }
        if entry.status().state != ContainerState::Restarting {
            let _ = entry.set_status(|s| {
                s.state = ContainerState::Restarting;
                s.next_start_at = Some(SystemTime::now() + delay);
            });
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
                let _ = entry.set_status(|s| {
                    s.state = ContainerState::Exited;
                    s.restart_count += 1;
                    s.error = e.to_string();
                });
                rt.after_exit(entry, Duration::ZERO);
            }
        });
    }

    /// Watches the shim of a running container and records its exit.
    fn monitor(&self, entry: Arc<Entry>, shim_pidfd: OwnedFd) {
        let rt = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let shim_pid = entry.status().shim_pid;
            match sys::async_pidfd(shim_pidfd) {
                Ok(fd) => {
                    tokio::select! {
                        _ = fd.readable() => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                Err(e) => warn!(container = %entry.spec.name, error = %e, "cannot watch the shim; polling"),
            }
            // Reap the shim if it is our child (it is not after a re-adoption).
            let shim = nix::unistd::Pid::from_raw(shim_pid);
            while let Ok(WaitStatus::StillAlive) = waitpid(shim, Some(WaitPidFlag::WNOHANG)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let exit: Option<ExitInfo> = store::read_json(&entry.dir.join("exit.json")).unwrap_or(None);
            *lock(&entry.init_pidfd) = None;
            crate::health::stop_health(&entry);
            let oom_now = rt.sample(&entry).map(|s| s.oom_kills);
            let r = entry.set_status(|s| {
                if let Some(n) = oom_now {
                    s.oom_kills = s.oom_kills.max(n);
                }
                s.oom_killed = s.oom_kills > s.oom_kills_at_start && exit.is_some_and(|e| e.signal == libc::SIGKILL);
                s.state = ContainerState::Exited;
                s.error = match exit {
                    Some(_) => String::new(),
                    None => "the shim ended without recording an exit status".into(),
                };
                s.exit = exit;
                s.shim_pid = 0;
                s.init_pid = 0;
            });
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
                let _ = entry.set_status(|s| {
                    s.state = ContainerState::Exited;
                    s.stopped_by_user = true;
                    s.next_start_at = None;
                });
                self.event(&entry, EventKind::Stop, &[]);
            }
            report.note_unsaved(&entry);
            return Ok((entry.info(), report));
        }
        // Mark first: the exit this causes must not be restarted (in
        // memory at once, on disk when it can be).
        let _ = entry.set_status(|s| s.stopped_by_user = true);
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

    /// Removes a container and everything it left on disk. A running one is
    /// refused unless `force`, which kills it first. Idempotent in its
    /// parts: whatever is already gone (directory, state.json, netns
    /// mount, veths, cgroup, leases) is skipped; what cannot be removed is
    /// in the report, and the container is removed from the API anyway.
    #[instrument(skip_all, fields(container = %key))]
    pub async fn remove(&self, key: &ContainerRef, force: bool) -> Result<OpReport, Error> {
        let entry = self.find_any(key)?;
        if self.is_quarantined(&entry.id) {
            return self.remove_quarantined(&entry, force).await;
        }
        self.remove_entry(&entry, force).await
    }

    pub(crate) async fn remove_entry(
        &self,
        entry: &Arc<Entry>,
        force: bool,
    ) -> Result<OpReport, Error> {
        let op = entry.op.clone().lock_owned().await;
        let state = entry.status().state;
        match state {
            ContainerState::Removed => return Ok(OpReport::default()),
            ContainerState::Running | ContainerState::Restarting if !force => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is {}: stop it first or force the removal",
                    entry.spec.name,
                    if state == ContainerState::Running {
                        "running"
                    } else {
                        "restarting"
                    }
                )));
            }
            ContainerState::Restarting => entry.cancel_restart(),
            ContainerState::Running => {
                entry.cancel_restart();
                let _ = entry.set_status(|s| s.stopped_by_user = true);
                entry.signal_if_running(libc::SIGKILL)?;
                if !entry.wait_not_running(KILL_WAIT).await {
                    return Err(Error::FailedPrecondition(format!(
                        "container {} did not die after SIGKILL",
                        entry.spec.name
                    )));
                }
            }
            ContainerState::Created | ContainerState::Exited => {}
            // Quarantined: only `remove` (through `remove_quarantined`).
            // (No longer quarantined: removed meanwhile.)
            ContainerState::Unknown => {
                self.refuse_quarantined(entry)?;
                return Ok(OpReport::default());
            }
        }
        // Mark first: a crash from here on finishes the removal at start.
        // Best effort: a directory that is gone, or a full disk, does not
        // stop the removal (the directory goes below).
        let _ = entry.set_status(|s| s.state = ContainerState::Removed);
        self.forget(entry);
        self.event(entry, EventKind::Destroy, &[]);
        // The rest runs to its end even if the caller goes away.
        let (rt, e) = (self.clone(), entry.clone());
        let teardown = self.inner.tracker.spawn(
            async move {
                let _op = op;
                rt.tear_down(&e).await
            }
            .instrument(tracing::Span::current()),
        );
        let warnings = teardown
            .await
            .map_err(|e| Error::FailedPrecondition(format!("remove task failed: {e}")))?;
        for w in &warnings {
            warn!(container = %entry.spec.name, warning = %w, "removed, but");
        }
        info!(container = %entry.spec.name, "removed");
        Ok(OpReport { warnings })
    }

    /// Removes the container's cgroups and its directory (off the runtime's
    /// threads); returns a warning for each that stays, the directory's
    /// ending with `then` (what happens to it next).
    pub(crate) async fn remove_cgroup_and_dir(&self, entry: &Entry, then: &str) -> Vec<String> {
        use crate::cgroups::Manager;
        let name = &entry.spec.name;
        let dir = entry.dir.clone();
        let cg = self.inner.cgroups.clone();
        let id = entry.id.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let cgroup = match cg {
                Some(cg) => cg.remove(&id).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            (cgroup, remove_dir(&dir))
        })
        .await;
        let mut warnings = Vec::new();
        match removed {
            Ok((cgroup, dir)) => {
                if let Err(e) = cgroup {
                    warnings.push(format!("container {name}: cgroup not removed: {e}"));
                }
                if let Err(e) = dir {
                    warnings.push(format!(
                        "container {name}: its directory is not removed ({e}); {then}"
                    ));
                }
            }
            Err(e) => warnings.push(format!("container {name}: remove task failed: {e}")),
        }
        warnings
    }

    /// Removes what a forgotten container leaves: sandbox, leases, cgroup,
    /// directory, layers only it used. Every part is tried; returns what
    /// could not be removed.
    async fn tear_down(&self, entry: &Arc<Entry>) -> Vec<String> {
        let name = &entry.spec.name;
        let mut warnings: Vec<String> = Vec::new();
        for f in self.drop_sandbox(entry).await {
            warnings.push(format!("container {name}: network: {f}"));
        }
        for f in self.release(entry) {
            warnings.push(format!(
                "container {name}: its addresses are released, but not saved: {f}"
            ));
        }
        warnings.extend(
            self.remove_cgroup_and_dir(entry, "rsupd removes it at its next start")
                .await,
        );
        // The container is forgotten either way: its layers may go.
        if entry.spec.image.is_some() {
            self.collect_layers().await;
        }
        warnings
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

    /// Waits until the container has run and is no longer running; returns
    /// its exit (or, for a removed container, the last exit it had).
    pub async fn wait(&self, key: &ContainerRef) -> Result<(Option<ExitInfo>, String), Error> {
        let entry = match self.find(key) {
            Ok(e) => e,
            Err(Error::NotFound(m)) => {
                let g = lock(&self.inner.graveyard);
                return g
                    .iter()
                    .rev()
                    .find(|(id, name, s)| {
                        (id == key.as_str() || name == key.as_str())
                            && (s.exit.is_some() || !s.error.is_empty())
                    })
                    .map(|(_, _, s)| (s.exit, s.error.clone()))
                    .ok_or(Error::NotFound(m));
            }
            Err(e) => return Err(e),
        };
        let mut rx = entry.status.subscribe();
        let shutdown = self.inner.shutdown.clone();
        let done = |s: &Status| {
            matches!(
                s.state,
                ContainerState::Exited | ContainerState::Removed | ContainerState::Restarting
            )
        };
        tokio::select! {
            r = rx.wait_for(done) => {
                let s = r.map_err(|_| Error::ShuttingDown)?;
                Ok((s.exit, s.error.clone()))
            }
            _ = shutdown.cancelled() => Err(Error::ShuttingDown),
        }
    }

    /// Streams the container's log records: the last `tail` (all when None),
    /// then, with `follow`, new ones until the container stops running.
    pub fn logs(
        &self,
        key: &ContainerRef,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<mpsc::Receiver<LogRecord>, Error> {
        let entry = self.find(key)?;
        // Open the current file now, before the caller can start the
        // container: a container that exits and is auto-removed at once still
        // leaves its output readable through this fd.
        let current = std::fs::File::open(entry.dir.join("container.log")).ok();
        let (tx, rx) = mpsc::channel(256);
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let path = entry.dir.join("container.log");
            let mut status = entry.status.subscribe();
            let Ok((records, follower)) =
                tokio::task::spawn_blocking(move || logs::read_all(&path, tail, current)).await
            else {
                return;
            };
            for r in records {
                if tx.send(r).await.is_err() {
                    return;
                }
            }
            let (true, Some(mut follower)) = (follow, follower) else {
                return;
            };
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                let live = matches!(
                    status.borrow_and_update().state,
                    ContainerState::Created | ContainerState::Running | ContainerState::Restarting
                );
                let mut new = Vec::new();
                follower.read_new(&mut new);
                for r in new {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
                if !live {
                    return;
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    r = status.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                }
            }
        });
        Ok(rx)
    }

    /// Changes the limits of a container; a running one gets them at once.
    #[instrument(skip_all, fields(container = %key))]
    pub async fn update(
        &self,
        key: &ContainerRef,
        req: ResourcesRequest,
    ) -> Result<ContainerInfo, Error> {
        let entry = self.find(key)?;
        let _op = entry.op.lock().await;
        let current = *lock(&entry.resources);
        let next = req.merge(current)?;
        if entry.status().state == ContainerState::Running
            && let Some(cg) = &self.inner.cgroups
        {
            cg.apply(&entry.id, &next)
                .map_err(|e| Error::FailedPrecondition(format!("applying the limits: {e}")))?;
        }
        let mut spec = entry.current_spec();
        spec.resources = next;
        store::write_json(&entry.dir.join("config.json"), &spec)?;
        *lock(&entry.resources) = next;
        info!(?next, "updated");
        self.event(&entry, EventKind::Update, &[]);
        Ok(entry.info())
    }

    /// Reads a container's cgroup now and records the sample.
    fn sample(&self, entry: &Entry) -> Option<Stats> {
        let cg = self.inner.cgroups.as_ref()?;
        let stats = cg.stats(&entry.id).ok()?;
        let mut s = lock(&entry.samples);
        s.prev = s.last.take();
        s.last = Some((Instant::now(), stats));
        Some(stats)
    }

    /// Samples every running container once per `stats_interval`: keeps CPU %
    /// current and notices OOM kills (the kernel's counter) within an
    /// interval.
    fn spawn_sampler(&self) {
        if self.inner.cgroups.is_none() {
            return;
        }
        let rt = self.clone();
        let shutdown = self.inner.shutdown.clone();
        let period = self
            .inner
            .config
            .stats_interval
            .max(Duration::from_millis(100));
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let rt2 = rt.clone();
                let _ = tokio::task::spawn_blocking(move || rt2.sample_all()).await;
            }
        });
    }

    /// Every second, writes the state of containers whose last
    /// `state.json` write failed (a full disk): the file catches up as soon
    /// as there is space, even if nothing else changes.
    fn spawn_flusher(&self) {
        let rt = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let unsaved: Vec<Arc<Entry>> = lock(&rt.inner.containers)
                    .iter()
                    .filter(|e| lock(&e.unsaved).is_some())
                    .cloned()
                    .collect();
                if unsaved.is_empty() {
                    continue;
                }
                let _ = tokio::task::spawn_blocking(move || {
                    for e in unsaved {
                        if e.save() {
                            info!(container = %e.spec.name, "its state is saved again");
                        }
                    }
                })
                .await;
            }
        });
    }

    fn sample_all(&self) {
        let list = lock(&self.inner.containers).clone();
        for e in list
            .iter()
            .filter(|e| e.status.borrow().state == ContainerState::Running)
        {
            let Some(stats) = self.sample(e) else {
                continue;
            };
            let known = e.status.borrow().oom_kills;
            if stats.oom_kills > known {
                warn!(container = %e.spec.name, kills = stats.oom_kills - known, "OOM kill in the container");
                let _ = e.set_status(|s| s.oom_kills = stats.oom_kills);
                self.event(
                    e,
                    EventKind::Oom,
                    &[("oom_kills", stats.oom_kills.to_string())],
                );
            }
        }
    }

    /// Usage of the given containers (all running ones when `keys` is empty).
    pub fn stats(&self, keys: &[ContainerRef]) -> Result<Vec<ContainerStats>, Error> {
        let entries: Vec<Arc<Entry>> = if keys.is_empty() {
            lock(&self.inner.containers)
                .iter()
                .filter(|e| e.status.borrow().state == ContainerState::Running)
                .cloned()
                .collect()
        } else {
            keys.iter()
                .map(|k| self.find_any(k))
                .collect::<Result<_, _>>()?
        };
        Ok(self.stats_of(&entries))
    }

    /// Usage of every container, running or not (for metrics).
    pub fn stats_all(&self) -> Vec<ContainerStats> {
        let entries = lock(&self.inner.containers).clone();
        self.stats_of(&entries)
    }

    fn stats_of(&self, entries: &[Arc<Entry>]) -> Vec<ContainerStats> {
        let host_mem = host_memory();
        entries
            .iter()
            .map(|e| {
                let (prev, last) = {
                    let s = lock(&e.samples);
                    (s.prev, s.last)
                };
                let running = e.status.borrow().state == ContainerState::Running;
                // A container never sampled yet is read now.
                let last = match last {
                    Some(l) => Some(l),
                    None if running => self.sample(e).map(|s| (Instant::now(), s)),
                    None => None,
                };
                let cpu_percent = match (prev, last) {
                    (Some((t0, a)), Some((t1, b))) if running && t1 > t0 => {
                        let dt = (t1 - t0).as_nanos() as f64;
                        b.cpu_usage_ns.saturating_sub(a.cpu_usage_ns) as f64 / dt * 100.0
                    }
                    _ => 0.0,
                };
                let status = e.status();
                let sampled = last.is_some();
                let mut usage = last.map(|(_, s)| s).unwrap_or_default();
                usage.oom_kills = usage.oom_kills.max(status.oom_kills);
                if !running {
                    usage.pids = 0;
                }
                ContainerStats {
                    id: e.id.clone(),
                    name: e.spec.name.clone(),
                    state: status.state,
                    cpu_percent,
                    memory_percent: memory_percent(
                        usage.memory_working_set,
                        usage.memory_limit,
                        host_mem,
                    ),
                    usage,
                    sampled,
                    restarts: status.restarts_total,
                }
            })
            .collect()
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

    pub fn state_dir(&self) -> &Path {
        &self.inner.config.state_dir
    }

    /// A token cancelled when the runtime starts shutting down: long-lived
    /// streams of the daemon end with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Starts the shutdown: pending restarts, waits, log follows and exit
    /// monitors end. Containers keep running.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Stops background work and waits for it. Containers keep running.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.stop_dns().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_percent_is_of_the_limit_or_the_host() {
        let gib = 1 << 30;
        assert_eq!(memory_percent(gib / 2, Some(gib), 8 * gib), 50.0);
        // No limit (or 0): the host's memory.
        assert_eq!(memory_percent(gib, None, 4 * gib), 25.0);
        assert_eq!(memory_percent(gib, Some(0), 4 * gib), 25.0);
        // A limit above the host's memory counts as the host's.
        assert_eq!(memory_percent(gib, Some(64 * gib), 4 * gib), 25.0);
        // The host's memory unknown and no limit: nothing to show.
        assert_eq!(memory_percent(gib, None, 0), 0.0);
        assert!(host_memory() > 0, "/proc/meminfo has MemTotal");
    }
}
