//! Published ports (`-p [IP:]HOSTPORT:PORT`): a userland TCP proxy in rsupd.
//!
//! While a container runs (or waits for its policy restart), rsupd listens on
//! `IP:HOSTPORT` of the host and forwards each connection to the container's
//! address on its first network. A proxy needs neither NAT nor forwarding on
//! the host, works for clients on the host itself (loopback), and stops when
//! the container stops for good. Published ports are served by rsupd: they
//! pause while rsupd is down (the containers themselves keep running).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::Error;
use crate::container::{ContainerState, Entry, Runtime, lock};
pub use crate::spec::ports::PortMap;

impl Runtime {
    /// Starts the proxies of a starting container unless they run already;
    /// true when it started them (for the start's undo:
    /// [`Runtime::stop_ports`]). Binding fails the start (port taken).
    pub(crate) async fn ensure_ports(&self, entry: &Arc<Entry>) -> Result<bool, Error> {
        if entry.spec.ports.is_empty() || lock(&entry.proxy).is_some() {
            return Ok(false);
        }
        let Some(target) = entry.spec.networks.first().map(|a| a.ip) else {
            return Ok(false);
        };
        let mut listeners = Vec::new();
        for p in &entry.spec.ports {
            let addr = SocketAddr::new(p.host_ip, p.host_port);
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| Error::FailedPrecondition(format!("publishing {addr}: {e}")))?;
            listeners.push((l, SocketAddr::new(IpAddr::V4(target), p.container_port)));
        }
        let token = self.inner.shutdown.child_token();
        *lock(&entry.proxy) = Some(token.clone());
        let mut rx = entry.status.subscribe();
        let weak = Arc::downgrade(entry);
        let tracker = self.inner.tracker.clone();
        for (l, to) in listeners {
            let token = token.clone();
            let t2 = tracker.clone();
            info!(container = %entry.spec.name, from = ?l.local_addr().ok(), %to, "publishing");
            tracker.spawn(async move {
                loop {
                    let (conn, _) = tokio::select! {
                        r = l.accept() => match r {
                            Ok(c) => c,
                            Err(e) => { warn!(error = %e, "accept"); continue; }
                        },
                        _ = token.cancelled() => return,
                    };
                    let token = token.clone();
                    t2.spawn(async move {
                        tokio::select! {
                            r = proxy(conn, to) => if let Err(e) = r { debug!(error = %e, %to, "proxied connection"); },
                            _ = token.cancelled() => {}
                        }
                    });
                }
            });
        }
        // Stop when the container stops for good.
        tracker.spawn(async move {
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

async fn proxy(mut client: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(to).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
