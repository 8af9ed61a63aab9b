//! The root filesystem every test container runs on: a static busybox with
//! one symlink per applet in `/bin`, `/etc/passwd` and `/etc/group` with
//! `root`, `app` (1000) and `nobody`, and a marker file.
//!
//! Invariants: it is built once per test process (the first caller builds
//! it, the others wait), under a [`TempDir`] that is removed when the process
//! exits; it is never written by a test (containers write to their own upper
//! layer, which [`ROOTFS_MARKER`] lets a test check).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

use crate::tempdir::{TempDir, remove_tree};

static ROOTFS: OnceLock<PathBuf> = OnceLock::new();

/// A file of the rootfs (relative to its root) that tests overwrite inside a
/// container to show the rootfs directory is never written.
pub const ROOTFS_MARKER: &str = "etc/rsup-test-marker";

/// Applets the tests rely on.
const REQUIRED_APPLETS: &[&str] = &[
    "true", "sh", "hostname", "ps", "ip", "sleep", "id", "ls", "cat", "grep", "echo",
];

/// The root filesystem every test uses: a static busybox with one symlink per
/// applet in `/bin`, built once per test process under a temporary directory
/// that is removed when the process exits.
pub fn busybox_rootfs() -> PathBuf {
    ROOTFS
        .get_or_init(|| {
            let dir = TempDir::new();
            let rootfs = dir.path().join("rootfs");
            if let Err(e) = build_rootfs(&rootfs) {
                panic!("building the busybox rootfs in {}: {e:#}", rootfs.display());
            }
            // The directory outlives every test; remove it when the process exits.
            std::mem::forget(dir);
            // SAFETY: `remove_rootfs_at_exit` is a plain `extern "C" fn()` that
            // never unwinds; registering it has no other precondition.
            let rc = unsafe { libc::atexit(remove_rootfs_at_exit) };
            if rc != 0 {
                eprintln!("warning: atexit failed; {} stays behind", rootfs.display());
            }
            rootfs
        })
        .clone()
}

extern "C" fn remove_rootfs_at_exit() {
    if let Some(parent) = ROOTFS.get().and_then(|r| r.parent()) {
        remove_tree(parent);
    }
}

fn build_rootfs(root: &Path) -> anyhow::Result<()> {
    let busybox = std::env::var_os("RSUP_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .with_context(|| {
            format!(
                "running {} --list (install busybox-static)",
                busybox.display()
            )
        })?;
    if !list.status.success() {
        bail!("{} --list failed: {}", busybox.display(), list.status);
    }
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    for need in REQUIRED_APPLETS {
        if !applets.iter().any(|a| a == need) {
            bail!("{} has no `{need}` applet", busybox.display());
        }
    }

    for dir in [
        "bin", "proc", "dev", "sys", "tmp", "etc", "root", "home/app", "usr", "var",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000))?;

    let target = root.join("bin/busybox");
    fs::copy(&busybox, &target)
        .with_context(|| format!("copying {} to {}", busybox.display(), target.display()))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    for applet in &applets {
        let link = root.join("bin").join(applet);
        symlink("busybox", &link).with_context(|| format!("symlink {}", link.display()))?;
    }
    // Whatever PATH the daemon uses, it finds the applets.
    symlink("bin", root.join("sbin"))?;
    symlink("../bin", root.join("usr/bin"))?;
    symlink("../bin", root.join("usr/sbin"))?;

    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    fs::write(root.join(ROOTFS_MARKER), "lower\n")?;
    Ok(())
}

/// A static x86_64 ELF of one read+exec segment holding `code` (the
/// tests' hand-made probes: no libc, no loader).
pub fn static_x86_64_elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend((BASE + HEADERS).to_le_bytes()); // entry
    elf.extend(64u64.to_le_bytes()); // program headers
    elf.extend(0u64.to_le_bytes()); // no sections
    elf.extend(0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend(half.to_le_bytes());
    }
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R+X
    elf.extend(0u64.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(size.to_le_bytes());
    elf.extend(size.to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(code);
    elf
}
