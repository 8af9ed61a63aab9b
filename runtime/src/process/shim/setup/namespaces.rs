//! The init's namespaces: mount, UTS, IPC and network first (still in the
//! host's user namespace, so that they stay owned by it), the user namespace
//! after every mount, the cgroup namespace at the start of the command.
//!
//! Invariants: the PID namespace is the shim's (it unshared before forking
//! the init); nothing mounted after [`Setup::enter_namespaces`] propagates
//! to the host (`/` is made private, recursively); with a user namespace,
//! container root's capabilities apply in it only, never to the mount,
//! network, UTS or IPC namespaces.

use std::fs::File;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::{Setup, SetupError, Step, sys_err};
use crate::sys::setup::SetupSys;

impl Setup<'_> {
    /// New mount, UTS and IPC namespaces, and a network namespace: a new,
    /// empty one, or the container's persistent one (its sandbox, made and
    /// wired by rsupd before the start) when it has networks. Then `/` made
    /// private.
    pub(super) fn enter_namespaces(&self) -> Result<(), SetupError> {
        let step = Step::Namespaces;
        let mut flags =
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
        if self.spec.networks.is_empty() {
            flags |= CloneFlags::CLONE_NEWNET;
        } else {
            let path = self.dir.join("netns");
            let ns = File::open(&path).map_err(|source| SetupError::Io {
                step,
                what: path.display().to_string(),
                source,
            })?;
            self.sys
                .setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(sys_err(step, "joining the network namespace"))?;
        }
        self.sys.unshare(flags).map_err(sys_err(step, "unshare"))?;
        // Nothing we mount from here on propagates back to the host.
        self.sys
            .mount(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
            .map_err(sys_err(step, "making / private"))
    }

    /// The hostname in the new UTS namespace, and `lo` up in the network
    /// namespace.
    pub(super) fn set_hostname(&self) -> Result<(), SetupError> {
        let step = Step::Hostname;
        self.sys
            .sethostname(&self.spec.hostname)
            .map_err(sys_err(step, "sethostname"))?;
        self.sys
            .set_link_up("lo")
            .map_err(sys_err(step, "setting lo up"))
    }
}

/// In the init, after every mount: moves into a new user namespace, lets
/// the shim write its id maps (`wait_for_maps` tells the shim and waits for
/// it) and becomes the namespace's root. The mount, PID, UTS, IPC and
/// network namespaces stay owned by the host's user namespace, so even with
/// capabilities container root cannot mount or configure the network; the
/// capability sets the command gets apply in the new namespace only.
pub fn enter_userns(
    sys: &dyn SetupSys,
    wait_for_maps: impl FnOnce() -> Result<(), SetupError>,
) -> Result<(), SetupError> {
    let step = Step::UserNamespace;
    sys.unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(sys_err(step, "unshare(CLONE_NEWUSER)"))?;
    wait_for_maps()?;
    sys.clear_groups()
        .map_err(sys_err(step, "setgroups in the user namespace"))?;
    sys.setresgid(0)
        .map_err(sys_err(step, "setresgid(0) in the user namespace"))?;
    sys.setresuid(0)
        .map_err(sys_err(step, "setresuid(0) in the user namespace"))?;
    // A change of the effective uid clears the parent-death signal.
    let _ = sys.set_parent_death_signal(libc::SIGKILL);
    Ok(())
}

/// Makes the init's cgroups (rsupd has put it into them) the root of a new
/// cgroup namespace: the command sees "/" in /proc/self/cgroup, and a
/// cgroupfs it mounts (with CAP_SYS_ADMIN) shows only its own subtree. A
/// kernel without cgroup namespaces (EINVAL) is let be.
pub fn enter_cgroupns(sys: &dyn SetupSys) -> Result<(), SetupError> {
    match sys.unshare(CloneFlags::CLONE_NEWCGROUP) {
        Ok(()) | Err(Errno::EINVAL) => Ok(()),
        Err(e) => Err(sys_err(Step::Start, "unshare(CLONE_NEWCGROUP)")(e)),
    }
}
