//! Quarantine of container records that cannot be read.
//!
//! A container's record is its `config.json` (the spec) and `state.json`
//! (the last status). When rsupd starts and one of them cannot be read (empty,
//! garbage, a version it does not know, an I/O error) or one is missing while
//! the other says the create had finished, rsupd does not know what the
//! container is, so it must not act on it: its processes may run, its
//! address, veths, netns mount and cgroup are in use. Such a record is
//! **quarantined**:
//!
//! * the unreadable files are renamed aside (`state.json.quarantined-<unix
//!   time>`), never deleted, and `quarantine.json` records why (both
//!   best-effort: a full or read-only disk only leaves the files in place,
//!   and the next start quarantines them again);
//! * the container stays in the runtime's list in state
//!   [`ContainerState::Unknown`], addressable by id, id prefix and, when
//!   `config.json` was readable, by name; `inspect` shows the reason and
//!   its pid: the init of its live shim, found through the pid and start time
//!   `state.json` recorded, or else by a scan of `/proc` for a root process in
//!   rsupd's PID namespace whose argv is `rsup-shim __rsup-shim <its
//!   directory>`, plus that shim's child with the same argv (the init, a
//!   fork of the shim);
//! * nothing acts on it: being in the list, its id keeps its leases and
//!   cgroup through the start sweeps, `Containers::is_quarantined_link` keeps
//!   its veths (named after its id), image layers are not collected while a
//!   quarantined container exists (it may mount any), and every verb but
//!   list, inspect, stats and `rm` is FAILED_PRECONDITION;
//! * `rm -f` cleans it up completely: SIGKILL to its shim and init through
//!   pidfds (the init's other processes die with it), then its leases on
//!   every network, its veths, its netns mount, its cgroup and its directory.
//!
//! Which partial records are still collected as before (nothing of them can
//! run; see [`examine`]): a directory with neither file, or with a readable
//! `config.json` and no `state.json` (a create that a crash cut short, or a
//! removal whose directory deletion was cut short), provided no shim of it
//! runs and no netns is mounted in it; and any record whose readable
//! `state.json` says it was being removed. A directory that an earlier rsupd
//! quarantined (it holds `quarantine.json` or a `*.quarantined-*` file)
//! stays quarantined until `rm -f`; to restore one by hand, put back good
//! files and delete the quarantine files while rsupd is stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{info, warn};

use super::Containers;
use super::entry::{ContainerState, Entry, KILL_WAIT, OpReport};
use crate::error::Error;
use crate::lifecycle::EventKind;
use crate::lock::lock;
use crate::names::quote;
use crate::store;
use crate::sys;
use examine::{
    Diagnosis, Found, QUARANTINE_FILE, QUARANTINE_VERSION, QuarantineFile, Quarantined,
    find_processes, label, rename_aside, unknown_spec, unknown_status, wait_exit,
};

pub mod examine;

impl Containers {
    /// Quarantines the container in `dir` (at start, see the module
    /// documentation): renames its unreadable files aside, records why,
    /// finds its live processes and lists it in state "unknown".
    pub(crate) fn quarantine(&self, id: &str, dir: &Path, d: Diagnosis) {
        let Diagnosis {
            mut reason,
            bad_files,
            spec,
            status,
            earlier,
        } = d;
        if !earlier {
            let now = SystemTime::now();
            let mut moved = Vec::new();
            for f in bad_files {
                match rename_aside(dir, f, now) {
                    Ok(name) => moved.push(name),
                    Err(e) => {
                        warn!(container = %id, file = f, error = %e, "cannot rename an unreadable file aside")
                    }
                }
            }
            if !moved.is_empty() {
                reason = format!("{reason}; moved aside to {}", moved.join(", "));
            }
            let record = QuarantineFile {
                version: QUARANTINE_VERSION,
                reason: reason.clone(),
                quarantined_at: now,
                files: moved,
            };
            if let Err(e) = store::write_json(&dir.join(QUARANTINE_FILE), &record) {
                warn!(container = %id, error = %e, "cannot record the quarantine");
            }
        }
        let procs = find_processes(dir, status.as_ref());
        let mut status = status.unwrap_or_else(|| unknown_status(dir));
        // The init is the pid a container shows.
        let pid = |init: bool| procs.iter().find(|p| p.init == init).map_or(0, |p| p.pid);
        let (shim, init) = (pid(false), pid(true));
        status.state = ContainerState::Unknown;
        status.error = reason.clone();
        status.shim_pid = shim;
        status.init_pid = init;
        status.next_start_at = None;
        let entry = Arc::new(Entry::new(
            id.to_string(),
            spec.unwrap_or_else(unknown_spec),
            dir.to_path_buf(),
            status,
            self.inner.shutdown.child_token(),
        ));
        warn!(
            container = %id,
            name = %entry.spec.name,
            %reason,
            shim,
            init,
            "quarantined a container whose record cannot be read: nothing acts on it until `rm -f`"
        );
        let q = Arc::new(Quarantined {
            reason: reason.clone(),
            procs,
        });
        self.watch_quarantined(&entry, &q);
        lock(&self.inner.quarantined).insert(id.to_string(), q);
        lock(&self.inner.containers).push(entry.clone());
        self.inner
            .unreadable_containers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.event(
            &entry,
            EventKind::Quarantine,
            &[("reason", reason), ("pid", init.to_string())],
        );
    }

    /// Clears the pids a quarantined container shows once its shim exits
    /// (in memory only: its record is not written).
    fn watch_quarantined(&self, entry: &Arc<Entry>, q: &Quarantined) {
        let Some(fd) = q
            .procs
            .iter()
            .find(|p| !p.init)
            .and_then(|p| p.fd.try_clone().ok())
        else {
            return;
        };
        let weak = Arc::downgrade(entry);
        let cancel = entry.cancel.clone();
        self.inner.tracker.spawn(async move {
            let Ok(afd) = sys::async_pidfd(fd) else {
                return;
            };
            tokio::select! {
                _ = afd.readable() => {}
                _ = cancel.cancelled() => return,
            }
            if let Some(e) = weak.upgrade() {
                info!(container = %e.id, "the shim of a quarantined container exited");
                e.status.send_modify(|s| {
                    s.shim_pid = 0;
                    s.init_pid = 0;
                });
            }
        });
    }

    /// The quarantine of container `id`, if it is quarantined.
    pub(crate) fn quarantined(&self, id: &str) -> Option<Arc<Quarantined>> {
        lock(&self.inner.quarantined).get(id).cloned()
    }

    /// Whether container `id` is quarantined (its record could not be read:
    /// whatever it holds is its own).
    pub fn is_quarantined(&self, id: &str) -> bool {
        lock(&self.inner.quarantined).contains_key(id)
    }

    /// Ids of the quarantined containers.
    pub fn quarantined_ids(&self) -> Vec<String> {
        lock(&self.inner.quarantined).keys().cloned().collect()
    }

    /// FAILED_PRECONDITION for every verb but list, inspect, stats and rm
    /// on a quarantined container.
    pub(crate) fn refuse_quarantined(&self, entry: &Entry) -> Result<(), Error> {
        let Some(q) = self.quarantined(&entry.id) else {
            return Ok(());
        };
        Err(Error::FailedPrecondition(format!(
            "container {} is quarantined: its record cannot be read ({}); nothing acts on it, \
             `rsupctl rm -f {}` stops its processes and cleans it up",
            label(entry),
            q.reason,
            entry.id.chars().take(12).collect::<String>()
        )))
    }

    /// Whether `link` is one of a quarantined container's veths (its
    /// attachments may not be known: the host end of a veth is named after
    /// its container's id).
    pub(crate) fn is_quarantined_link(&self, link: &str) -> bool {
        lock(&self.inner.quarantined)
            .keys()
            .any(|id| self.inner.networks.is_veth_of(link, id))
    }

    /// FAILED_PRECONDITION while a quarantined container whose spec is
    /// unknown exists: it may mount volume `name`.
    pub(crate) fn refuse_unknown_mounts(&self, name: &str) -> Result<(), Error> {
        let unknown: Vec<String> = lock(&self.inner.containers)
            .iter()
            .filter(|e| e.spec.name.is_empty() && self.is_quarantined(&e.id))
            .map(|e| e.id.chars().take(12).collect())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "volume {} may be in use by quarantined container {} (its config cannot be read): \
             `rsupctl rm -f` it first",
            quote(name),
            unknown.join(", ")
        )))
    }

    /// Removes a quarantined container: a live one only with `force`, which
    /// kills its shim and init first (pidfds), then releases its leases on
    /// every network and deletes its veths, netns mount, cgroup and
    /// directory. What is already gone is fine; the rest goes on after an
    /// error, which is reported at the end.
    pub(crate) async fn remove_quarantined(
        &self,
        entry: &Arc<Entry>,
        force: bool,
    ) -> Result<OpReport, Error> {
        let op = entry.op.clone().lock_owned().await;
        let Some(q) = self.quarantined(&entry.id) else {
            // Removed meanwhile.
            return Ok(OpReport::default());
        };
        let name = label(entry);
        if q.alive() && !force {
            return Err(Error::FailedPrecondition(format!(
                "container {name} is quarantined and its processes run: force the removal \
                 (`rsupctl rm -f`) to stop them"
            )));
        }
        for Found { pid, fd, .. } in &q.procs {
            match sys::pidfd_send_signal(&**fd, libc::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Sys {
                        op: "pidfd_send_signal",
                        container: format!("{name} (pid {pid})"),
                        source,
                    });
                }
            }
        }
        for Found { pid, fd, .. } in &q.procs {
            if !wait_exit(fd, KILL_WAIT).await {
                return Err(Error::FailedPrecondition(format!(
                    "container {name}: pid {pid} did not die after SIGKILL"
                )));
            }
        }
        lock(&self.inner.quarantined).remove(&entry.id);
        self.inner
            .unreadable_containers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // Ends its DNS follower and any waiter (in memory: its record is
        // not written).
        entry
            .status
            .send_modify(|s| s.state = ContainerState::Removed);
        self.forget(entry);
        self.event(entry, EventKind::Destroy, &[]);
        // The rest runs to its end even if the caller goes away.
        let (rt, e) = (self.clone(), entry.clone());
        let teardown = self.inner.tracker.spawn(async move {
            let _op = op;
            rt.tear_down_quarantined(&e).await
        });
        let warnings = teardown
            .await
            .map_err(|e| Error::FailedPrecondition(format!("remove task failed: {e}")))?;
        for w in &warnings {
            warn!(container = %entry.id, warning = %w, "removed, but");
        }
        info!(container = %entry.id, "removed a quarantined container");
        Ok(OpReport { warnings })
    }

    /// Removes what a quarantined container holds once its processes are
    /// gone: its leases on every network, its veths, netns mount, cgroup and
    /// directory. Every part is tried; returns what could not be removed.
    async fn tear_down_quarantined(&self, entry: &Arc<Entry>) -> Vec<String> {
        let name = label(entry);
        let mut warnings: Vec<String> = Vec::new();
        for f in self.inner.networks.release_everywhere(&entry.id) {
            warnings.push(format!(
                "container {name}: its addresses are released, but not saved: {f}"
            ));
        }
        for f in self
            .inner
            .networks
            .delete_veths_of(&entry.id, &entry.attachments())
            .await
        {
            warnings.push(format!("container {name}: network: {f}"));
        }
        if let Err(f) = crate::networks::sandbox::unmount_netns(&entry.dir.join("netns")) {
            warnings.push(format!("container {name}: network: {f}"));
        }
        warnings.extend(
            self.remove_cgroup_and_dir(
                entry,
                "rsupd lists it again at its next start, for another rm -f",
            )
            .await,
        );
        // It may have mounted any layer: collect what nothing uses now.
        self.collect_layers().await;
        warnings
    }
}
