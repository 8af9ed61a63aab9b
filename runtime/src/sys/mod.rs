//! The only place in rsup-runtime that talks to the kernel through `unsafe`.
//!
//! Thin wrappers over nix where nix has the call, and over libc where it does
//! not (pidfds, `SIOCSIFFLAGS`, `PR_SET_CHILD_SUBREAPER`). Every `unsafe`
//! block says why it is sound. Callers get `nix::Result` and keep their own
//! context.
//!
//! [`setup`] puts the calls that build a container's root (mounts,
//! namespaces, device nodes, `pivot_root`) behind one trait, with the real
//! implementation and, for tests, a recording fake; [`mount_api`] wraps the
//! new mount API it uses for read-only binds. The `bpf(2)` calls of cgroup
//! device programs are in `ebpf.rs`, re-exported here.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

mod ebpf;
pub mod mount_api;
pub mod resolve;
pub mod setup;

pub use ebpf::{
    BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, BPF_PROG_TYPE_CGROUP_DEVICE, BpfInsn, BpfLoadError,
    bpf_load_device_program, bpf_prog_attach, bpf_prog_detach, bpf_prog_get_fd_by_id,
    bpf_prog_query,
};

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3+). The fd is
/// close-on-exec and becomes readable when the process exits.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process behind `pidfd` (`pidfd_send_signal(2)`): no
/// risk of hitting a recycled pid.
pub fn pidfd_send_signal(pidfd: &impl AsRawFd, sig: i32) -> nix::Result<()> {
    // SAFETY: a valid fd, a signal number, a null siginfo (allowed: the kernel
    // then fills in a SI_USER siginfo) and flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &str, put_old: &str) -> nix::Result<()> {
    nix::unistd::pivot_root(new_root, put_old)
}

/// Sets IFF_UP on the interface `name` of the calling thread's network
/// namespace (used for `lo` in a fresh netns, where no netlink is needed).
pub fn set_link_up(name: &str) -> nix::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(Errno::EINVAL);
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of a valid,
    // properly sized ifreq that lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS just wrote.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Makes the caller a child subreaper: orphans of its descendants are
/// re-parented to it instead of to the host's init.
pub fn set_child_subreaper() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Makes the calling process non-dumpable (`PR_SET_DUMPABLE` 0): its
/// `/proc/<pid>` files become root's, and a process without
/// `CAP_SYS_PTRACE` over it can no longer ptrace it or open its
/// `/proc/<pid>/exe`, `mem`, `environ` or fds. rsup's helpers (the shim, the
/// container init, the exec helper) are rsupd's own binary: a container
/// process that could open `/proc/<pid>/exe` of one could overwrite rsupd
/// (runc's CVE-2019-5736). Forks inherit the flag; `execve` of the
/// container's command resets it (unless the binary is setuid or
/// unreadable).
pub fn set_non_dumpable() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Closes every fd of the calling process from 3 up but those in `keep`
/// (`close_range(2)`, Linux 5.9, over the gaps between them).
///
/// For the container's init only, which inherits the shim's files
/// (`container.log`, `shim.log`, pipes of rsupd) and must not hold them
/// while container processes may ptrace it. The fds closed here may belong
/// to `OwnedFd`s further up the caller's stack: the caller must not use
/// them again and must leave with [`exit_now`], which runs no destructor.
pub fn close_inherited_fds(keep: &[RawFd]) -> nix::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > first {
            let last = if k == u32::MAX { u32::MAX } else { k - 1 };
            // SAFETY: close_range with integer arguments only; it closes
            // fds and touches no memory of ours.
            let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
            if r < 0 {
                return Err(Errno::last());
            }
        }
        first = k.saturating_add(1);
    }
    Ok(())
}

/// Whether the calling process is dumpable (`PR_GET_DUMPABLE`).
pub fn is_dumpable() -> nix::Result<bool> {
    // SAFETY: prctl with integer arguments only; PR_GET_DUMPABLE returns the
    // flag and writes no memory.
    let r = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r != 0)
    }
}

/// Sets the process' file mode creation mask and returns the old one.
pub fn set_umask(mask: u32) -> u32 {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask)).bits()
}

/// Asks the kernel to send `sig` to the caller when its parent dies.
pub fn set_parent_death_signal(sig: i32) -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `fork(2)`. Only called from rsup's single-threaded helper processes
/// (the shim and the container init), never from the daemon.
///
/// # Safety
/// The caller must be single-threaded, so that the child cannot inherit a
/// lock held by another thread.
pub unsafe fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: the caller guarantees it is single-threaded (see above).
    unsafe { nix::unistd::fork() }
}

/// clone3's flag (a 64-bit one: libc's `c_int` constant overflows).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// [`fork`] with the child created as a member of the cgroup v2 directory
/// open at `cgroup` (`clone3(2)` with `CLONE_INTO_CGROUP`, Linux 5.7): it
/// never runs outside it, and nobody has to move it there. The child is
/// PID 1 of a new PID namespace (the container's init). Errors
/// (`ENOSYS` before 5.7, `EBUSY` for a cgroup that is not a leaf, ...)
/// create no process and change nothing of the caller; it may fall back to
/// [`fork`]. (Not after an `unshare(CLONE_NEWPID)`: a clone that fails in
/// the cgroup's checks has used up the new namespace's first pid, after
/// which the namespace takes no process at all.)
///
/// # Safety
/// As [`fork`]: the caller must be single-threaded. The child of a raw
/// clone3 also skips glibc's fork bookkeeping, so glibc's cached thread id
/// in the child is the parent's: the child must not rely on it (rsup's
/// init uses no pthread calls; glibc's `raise` and `abort` ask the kernel
/// for the thread id since 2.34, and its `fork`, which the init uses for
/// the command, sets the grandchild's right).
pub unsafe fn fork_into_cgroup(
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> nix::Result<nix::unistd::ForkResult> {
    use std::os::fd::AsRawFd;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP | libc::CLONE_NEWPID as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 reads `args` (its size passed with it) and, without
    // CLONE_VM or a stack, duplicates the caller like fork(2): the child
    // gets a copy of this single-threaded address space (the caller's
    // guarantee) and returns 0 here.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(nix::unistd::ForkResult::Child),
        pid => Ok(nix::unistd::ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as i32),
        }),
    }
}

/// Whether a raw `clone3` child ([`fork_into_cgroup`]) may run on with the
/// C library's state as the parent left it: glibc 2.34 or later, whose
/// `raise`, `abort` and `pthread_kill` of the calling thread ask the kernel
/// for the thread id instead of the cached one (which is the parent's in
/// such a child). Other C libraries: no.
pub fn raw_clone_is_safe() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated
        // string.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        glibc_at_least(&version.to_string_lossy(), (2, 34))
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// Whether a glibc version string ("2.36") is at least `want`.
fn glibc_at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// Number of threads of the calling process, from /proc/self/status.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Start time of `pid` in clock ticks since boot (field 22 of
/// /proc/PID/stat), used to tell a process from a later one with the same pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip to
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Waits for one of the (blocked) signals in `set` and returns its number,
/// real-time signals included (nix's `SigSet::wait` only knows the classic ones).
pub fn sigwait(set: &nix::sys::signal::SigSet) -> nix::Result<i32> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` points to a valid sigset_t for the duration of the call and
    // `sig` is a valid out-pointer.
    let r = unsafe { libc::sigwait(set.as_ref(), &mut sig) };
    if r != 0 {
        Err(Errno::from_raw(r))
    } else {
        Ok(sig)
    }
}

/// `kill(pid, sig)` with a raw signal number (real-time signals included).
pub fn kill(pid: i32, sig: i32) -> nix::Result<()> {
    // SAFETY: kill takes two integers and touches no memory.
    let r = unsafe { libc::kill(pid, sig) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a do-nothing handler for every catchable signal. A pid
/// namespace's init only receives signals from outside for which it has a
/// handler; with a handler in place and the signals blocked, `sigwait`
/// collects them. `execve` resets such handlers to the default.
pub fn install_noop_handlers() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction is plain old data; all-zero is a valid value that we
        // then fill in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = ignore_signal as *const () as usize;
        // SAFETY: `sa` is a valid sigaction whose handler is an async-signal-safe
        // function that does nothing; invalid numbers (glibc-reserved) fail
        // with EINVAL and are skipped.
        unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// `_exit(2)`: leaves at once, without running destructors or atexit handlers
/// (used by forked helpers).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Registers a pidfd with tokio's reactor; it turns readable when the process
/// exits.
pub fn async_pidfd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open fd, and the AsyncFd owns it (no one
    // else can close or replace it) for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Sets the calling thread's name (`comm`, as `ps` shows it; 15 bytes at most).
pub fn set_name(name: &str) -> nix::Result<()> {
    let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // (longer ones are cut by the kernel) that lives across the call.
    let r = unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Moves the calling thread into the network namespace behind `netns` (an fd
/// of `/proc/PID/ns/net` or `/proc/thread-self/ns/net`). Only the calling
/// thread changes namespace: call it on a dedicated std thread, never on a
/// tokio worker.
pub fn setns_net(netns: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
}

/// Gives the calling thread a new, empty network namespace (only `lo`,
/// down). Like [`setns_net`], it affects the calling thread only.
pub fn unshare_net() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
}

/// Opens the network namespace of the calling thread
/// (`/proc/thread-self/ns/net`); the fd keeps the namespace alive.
pub fn open_thread_netns() -> std::io::Result<OwnedFd> {
    std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
}

/// Names a namespace fd the way `/proc/self/fd/N` does, e.g.
/// `net:[4026532281]` (for error messages and logs).
pub fn describe_fd(fd: std::os::fd::BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {}", fd.as_raw_fd()))
}

/// Sets no_new_privs: execve can no longer grant privileges (setuid bits,
/// file capabilities).
pub fn set_no_new_privs() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The calling thread's seccomp mode (`PR_GET_SECCOMP`): 0 none, 1 strict,
/// 2 a filter.
pub fn seccomp_mode() -> nix::Result<i32> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

fn path_cstring(path: &std::path::Path) -> nix::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Sets the extended attribute `name` of `path` to `value` without following
/// a final symlink (`lsetxattr(2)`; nix 0.32 has no xattr calls). Used for
/// overlayfs' `trusted.overlay.opaque`.
pub fn lsetxattr(path: &std::path::Path, name: &str, value: &[u8]) -> nix::Result<()> {
    let p = path_cstring(path)?;
    let n = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `p` and `n` are NUL-terminated strings that outlive the call and
    // `value` is a valid slice of `value.len()` bytes; the kernel only reads
    // them.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Reads the extended attribute `name` of `path` without following a final
/// symlink (`lgetxattr(2)`); `Ok(None)` when the attribute is not set.
pub fn lgetxattr(path: &std::path::Path, name: &str) -> nix::Result<Option<Vec<u8>>> {
    let p = path_cstring(path)?;
    let n = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `p` and `n` are NUL-terminated strings that outlive the call;
    // the kernel writes at most `buf.len()` bytes into `buf`, which we own.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return match Errno::last() {
            Errno::ENODATA => Ok(None),
            e => Err(e),
        };
    }
    buf.truncate(usize::try_from(r).map_err(|_| Errno::EINVAL)?);
    Ok(Some(buf))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions() {
        assert!(glibc_at_least("2.36", (2, 34)));
        assert!(glibc_at_least("2.34", (2, 34)));
        assert!(glibc_at_least("3.0", (2, 34)));
        assert!(!glibc_at_least("2.33", (2, 34)));
        assert!(!glibc_at_least("2.9", (2, 34)));
        assert!(!glibc_at_least("", (2, 34)));
        assert!(!glibc_at_least("two.36", (2, 34)));
        // This machine's (Debian 12: 2.36).
        #[cfg(target_env = "gnu")]
        assert!(raw_clone_is_safe());
    }
}
