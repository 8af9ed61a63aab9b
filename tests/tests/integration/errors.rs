//! Bad input through the client library gets its gRPC status code, and a
//! rejected create leaves no container behind: invalid names (DNS labels
//! only) are INVALID_ARGUMENT, a duplicate name ALREADY_EXISTS, a missing
//! rootfs or a command not in it FAILED_PRECONDITION or INVALID_ARGUMENT,
//! an unknown container NOT_FOUND, removing a running container without
//! force FAILED_PRECONDITION.

use std::time::Duration;

use rsup_client::Client;
use rsup_client::proto::{self, ContainerState};
use rsup_tests::{
    Daemon, TempDir, code_of, container_ids, describe, eventually, stderr, unique_name,
};
use tonic::Code;

/// Creates `spec`, expects one of `codes`, and checks nothing was recorded.
async fn rejected_create(d: &Daemon, what: &str, spec: proto::ContainerSpec, codes: &[Code]) {
    let before = container_ids(d.client()).await;
    let code = code_of(what, d.client().create(spec).await);
    assert!(
        codes.contains(&code),
        "{what}: got {code:?}, want one of {codes:?}"
    );
    assert_ne!(code, Code::Internal, "{what}");
    assert_eq!(
        container_ids(d.client()).await,
        before,
        "{what}: a rejected create left a container"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_names_are_invalid_argument() {
    let d = Daemon::start().await;
    // Docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters.
    let too_long = "a".repeat(129);
    for bad in [
        "-x",
        "_x",
        ".x",
        "a/b",
        "../x",
        "white space",
        "é",
        too_long.as_str(),
    ] {
        let spec = d.spec(bad, &["true"]);
        rejected_create(&d, &format!("name {bad:?}"), spec, &[Code::InvalidArgument]).await;
    }
    // The longest valid name is accepted, and so are compose's names.
    for good in [
        "b".repeat(128),
        "proj_db_1".to_string(),
        "Web.1-x".to_string(),
    ] {
        let c = d
            .client()
            .create(d.spec(&good, &["true"]))
            .await
            .expect("a valid name");
        assert_eq!(c.name, good);
        d.client().remove(&good, false).await.expect("remove");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_name_is_already_exists() {
    let d = Daemon::start().await;
    let name = unique_name("dup");
    d.client()
        .create(d.spec(&name, &["true"]))
        .await
        .expect("first create");
    rejected_create(
        &d,
        "duplicate name",
        d.spec(&name, &["true"]),
        &[Code::AlreadyExists],
    )
    .await;
    assert_eq!(container_ids(d.client()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_rootfs_is_rejected() {
    let d = Daemon::start().await;
    let host = TempDir::new();
    let codes = [Code::FailedPrecondition, Code::InvalidArgument];

    let mut spec = d.spec(&unique_name("norootfs"), &["true"]);
    spec.rootfs = host
        .path()
        .join("does-not-exist")
        .to_string_lossy()
        .into_owned();
    rejected_create(&d, "missing rootfs", spec, &codes).await;

    let file = host.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let mut spec = d.spec(&unique_name("filerootfs"), &["true"]);
    spec.rootfs = file.to_string_lossy().into_owned();
    rejected_create(&d, "rootfs that is a file", spec, &codes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn command_not_in_the_rootfs_is_rejected() {
    let d = Daemon::start().await;
    let codes = [Code::InvalidArgument, Code::FailedPrecondition];
    // /bin/bash exists on the host, not in the busybox rootfs.
    for cmd in ["/nonexistent", "nosuchcmd", "/bin/bash"] {
        let spec = d.spec(&unique_name("nocmd"), &[cmd, "-c", "true"]);
        rejected_create(&d, &format!("command {cmd:?}"), spec, &codes).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_container_is_not_found() {
    let d = Daemon::start().await;
    let c = d.client();
    let n = unique_name("nosuch");
    let n = n.as_str();
    let calls = [
        ("start", code_of("start", c.start(n).await)),
        ("stop", code_of("stop", c.stop(n, Some(1)).await)),
        ("kill", code_of("kill", c.kill(n, "TERM").await)),
        ("remove", code_of("remove", c.remove(n, false).await)),
        ("inspect", code_of("inspect", c.inspect(n).await)),
        ("wait", code_of("wait", c.wait(n).await)),
        ("logs", logs_code(c, n).await),
    ];
    for (call, code) in calls {
        assert_eq!(code, Code::NotFound, "{call} of an unknown container");
    }
}

/// The status of `logs`: on the call, or on the first message of the stream.
async fn logs_code(c: &Client, name: &str) -> Code {
    match c.logs(name, false, None).await {
        Err(e) => code_of("logs", Err::<(), _>(e)),
        Ok(mut stream) => match stream.message().await {
            Err(status) => status.code(),
            Ok(entry) => panic!("logs of an unknown container: {entry:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_running_container_needs_force() {
    let d = Daemon::start().await;
    let name = unique_name("busy");
    let created = d
        .client()
        .create(d.spec(&name, &["sleep", "1000"]))
        .await
        .expect("create");
    d.client().start(&name).await.expect("start");
    d.wait_state(&name, ContainerState::Running, Duration::from_secs(10))
        .await;
    let procs = d.recorded_procs(&created.id);

    let code = code_of(
        "remove without force",
        d.client().remove(&name, false).await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    let out = d.ctl(["rm", &name]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", describe(&out));
    let c = d.client().inspect(&name).await.expect("still there");
    assert_eq!(c.state, ContainerState::Running as i32, "{c:?}");

    d.client()
        .remove(&name, true)
        .await
        .expect("remove with force");
    let code = code_of("inspect after remove", d.client().inspect(&name).await);
    assert_eq!(code, Code::NotFound);
    assert!(
        !d.container_dir(&created.id).exists(),
        "the container's directory is left"
    );
    eventually(
        "the shim and init to be gone",
        Duration::from_secs(10),
        async || {
            let alive: Vec<_> = procs.iter().filter(|p| p.exists()).collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {alive:?}"))
            }
        },
    )
    .await;
}

/// The failure of a call that must be INVALID_ARGUMENT naming `field`.
fn assert_invalid<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, rsup_client::Error>,
    field: &str,
) {
    let err = match result {
        Ok(v) => panic!("{what}: accepted, got {v:?}"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{what}: {err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("invalid {field}: ")),
        "{what}: the message does not name {field}: {message}"
    );
}

/// Every duration and count of the API outside its documented range (see
/// `rsup_runtime::bounds`) is INVALID_ARGUMENT naming its field, and a
/// rejected create or supervisor leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_durations_and_counts_are_invalid_argument() {
    let d = Daemon::start().await;
    let c = d.client();
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let restart = |f: &dyn Fn(&mut proto::RestartPolicy)| {
        let mut r = proto::RestartPolicy {
            policy: "always".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let health = |f: &dyn Fn(&mut proto::HealthCheck)| {
        let mut h = proto::HealthCheck {
            cmd: "true".into(),
            ..Default::default()
        };
        f(&mut h);
        h
    };
    type Edit = Box<dyn Fn(&mut proto::ContainerSpec)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "restart.delay_ms",
            Box::new(move |s| s.restart = Some(restart(&|r| r.delay_ms = Some(u64::MAX)))),
        ),
        (
            "restart.delay_ms",
            Box::new(move |s| s.restart = Some(restart(&|r| r.delay_ms = Some(DAY_MS + 1)))),
        ),
        (
            "restart.max_delay_ms",
            Box::new(move |s| s.restart = Some(restart(&|r| r.max_delay_ms = Some(u64::MAX)))),
        ),
        (
            "restart.reset_after_ms",
            Box::new(move |s| {
                s.restart = Some(restart(&|r| r.reset_after_ms = Some(7 * DAY_MS + 1)))
            }),
        ),
        (
            "restart.jitter",
            Box::new(move |s| s.restart = Some(restart(&|r| r.jitter = Some(1.5)))),
        ),
        (
            "restart.jitter",
            Box::new(move |s| s.restart = Some(restart(&|r| r.jitter = Some(f64::NAN)))),
        ),
        (
            "health.interval_ms",
            Box::new(move |s| s.health = Some(health(&|h| h.interval_ms = Some(0)))),
        ),
        (
            "health.interval_ms",
            Box::new(move |s| s.health = Some(health(&|h| h.interval_ms = Some(u64::MAX)))),
        ),
        (
            "health.timeout_ms",
            Box::new(move |s| s.health = Some(health(&|h| h.timeout_ms = Some(DAY_MS + 1)))),
        ),
        (
            "health.start_period_ms",
            Box::new(move |s| s.health = Some(health(&|h| h.start_period_ms = Some(u64::MAX)))),
        ),
        (
            "health.retries",
            Box::new(move |s| s.health = Some(health(&|h| h.retries = Some(0)))),
        ),
        (
            "health.retries",
            Box::new(move |s| s.health = Some(health(&|h| h.retries = Some(u32::MAX)))),
        ),
        (
            "log.max_size_bytes",
            Box::new(|s| {
                s.log = Some(proto::LogConfig {
                    max_size_bytes: 1023,
                    max_files: 0,
                })
            }),
        ),
        (
            "log.max_size_bytes",
            Box::new(|s| {
                s.log = Some(proto::LogConfig {
                    max_size_bytes: u64::MAX,
                    max_files: 0,
                })
            }),
        ),
        (
            "log.max_files",
            Box::new(|s| {
                s.log = Some(proto::LogConfig {
                    max_size_bytes: 0,
                    max_files: 101,
                })
            }),
        ),
        (
            "resources.pids_limit",
            Box::new(|s| {
                s.resources = Some(proto::Resources {
                    pids_limit: Some(i64::MAX),
                    ..Default::default()
                })
            }),
        ),
        (
            "resources.pids_limit",
            Box::new(|s| {
                s.resources = Some(proto::Resources {
                    pids_limit: Some(-1),
                    ..Default::default()
                })
            }),
        ),
        (
            "resources.memory_bytes",
            Box::new(|s| {
                s.resources = Some(proto::Resources {
                    memory_bytes: Some(1),
                    ..Default::default()
                })
            }),
        ),
        (
            "resources.cpus",
            Box::new(|s| {
                s.resources = Some(proto::Resources {
                    cpus: Some(1e9),
                    ..Default::default()
                })
            }),
        ),
        (
            "resources.cpu_shares",
            Box::new(|s| {
                s.resources = Some(proto::Resources {
                    cpu_shares: Some(262_145),
                    ..Default::default()
                })
            }),
        ),
    ];
    let before = container_ids(c).await;
    for (field, edit) in &cases {
        let mut spec = d.spec(&unique_name("range"), &["true"]);
        edit(&mut spec);
        let what = format!("create with {field} out of range ({spec:?})");
        assert_invalid(&what, c.create(spec).await, field);
    }
    assert_eq!(
        container_ids(c).await,
        before,
        "a rejected create left a container"
    );

    // Update takes the same resource ranges; Stop, Exec and Supervisors
    // have their own.
    let name = unique_name("ranged");
    c.create(d.spec(&name, &["sleep", "1000"]))
        .await
        .expect("create");
    c.start(&name).await.expect("start");
    d.wait_state(&name, ContainerState::Running, Duration::from_secs(10))
        .await;
    assert_invalid(
        "update pids_limit",
        c.update(
            &name,
            proto::Resources {
                pids_limit: Some(4_194_305),
                ..Default::default()
            },
        )
        .await,
        "resources.pids_limit",
    );
    assert_invalid(
        "stop -t 2^32-1",
        c.stop(&name, Some(u32::MAX)).await,
        "timeout_seconds",
    );
    assert_invalid(
        "stop -t 86401",
        c.stop(&name, Some(86_401)).await,
        "timeout_seconds",
    );
    for timeout in [0, DAY_MS + 1, u64::MAX] {
        let req = proto::ExecRequest {
            container: name.clone(),
            command: vec!["true".into()],
            timeout_ms: Some(timeout),
            ..Default::default()
        };
        assert_invalid(
            &format!("exec timeout {timeout}"),
            c.exec(req).await,
            "timeout_ms",
        );
    }
    // Nothing of it happened: the container runs on.
    let running = c.inspect(&name).await.expect("inspect");
    assert_eq!(running.state, ContainerState::Running as i32, "{running:?}");

    let sups_before = c.list_supervisors().await.expect("supervisors").len();
    for (intensity, period_ms, field) in [
        (u32::MAX, 5000, "intensity"),
        (10_001, 5000, "intensity"),
        (0, 5000, "intensity"),
        (3, u64::MAX, "period_ms"),
        (3, 0, "period_ms"),
        (3, DAY_MS + 1, "period_ms"),
    ] {
        let req = proto::CreateSupervisorRequest {
            name: unique_name("sup"),
            strategy: "one_for_one".into(),
            intensity,
            period_ms,
            parent: String::new(),
        };
        let what = format!("supervisor intensity {intensity} period {period_ms} ms");
        assert_invalid(&what, c.create_supervisor(req).await, field);
    }
    assert_eq!(
        c.list_supervisors().await.expect("supervisors").len(),
        sups_before
    );
    // The largest values in range are accepted.
    let sup = unique_name("sup");
    c.create_supervisor(proto::CreateSupervisorRequest {
        name: sup.clone(),
        strategy: "one_for_one".into(),
        intensity: 10_000,
        period_ms: DAY_MS,
        parent: String::new(),
    })
    .await
    .expect("a supervisor at the top of the ranges");
    let mut spec = d.spec(&unique_name("edge"), &["true"]);
    spec.restart = Some(proto::RestartPolicy {
        policy: "on-failure".into(),
        delay_ms: Some(DAY_MS),
        max_delay_ms: Some(DAY_MS),
        reset_after_ms: Some(7 * DAY_MS),
        jitter: Some(1.0),
    });
    spec.health = Some(proto::HealthCheck {
        cmd: "true".into(),
        interval_ms: Some(DAY_MS),
        timeout_ms: Some(1),
        retries: Some(1000),
        start_period_ms: Some(DAY_MS),
        restart_on_unhealthy: false,
    });
    spec.log = Some(proto::LogConfig {
        max_size_bytes: 1 << 40,
        max_files: 100,
    });
    spec.resources = Some(proto::Resources {
        pids_limit: Some(4_194_304),
        ..Default::default()
    });
    c.create(spec)
        .await
        .expect("a container at the top of the ranges");
}
