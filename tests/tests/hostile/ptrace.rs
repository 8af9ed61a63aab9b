//! (h) A container with `--cap-add SYS_PTRACE` attaches to its PID 1 (rsup's
//! init, rsupd's binary that never execs) and makes it run a system call:
//! the call gets the init's privileges, so they must be no more than the
//! container's.
//!
//! The attacker is a handmade static x86_64 program (busybox has no ptrace
//! tool): `PTRACE_ATTACH` to pid 1, wait, `PTRACE_GETREGS`, point `rip` back
//! at the `syscall` instruction the init is blocked in (it waits in
//! `rt_sigtimedwait`) with `rax` = `finit_module(-1, NULL, 0)` and
//! `orig_rax` = -1 (no syscall restart), `PTRACE_SINGLESTEP` over it, read
//! the result, restore the registers and `PTRACE_DETACH`. It exits with the
//! errno the init got: EBADF (9) means the init passed the
//! `CAP_SYS_MODULE` check and no seccomp filter stopped it (the kernel looks
//! at the fd only after both; fd -1 loads nothing), EPERM (1) means it was
//! refused. 100+errno: the attach failed; 99: another ptrace step failed.
//!
//! Run with the default seccomp profile (the init's own filter refuses) and
//! `seccomp=unconfined` (then only the init's capabilities refuse).

use rsup_tests::{Daemon, TempDir, describe, static_x86_64_elf};

use super::common::in_throwaway_vm;

/// The attacker's code; `as` listing (Intel syntax), offsets in hex.
#[rustfmt::skip]
const ATTACK: [u8; 306] = [
    0x48, 0x81, 0xec, 0x00, 0x02, 0x00, 0x00, //  0 sub rsp, 0x200 (regs at rsp, saved at rsp+0x100)
    0xb8, 0x65, 0x00, 0x00, 0x00,             //  7 mov eax, 101 (ptrace)
    0xbf, 0x10, 0x00, 0x00, 0x00,             //  c mov edi, 16 (PTRACE_ATTACH)
    0xbe, 0x01, 0x00, 0x00, 0x00,             // 11 mov esi, 1 (pid 1)
    0x31, 0xd2,                               // 16 xor edx, edx
    0x45, 0x31, 0xd2,                         // 18 xor r10d, r10d
    0x0f, 0x05,                               // 1b syscall
    0x48, 0x85, 0xc0,                         // 1d test rax, rax
    0x0f, 0x88, 0xbd, 0x00, 0x00, 0x00,       // 20 js attach_failed (e3)
    0xe8, 0xd9, 0x00, 0x00, 0x00,             // 26 call wait_init (104)
    0xbf, 0x0c, 0x00, 0x00, 0x00,             // 2b mov edi, 12 (PTRACE_GETREGS)
    0x4c, 0x8d, 0x94, 0x24, 0x00, 0x01, 0x00, 0x00, // 30 lea r10, [rsp+0x100]
    0xe8, 0xb3, 0x00, 0x00, 0x00,             // 38 call trace (f0)
    0x48, 0x8d, 0xb4, 0x24, 0x00, 0x01, 0x00, 0x00, // 3d lea rsi, [rsp+0x100]
    0x48, 0x89, 0xe7,                         // 45 mov rdi, rsp
    0xb9, 0x1b, 0x00, 0x00, 0x00,             // 48 mov ecx, 27 (user_regs_struct)
    0xf3, 0x48, 0xa5,                         // 4d rep movsq
    0x48, 0xc7, 0x44, 0x24, 0x50, 0x39, 0x01, 0x00, 0x00, // 50 mov [rsp+0x50], 313 (rax: finit_module)
    0x48, 0xc7, 0x44, 0x24, 0x78, 0xff, 0xff, 0xff, 0xff, // 59 mov [rsp+0x78], -1 (orig_rax)
    0x48, 0xc7, 0x44, 0x24, 0x70, 0xff, 0xff, 0xff, 0xff, // 62 mov [rsp+0x70], -1 (rdi: fd)
    0x48, 0xc7, 0x44, 0x24, 0x68, 0x00, 0x00, 0x00, 0x00, // 6b mov [rsp+0x68], 0 (rsi)
    0x48, 0xc7, 0x44, 0x24, 0x60, 0x00, 0x00, 0x00, 0x00, // 74 mov [rsp+0x60], 0 (rdx)
    0x48, 0x83, 0xac, 0x24, 0x80, 0x00, 0x00, 0x00, 0x02, // 7d sub [rsp+0x80], 2 (rip)
    0xbf, 0x0d, 0x00, 0x00, 0x00,             // 86 mov edi, 13 (PTRACE_SETREGS)
    0x49, 0x89, 0xe2,                         // 8b mov r10, rsp
    0xe8, 0x5d, 0x00, 0x00, 0x00,             // 8e call trace
    0xbf, 0x09, 0x00, 0x00, 0x00,             // 93 mov edi, 9 (PTRACE_SINGLESTEP)
    0x45, 0x31, 0xd2,                         // 98 xor r10d, r10d
    0xe8, 0x50, 0x00, 0x00, 0x00,             // 9b call trace
    0xe8, 0x5f, 0x00, 0x00, 0x00,             // a0 call wait_init
    0xbf, 0x0c, 0x00, 0x00, 0x00,             // a5 mov edi, 12 (PTRACE_GETREGS)
    0x49, 0x89, 0xe2,                         // aa mov r10, rsp
    0xe8, 0x3e, 0x00, 0x00, 0x00,             // ad call trace
    0x4c, 0x8b, 0x64, 0x24, 0x50,             // b2 mov r12, [rsp+0x50] (the result)
    0xbf, 0x0d, 0x00, 0x00, 0x00,             // b7 mov edi, 13 (PTRACE_SETREGS)
    0x4c, 0x8d, 0x94, 0x24, 0x00, 0x01, 0x00, 0x00, // bc lea r10, [rsp+0x100] (restore)
    0xe8, 0x27, 0x00, 0x00, 0x00,             // c4 call trace
    0xbf, 0x11, 0x00, 0x00, 0x00,             // c9 mov edi, 17 (PTRACE_DETACH)
    0x45, 0x31, 0xd2,                         // ce xor r10d, r10d
    0xe8, 0x1a, 0x00, 0x00, 0x00,             // d1 call trace
    0x4c, 0x89, 0xe7,                         // d6 mov rdi, r12
    0x48, 0xf7, 0xdf,                         // d9 neg rdi (errno)
    0xb8, 0x3c, 0x00, 0x00, 0x00,             // dc mov eax, 60 (exit)
    0x0f, 0x05,                               // e1 syscall
    // attach_failed:
    0x48, 0xf7, 0xd8,                         // e3 neg rax
    0x8d, 0x78, 0x64,                         // e6 lea edi, [rax+100]
    0xb8, 0x3c, 0x00, 0x00, 0x00,             // e9 mov eax, 60
    0x0f, 0x05,                               // ee syscall
    // trace: ptrace(edi, 1, 0, r10), 99 on failure
    0xb8, 0x65, 0x00, 0x00, 0x00,             // f0 mov eax, 101
    0xbe, 0x01, 0x00, 0x00, 0x00,             // f5 mov esi, 1
    0x31, 0xd2,                               // fa xor edx, edx
    0x0f, 0x05,                               // fc syscall
    0x48, 0x85, 0xc0,                         // fe test rax, rax
    0x78, 0x23,                               // 101 js failed (126)
    0xc3,                                     // 103 ret
    // wait_init: wait4(1, status, __WALL, 0), 99 on failure
    0xb8, 0x3d, 0x00, 0x00, 0x00,             // 104 mov eax, 61
    0xbf, 0x01, 0x00, 0x00, 0x00,             // 109 mov edi, 1
    0x48, 0x8d, 0xb4, 0x24, 0xf0, 0x01, 0x00, 0x00, // 10e lea rsi, [rsp+0x1f0]
    0xba, 0x00, 0x00, 0x00, 0x40,             // 116 mov edx, 0x40000000 (__WALL)
    0x45, 0x31, 0xd2,                         // 11b xor r10d, r10d
    0x0f, 0x05,                               // 11e syscall
    0x48, 0x85, 0xc0,                         // 120 test rax, rax
    0x78, 0x01,                               // 123 js failed
    0xc3,                                     // 125 ret
    // failed:
    0xbf, 0x63, 0x00, 0x00, 0x00,             // 126 mov edi, 99
    0xb8, 0x3c, 0x00, 0x00, 0x00,             // 12b mov eax, 60
    0x0f, 0x05,                               // 130 syscall
];

#[tokio::test(flavor = "multi_thread")]
async fn a_ptraced_init_runs_nothing_with_more_than_the_containers_privileges() {
    if !in_throwaway_vm() {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: the attacker is an x86_64 program");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start().await;
    let dir = TempDir::new();
    let attack = dir.path().join("attack");
    std::fs::write(&attack, static_x86_64_elf(&ATTACK)).expect("write the attacker");
    std::fs::set_permissions(&attack, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let volume = format!("{}:/probe:ro", dir.path().display());
    let mut problems = Vec::new();
    for seccomp in ["seccomp=default", "seccomp=unconfined"] {
        let out = d.run(
            &[
                "--cap-add",
                "SYS_PTRACE",
                "--security-opt",
                seccomp,
                "-v",
                &volume,
            ],
            &["/probe/attack"],
        );
        match out.status.code() {
            Some(1) => {} // EPERM: refused
            Some(9) => problems.push(format!(
                "{seccomp}: the init ran finit_module past CAP_SYS_MODULE and seccomp (EBADF)"
            )),
            other => problems.push(format!(
                "{seccomp}: the attack did not get as far as the system call ({other:?}: \
                 100+errno attach, 99 another ptrace step):\n{}",
                describe(&out)
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
