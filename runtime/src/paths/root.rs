//! [`RootDir`]: opening a directory tree as a root, and resolving paths
//! inside it to [`Target`]s (the kernel's `openat2(RESOLVE_IN_ROOT)` first,
//! libpathrs after). Also the errors a root builds for its paths, and the
//! check of a target against its root that mounts and writes make
//! ([`Target::ensure_mountable`]).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};
use nix::sys::statfs::FsType;
use pathrs::flags::ResolverFlags;

use super::error::{PathError, chain, pathrs_errno};
use super::kind::{forbidden_fs, is_kind, kind_name};
use super::target::Target;
use crate::sys::resolve::open_in_root;

/// `rel` without its leading slashes: paths are given as the container sees
/// them ("/etc/hosts") and resolved relative to the root.
pub(super) fn relative(rel: &str) -> &str {
    rel.trim_start_matches('/')
}

/// [`relative`], with "." for the root itself.
pub(super) fn dot(rel: &str) -> &str {
    match relative(rel) {
        "" => ".",
        r => r,
    }
}

/// A directory tree that rsup treats as a root: every path under it resolves
/// inside it. See the module documentation.
#[derive(Debug)]
pub struct RootDir {
    pub(super) root: pathrs::Root,
    /// The host path it was opened from, for messages only.
    pub(super) label: PathBuf,
    /// `st_dev` of the root directory: its own filesystem.
    pub(super) dev: u64,
}

impl RootDir {
    /// Opens `path` as a root: a directory whose own last component is not a
    /// symlink (libpathrs opens it `O_NOFOLLOW`; give canonical paths).
    /// Symlinks in its earlier components are followed: the path is rsup's
    /// own or given by a root-equivalent client.
    pub fn open(path: &Path) -> Result<RootDir, PathError> {
        let root = pathrs::Root::open(path).map_err(|e| PathError::Op {
            op: "open",
            root: path.to_path_buf(),
            path: String::new(),
            errno: pathrs_errno(&e),
            reason: chain(&e),
        })?;
        Self::from_root(root, path.to_path_buf())
    }

    /// Like [`Self::open`], and every later resolution under it refuses
    /// symlinks in any component (`RESOLVE_NO_SYMLINKS`): for rsup's own
    /// trees, such as the volumes directory, where no symlink belongs.
    pub fn open_no_symlinks(path: &Path) -> Result<RootDir, PathError> {
        let mut r = Self::open(path)?;
        r.root.set_resolver_flags(ResolverFlags::NO_SYMLINKS);
        Ok(r)
    }

    /// Makes a resolved directory a root of its own (e.g. a fresh tmpfs
    /// mounted on `/dev`, re-resolved after the mount).
    pub fn from_target(t: Target, label: PathBuf) -> Result<RootDir, PathError> {
        Self::from_root(pathrs::Root::from_fd(t.fd), label)
    }

    fn from_root(root: pathrs::Root, label: PathBuf) -> Result<RootDir, PathError> {
        let st = nix::sys::stat::fstat(&root).map_err(|e| PathError::Op {
            op: "stat",
            root: label.clone(),
            path: String::new(),
            errno: Some(e),
            reason: e.desc().to_string(),
        })?;
        if !is_kind(&st, SFlag::S_IFDIR) {
            return Err(PathError::Kind {
                root: label,
                path: "/".into(),
                found: kind_name(&st),
                expected: "a directory",
            });
        }
        Ok(RootDir {
            root,
            label,
            dev: st.st_dev,
        })
    }

    /// The host path the root was opened from (for messages).
    pub fn label(&self) -> &Path {
        &self.label
    }

    /// `st_dev` of the root directory.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// The root directory itself, as a [`Target`] (e.g. to mount onto).
    pub fn target(&self) -> Result<Target, PathError> {
        self.resolve("/")
    }

    pub(super) fn op_err(&self, op: &'static str, path: &str, e: Errno) -> PathError {
        PathError::Op {
            op,
            root: self.label.clone(),
            path: path.to_string(),
            errno: Some(e),
            reason: e.desc().to_string(),
        }
    }

    pub(super) fn pathrs_err(
        &self,
        op: &'static str,
        path: &str,
        e: &pathrs::error::Error,
    ) -> PathError {
        PathError::Op {
            op,
            root: self.label.clone(),
            path: path.to_string(),
            errno: pathrs_errno(e),
            reason: chain(e),
        }
    }

    pub(super) fn kind_err(&self, path: &str, st: &FileStat, expected: &'static str) -> PathError {
        PathError::Kind {
            root: self.label.clone(),
            path: path.to_string(),
            found: kind_name(st),
            expected,
        }
    }

    pub(super) fn stat_of(&self, t: &Target) -> Result<FileStat, PathError> {
        t.stat().map_err(|e| self.op_err("stat", &t.path, e))
    }

    /// The kernel's own in-root resolution ([`open_in_root`]), which is
    /// what libpathrs does first on this kernel: its answer, or its "no such
    /// path", stands; anything else (no openat2, a rename race's EAGAIN, a
    /// refused magic link) is left to libpathrs (None), with its retries,
    /// fallback resolver and messages. A miss costs one system call here
    /// where libpathrs spends about ten on its error's context (a procfs
    /// handle and a readlink), which the command and user lookups of every
    /// create pay several times.
    fn fast_resolve(&self, rel: &str, nofollow: bool) -> Option<Result<Target, PathError>> {
        match open_in_root(self.root.as_fd(), dot(rel), nofollow) {
            Ok(fd) => Some(Ok(Target {
                fd,
                path: rel.to_string(),
            })),
            Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => Some(Err(self.op_err("resolve", rel, e))),
            Err(_) => None,
        }
    }

    /// Resolves an existing path, following symlinks inside the root (an
    /// `O_PATH` fd).
    pub fn resolve(&self, rel: &str) -> Result<Target, PathError> {
        if let Some(r) = self.fast_resolve(rel, false) {
            return r;
        }
        let h = self
            .root
            .resolve(dot(rel))
            .map_err(|e| self.pathrs_err("resolve", rel, &e))?;
        Ok(Target {
            fd: h.into(),
            path: rel.to_string(),
        })
    }

    /// Resolves an existing path without following a trailing symlink
    /// (symlinks in earlier components are followed inside the root).
    pub fn resolve_nofollow(&self, rel: &str) -> Result<Target, PathError> {
        if let Some(r) = self.fast_resolve(rel, true) {
            return r;
        }
        let h = self
            .root
            .resolve_nofollow(dot(rel))
            .map_err(|e| self.pathrs_err("resolve", rel, &e))?;
        Ok(Target {
            fd: h.into(),
            path: rel.to_string(),
        })
    }

    /// The stat of an existing path, following symlinks inside the root.
    pub fn stat(&self, rel: &str) -> Result<FileStat, PathError> {
        let t = self.resolve(rel)?;
        self.stat_of(&t)
    }
}

impl AsFd for RootDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// A target's checks against its root, here because they need the
/// root's fields and errors (and `target.rs` knows nothing of roots).
impl Target {
    /// Refuses an inode on procfs or sysfs as a mount target.
    pub fn ensure_mountable(&self, root: &RootDir) -> Result<(), PathError> {
        self.ensure_mountable_on(root, self.fs_type())
    }

    /// [`Self::ensure_mountable`], told the filesystem the inode is on (or
    /// why that could not be found out), by a caller that asks the kernel
    /// its own way.
    pub fn ensure_mountable_on(
        &self,
        root: &RootDir,
        fs_type: nix::Result<FsType>,
    ) -> Result<(), PathError> {
        let t = fs_type.map_err(|e| root.op_err("statfs", &self.path, e))?;
        match forbidden_fs(t) {
            Some(fs) => Err(PathError::Filesystem {
                root: root.label.clone(),
                path: self.path.clone(),
                fs,
            }),
            None => Ok(()),
        }
    }
}
