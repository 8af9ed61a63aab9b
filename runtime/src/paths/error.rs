//! [`PathError`], the one error of `crate::paths`, and how the errors of
//! libpathrs and of the kernel become one: their errno and the message of
//! every error in their chain.

use std::path::PathBuf;

use nix::errno::Errno;

/// Errors of `crate::paths`; each names the root and the path inside it.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{op} {path:?} under {root}: {reason}")]
    Op {
        op: &'static str,
        root: PathBuf,
        path: String,
        errno: Option<Errno>,
        reason: String,
    },
    #[error("{path:?} under {root} is {found}, not {expected}")]
    Kind {
        root: PathBuf,
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path:?} under {root} is on {fs}: refused")]
    Filesystem {
        root: PathBuf,
        path: String,
        fs: &'static str,
    },
    #[error("{path:?} under {root} is larger than {max} bytes")]
    TooLarge {
        root: PathBuf,
        path: String,
        max: usize,
    },
}

impl PathError {
    /// The errno behind the error, if it came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            PathError::Op { errno, .. } => *errno,
            _ => None,
        }
    }

    /// True if the path (or a component of it) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(Errno::ENOENT)
    }
}

pub(super) use crate::error::chain;

/// The errno behind an error of libpathrs (EXDEV for its safety refusals).
pub(super) fn pathrs_errno(e: &pathrs::error::Error) -> Option<Errno> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) => Some(Errno::from_raw(n)),
        pathrs::error::ErrorKind::SafetyViolation => Some(Errno::EXDEV),
        _ => None,
    }
}
