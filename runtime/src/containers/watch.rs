//! What follows a container's state: `wait`, `logs` (with follow), the
//! DNS names of its networks and the life of its published ports.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Containers;
use super::entry::{ContainerState, Entry, Status};
use crate::error::Error;
use crate::lock::lock;
use crate::logs::{self, LogRecord};
use crate::names::ContainerRef;
use crate::process::ExitInfo;

impl Containers {
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

    /// Keeps the container's DNS names in step with its state for as long
    /// as it exists: present while running or waiting for a restart.
    pub(crate) fn spawn_dns_sync(&self, entry: &Arc<Entry>) {
        if entry.attachments().is_empty() {
            // (One that joins a network later gets it then: see connect.)
            return;
        }
        let networks = self.inner.networks.clone();
        let mut rx = entry.status.subscribe();
        let weak = Arc::downgrade(entry);
        let cancel = entry.cancel.clone();
        self.inner.tracker.spawn(async move {
            loop {
                {
                    let Some(e) = weak.upgrade() else { return };
                    let live = names_live(&e, &e.status.borrow());
                    networks.set_names(&e.id, &e.spec.name, &e.attachments(), live);
                    if e.status.borrow().state == ContainerState::Removed {
                        return;
                    }
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    // Removed: its names go now (when rsupd stops, they
                    // stay until its DNS servers do).
                    _ = cancel.cancelled() => {
                        if let Some(e) = weak.upgrade()
                            && e.status.borrow().state == ContainerState::Removed
                        {
                            networks.set_names(&e.id, &e.spec.name, &e.attachments(), false);
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Starts the proxies of a starting container's published ports
    /// unless they run already; true when it started them (for the start's
    /// undo: [`Containers::stop_ports`]). Binding fails the start (port
    /// taken). They stop when the container stops for good.
    pub(crate) async fn ensure_ports(&self, entry: &Arc<Entry>) -> Result<bool, Error> {
        if entry.spec.ports.is_empty() || lock(&entry.proxy).is_some() {
            return Ok(false);
        }
        let Some(target) = entry.attachments().first().map(|a| a.ip) else {
            return Ok(false);
        };
        let token = self
            .inner
            .networks
            .publish(&entry.spec.name, &entry.spec.ports, target, &entry.cancel)
            .await?;
        *lock(&entry.proxy) = Some(token.clone());
        let mut rx = entry.status.subscribe();
        let weak = Arc::downgrade(entry);
        self.inner.tracker.spawn(async move {
            loop {
                let live = matches!(
                    rx.borrow_and_update().state,
                    ContainerState::Running | ContainerState::Restarting | ContainerState::Created
                );
                if !live || token.is_cancelled() {
                    break;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = token.cancelled() => break,
                }
            }
            token.cancel();
            if let Some(e) = weak.upgrade() {
                let mut p = lock(&e.proxy);
                if p.as_ref().is_some_and(|t| t.is_cancelled()) {
                    *p = None;
                }
            }
        });
        Ok(true)
    }

    /// Stops the container's proxies and closes their ports.
    pub(crate) fn stop_ports(entry: &Entry) {
        if let Some(t) = lock(&entry.proxy).take() {
            t.cancel();
        }
    }
}

/// Whether the container's DNS names should resolve in state `s`: while it
/// runs or waits for a policy restart.
fn names_live(entry: &Entry, s: &Status) -> bool {
    match s.state {
        ContainerState::Running | ContainerState::Restarting => true,
        // Just exited: keep the name if its policy (or supervisor) is
        // about to restart it, so there is no NXDOMAIN window.
        ContainerState::Exited => entry.will_restart(s),
        // Quarantined: rsupd cannot vouch for its names.
        ContainerState::Created | ContainerState::Removed | ContainerState::Unknown => false,
    }
}
