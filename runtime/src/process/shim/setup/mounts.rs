//! Mounts inside the root before `pivot_root`: the container's own procfs
//! and a read-only sysfs, then its volumes, bind mounts and tmpfs mounts.
//!
//! Invariants: `/proc` and `/sys` are plain directories of the root (no
//! symlink, even one inside it); user mount targets are resolved (or made)
//! inside the root by fd and refused on procfs or sysfs; they are mounted
//! parent first, so a volume inside another lands in it; a read-only bind
//! is made read-only before it is attached (new mount API), or, on an old
//! kernel, remounted only once the target, resolved again, is the mount
//! just made.

use nix::mount::MsFlags;

use super::{Mount, Setup, SetupError, Step, path_err, path_in, state_dir};
use crate::paths::{RootDir, Target};
use crate::spec::mounts::{MountKind, MountSpec};
use crate::spec::tmpfs::TmpfsOptions;

const NOSUID_NOEXEC_NODEV: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NODEV);

impl Setup<'_> {
    /// The container's own procfs on the root's `proc`.
    pub(super) fn mount_proc(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::Proc;
        let proc_dir = root.plain_dir("proc", 0o555).map_err(path_err(step))?;
        let m = Mount::fs("proc", "proc", NOSUID_NOEXEC_NODEV, None);
        self.mount_on(step, "proc", &proc_dir, m)
    }

    /// A read-only sysfs on the root's `sys`.
    pub(super) fn mount_sys(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::Sys;
        let sys_dir = root.plain_dir("sys", 0o555).map_err(path_err(step))?;
        let flags = NOSUID_NOEXEC_NODEV | MsFlags::MS_RDONLY;
        self.mount_on(
            step,
            "sysfs",
            &sys_dir,
            Mount::fs("sysfs", "sysfs", flags, None),
        )
    }

    /// Volumes, bind mounts and tmpfs mounts. Targets are resolved (or made)
    /// inside `root` by fd and refused on procfs or sysfs; mounts go parent
    /// first (by depth of the target, as Docker sorts them), so a volume
    /// inside another lands in it. A named volume's source is
    /// `volumes/<name>/_data` under the state dir, resolved with no symlink
    /// allowed in any component; a bind source is the absolute host path the
    /// (root-equivalent) client gave, as in Docker.
    pub(super) fn mount_volumes(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::Volumes;
        let mut order: Vec<&MountSpec> = self.spec.mounts.iter().collect();
        order.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
        let mut volumes: Option<RootDir> = None;
        for m in order {
            let source = match &m.kind {
                MountKind::Volume { name, .. } => {
                    // A VolumeName is checked when config.json is read.
                    let vols = match &mut volumes {
                        Some(v) => v,
                        None => volumes.insert(
                            RootDir::open_no_symlinks(&state_dir(step, self.dir)?.join("volumes"))
                                .map_err(path_err(step))?,
                        ),
                    };
                    let data = vols
                        .resolve_nofollow(&format!("{}/_data", name.as_str()))
                        .map_err(path_in(step, || format!("volume {name}")))?;
                    if !data.is_dir() {
                        return Err(SetupError::refused(
                            step,
                            format!("volume {name}: _data is not a directory"),
                        ));
                    }
                    Some(data)
                }
                MountKind::Bind { source } => {
                    Some(crate::paths::open_host_path(source).map_err(path_err(step))?)
                }
                MountKind::Tmpfs { .. } => None,
            };
            let in_target = || format!("mount target {}", m.target);
            let target = match &source {
                Some(s) if !s.is_dir() => root.create_file(&m.target, 0o644),
                _ => root.mkdir_all(&m.target, 0o755),
            }
            .map_err(path_in(step, in_target))?;
            self.ensure_mountable(&target, root)
                .map_err(path_in(step, in_target))?;
            match (&m.kind, &source) {
                (MountKind::Tmpfs { options }, _) => {
                    let data = options.data();
                    let flags = tmpfs_flags(options, m.read_only);
                    let data = (!data.is_empty()).then_some(data.as_str());
                    let fs = Mount::fs("tmpfs", "tmpfs", flags, data);
                    self.mount_on(step, "tmpfs", &target, fs)?;
                }
                (_, Some(source)) => self.bind_volume(root, m, source, &target)?,
                (_, None) => {
                    return Err(SetupError::refused(
                        step,
                        format!("mount {}: no source", m.target),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Binds `source` onto `target` (recursively), read-only if asked.
    ///
    /// Read-only: a detached copy of the source's tree is made read-only
    /// (every mount in it) and only then attached onto the target's fd
    /// (`open_tree`, `mount_setattr`, `move_mount`): no path is looked up
    /// between the bind and the flag, and no submount stays writable. On a
    /// kernel without the new mount API (ENOSYS: `mount_setattr` is 5.12)
    /// it falls back to a bind and a remount of the target resolved again.
    fn bind_volume(
        &self,
        root: &RootDir,
        m: &MountSpec,
        source: &Target,
        target: &Target,
    ) -> Result<(), SetupError> {
        let step = Step::Volumes;
        if m.read_only {
            let attached = self.sys.clone_tree(source).and_then(|tree| {
                self.sys.set_tree_read_only(&tree)?;
                self.sys.attach_tree(tree, target)
            });
            match attached {
                Ok(()) => return Ok(()),
                Err(nix::errno::Errno::ENOSYS) => {}
                Err(source) => {
                    return Err(SetupError::Mount {
                        step,
                        what: "a read-only volume",
                        target: target.path().to_string(),
                        source,
                    });
                }
            }
        }
        let from = source.proc_path();
        self.mount_on(
            step,
            "a volume",
            target,
            Mount::bind(&from, MsFlags::MS_REC),
        )?;
        if !m.read_only {
            return Ok(());
        }
        // The fd still names the directory under the new mount: resolve
        // again, and make sure it is the mount just made (same inode as its
        // source) before remounting it.
        let mounted = root
            .resolve(&m.target)
            .map_err(path_in(step, || format!("mount target {}", m.target)))?;
        let same = match (self.sys.stat(&mounted), self.sys.stat(source)) {
            (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
            _ => false,
        };
        if !same {
            return Err(SetupError::refused(
                step,
                format!("mount target {} changed while it was mounted", m.target),
            ));
        }
        let ro = Mount::remount(MsFlags::MS_RDONLY | MsFlags::MS_REC);
        self.mount_on(step, "a read-only volume", &mounted, ro)
    }
}

/// The mount flags of a `--tmpfs` mount: each option the user left at
/// Docker's default (`noexec`, `nosuid`, `nodev`) or asked for.
fn tmpfs_flags(o: &TmpfsOptions, read_only: bool) -> MsFlags {
    [
        (read_only, MsFlags::MS_RDONLY),
        (!o.exec, MsFlags::MS_NOEXEC),
        (!o.suid, MsFlags::MS_NOSUID),
        (!o.dev, MsFlags::MS_NODEV),
        (o.sync, MsFlags::MS_SYNCHRONOUS),
        (o.dirsync, MsFlags::MS_DIRSYNC),
        (o.noatime, MsFlags::MS_NOATIME),
        (o.nodiratime, MsFlags::MS_NODIRATIME),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(MsFlags::empty(), |all, (_, f)| all | f)
}
