//! gRPC translation: proto request -> validated runtime call -> proto reply.
//! The one mapping of runtime errors onto status codes lives here.

pub mod containers;
pub mod images;
pub mod networks;
pub mod supervisors;
pub mod system;
pub mod volumes;

use rsup_runtime::Error;
use rsup_runtime::process::SpawnError;
use tonic::Status;

/// Maps a runtime error onto exactly one gRPC status.
pub fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument { .. } => Status::invalid_argument(msg),
        Error::NotFound(_) => Status::not_found(msg),
        Error::AlreadyExists(_) => Status::already_exists(msg),
        Error::ResourceExhausted(_) => Status::resource_exhausted(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::Spawn {
            source: SpawnError::Setup(_) | SpawnError::Command { .. },
            ..
        } => Status::failed_precondition(msg),
        Error::ShuttingDown => Status::unavailable(msg),
        Error::Spawn { .. } | Error::Store(_) | Error::Sys { .. } => Status::internal(msg),
    }
}
