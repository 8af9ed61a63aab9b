//! The one error type of the runtime's public API. Each variant says which
//! kind of failure it is, so the daemon can map it onto one gRPC code.

use crate::process::SpawnError;
use crate::store::StoreError;

/// Errors of [`crate::Runtime`] calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A pool (addresses, ...) is used up.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request is well formed but the system is not in a state to do it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("container {container}: {source}")]
    Spawn {
        container: String,
        #[source]
        source: SpawnError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{op} for container {container}: {source}")]
    Sys {
        op: &'static str,
        container: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// The daemon is shutting down.
    #[error("rsupd is shutting down")]
    ShuttingDown,
}
