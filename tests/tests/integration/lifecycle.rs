//! Stop (SIGTERM, then SIGKILL after the timeout), kill with any signal,
//! restart, and rsup's init reaping the orphans a command leaves behind.

use std::time::{Duration, Instant};

use rsup_client::proto::ContainerState;
use rsup_tests::{Daemon, describe, stdout, unique_name};

/// A shell that ignores SIGTERM and says so once the trap is set.
const IGNORE_TERM: &str = "trap '' TERM; echo ready; while true; do sleep 1; done";

#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_a_sigterm_ignoring_process_after_the_timeout() {
    let d = Daemon::start().await;
    let name = unique_name("stubborn");
    let out = d.run(&["-d", "--name", &name], &["sh", "-c", IGNORE_TERM]);
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_log_line(&name, "ready", Duration::from_secs(10))
        .await;

    let started = Instant::now();
    let out = d.ctl(["stop", "-t", "2", &name]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        took >= Duration::from_millis(1500),
        "stop returned after {took:?}, before the 2 s timeout"
    );
    assert!(took <= Duration::from_secs(8), "stop took {took:?}");

    let c = d.client().inspect(&name).await.expect("inspect");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    let exit = c.exit.expect("exit status after stop");
    assert_eq!(exit.signal, 9, "{exit:?}");
    assert_eq!(exit.exit_code, 128 + 9, "{exit:?}");
    let j = d.inspect_json(&name);
    assert_eq!(j["State"]["Status"], "exited", "{j}");
    assert_eq!(j["State"]["Signal"], 9, "{j}");

    // The same through the client library, with a 1 s timeout.
    let name = unique_name("stubborn");
    let out = d.run(&["-d", "--name", &name], &["sh", "-c", IGNORE_TERM]);
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_log_line(&name, "ready", Duration::from_secs(10))
        .await;
    let started = Instant::now();
    let c = tokio::time::timeout(Duration::from_secs(30), d.client().stop(&name, Some(1)))
        .await
        .expect("Stop returns")
        .expect("stop");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(700)..=Duration::from_secs(7)).contains(&took),
        "stop -t 1 took {took:?}"
    );
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    assert_eq!(c.exit.map(|e| e.signal), Some(9));
}

/// Runs `sleep 60` detached as `name`; the pids of its shim and init.
async fn sleeper_pids(d: &Daemon, name: &str) -> (i32, i32) {
    let out = d.run(&["-d", "--name", name], &["sleep", "60"]);
    assert!(out.status.success(), "{}", describe(&out));
    let c = d.client().inspect(name).await.expect("inspect");
    d.recorded_pids(&c.id).expect("pids while it runs")
}

/// A container's shim and init (a fork of the shim) run `rsup-shim`, the
/// small binary beside rsupd, not rsupd's own binary (which is only the
/// fallback when `rsup-shim` is missing).
#[tokio::test(flavor = "multi_thread")]
async fn containers_run_under_the_small_shim_binary() {
    let d = Daemon::start().await;
    let name = unique_name("shimexe");
    let (shim, init) = sleeper_pids(&d, &name).await;
    for pid in [shim, init] {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("its exe");
        assert_eq!(
            exe.file_name().and_then(|n| n.to_str()),
            Some("rsup-shim"),
            "pid {pid} runs {exe:?}"
        );
    }
    d.ctl_ok(["exec", &name, "true"]);
    d.ctl_ok(["rm", "-f", &name]);
}

/// rsupd runs only an `rsup-shim` of its own build: the shim and the exec
/// helper refuse a daemon of another build (or one that does not say), and
/// an `rsupd` beside a shim of another build warns and runs its own binary
/// as the shim.
#[tokio::test(flavor = "multi_thread")]
async fn a_shim_of_another_build_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let shim = rsup_tests::bin_dir().join("rsup-shim");
    for (mode, env) in [
        ("__rsup-shim", Some("0.0.0-other")),
        ("__rsup-shim", None),
        ("__rsup-exec", Some("0.0.0-other")),
    ] {
        let mut cmd = std::process::Command::new(&shim);
        cmd.args([mode, "/nonexistent"]).env_clear();
        if let Some(id) = env {
            cmd.env("RSUP_BUILD", id);
        }
        let out = cmd.output().expect("run rsup-shim");
        assert!(!out.status.success(), "{mode} {env:?}: {}", describe(&out));
        assert!(
            rsup_tests::stderr(&out).contains("install rsupd and rsup-shim together"),
            "{mode} {env:?}: {}",
            describe(&out)
        );
    }

    // A bin dir with rsupd, rsupctl and an rsup-shim that is not of its build.
    let tmp = rsup_tests::TempDir::new();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for name in ["rsupd", "rsupctl"] {
        std::fs::copy(rsup_tests::bin_dir().join(name), bin.join(name)).expect("copy");
    }
    std::fs::write(bin.join("rsup-shim"), "#!/bin/sh\necho 0.0.0-other\n").expect("write");
    std::fs::set_permissions(
        bin.join("rsup-shim"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let d = Daemon::try_start(rsup_tests::DaemonOptions {
        bin_dir: Some(bin.clone()),
        ..Default::default()
    })
    .await
    .expect("rsupd beside a shim of another build");
    let name = unique_name("otherbuild");
    let (shim_pid, _) = sleeper_pids(&d, &name).await;
    let exe = std::fs::read_link(format!("/proc/{shim_pid}/exe")).expect("exe");
    assert_eq!(exe, bin.join("rsupd"), "the shim runs {exe:?}");
    let log = std::fs::read_to_string(d.log_path()).expect("rsupd's log");
    assert!(
        log.contains("is of another build") && log.contains("rsupd's own binary as their shim"),
        "{log}"
    );
    d.ctl_ok(["rm", "-f", &name]);
}

/// rsupd raises its own open-file limit to the hard one (it holds
/// descriptors per running container, so a shell's 1024 would stop it at a
/// few hundred), and its containers and execs keep the one it started with.
#[tokio::test(flavor = "multi_thread")]
async fn rsupd_raises_its_open_file_limit_but_not_the_containers() {
    let d = Daemon::try_start(rsup_tests::DaemonOptions {
        wrapper: vec!["prlimit".into(), "--nofile=512:4096".into()],
        ..Default::default()
    })
    .await
    .expect("rsupd under prlimit");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    assert_eq!(
        line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        ["4096", "4096"],
        "rsupd's: {line}"
    );
    let out = d.run(&["--rm"], &["sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        rsup_tests::stdout(&out),
        "512\n4096\n",
        "{}",
        describe(&out)
    );
    let name = unique_name("nofile");
    sleeper_pids(&d, &name).await;
    assert_eq!(
        d.ctl_ok(["exec", &name, "sh", "-c", "ulimit -n"]),
        "512\n",
        "exec"
    );
    d.ctl_ok(["rm", "-f", &name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_of_a_well_behaved_process_is_prompt() {
    let d = Daemon::start().await;
    let name = unique_name("polite");
    let out = d.run(&["-d", "--name", &name], &["sleep", "1000"]);
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_state(&name, ContainerState::Running, Duration::from_secs(10))
        .await;

    let started = Instant::now();
    let out = d.ctl(["stop", "-t", "10", &name]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?} for a process that obeys SIGTERM"
    );
    let c = d.client().inspect(&name).await.expect("inspect");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    assert_eq!(c.exit.map(|e| e.signal), Some(15), "SIGTERM comes first");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_delivers_the_signal_to_the_command() {
    let d = Daemon::start().await;
    let name = unique_name("usr1");
    let script = "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 1; done";
    let out = d.run(&["-d", "--name", &name], &["sh", "-c", script]);
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_log_line(&name, "ready", Duration::from_secs(10))
        .await;

    let out = d.ctl(["kill", "-s", "USR1", &name]);
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_log_line(&name, "got-usr1", Duration::from_secs(10))
        .await;
    let c = d.client().inspect(&name).await.expect("inspect");
    assert_eq!(
        c.state,
        ContainerState::Running as i32,
        "USR1 is trapped: {c:?}"
    );

    // Through the library, by number; the trap runs again.
    d.client()
        .kill(&name, "10")
        .await
        .expect("kill 10 (SIGUSR1)");
    d.wait_log_line(&name, "got-usr1", Duration::from_secs(10))
        .await;

    // Without -s: SIGKILL.
    let out = d.ctl(["kill", &name]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = d.ctl(["wait", &name]);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    let c = d.client().inspect(&name).await.expect("inspect");
    assert_eq!(
        c.exit.map(|e| e.signal),
        Some(9),
        "kill without -s sends SIGKILL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn init_reaps_orphaned_zombies() {
    let d = Daemon::start().await;
    // Each `( sleep 1 & )` leaves an orphan that the kernel hands to PID 1,
    // rsup's init; once they exit, only init can reap them.
    let script = "for i in 1 2 3 4 5; do ( sleep 1 & ); done; \
                  n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo before=$n; \
                  sleep 3; grep -h '^State:' /proc/[0-9]*/status; echo done";
    let name = unique_name("reaper");
    let out = d.run(&["--name", &name], &["sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let before: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("before="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no process count in\n{text}"));
    assert!(
        before >= 7,
        "the orphans did not start (init + sh + 5 sleeps):\n{text}"
    );
    assert!(text.lines().any(|l| l == "done"), "{text}");
    let zombies: Vec<&str> = text.lines().filter(|l| l.contains("zombie")).collect();
    assert!(
        zombies.is_empty(),
        "unreaped zombies inside the container:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_runs_the_command_again() {
    let d = Daemon::start().await;
    let name = unique_name("again");
    let out = d.run(&["-d", "--name", &name], &["sleep", "1000"]);
    assert!(out.status.success(), "{}", describe(&out));
    let first = d
        .wait_state(&name, ContainerState::Running, Duration::from_secs(10))
        .await;

    let out = d.ctl(["restart", &name]);
    assert!(out.status.success(), "{}", describe(&out));
    let second = d
        .wait_state(&name, ContainerState::Running, Duration::from_secs(10))
        .await;
    assert_ne!(first.pid, second.pid, "restart kept the old process");
    assert_eq!(first.id, second.id);
    assert!(
        second.start_count > first.start_count,
        "{first:?} -> {second:?}"
    );
}
