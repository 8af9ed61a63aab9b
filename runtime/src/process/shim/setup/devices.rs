//! The container's `/dev`: a tmpfs of its own on the root's `dev`, holding
//! the standard device nodes, a new devpts instance, a tmpfs for `/dev/shm`
//! and the usual links.
//!
//! Invariants: the nodes are made with mknod inside the container's tmpfs,
//! so a chmod or chown inside changes the container's inode and never the
//! host's; the tmpfs is checked to be the one just mounted before anything
//! is made in it; with a user namespace everything here belongs to the
//! container's root. Only if mknod is refused (EPERM) is the host's node
//! bind-mounted instead (and shim.log says so).

use std::path::Path;

use nix::mount::MsFlags;

use super::{Mount, Setup, SetupError, Step, path_err};
use crate::paths::RootDir;

/// The standard device nodes: (name, major, minor).
pub(super) const DEV_NODES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Links in `/dev`: (name, target).
const DEV_LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

impl Setup<'_> {
    /// Mounts the tmpfs on the root's `dev` and fills it.
    pub(super) fn mount_dev(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::Devices;
        let dev_dir = root.plain_dir("dev", 0o755).map_err(path_err(step))?;
        let data = format!("mode=755,size=65536k{}", self.tmpfs_owner());
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
        self.mount_on(
            step,
            "tmpfs",
            &dev_dir,
            Mount::fs("tmpfs", "tmpfs", flags, Some(&data)),
        )?;
        drop(dev_dir);
        self.make_dev(root)
    }

    /// Fills the container's own /dev tmpfs (just mounted on the root's
    /// `dev`). The init is host root here (before its user namespace), so
    /// mknod works with `--userns remap` too; the nodes then belong to the
    /// container's root.
    fn make_dev(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::Devices;
        // Resolved again: the fd now leads into the tmpfs mounted on it.
        let t = root.resolve_nofollow("dev").map_err(path_err(step))?;
        if self.sys.fs_type(&t).ok() != Some(nix::sys::statfs::TMPFS_MAGIC) {
            return Err(SetupError::refused(
                step,
                "/dev in the rootfs is not the tmpfs just mounted",
            ));
        }
        let dev = RootDir::from_target(t, root.label().join("dev")).map_err(path_err(step))?;
        for (name, major, minor) in DEV_NODES {
            let node = match self.sys.mknod_char(&dev, name, major, minor, 0o666) {
                Ok(n) => n,
                Err(e) if e.errno() == Some(nix::errno::Errno::EPERM) => {
                    eprintln!(
                        "rsup-init: mknod /dev/{name}: {e}; bind-mounting the host's node instead"
                    );
                    let node = dev.create_file(name, 0o666).map_err(path_err(step))?;
                    let host = crate::paths::open_host_path(&Path::new("/dev").join(name))
                        .map_err(path_err(step))?;
                    let from = host.proc_path();
                    self.mount_on(step, name, &node, Mount::bind(&from, MsFlags::empty()))?;
                    continue;
                }
                Err(e) => return Err(path_err(step)(e)),
            };
            if let Some((u, g)) = self.owner {
                self.sys
                    .chown(&node, u, g)
                    .map_err(|source| SetupError::Sys {
                        step,
                        what: format!("chown /dev/{name}").into(),
                        source,
                    })?;
            }
        }
        let pts = dev.mkdir("pts", 0o755).map_err(path_err(step))?;
        let m = Mount::fs(
            "devpts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        );
        self.mount_on(step, "devpts", &pts, m)?;
        let shm = dev.mkdir("shm", 0o1777).map_err(path_err(step))?;
        let data = format!("mode=1777,size=65536k{}", self.tmpfs_owner());
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
        self.mount_on(
            step,
            "tmpfs",
            &shm,
            Mount::fs("shm", "tmpfs", flags, Some(&data)),
        )?;
        for (link, target) in DEV_LINKS {
            self.sys
                .symlink(&dev, link, target)
                .map_err(path_err(step))?;
        }
        Ok(())
    }
}
