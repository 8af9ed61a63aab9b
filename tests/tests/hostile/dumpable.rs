//! (g) The container init (PID 1 of every container, a fork of rsupd's
//! binary) and the exec helper (rsupd's binary until it execs the command)
//! are not dumpable: a process in the container cannot resolve or open
//! their `/proc/<pid>/exe`, which would hand it rsupd's binary (the runc
//! CVE-2019-5736 class).
//!
//! The init is checked directly (`readlink /proc/1/exe` fails, also under
//! `--userns remap`). The exec helper's child is visible in the container
//! only between its fork and its execve; the test widens that window with a
//! PATH of 20 long, nonexistent directories (each lookup walks ~1600 path
//! components before it fails) while a watcher in the container lists every
//! `/proc/*/exe` in a loop. Catching the window is likely, not certain: a
//! pass proves less than a failure does, but a failure is never spurious
//! (the watcher only reports a link that resolved to rsupd).

use std::time::{Duration, Instant};

use rsup_client::proto;
use rsup_tests::{Daemon, TempDir, eventually, unique_name};

use super::common::{exec_sh, in_throwaway_vm, logs_of, remap_daemon, start_detached};

/// Runs `readlink /proc/1/exe` in a new container and in an exec.
async fn init_exe_is_hidden(d: &Daemon, userns: &str) -> Vec<String> {
    let name = unique_name("dump");
    let mut spec = d.spec(&name, &["sleep", "100000"]);
    spec.userns = userns.to_owned();
    start_detached(d, spec).await;
    let mut problems = Vec::new();
    let (code, out) = exec_sh(
        d,
        &name,
        "readlink /proc/1/exe; echo rc=$?; cat /proc/1/exe | wc -c",
    )
    .await;
    if out.contains("rc=0") || out.contains("rsupd") {
        problems.push(format!(
            "--userns {userns:?}: the container sees its init's binary (exit {code}):\n{out}"
        ));
    }
    if let Err(e) = d.client().remove(&name, true).await {
        problems.push(format!("rm -f {name}: {e}"));
    }
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn the_container_init_is_not_dumpable() {
    if !in_throwaway_vm() {
        return;
    }
    let d = Daemon::start().await;
    let mut problems = init_exe_is_hidden(&d, "").await;
    let files = TempDir::new();
    let (remapped, _) = remap_daemon(&files, 2).await;
    problems.extend(init_exe_is_hidden(&remapped, "remap").await);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exec_helper_is_not_dumpable_before_it_execs() {
    if !in_throwaway_vm() {
        return;
    }
    const EXECS: usize = 8;
    let d = Daemon::start().await;
    let name = unique_name("watch");
    let watcher =
        "echo watching; while :; do ls -l /proc/[0-9]*/exe 2>/dev/null | grep rsupd; done";
    start_detached(&d, d.spec(&name, &["sh", "-c", watcher])).await;
    eventually(
        "the watcher to start",
        Duration::from_secs(30),
        async || {
            let logs = logs_of(&d, &name).await;
            if logs.contains("watching") {
                Ok(())
            } else {
                Err(logs)
            }
        },
    )
    .await;
    // Each candidate: /bin/.. repeated to ~4000 bytes, then a name that does not exist.
    let slow_dir = format!("{}/nothing-here", "/bin/..".repeat(570));
    let path = format!("{}:/bin", vec![slow_dir; 20].join(":"));
    let started = Instant::now();
    for _ in 0..EXECS {
        let reply = d
            .client()
            .exec(proto::ExecRequest {
                container: name.clone(),
                command: vec!["true".into()],
                env: vec![format!("PATH={path}")],
                timeout_ms: Some(60_000),
                ..Default::default()
            })
            .await
            .expect("exec");
        assert_eq!(
            reply.exit_code,
            0,
            "exec with the long PATH failed: {}",
            String::from_utf8_lossy(&reply.stderr)
        );
    }
    eprintln!("{EXECS} slow execs took {:?}", started.elapsed());
    // Give the watcher one more round, then read what it saw.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = logs_of(&d, &name).await;
    let leaks: Vec<&str> = seen.lines().filter(|l| l.contains("rsupd")).collect();
    assert!(
        leaks.is_empty(),
        "a process in the container resolved the exec helper's binary:\n{}",
        leaks.join("\n")
    );
}
