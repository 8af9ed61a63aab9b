//! Making and unmaking a container: create (leases, directory, records)
//! and remove (the teardown of everything it holds).

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{Instrument, info, instrument, warn};

use super::entry::{ContainerInfo, ContainerState, Entry, KILL_WAIT, OpReport, Status};
use super::{Containers, io_err, name_exists, remove_dir};
use crate::error::Error;
use crate::lifecycle::EventKind;
use crate::lock::lock;
use crate::logs;
use crate::names::{ContainerRef, SupervisorName};
use crate::rollback::Rollback;
use crate::spec::{self, ContainerSpec, SpecRequest};
use crate::store;

impl Containers {
    /// Records a new container. Nothing runs until [`Containers::start`].
    /// `may_join` checks the supervisor the request names, once the request
    /// is valid.
    #[instrument(skip_all, fields(container = req.name.as_ref().map_or("", |n| n.as_str())))]
    pub async fn create(
        &self,
        req: SpecRequest,
        may_join: impl FnOnce(&SupervisorName) -> Result<(), Error>,
    ) -> Result<ContainerInfo, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let id = crate::store::random_id();
        // Held until the container is recorded: its image cannot go away
        // in between.
        let _image_gate = match req.image {
            None => None,
            Some(_) => Some(self.inner.images.gate().read().await),
        };
        let (image, view) = match &req.image {
            None => (None, None),
            Some(r) => {
                let (source, view) = self.inner.images.resolve(r).await?;
                (Some(source), Some(view))
            }
        };
        let config = &self.inner.config;
        let cx = spec::Context {
            default_name: format!("rsup-{}", &id[..12]),
            default_hostname: id[..12].to_string(),
            log: config.log,
            default_pids_limit: config.default_pids_limit,
            userns: config.userns.clone(),
            volumes_dir: self.inner.volumes.dir().to_path_buf(),
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
            may_join(sup)?;
        }
        // Refuse a taken name before anything is taken (checked again
        // when the container is recorded: another create may race us).
        if self.name_taken(&spec.name) {
            return Err(name_exists(&spec.name));
        }
        self.inner.volumes.ensure(&spec.mounts)?;
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
        spec.networks = self.inner.networks.lease(id, net)?;
        if !spec.networks.is_empty() {
            let networks = self.inner.networks.clone();
            let (id, nets) = (id.to_string(), spec.networks.clone());
            // A network file that cannot be written now is caught up by
            // its next write (the pool is written whole) or by the
            // reconcile at start.
            undo.push("release the addresses", move || {
                networks.release(&id, &nets);
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
        let entry = Arc::new(Entry::new(
            id.to_string(),
            spec,
            dir,
            status,
            self.inner.shutdown.child_token(),
        ));
        let mut list = lock(&self.inner.containers);
        if list.iter().any(|e| e.spec.name == entry.spec.name) {
            return Err(name_exists(&entry.spec.name));
        }
        list.push(entry.clone());
        Ok(entry)
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
                let _ = entry.set_status(Status::stop_by_user);
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
        let networks = &self.inner.networks;
        for f in networks
            .drop_sandbox(&entry.dir.join("netns"), &entry.attachments())
            .await
        {
            warnings.push(format!("container {name}: network: {f}"));
        }
        for f in networks.release(&entry.id, &entry.attachments()) {
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
}
