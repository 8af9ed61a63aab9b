//! The runtime: everything a user can do with rsupd, without gRPC. A thin
//! facade that opens the state directory, wires the services and hands
//! each call to the one that owns it:
//!
//! ```text
//!   Runtime ──> Supervisors ──> Containers ──> Networks, Images, Volumes
//!                                     └──────> cgroups, process, store, sys, ...
//! ```
//!
//! Each service owns its state; dependencies point one way. A service
//! below never calls one above: what it needs to know of the containers
//! comes in as arguments (holders of a network, users of an image or a
//! volume), and a supervised container's exit goes up to the supervisors
//! on a channel. The checks that span two services (a network, volume or
//! image still in use, a supervisor that must exist) are made here.
//!
//! One cancellation tree: the runtime's token is the parent of every
//! service's tasks (one `TaskTracker` for all of them); [`Runtime::shutdown`]
//! cancels it and waits for every task.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cgroups::{self, Driver, Manager};
use crate::config::RuntimeConfig;
use crate::containers::Containers;
use crate::containers::backend::LinuxBackend;
use crate::containers::entry::{ContainerCounts, ContainerInfo, OpReport};
use crate::containers::exec::{ExecOutput, ExecRequest};
use crate::containers::stats::ContainerStats;
use crate::error::Error;
use crate::images::{Credentials, ImageInfo, Images, PullProgress, RemovedImage};
use crate::lifecycle::EventBus;
use crate::logs::LogRecord;
use crate::names::{ContainerRef, ImageRef, NetworkName, RemoteRef, SupervisorName, VolumeName};
use crate::networks::{NetworkInfo, NetworkRequest, Networks};
use crate::process::ExitInfo;
use crate::spec::{ResourcesRequest, SpecRequest};
use crate::store::{self, StateLock};
use crate::supervisors::{SupervisorInfo, SupervisorRequest, Supervisors};
use crate::volumes::{VolumeInfo, Volumes};

/// How long a new rsupd waits for the state dir's lock (see
/// [`StateLock::acquire_patiently`]).
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// The container runtime. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    containers: Containers,
    networks: Networks,
    images: Images,
    volumes: Volumes,
    supervisors: Supervisors,
    events: Arc<EventBus>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    _lock: StateLock,
}

impl Runtime {
    /// Opens the state directory (taking its lock), loads every supervisor,
    /// network and container, re-adopts the containers whose shim still
    /// runs and applies their restart policies.
    pub async fn open(config: RuntimeConfig) -> Result<Runtime, Error> {
        Runtime::open_under(config, &CancellationToken::new()).await
    }

    /// [`Runtime::open`] as a part of a larger program: the runtime's token
    /// is a child of `parent` (the daemon's), so cancelling `parent` starts
    /// the runtime's shutdown too.
    pub async fn open_under(
        config: RuntimeConfig,
        parent: &CancellationToken,
    ) -> Result<Runtime, Error> {
        let root = config.state_dir.clone();
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
        let images = Images::open(&root, config.image_limits, config.registries.clone())?;
        for f in store::sweep_temp_files(&root) {
            info!(path = %f.display(), "removed a temporary file left by an interrupted write");
        }
        let events = Arc::new(EventBus::default());
        let tracker = TaskTracker::new();
        let shutdown = parent.child_token();
        let networks = Networks::new(
            root.clone(),
            config.net.clone(),
            events.clone(),
            tracker.clone(),
        );
        let volumes = Volumes::new(root.join("volumes"));
        let backend = Arc::new(LinuxBackend::new(config.shim_exe.clone(), cgroups.clone()));
        let containers = Containers::new(
            config.clone(),
            cgroups,
            backend,
            events.clone(),
            tracker.clone(),
            shutdown.child_token(),
            networks.clone(),
            images.clone(),
            volumes.clone(),
        );
        let supervisors = Supervisors::new(
            root.clone(),
            events.clone(),
            tracker.clone(),
            shutdown.child_token(),
            containers.clone(),
        );
        supervisors.load()?;
        networks.open().await?;
        // Exits of supervised containers that end while they are loaded
        // wait in the channel until the supervisors watch it.
        let (exits, exits_rx) = mpsc::unbounded_channel();
        containers.supervise_with(exits);
        let loaded = containers.load_all()?;
        // Nothing fails from here on: no task is left behind by an error.
        supervisors.watch(exits_rx);
        containers.sweep_after_load(&loaded).await;
        containers.restart_on_open(&loaded.died_while_down);
        // Layers an interrupted removal left without a user.
        containers.collect_layers().await;
        Ok(Runtime {
            inner: Arc::new(Inner {
                config,
                containers,
                networks,
                images,
                volumes,
                supervisors,
                events,
                tracker,
                shutdown,
                _lock: state_lock,
            }),
        })
    }

    // Containers.

    /// Records a new container. Nothing runs until [`Runtime::start`].
    pub async fn create(&self, req: SpecRequest) -> Result<ContainerInfo, Error> {
        let supervisors = &self.inner.supervisors;
        self.inner
            .containers
            .create(req, |sup| supervisors.check_exists(sup))
            .await
    }

    /// Starts a created or exited container (a user start).
    pub async fn start(&self, key: &ContainerRef) -> Result<ContainerInfo, Error> {
        self.inner.containers.start(key).await
    }

    /// Sends SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop(
        &self,
        key: &ContainerRef,
        timeout: Duration,
    ) -> Result<(ContainerInfo, OpReport), Error> {
        self.inner.containers.stop(key, timeout).await
    }

    /// Sends a signal to the container's command.
    pub async fn kill(&self, key: &ContainerRef, sig: &str) -> Result<OpReport, Error> {
        self.inner.containers.kill(key, sig).await
    }

    /// Removes a container and everything it left on disk.
    pub async fn remove(&self, key: &ContainerRef, force: bool) -> Result<OpReport, Error> {
        self.inner.containers.remove(key, force).await
    }

    /// Running containers, or all with `all`, oldest first.
    pub fn list(&self, all: bool) -> Vec<ContainerInfo> {
        self.inner.containers.list(all)
    }

    pub fn inspect(&self, key: &ContainerRef) -> Result<ContainerInfo, Error> {
        self.inner.containers.inspect(key)
    }

    /// Waits until the container has run and is no longer running.
    pub async fn wait(&self, key: &ContainerRef) -> Result<(Option<ExitInfo>, String), Error> {
        self.inner.containers.wait(key).await
    }

    /// Streams the container's log records.
    pub fn logs(
        &self,
        key: &ContainerRef,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<mpsc::Receiver<LogRecord>, Error> {
        self.inner.containers.logs(key, follow, tail)
    }

    /// Changes the limits of a container.
    pub async fn update(
        &self,
        key: &ContainerRef,
        req: ResourcesRequest,
    ) -> Result<ContainerInfo, Error> {
        self.inner.containers.update(key, req).await
    }

    /// Runs a command inside a running container.
    pub async fn exec(&self, key: &ContainerRef, req: ExecRequest) -> Result<ExecOutput, Error> {
        self.inner.containers.exec(key, req).await
    }

    /// Usage of the given containers (all running ones when `keys` is empty).
    pub fn stats(&self, keys: &[ContainerRef]) -> Result<Vec<ContainerStats>, Error> {
        self.inner.containers.stats(keys)
    }

    /// Usage of every container, running or not (for metrics).
    pub fn stats_all(&self) -> Vec<ContainerStats> {
        self.inner.containers.stats_all()
    }

    /// How many containers there are and how many of them run.
    pub fn counts(&self) -> ContainerCounts {
        self.inner.containers.counts()
    }

    /// Whether container `id` is quarantined.
    pub fn is_quarantined(&self, id: &str) -> bool {
        self.inner.containers.is_quarantined(id)
    }

    /// Ids of the quarantined containers.
    pub fn quarantined_ids(&self) -> Vec<String> {
        self.inner.containers.quarantined_ids()
    }

    // Networks.

    pub async fn create_network(&self, req: NetworkRequest) -> Result<NetworkInfo, Error> {
        self.inner.networks.create(req).await
    }

    /// Removes a network no container uses.
    pub async fn remove_network(&self, name: &NetworkName) -> Result<(), Error> {
        let c = &self.inner.containers;
        let entries = c.entries();
        self.inner
            .networks
            .remove(name, &Containers::holders(&entries), &c.quarantined_ids())
            .await
    }

    /// Attaches a container to one more network (running or not).
    pub async fn connect_network(
        &self,
        key: &ContainerRef,
        network: &NetworkName,
        aliases: Vec<String>,
    ) -> Result<(), Error> {
        self.inner.containers.connect(key, network, aliases).await
    }

    /// Detaches a container from a network.
    pub async fn disconnect_network(
        &self,
        key: &ContainerRef,
        network: &NetworkName,
    ) -> Result<(), Error> {
        self.inner.containers.disconnect(key, network).await
    }

    pub fn networks(&self) -> Vec<NetworkInfo> {
        let entries = self.inner.containers.entries();
        self.inner.networks.list(&Containers::holders(&entries))
    }

    pub fn inspect_network(&self, name: &NetworkName) -> Result<NetworkInfo, Error> {
        let entries = self.inner.containers.entries();
        self.inner
            .networks
            .inspect(name, &Containers::holders(&entries))
    }

    // Images.

    /// Imports an archive file on rsupd's host.
    pub async fn import_image_file(
        &self,
        archive: &Path,
        name: Option<&ImageRef>,
    ) -> Result<ImageInfo, Error> {
        let c = &self.inner.containers;
        self.inner
            .images
            .import_file(archive, name, &|id| c.users_of_image(id))
            .await
    }

    /// Imports an archive sent in chunks.
    pub async fn import_image<S>(
        &self,
        chunks: S,
        name: Option<&ImageRef>,
        size: Option<u64>,
    ) -> Result<ImageInfo, Error>
    where
        S: Stream<Item = Result<Vec<u8>, Error>> + Unpin,
    {
        let c = &self.inner.containers;
        self.inner
            .images
            .import(chunks, name, size, &|id| c.users_of_image(id))
            .await
    }

    /// Pulls an image from its registry (progress to `progress`, if given).
    pub async fn pull_image(
        &self,
        reference: &RemoteRef,
        creds: Option<&Credentials>,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<ImageInfo, Error> {
        let c = &self.inner.containers;
        self.inner
            .images
            .pull(reference, creds, progress, &|id| c.users_of_image(id))
            .await
    }

    /// Pushes the image named `reference` to its registry; returns the
    /// manifest's digest.
    pub async fn push_image(
        &self,
        reference: &RemoteRef,
        creds: Option<&Credentials>,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<String, Error> {
        self.inner.images.push(reference, creds, progress).await
    }

    /// Names an image (`docker tag`).
    pub async fn tag_image(
        &self,
        source: &ImageRef,
        target: &ImageRef,
    ) -> Result<ImageInfo, Error> {
        let c = &self.inner.containers;
        self.inner
            .images
            .tag(source, target, &|id| c.users_of_image(id))
            .await
    }

    /// Checks credentials against a registry (`docker login`).
    pub async fn registry_login(&self, registry: &str, creds: &Credentials) -> Result<(), Error> {
        self.inner.images.login(registry, creds).await
    }

    pub async fn images(&self) -> Result<Vec<ImageInfo>, Error> {
        let c = &self.inner.containers;
        self.inner.images.list(&|id| c.users_of_image(id)).await
    }

    pub async fn inspect_image(&self, reference: &ImageRef) -> Result<ImageInfo, Error> {
        let c = &self.inner.containers;
        self.inner
            .images
            .inspect(reference, &|id| c.users_of_image(id))
            .await
    }

    /// Removes a name or an image, as `docker rmi` does.
    pub async fn remove_image(
        &self,
        reference: &ImageRef,
        force: bool,
    ) -> Result<RemovedImage, Error> {
        let c = &self.inner.containers;
        self.inner
            .images
            .remove(reference, force, &|id| c.users_of_image(id), &|| {
                c.layers_in_use()
            })
            .await
    }

    // Volumes.

    /// Creates a named volume (no-op if it exists).
    pub fn create_volume(
        &self,
        name: &VolumeName,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeInfo, Error> {
        let users = self.inner.containers.users_of_volume(name);
        self.inner.volumes.create(name, labels, users)
    }

    pub fn inspect_volume(&self, name: &VolumeName) -> Result<VolumeInfo, Error> {
        let users = self.inner.containers.users_of_volume(name);
        self.inner.volumes.inspect(name, users)
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let c = &self.inner.containers;
        self.inner.volumes.list(&|n| c.users_of_volume(n))
    }

    /// Removes a volume and its data; refused while a container uses it
    /// (or may: a quarantined container whose spec is unknown).
    pub fn remove_volume(&self, name: &VolumeName) -> Result<(), Error> {
        let c = &self.inner.containers;
        self.inner
            .volumes
            .remove(name, c.users_of_volume(name), || {
                c.refuse_unknown_mounts(name.as_str())
            })
    }

    // Supervisors.

    pub fn create_supervisor(&self, req: SupervisorRequest) -> Result<SupervisorInfo, Error> {
        self.inner.supervisors.create(req)
    }

    /// Removes a supervisor that has no children.
    pub fn remove_supervisor(&self, name: &SupervisorName) -> Result<(), Error> {
        self.inner.supervisors.remove(name)
    }

    /// Every supervisor, roots first, then in creation order.
    pub fn supervisors(&self) -> Vec<SupervisorInfo> {
        self.inner.supervisors.list()
    }

    // The runtime itself.

    /// The event bus (for the Events RPC).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The cgroup driver in use, if any.
    pub fn cgroup_driver(&self) -> Option<Driver> {
        self.inner.containers.cgroup_driver()
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

    /// Runs `task` on the runtime's tracker: [`Runtime::shutdown`] waits
    /// for it (a stream of the daemon that ends with
    /// [`Runtime::shutdown_token`]).
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(task);
    }

    /// Stops background work and waits for it. Containers keep running.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.networks.stop_dns().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}
