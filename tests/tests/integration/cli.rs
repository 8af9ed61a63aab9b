//! `rsupctl` as a user sees it: a container's stdout, stderr and exit code
//! come back through `run` and `wait`, and every error is a single
//! `error: ...` line on stderr with a non-zero exit status.

use std::path::Path;
use std::time::Duration;

use rsup_client::proto::ContainerState;
use rsup_tests::{Daemon, busybox_rootfs, describe, eventually, stderr, stdout, unique_name};

/// Asserts `out` failed and printed exactly one line, starting `error: `, on stderr.
fn assert_one_error_line(out: &std::process::Output, what: &str) {
    assert!(!out.status.success(), "{what} succeeded\n{}", describe(out));
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: stderr is not one line\n{}",
        describe(out)
    );
    assert!(
        lines[0].starts_with("error: "),
        "{what}: stderr does not start with `error: `\n{}",
        describe(out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_returns_stdout_stderr_and_exit_code() {
    let d = Daemon::start().await;
    let name = unique_name("out");
    let out = d.run(
        &["--name", &name],
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "to-stdout\n", "{}", describe(&out));
    assert!(
        stderr(&out).lines().any(|l| l == "to-stderr"),
        "stderr of the container missing\n{}",
        describe(&out)
    );
    assert!(!stderr(&out).contains("to-stdout"), "{}", describe(&out));

    // Without --rm the container stays, and remembers how it ended.
    let c = d.client().inspect(&name).await.expect("inspect");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    assert_eq!(c.exit.as_ref().map(|e| e.exit_code), Some(3), "{c:?}");
    let j = d.inspect_json(&name);
    assert_eq!(j["State"]["Status"], "exited", "{j}");
    assert_eq!(j["State"]["ExitCode"], 3, "{j}");
    assert_eq!(j["Id"], c.id.as_str(), "{j}");
    assert_eq!(
        j["Name"].as_str().map(|n| n.trim_start_matches('/')),
        Some(name.as_str()),
        "{j}"
    );

    let ok = d.run(&["--name", &unique_name("true")], &["true"]);
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    let fail = d.run(&["--name", &unique_name("exit")], &["sh", "-c", "exit 42"]);
    assert_eq!(fail.status.code(), Some(42), "{}", describe(&fail));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_rm_removes_the_container_once_it_exits() {
    let d = Daemon::start().await;
    let name = unique_name("autorm");
    let out = d.run(
        &["--rm", "--name", &name],
        &["sh", "-c", "echo bye; exit 2"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(stdout(&out), "bye\n", "{}", describe(&out));
    eventually(
        "the --rm container to disappear",
        Duration::from_secs(10),
        async || match d.client().inspect(&name).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(
        d.ps_json().iter().all(|c| c["name"] != name.as_str()),
        "ps still lists {name}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_run_then_wait_prints_the_exit_code() {
    let d = Daemon::start().await;
    let name = unique_name("detach");
    let id = d.run(&["-d", "--name", &name], &["sh", "-c", "sleep 0.5; exit 7"]);
    assert!(id.status.success(), "{}", describe(&id));
    let id = stdout(&id).trim().to_owned();
    assert!(
        !id.is_empty() && !id.contains('\n'),
        "run -d printed {id:?}"
    );

    let out = d.ctl(["wait", &name]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), "7", "{}", describe(&out));

    let j = d.inspect_json(&name);
    assert_eq!(j["State"]["Status"], "exited", "{j}");
    assert_eq!(j["State"]["ExitCode"], 7, "{j}");
    let listed = d
        .ps_json()
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .expect("ps -a lists the container");
    assert_eq!(listed["state"], "exited", "{listed}");
    assert_eq!(listed["exit_code"], 7, "{listed}");
    assert!(
        id.starts_with(listed["id"].as_str().unwrap_or("?"))
            || listed["id"].as_str().is_some_and(|l| l.starts_with(&id)),
        "run -d printed {id}, ps lists {listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_of_a_command_missing_from_the_rootfs_exits_125() {
    let d = Daemon::start().await;
    for cmd in ["nosuchcmd", "/nonexistent"] {
        let name = unique_name("nocmd");
        let out = d.run(&["--name", &name], &[cmd]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "run {cmd}\n{}",
            describe(&out)
        );
        assert_one_error_line(&out, &format!("run {cmd}"));
        assert!(
            d.ps_json().iter().all(|c| c["name"] != name.as_str()),
            "a failed run left {name} behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_one_line_on_stderr() {
    let d = Daemon::start().await;
    let nosuch = unique_name("nosuch");
    let out = d.ctl(["inspect", &nosuch]);
    assert_one_error_line(&out, "inspect of an unknown container");
    for verb in ["start", "stop", "kill", "rm", "logs", "wait", "restart"] {
        let out = d.ctl([verb, nosuch.as_str()]);
        assert_one_error_line(&out, &format!("{verb} of an unknown container"));
    }

    // A daemon that is not there is an error too, not a hang or a panic.
    let mut cmd = std::process::Command::new(rsup_tests::bin_dir().join("rsupctl"));
    cmd.env_remove("RSUP_SOCKET")
        .arg("--socket")
        .arg(d.dir().join("no-such.sock"))
        .arg("ps");
    let out = rsup_tests::output_with_timeout(cmd, Duration::from_secs(30)).expect("rsupctl ps");
    assert_one_error_line(&out, "ps without a daemon");
}

#[tokio::test(flavor = "multi_thread")]
async fn info_reports_the_daemon() {
    let d = Daemon::start().await;
    let out = d.ctl_ok(["info"]);
    assert!(!out.trim().is_empty(), "rsupctl info printed nothing");

    let name = unique_name("info");
    d.ctl_ok([
        "create",
        "--name",
        &name,
        "--rootfs",
        busybox_rootfs().to_str().expect("utf-8 path"),
        "--",
        "true",
    ]);
    let info = d.client().info().await.expect("info");
    assert!(!info.version.is_empty(), "{info:?}");
    assert_eq!(
        Path::new(&info.state_dir).canonicalize().ok(),
        d.state_dir().canonicalize().ok(),
        "{info:?}"
    );
    assert_eq!(info.containers, 1, "{info:?}");
    assert_eq!(info.running, 0, "{info:?}");
}
