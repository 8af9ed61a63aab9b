//! A typed client for rsupd, the rsup container daemon.
//!
//! rsupd serves gRPC (package `rsup.v1`) on a Unix socket and, optionally, on
//! TCP with mutual TLS. [`Client`] owns one HTTP/2 channel to either and wraps every RPC in a method that takes and
//! returns plain values: replies whose container is unexpectedly missing become
//! an [`Error::Status`] with code `Internal`, never a panic. The generated
//! stubs stay reachable through [`Client::containers`], [`Client::supervisors`],
//! [`Client::networks`], [`Client::volumes`], [`Client::images`] and
//! [`Client::system`] for callers that need request
//! metadata or raw responses.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rsup_client::Error> {
//! let client = rsup_client::Client::connect(rsup_client::DEFAULT_SOCKET).await?;
//! for c in client.list(true).await? {
//!     println!("{} {}", c.id, c.name);
//! }
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod client;
mod error;
mod host;
mod images;
mod tls;

pub use client::Client;
pub use error::Error;
pub use host::{Host, HostError, TlsFiles};
pub use images::{ImageProgress, RegistryLogin, registry_of};
pub use rsup_proto::v1 as proto;

/// Where rsupd listens unless told otherwise (`rsupctl --socket`, `RSUP_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/rsup/rsupd.sock";
