//! The container's root, built in named steps by its init.
//!
//! The init (PID 1 of the container, still host root in the host's user
//! namespace) runs [`Setup::build`] before it tells the shim `ready`:
//!
//! ```text
//! namespaces   new mount, UTS and IPC namespaces; a new network namespace or
//!              the container's own (rsupd made and wired it); / made private
//! rootfs       the overlay of the lower layers on containers/<id>/rootfs
//! /proc        procfs on the root's proc
//! /dev         a tmpfs on the root's dev: device nodes, pts, shm, links
//! /sys         sysfs, read-only
//! volumes      named volumes, bind mounts and tmpfs mounts, parents first
//! /etc files   hostname, hosts and resolv.conf, bind-mounted from the
//!              container's directory
//! hostname     the hostname; lo up
//! pivot_root   into the root; the old root detached
//! masked paths Docker's masked and read-only paths (not when privileged)
//! working dir  made if missing
//! read-only    the root remounted read-only (--read-only)
//! ```
//!
//! With `--userns remap`, [`enter_userns`] follows once every mount is made,
//! and [`enter_cgroupns`] comes at the start of the command (rsupd has put the
//! init into its cgroups by then). The shim's own part, the lower layers'
//! shifted copy ([`lower_dirs`]), runs before the init is forked.
//!
//! Every call that changes the kernel's state goes through
//! [`crate::sys::setup::SetupSys`]; the unit tests run the steps on its
//! recording fake.
//!
//! Invariants:
//! * every path inside the root (and in a volume's directory) is resolved by
//!   [`crate::paths`], and a mount onto it is given its fd as
//!   `/proc/self/fd/N` ([`Target::proc_path`]): nothing in the image or in a
//!   volume steers a mount or a write out of the root; the only mounts by
//!   path before `pivot_root` are the private remount of the host's `/` and
//!   the overlay on rsup's own `containers/<id>/rootfs`;
//! * a mount target on procfs or sysfs is refused;
//! * `pivot_root` comes after every mount from the host side; the mounts
//!   after it (masked paths, the read-only root) name paths of the
//!   container's own root, /proc and /sys;
//! * new directories and nodes get exactly the modes asked for: the umask is
//!   0 while the steps run and restored after.

mod devices;
mod etc_files;
mod mounts;
mod namespaces;
mod pivot;
mod rootfs;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

pub use crate::error::Step;
pub use namespaces::{enter_cgroupns, enter_userns};
pub use rootfs::lower_dirs;

use crate::paths::{PathError, RootDir, Target};
use crate::spec::ContainerSpec;
use crate::sys::setup::SetupSys;

/// Why a step failed. The message (what rsupd reports) is one line, the
/// same as before the steps had names; [`SetupError::step`] tells the step.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A system call failed; `what` says what it was for.
    #[error("{what}: {source}")]
    Sys {
        step: Step,
        what: Cow<'static, str>,
        source: Errno,
    },
    /// `mount(2)` of `what` onto `target` (a path inside the root) failed.
    #[error("mount {what} on {target}: {source}")]
    Mount {
        step: Step,
        what: &'static str,
        target: String,
        source: Errno,
    },
    /// A path could not be resolved, made, checked or written.
    #[error("{}{source}", prefix(.context))]
    Path {
        step: Step,
        /// What the path was for ("mount target /data"), if not plain.
        context: Option<String>,
        source: Box<PathError>,
    },
    /// A file or directory of rsup's own could not be opened or made.
    #[error("{what}: {source}")]
    Io {
        step: Step,
        what: String,
        source: std::io::Error,
    },
    /// The root, a volume or a peer process is not as a step needs it.
    #[error("{message}")]
    Refused { step: Step, message: String },
    /// The lower layers' shifted copy for a user namespace.
    #[error("{source}")]
    Layers {
        step: Step,
        source: Box<crate::error::Error>,
    },
}

fn prefix(context: &Option<String>) -> String {
    context
        .as_ref()
        .map(|c| format!("{c}: "))
        .unwrap_or_default()
}

impl SetupError {
    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            SetupError::Sys { step, .. }
            | SetupError::Mount { step, .. }
            | SetupError::Path { step, .. }
            | SetupError::Io { step, .. }
            | SetupError::Refused { step, .. }
            | SetupError::Layers { step, .. } => *step,
        }
    }

    fn refused(step: Step, message: impl Into<String>) -> SetupError {
        SetupError::Refused {
            step,
            message: message.into(),
        }
    }
}

/// `map_err` for a system call of `step`.
fn sys_err(step: Step, what: &'static str) -> impl FnOnce(Errno) -> SetupError {
    move |source| SetupError::Sys {
        step,
        what: Cow::Borrowed(what),
        source,
    }
}

/// `map_err` for a path of `step`, its message as it is.
fn path_err(step: Step) -> impl FnOnce(PathError) -> SetupError {
    move |e| SetupError::Path {
        step,
        context: None,
        source: Box::new(e),
    }
}

/// `map_err` for a path of `step`, its message after `context: `.
fn path_in(step: Step, context: impl FnOnce() -> String) -> impl FnOnce(PathError) -> SetupError {
    move |e| SetupError::Path {
        step,
        context: Some(context()),
        source: Box::new(e),
    }
}

/// What `mount(2)` gets besides its target.
#[derive(Debug, Clone, Copy)]
struct Mount<'a> {
    source: Option<&'a str>,
    fstype: Option<&'a str>,
    flags: MsFlags,
    data: Option<&'a str>,
}

impl<'a> Mount<'a> {
    /// A new filesystem.
    fn fs(source: &'a str, fstype: &'a str, flags: MsFlags, data: Option<&'a str>) -> Self {
        Mount {
            source: Some(source),
            fstype: Some(fstype),
            flags,
            data,
        }
    }

    /// A bind mount of `source` (a `/proc/self/fd/N`), with `flags` besides
    /// `MS_BIND`.
    fn bind(source: &'a str, flags: MsFlags) -> Self {
        Mount {
            source: Some(source),
            fstype: None,
            flags: MsFlags::MS_BIND | flags,
            data: None,
        }
    }

    /// A remount of a bind mount with `flags` besides `MS_BIND |
    /// MS_REMOUNT`.
    fn remount(flags: MsFlags) -> Self {
        Mount {
            source: None,
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            data: None,
        }
    }
}

/// The setup of one container: what every step needs.
pub struct Setup<'a> {
    sys: &'a dyn SetupSys,
    spec: &'a ContainerSpec,
    /// `<state>/containers/<id>` (see [`crate::store`]).
    dir: &'a Path,
    /// The host uid and gid of the container's root, with a user namespace:
    /// the owner of what rsup makes for it (/dev, /dev/shm, device nodes,
    /// the /etc files, a new working directory).
    owner: Option<(u32, u32)>,
}

impl<'a> Setup<'a> {
    pub fn new(sys: &'a dyn SetupSys, spec: &'a ContainerSpec, dir: &'a Path) -> Self {
        Setup {
            sys,
            spec,
            dir,
            owner: spec.userns.as_ref().map(|m| m.root()),
        }
    }

    /// Every step up to the read-only root (see the module documentation),
    /// with the umask 0; `lowers` are the overlay's lower directories, top
    /// first ([`lower_dirs`]).
    pub fn build(&self, lowers: &[PathBuf]) -> Result<(), SetupError> {
        let umask = self.sys.umask(0);
        let r = self.build_root(lowers);
        self.sys.umask(umask);
        r
    }

    fn build_root(&self, lowers: &[PathBuf]) -> Result<(), SetupError> {
        self.enter_namespaces()?;
        let root = self.mount_rootfs(lowers)?;
        self.mount_proc(&root)?;
        self.mount_dev(&root)?;
        self.mount_sys(&root)?;
        self.mount_volumes(&root)?;
        self.mount_etc_files(&root)?;
        self.set_hostname()?;
        // From here on every path is the container's, and /proc is its own.
        let root = self.pivot(root)?;
        if !self.spec.security.privileged {
            self.mask_paths(&root)?;
        }
        self.make_working_dir(&root)?;
        if self.spec.read_only {
            self.make_root_read_only()?;
        }
        Ok(())
    }

    /// `mount(2)` onto a resolved target, by its fd: the kernel mounts on
    /// exactly that inode (see [`crate::paths`]).
    fn mount_on(
        &self,
        step: Step,
        what: &'static str,
        target: &Target,
        m: Mount<'_>,
    ) -> Result<(), SetupError> {
        self.sys
            .mount(m.source, &target.proc_path(), m.fstype, m.flags, m.data)
            .map_err(|source| SetupError::Mount {
                step,
                what,
                target: target.path().to_string(),
                source,
            })
    }

    /// Refuses a mount target on procfs or sysfs (asking the kernel, through
    /// [`SetupSys::fs_type`], which filesystem it is on).
    fn ensure_mountable(&self, t: &Target, root: &RootDir) -> Result<(), PathError> {
        t.ensure_mountable_on(root, self.sys.fs_type(t))
    }

    /// Options of rsup's own tmpfs mounts that belong to the container's
    /// root (`,uid=U,gid=G` with a user namespace).
    fn tmpfs_owner(&self) -> String {
        self.owner
            .map(|(u, g)| format!(",uid={u},gid={g}"))
            .unwrap_or_default()
    }
}

/// `<state>` of a container directory `<state>/containers/<id>` (see
/// [`crate::store`]).
fn state_dir(step: Step, dir: &Path) -> Result<&Path, SetupError> {
    dir.parent().and_then(Path::parent).ok_or_else(|| {
        SetupError::refused(
            step,
            "the container directory is not inside a state directory",
        )
    })
}
