//! Published ports (`-p [IP:]HOSTPORT:PORT`): a userland TCP proxy in rsupd.
//!
//! While a container runs (or waits for its policy restart), rsupd listens on
//! `IP:HOSTPORT` of the host and forwards each connection to the container's
//! address on its first network. A proxy needs neither NAT nor forwarding on
//! the host, works for clients on the host itself (loopback), and stops when
//! the container stops for good (the containers service cancels it). Published
//! ports are served by rsupd: they pause while rsupd is down (the containers
//! themselves keep running).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{NetworkError, Networks};
use crate::error::Error;
pub use crate::spec::ports::PortMap;

impl Networks {
    /// Listens on every port of `ports` and forwards each connection to
    /// `target` (container `name`'s first address); the proxies run until
    /// the returned token, a child of `parent` (the container's), is
    /// cancelled. Binding fails
    /// the whole call (port taken) with nothing left listening.
    pub async fn publish(
        &self,
        name: &str,
        ports: &[PortMap],
        target: Ipv4Addr,
        parent: &CancellationToken,
    ) -> Result<CancellationToken, Error> {
        let mut listeners = Vec::new();
        for p in ports {
            let addr = SocketAddr::new(p.host_ip, p.host_port);
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| NetworkError::Publish { addr, source })?;
            listeners.push((l, SocketAddr::new(IpAddr::V4(target), p.container_port)));
        }
        let token = parent.child_token();
        let tracker = self.inner.tracker.clone();
        for (l, to) in listeners {
            let token = token.clone();
            let t2 = tracker.clone();
            info!(container = %name, from = ?l.local_addr().ok(), %to, "publishing");
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
        Ok(token)
    }
}

async fn proxy(mut client: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(to).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
