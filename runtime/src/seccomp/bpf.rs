//! A resolved profile as one classic BPF program for seccomp(2).
//!
//! Layout: check the architecture (any other, and on x86_64 the x32 ABI,
//! is killed: the profile was resolved for the native call numbers only),
//! load the call number, then a binary search over ranges of call numbers
//! (as libseccomp does): a range of calls whose only rules are
//! unconditional and give the same return (calls without rules give the
//! default action) returns it at once; a call with conditions leads to its
//! block, which tries its rules in order and returns the default action
//! when none matches.
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

/// What a range of call numbers leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    /// This return value, at once.
    Ret(u32),
    /// The block of rules with this index.
    Block(usize),
}

/// Every call number from 0 up, as ranges that lead to one leaf each:
/// `(first number, leaf)`, sorted, each range ending where the next one
/// starts, the last one at `u32::MAX`. Numbers without rules get the
/// default return; neighbours with the same return are one range, so
/// Docker's profile (a few hundred calls, most of them allowed, in long
/// runs of neighbouring numbers) becomes a few dozen ranges. `calls` is
/// sorted by number, each number once.
fn intervals(calls: &[(u32, Leaf)], default: u32) -> Vec<(u32, Leaf)> {
    let mut out: Vec<(u32, Leaf)> = Vec::new();
    let mut push = |from: u32, leaf: Leaf| match out.last() {
        Some(&(_, Leaf::Ret(k))) if leaf == Leaf::Ret(k) => {}
        _ => out.push((from, leaf)),
    };
    let mut next = 0u32;
    for &(nr, leaf) in calls {
        if nr > next {
            push(next, Leaf::Ret(default));
        }
        push(nr, leaf);
        next = nr.saturating_add(1);
    }
    if calls.last().is_none_or(|&(nr, _)| nr < u32::MAX) {
        push(next, Leaf::Ret(default));
    }
    out
}

/// A binary search over the ranges (as libseccomp builds it): a call
/// passes about log2(ranges) compares instead of one per call with rules
/// ahead of it, and the program is a fraction of the size, which is what
/// the kernel spends its time on when it installs (and JIT-compiles) it.
/// Every jump goes forward; a jump past a left half longer than a
/// conditional jump reaches (255) goes through an unconditional one.
fn tree(ranges: &[(u32, Leaf)], blocks: &[Vec<sock_filter>]) -> Vec<sock_filter> {
    match ranges {
        [] => Vec::new(),
        [(_, Leaf::Ret(k))] => vec![stmt(BPF_RET_K, *k)],
        [(_, Leaf::Block(i))] => blocks[*i].clone(),
        _ => {
            let mid = ranges.len() / 2;
            let (left, right) = (tree(&ranges[..mid], blocks), tree(&ranges[mid..], blocks));
            let split = ranges[mid].0;
            let mut out = Vec::with_capacity(left.len() + right.len() + 2);
            match u8::try_from(left.len()) {
                // A >= split: over the left half to the right one.
                Ok(n) => out.push(jump(BPF_JGE_K, split, n, 0)),
                Err(_) => {
                    out.push(jump(BPF_JGE_K, split, 0, 1));
                    out.push(stmt(BPF_JA, left.len() as u32));
                }
            }
            out.extend(left);
            out.extend(right);
            out
        }
    }
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
    // What each call number gets: a return, or the block of its rules
    // (conditions, tried in order, then the default action).
    let mut blocks: Vec<Vec<sock_filter>> = Vec::new();
    let mut outcomes: Vec<(u32, Leaf)> = Vec::new();
    for (nr, rules) in &by_nr {
        let nr = u32::try_from(*nr).map_err(|_| format!("system call number {nr}"))?;
        if rules.len() == 1 && rules[0].conds.is_empty() {
            outcomes.push((nr, Leaf::Ret(rules[0].action.ret())));
            continue;
        }
        let mut block = Vec::new();
        for r in rules {
            block.extend(rule(r)?);
        }
        if rules.last().is_some_and(|r| !r.conds.is_empty()) {
            block.push(stmt(BPF_RET_K, profile.default.ret()));
        }
        outcomes.push((nr, Leaf::Block(blocks.len())));
        blocks.push(block);
    }
    prog.extend(tree(&intervals(&outcomes, profile.default.ret()), &blocks));
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
    run_counted(prog, arch, nr, args).0
}

/// [`run`], and how many instructions the call passed.
#[cfg(test)]
fn run_counted(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
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
    let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
    loop {
        let i = &prog[pc];
        pc += 1;
        steps += 1;
        let skip = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            BPF_LD_W_ABS => a = word(i.k),
            BPF_AND_K => a &= i.k,
            BPF_JA => pc += i.k as usize,
            BPF_JEQ_K => pc += skip(a == i.k),
            BPF_JGT_K => pc += skip(a > i.k),
            BPF_JGE_K => pc += skip(a >= i.k),
            BPF_RET_K => return (i.k, steps),
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

    /// What the kernel should return for `nr` with `args` under `r`, from
    /// the rules themselves: the most restrictive matching rule (the first
    /// in the profile among equals), else the default.
    fn reference(r: &Resolved, nr: u32, args: [u64; 6]) -> u32 {
        let holds = |c: &Cond| {
            let a = args[usize::from(c.index)];
            match c.op {
                Op::Eq => a == c.value,
                Op::Ne => a != c.value,
                Op::MaskedEq => a & c.value == c.value_two,
                Op::Gt => a > c.value,
                Op::Ge => a >= c.value,
                Op::Lt => a < c.value,
                Op::Le => a <= c.value,
            }
        };
        r.rules
            .iter()
            .filter(|rule| rule.nr == i64::from(nr) && rule.conds.iter().all(holds))
            .min_by_key(|rule| (rule.action.precedence(), rule.order))
            .map_or(r.default.ret(), |rule| rule.action.ret())
    }

    /// Argument vectors around every value the rules of `nr` compare with.
    fn probes(r: &Resolved, nr: u32) -> Vec<[u64; 6]> {
        let mut out = vec![[0; 6], [u64::MAX; 6]];
        for rule in r.rules.iter().filter(|rule| rule.nr == i64::from(nr)) {
            let mut all = [0u64; 6];
            for c in &rule.conds {
                for v in [
                    c.value,
                    c.value_two,
                    c.value.wrapping_add(1),
                    c.value.wrapping_sub(1),
                ] {
                    let mut one = [0u64; 6];
                    one[usize::from(c.index)] = v;
                    out.push(one);
                }
                // A value that satisfies the condition.
                all[usize::from(c.index)] = match c.op {
                    Op::Eq | Op::Ge | Op::Le => c.value,
                    Op::Ne | Op::Gt => c.value.wrapping_add(1),
                    Op::Lt => c.value.wrapping_sub(1),
                    Op::MaskedEq => c.value_two,
                };
            }
            out.push(all);
        }
        out
    }

    /// Checks the program of `r` against its rules for every call number
    /// up to 1100, the largest ones and the x32 ABI; returns the most
    /// instructions a call passed.
    fn check_against_rules(r: &Resolved) -> usize {
        let arch = AUDIT_ARCH_X86_64;
        let prog = compile(r, arch).expect("compile");
        let mut most = 0;
        let numbers = (0..1100).chain([X32_SYSCALL_BIT - 2, X32_SYSCALL_BIT - 1]);
        for nr in numbers {
            for args in probes(r, nr) {
                let (got, steps) = run_counted(&prog, arch, nr, args);
                assert_eq!(got, reference(r, nr, args), "call {nr} with {args:x?}");
                most = most.max(steps);
            }
        }
        assert_eq!(
            run(&prog, arch, X32_SYSCALL_BIT | 1, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        most
    }

    #[test]
    fn docker_profile_as_a_search_tree() {
        use crate::seccomp::default;
        use crate::security::DEFAULT_CAPS;
        let all: std::collections::HashSet<_> = caps::all();
        let some: std::collections::HashSet<_> = DEFAULT_CAPS.iter().copied().collect();
        for caps in [Default::default(), some, all] {
            let r = default::profile()
                .resolve(&caps, Arch::X86_64, Some((6, 1)))
                .expect("resolve");
            let prog = compile(&r, AUDIT_ARCH_X86_64).expect("compile");
            let most = check_against_rules(&r);
            // The linear layout before took two instructions per call with
            // rules (647 with the default capabilities) and passed hundreds for a call
            // near the end; the tree is a quarter of that and passes a
            // handful plus the conditions of the call's own rules.
            assert!(prog.len() < 300, "{} instructions", prog.len());
            assert!(most < 40, "a call passed {most} instructions");
        }
    }

    /// A profile that allows every call but those of `entries` (syscall
    /// entries in Docker's JSON), resolved for x86_64 without capabilities.
    fn allow_but(entries: &[String]) -> Resolved {
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
            entries.join(",")
        );
        Profile::parse(&json)
            .expect("parse")
            .resolve(&Default::default(), Arch::X86_64, None)
            .expect("resolve")
    }

    #[test]
    fn long_halves_are_jumped_over() {
        // 25 calls, each with a block of 3 rules of 6 conditions (about
        // a hundred instructions a block): the tree's left halves are far
        // longer than a conditional jump reaches.
        let entries: Vec<String> = (0..25)
            .flat_map(|i| {
                (0..3).map(move |k| {
                    let args: Vec<String> = (0..6)
                        .map(|c| {
                            format!(
                                r#"{{"index":{},"value":{},"op":"SCMP_CMP_{}"}}"#,
                                c,
                                i * 100 + k * 10 + c,
                                ["NE", "LE", "GE", "EQ"][(c + k) % 4]
                            )
                        })
                        .collect();
                    format!(
                        r#"{{"names":["{}"],"action":"SCMP_ACT_ERRNO","errnoRet":{},"args":[{}]}}"#,
                        super::super::default::BASE[i * 7],
                        k + 1,
                        args.join(",")
                    )
                })
            })
            .collect();
        let r = allow_but(&entries);
        let prog = compile(&r, AUDIT_ARCH_X86_64).expect("compile");
        assert!(prog.len() > 2000, "{}", prog.len());
        assert!(prog.iter().any(|i| i.code == BPF_JA), "no far jump");
        check_against_rules(&r);
        // The probes reach every rule's action, not only the default.
        let name = super::super::default::BASE[7 * 24];
        let nr = Arch::X86_64.syscall_nr(name).expect(name) as u32;
        let rets: std::collections::BTreeSet<u32> = probes(&r, nr)
            .into_iter()
            .map(|args| run(&prog, AUDIT_ARCH_X86_64, nr, args))
            .collect();
        assert_eq!(rets.len(), 4, "{rets:x?}");
    }

    #[test]
    fn ranges_cover_every_number_once() {
        let (a, b) = (Leaf::Ret(1), Leaf::Block(0));
        let d = 9;
        assert_eq!(intervals(&[], d), vec![(0, Leaf::Ret(d))]);
        assert_eq!(
            intervals(&[(0, a), (1, a), (3, a), (4, b), (5, Leaf::Ret(d))], d),
            vec![(0, a), (2, Leaf::Ret(d)), (3, a), (4, b), (5, Leaf::Ret(d))]
        );
        assert_eq!(
            intervals(&[(2, Leaf::Ret(d)), (u32::MAX, a)], d),
            vec![(0, Leaf::Ret(d)), (u32::MAX, a)]
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
        let e = compile(&allow_but(&entries), AUDIT_ARCH_X86_64).expect_err("too long");
        assert!(e.contains("over the kernel's limit"), "{e}");
    }
}
