//! Creating under a [`RootDir`]: directories (`mkdir -p`, a plain mount
//! point, a fresh one), files for mount targets, character devices and
//! symlinks. Every creation works on the parent's fd with `O_EXCL |
//! O_NOFOLLOW` (libpathrs), and a dangling symlink is never created through.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::stat::SFlag;
use pathrs::flags::OpenFlags;

use super::error::{PathError, pathrs_errno};
use super::kind::is_kind;
use super::root::{RootDir, relative};
use super::target::Target;

impl RootDir {
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
    pub(super) fn create_excl(
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
}
