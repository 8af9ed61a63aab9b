//! The container's root filesystem: an overlay of the read-only lower
//! layers (the image's or the `--rootfs`, or their copy shifted into a user
//! namespace's ids) with the container's own upper and work directories,
//! mounted on `containers/<id>/rootfs`; and, at the very end, the root made
//! read-only for `--read-only`.
//!
//! Invariants: the lower layers are never written (the overlay writes to the
//! upper directory only); with a user namespace the upper and work
//! directories, and so `/`, belong to the container's root; the read-only
//! remount touches the root's own mount only, not /proc, /dev, volumes or
//! tmpfs mounts below it.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{Mount, Setup, SetupError, Step, path_err, state_dir, sys_err};
use crate::paths::RootDir;
use crate::spec::ContainerSpec;
use crate::sys::setup::SetupSys;

/// The overlay's lower directories, top first: the rootfs, or its shifted
/// copy when the container has a user namespace (see
/// [`crate::userns::shifted_lowerdirs`]); then the upper and work
/// directories are made the container root's too, so that it owns `/`. Run
/// by the shim, before it forks the init.
pub fn lower_dirs(
    sys: &dyn SetupSys,
    spec: &ContainerSpec,
    dir: &Path,
) -> Result<Vec<PathBuf>, SetupError> {
    let step = Step::Rootfs;
    let lowers = spec.lowerdirs();
    let Some(map) = &spec.userns else {
        return Ok(lowers);
    };
    let shifted =
        crate::userns::shifted_lowerdirs(state_dir(step, dir)?, &lowers, map).map_err(|e| {
            SetupError::Layers {
                step,
                source: Box::new(e),
            }
        })?;
    let (uid, gid) = map.root();
    for d in ["upper", "work"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(|source| SetupError::Io {
            step,
            what: format!("mkdir {d}"),
            source,
        })?;
        let t = crate::paths::open_host_path(&p).map_err(path_err(step))?;
        sys.chown(&t, uid, gid).map_err(|e| SetupError::Sys {
            step,
            what: format!("chown {d}").into(),
            source: e,
        })?;
    }
    Ok(shifted)
}

impl Setup<'_> {
    /// Mounts the overlay on `containers/<id>/rootfs` (rsup's own directory,
    /// by path) and opens it as the root every later path is resolved in.
    pub(super) fn mount_rootfs(&self, lowers: &[PathBuf]) -> Result<RootDir, SetupError> {
        let step = Step::Rootfs;
        let rootfs = self.dir.join("rootfs");
        for d in ["rootfs", "upper", "work"] {
            std::fs::create_dir_all(self.dir.join(d)).map_err(|source| SetupError::Io {
                step,
                what: format!("mkdir {d}"),
                source,
            })?;
        }
        let opts = crate::spec::overlay_options(
            lowers,
            Some((&self.dir.join("upper"), &self.dir.join("work"))),
        )
        .map_err(|message| SetupError::refused(step, message))?;
        let target = rootfs.display().to_string();
        self.sys
            .mount(
                Some("overlay"),
                &target,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(|source| SetupError::Mount {
                step,
                what: "overlay",
                target,
                source,
            })?;
        // From here on, every path inside the root is resolved in it by fd
        // (crate::paths): nothing in the image or in a volume can steer a
        // mount or a write out of it.
        RootDir::open(&rootfs).map_err(path_err(step))
    }

    /// After the pivot: only the root's own mount turns read-only; /proc,
    /// /dev, volumes and tmpfs mounts below keep their own flags.
    pub(super) fn make_root_read_only(&self) -> Result<(), SetupError> {
        let m = Mount::remount(MsFlags::MS_RDONLY);
        self.sys
            .mount(m.source, "/", m.fstype, m.flags, m.data)
            .map_err(sys_err(Step::ReadOnlyRoot, "making the root read-only"))
    }
}
