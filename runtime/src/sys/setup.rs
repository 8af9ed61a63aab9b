//! The system calls that build a container's root, behind one narrow trait.
//!
//! The container's init (see `crate::process::shim`) sets up its namespaces
//! and mounts in named steps; every call on the way that changes the kernel's
//! state (a mount, an unshare, a device node, an owner, the root itself) goes
//! through [`SetupSys`], and so do the questions whose answers change with
//! the mounts made (the filesystem and the stat of an inode, the current
//! root). [`LinuxSetup`] makes the calls. The recording fake
//! (`fake`, compiled for tests only) writes them down in order and answers the
//! questions from the mounts it recorded, so the order and flags of a
//! container's mounts are unit-tested without root.
//!
//! Invariants:
//! * paths inside a container's root reach this trait only as [`Target`]s
//!   resolved by [`crate::paths`], or as their `/proc/self/fd/N`
//!   ([`Target::proc_path`]); nothing here walks a path inside a root;
//! * device nodes and symlinks are made through the path module
//!   ([`RootDir::mknod_char`], [`RootDir::symlink`]): never through a symlink,
//!   never outside the root they are made in;
//! * the calls affect the calling process (or thread, for `unshare` and
//!   `setns`) only: run them in rsup's single-threaded helpers, never in
//!   rsupd.

use std::os::fd::{AsFd, BorrowedFd};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::FileStat;
use nix::sys::statfs::FsType;
use nix::unistd::{Gid, Uid};

use super::mount_api::{self, DetachedTree};
use crate::paths::{PathError, RootDir, Target};

#[cfg(test)]
pub mod fake;

/// What a container's setup asks of the kernel. See the module documentation.
pub trait SetupSys {
    /// `umask(2)`: sets the file mode creation mask, returns the old one.
    fn umask(&self, mask: u32) -> u32;
    /// `unshare(2)` of the calling thread.
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// `setns(2)` into the namespace behind `ns`.
    fn setns(&self, ns: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()>;
    /// `mount(2)`. A target inside a container's root is given as the
    /// `/proc/self/fd/N` of its resolved [`Target`].
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// A detached copy of the mount tree at a resolved `source`, with every
    /// mount below it (`open_tree(2)`, `OPEN_TREE_CLONE | AT_RECURSIVE`).
    fn clone_tree(&self, source: &Target) -> nix::Result<DetachedTree>;
    /// Makes every mount of a detached tree read-only (`mount_setattr(2)`;
    /// ENOSYS before Linux 5.12).
    fn set_tree_read_only(&self, tree: &DetachedTree) -> nix::Result<()>;
    /// Attaches a detached tree onto a resolved `target` (`move_mount(2)`).
    fn attach_tree(&self, tree: DetachedTree, target: &Target) -> nix::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn umount_detach(&self, target: &str) -> nix::Result<()>;
    /// `pivot_root(2)`.
    fn pivot_root(&self, new_root: &str, put_old: &str) -> nix::Result<()>;
    /// `fchdir(2)` into a resolved directory.
    fn fchdir(&self, dir: BorrowedFd<'_>) -> nix::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &str) -> nix::Result<()>;
    /// `sethostname(2)` in the caller's UTS namespace.
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Sets the interface `name` of the caller's network namespace up.
    fn set_link_up(&self, name: &str) -> nix::Result<()>;
    /// A character device node `name` in `dir` (see [`RootDir::mknod_char`]).
    fn mknod_char(
        &self,
        dir: &RootDir,
        name: &str,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> Result<Target, PathError>;
    /// A symlink `link` in `dir` pointing to `target` (see [`RootDir::symlink`]).
    fn symlink(&self, dir: &RootDir, link: &str, target: &str) -> Result<(), PathError>;
    /// Changes the owner of a resolved inode.
    fn chown(&self, t: &Target, uid: u32, gid: u32) -> nix::Result<()>;
    /// The filesystem a resolved inode is on (`fstatfs(2)`).
    fn fs_type(&self, t: &Target) -> nix::Result<FsType>;
    /// The stat of a resolved inode (`fstat(2)`).
    fn stat(&self, t: &Target) -> nix::Result<FileStat>;
    /// The caller's root directory (`/`; after `pivot_root`, the container's).
    fn root_dir(&self) -> Result<RootDir, PathError>;
    /// `setgroups(2)`: no supplementary groups.
    fn clear_groups(&self) -> nix::Result<()>;
    /// `setresgid(gid, gid, gid)`.
    fn setresgid(&self, gid: u32) -> nix::Result<()>;
    /// `setresuid(uid, uid, uid)`.
    fn setresuid(&self, uid: u32) -> nix::Result<()>;
    /// `PR_SET_PDEATHSIG`: the signal the caller gets when its parent dies.
    fn set_parent_death_signal(&self, sig: i32) -> nix::Result<()>;
}

/// The real calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSetup;

impl SetupSys for LinuxSetup {
    fn umask(&self, mask: u32) -> u32 {
        super::set_umask(mask)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn setns(&self, ns: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(ns, flags)
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn clone_tree(&self, source: &Target) -> nix::Result<DetachedTree> {
        mount_api::clone_tree(source.as_fd())
    }

    fn set_tree_read_only(&self, tree: &DetachedTree) -> nix::Result<()> {
        mount_api::set_tree_read_only(tree)
    }

    fn attach_tree(&self, tree: DetachedTree, target: &Target) -> nix::Result<()> {
        mount_api::attach_tree(tree, target.as_fd())
    }

    fn umount_detach(&self, target: &str) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn pivot_root(&self, new_root: &str, put_old: &str) -> nix::Result<()> {
        super::pivot_root(new_root, put_old)
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> nix::Result<()> {
        nix::unistd::fchdir(dir)
    }

    fn chdir(&self, path: &str) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn set_link_up(&self, name: &str) -> nix::Result<()> {
        super::set_link_up(name)
    }

    fn mknod_char(
        &self,
        dir: &RootDir,
        name: &str,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> Result<Target, PathError> {
        dir.mknod_char(name, major, minor, mode)
    }

    fn symlink(&self, dir: &RootDir, link: &str, target: &str) -> Result<(), PathError> {
        dir.symlink(link, target)
    }

    fn chown(&self, t: &Target, uid: u32, gid: u32) -> nix::Result<()> {
        t.chown(uid, gid)
    }

    fn fs_type(&self, t: &Target) -> nix::Result<FsType> {
        t.fs_type()
    }

    fn stat(&self, t: &Target) -> nix::Result<FileStat> {
        t.stat()
    }

    fn root_dir(&self) -> Result<RootDir, PathError> {
        RootDir::open(std::path::Path::new("/"))
    }

    fn clear_groups(&self) -> nix::Result<()> {
        nix::unistd::setgroups(&[])
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
    }

    fn set_parent_death_signal(&self, sig: i32) -> nix::Result<()> {
        super::set_parent_death_signal(sig)
    }
}
