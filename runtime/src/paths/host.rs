//! [`open_host_path`]: a host path given by a root-equivalent client (a
//! bind mount's source, a device node of the host), opened as a [`Target`]
//! without a root around it.

use std::path::{Path, PathBuf};

use super::error::PathError;
use super::target::Target;

/// Opens a host path given by a root-equivalent client (a bind mount's
/// source), following symlinks as Docker does, as an `O_PATH` fd: the mount
/// then uses exactly this inode.
pub fn open_host_path(path: &Path) -> Result<Target, PathError> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| PathError::Op {
        op: "open",
        root: PathBuf::from("/"),
        path: path.display().to_string(),
        errno: Some(e),
        reason: e.desc().to_string(),
    })?;
    Ok(Target {
        fd,
        path: path.display().to_string(),
    })
}
