//! rsup's default seccomp profile: an allow-list in the spirit of Docker's.
//!
//! Every call not listed fails with EPERM. The list is the system calls an
//! ordinary program needs (files, memory, processes, signals, time,
//! sockets, IPC), written from the kernel's call table. What reaches into
//! the kernel's or other processes' state is allowed only to a container
//! holding the capability the kernel checks for it anyway (mount and
//! namespaces with CAP_SYS_ADMIN, ptrace with CAP_SYS_PTRACE, modules,
//! reboot, clock setting, ...), so the filter narrows the attack surface
//! without taking away what a capability grants. Never allowed: the kernel
//! keyring (add_key, keyctl, request_key), kexec, io_uring, and obsolete
//! calls (uselib, _sysctl, ustat, ...).
//!
//! Restricted by argument: `clone` without CLONE_NEW* flags unless
//! CAP_SYS_ADMIN; `clone3` fails with ENOSYS (its flags sit in memory a
//! filter cannot read) so libc falls back to `clone`; `personality` only
//! with the harmless personas; `socket` anything but AF_VSOCK.
//!
//! Built as a [`Profile`] value so it goes through the same resolution and
//! compiler as a user's profile, and can be printed in Docker's format.

use super::profile::{ActionName, Arg, Filter, Op, Profile, Syscall};

/// Allowed to every container.
#[rustfmt::skip]
pub(super) const BASE: &[&str] = &[
    // files and directories
    "access", "chdir", "chmod", "chown", "close", "close_range", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir",
    "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync", "flock",
    "fstat", "fstatfs", "fsync", "ftruncate", "futimesat", "getcwd", "getdents", "getdents64",
    "ioctl", "lchown", "link", "linkat", "lseek", "lstat", "mkdir", "mkdirat", "mknod",
    "mknodat", "name_to_handle_at", "newfstatat", "open", "openat", "openat2", "pread64",
    "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir", "sendfile", "splice",
    "stat", "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "tee", "truncate", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimes",
    "vmsplice", "write", "writev",
    // extended attributes
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
    "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
    "removexattr", "removexattrat", "setxattr", "setxattrat",
    // file notification and polling
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "eventfd", "eventfd2", "fanotify_mark", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "pipe", "pipe2", "poll", "ppoll",
    "pselect6", "select", "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime",
    "timerfd_settime",
    // asynchronous I/O (not io_uring)
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_setup", "io_submit",
    "ioprio_get", "ioprio_set",
    // memory
    "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mremap",
    "mseal", "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "remap_file_pages",
    // processes and identity
    "arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork",
    "get_robust_list", "get_thread_area", "getcpu", "getegid", "geteuid", "getgid",
    "getgroups", "getitimer", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresuid", "getrlimit", "getrusage", "getsid", "gettid",
    "getuid", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease", "rseq",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
    "sched_yield", "seccomp", "set_robust_list", "set_thread_area", "set_tid_address",
    "setfsgid", "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority",
    "setregid", "setresgid", "setresuid", "setreuid", "setrlimit", "setsid", "setuid",
    "sysinfo", "times", "uname", "vfork", "wait4", "waitid",
    // signals
    "kill", "pause", "restart_syscall", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_tgsigqueueinfo", "sigaltstack", "tgkill", "tkill",
    // futexes and time (reading clocks; setting them needs CAP_SYS_TIME)
    "adjtimex", "alarm", "clock_getres", "clock_gettime", "clock_nanosleep", "futex",
    "futex_requeue", "futex_wait", "futex_waitv", "futex_wake", "gettimeofday", "nanosleep",
    "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_settime",
    // sockets (socket itself below)
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
    "listen", "recvfrom", "recvmmsg", "recvmsg", "sendmmsg", "sendmsg", "sendto",
    "setsockopt", "shutdown", "socketpair",
    // System V and POSIX IPC (in the container's IPC namespace)
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
    "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "shmat", "shmctl", "shmdt", "shmget",
];

/// Allowed with a capability (the one the kernel checks for the call).
#[rustfmt::skip]
const BY_CAP: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
            "perf_event_open", "pivot_root", "quotactl", "quotactl_fd", "setdomainname",
            "sethostname", "setns", "swapoff", "swapon", "umount2", "unshare",
        ],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
            "ptrace", "userfaultfd",
        ],
    ),
    ("CAP_SYS_MODULE", &["delete_module", "finit_module", "init_module"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_TIME", &["clock_adjtime", "clock_settime", "settimeofday"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy", "mbind", "migrate_pages", "move_pages", "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET (CLONE_NEWTIME shares its
/// bit with the exit signal in clone's flags; it only works in unshare and
/// clone3, both refused without CAP_SYS_ADMIN).
pub const CLONE_NAMESPACES: u64 = 0x7E02_0000;

/// PER_LINUX (0), PER_LINUX32 (8), UNAME26 (0x20000), the last two
/// together, and the query 0xffffffff.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const AF_VSOCK: u64 = 40;

fn entry(names: &[&str], action: ActionName) -> Syscall {
    Syscall {
        name: String::new(),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        action,
        errno_ret: None,
        args: Vec::new(),
        comment: String::new(),
        includes: Filter::default(),
        excludes: Filter::default(),
    }
}

fn arg(index: u32, op: Op, value: u64, value_two: u64) -> Arg {
    Arg {
        index,
        value,
        value_two,
        op,
    }
}

fn caps(names: &[&str]) -> Filter {
    Filter {
        caps: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Filter::default()
    }
}

/// The profile, for any container (resolution picks the groups its
/// capabilities allow).
pub fn profile() -> Profile {
    let mut syscalls = vec![entry(BASE, ActionName::Allow)];
    syscalls.push(Syscall {
        args: vec![arg(0, Op::Ne, AF_VSOCK, 0)],
        comment: "sockets of any family but AF_VSOCK (the host's hypervisor)".into(),
        ..entry(&["socket"], ActionName::Allow)
    });
    syscalls.extend(PERSONAS.iter().map(|p| Syscall {
        args: vec![arg(0, Op::Eq, *p, 0)],
        ..entry(&["personality"], ActionName::Allow)
    }));
    syscalls.push(Syscall {
        args: vec![arg(0, Op::MaskedEq, CLONE_NAMESPACES, 0)],
        comment: "threads and processes, no new namespaces".into(),
        excludes: caps(&["CAP_SYS_ADMIN"]),
        ..entry(&["clone"], ActionName::Allow)
    });
    syscalls.push(Syscall {
        includes: caps(&["CAP_SYS_ADMIN"]),
        ..entry(&["clone"], ActionName::Allow)
    });
    syscalls.push(Syscall {
        errno_ret: Some(libc::ENOSYS as u32),
        comment: "ENOSYS: libc falls back to clone, whose flags the filter can see".into(),
        excludes: caps(&["CAP_SYS_ADMIN"]),
        ..entry(&["clone3"], ActionName::Errno)
    });
    for (cap, names) in BY_CAP {
        syscalls.push(Syscall {
            includes: caps(&[cap]),
            ..entry(names, ActionName::Allow)
        });
    }
    Profile {
        default_action: ActionName::Errno,
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: Vec::new(),
        arch_map: Vec::new(),
        flags: Vec::new(),
        listener_path: String::new(),
        listener_metadata: String::new(),
        syscalls,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use caps::Capability;

    use super::super::bpf::{audit_arch, compile, run};
    use super::super::profile::{Arch, is_syscall_name};
    use super::*;
    use crate::security::DEFAULT_CAPS;

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    /// Evaluates the compiled default profile for `caps` on x86_64.
    struct Compiled(Vec<seccompiler::sock_filter>);

    impl Compiled {
        fn new(caps: &[Capability]) -> Compiled {
            let set: HashSet<Capability> = caps.iter().copied().collect();
            let r = profile()
                .resolve(&set, Arch::X86_64, Some((6, 1)))
                .expect("resolve");
            Compiled(compile(&r, audit_arch(Arch::X86_64)).expect("compile"))
        }
        fn call(&self, name: &str, args: [u64; 6]) -> u32 {
            let nr = Arch::X86_64.syscall_nr(name).expect(name) as u32;
            run(&self.0, audit_arch(Arch::X86_64), nr, args)
        }
    }

    #[test]
    fn lists_are_sane() {
        let mut seen = HashSet::new();
        for n in BASE {
            assert!(is_syscall_name(n), "{n}");
            assert!(seen.insert(*n), "{n} twice in BASE");
            assert!(
                Arch::X86_64.syscall_nr(n).is_some(),
                "{n} is not an x86_64 call"
            );
        }
        assert!(BASE.len() > 250, "{} calls", BASE.len());
        for (cap, names) in BY_CAP {
            assert!(cap.parse::<Capability>().is_ok(), "{cap}");
            for n in *names {
                assert!(!BASE.contains(n), "{n} is in BASE and under {cap}");
                assert!(Arch::X86_64.syscall_nr(n).is_some(), "{n}");
            }
        }
        for never in [
            "add_key",
            "keyctl",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "io_uring_setup",
            "io_uring_enter",
            "uselib",
            "_sysctl",
            "ustat",
            "create_module",
        ] {
            assert!(!BASE.contains(&never), "{never}");
            assert!(!BY_CAP.iter().any(|(_, n)| n.contains(&never)), "{never}");
        }
        // In Docker's format and back.
        let json = serde_json::to_string(&profile()).expect("serialize");
        assert_eq!(Profile::parse(&json).expect("parse"), profile());
    }

    #[test]
    fn default_container() {
        let p = Compiled::new(&DEFAULT_CAPS);
        for name in [
            "read",
            "write",
            "openat",
            "mkdir",
            "execve",
            "exit_group",
            "wait4",
            "connect",
            "sendto",
            "nanosleep",
            "chroot",
            "rt_sigreturn",
            "getdents64",
            "statx",
        ] {
            assert_eq!(p.call(name, [0; 6]), ALLOW, "{name}");
        }
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "kexec_load",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "init_module",
            "reboot",
            "clock_settime",
            "settimeofday",
            "swapon",
            "pivot_root",
            "open_by_handle_at",
            "io_uring_setup",
            "syslog",
            "iopl",
            "perf_event_open",
            "userfaultfd",
            "acct",
        ] {
            assert_eq!(p.call(name, [0; 6]), EPERM, "{name}");
        }
        assert_eq!(p.call("clone3", [0; 6]), ENOSYS);
        // fork / pthread_create flags pass, namespaces do not.
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(p.call("clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            p.call("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = ns as u64 | libc::SIGCHLD as u64;
            assert_eq!(p.call("clone", [flags, 0, 0, 0, 0, 0]), EPERM, "{ns:#x}");
        }
        assert_eq!(p.call("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(p.call("personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            p.call("socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            p.call("socket", [libc::AF_NETLINK as u64, 3, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(p.call("socket", [AF_VSOCK, 1, 0, 0, 0, 0]), EPERM);
        assert!(p.0.len() < 1024, "{} instructions", p.0.len());
    }

    #[test]
    fn capabilities_open_their_groups() {
        let admin = Compiled::new(&[Capability::CAP_SYS_ADMIN]);
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "clone3",
            "sethostname",
        ] {
            assert_eq!(admin.call(name, [0; 6]), ALLOW, "{name}");
        }
        let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(admin.call("clone", [flags, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(admin.call("ptrace", [0; 6]), EPERM);
        assert_eq!(admin.call("keyctl", [0; 6]), EPERM);

        let tracer = Compiled::new(&[Capability::CAP_SYS_PTRACE]);
        assert_eq!(tracer.call("ptrace", [0; 6]), ALLOW);
        assert_eq!(tracer.call("process_vm_writev", [0; 6]), ALLOW);
        assert_eq!(tracer.call("mount", [0; 6]), EPERM);
        assert_eq!(
            Compiled::new(&[Capability::CAP_BPF]).call("bpf", [0; 6]),
            ALLOW
        );
        assert_eq!(
            Compiled::new(&[Capability::CAP_SYS_BOOT]).call("reboot", [0; 6]),
            ALLOW
        );
        assert_eq!(
            Compiled::new(&[Capability::CAP_SYS_BOOT]).call("kexec_load", [0; 6]),
            EPERM
        );
        let time = Compiled::new(&[Capability::CAP_SYS_TIME]);
        assert_eq!(time.call("clock_settime", [0; 6]), ALLOW);
        assert_eq!(time.call("settimeofday", [0; 6]), ALLOW);
        // --cap-drop ALL: still a working process, no chroot.
        let none = Compiled::new(&[]);
        assert_eq!(none.call("execve", [0; 6]), ALLOW);
        assert_eq!(none.call("chroot", [0; 6]), EPERM);
    }
}
