//! State survives `rsupd`: after a restart on the same state dir every
//! container is listed with its last status, running ones are re-adopted
//! (same process, still controllable), and one that exited while the daemon
//! was down is reported with its exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use rsup_client::proto::ContainerState;
use rsup_tests::{Daemon, busybox_rootfs, describe, eventually, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_every_container_and_its_status() {
    let mut d = Daemon::start().await;
    let rootfs = busybox_rootfs();
    let rootfs = rootfs.to_str().expect("utf-8 path");

    let running = unique_name("keep-run");
    let out = d.run(&["-d", "--name", &running], &["sleep", "1000"]);
    assert!(out.status.success(), "{}", describe(&out));
    let before = d
        .wait_state(&running, ContainerState::Running, Duration::from_secs(10))
        .await;
    let procs = d.recorded_procs(&before.id);
    assert_eq!(
        procs.len(),
        2,
        "state.json of a running container names a live shim_pid and init_pid: {:?}",
        d.state_json(&before.id)
    );

    let exited = unique_name("keep-exit");
    let out = d.run(
        &["--name", &exited],
        &["sh", "-c", "echo persisted; exit 5"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));

    let created = unique_name("keep-new");
    d.ctl_ok([
        "create", "--name", &created, "--rootfs", rootfs, "--", "true",
    ]);

    assert!(d.state_dir().join("rsupd.lock").exists(), "no lock file");
    d.restart().await;

    let listed: BTreeMap<String, serde_json::Value> = d
        .ps_json()
        .into_iter()
        .map(|c| (c["name"].as_str().unwrap_or_default().to_owned(), c))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for c in listed.values() {
        for key in ["id", "name", "state", "command", "exit_code", "pid"] {
            assert!(c.get(key).is_some(), "ps --format json lacks {key}: {c}");
        }
    }
    let run = &listed[&running];
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(
        run["pid"], before.pid,
        "the running container was not re-adopted: {run}"
    );
    let ex = &listed[&exited];
    assert_eq!(ex["state"], "exited", "{ex}");
    assert_eq!(ex["exit_code"], 5, "{ex}");
    assert_eq!(listed[&created]["state"], "created", "{}", listed[&created]);
    assert!(
        procs.iter().all(|p| p.exists()),
        "restart killed the container's processes"
    );

    // Everything still works on the re-adopted and the remembered containers.
    assert_eq!(d.ctl_ok(["logs", &exited]), "persisted\n");
    let c = tokio::time::timeout(Duration::from_secs(30), d.client().stop(&running, Some(5)))
        .await
        .expect("Stop returns")
        .expect("stop the re-adopted container");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    assert_eq!(
        c.exit.map(|e| e.signal),
        Some(15),
        "{running} was stopped by SIGTERM"
    );
    d.ctl_ok(["start", &created]);
    let status = d.client().wait(&created).await.expect("wait");
    assert_eq!(status.exit_code, 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_exits_while_rsupd_is_down_is_reported() {
    let mut d = Daemon::start().await;
    let name = unique_name("offline");
    let out = d.run(&["-d", "--name", &name], &["sh", "-c", "sleep 3; exit 4"]);
    assert!(out.status.success(), "{}", describe(&out));
    let c = d
        .wait_state(&name, ContainerState::Running, Duration::from_secs(10))
        .await;
    let procs = d.recorded_procs(&c.id);
    assert!(
        !procs.is_empty(),
        "state.json names no live process: {:?}",
        d.state_json(&c.id)
    );

    let init = rsup_tests::ProcId::of(c.pid).expect("the container's init runs");
    d.stop();
    eventually(
        "the container to exit while rsupd is down",
        Duration::from_secs(20),
        async || {
            if init.exists() {
                Err(format!("init {} still runs", init.pid))
            } else {
                Ok(())
            }
        },
    )
    .await;
    d.start_again().await;

    let c = d
        .wait_state(&name, ContainerState::Exited, Duration::from_secs(10))
        .await;
    let exit = c.exit.expect("exit status");
    assert_eq!(exit.exit_code, 4, "{exit:?}");
}
