//! The one error type of the client library: either the daemon could not be
//! reached at all, or it answered a call with a gRPC status. A status error
//! displays as the daemon's message alone, so a CLI can print it verbatim.

use std::path::PathBuf;

/// A failed call to rsupd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not be reached (missing socket, refused, no
    /// permission, failed TLS handshake).
    #[error("cannot connect to rsupd at {target}: {source}")]
    Connect {
        /// The socket path or TCP address that was tried.
        target: String,
        /// Why the connection failed; its own `source()` holds the OS error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A local file to send (an image archive) could not be read.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed, or rsupd refused this client's certificate.
    #[error("cannot connect to rsupd at {target}: {reason}")]
    Tls {
        /// The address that was tried.
        target: String,
        /// What the handshake (or the server's alert) said.
        reason: String,
    },
    /// A TLS file could not be read or holds no usable PEM.
    #[error("{what} {}: {source}", path.display())]
    TlsFile {
        /// Which file: "CA certificate", "client certificate", "client key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with a non-OK status (or the reply was unusable).
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
}

impl Error {
    /// The gRPC status code, for errors the daemon (or the transport) reported
    /// as a status; `None` when there never was a connection.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Connect { .. }
            | Error::File { .. }
            | Error::Tls { .. }
            | Error::TlsFile { .. } => None,
            Error::Status(status) => Some(status.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_displays_its_message_only() {
        let err = Error::from(tonic::Status::not_found("no such container: web"));
        assert_eq!(err.to_string(), "no such container: web");
        assert_eq!(err.code(), Some(tonic::Code::NotFound));
    }
}
