//! The containers and supervisors services driven on a fake backend, under
//! tokio's paused clock: restart policies with their backoff, a stop
//! during the backoff, SIGTERM then SIGKILL, supervisor strategies with
//! intensity and escalation, and health checks. No process is started and
//! no test sleeps: the clock jumps to the next timer whenever every task
//! waits, so each delay is measured exactly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Containers;
use super::backend::{Backend, BoxFuture, Launched};
use super::entry::{ContainerState, Entry, ExitInfo, Init, Status};
use super::exec::ExecOutput;
use crate::cgroups::Limits;
use crate::config::RuntimeConfig;
use crate::error::Error;
use crate::images::Images;
use crate::lifecycle::state::Pids;
use crate::lifecycle::{Event, EventBus, EventKind};
use crate::lock::lock;
use crate::names::{ContainerName, ContainerRef, NetworkName, SupervisorName};
use crate::networks::Networks;
use crate::process::exec::ExecSpec;
use crate::spec::SpecRequest;
use crate::supervisors::{SupervisorRequest, Supervisors};
use crate::volumes::Volumes;

/// One run of the fake: its exit is sent when the test (or a signal) ends
/// it.
struct FakeRun {
    end: Mutex<Option<oneshot::Sender<Option<ExitInfo>>>>,
    /// Signals it got, in order.
    signals: Mutex<Vec<i32>>,
    /// It dies of SIGTERM (false: only SIGKILL ends it).
    term_ends_it: bool,
}

impl FakeRun {
    fn end(&self, code: i32, signal: i32) {
        if let Some(tx) = lock(&self.end).take() {
            let _ = tx.send(Some(ExitInfo {
                code,
                signal,
                finished_at: std::time::SystemTime::now(),
            }));
        }
    }
}

impl Init for FakeRun {
    fn signal(&self, sig: i32) -> nix::Result<()> {
        lock(&self.signals).push(sig);
        if sig == libc::SIGKILL || (sig == libc::SIGTERM && self.term_ends_it) {
            self.end(128 + sig, sig);
        }
        Ok(())
    }
}

/// What the fake did for one container.
#[derive(Default)]
struct Record {
    /// When each run started (paused clock).
    starts: Vec<Instant>,
    runs: Vec<Arc<FakeRun>>,
}

/// A backend whose runs are values: tests end them, count them and time
/// them; exec (health checks) returns `exec_code`.
#[derive(Default)]
struct FakeBackend {
    by_name: Mutex<HashMap<String, Record>>,
    /// Bumped at every start, to wait on.
    started: Mutex<Option<watch::Sender<usize>>>,
    exec_code: Mutex<i32>,
    /// Containers whose SIGTERM is ignored.
    ignore_term: Mutex<Vec<String>>,
}

impl FakeBackend {
    fn new() -> Arc<FakeBackend> {
        let f = FakeBackend::default();
        *lock(&f.started) = Some(watch::channel(0).0);
        Arc::new(f)
    }

    fn starts(&self, name: &str) -> Vec<Instant> {
        lock(&self.by_name)
            .get(name)
            .map(|r| r.starts.clone())
            .unwrap_or_default()
    }

    fn runs_of(&self, name: &str) -> Vec<Arc<FakeRun>> {
        lock(&self.by_name)[name].runs.clone()
    }

    fn last_run(&self, name: &str) -> Arc<FakeRun> {
        lock(&self.by_name)[name]
            .runs
            .last()
            .expect("a run")
            .clone()
    }

    /// Ends the current run of `name` with exit code `code`.
    fn exit(&self, name: &str, code: i32) {
        self.last_run(name).end(code, 0);
    }

    /// Waits until `name` has started `n` times.
    async fn started(&self, name: &str, n: usize) {
        let mut rx = lock(&self.started).as_ref().expect("watch").subscribe();
        while self.starts(name).len() < n {
            rx.changed().await.expect("backend gone");
        }
    }
}

impl Backend for FakeBackend {
    fn spawn(
        &self,
        entry: &Arc<Entry>,
        _limits: Limits,
        record: Box<dyn FnOnce(Pids) -> Result<(), String> + Send>,
    ) -> BoxFuture<'static, Result<Launched, Error>> {
        let name = entry.spec.name.clone();
        let (tx, rx) = oneshot::channel();
        let run = Arc::new(FakeRun {
            end: Mutex::new(Some(tx)),
            signals: Mutex::new(Vec::new()),
            term_ends_it: !lock(&self.ignore_term).contains(&name),
        });
        let n = {
            let mut m = lock(&self.by_name);
            let r = m.entry(name).or_default();
            r.starts.push(Instant::now());
            r.runs.push(run.clone());
            r.starts.len() as i32
        };
        let pids = Pids {
            shim_pid: 1000 + 2 * n,
            shim_start_time: 1,
            init_pid: 1001 + 2 * n,
            init_start_time: 1,
        };
        let recorded = record(pids);
        if let Some(w) = lock(&self.started).as_ref() {
            w.send_modify(|c| *c += 1);
        }
        Box::pin(async move {
            recorded.map_err(Error::FailedPrecondition)?;
            Ok(Launched {
                pids,
                oom_base: 0,
                init: Some(run as Arc<dyn Init>),
                ended: Box::pin(async move { rx.await.unwrap_or(None) }),
            })
        })
    }

    fn adopt(&self, _name: &str, _dir: &Path, _status: &Status) -> Option<Launched> {
        None
    }

    fn exec(
        &self,
        _spec: ExecSpec,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<ExecOutput, Error>> {
        let code = *lock(&self.exec_code);
        Box::pin(async move {
            Ok(ExecOutput {
                exit_code: code,
                stdout: format!("exit {code}").into_bytes(),
                ..Default::default()
            })
        })
    }
}

/// The services on a fake backend, in a temporary state dir.
struct Fixture {
    containers: Containers,
    supervisors: Supervisors,
    fake: Arc<FakeBackend>,
    events: Arc<EventBus>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    rootfs: tempfile::TempDir,
    _state: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let state = tempfile::tempdir().expect("tempdir");
        let root = state.path().to_path_buf();
        crate::store::create_root(&root).expect("state dir");
        let config = RuntimeConfig {
            state_dir: root.clone(),
            shim_exe: "/nonexistent/rsup-shim".into(),
            log: Default::default(),
            cgroup_subtree: None,
            stats_interval: Duration::from_secs(1),
            net: crate::netstack::NetConfig {
                prefix: "zt".into(),
                default_subnet: "10.250.0.0/24".parse().expect("subnet"),
                dns_port: 53,
                dns_upstream: Vec::new(),
            },
            userns: Default::default(),
            default_pids_limit: None,
            image_limits: Default::default(),
            registries: Default::default(),
        };
        let events = Arc::new(EventBus::default());
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let networks = Networks::new(
            root.clone(),
            config.net.clone(),
            events.clone(),
            tracker.clone(),
        );
        let images = Images::open(&root, config.image_limits, Default::default()).expect("images");
        let volumes = Volumes::new(root.join("volumes"));
        let fake = FakeBackend::new();
        let containers = Containers::new(
            config,
            None,
            fake.clone(),
            events.clone(),
            tracker.clone(),
            shutdown.child_token(),
            networks,
            images,
            volumes,
        );
        let supervisors = Supervisors::new(
            root,
            events.clone(),
            tracker.clone(),
            shutdown.child_token(),
            containers.clone(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        containers.supervise_with(tx);
        supervisors.watch(rx);
        Fixture {
            containers,
            supervisors,
            fake,
            events,
            tracker,
            shutdown,
            rootfs: crate::spec::tests::rootfs(),
            _state: state,
        }
    }

    fn request(&self, name: &str, policy: &str) -> SpecRequest {
        let mut r = crate::spec::tests::req(self.rootfs.path(), &["/bin/sh", "-c", "true"]);
        r.name = Some(ContainerName::parse(name).expect("name"));
        r.net.networks = vec![NetworkName::parse("none").expect("none")];
        r.restart.policy = policy.into();
        r
    }

    async fn create(&self, req: SpecRequest) {
        let sups = self.supervisors.clone();
        self.containers
            .create(req, move |s| sups.check_exists(s))
            .await
            .expect("create");
    }

    async fn start(&self, name: &str) {
        self.containers.start(&key(name)).await.expect("start");
    }

    fn status(&self, name: &str) -> Status {
        self.containers
            .find_any(&key(name))
            .expect("container")
            .status()
    }

    fn state(&self, name: &str) -> ContainerState {
        self.status(name).state
    }

    /// Waits until `name` is in `state`.
    async fn reaches(&self, name: &str, state: ContainerState) {
        let e = self.containers.find_any(&key(name)).expect("container");
        let mut rx = e.status.subscribe();
        rx.wait_for(|s| s.state == state).await.expect("status");
    }

    /// Every event of `kind` so far.
    fn events_of(&self, kind: EventKind) -> Vec<Event> {
        self.events
            .subscribe(Some(std::time::SystemTime::UNIX_EPOCH))
            .0
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }
}

fn key(name: &str) -> ContainerRef {
    ContainerRef::parse(name).expect("ref")
}

/// The gaps between the starts of `name`.
fn gaps(starts: &[Instant]) -> Vec<Duration> {
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_restarts_on_the_backoff_schedule_until_the_policy_gives_up() {
    let f = Fixture::new();
    f.create(f.request("web", "on-failure:3")).await;
    f.start("web").await;
    for n in 2..=4 {
        f.fake.exit("web", 1);
        f.fake.started("web", n).await;
    }
    // Docker's schedule: 100 ms, then twice as long each time (the runs
    // last no time at all, so it never resets).
    assert_eq!(
        gaps(&f.fake.starts("web")),
        [100, 200, 400].map(Duration::from_millis)
    );
    f.fake.exit("web", 1);
    f.reaches("web", ContainerState::Exited).await;
    // A fourth restart does not come, however long one waits.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(f.fake.starts("web").len(), 4);
    let s = f.status("web");
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!((s.restart_count, s.restarts_total), (3, 3));
    assert_eq!(s.exit.map(|e| e.code), Some(1));
    let restarts = f.events_of(EventKind::Restart);
    let delays: Vec<&str> = restarts
        .iter()
        .map(|e| e.attributes["delay_ms"].as_str())
        .collect();
    assert_eq!(delays, ["100", "200", "400"]);
}

#[tokio::test(start_paused = true)]
async fn a_clean_exit_is_restarted_by_always_but_not_by_on_failure() {
    let f = Fixture::new();
    f.create(f.request("a", "always")).await;
    f.create(f.request("b", "on-failure")).await;
    f.start("a").await;
    f.start("b").await;
    f.fake.exit("a", 0);
    f.fake.exit("b", 0);
    f.fake.started("a", 2).await;
    f.reaches("b", ContainerState::Exited).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(f.fake.starts("b").len(), 1);
    assert_eq!(f.state("a"), ContainerState::Running);
}

#[tokio::test(start_paused = true)]
async fn a_user_stop_during_the_backoff_calls_off_the_restart() {
    let f = Fixture::new();
    let mut r = f.request("web", "always");
    r.restart.delay = Some(Duration::from_secs(30));
    r.restart.max_delay = Some(Duration::from_secs(30));
    f.create(r).await;
    f.start("web").await;
    f.fake.exit("web", 1);
    f.reaches("web", ContainerState::Restarting).await;
    let (info, _) = f
        .containers
        .stop(&key("web"), Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(info.state, ContainerState::Exited);
    assert!(f.status("web").stopped_by_user);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(f.fake.starts("web").len(), 1, "the pending restart ran");
    // A user start clears the stop and the history.
    f.start("web").await;
    let s = f.status("web");
    assert!(!s.stopped_by_user);
    assert_eq!(s.restart_count, 0);
}

#[tokio::test(start_paused = true)]
async fn stop_sends_sigterm_then_sigkill_after_the_timeout() {
    let f = Fixture::new();
    lock(&f.fake.ignore_term).push("stubborn".into());
    f.create(f.request("stubborn", "always")).await;
    f.start("stubborn").await;
    let t0 = Instant::now();
    f.containers
        .stop(&key("stubborn"), Duration::from_secs(7))
        .await
        .expect("stop");
    assert_eq!(t0.elapsed(), Duration::from_secs(7));
    let run = f.fake.last_run("stubborn");
    assert_eq!(*lock(&run.signals), [libc::SIGTERM, libc::SIGKILL]);
    let s = f.status("stubborn");
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.exit.map(|e| e.signal), Some(libc::SIGKILL));
    // Stopped by the user: `always` does not bring it back.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(f.fake.starts("stubborn").len(), 1);
}

fn supervisor(name: &str, strategy: &str, intensity: u32, period_s: u64) -> SupervisorRequest {
    SupervisorRequest {
        name: SupervisorName::parse(name).expect("name"),
        strategy: strategy.into(),
        intensity,
        period: Duration::from_secs(period_s),
        parent: None,
    }
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_the_siblings_and_escalates_past_its_intensity() {
    let f = Fixture::new();
    f.supervisors
        .create(supervisor("tree", "one_for_all", 2, 60))
        .expect("supervisor");
    for name in ["db", "app"] {
        let mut r = f.request(name, "always");
        r.supervisor = Some(SupervisorName::parse("tree").expect("name"));
        f.create(r).await;
        f.start(name).await;
    }
    // db crashes: app is stopped (SIGTERM), then both start again, db
    // after its backoff.
    f.fake.exit("db", 1);
    f.fake.started("db", 2).await;
    f.fake.started("app", 2).await;
    let app_first = f.fake.runs_of("app")[0].clone();
    assert_eq!(*lock(&app_first.signals), [libc::SIGTERM]);
    assert_eq!(gaps(&f.fake.starts("db")), [Duration::from_millis(100)]);
    // Once more within the period: still within intensity 2.
    f.fake.exit("app", 1);
    f.fake.started("db", 3).await;
    f.fake.started("app", 3).await;
    // A third restart within 60 s is too many: the supervisor stops every
    // child and fails (a root: the tree failed).
    f.fake.exit("db", 1);
    f.reaches("app", ContainerState::Exited).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(f.fake.starts("db").len(), 3);
    assert_eq!(f.fake.starts("app").len(), 3);
    let info = &f.supervisors.list()[0];
    assert!(info.failed);
    assert_eq!(info.restarts, 2);
    assert_eq!(f.events_of(EventKind::SupervisorFail).len(), 1);
    assert_eq!(f.events_of(EventKind::SupervisorRestart).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let f = Fixture::new();
    f.supervisors
        .create(supervisor("chain", "rest_for_one", 5, 60))
        .expect("supervisor");
    for name in ["first", "second", "third"] {
        let mut r = f.request(name, "always");
        r.supervisor = Some(SupervisorName::parse("chain").expect("name"));
        f.create(r).await;
        f.start(name).await;
    }
    f.fake.exit("second", 1);
    f.fake.started("second", 2).await;
    f.fake.started("third", 2).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        f.fake.starts("first").len(),
        1,
        "the one before is left alone"
    );
    assert_eq!(f.state("first"), ContainerState::Running);
}

#[tokio::test(start_paused = true)]
async fn a_failing_child_supervisor_escalates_to_its_parent() {
    let f = Fixture::new();
    f.supervisors
        .create(supervisor("root", "one_for_one", 5, 60))
        .expect("root");
    let mut child = supervisor("workers", "one_for_one", 1, 60);
    child.parent = Some(SupervisorName::parse("root").expect("name"));
    f.supervisors.create(child).expect("child");
    let mut r = f.request("w", "always");
    r.supervisor = Some(SupervisorName::parse("workers").expect("name"));
    f.create(r).await;
    f.start("w").await;
    // One restart is within the child's intensity; the second is not: the
    // child fails, stops w, and the root restarts the child, which starts
    // w again.
    f.fake.exit("w", 1);
    f.fake.started("w", 2).await;
    f.fake.exit("w", 1);
    f.fake.started("w", 3).await;
    assert_eq!(f.events_of(EventKind::SupervisorEscalate).len(), 1);
    let list = f.supervisors.list();
    let workers = list
        .iter()
        .find(|s| s.spec.name == "workers")
        .expect("workers");
    assert!(!workers.failed, "restarted by its parent");
    assert_eq!(list[0].restarts, 1, "the root restarted it once");
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_container_is_killed_for_its_policy_after_retries_checks() {
    let f = Fixture::new();
    let mut r = f.request("svc", "always");
    r.health.cmd = "check".into();
    r.health.interval = Some(Duration::from_secs(2));
    r.health.timeout = Some(Duration::from_secs(1));
    r.health.retries = Some(3);
    r.health.restart_on_unhealthy = true;
    f.create(r).await;
    *lock(&f.fake.exec_code) = 0;
    f.start("svc").await;
    let t0 = Instant::now();
    // Healthy after the first check.
    let e = f.containers.find_any(&key("svc")).expect("svc");
    let mut rx = e.status.subscribe();
    rx.wait_for(|s| {
        s.health
            .as_ref()
            .is_some_and(|h| h.status.as_str() == "healthy")
    })
    .await
    .expect("healthy");
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    // Healthy, check after check: left alone (to 61 s: off the checks'
    // 2 s grid, so that no check is due when the code changes).
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(f.fake.starts("svc").len(), 1);
    assert!(lock(&f.fake.last_run("svc").signals).is_empty());
    // Then every check fails: unhealthy at the third, which kills it; its
    // policy restarts it.
    *lock(&f.fake.exec_code) = 1;
    f.fake.started("svc", 2).await;
    let first = f.fake.runs_of("svc")[0].clone();
    assert_eq!(*lock(&first.signals), [libc::SIGKILL]);
    assert_eq!(
        f.fake.starts("svc")[1] - f.fake.starts("svc")[0],
        Duration::from_secs(66) + Duration::from_millis(100),
        "the checks at 62, 64 and 66 s fail, then the 100 ms backoff"
    );
    let statuses: Vec<String> = f
        .events_of(EventKind::HealthStatus)
        .iter()
        .map(|e| e.attributes["status"].clone())
        .collect();
    assert_eq!(statuses, ["healthy", "unhealthy"]);
    // The new run starts over at "starting".
    let h = f.status("svc").health.expect("health");
    assert_eq!(h.status.as_str(), "starting");
}

#[tokio::test(start_paused = true)]
async fn removing_a_container_or_cancelling_the_root_ends_its_tasks() {
    let f = Fixture::new();
    for name in ["gone", "kept"] {
        let mut r = f.request(name, "always");
        r.restart.delay = Some(Duration::from_secs(30));
        r.restart.max_delay = Some(Duration::from_secs(30));
        r.health.cmd = "check".into();
        r.health.interval = Some(Duration::from_secs(5));
        f.create(r).await;
        f.start(name).await;
        f.fake.exit(name, 1);
        f.reaches(name, ContainerState::Restarting).await;
    }
    // Removing one ends its pending restart's task at once (not when its
    // 30 s are up), and it never runs.
    let tasks = f.tracker.len();
    let t0 = Instant::now();
    f.containers
        .remove(&key("gone"), true)
        .await
        .expect("remove");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        f.tracker.len(),
        tasks - 1,
        "the pending restart still waits"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(f.fake.starts("gone").len(), 1);
    assert_eq!(f.fake.starts("kept").len(), 2, "the other one restarted");
    // Cancelling the root ends every task at once (the running container's
    // exit monitor and health checker included): the tracker empties
    // without the clock moving.
    let t1 = Instant::now();
    f.shutdown.cancel();
    f.tracker.close();
    f.tracker.wait().await;
    assert_eq!(t1.elapsed(), Duration::ZERO);
    assert_eq!(
        f.state("kept"),
        ContainerState::Running,
        "containers outlive rsupd"
    );
}
