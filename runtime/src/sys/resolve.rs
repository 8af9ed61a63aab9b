//! `openat2(2)` with `RESOLVE_IN_ROOT`: the kernel's resolution of a path
//! inside a directory tree, the fast path of `crate::paths` (libpathrs does
//! the same first, and is the fallback). Invariant: what it opens is an
//! `O_PATH` fd reached without leaving the tree and without a `/proc` magic
//! link.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// Opens `path` under `dir` as an `O_PATH` fd with `openat2(2)` (Linux
/// 5.6+) and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: the kernel resolves
/// every component, symlinks and `..` included, as if `dir` were `/`, and
/// refuses `/proc` magic links, so nothing leads out of `dir`. With
/// `nofollow` a trailing symlink is opened itself. This is the resolution
/// libpathrs uses on such kernels, without its fallbacks and retries (the
/// caller falls back to libpathrs on any error but ENOENT/ENOTDIR; EAGAIN,
/// which the kernel returns when a rename or mount races with a `..`, is
/// one of them).
pub fn open_in_root(dir: BorrowedFd<'_>, path: &str, nofollow: bool) -> nix::Result<OwnedFd> {
    /// `struct open_how` of linux/openat2.h.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: a valid dir fd, a NUL-terminated path and an open_how that
    // live across the call, with the size of that struct; the kernel only
    // reads them and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// The path of an fd, as the kernel names it.
    fn path_of(fd: &OwnedFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("readlink")
            .display()
            .to_string()
    }

    /// [`open_in_root`], again while the kernel answers EAGAIN: it does when
    /// a rename or a mount anywhere on the system races with a `..` (other
    /// tests make plenty); libpathrs, the callers' fallback, retries too.
    fn open_retry(dir: BorrowedFd<'_>, path: &str, nofollow: bool) -> nix::Result<OwnedFd> {
        let mut r = open_in_root(dir, path, nofollow);
        for _ in 0..1000 {
            if !matches!(r, Err(Errno::EAGAIN)) {
                break;
            }
            r = open_in_root(dir, path, nofollow);
        }
        r
    }

    #[test]
    fn symlinks_and_dotdot_stay_in_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").expect("write");
        std::os::unix::fs::symlink("/etc", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../etc", root.join("up")).expect("symlink");
        let dir = std::fs::File::open(&root).expect("open root");
        let inside = format!("{}/etc/passwd", root.display());
        for p in [
            "etc/passwd",
            "/etc/passwd",
            "abs/passwd",
            "up/passwd",
            "../../etc/passwd",
        ] {
            let fd = open_retry(dir.as_fd(), p, false).expect(p);
            assert_eq!(path_of(&fd), inside, "{p}");
        }
        // Missing inside the root although the host has it.
        assert_eq!(
            open_retry(dir.as_fd(), "abs/hostname", false).map(|_| ()),
            Err(Errno::ENOENT)
        );
        // A trailing symlink opened itself with nofollow.
        let fd = open_retry(dir.as_fd(), "abs", true).expect("nofollow");
        assert_eq!(path_of(&fd), format!("{}/abs", root.display()));
        // Magic links are refused.
        let proc_root = std::fs::File::open("/").expect("open /");
        assert_eq!(
            open_retry(proc_root.as_fd(), "proc/self/exe", false).map(|_| ()),
            Err(Errno::ELOOP)
        );
    }
}
