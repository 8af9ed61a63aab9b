//! `pivot_root` into the container's root, and what comes after it inside:
//! Docker's masked and read-only paths, and the working directory.
//!
//! Invariants: the old root is detached (lazily) right after the pivot, so
//! no path of the host stays reachable; the init's working directory is the
//! new `/`; after the pivot, paths are the container's own: the masks name
//! paths of its fresh /proc and /sys, and the working directory is resolved
//! (or made) inside the new root by fd and refused on procfs or sysfs.

use std::borrow::Cow;
use std::os::fd::AsFd;

use nix::mount::MsFlags;

use super::{Mount, Setup, SetupError, Step, path_err, path_in, sys_err};
use crate::paths::RootDir;

impl Setup<'_> {
    /// `pivot_root(".", ".")` from inside the root: the old root ends up
    /// stacked on top of the new one, and the lazy unmount of "." takes it
    /// away; no directory for the old root is needed inside the rootfs.
    /// Returns the new root.
    pub(super) fn pivot(&self, root: RootDir) -> Result<RootDir, SetupError> {
        let step = Step::Pivot;
        let top = root.target().map_err(path_err(step))?;
        self.sys
            .fchdir(top.as_fd())
            .map_err(sys_err(step, "chdir rootfs"))?;
        drop((top, root));
        self.sys
            .pivot_root(".", ".")
            .map_err(sys_err(step, "pivot_root"))?;
        self.sys
            .umount_detach(".")
            .map_err(sys_err(step, "detaching the old root"))?;
        self.sys.chdir("/").map_err(sys_err(step, "chdir /"))?;
        self.sys.root_dir().map_err(path_err(step))
    }

    /// Docker's masked and read-only paths, those that exist: files behind
    /// /dev/null, directories behind an empty read-only tmpfs, and paths
    /// bound onto themselves and remounted read-only.
    pub(super) fn mask_paths(&self, root: &RootDir) -> Result<(), SetupError> {
        use crate::security::{MASKED_DIRS, MASKED_FILES, READONLY_PATHS};
        let step = Step::MaskedPaths;
        // `map_err` for "WHAT PATH: errno".
        let failed = |what: &'static str, path: &'static str| {
            move |source| SetupError::Sys {
                step,
                what: Cow::Owned(format!("{what} {path}")),
                source,
            }
        };
        for f in MASKED_FILES {
            if root.resolve(f).is_ok() {
                self.sys
                    .mount(Some("/dev/null"), f, None, MsFlags::MS_BIND, None)
                    .map_err(failed("masking", f))?;
            }
        }
        for d in MASKED_DIRS {
            if root.resolve(d).is_ok_and(|t| t.is_dir()) {
                self.sys
                    .mount(
                        Some("tmpfs"),
                        d,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY,
                        Some("size=0"),
                    )
                    .map_err(failed("masking", d))?;
            }
        }
        for p in READONLY_PATHS {
            if root.resolve(p).is_ok() {
                self.sys
                    .mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
                    .map_err(failed("binding", p))?;
                let ro = Mount::remount(
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                );
                self.sys
                    .mount(ro.source, p, ro.fstype, ro.flags, ro.data)
                    .map_err(|source| SetupError::Sys {
                        step,
                        what: Cow::Owned(format!("making {p} read-only")),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// The working directory, made (0755, the container root's) if missing
    /// or not a directory; the command's chdir comes later, as its user.
    pub(super) fn make_working_dir(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::WorkingDir;
        let wd_path = &self.spec.working_dir;
        let in_wd = || "working directory".to_string();
        let (wd, made) = match root.resolve(wd_path) {
            Ok(t) if t.is_dir() => (t, false),
            _ => (
                root.mkdir_all(wd_path, 0o755)
                    .map_err(path_in(step, in_wd))?,
                true,
            ),
        };
        self.ensure_mountable(&wd, root)
            .map_err(path_in(step, in_wd))?;
        if let (true, Some((u, g))) = (made, self.owner) {
            let _ = self.sys.chown(&wd, u, g);
        }
        Ok(())
    }
}
