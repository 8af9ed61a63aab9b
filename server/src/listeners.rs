//! The TCP side of rsupd's control plane. The Unix socket (mode 0660, owned
//! by `--socket-group`) is always served; beside it:
//!
//! - `--tcp`: TLS 1.2/1.3 through rustls (ring provider) with a REQUIRED
//!   client certificate that chains to `--tls-ca`. A client without one, or
//!   with one from another CA, fails the handshake and never reaches a
//!   service.
//! - `--insecure-tcp`: plain HTTP/2 with no authentication at all, accepted
//!   only on a loopback address (checked in `config`) and announced with a
//!   warning at every start.
//!
//! Every listener serves the same [`Routes`] (all rsup services, health and
//! reflection) behind the same metrics layer, and stops gracefully on the
//! same cancellation token.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsListener;

/// A client that connects but does not finish its TLS handshake in this
/// time is dropped (tonic runs handshakes off the accept loop).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes ring rustls' process-wide crypto provider, so that the choice does
/// not depend on which rustls features the dependency graph happens to
/// enable (with two providers and no default, rustls panics).
pub fn install_crypto_provider() {
    // Err only when a provider is installed already: keep that one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Binds a TCP listener; port 0 lets the kernel pick (see the logged address).
pub async fn bind_tcp(flag: &str, addr: SocketAddr) -> anyhow::Result<(TcpIncoming, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag}: binding {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("{flag}: address of the listener on {addr}"))?;
    Ok((TcpIncoming::from(listener).with_nodelay(Some(true)), local))
}

/// The server side of mutual TLS: rsupd's identity, and the CA a client
/// certificate must chain to (client authentication is not optional).
pub fn server_tls(tls: &TlsListener) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.ca_pem))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT)
}
