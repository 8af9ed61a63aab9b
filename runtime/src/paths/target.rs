//! [`Target`]: an inode resolved under a root (or a host path opened for a
//! bind mount), held by its fd, with what can be asked of or done to that
//! very inode (its magic link for `mount(2)`, its stat, its filesystem, its
//! owner). Its checks against a root are in `root.rs`, with the root.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::stat::{FileStat, SFlag};
use nix::sys::statfs::FsType;

use super::kind::is_kind;

/// An inode resolved under a [`RootDir`](super::RootDir), held by its fd.
#[derive(Debug)]
pub struct Target {
    pub(super) fd: OwnedFd,
    pub(super) path: String,
}

impl Target {
    /// The magic link naming exactly this inode, for `mount(2)`'s source or
    /// target: the kernel follows it to the fd's file without walking any
    /// path again.
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// The path it was resolved from (inside its root), for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn stat(&self) -> nix::Result<FileStat> {
        nix::sys::stat::fstat(&self.fd)
    }

    pub fn is_dir(&self) -> bool {
        self.stat().is_ok_and(|st| is_kind(&st, SFlag::S_IFDIR))
    }

    /// The filesystem type it lives on (`fstatfs(2)`).
    pub fn fs_type(&self) -> nix::Result<FsType> {
        nix::sys::statfs::fstatfs(&self.fd).map(|s| s.filesystem_type())
    }

    /// Changes the owner of the inode itself (`fchownat(fd, "",
    /// AT_EMPTY_PATH)`, which works on `O_PATH` fds too).
    pub fn chown(&self, uid: u32, gid: u32) -> nix::Result<()> {
        nix::unistd::fchownat(
            &self.fd,
            "",
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
    }
}

impl AsFd for Target {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
