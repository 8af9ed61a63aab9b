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
    let too_long = "a".repeat(64);
    for bad in [
        "Bad_Name",
        "-x",
        "x-",
        "has.dot",
        "UPPER",
        "white space",
        too_long.as_str(),
    ] {
        let spec = d.spec(bad, &["true"]);
        rejected_create(&d, &format!("name {bad:?}"), spec, &[Code::InvalidArgument]).await;
    }
    // The longest valid label is accepted.
    let longest = "b".repeat(63);
    let c = d
        .client()
        .create(d.spec(&longest, &["true"]))
        .await
        .expect("63-character name");
    assert_eq!(c.name, longest);
    d.client().remove(&longest, false).await.expect("remove");
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
