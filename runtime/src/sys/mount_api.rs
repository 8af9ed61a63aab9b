//! The new mount API: a mount tree held by a file descriptor while it is
//! detached from every namespace (`open_tree(2)`, Linux 5.2), changed there
//! (`mount_setattr(2)`, Linux 5.12), then attached onto a target given by
//! its fd (`move_mount(2)`, Linux 5.2).
//!
//! rsup uses it for read-only bind mounts: the copy of the source is made
//! read-only (with every mount below it) before anything can reach it, and
//! attached onto the inode the path module resolved. Nothing looks a path up
//! between the bind and the read-only flag, so no symlink swapped in a
//! shared volume can make the flag land on another mount (as a remount by
//! path after `mount(MS_BIND)` could), and no submount stays writable.
//!
//! Invariants: a [`DetachedTree`] is close-on-exec and owns its fd; dropping
//! it unattached frees the copy (the kernel unmounts a detached tree when
//! its last fd closes). nix 0.32 has none of these calls, and libc only
//! their numbers: the flags are spelled out here from `linux/mount.h` and
//! `linux/fcntl.h`.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// `OPEN_TREE_CLONE`: a detached copy of the mount at the path, not the
/// mount itself.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `OPEN_TREE_CLOEXEC` is `O_CLOEXEC`.
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
/// `AT_RECURSIVE`: with every mount below (open_tree, mount_setattr).
const AT_RECURSIVE: libc::c_uint = 0x8000;
/// `AT_EMPTY_PATH`: the fd itself, with an empty path.
const AT_EMPTY_PATH: libc::c_uint = libc::AT_EMPTY_PATH as libc::c_uint;
/// `MOVE_MOUNT_F_EMPTY_PATH` / `MOVE_MOUNT_T_EMPTY_PATH`: the from and to
/// fds themselves.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// `MOUNT_ATTR_RDONLY`.
const MOUNT_ATTR_RDONLY: u64 = 0x01;

/// `struct mount_attr` (`MOUNT_ATTR_SIZE_VER0`, 32 bytes).
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const EMPTY: &CStr = c"";

/// A mount tree held by its fd, attached nowhere (see the module
/// documentation).
#[derive(Debug)]
pub struct DetachedTree(OwnedFd);

impl DetachedTree {
    /// Wraps an fd the caller vouches is a detached tree (for fakes in
    /// tests, any fd stands in).
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd) -> DetachedTree {
        DetachedTree(fd)
    }

    /// The fd, for messages and fakes.
    pub fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for DetachedTree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A detached copy of the mount tree at `source` (an fd of the directory
/// or file to bind, `O_PATH` is enough), with every mount below it:
/// `open_tree(source, "", OPEN_TREE_CLONE | AT_RECURSIVE | AT_EMPTY_PATH)`.
/// The source must be in the caller's mount namespace.
pub fn clone_tree(source: BorrowedFd<'_>) -> nix::Result<DetachedTree> {
    let flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH;
    // SAFETY: a valid fd, a NUL-terminated empty string that outlives the
    // call, and flags; the kernel returns a new fd or -1 and touches no
    // memory of ours besides reading the path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(r).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(DetachedTree(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Makes every mount of `tree` read-only: `mount_setattr(tree, "",
/// AT_EMPTY_PATH | AT_RECURSIVE, {attr_set: MOUNT_ATTR_RDONLY})`. Other
/// flags (nosuid, nodev, noexec, atime) stay as they are. ENOSYS on kernels
/// before 5.12 (the caller falls back to a remount).
pub fn set_tree_read_only(tree: &DetachedTree) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        ..MountAttr::default()
    };
    // SAFETY: a valid fd, a NUL-terminated empty path, and a pointer to a
    // `struct mount_attr` of exactly the size passed, which lives across the
    // call (the kernel only reads it).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.0.as_raw_fd(),
            EMPTY.as_ptr(),
            AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Attaches `tree` onto the inode behind `target` (an fd of the mount
/// point, `O_PATH` is enough): `move_mount(tree, "", target, "",
/// MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`. The tree's fd is
/// closed after, the mount stays.
pub fn attach_tree(tree: DetachedTree, target: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: two valid fds, two NUL-terminated empty paths that outlive the
    // call, and flags; the kernel only reads the paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.0.as_raw_fd(),
            EMPTY.as_ptr(),
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_has_the_kernels_size() {
        // MOUNT_ATTR_SIZE_VER0
        assert_eq!(std::mem::size_of::<MountAttr>(), 32);
    }
}
