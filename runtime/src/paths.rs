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

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};
use nix::sys::statfs::{FsType, PROC_SUPER_MAGIC, SYSFS_MAGIC};
use pathrs::flags::{OpenFlags, ResolverFlags};

use crate::sys::resolve::open_in_root;

/// Symlinks followed at most in one [`RootDir::walk`] (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Errors of this module; each names the root and the path inside it.
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

/// The message of an error and of every error below it.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

fn pathrs_errno(e: &pathrs::error::Error) -> Option<Errno> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) => Some(Errno::from_raw(n)),
        pathrs::error::ErrorKind::SafetyViolation => Some(Errno::EXDEV),
        _ => None,
    }
}

/// What kind of inode a stat describes, for checks and messages.
fn kind_name(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        _ => "an unknown kind of file",
    }
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Procfs and sysfs: kernel interfaces, never a place for rsup to mount onto
/// or write a container's file (CVE-2019-19921 class).
fn forbidden_fs(t: FsType) -> Option<&'static str> {
    if t == PROC_SUPER_MAGIC {
        Some("procfs")
    } else if t == SYSFS_MAGIC {
        Some("sysfs")
    } else {
        None
    }
}

/// `rel` without its leading slashes: paths are given as the container sees
/// them ("/etc/hosts") and resolved relative to the root.
fn relative(rel: &str) -> &str {
    rel.trim_start_matches('/')
}

/// [`relative`], with "." for the root itself.
fn dot(rel: &str) -> &str {
    match relative(rel) {
        "" => ".",
        r => r,
    }
}

/// An inode resolved under a [`RootDir`], held by its fd.
#[derive(Debug)]
pub struct Target {
    fd: OwnedFd,
    path: String,
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

/// The end of a [`RootDir::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// Every component exists; the path with all symlinks resolved.
    Found(String),
    /// The component at `at` (symlinks before it resolved) is missing; `full`
    /// is where the whole path would be once created.
    Missing { at: String, full: String },
    /// A symlink loop, a component that is not a directory, or an error: the
    /// walk cannot say where the path leads.
    Unknown(String),
}

/// Every path a walk looked at, and where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Absolute paths inside the root, in the order they were looked up,
    /// symlinks resolved up to each point.
    pub visited: Vec<String>,
    pub end: WalkEnd,
}

/// A directory tree that rsup treats as a root: every path under it resolves
/// inside it. See the module documentation.
#[derive(Debug)]
pub struct RootDir {
    root: pathrs::Root,
    /// The host path it was opened from, for messages only.
    label: PathBuf,
    /// `st_dev` of the root directory: its own filesystem.
    dev: u64,
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

    fn op_err(&self, op: &'static str, path: &str, e: Errno) -> PathError {
        PathError::Op {
            op,
            root: self.label.clone(),
            path: path.to_string(),
            errno: Some(e),
            reason: e.desc().to_string(),
        }
    }

    fn pathrs_err(&self, op: &'static str, path: &str, e: &pathrs::error::Error) -> PathError {
        PathError::Op {
            op,
            root: self.label.clone(),
            path: path.to_string(),
            errno: pathrs_errno(e),
            reason: chain(e),
        }
    }

    fn kind_err(&self, path: &str, st: &FileStat, expected: &'static str) -> PathError {
        PathError::Kind {
            root: self.label.clone(),
            path: path.to_string(),
            found: kind_name(st),
            expected,
        }
    }

    fn stat_of(&self, t: &Target) -> Result<FileStat, PathError> {
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

    /// `mkdir -p` inside the root: new directories get `mode` (less the
    /// umask); existing components are followed inside the root. A dangling
    /// symlink or a non-directory in the way is an error.
    pub fn mkdir_all(&self, rel: &str, mode: u32) -> Result<Target, PathError> {
        let r = relative(rel);
        let h = if r.is_empty() {
            self.root.resolve(".")
        } else {
            self.root
                .mkdir_all(r, &std::fs::Permissions::from_mode(mode))
        }
        .map_err(|e| match self.dangling_in(rel) {
            Some(at) => PathError::Kind {
                root: self.label.clone(),
                path: at,
                found: "a dangling symlink",
                expected: "a directory",
            },
            None => self.pathrs_err("mkdir", rel, &e),
        })?;
        Ok(Target {
            fd: h.into(),
            path: rel.to_string(),
        })
    }

    /// The first component of `rel` that is a symlink leading nowhere
    /// inside the root (to explain a failed [`Self::mkdir_all`]).
    fn dangling_in(&self, rel: &str) -> Option<String> {
        let mut prefix = String::new();
        for c in relative(rel).split('/').filter(|c| !c.is_empty()) {
            prefix.push('/');
            prefix.push_str(c);
            let link = self
                .resolve_nofollow(&prefix)
                .and_then(|t| self.stat_of(&t))
                .is_ok_and(|st| is_kind(&st, SFlag::S_IFLNK));
            if link && self.resolve(&prefix).is_err_and(|e| e.is_not_found()) {
                return Some(prefix);
            }
        }
        None
    }

    /// A directory that must be exactly `name` in the root (no symlink, not
    /// even inside the root): made with `mode` if missing. For the mount
    /// points of `/proc`, `/dev` and `/sys`, which runc also requires to be
    /// ordinary directories.
    pub fn plain_dir(&self, name: &str, mode: u32) -> Result<Target, PathError> {
        let t = match self.resolve_nofollow(name) {
            Err(e) if e.is_not_found() => {
                match self.root.create(
                    relative(name),
                    &pathrs::InodeType::Directory(std::fs::Permissions::from_mode(mode)),
                ) {
                    Ok(()) => {}
                    Err(e) if pathrs_errno(&e) == Some(Errno::EEXIST) => {}
                    Err(e) => return Err(self.pathrs_err("mkdir", name, &e)),
                }
                self.resolve_nofollow(name)?
            }
            other => other?,
        };
        let st = self.stat_of(&t)?;
        if !is_kind(&st, SFlag::S_IFDIR) {
            return Err(self.kind_err(name, &st, "a directory"));
        }
        Ok(t)
    }

    /// An existing file (any non-directory, following symlinks inside the
    /// root) or a new empty regular file with `mode`, its parent directories
    /// made as by [`Self::mkdir_all`] with 0755. For file mount targets.
    pub fn create_file(&self, rel: &str, mode: u32) -> Result<Target, PathError> {
        // Creating first (O_EXCL | O_NOFOLLOW: never through a symlink) is
        // the cheap path for the common missing file; an existing one is
        // then resolved.
        let r = relative(rel);
        let created = match self.create_excl(r, OpenFlags::O_RDONLY, mode) {
            Err(e) if pathrs_errno(&e) == Some(Errno::ENOENT) => {
                if let Some((parent, _)) = r.rsplit_once('/') {
                    self.mkdir_all(parent, 0o755)?;
                }
                self.create_excl(r, OpenFlags::O_RDONLY, mode)
            }
            other => other,
        };
        let e = match created {
            Ok(f) => {
                return Ok(Target {
                    fd: f.into(),
                    path: rel.to_string(),
                });
            }
            Err(e) => e,
        };
        if pathrs_errno(&e) != Some(Errno::EEXIST) {
            return Err(self.pathrs_err("create", rel, &e));
        }
        match self.resolve(rel) {
            Ok(t) => {
                let st = self.stat_of(&t)?;
                if is_kind(&st, SFlag::S_IFDIR) {
                    return Err(self.kind_err(rel, &st, "a file"));
                }
                Ok(t)
            }
            // It exists but leads nowhere: a dangling symlink, which we do
            // not create through.
            Err(e) if e.is_not_found() => Err(PathError::Kind {
                root: self.label.clone(),
                path: rel.to_string(),
                found: "a dangling symlink",
                expected: "a file",
            }),
            Err(e) => Err(e),
        }
    }

    /// `O_CREAT | O_EXCL | O_NOFOLLOW` of `r` in its parent (resolved in
    /// the root) with `mode`.
    fn create_excl(
        &self,
        r: &str,
        access: OpenFlags,
        mode: u32,
    ) -> Result<File, pathrs::error::Error> {
        self.root.create_file(
            r,
            access | OpenFlags::O_EXCL | OpenFlags::O_NOFOLLOW | OpenFlags::O_CLOEXEC,
            &std::fs::Permissions::from_mode(mode),
        )
    }

    /// Makes the directory `rel` (which must not exist) with `mode` and
    /// returns it, checked to be a directory: for a fresh tree of rsup's own,
    /// such as the /dev tmpfs, where probing first would only cost.
    pub fn mkdir(&self, rel: &str, mode: u32) -> Result<Target, PathError> {
        self.root
            .create(
                relative(rel),
                &pathrs::InodeType::Directory(std::fs::Permissions::from_mode(mode)),
            )
            .map_err(|e| self.pathrs_err("mkdir", rel, &e))?;
        let t = self.resolve_nofollow(rel)?;
        let st = self.stat_of(&t)?;
        if !is_kind(&st, SFlag::S_IFDIR) {
            return Err(self.kind_err(rel, &st, "a directory"));
        }
        Ok(t)
    }

    /// Creates a character device node `rel` (`mknod(2)`) with exactly
    /// `mode` (the umask is cleared by chmod afterwards) and returns it. It
    /// must not exist.
    pub fn mknod_char(
        &self,
        rel: &str,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> Result<Target, PathError> {
        let dev = nix::sys::stat::makedev(major, minor);
        self.root
            .create(
                relative(rel),
                &pathrs::InodeType::CharacterDevice(std::fs::Permissions::from_mode(mode), dev),
            )
            .map_err(|e| self.pathrs_err("mknod", rel, &e))?;
        let t = self.resolve_nofollow(rel)?;
        let st = self.stat_of(&t)?;
        if !is_kind(&st, SFlag::S_IFCHR) || st.st_rdev != dev {
            return Err(self.kind_err(rel, &st, "the character device just made"));
        }
        if st.st_mode & 0o7777 != mode {
            // chmod through the fd's magic link: the inode itself.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                t.proc_path().as_str(),
                nix::sys::stat::Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.op_err("chmod", rel, e))?;
        }
        Ok(t)
    }

    /// Creates a symlink `rel` pointing to `target` (which is not touched).
    pub fn symlink(&self, rel: &str, target: &str) -> Result<(), PathError> {
        self.root
            .create(
                relative(rel),
                &pathrs::InodeType::Symlink(PathBuf::from(target)),
            )
            .map_err(|e| self.pathrs_err("symlink", rel, &e))
    }

    /// Reads a regular file (following symlinks inside the root) of at most
    /// `max` bytes. Anything else (a FIFO, a device) is refused unopened.
    pub fn read_file(&self, rel: &str, max: usize) -> Result<Vec<u8>, PathError> {
        let t = self.resolve(rel)?;
        let st = self.stat_of(&t)?;
        if !is_kind(&st, SFlag::S_IFREG) {
            return Err(self.kind_err(rel, &st, "a regular file"));
        }
        let f = self.reopen(&t, OpenFlags::O_RDONLY)?;
        let mut buf = Vec::new();
        f.take(max as u64 + 1).read_to_end(&mut buf).map_err(|e| {
            self.op_err("read", rel, Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
        if buf.len() > max {
            return Err(PathError::TooLarge {
                root: self.label.clone(),
                path: rel.to_string(),
                max,
            });
        }
        Ok(buf)
    }

    /// The stat of an existing path, following symlinks inside the root.
    pub fn stat(&self, rel: &str) -> Result<FileStat, PathError> {
        let t = self.resolve(rel)?;
        self.stat_of(&t)
    }

    fn reopen(&self, t: &Target, flags: OpenFlags) -> Result<File, PathError> {
        pathrs::Handle::from_fd(t.fd.try_clone().map_err(|e| {
            self.op_err(
                "dup",
                &t.path,
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })?)
        .reopen(flags | OpenFlags::O_CLOEXEC)
        .map_err(|e| self.pathrs_err("open", &t.path, &e))
    }

    /// Writes `data` to the regular file `rel` (created with `mode` if
    /// missing; an existing one is truncated and set to `mode`), owned by
    /// `owner` if given. Refused unless it is a regular file on the root's
    /// own filesystem, not on procfs or sysfs; a trailing symlink is
    /// refused, not followed.
    pub fn write_file(
        &self,
        rel: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), PathError> {
        // Created first (O_EXCL | O_NOFOLLOW); an existing file is then
        // resolved without following a trailing symlink, checked, and
        // reopened by its fd for writing.
        let (t, mut f) = match self.create_excl(relative(rel), OpenFlags::O_WRONLY, mode) {
            Ok(f) => {
                let fd = OwnedFd::from(f.try_clone().map_err(|e| {
                    self.op_err("dup", rel, Errno::from_raw(e.raw_os_error().unwrap_or(0)))
                })?);
                let t = Target {
                    fd,
                    path: rel.to_string(),
                };
                self.check_writable(&t)?;
                (t, f)
            }
            Err(e) if pathrs_errno(&e) == Some(Errno::EEXIST) => {
                let t = self.resolve_nofollow(rel)?;
                self.check_writable(&t)?;
                let f = self.reopen(&t, OpenFlags::O_WRONLY | OpenFlags::O_TRUNC)?;
                (t, f)
            }
            Err(e) => return Err(self.pathrs_err("create", rel, &e)),
        };
        let io = |op: &'static str| {
            move |e: std::io::Error| {
                self.op_err(op, rel, Errno::from_raw(e.raw_os_error().unwrap_or(0)))
            }
        };
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod"))?;
        if let Some((uid, gid)) = owner {
            t.chown(uid, gid)
                .map_err(|e| self.op_err("chown", rel, e))?;
        }
        f.write_all(data).map_err(io("write"))
    }

    fn check_writable(&self, t: &Target) -> Result<(), PathError> {
        let st = self.stat_of(t)?;
        if !is_kind(&st, SFlag::S_IFREG) {
            return Err(self.kind_err(&t.path, &st, "a regular file"));
        }
        t.ensure_mountable(self)?;
        if st.st_dev != self.dev {
            return Err(PathError::Filesystem {
                root: self.label.clone(),
                path: t.path.clone(),
                fs: "another filesystem than its root",
            });
        }
        Ok(())
    }

    /// Follows `path` component by component inside the root, as the kernel
    /// would (absolute symlinks restart at the root, `..` stops at it), and
    /// records every path it looks at. Each step is a [`Self::resolve_nofollow`]
    /// of an already resolved prefix, so the walk cannot leave the root
    /// either; it exists to tell which paths a lookup depends on (for
    /// example, whether a mount could change its result).
    pub fn walk(&self, path: &str) -> Walk {
        let mut visited = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        let mut pending: Vec<String> = path
            .split('/')
            .rev()
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        let mut hops = 0;
        let join = |parts: &[String]| format!("/{}", parts.join("/"));
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => {}
            }
            parts.push(c);
            let here = join(&parts);
            visited.push(here.clone());
            let st = match self.resolve_nofollow(&here).and_then(|t| self.stat_of(&t)) {
                Ok(st) => st,
                Err(e) if e.is_not_found() => {
                    let mut full = parts.clone();
                    full.extend(pending.iter().rev().filter(|c| *c != ".").cloned());
                    let full = join(&full);
                    if full.contains("/../") || full.ends_with("/..") {
                        return Walk {
                            visited,
                            end: WalkEnd::Unknown(format!("{here}: missing, then '..'")),
                        };
                    }
                    visited.push(full.clone());
                    return Walk {
                        visited,
                        end: WalkEnd::Missing { at: here, full },
                    };
                }
                Err(e) => {
                    return Walk {
                        visited,
                        end: WalkEnd::Unknown(e.to_string()),
                    };
                }
            };
            if is_kind(&st, SFlag::S_IFLNK) {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Walk {
                        visited,
                        end: WalkEnd::Unknown(format!("{here}: too many symlinks")),
                    };
                }
                let target = match self.root.readlink(relative(&here)) {
                    Ok(t) => t,
                    Err(e) => {
                        return Walk {
                            visited,
                            end: WalkEnd::Unknown(chain(&e)),
                        };
                    }
                };
                parts.pop();
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    parts.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .rev()
                        .filter(|c| !c.is_empty())
                        .map(String::from),
                );
            } else if !pending.is_empty() && !is_kind(&st, SFlag::S_IFDIR) {
                return Walk {
                    visited,
                    end: WalkEnd::Unknown(format!("{here} is {}", kind_name(&st))),
                };
            }
        }
        Walk {
            visited,
            end: WalkEnd::Found(join(&parts)),
        }
    }
}

impl AsFd for RootDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

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

/// True if `dir` is `path` or one of its ancestors (both absolute,
/// normalised: no `.`, `..` or `//`).
pub fn is_ancestor_or_self(dir: &str, path: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty()
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// A root and, beside it, an "outside" canary dir that must stay empty.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
        Fixture {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn assert_empty(dir: &Path) {
        let n = std::fs::read_dir(dir).expect("read_dir").count();
        assert_eq!(n, 0, "{} must stay empty", dir.display());
    }

    /// Where an fd points on the host, by its magic link.
    fn host_path(t: &Target) -> PathBuf {
        std::fs::read_link(t.proc_path()).expect("readlink")
    }

    #[test]
    fn absolute_symlinks_and_dotdot_stay_in_the_root() {
        let f = fixture();
        let r = RootDir::open(&f.root).expect("open");
        symlink("/../../../../etc", f.root.join("escape")).expect("ln");
        symlink(&f.outside, f.root.join("abs")).expect("ln");
        std::fs::write(f.outside.join("secret"), "x").expect("write");
        let inside = std::fs::metadata(f.root.join("etc/passwd")).expect("stat");
        for p in [
            "/escape/passwd",
            "../../etc/passwd",
            "/etc/../../etc/passwd",
        ] {
            let t = r.resolve(p).expect(p);
            let st = t.stat().expect("stat");
            assert_eq!((st.st_dev, st.st_ino), (inside.dev(), inside.ino()), "{p}");
        }
        // `abs` names the outside dir by its host path: inside the root that
        // path does not exist.
        assert!(
            r.resolve("/abs/secret")
                .expect_err("dangling")
                .is_not_found()
        );
        std::fs::remove_file(f.outside.join("secret")).expect("rm");
        let e = r.mkdir_all("/abs/new", 0o755).expect_err("dangling");
        assert!(
            e.to_string().contains("\"/abs\"") && e.to_string().contains("dangling symlink"),
            "{e}"
        );
        let e = r.create_file("/abs", 0o644).expect_err("dangling");
        assert!(e.to_string().contains("dangling symlink"), "{e}");
        assert!(r.create_file("/abs/file", 0o644).is_err());
        assert!(r.write_file("/abs", b"x", 0o644, None).is_err());
        assert_empty(&f.outside);
        // Once the path exists inside the root, the symlink leads there.
        let mirrored = f.root.join(f.outside.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&mirrored).expect("mkdir");
        let t = r
            .mkdir_all("/abs/new", 0o755)
            .expect("mkdir through symlink");
        assert_eq!(host_path(&t), mirrored.join("new"));
        let t = r.create_file("/abs/file", 0o644).expect("create");
        assert_eq!(host_path(&t), mirrored.join("file"));
        assert_empty(&f.outside);
    }

    #[test]
    fn files_are_written_only_where_they_belong() {
        let f = fixture();
        let r = RootDir::open(&f.root).expect("open");
        r.write_file("/etc/hosts", b"one\n", 0o644, None)
            .expect("create");
        r.write_file("/etc/hosts", b"2\n", 0o600, None)
            .expect("overwrite");
        let md = std::fs::metadata(f.root.join("etc/hosts")).expect("stat");
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(
            std::fs::read(f.root.join("etc/hosts")).expect("read"),
            b"2\n"
        );
        // A trailing symlink is refused, even one that stays inside.
        symlink("passwd", f.root.join("etc/link")).expect("ln");
        assert!(r.write_file("/etc/link", b"x", 0o644, None).is_err());
        // A FIFO is refused without opening it (which would block).
        nix::unistd::mkfifo(&f.root.join("etc/fifo"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        assert!(r.write_file("/etc/fifo", b"x", 0o644, None).is_err());
        assert!(r.read_file("/etc/fifo", 100).is_err());
        // A directory is not a file.
        assert!(r.write_file("/etc", b"x", 0o644, None).is_err());
        // procfs is refused (here /proc/self/comm, which is harmless).
        let me = PathBuf::from(format!("/proc/{}", std::process::id()));
        let p = RootDir::open(&me).expect("open /proc/PID");
        let e = p
            .write_file("comm", b"pwned", 0o644, None)
            .expect_err("procfs");
        assert!(e.to_string().contains("procfs"), "{e}");
        // Reads have a cap.
        assert_eq!(
            r.read_file("/etc/link", 100).expect("read"),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert!(matches!(
            r.read_file("/etc/passwd", 4),
            Err(PathError::TooLarge { .. })
        ));
    }

    #[test]
    fn plain_dirs_refuse_symlinks() {
        let f = fixture();
        let r = RootDir::open(&f.root).expect("open");
        symlink("/etc", f.root.join("proc")).expect("ln");
        assert!(r.plain_dir("proc", 0o555).is_err());
        let t = r.plain_dir("sys", 0o555).expect("made");
        assert!(t.is_dir());
        assert!(r.plain_dir("sys", 0o555).expect("exists").is_dir());
    }

    #[test]
    fn walks_record_what_they_look_at() {
        let f = fixture();
        let r = RootDir::open(&f.root).expect("open");
        std::fs::create_dir_all(f.root.join("usr/bin")).expect("mkdir");
        std::fs::write(f.root.join("usr/bin/sh"), "").expect("write");
        symlink("usr/bin", f.root.join("bin")).expect("ln");
        symlink("/nowhere/x", f.root.join("dangling")).expect("ln");
        let w = r.walk("/bin/sh");
        assert_eq!(w.end, WalkEnd::Found("/usr/bin/sh".into()));
        assert_eq!(w.visited, ["/bin", "/usr", "/usr/bin", "/usr/bin/sh"]);
        let w = r.walk("/bin/nosuch");
        assert_eq!(
            w.end,
            WalkEnd::Missing {
                at: "/usr/bin/nosuch".into(),
                full: "/usr/bin/nosuch".into()
            }
        );
        let w = r.walk("/dangling/bin/y");
        assert_eq!(
            w.end,
            WalkEnd::Missing {
                at: "/nowhere".into(),
                full: "/nowhere/x/bin/y".into()
            }
        );
        assert!(w.visited.contains(&"/nowhere/x/bin/y".to_string()));
        symlink("loop", f.root.join("loop")).expect("ln");
        assert!(matches!(r.walk("/loop/x").end, WalkEnd::Unknown(_)));
        assert!(matches!(r.walk("/etc/passwd/x").end, WalkEnd::Unknown(_)));
        assert!(is_ancestor_or_self("/usr", "/usr/bin/sh"));
        assert!(is_ancestor_or_self("/usr/bin/sh", "/usr/bin/sh"));
        assert!(!is_ancestor_or_self("/us", "/usr/bin"));
        assert!(!is_ancestor_or_self("/usr/bin", "/usr"));
    }

    /// Keeps swapping `root/a` between a real directory and a symlink to the
    /// outside dir until stopped.
    fn swapper(
        root: PathBuf,
        outside: PathBuf,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        symlink(&outside, root.join("b")).expect("ln");
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &root.join("a"),
                    nix::fcntl::AT_FDCWD,
                    &root.join("b"),
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .expect("exchange");
                swaps += 1;
            }
            swaps
        })
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_never_leads_outside() {
        let f = fixture();
        let r = RootDir::open(&f.root).expect("open");
        let stop = Arc::new(AtomicBool::new(false));
        let t = swapper(f.root.clone(), f.outside.clone(), stop.clone());
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut ok = 0;
        let mut i = 0u64;
        while Instant::now() < deadline || i < 500 {
            i += 1;
            let check = |t: &Target| {
                let p = host_path(t);
                assert!(
                    p.starts_with(&f.root),
                    "{} is outside the root",
                    p.display()
                );
            };
            if let Ok(t) = r.mkdir_all(&format!("/a/d{}/e", i % 7), 0o755) {
                check(&t);
                ok += 1;
            }
            if let Ok(t) = r.create_file(&format!("/a/f{}", i % 5), 0o644) {
                check(&t);
                ok += 1;
            }
            if let Ok(t) = r.resolve("/a") {
                check(&t);
            }
            if r.write_file(&format!("/a/w{}", i % 3), b"x", 0o644, None)
                .is_ok()
            {
                ok += 1;
            }
            let _ = r.read_file("/a/w0", 10);
            let _ = r.walk("/a/d1/e");
            if let Ok(t) = r.mknod_char(&format!("/a/n{i}"), 1, 3, 0o666) {
                check(&t);
            }
            if i.is_multiple_of(50) {
                assert_empty(&f.outside);
            }
            if i > 100_000 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = t.join().expect("swapper");
        assert_empty(&f.outside);
        assert!(swaps > 0 && ok > 0, "swaps {swaps}, successes {ok}");
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_never_leads_outside() {
        // The other classic: remove the directory and put a symlink in its
        // place (no renameat2 needed), in a loop.
        let f = fixture();
        let r = RootDir::open(&f.root).expect("open");
        let stop = Arc::new(AtomicBool::new(false));
        let (root, outside, s) = (f.root.clone(), f.outside.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            let a = root.join("a");
            while !s.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(&a).or_else(|_| std::fs::remove_file(&a));
                let _ = symlink(&outside, &a);
                let _ = std::fs::remove_file(&a);
                let _ = std::fs::create_dir(&a);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut i = 0u64;
        while Instant::now() < deadline {
            i += 1;
            let _ = r.mkdir_all("/a/x/y", 0o755);
            let _ = r.create_file("/a/file", 0o644);
            let _ = r.write_file("/a/w", b"x", 0o644, None);
            if i.is_multiple_of(50) {
                assert_empty(&f.outside);
            }
        }
        stop.store(true, Ordering::Relaxed);
        t.join().expect("thread");
        assert_empty(&f.outside);
    }
}
