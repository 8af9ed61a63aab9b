//! Paths under a root directory, resolved through file descriptors.
//!
//! rsup works as root on directory trees that others control: an image's
//! layers and its merged view, a `--rootfs`, a container's overlay root
//! (before `pivot_root`), the data of a named volume. A path string walked in
//! such a tree can be redirected by a symlink in any component, or by a
//! directory swapped for a symlink while we walk it, to anywhere on the host.
//! This module is the one way rsup opens, creates, reads, writes or mounts onto
//! a path inside such a tree. [`RootDir`] wraps a libpathrs [`pathrs::Root`]
//! (what runc uses since its symlink CVEs), which resolves with
//! `openat2(RESOLVE_IN_ROOT)` (or, on kernels without it, a userspace walk
//! verified through a private procfs handle): absolute symlinks and `..` stay
//! inside the root, and every result is a file descriptor, never a path to walk
//! again.
//!
//! Invariants:
//! * nothing here follows a symlink out of the root, in any component;
//! * an `O_CREAT` never follows a trailing symlink: creations work on the
//!   parent's fd with `O_EXCL | O_NOFOLLOW`;
//! * a mount target is handed to `mount(2)` as `/proc/self/fd/N` of the
//!   resolved fd ([`Target::proc_path`]), so the kernel mounts on exactly the
//!   inode we resolved and checked, with no second walk of the path;
//! * [`RootDir::write_file`] writes only regular files on the root's own
//!   filesystem, never on procfs or sysfs, and never through a trailing
//!   symlink;
//! * reads ([`RootDir::read_file`]) open regular files only (a FIFO or a
//!   device node in an image cannot block or feed rsupd), with a size cap.
//!
//! A dangling symlink is never created through: [`RootDir::mkdir_all`] and
//! [`RootDir::create_file`] refuse it (libpathrs does for directories; we do
//! for files), rather than create a file or directory at a place that only
//! a symlink names. Docker would create the symlink's target inside the
//! root; refusing is the conservative choice and costs nothing for real
//! images.

mod create;
mod error;
mod files;
mod host;
mod kind;
mod root;
mod target;
mod walk;

pub use error::PathError;
pub use host::open_host_path;
pub use root::RootDir;
pub use target::Target;
pub use walk::{Walk, WalkEnd, is_ancestor_or_self};

#[cfg(test)]
mod tests;
