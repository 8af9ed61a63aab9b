//! Device access: the one allow-list every container gets, and its two
//! encodings for the kernel.
//!
//! A container may create any device node (`mknod`, with CAP_MKNOD) but
//! open only the standard devices (Docker's default list, [`DEFAULT_RULES`]).
//! The kernel asks the cgroup at every open and mknod of a device node:
//!
//! * cgroup v1: the `devices` controller. After `a` is written to
//!   `devices.deny`, each rule is written to `devices.allow` as a line
//!   (`c 1:3 rwm`, [`DeviceRule`]'s `Display`).
//! * cgroup v2 has no devices files. The kernel runs every
//!   `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup (and to
//!   its ancestors) on a `struct bpf_cgroup_dev_ctx { u32 access_type;
//!   u32 major; u32 minor; }`, where the low 16 bits of `access_type` are the
//!   device type (block 1, char 2) and the high 16 bits the access (mknod 1,
//!   read 2, write 4); the access is allowed only if every program returns
//!   1. [`filter_program`] compiles the same rules into such a program.
//!
//! Semantics, the same in both encodings (and in [`allows`], the reference
//! the unit tests compare the program against): default deny; a request is
//! allowed when one rule matches its type (or the rule is `a`), major and
//! minor (or the rule has `*`) and grants every access bit requested.
//! Privileged containers get no rules at all: every device.

use std::fmt;

use crate::sys::BpfInsn;

/// Kinds of device, as in a v1 rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
    /// Both kinds (`a`).
    All,
}

/// Access bits, the values the kernel uses in `bpf_cgroup_dev_ctx`
/// (`BPF_DEVCG_ACC_*`) and the letters of a v1 rule.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Device types in `bpf_cgroup_dev_ctx.access_type` (`BPF_DEVCG_DEV_*`).
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// One allow rule: type, major and minor (`None` is `*`), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

impl DeviceRule {
    const fn new(kind: DeviceKind, major: Option<u32>, minor: Option<u32>, access: u32) -> Self {
        DeviceRule {
            kind,
            major,
            minor,
            access,
        }
    }

    /// Whether this rule allows `access` to the device (`kind` is
    /// [`DEV_BLOCK`] or [`DEV_CHAR`]).
    pub fn allows(&self, kind: u32, major: u32, minor: u32, access: u32) -> bool {
        let kind_ok = match self.kind {
            DeviceKind::All => true,
            DeviceKind::Char => kind == DEV_CHAR,
            DeviceKind::Block => kind == DEV_BLOCK,
        };
        kind_ok
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }
}

/// The v1 `devices.allow` line: `c 1:3 rwm`, `b *:* m`.
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
            DeviceKind::All => 'a',
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let mut access = String::new();
        for (bit, letter) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(letter);
            }
        }
        write!(f, "{kind} {}:{} {access}", num(self.major), num(self.minor))
    }
}

use DeviceKind::{Block, Char};

/// Docker's default list: mknod of any device; read, write and mknod of
/// null, zero, full, random, urandom, tty, ptmx and the pseudo-terminals.
pub const DEFAULT_RULES: [DeviceRule; 10] = [
    DeviceRule::new(Char, None, None, ACC_MKNOD),
    DeviceRule::new(Block, None, None, ACC_MKNOD),
    DeviceRule::new(Char, Some(1), Some(3), ACC_ALL), // /dev/null
    DeviceRule::new(Char, Some(1), Some(5), ACC_ALL), // /dev/zero
    DeviceRule::new(Char, Some(1), Some(7), ACC_ALL), // /dev/full
    DeviceRule::new(Char, Some(1), Some(8), ACC_ALL), // /dev/random
    DeviceRule::new(Char, Some(1), Some(9), ACC_ALL), // /dev/urandom
    DeviceRule::new(Char, Some(5), Some(0), ACC_ALL), // /dev/tty
    DeviceRule::new(Char, Some(5), Some(2), ACC_ALL), // /dev/ptmx
    DeviceRule::new(Char, Some(136), None, ACC_ALL),  // /dev/pts/*
];

/// The reference decision: whether any of `rules` allows the request.
pub fn allows(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> bool {
    rules.iter().any(|r| r.allows(kind, major, minor, access))
}

// --------------------------------------------------------------- eBPF code

// Instruction classes and fields (linux/bpf_common.h, linux/bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// Opcodes the generator emits (and the only ones the tests' interpreter
/// knows).
pub(crate) const LDX_W: u8 = BPF_LDX | BPF_MEM | BPF_W; // dst = *(u32 *)(src + off)
pub(crate) const AND32_K: u8 = BPF_ALU | BPF_AND | BPF_K; // w_dst &= imm
pub(crate) const RSH32_K: u8 = BPF_ALU | BPF_RSH | BPF_K; // w_dst >>= imm
pub(crate) const MOV32_X: u8 = BPF_ALU | BPF_MOV | BPF_X; // w_dst = w_src
pub(crate) const MOV64_K: u8 = BPF_ALU64 | BPF_MOV | BPF_K; // dst = imm
pub(crate) const JNE_K: u8 = BPF_JMP | BPF_JNE | BPF_K; // if dst != imm goto +off
pub(crate) const JNE_X: u8 = BPF_JMP | BPF_JNE | BPF_X; // if dst != src goto +off
pub(crate) const EXIT: u8 = BPF_JMP | BPF_EXIT; // return r0

// Registers: r1 is the context on entry, r0 the result; r2-r5 hold the
// decoded request, r1 is scratch once they are loaded.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// A number compared with a 64-bit register's zero-extended u32: the
/// immediate is sign-extended, so it must fit in 31 bits.
fn imm(n: u32) -> i32 {
    // Device numbers are at most 12 (major) and 20 (minor) bits wide.
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Compiles `rules` into a `BPF_PROG_TYPE_CGROUP_DEVICE` program that
/// returns 1 (allow) when one rule allows the request and 0 otherwise.
///
/// Layout: load the request into r2 (type), r3 (access), r4 (major), r5
/// (minor); then one block per rule whose every test jumps to the next
/// block on a mismatch and that ends in `return 1`; last `return 0`.
pub fn filter_program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let mut prog = vec![
        insn(LDX_W, R_TYPE, R1, 0, 0),
        insn(AND32_K, R_TYPE, 0, 0, 0xffff),
        insn(LDX_W, R_ACCESS, R1, 0, 0),
        insn(RSH32_K, R_ACCESS, 0, 0, 16),
        insn(LDX_W, R_MAJOR, R1, 4, 0),
        insn(LDX_W, R_MINOR, R1, 8, 0),
    ];
    for rule in rules {
        // Tests as (instruction, is a jump to the next block).
        let mut block: Vec<(BpfInsn, bool)> = Vec::new();
        match rule.kind {
            DeviceKind::All => {}
            DeviceKind::Char => block.push((insn(JNE_K, R_TYPE, 0, 0, imm(DEV_CHAR)), true)),
            DeviceKind::Block => block.push((insn(JNE_K, R_TYPE, 0, 0, imm(DEV_BLOCK)), true)),
        }
        if rule.access & ACC_ALL != ACC_ALL {
            // Every requested bit must be granted: (access & granted) == access.
            block.push((insn(MOV32_X, R1, R_ACCESS, 0, 0), false));
            block.push((insn(AND32_K, R1, 0, 0, imm(rule.access & ACC_ALL)), false));
            block.push((insn(JNE_X, R1, R_ACCESS, 0, 0), true));
        }
        if let Some(major) = rule.major {
            block.push((insn(JNE_K, R_MAJOR, 0, 0, imm(major)), true));
        }
        if let Some(minor) = rule.minor {
            block.push((insn(JNE_K, R_MINOR, 0, 0, imm(minor)), true));
        }
        block.push((insn(MOV64_K, R0, 0, 0, 1), false));
        block.push((insn(EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (mut ins, jumps)) in block.into_iter().enumerate() {
            if jumps {
                // From the instruction after this one to the block's end.
                ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
            prog.push(ins);
        }
    }
    prog.push(insn(MOV64_K, R0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program on a `bpf_cgroup_dev_ctx`, as the kernel would (for
    /// the opcodes the generator emits; anything else fails the test). Also
    /// checks what the verifier would: jumps only forward and inside the
    /// program, registers read only after they are written.
    fn run(prog: &[BpfInsn], kind: u32, major: u32, minor: u32, access: u32) -> u64 {
        let ctx = [kind | access << 16, major, minor];
        let mut reg = [0u64; 11];
        let mut init = [false; 11];
        init[1] = true;
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= prog.len(), "ran more steps than instructions");
            let i = prog
                .get(pc)
                .unwrap_or_else(|| panic!("pc {pc} out of the program"));
            let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
            let read = |r: usize, init: &[bool; 11]| {
                assert!(init[r], "r{r} read before it is written at {pc}");
                r
            };
            let mut next = pc + 1;
            match i.code {
                LDX_W => {
                    assert_eq!(read(src, &init), 1, "loads only from the context");
                    let off = usize::try_from(i.off).expect("off");
                    assert!(off % 4 == 0 && off < 12, "ctx offset {off}");
                    reg[dst] = u64::from(ctx[off / 4]);
                    init[dst] = true;
                }
                AND32_K => reg[read(dst, &init)] = u64::from(reg[dst] as u32 & i.imm as u32),
                RSH32_K => reg[read(dst, &init)] = u64::from(reg[dst] as u32 >> i.imm),
                MOV32_X => {
                    reg[dst] = u64::from(reg[read(src, &init)] as u32);
                    init[dst] = true;
                }
                MOV64_K => {
                    reg[dst] = i64::from(i.imm) as u64;
                    init[dst] = true;
                }
                JNE_K | JNE_X => {
                    let other = if i.code == JNE_K {
                        i64::from(i.imm) as u64
                    } else {
                        reg[read(src, &init)]
                    };
                    assert!(i.off >= 0, "backward jump at {pc}");
                    let target = pc + 1 + usize::try_from(i.off).expect("off");
                    assert!(target < prog.len(), "jump out of the program at {pc}");
                    if reg[read(dst, &init)] != other {
                        next = target;
                    }
                }
                EXIT => return reg[read(0, &init)],
                code => panic!("unexpected opcode {code:#04x} at {pc}"),
            }
            pc = next;
        }
    }

    const DEVICES: [(u32, u32, u32); 14] = [
        (DEV_CHAR, 1, 3),
        (DEV_CHAR, 1, 5),
        (DEV_CHAR, 1, 7),
        (DEV_CHAR, 1, 8),
        (DEV_CHAR, 1, 9),
        (DEV_CHAR, 5, 0),
        (DEV_CHAR, 5, 2),
        (DEV_CHAR, 136, 0),
        (DEV_CHAR, 136, 4095),
        (DEV_CHAR, 1, 1),    // /dev/mem
        (DEV_CHAR, 10, 200), // /dev/net/tun
        (DEV_BLOCK, 8, 0),   // /dev/sda
        (DEV_BLOCK, 1, 3),   // block device with /dev/null's numbers
        (DEV_CHAR, 5, 1),    // /dev/console
    ];

    #[test]
    fn default_rules_allow_the_standard_devices_only() {
        let prog = filter_program(&DEFAULT_RULES);
        // (type, major, minor, access, allowed)
        let table = [
            (DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE, true),
            (DEV_CHAR, 1, 5, ACC_READ, true),
            (DEV_CHAR, 1, 9, ACC_READ, true),
            (DEV_CHAR, 1, 7, ACC_WRITE, true),
            (DEV_CHAR, 5, 2, ACC_READ | ACC_WRITE, true),
            (DEV_CHAR, 136, 7, ACC_READ | ACC_WRITE, true),
            (DEV_CHAR, 1, 3, ACC_MKNOD, true),
            // mknod of anything, opening it not.
            (DEV_BLOCK, 8, 0, ACC_MKNOD, true),
            (DEV_BLOCK, 8, 0, ACC_READ, false),
            (DEV_BLOCK, 8, 0, ACC_WRITE, false),
            (DEV_BLOCK, 8, 0, ACC_MKNOD | ACC_READ, false),
            (DEV_CHAR, 1, 1, ACC_MKNOD, true),
            (DEV_CHAR, 1, 1, ACC_READ, false),
            (DEV_CHAR, 10, 200, ACC_READ | ACC_WRITE, false),
            (DEV_CHAR, 5, 1, ACC_WRITE, false),
            // Same numbers, other type.
            (DEV_BLOCK, 1, 3, ACC_READ, false),
            (DEV_BLOCK, 136, 0, ACC_READ, false),
            // Right major, wrong minor and the other way round.
            (DEV_CHAR, 1, 4, ACC_READ, false),
            (DEV_CHAR, 2, 3, ACC_READ, false),
            (DEV_CHAR, 137, 0, ACC_READ, false),
            // Unknown type bits.
            (0, 1, 3, ACC_READ, false),
        ];
        for (kind, major, minor, access, want) in table {
            let got = run(&prog, kind, major, minor, access);
            assert_eq!(
                got,
                u64::from(want),
                "type {kind} {major}:{minor} access {access}"
            );
            assert_eq!(allows(&DEFAULT_RULES, kind, major, minor, access), want);
        }
    }

    #[test]
    fn program_agrees_with_the_reference_on_every_combination() {
        let rule_sets: [&[DeviceRule]; 5] = [
            &DEFAULT_RULES,
            &[],
            &[DeviceRule::new(DeviceKind::All, None, None, ACC_ALL)],
            &[DeviceRule::new(DeviceKind::All, Some(1), None, ACC_READ)],
            &[
                DeviceRule::new(Block, Some(8), None, ACC_READ | ACC_MKNOD),
                DeviceRule::new(Char, None, Some(5), ACC_WRITE),
            ],
        ];
        for rules in rule_sets {
            let prog = filter_program(rules);
            for (kind, major, minor) in DEVICES {
                for access in 1..=ACC_ALL {
                    assert_eq!(
                        run(&prog, kind, major, minor, access),
                        u64::from(allows(rules, kind, major, minor, access)),
                        "{rules:?}: type {kind} {major}:{minor} access {access}"
                    );
                }
            }
        }
        // No rules: everything denied; `a *:* rwm`: everything allowed.
        assert_eq!(run(&filter_program(&[]), DEV_CHAR, 1, 3, ACC_READ), 0);
        let all = [DeviceRule::new(DeviceKind::All, None, None, ACC_ALL)];
        assert_eq!(run(&filter_program(&all), DEV_BLOCK, 8, 0, ACC_WRITE), 1);
    }

    #[test]
    fn v1_lines_are_dockers() {
        let lines: Vec<String> = DEFAULT_RULES.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ]
        );
        let r = DeviceRule::new(DeviceKind::All, Some(4), None, ACC_READ | ACC_WRITE);
        assert_eq!(r.to_string(), "a 4:* rw");
    }

    #[test]
    fn default_program_size() {
        // 6 loads, 6 per mknod rule, 5 per major:minor rule, 4 for the
        // pts, 2 to deny: far below any verifier limit.
        assert_eq!(filter_program(&DEFAULT_RULES).len(), 59);
    }

    /// The exact encoding of a small program (runc's devicefilter emits the
    /// same shape), byte for byte as the kernel reads `struct bpf_insn`.
    #[test]
    fn encoding_is_golden() {
        let prog = filter_program(&[
            DeviceRule::new(Char, None, None, ACC_MKNOD),
            DeviceRule::new(Char, Some(1), Some(3), ACC_ALL),
        ]);
        let hex: Vec<String> = prog
            .iter()
            .map(|i| {
                let b = i.to_bytes();
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            })
            .collect();
        assert_eq!(
            hex,
            [
                "6112000000000000", // r2 = *(u32 *)(r1 + 0)
                "54020000ffff0000", // w2 &= 0xffff
                "6113000000000000", // r3 = *(u32 *)(r1 + 0)
                "7403000010000000", // w3 >>= 16
                "6114040000000000", // r4 = *(u32 *)(r1 + 4)
                "6115080000000000", // r5 = *(u32 *)(r1 + 8)
                // c *:* m
                "5502050002000000", // if r2 != 2 goto +5
                "bc31000000000000", // w1 = w3
                "5401000001000000", // w1 &= 1
                "5d31020000000000", // if r1 != r3 goto +2
                "b700000001000000", // r0 = 1
                "9500000000000000", // exit
                // c 1:3 rwm
                "5502040002000000", // if r2 != 2 goto +4
                "5504030001000000", // if r4 != 1 goto +3
                "5505020003000000", // if r5 != 3 goto +2
                "b700000001000000", // r0 = 1
                "9500000000000000", // exit
                // default deny
                "b700000000000000", // r0 = 0
                "9500000000000000", // exit
            ]
        );
    }
}
