//! `bpf(2)`, for cgroup device programs (eBPF; seccomp's classic BPF is
//! built in `crate::seccomp`).
//!
//! Just what a cgroup device filter needs: load a program, attach it to a
//! cgroup directory, list and detach the programs there. Each command gets its
//! own `repr(C)` image of its part of `union bpf_attr` (linux/bpf.h), with
//! explicit padding so that every byte the kernel reads is initialised (it
//! refuses non-zero bytes past the fields a command uses), and passes its own
//! size (the kernel accepts a shorter attr and treats the rest as zero).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE`, the attach type of device programs.
pub const BPF_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`: programs of descendants and ancestors all run.
pub const BPF_F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction, laid out as `struct bpf_insn` on a little-endian
/// machine: `regs` holds dst_reg in its low and src_reg in its high nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    /// The 8 bytes the kernel reads.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; the result (an fd or 0) or the errno.
///
/// # Safety
/// `attr` must be the attr image of `cmd`, and every pointer in it valid
/// for what `cmd` does with it (read or written) for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> nix::Result<libc::c_long> {
    // SAFETY: the caller vouches for the attr and the pointers in it; the
    // size passed is exactly the memory behind `attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

fn owned_fd(r: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = RawFd::try_from(r).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this new fd to us and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| Errno::EBADF)
}

/// A program the kernel refused: the errno and, on a verifier failure, the
/// verifier's log.
#[derive(Debug)]
pub struct BpfLoadError {
    pub errno: Errno,
    pub log: String,
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program named `name` (at most 15
/// bytes) under `license`. When the kernel refuses it, loads it again with
/// the verifier's log on, to return why.
pub fn bpf_load_device_program(
    insns: &[BpfInsn],
    license: &std::ffi::CStr,
    name: &str,
) -> Result<OwnedFd, BpfLoadError> {
    let fail = |errno| BpfLoadError {
        errno,
        log: String::new(),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| fail(Errno::E2BIG))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    for (dst, src) in attr.prog_name.iter_mut().take(15).zip(name.bytes()) {
        *dst = src;
    }
    // SAFETY: `insns` (insn_cnt instructions of the kernel's layout) and the
    // NUL-terminated `license` are only read, and live across the call; no
    // log buffer is given.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => owned_fd(fd).map_err(fail),
        Err(errno) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = u32::try_from(log.len()).unwrap_or(0);
            attr.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above, plus a writable log buffer of log_size bytes
            // that lives across the call.
            let again = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
            if let Ok(fd) = again {
                // Refused once, accepted with a log: keep it.
                return owned_fd(fd).map_err(fail);
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(BpfLoadError {
                errno,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            })
        }
    }
}

/// Attaches `prog` to the cgroup directory `cgroup` (`BPF_PROG_ATTACH`).
pub fn bpf_prog_attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> nix::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: fd_u32(cgroup)?,
        attach_bpf_fd: fd_u32(prog)?,
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
    };
    // SAFETY: the attr holds integers only.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// Detaches `prog` from the cgroup directory `cgroup` (`BPF_PROG_DETACH`).
pub fn bpf_prog_detach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> nix::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: fd_u32(cgroup)?,
        attach_bpf_fd: fd_u32(prog)?,
        attach_type,
        ..Default::default()
    };
    // SAFETY: the attr holds integers only.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// Ids of the programs attached directly to the cgroup directory `cgroup`
/// (not those inherited from ancestors) for `attach_type`.
pub fn bpf_prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> nix::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = ProgQueryAttr {
            target_fd: fd_u32(cgroup)?,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).map_err(|_| Errno::E2BIG)?,
            ..Default::default()
        };
        // SAFETY: prog_ids points to prog_cnt writable u32s that live across
        // the call; the kernel writes at most that many and sets prog_cnt.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(usize::try_from(attr.prog_cnt).unwrap_or(0));
                return Ok(ids);
            }
            // More than fit: the kernel said how many there are.
            Err(Errno::ENOSPC) if (attr.prog_cnt as usize) > ids.len() => {
                ids = vec![0u32; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

/// An fd for the loaded program with id `id` (`BPF_PROG_GET_FD_BY_ID`).
pub fn bpf_prog_get_fd_by_id(id: u32) -> nix::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: the attr holds integers only.
    owned_fd(unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?)
}
