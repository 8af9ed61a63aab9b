//! (d) What a container writes is reachable by host root only: a setuid
//! copy of busybox it leaves in its root (the overlay's upper dir) and in a
//! named volume, its config (with an `-e SECRET=...`) and its log (which
//! prints the secret) cannot be reached by the host's `nobody` (uid
//! 65534): not stat, not read, not executed; nor does a recursive grep of
//! the state dir as `nobody` find the secret.
//!
//! The files are found as root by name and content anywhere under the
//! state dir and the volume's mountpoint, so the test does not depend on
//! the layout. It checks twice: as the daemon made the state dir, and after
//! a restart of rsupd on a state dir whose modes were loosened (every
//! directory 0755, every file readable by all): rsupd must fix them at
//! start (issue 13, "Private state").

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rsup_tests::{Daemon, eventually, output_with_timeout, unique_name};

use super::common::{NOBODY, as_nobody, in_throwaway_vm, logs_of, start_detached};

/// Regular files below `roots` (symlinks not followed).
fn files_below(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = roots.to_vec();
    while let Some(p) = todo.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        } else if m.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every directory 0755 and every file readable by all, below `root`.
fn loosen(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
            if let Ok(rd) = fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        } else if m.is_file() {
            let _ =
                fs::set_permissions(&p, fs::Permissions::from_mode((m.mode() | 0o044) & 0o7777));
        }
    }
}

/// What `nobody` can do with the container's files; one line per hole.
fn holes(roots: &[PathBuf], tag: &str, secret: &str, log: &Path) -> Vec<String> {
    let files = files_below(roots);
    let setuid: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == format!("suid-{tag}").as_str())
        })
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.mode() & 0o4000 != 0))
        .collect();
    let secret_files: Vec<&PathBuf> = files
        .iter()
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() < 8 << 20))
        .filter(|p| {
            fs::read(p).is_ok_and(|c| c.windows(secret.len()).any(|w| w == secret.as_bytes()))
        })
        .collect();
    let mut out = Vec::new();
    if setuid.len() < 2 {
        out.push(format!(
            "setup: want the setuid copies in the upper dir and the volume, found {setuid:?}"
        ));
    }
    if !secret_files.iter().any(|p| p.as_path() == log) {
        out.push(format!(
            "setup: the log {} does not hold the secret (files that do: {secret_files:?})",
            log.display()
        ));
    }
    if secret_files.len() < 2 {
        out.push(format!(
            "setup: want the secret in the config and the log, found it in {secret_files:?}"
        ));
    }
    for p in setuid.iter().chain(&secret_files) {
        let path = p.display().to_string();
        let stat = as_nobody(&["stat", "-c", "%A %U", &path]);
        if stat.status.success() {
            out.push(format!(
                "nobody can stat {path}: {}",
                String::from_utf8_lossy(&stat.stdout).trim()
            ));
        }
        let cat = as_nobody(&["cat", &path]);
        if cat.status.success() {
            out.push(format!("nobody can read {path}"));
        }
    }
    for p in &setuid {
        // busybox runs the applet its argv[0] names.
        let mut cmd = Command::new(p);
        cmd.arg0("id")
            .arg("-u")
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .env_clear();
        if let Ok(o) = output_with_timeout(cmd, Duration::from_secs(30)) {
            out.push(format!(
                "nobody ran {} ({}): euid {}",
                p.display(),
                o.status,
                String::from_utf8_lossy(&o.stdout).trim()
            ));
        }
    }
    let dirs: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    let mut grep = vec!["grep", "-r", "-l", secret];
    grep.extend(dirs.iter().map(String::as_str));
    let found = as_nobody(&grep);
    let found = String::from_utf8_lossy(&found.stdout);
    if !found.trim().is_empty() {
        out.push(format!("nobody's grep -r finds the secret in:\n{found}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn other_host_users_cannot_reach_what_a_container_writes() {
    if !in_throwaway_vm() {
        return;
    }
    let mut d = Daemon::start().await;
    let tag = unique_name("p");
    let secret = format!("s3cr3t-{tag}-value");
    let volume = unique_name("privvol");
    let name = unique_name("writer");
    let script = format!(
        "cp /bin/busybox /suid-{tag} && chmod 4755 /suid-{tag} \
         && cp /bin/busybox /data/suid-{tag} && chmod 4755 /data/suid-{tag} \
         && echo \"the secret is $SECRET\" && echo ready; exec sleep 100000"
    );
    let mut spec = d.spec(&name, &["sh", "-c", &script]);
    spec.env = vec![format!("SECRET={secret}")];
    spec.volumes = vec![format!("{volume}:/data")];
    start_detached(&d, spec).await;
    eventually(
        "the writer to be ready",
        Duration::from_secs(60),
        async || {
            let logs = logs_of(&d, &name).await;
            if logs.contains("ready") {
                Ok(())
            } else {
                Err(logs)
            }
        },
    )
    .await;
    let log = PathBuf::from(d.client().inspect(&name).await.expect("inspect").log_path);
    let mountpoint = d
        .client()
        .inspect_volume(&volume)
        .await
        .expect("inspect volume")
        .mountpoint;
    let roots = vec![d.state_dir().to_path_buf(), PathBuf::from(mountpoint)];

    let mut failures: Vec<String> = holes(&roots, &tag, &secret, &log)
        .into_iter()
        .map(|h| format!("as the daemon made it: {h}"))
        .collect();

    // A state dir from an older rsupd (or a careless admin): rsupd fixes it.
    d.stop();
    for r in &roots {
        loosen(r);
    }
    d.start_again().await;
    failures.extend(
        holes(&roots, &tag, &secret, &log)
            .into_iter()
            .map(|h| format!("after a restart on a loosened state dir: {h}")),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
