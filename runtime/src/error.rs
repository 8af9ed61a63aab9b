//! The one error type of the runtime's public API. Each variant says which
//! kind of failure it is, so the daemon can map it onto one gRPC code.
//!
//! A state write that fails for want of space (ENOSPC, or EDQUOT of a
//! quota) is not an internal error: every [`StoreError`] converted into an
//! [`Error`] becomes [`Error::NoSpace`], which names the state device, its
//! mount point and the state directory, so the operator knows what to free.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cgroups::CgroupError;
use crate::networks::error::NetworkError;
use crate::store::StoreError;
use crate::userns::error::UsernsError;

/// The message of an error and of every error below it, `: `-joined (a
/// cause already in the message is not repeated).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

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
    Store(StoreError),
    /// The state device is full (or the state dir's quota used up).
    #[error(transparent)]
    NoSpace(Box<NoSpace>),
    #[error("{op} for container {container}: {source}")]
    Sys {
        op: &'static str,
        container: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// A network step failed (see [`NetworkError`]).
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// User namespaces: the remap user's ids, the shifted copies.
    #[error(transparent)]
    Userns(#[from] UsernsError),
    /// A cgroup could not be changed (`container` is for the log: the
    /// message is the one rsupd always gave).
    #[error("{op}: {source}")]
    Cgroup {
        op: &'static str,
        container: String,
        #[source]
        source: Box<CgroupError>,
    },
    /// `source`, and the undo that followed it also failed (a typed
    /// error keeps its type; the free-text ones carry the failures in
    /// their message, see [`Error::with_cleanup_failures`]).
    #[error("{source} (undoing it also failed: {})", failures.join("; "))]
    Cleanup {
        source: Box<Error>,
        failures: Vec<String>,
    },
    /// The daemon is shutting down.
    #[error("rsupd is shutting down")]
    ShuttingDown,
    /// A registry could not be reached, refused the credentials, or sent
    /// what does not verify (see [`RegistryError`]).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// How a pull or a push failed at the registry's end (a missing tag or
/// blob is [`Error::NotFound`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Cannot connect, TLS refused, a 5xx, a connection cut mid-blob.
    #[error("registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    /// No or wrong credentials (401).
    #[error("registry {registry}: {reason}")]
    Unauthorized { registry: String, reason: String },
    /// The credentials are not allowed this (403).
    #[error("registry {registry}: {reason}")]
    Denied { registry: String, reason: String },
    /// Content that does not match its digest or size.
    #[error("registry {registry}: {reason}")]
    Corrupt { registry: String, reason: String },
    /// A manifest rsup cannot use (schema 1, no linux/amd64 entry, zstd).
    #[error("registry {registry}: {reason}")]
    Unsupported { registry: String, reason: String },
    /// The registry refused the range of a resumed download (416, or
    /// another error answer to it): the download starts over.
    #[error("registry {registry}: {reason}")]
    RangeRefused { registry: String, reason: String },
}

impl Error {
    /// This error, with the failures of the undo that followed it added
    /// to its message (the cause first: it is what the caller must fix).
    /// Variants without a free-text message keep theirs; the failures are
    /// in the log either way.
    pub fn with_cleanup_failures(self, failures: &[String]) -> Error {
        if failures.is_empty() {
            return self;
        }
        let note = |m: String| format!("{m} (undoing it also failed: {})", failures.join("; "));
        match self {
            Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                field,
                reason: note(reason),
            },
            Error::NotFound(m) => Error::NotFound(note(m)),
            Error::AlreadyExists(m) => Error::AlreadyExists(note(m)),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(note(m)),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(note(m)),
            e @ (Error::Network(_) | Error::Cgroup { .. } | Error::Userns(_)) => Error::Cleanup {
                source: Box::new(e),
                failures: failures.to_vec(),
            },
            other => other,
        }
    }
}

/// A state write refused for want of space, with where that space is.
#[derive(Debug, thiserror::Error)]
#[error(
    "no space left on the state device {device} (mounted at {mount}; state dir {state_dir}): {op} {path}: {source}"
)]
pub struct NoSpace {
    pub op: &'static str,
    pub path: PathBuf,
    /// The mount's source as mountinfo says (`/dev/sda1`, `tmpfs`).
    pub device: String,
    pub mount: String,
    /// The state directory holding `path` (the nearest parent with
    /// `rsupd.lock`), or `path`'s directory if none has one.
    pub state_dir: String,
    #[source]
    pub source: std::io::Error,
}

impl NoSpace {
    /// Describes `source`, raised by `op` on `path`, when it is ENOSPC or
    /// EDQUOT.
    pub fn of(
        op: &'static str,
        path: &Path,
        source: std::io::Error,
    ) -> Result<NoSpace, std::io::Error> {
        if !matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return Err(source);
        }
        let (mount, device) =
            crate::store::mount_of_path(path).unwrap_or_else(|| ("?".into(), "?".into()));
        let state_dir = path
            .ancestors()
            .skip(1)
            .find(|d| d.join("rsupd.lock").exists())
            .or_else(|| path.parent())
            .unwrap_or(path);
        Ok(NoSpace {
            op,
            path: path.to_path_buf(),
            device,
            mount,
            state_dir: state_dir.display().to_string(),
            source,
        })
    }
}

/// The message `e` has as an [`Error`] (a full disk names its device).
pub(crate) fn describe_store_error(e: &StoreError) -> String {
    if let StoreError::Io { op, path, source } = e
        && let Some(errno) = source.raw_os_error()
        && let Ok(full) = NoSpace::of(op, path, std::io::Error::from_raw_os_error(errno))
    {
        return full.to_string();
    }
    e.to_string()
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Io { op, path, source } => match NoSpace::of(op, &path, source) {
                Ok(full) => Error::NoSpace(Box::new(full)),
                Err(source) => Error::Store(StoreError::Io { op, path, source }),
            },
            other => Error::Store(other),
        }
    }
}

/// Errors of starting a container process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start the shim {exe}: {source}")]
    Exec {
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the container failed: {0}")]
    Setup(String),
    /// A named step of the container's setup failed (in the init).
    #[error("setting up the container failed: {message}")]
    Step { step: Step, message: String },
    #[error("starting the command failed: {message}")]
    Command {
        message: String,
        /// Docker's exit code for a command that cannot be run (126, 127).
        exit_code: Option<i32>,
    },
    #[error("the shim ended without reporting ({0})")]
    ShimLost(String),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
}

/// A step of the setup, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The overlay's layers and directories, and its mount.
    Rootfs,
    /// New namespaces, and `/` made private.
    Namespaces,
    Proc,
    Devices,
    Sys,
    Volumes,
    EtcFiles,
    /// The hostname and `lo`.
    Hostname,
    Pivot,
    MaskedPaths,
    WorkingDir,
    ReadOnlyRoot,
    UserNamespace,
    /// The cgroup namespace and the fork of the command.
    Start,
    /// The init gives up its host files and all but `CAP_KILL` (after the
    /// fork of the command, before the command may run).
    Confine,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Rootfs => "rootfs",
            Step::Namespaces => "namespaces",
            Step::Proc => "/proc",
            Step::Devices => "/dev",
            Step::Sys => "/sys",
            Step::Volumes => "volumes",
            Step::EtcFiles => "/etc files",
            Step::Hostname => "hostname",
            Step::Pivot => "pivot_root",
            Step::MaskedPaths => "masked paths",
            Step::WorkingDir => "working directory",
            Step::ReadOnlyRoot => "read-only root",
            Step::UserNamespace => "user namespace",
            Step::Start => "start",
            Step::Confine => "confine the init",
        })
    }
}

impl Step {
    /// Every step, in setup order.
    pub const ALL: [Step; 15] = [
        Step::Rootfs,
        Step::Namespaces,
        Step::Proc,
        Step::Devices,
        Step::Sys,
        Step::Volumes,
        Step::EtcFiles,
        Step::Hostname,
        Step::Pivot,
        Step::MaskedPaths,
        Step::WorkingDir,
        Step::ReadOnlyRoot,
        Step::UserNamespace,
        Step::Start,
        Step::Confine,
    ];

    /// The step's name on the wire (the init's status line, the shim's
    /// report): one word.
    pub fn token(self) -> &'static str {
        match self {
            Step::Rootfs => "rootfs",
            Step::Namespaces => "namespaces",
            Step::Proc => "proc",
            Step::Devices => "devices",
            Step::Sys => "sys",
            Step::Volumes => "volumes",
            Step::EtcFiles => "etc_files",
            Step::Hostname => "hostname",
            Step::Pivot => "pivot",
            Step::MaskedPaths => "masked_paths",
            Step::WorkingDir => "working_dir",
            Step::ReadOnlyRoot => "read_only_root",
            Step::UserNamespace => "user_namespace",
            Step::Start => "start",
            Step::Confine => "confine",
        }
    }

    /// The step a [`Step::token`] names.
    pub fn from_token(t: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.token() == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_from_the_store_names_the_state_device() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("state");
        std::fs::create_dir_all(root.join("networks")).expect("mkdir");
        std::fs::write(root.join("rsupd.lock"), "").expect("lock");
        let path = root.join("networks/n.json");
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e: Error = StoreError::Io {
                op: "write",
                path: path.clone(),
                source: std::io::Error::from_raw_os_error(errno),
            }
            .into();
            let Error::NoSpace(full) = &e else {
                panic!("not NoSpace: {e:?}");
            };
            assert_eq!(full.state_dir, root.display().to_string());
            assert_ne!(full.mount, "?", "{e}");
            let msg = e.to_string();
            assert!(msg.contains("no space left on the state device"), "{msg}");
            assert!(
                msg.contains(&format!("state dir {}", root.display())),
                "{msg}"
            );
        }
        // Any other error stays a store error.
        let e: Error = StoreError::Io {
            op: "write",
            path,
            source: std::io::Error::from_raw_os_error(libc::EIO),
        }
        .into();
        assert!(matches!(e, Error::Store(_)), "{e:?}");
    }

    #[test]
    fn typed_errors_keep_their_type_and_say_what_the_undo_left() {
        let e: Error = NetworkError::Publish {
            addr: "127.0.0.1:8080".parse().expect("addr"),
            source: std::io::Error::from_raw_os_error(libc::EADDRINUSE),
        }
        .into();
        assert!(matches!(e, Error::Network(NetworkError::Publish { .. })));
        let undone = e.with_cleanup_failures(&["veth zv1: busy".into(), "cgroup x: EBUSY".into()]);
        let Error::Cleanup { source, failures } = &undone else {
            panic!("not wrapped: {undone:?}");
        };
        assert!(matches!(
            **source,
            Error::Network(NetworkError::Publish { .. })
        ));
        assert_eq!(failures.len(), 2);
        assert_eq!(
            undone.to_string(),
            "publishing 127.0.0.1:8080: Address already in use (os error 98) \
             (undoing it also failed: veth zv1: busy; cgroup x: EBUSY)"
        );
        // Free-text errors carry the failures in their message, as before.
        let e = Error::FailedPrecondition("no".into()).with_cleanup_failures(&["a".into()]);
        assert_eq!(e.to_string(), "no (undoing it also failed: a)");
        assert!(matches!(e, Error::FailedPrecondition(_)));
        // Nothing to add: unchanged.
        let e = Error::from(NetworkError::NetnsTask("x".into())).with_cleanup_failures(&[]);
        assert!(matches!(e, Error::Network(_)));
    }

    #[test]
    fn setup_steps_have_one_word_names_and_keep_the_message() {
        let mut seen = std::collections::HashSet::new();
        for step in Step::ALL {
            let t = step.token();
            assert!(!t.is_empty() && !t.contains(char::is_whitespace), "{t}");
            assert!(seen.insert(t), "{t} twice");
            assert_eq!(Step::from_token(t), Some(step));
        }
        assert_eq!(Step::from_token("Rootfs"), None);
        let e = SpawnError::Step {
            step: Step::Pivot,
            message: "pivot_root: EINVAL".into(),
        };
        // The same text as an unnamed setup failure: clients see no change.
        assert_eq!(
            e.to_string(),
            SpawnError::Setup("pivot_root: EINVAL".into()).to_string()
        );
    }
}
