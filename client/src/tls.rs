//! Mutual TLS to rsupd's `--tcp` listener, with errors that say what went
//! wrong.
//!
//! rustls (ring provider) does the TLS; tonic only sees a connected stream.
//! With TLS 1.3 the client's side of the handshake ends before the server has
//! judged the client's certificate, so a server that refuses it can only say
//! so afterwards, in an alert that HTTP/2 would report as a bare "connection
//! closed". [`preflight`] therefore opens one connection first, sends the
//! HTTP/2 preface and waits for the server's first bytes: an alert there
//! ("CertificateRequired", "UnknownCA", ...) becomes the connect error.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{Error, TlsFiles};

/// The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Everything needed to open TLS connections to one rsupd.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::TlsFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &std::path::Path, why: impl std::fmt::Display) -> Error {
    Error::TlsFile {
        what,
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    }
}

impl Tls {
    /// Reads the PEM files and builds the client configuration: TLS 1.2 or
    /// 1.3, rsupd's certificate checked against `files.ca` for `host` (or
    /// `files.server_name`), and the client certificate if there is one.
    pub(crate) fn new(files: &TlsFiles, host: &str) -> Result<Tls, Error> {
        let ca_pem = read("CA certificate", &files.ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            let cert = cert.map_err(|e| invalid("CA certificate", &files.ca, e))?;
            roots
                .add(cert)
                .map_err(|e| invalid("CA certificate", &files.ca, e))?;
        }
        if roots.is_empty() {
            return Err(invalid("CA certificate", &files.ca, "no certificate in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("CA certificate", &files.ca, e))?
            .with_root_certificates(roots);
        let mut config = match (&files.cert, &files.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read("client certificate", cert_path)?;
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("client certificate", cert_path, e))?;
                if chain.is_empty() {
                    return Err(invalid(
                        "client certificate",
                        cert_path,
                        "no certificate in it",
                    ));
                }
                let key_pem = read("client key", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid("client key", key_path, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("client key", key_path, e))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = files.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| Error::Tls {
            target: name.to_owned(),
            reason: format!("invalid server name {name:?}: {e}"),
        })?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// A TCP connection to `authority` with the TLS handshake done.
    pub(crate) async fn connect(&self, authority: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        self.connector.connect(self.server_name.clone(), tcp).await
    }

    /// One throw-away connection that shows whether rsupd accepts this
    /// client: the handshake, then the server's first bytes (or its alert).
    pub(crate) async fn preflight(
        &self,
        authority: &str,
        target: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let fail = |reason: String| Error::Tls {
            target: target.to_owned(),
            reason,
        };
        let attempt = async {
            let mut stream = self
                .connect(authority)
                .await
                .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
            let refused = |e: std::io::Error| {
                fail(format!(
                    "rsupd refused the connection after the TLS handshake: {e}"
                ))
            };
            stream.write_all(H2_PREFACE).await.map_err(refused)?;
            stream.flush().await.map_err(refused)?;
            let mut first = [0u8; 9];
            match stream.read(&mut first).await {
                Ok(0) => Err(fail(
                    "rsupd closed the connection after the TLS handshake \
                     (does it trust the CA of this client's certificate?)"
                        .to_owned(),
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(refused(e)),
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| fail(format!("no TLS answer within {timeout:?}")))?
    }
}
