//! gRPC translation: proto request -> validated runtime call -> proto reply.
//! The one mapping of runtime errors onto status codes lives here.

pub mod containers;
pub mod images;
pub mod networks;
pub mod supervisors;
pub mod system;
pub mod volumes;

use rsup_runtime::Error;
use rsup_runtime::error::RegistryError;
use rsup_runtime::process::SpawnError;
use tonic::Status;

/// Longest status message rsupd sends. gRPC carries the message in a
/// header (percent-encoded): a message that grows with its input would hit
/// the peer's header limit and reach the client as RESOURCE_EXHAUSTED
/// instead of its own code.
pub const MAX_MESSAGE: usize = 2048;

/// `msg` cut to at most [`MAX_MESSAGE`] bytes (on a char boundary), saying
/// that and how long it was.
pub fn cap_message(msg: String) -> String {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let note = format!("…(message cut: {} bytes in all)", msg.len());
    let mut end = MAX_MESSAGE - note.len();
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &msg[..end])
}

/// Parses a name or reference field of a request once, at the edge: a
/// malformed value is INVALID_ARGUMENT naming `field` (a valid one that
/// names nothing is the runtime's NOT_FOUND).
pub fn parse<T>(
    value: &str,
    field: &'static str,
    parse_as: fn(&str, &'static str) -> Result<T, Error>,
) -> Result<T, Status> {
    parse_as(value, field).map_err(status)
}

/// Like [`parse`] for an optional field: empty means none.
pub fn parse_opt<T>(
    value: &str,
    field: &'static str,
    parse_as: fn(&str, &'static str) -> Result<T, Error>,
) -> Result<Option<T>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    parse(value, field, parse_as).map(Some)
}

/// Maps a runtime error onto exactly one gRPC status.
pub fn status(e: Error) -> Status {
    let msg = cap_message(e.to_string());
    Status::new(code(&e), msg)
}

/// The gRPC code of a runtime error: the one mapping of the daemon.
fn code(e: &Error) -> tonic::Code {
    use tonic::Code;
    match e {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        // A full state device: the message names it (device, mount point,
        // state dir) for the operator to free space there.
        Error::ResourceExhausted(_) | Error::NoSpace(_) => Code::ResourceExhausted,
        Error::FailedPrecondition(_)
        | Error::Network(_)
        | Error::Cgroup { .. }
        | Error::Userns(_) => Code::FailedPrecondition,
        Error::Spawn {
            source: SpawnError::Setup(_) | SpawnError::Step { .. } | SpawnError::Command { .. },
            ..
        } => Code::FailedPrecondition,
        // The cause decides; the undo's failures are in the message.
        Error::Cleanup { source, .. } => code(source),
        Error::ShuttingDown => Code::Unavailable,
        Error::Registry(r) => match r {
            RegistryError::Unreachable { .. } | RegistryError::RangeRefused { .. } => {
                Code::Unavailable
            }
            RegistryError::Unauthorized { .. } => Code::Unauthenticated,
            RegistryError::Denied { .. } => Code::PermissionDenied,
            RegistryError::Corrupt { .. } => Code::DataLoss,
            RegistryError::Unsupported { .. } => Code::FailedPrecondition,
        },
        Error::Spawn { .. } | Error::Store(_) | Error::Sys { .. } => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_capped_on_a_char_boundary() {
        let short = "no such volume: data".to_string();
        assert_eq!(cap_message(short.clone()), short);
        let exact = "x".repeat(MAX_MESSAGE);
        assert_eq!(cap_message(exact.clone()), exact);
        for filler in ["y", "é", "名"] {
            let long = filler.repeat(1 << 20);
            let capped = cap_message(long.clone());
            assert!(capped.len() <= MAX_MESSAGE, "{}", capped.len());
            assert!(
                capped.ends_with(&format!("…(message cut: {} bytes in all)", long.len())),
                "{capped}"
            );
        }
        let s = status(Error::NotFound("z".repeat(1 << 20)));
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert!(s.message().len() <= MAX_MESSAGE);
        let s = status(Error::InvalidArgument {
            field: "name",
            reason: "r".repeat(100_000),
        });
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with("invalid name: rrr"),
            "{}",
            s.message()
        );
        assert!(s.message().len() <= MAX_MESSAGE);
    }

    #[test]
    fn a_full_state_device_is_resource_exhausted() {
        let path = std::env::temp_dir().join("state/networks/n.json");
        let e: Error = rsup_runtime::store::StoreError::Io {
            op: "write",
            path,
            source: std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32),
        }
        .into();
        let s = status(e);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message()
                .starts_with("no space left on the state device "),
            "{}",
            s.message()
        );
    }

    #[test]
    fn typed_errors_map_to_their_codes_through_an_undo() {
        use rsup_runtime::networks::error::NetworkError;
        let net = || {
            Error::from(NetworkError::InUse {
                network: "back".into(),
                users: vec!["db".into(), "app".into()],
            })
        };
        let s = status(net());
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "network back is in use by db, app: remove them first"
        );
        let s = status(net().with_cleanup_failures(&["veth: busy".into()]));
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message()
                .ends_with("(undoing it also failed: veth: busy)"),
            "{}",
            s.message()
        );
        let s = status(Error::Cleanup {
            source: Box::new(Error::ShuttingDown),
            failures: vec!["x".into()],
        });
        assert_eq!(s.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn registry_errors_have_their_codes() {
        use tonic::Code;
        let reg = || "127.0.0.1:5000".to_string();
        let reason = || "r".to_string();
        for (e, code) in [
            (
                RegistryError::Unreachable {
                    registry: reg(),
                    reason: reason(),
                },
                Code::Unavailable,
            ),
            (
                RegistryError::RangeRefused {
                    registry: reg(),
                    reason: reason(),
                },
                Code::Unavailable,
            ),
            (
                RegistryError::Unauthorized {
                    registry: reg(),
                    reason: reason(),
                },
                Code::Unauthenticated,
            ),
            (
                RegistryError::Denied {
                    registry: reg(),
                    reason: reason(),
                },
                Code::PermissionDenied,
            ),
            (
                RegistryError::Corrupt {
                    registry: reg(),
                    reason: reason(),
                },
                Code::DataLoss,
            ),
            (
                RegistryError::Unsupported {
                    registry: reg(),
                    reason: reason(),
                },
                Code::FailedPrecondition,
            ),
        ] {
            let s = status(Error::Registry(e));
            assert_eq!(s.code(), code, "{}", s.message());
            assert_eq!(s.message(), "registry 127.0.0.1:5000: r");
        }
    }
}
