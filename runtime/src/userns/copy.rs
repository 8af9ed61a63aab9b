//! Copying a tree with its owners shifted through an [`IdMap`]: entry by
//! entry through `O_PATH | O_NOFOLLOW` fds (a symlink is copied, never
//! followed), hard links kept, opaque directories kept opaque, and sparse
//! files copied by their data ranges only, each entry and byte charged to a
//! [`Budget`] before it is written.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::map::IdMap;
use crate::imagestore::limits::{Budget, CHECK_EVERY, LimitError};

/// Why [`copy_shifted`] stopped: an operation on a path failed, or the
/// copy reached a reserve of the state filesystem.
#[derive(Debug)]
pub(super) enum CopyError {
    Io(&'static str, PathBuf, std::io::Error),
    Limit(LimitError),
}

impl From<LimitError> for CopyError {
    fn from(e: LimitError) -> CopyError {
        CopyError::Limit(e)
    }
}

/// overlayfs' mark of an opaque directory (set by the image store).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Copies `src` to `dst` (which must not exist), entry by entry: regular
/// files (hard links kept as hard links), directories, symlinks, devices,
/// fifos and sockets, each chowned through `map`, with its mode (set after
/// the chown, which clears setuid bits) and times. Regular files keep their
/// holes ([`copy_data`]). Each entry and every data byte is charged to
/// `budget`, if any, before it is written.
///
/// Each source entry is opened once, `O_PATH | O_NOFOLLOW`, and everything
/// after (its stat, its children, its content, its link target) is read
/// through that fd (as `/proc/self/fd/N`): a symlink is copied as a symlink
/// and never followed, even if an entry of a `--rootfs` is swapped for one
/// while we copy. Everything is written under `dst`, a fresh directory of
/// the root-only cache.
pub(super) fn copy_shifted(
    src: &Path,
    dst: &Path,
    map: &IdMap,
    links: &mut HashMap<(u64, u64), PathBuf>,
    budget: Option<&Budget>,
) -> Result<(), CopyError> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{Mode, SFlag, UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    use std::os::fd::AsRawFd;
    let e = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err: std::io::Error| CopyError::Io(op, p, err)
    };
    let errno = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err: nix::errno::Errno| CopyError::Io(op, p, std::io::Error::from(err))
    };
    if let Some(b) = budget {
        b.charge_entry()?;
    }
    let fd = nix::fcntl::open(
        src,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open", src))?;
    let me = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let md = nix::sys::stat::fstat(&fd).map_err(errno("stat", src))?;
    let kind = md.st_mode & libc::S_IFMT;
    let uid = map.host_uid(md.st_uid).unwrap_or(md.st_uid);
    let gid = map.host_gid(md.st_gid).unwrap_or(md.st_gid);
    let mode = md.st_mode & 0o7777;
    let (is_dir, is_link, is_file) = (
        kind == libc::S_IFDIR,
        kind == libc::S_IFLNK,
        kind == libc::S_IFREG,
    );
    if is_file && md.st_nlink > 1 {
        if let Some(first) = links.get(&(md.st_dev, md.st_ino)) {
            return std::fs::hard_link(first, dst).map_err(e("link", dst));
        }
        links.insert((md.st_dev, md.st_ino), dst.to_path_buf());
    }
    if is_dir {
        std::fs::create_dir(dst).map_err(e("mkdir", dst))?;
        let mut children: Vec<_> = std::fs::read_dir(&me)
            .map_err(e("readdir", src))?
            .collect::<Result<_, _>>()
            .map_err(e("readdir", src))?;
        children.sort_by_key(|c| c.file_name());
        for c in children {
            // Resolved in this very directory (its fd), not by its path.
            copy_shifted(
                &me.join(c.file_name()),
                &dst.join(c.file_name()),
                map,
                links,
                budget,
            )?;
        }
        // An image layer's opaque directory must stay opaque in the copy.
        if let Ok(Some(v)) = crate::sys::lgetxattr(src, OPAQUE_XATTR) {
            crate::sys::lsetxattr(dst, OPAQUE_XATTR, &v).map_err(errno("setxattr", dst))?;
        }
    } else if is_link {
        let target = nix::fcntl::readlinkat(&fd, "").map_err(errno("readlink", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(e("symlink", dst))?;
    } else if is_file {
        // The magic link reopens exactly the inode stat'ed above.
        copy_data(&me, dst, budget)?;
    } else {
        let kind = SFlag::from_bits_truncate(kind);
        nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(mode), md.st_rdev)
            .map_err(errno("mknod", dst))?;
    }
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(e("chown", dst))?;
    if !is_link {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
            .map_err(e("chmod", dst))?;
    }
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &TimeSpec::new(md.st_atime, md.st_atime_nsec),
        &TimeSpec::new(md.st_mtime, md.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(errno("utimensat", dst))?;
    Ok(())
}

/// Copies the regular file `src` to the new file `dst` (mode 0600 until
/// the caller sets its own), data ranges only: what `SEEK_DATA`/`SEEK_HOLE`
/// say is a hole stays one (then `dst` gets `src`'s length), so a sparse
/// file of 50 GB costs here what its data costs. A filesystem without
/// hole reporting shows the whole file as data. Each chunk of at most
/// [`CHECK_EVERY`] bytes is charged to `budget` before it is written.
fn copy_data(src: &Path, dst: &Path, budget: Option<&Budget>) -> Result<(), CopyError> {
    use nix::errno::Errno;
    use nix::unistd::{Whence, lseek};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err: std::io::Error| CopyError::Io(op, p, err)
    };
    let mut from = std::fs::File::open(src).map_err(io("open", src))?;
    let len = from.metadata().map_err(io("stat", src))?.len();
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io("create", dst))?;
    let mut pos: i64 = 0;
    while pos < end {
        let data = match lseek(&from, pos, Whence::SeekData) {
            Ok(d) => d,
            // Nothing but a hole from `pos` to the end.
            Err(Errno::ENXIO) => break,
            Err(err) => return Err(io("seek data in", src)(err.into())),
        };
        let hole = lseek(&from, data, Whence::SeekHole)
            .map_err(|err| io("seek a hole in", src)(err.into()))?
            .min(end);
        let mut at = data;
        while at < hole {
            let chunk = (hole - at).min(i64::try_from(CHECK_EVERY).unwrap_or(i64::MAX));
            let n = u64::try_from(chunk).unwrap_or(0);
            if let Some(b) = budget {
                b.charge(n)?;
            }
            let offset = u64::try_from(at).unwrap_or(0);
            from.seek(SeekFrom::Start(offset))
                .map_err(io("seek", src))?;
            to.seek(SeekFrom::Start(offset)).map_err(io("seek", dst))?;
            // std copies file to file with copy_file_range where it can.
            let copied =
                std::io::copy(&mut (&mut from).take(n), &mut to).map_err(io("copy to", dst))?;
            if copied < n {
                // The file shrank under us: what is left is a hole.
                break;
            }
            at += chunk;
        }
        pos = hole.max(pos + 1);
    }
    to.set_len(len).map_err(io("truncate", dst))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagestore::limits::UnpackLimits;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_sparse_file_keeps_its_holes() {
        use std::io::{Seek, SeekFrom};
        let d = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        let size: u64 = 20 << 30;
        {
            let mut f = std::fs::File::create(&src).expect("create");
            f.write_all(b"head").expect("write");
            f.seek(SeekFrom::Start(10 << 30)).expect("seek");
            f.write_all(b"middle").expect("write");
            f.set_len(size).expect("truncate");
        }
        let limits = UnpackLimits {
            max_image_bytes: u64::MAX,
            min_free: crate::imagestore::limits::FreeReserve::Bytes(0),
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(0),
        };
        let budget = Budget::new("the shifted copy", limits, d.path());
        copy_data(&src, &dst, Some(&budget)).expect("copy");
        let m = std::fs::metadata(&dst).expect("stat");
        assert_eq!(m.len(), size);
        assert!(m.blocks() * 512 < 4 << 20, "{} blocks written", m.blocks());
        // Only the data was charged.
        assert!(budget.used() < 1 << 20, "charged {}", budget.used());
        let read_at = |at: u64, n: usize| {
            use std::io::Read;
            let mut f = std::fs::File::open(&dst).expect("open");
            f.seek(SeekFrom::Start(at)).expect("seek");
            let mut b = vec![0u8; n];
            f.read_exact(&mut b).expect("read");
            b
        };
        assert_eq!(read_at(0, 4), b"head");
        assert_eq!(read_at(10 << 30, 6), b"middle");
        assert_eq!(read_at(5 << 30, 3), [0, 0, 0]);
        // A file that is all hole, and an empty one.
        for (name, len) in [("hole", 1u64 << 30), ("empty", 0)] {
            let (s, t) = (d.path().join(name), d.path().join(format!("{name}.copy")));
            std::fs::File::create(&s)
                .and_then(|f| f.set_len(len))
                .expect("create");
            copy_data(&s, &t, None).expect("copy");
            let m = std::fs::metadata(&t).expect("stat");
            assert_eq!((m.len(), m.blocks()), (len, 0), "{name}");
        }
    }
}
