//! Reading and writing regular files under a [`RootDir`]: reads open
//! regular files only, with a size cap; writes go only to regular files on
//! the root's own filesystem, never on procfs or sysfs, and never through a
//! trailing symlink.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;

use nix::errno::Errno;
use nix::sys::stat::SFlag;
use pathrs::flags::OpenFlags;

use super::error::{PathError, pathrs_errno};
use super::kind::is_kind;
use super::root::{RootDir, relative};
use super::target::Target;

impl RootDir {
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
}
