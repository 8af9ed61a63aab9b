//! A recording [`SetupSys`] for unit tests (compiled for tests only).
//!
//! It works on a real temporary directory: the path module resolves, makes
//! and checks paths there as it would in a container's root, and directories,
//! files and symlinks are really made. What needs root or would change the
//! test process (mounts, namespaces, owners, device nodes, the root and the
//! working directory, the umask, ids) is only recorded, in order, as a
//! [`Call`]. Targets given as `/proc/self/fd/N` are recorded as given and
//! with the path their fd led to at the time of the call.
//!
//! Its answers follow what it recorded: an inode under a recorded mount of
//! proc, sysfs or tmpfs is on that filesystem for [`SetupSys::fs_type`], and
//! a bind mount point stats as its source for [`SetupSys::stat`]; anything
//! else gets the real answer. After `pivot_root`, [`SetupSys::root_dir`] is
//! the directory it was pivoted into.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::FileStat;
use nix::sys::statfs::{self, FsType};

use super::SetupSys;
use crate::paths::{PathError, RootDir, Target};
use crate::sys::mount_api::DetachedTree;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Umask(u32),
    Unshare(CloneFlags),
    Setns {
        ns: String,
        flags: CloneFlags,
    },
    Mount(MountCall),
    /// `open_tree` of the path shown.
    CloneTree(String),
    /// `mount_setattr(MOUNT_ATTR_RDONLY)` of the tree of the path shown.
    TreeReadOnly(String),
    /// `move_mount` of the tree of `source` onto `target` (paths shown).
    AttachTree {
        source: String,
        target: String,
    },
    UmountDetach(String),
    PivotRoot {
        new_root: String,
        put_old: String,
    },
    Fchdir(String),
    Chdir(String),
    Sethostname(String),
    LinkUp(String),
    Mknod {
        path: String,
        major: u64,
        minor: u64,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    ClearGroups,
    Setresgid(u32),
    Setresuid(u32),
    ParentDeathSignal(i32),
}

/// A recorded `mount(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    /// The source as given.
    pub source: Option<String>,
    /// Where a `/proc/self/fd/N` source led (see [`RecordingSys::show`]),
    /// or the source as given.
    pub source_at: Option<String>,
    /// The target as given.
    pub target: String,
    /// Where the target led: the fd's path for `/proc/self/fd/N`, else the
    /// path as given (inside the pivoted root after `pivot_root`).
    pub target_at: String,
    pub fstype: Option<String>,
    pub flags: MsFlags,
    pub data: Option<String>,
}

/// A mount as the fake keeps it, to answer `fs_type` and `stat`.
struct Mounted {
    at: PathBuf,
    fs: Option<FsType>,
    /// A bind mount's source: its stat and filesystem.
    source: Option<(FileStat, FsType)>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    mounts: Vec<Mounted>,
    cwd: Option<PathBuf>,
    root: Option<PathBuf>,
}

/// Runs on every call before it is recorded; `Some(errno)` makes it fail.
type Hook = Box<dyn Fn(&Call) -> Option<Errno>>;

/// See the module documentation.
pub struct RecordingSys {
    base: PathBuf,
    state: RefCell<State>,
    hooks: Vec<Hook>,
    mknod_eperm: bool,
}

impl RecordingSys {
    /// A fake whose paths under `base` (the test's temporary directory) are
    /// shown relative to it, as `<tmp>/...`.
    pub fn new(base: &Path) -> RecordingSys {
        RecordingSys {
            base: base.to_path_buf(),
            state: RefCell::new(State::default()),
            hooks: Vec::new(),
            mknod_eperm: false,
        }
    }

    /// Runs `hook` on every call, before it is recorded (to change the
    /// tree under the setup's feet, as a hostile container would); a call
    /// for which it returns `Some(errno)` is recorded and fails with it.
    pub fn with_hook(mut self, hook: impl Fn(&Call) -> Option<Errno> + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Makes every call for which `when` is true fail with `errno` (after
    /// recording it).
    pub fn fail_when(self, when: impl Fn(&Call) -> bool + 'static, errno: Errno) -> Self {
        self.with_hook(move |c| when(c).then_some(errno))
    }

    /// Makes mknod fail with EPERM, as it does without `CAP_MKNOD`.
    pub fn without_mknod(mut self) -> Self {
        self.mknod_eperm = true;
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.borrow().calls.clone()
    }

    /// The mounts so far, in order.
    pub fn mounts(&self) -> Vec<MountCall> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// A host path as the fake records it: `<tmp>/rel` under the base, else
    /// as it is.
    pub fn show(&self, p: &Path) -> String {
        match p.strip_prefix(&self.base) {
            Ok(rel) if rel.as_os_str().is_empty() => "<tmp>".to_string(),
            Ok(rel) => format!("<tmp>/{}", rel.display()),
            Err(_) => p.display().to_string(),
        }
    }

    fn record(&self, call: Call) -> nix::Result<()> {
        let errno = self.hooks.iter().find_map(|hook| hook(&call));
        self.state.borrow_mut().calls.push(call);
        match errno {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Where a path given to a call leads on the host.
    fn host_path(&self, given: &str) -> PathBuf {
        if given.starts_with("/proc/self/fd/") {
            return std::fs::read_link(given).unwrap_or_else(|_| PathBuf::from(given));
        }
        let st = self.state.borrow();
        let p = Path::new(given);
        let joined = match (&st.root, &st.cwd) {
            (Some(root), _) if p.is_absolute() => root.join(p.strip_prefix("/").unwrap_or(p)),
            (_, Some(cwd)) if p.is_relative() => cwd.join(p),
            _ => p.to_path_buf(),
        };
        // Without "." components or a trailing slash.
        joined.components().collect()
    }

    fn fd_path(&self, fd: BorrowedFd<'_>) -> PathBuf {
        self.host_path(&format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    /// The innermost recorded mount at or above `p` (the latest of those
    /// at the same place).
    fn mounted_at<R>(&self, p: &Path, f: impl Fn(&Mounted) -> Option<R>) -> Option<R> {
        let st = self.state.borrow();
        st.mounts
            .iter()
            .filter(|m| p.starts_with(&m.at))
            .max_by_key(|m| m.at.components().count())
            .and_then(f)
    }
}

/// The magic number of a filesystem type by its name, for those the fake
/// tells apart.
fn fs_magic(fstype: &str) -> Option<FsType> {
    match fstype {
        "proc" => Some(statfs::PROC_SUPER_MAGIC),
        "sysfs" => Some(statfs::SYSFS_MAGIC),
        "tmpfs" => Some(statfs::TMPFS_MAGIC),
        "devpts" => Some(statfs::DEVPTS_SUPER_MAGIC),
        "overlay" => Some(statfs::OVERLAYFS_SUPER_MAGIC),
        _ => None,
    }
}

impl SetupSys for RecordingSys {
    fn umask(&self, mask: u32) -> u32 {
        let _ = self.record(Call::Umask(mask));
        0o022
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Unshare(flags))
    }

    fn setns(&self, ns: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()> {
        let ns = self.show(&self.fd_path(ns));
        self.record(Call::Setns { ns, flags })
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        let target_host = self.host_path(target);
        // A source that is a path (not "proc", "tmpfs", ...) is shown where
        // it led.
        let source_host = source
            .filter(|s| s.starts_with('/'))
            .map(|s| self.host_path(s));
        self.record(Call::Mount(MountCall {
            source: source.map(String::from),
            source_at: match &source_host {
                Some(p) => Some(self.show(p)),
                None => source.map(String::from),
            },
            target: target.to_string(),
            target_at: self.show(&target_host),
            fstype: fstype.map(String::from),
            flags,
            data: data.map(String::from),
        }))?;
        let propagation =
            MsFlags::MS_PRIVATE | MsFlags::MS_SHARED | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE;
        if flags.intersects(MsFlags::MS_REMOUNT | propagation) {
            return Ok(());
        }
        let mounted = if flags.contains(MsFlags::MS_BIND) {
            let src = source_host.unwrap_or_default();
            let stat = nix::sys::stat::stat(&src).ok();
            let fs = statfs::statfs(&src).ok().map(|s| s.filesystem_type());
            Mounted {
                at: target_host,
                fs: None,
                source: stat.zip(fs),
            }
        } else {
            Mounted {
                at: target_host,
                fs: fstype.and_then(fs_magic),
                source: None,
            }
        };
        self.state.borrow_mut().mounts.push(mounted);
        Ok(())
    }

    /// The tree stands in as a duplicate of the source's fd, so it shows,
    /// stats and statfs as the source.
    fn clone_tree(&self, source: &Target) -> nix::Result<DetachedTree> {
        self.record(Call::CloneTree(self.show(&self.fd_path(source.as_fd()))))?;
        let fd = source
            .as_fd()
            .try_clone_to_owned()
            .map_err(|_| Errno::EBADF)?;
        Ok(DetachedTree::from_fd(fd))
    }

    fn set_tree_read_only(&self, tree: &DetachedTree) -> nix::Result<()> {
        self.record(Call::TreeReadOnly(self.show(&self.fd_path(tree.as_fd()))))
    }

    fn attach_tree(&self, tree: DetachedTree, target: &Target) -> nix::Result<()> {
        let at = self.fd_path(target.as_fd());
        self.record(Call::AttachTree {
            source: self.show(&self.fd_path(tree.as_fd())),
            target: self.show(&at),
        })?;
        let stat = nix::sys::stat::fstat(&tree).ok();
        let fs = statfs::fstatfs(&tree).ok().map(|s| s.filesystem_type());
        self.state.borrow_mut().mounts.push(Mounted {
            at,
            fs: None,
            source: stat.zip(fs),
        });
        Ok(())
    }

    fn umount_detach(&self, target: &str) -> nix::Result<()> {
        self.record(Call::UmountDetach(target.to_string()))
    }

    fn pivot_root(&self, new_root: &str, put_old: &str) -> nix::Result<()> {
        self.record(Call::PivotRoot {
            new_root: new_root.to_string(),
            put_old: put_old.to_string(),
        })?;
        let root = self.host_path(new_root);
        self.state.borrow_mut().root = Some(root);
        Ok(())
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> nix::Result<()> {
        let p = self.fd_path(dir);
        self.record(Call::Fchdir(self.show(&p)))?;
        self.state.borrow_mut().cwd = Some(p);
        Ok(())
    }

    fn chdir(&self, path: &str) -> nix::Result<()> {
        self.record(Call::Chdir(path.to_string()))?;
        let p = self.host_path(path);
        self.state.borrow_mut().cwd = Some(p);
        Ok(())
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Sethostname(name.to_string()))
    }

    fn set_link_up(&self, name: &str) -> nix::Result<()> {
        self.record(Call::LinkUp(name.to_string()))
    }

    fn mknod_char(
        &self,
        dir: &RootDir,
        name: &str,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> Result<Target, PathError> {
        let path = self.show(&dir.label().join(name));
        let fail = |errno: Errno| PathError::Op {
            op: "mknod",
            root: dir.label().to_path_buf(),
            path: name.to_string(),
            errno: Some(errno),
            reason: errno.desc().to_string(),
        };
        self.record(Call::Mknod {
            path,
            major,
            minor,
            mode,
        })
        .map_err(fail)?;
        if self.mknod_eperm {
            return Err(fail(Errno::EPERM));
        }
        // A regular file stands in for the node.
        dir.create_file(name, mode)
    }

    fn symlink(&self, dir: &RootDir, link: &str, target: &str) -> Result<(), PathError> {
        let path = self.show(&dir.label().join(link));
        let _ = self.record(Call::Symlink {
            path,
            target: target.to_string(),
        });
        dir.symlink(link, target)
    }

    fn chown(&self, t: &Target, uid: u32, gid: u32) -> nix::Result<()> {
        let path = self.show(&self.host_path(&t.proc_path()));
        self.record(Call::Chown { path, uid, gid })
    }

    fn fs_type(&self, t: &Target) -> nix::Result<FsType> {
        let p = self.host_path(&t.proc_path());
        let recorded = self.mounted_at(&p, |m| match (&m.source, m.fs) {
            (Some((_, fs)), _) => Some(*fs),
            (None, fs) => fs,
        });
        match recorded {
            Some(fs) => Ok(fs),
            None => t.fs_type(),
        }
    }

    fn stat(&self, t: &Target) -> nix::Result<FileStat> {
        let p = self.host_path(&t.proc_path());
        let st = self.state.borrow();
        let bound = st
            .mounts
            .iter()
            .rev()
            .find(|m| m.at == p)
            .and_then(|m| m.source.map(|(stat, _)| stat));
        match bound {
            Some(stat) => Ok(stat),
            None => t.stat(),
        }
    }

    fn root_dir(&self) -> Result<RootDir, PathError> {
        let root = self.state.borrow().root.clone();
        RootDir::open(root.as_deref().unwrap_or(&self.base))
    }

    fn clear_groups(&self) -> nix::Result<()> {
        self.record(Call::ClearGroups)
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        self.record(Call::Setresgid(gid))
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        self.record(Call::Setresuid(uid))
    }

    fn set_parent_death_signal(&self, sig: i32) -> nix::Result<()> {
        self.record(Call::ParentDeathSignal(sig))
    }
}
