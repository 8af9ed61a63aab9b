//! A resolved profile as one classic BPF program for seccomp(2).
//!
//! Layout: check the architecture (any other, and on x86_64 the x32 ABI,
//! is killed: the profile was resolved for the native call numbers only),
//! load the call number, then one compare per call that has rules: a call
//! whose only rule is unconditional returns its action at once, the others
//! jump to a block that tries their rules in order and returns the default
//! action when none matches. Calls with no rule fall through to the
//! default action.
//!
//! Several rules on one call: the most restrictive action among the
//! matching rules wins (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE >
//! LOG > ALLOW, the kernel's own order for stacked filters); between two
//! rules of the same action (two errnos), the one earlier in the profile.
//! So a call matched by an ALLOW rule and an ERRNO rule gets ERRNO.
//!
//! seccompiler's `SeccompFilter` has one match action per filter, and
//! stacking a filter per action would run every filter on every call and
//! need the `seccomp` call itself allowed between installs; one program
//! built here needs neither. seccompiler still provides the instruction
//! type and installs the program.

use std::collections::BTreeMap;

use seccompiler::sock_filter;

use super::profile::{Cond, Op, Resolved, Rule};

/// The kernel's limit on one program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A jump target inside one rule: so many instructions ahead, or the
/// next rule (patched once the rule's length is known).
#[derive(Clone, Copy)]
enum To {
    Ahead(u8),
    NextRule,
}

struct Insn {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

fn ld(offset: u32) -> Insn {
    Insn {
        code: BPF_LD_W_ABS,
        k: offset,
        jt: To::Ahead(0),
        jf: To::Ahead(0),
    }
}

fn and(mask: u32) -> Insn {
    Insn {
        code: BPF_AND_K,
        k: mask,
        jt: To::Ahead(0),
        jf: To::Ahead(0),
    }
}

fn j(code: u16, k: u32, jt: To, jf: To) -> Insn {
    Insn { code, k, jt, jf }
}

/// One 64-bit comparison as 32-bit halves (little-endian: the low half
/// first). Falls through when it holds, jumps to the next rule when not.
fn cond(c: &Cond) -> Vec<Insn> {
    use To::{Ahead, NextRule as Fail};
    let lo = ARGS + 8 * u32::from(c.index);
    let hi = lo + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (vhi, vlo) = split(c.value);
    let next = Ahead(0);
    match c.op {
        Op::Eq => vec![
            ld(hi),
            j(BPF_JEQ_K, vhi, next, Fail),
            ld(lo),
            j(BPF_JEQ_K, vlo, next, Fail),
        ],
        Op::Ne => vec![
            ld(hi),
            j(BPF_JEQ_K, vhi, next, Ahead(2)),
            ld(lo),
            j(BPF_JEQ_K, vlo, Fail, next),
        ],
        Op::MaskedEq => {
            let (mhi, mlo) = (vhi, vlo);
            let (whi, wlo) = split(c.value_two);
            vec![
                ld(hi),
                and(mhi),
                j(BPF_JEQ_K, whi, next, Fail),
                ld(lo),
                and(mlo),
                j(BPF_JEQ_K, wlo, next, Fail),
            ]
        }
        // hi > vhi: holds; hi < vhi: fails; equal: compare the low halves.
        Op::Gt | Op::Ge => vec![
            ld(hi),
            j(BPF_JGT_K, vhi, Ahead(3), next),
            j(BPF_JEQ_K, vhi, next, Fail),
            ld(lo),
            j(
                if c.op == Op::Gt { BPF_JGT_K } else { BPF_JGE_K },
                vlo,
                next,
                Fail,
            ),
        ],
        // The negations of Ge and Gt.
        Op::Lt | Op::Le => vec![
            ld(hi),
            j(BPF_JGT_K, vhi, Fail, next),
            j(BPF_JEQ_K, vhi, next, Ahead(2)),
            ld(lo),
            j(
                if c.op == Op::Lt { BPF_JGE_K } else { BPF_JGT_K },
                vlo,
                Fail,
                next,
            ),
        ],
    }
}

/// A rule's conditions and its return, with its jumps resolved.
fn rule(r: &Rule) -> Result<Vec<sock_filter>, String> {
    let mut insns: Vec<Insn> = r.conds.iter().flat_map(cond).collect();
    insns.push(Insn {
        code: BPF_RET_K,
        k: r.action.ret(),
        jt: To::Ahead(0),
        jf: To::Ahead(0),
    });
    let len = insns.len();
    let resolve = |to: To, at: usize| -> Result<u8, String> {
        match to {
            To::Ahead(n) => Ok(n),
            To::NextRule => u8::try_from(len - at - 1)
                .map_err(|_| format!("a rule with {} conditions is too long", r.conds.len())),
        }
    };
    insns
        .iter()
        .enumerate()
        .map(|(at, i)| Ok(jump(i.code, i.k, resolve(i.jt, at)?, resolve(i.jf, at)?)))
        .collect()
}

/// Compiles `profile` for the architecture with `audit_arch`.
pub fn compile(profile: &Resolved, audit_arch: u32) -> Result<Vec<sock_filter>, String> {
    // Rules by call, most restrictive first, then in profile order; an
    // unconditional rule ends the list (nothing after it can match).
    let mut by_nr: BTreeMap<i64, Vec<&Rule>> = BTreeMap::new();
    for r in &profile.rules {
        by_nr.entry(r.nr).or_default().push(r);
    }
    for rules in by_nr.values_mut() {
        rules.sort_by_key(|r| (r.action.precedence(), r.order));
        if let Some(i) = rules.iter().position(|r| r.conds.is_empty()) {
            rules.truncate(i + 1);
        }
    }
    let default = stmt(BPF_RET_K, profile.default.ret());

    let mut prog = vec![
        stmt(BPF_LD_W_ABS, ARCH),
        jump(BPF_JEQ_K, audit_arch, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR),
    ];
    if audit_arch == AUDIT_ARCH_X86_64 {
        prog.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS));
    }
    // The blocks of the calls with conditions, placed after the dispatch.
    let mut blocks: Vec<(usize, Vec<sock_filter>)> = Vec::new();
    let mut dispatch: Vec<(u32, Option<u32>)> = Vec::new();
    for (nr, rules) in &by_nr {
        let nr = u32::try_from(*nr).map_err(|_| format!("system call number {nr}"))?;
        if rules.len() == 1 && rules[0].conds.is_empty() {
            dispatch.push((nr, Some(rules[0].action.ret())));
            continue;
        }
        let mut block = Vec::new();
        for r in rules {
            block.extend(rule(r)?);
        }
        if rules.last().is_some_and(|r| !r.conds.is_empty()) {
            block.push(default.clone());
        }
        dispatch.push((nr, None));
        blocks.push((dispatch.len() - 1, block));
    }
    // Each dispatch entry is two instructions: the compare, then a return
    // or a jump; then the default return; then the blocks.
    let dispatch_start = prog.len();
    let blocks_start = dispatch_start + 2 * dispatch.len() + 1;
    let mut block_at = BTreeMap::new();
    let mut at = blocks_start;
    for (entry, block) in &blocks {
        block_at.insert(*entry, at);
        at += block.len();
    }
    for (entry, (nr, ret)) in dispatch.iter().enumerate() {
        prog.push(jump(BPF_JEQ_K, *nr, 0, 1));
        match ret {
            Some(ret) => prog.push(stmt(BPF_RET_K, *ret)),
            None => {
                let target = block_at.get(&entry).copied().unwrap_or(blocks_start);
                let from = prog.len() + 1;
                prog.push(stmt(BPF_JA, (target - from) as u32));
            }
        }
    }
    prog.push(default);
    for (_, block) in blocks {
        prog.extend(block);
    }
    if prog.len() > MAX_INSNS {
        return Err(format!(
            "the profile compiles to {} BPF instructions, over the kernel's limit of {MAX_INSNS}",
            prog.len()
        ));
    }
    Ok(prog)
}

/// The audit architecture value of `arch`.
pub fn audit_arch(arch: super::profile::Arch) -> u32 {
    match arch {
        super::profile::Arch::X86_64 => AUDIT_ARCH_X86_64,
        super::profile::Arch::Aarch64 => AUDIT_ARCH_AARCH64,
    }
}

/// Runs a program the way the kernel would, for tests: the return value
/// for a call `nr` with `args` on `arch`.
#[cfg(test)]
pub fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |offset: u32| -> u32 {
        match offset {
            NR => nr,
            ARCH => arch,
            o if (ARGS..ARGS + 48).contains(&o) => {
                let i = ((o - ARGS) / 8) as usize;
                if (o - ARGS).is_multiple_of(8) {
                    args[i] as u32
                } else {
                    (args[i] >> 32) as u32
                }
            }
            o => panic!("load of offset {o}"),
        }
    };
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = &prog[pc];
        pc += 1;
        let skip = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            BPF_LD_W_ABS => a = word(i.k),
            BPF_AND_K => a &= i.k,
            BPF_JA => pc += i.k as usize,
            BPF_JEQ_K => pc += skip(a == i.k),
            BPF_JGT_K => pc += skip(a > i.k),
            BPF_JGE_K => pc += skip(a >= i.k),
            BPF_RET_K => return i.k,
            code => panic!("instruction {code:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile::{Arch, Profile};
    use super::*;

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn build(json: &str) -> (Vec<sock_filter>, u32) {
        let arch = Arch::X86_64;
        let r = Profile::parse(json)
            .expect("parse")
            .resolve(&Default::default(), arch, None)
            .expect("resolve");
        (
            compile(&r, audit_arch(arch)).expect("compile"),
            audit_arch(arch),
        )
    }

    fn nr(name: &str) -> u32 {
        Arch::X86_64.syscall_nr(name).expect(name) as u32
    }

    #[test]
    fn every_comparison_on_64_bits() {
        let big = 0x1_0000_0005u64;
        let ops = ["NE", "LT", "LE", "EQ", "GE", "GT"];
        for op in ops {
            let json = format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ERRNO",
                   "args":[{{"index":2,"value":{big},"op":"SCMP_CMP_{op}"}}]}}]}}"#
            );
            let (prog, arch) = build(&json);
            for v in [
                0,
                5,
                big - 1,
                big,
                big + 1,
                0x2_0000_0000,
                0x0_ffff_ffff,
                u64::MAX,
            ] {
                let want = match op {
                    "NE" => v != big,
                    "LT" => v < big,
                    "LE" => v <= big,
                    "EQ" => v == big,
                    "GE" => v >= big,
                    _ => v > big,
                };
                let got = run(&prog, arch, nr("read"), [0, 0, v, 0, 0, 0]);
                assert_eq!(got == EPERM, want, "{op} {v:#x}: {got:#x}");
                // Another argument is not looked at.
                let other = run(&prog, arch, nr("read"), [v, v, big, v, v, v]);
                assert_eq!(other == EPERM, matches!(op, "LE" | "EQ" | "GE"), "{op}");
            }
            assert_eq!(run(&prog, arch, nr("write"), [0; 6]), ALLOW);
        }
    }

    #[test]
    fn masked_eq_and_conjunctions() {
        let (prog, arch) = build(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["socket"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"},{"index":1,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let clone = |flags: u64| run(&prog, arch, nr("clone"), [flags, 0, 0, 0, 0, 0]);
        assert_eq!(clone(0x0001_1200 | libc::SIGCHLD as u64), ALLOW);
        assert_eq!(clone(libc::CLONE_NEWUSER as u64), EPERM);
        assert_eq!(clone(libc::CLONE_NEWNS as u64 | 0x100), EPERM);
        let socket = |a: u64, b: u64| run(&prog, arch, nr("socket"), [a, b, 0, 0, 0, 0]);
        assert_eq!(socket(2, 1), ALLOW);
        assert_eq!(socket(2, 2), EPERM);
        assert_eq!(socket(10, 1), EPERM);
    }

    #[test]
    fn most_restrictive_rule_wins() {
        let (prog, arch) = build(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ALLOW"},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["socket"],"action":"SCMP_ACT_ALLOW"},
                {"names":["socket"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":0,"value":40,"op":"SCMP_CMP_EQ"}]},
                {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":10,"op":"SCMP_CMP_EQ"}]},
                {"names":["getpid"],"action":"SCMP_ACT_LOG"},
                {"names":["gettid"],"action":"SCMP_ACT_TRAP"}]}"#,
        );
        assert_eq!(
            run(&prog, arch, nr("mkdir"), [0; 6]),
            libc::SECCOMP_RET_ERRNO | 13,
            "ERRNO beats ALLOW; the first errno in the profile wins"
        );
        let socket = |a: u64| run(&prog, arch, nr("socket"), [a, 0, 0, 0, 0, 0]);
        assert_eq!(socket(40), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(socket(10), EPERM);
        assert_eq!(socket(2), ALLOW);
        assert_eq!(
            run(&prog, arch, nr("getpid"), [0; 6]),
            libc::SECCOMP_RET_LOG
        );
        assert_eq!(
            run(&prog, arch, nr("gettid"), [0; 6]),
            libc::SECCOMP_RET_TRAP
        );
        assert_eq!(run(&prog, arch, nr("read"), [0; 6]), ALLOW);
        // Another architecture or the x32 ABI: killed.
        assert_eq!(
            run(&prog, AUDIT_ARCH_AARCH64, nr("read"), [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            run(&prog, arch, X32_SYSCALL_BIT | nr("read"), [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn too_long_is_refused() {
        let args: Vec<String> = (0..32)
            .map(|i| {
                format!(
                    r#"{{"index":{},"value":{i},"op":"SCMP_CMP_MASKED_EQ"}}"#,
                    i % 6
                )
            })
            .collect();
        let entry = format!(
            r#"{{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{}]}}"#,
            args.join(",")
        );
        let entries: Vec<String> = (0..30).map(|_| entry.clone()).collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
            entries.join(",")
        );
        let r = Profile::parse(&json)
            .expect("parse")
            .resolve(&Default::default(), Arch::X86_64, None)
            .expect("resolve");
        let e = compile(&r, AUDIT_ARCH_X86_64).expect_err("too long");
        assert!(e.contains("over the kernel's limit"), "{e}");
    }
}
