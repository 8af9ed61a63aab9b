//! (c) chmod, chown and mknod of every /dev node from inside a container,
//! as container root (plain, with `--read-only`, and with `--userns
//! remap`), leave the host's /dev nodes as they were: mode, owner, rdev
//! and inode of the standard nodes, and the names and types of every entry
//! of the host's /dev.
//!
//! Expected (issue 13): outside a user namespace the container's nodes are
//! its own (mknod on its /dev tmpfs), so the changes land there; with a
//! user namespace the nodes may be bind mounts of the host's, which
//! container root cannot change. Either way the nodes still work inside
//! (the script checks that first).
//!
//! The test restores the host nodes it finds changed (this is the VM, but
//! the other tests running beside it need a usable /dev/null).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use rsup_tests::{Daemon, TempDir, unique_name};

use super::common::{in_throwaway_vm, remap_daemon, run_to_end};

const NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// What a container does to every node: it uses them, then tries to
/// change, replace and add nodes.
fn script() -> String {
    let nodes = NODES.join(" ");
    format!(
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c \
         && echo nodes-work; \
         for n in {nodes}; do chmod 600 /dev/$n; chown 1:1 /dev/$n; chmod 4777 /dev/$n; done; \
         for n in {nodes}; do rm -f /dev/$n; mknod -m 666 /dev/$n c 1 7; chown 2:2 /dev/$n; done; \
         mknod -m 666 /dev/added c 1 3; echo tried-everything"
    )
}

/// mode, owner, rdev and inode of each standard node of the host.
fn host_nodes() -> BTreeMap<&'static str, (u32, u32, u32, u64, u64)> {
    NODES
        .iter()
        .map(|n| {
            let m = fs::symlink_metadata(format!("/dev/{n}"))
                .unwrap_or_else(|e| panic!("/dev/{n}: {e}"));
            (*n, (m.mode(), m.uid(), m.gid(), m.rdev(), m.ino()))
        })
        .collect()
}

fn show((mode, uid, gid, rdev, ino): (u32, u32, u32, u64, u64)) -> String {
    format!("mode {mode:o} owner {uid}:{gid} rdev {rdev:#x} ino {ino}")
}

/// Names and file types of the host's /dev (top level).
fn host_dev_entries() -> BTreeMap<String, String> {
    fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .map(|e| {
            let t = e
                .file_type()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|e| e.to_string());
            (e.file_name().to_string_lossy().into_owned(), t)
        })
        .collect()
}

/// Puts back mode and owner of nodes that changed.
fn restore(before: &BTreeMap<&'static str, (u32, u32, u32, u64, u64)>) {
    for (n, (mode, uid, gid, _, _)) in before {
        let path = format!("/dev/{n}");
        let _ = std::os::unix::fs::lchown(&path, Some(*uid), Some(*gid));
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777));
    }
}

/// One attack at a time in this process: each compares the host's /dev
/// before and after, and puts it back.
static HOST_DEV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the script with `tweak` applied to the spec; `Err` if the host's
/// /dev changed or the nodes did not work inside.
async fn attack(
    d: &Daemon,
    what: &str,
    tweak: impl FnOnce(&mut rsup_client::proto::ContainerSpec),
) -> Result<(), String> {
    let _one_at_a_time = HOST_DEV.lock().await;
    let nodes = host_nodes();
    let entries = host_dev_entries();
    let mut spec = d.spec(&unique_name("dev"), &["sh", "-c", &script()]);
    tweak(&mut spec);
    let ran = run_to_end(d, spec)
        .await
        .map_err(|e| format!("{what}: the container did not run: {e:?}"))?;
    let mut problems = Vec::new();
    let now = host_nodes();
    for (n, was) in &nodes {
        let is = now[n];
        if is != *was {
            problems.push(format!("host /dev/{n}: {} -> {}", show(*was), show(is)));
        }
    }
    let entries_now = host_dev_entries();
    if entries_now != entries {
        problems.push(format!(
            "the host's /dev entries changed: {:?} -> {:?}",
            entries
                .keys()
                .filter(|k| !entries_now.contains_key(*k))
                .collect::<Vec<_>>(),
            entries_now
                .keys()
                .filter(|k| !entries.contains_key(*k))
                .collect::<Vec<_>>()
        ));
    }
    restore(&nodes);
    if !ran.output.contains("nodes-work") || !ran.output.contains("tried-everything") {
        problems.push(format!("the script did not run through:\n{}", ran.output));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}:\n  {}\n  container output:\n{}",
            problems.join("\n  "),
            ran.output
        ))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn container_root_cannot_change_the_host_dev_nodes() {
    if !in_throwaway_vm() {
        return;
    }
    let d = Daemon::start().await;
    let mut failures = Vec::new();
    for (what, read_only) in [
        ("container root", false),
        ("container root, --read-only", true),
    ] {
        if let Err(e) = attack(&d, what, |s| s.read_only = read_only).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn remapped_container_root_cannot_change_the_host_dev_nodes() {
    if !in_throwaway_vm() {
        return;
    }
    let files = TempDir::new();
    let (d, _) = remap_daemon(&files, 1).await;
    if let Err(e) = attack(&d, "--userns remap", |s| s.userns = "remap".into()).await {
        panic!("{e}");
    }
}
