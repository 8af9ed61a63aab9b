//! The client library and rsupctl against a scripted, in-process fake of
//! rsupd (`support/fake_daemon.rs`, which says what it answers) on a
//! temporary Unix socket: checks what goes over the wire and what the user
//! sees (stdout, stderr, exit codes), not container behaviour.

mod support;

use rsup_client::proto::*;
use rsup_client::{Client, Error};
use tonic::Code;

use support::{ID, data_volume, rsupctl, serve, text, tree};

#[tokio::test]
async fn library_calls_round_trip() {
    let client = Client::connect(&serve().await.socket)
        .await
        .expect("connect");
    let spec = ContainerSpec {
        name: "job".to_owned(),
        rootfs: "/srv/rootfs".to_owned(),
        command: vec!["true".to_owned()],
        ..Default::default()
    };
    let created = client.create(spec).await.expect("create");
    assert_eq!(created.state(), ContainerState::Created);
    assert_eq!(client.start("job").await.expect("start").pid, 4242);
    assert_eq!(
        client.stop("job", Some(1)).await.expect("stop").state(),
        ContainerState::Exited
    );
    client.kill("job", "KILL").await.expect("kill");
    client.remove("job", true).await.expect("remove");
    assert_eq!(client.list(false).await.expect("list").len(), 1);
    assert_eq!(client.list(true).await.expect("list").len(), 2);
    assert_eq!(client.wait("killed").await.expect("wait").signal, 9);
    assert_eq!(client.info().await.expect("info").cgroup_driver, "v2");

    let mut logs = client.logs("job", true, Some(1)).await.expect("logs");
    let mut lines = Vec::new();
    while let Some(entry) = logs.message().await.expect("entry") {
        lines.push(entry.line);
    }
    assert_eq!(lines, [b"part".to_vec()]);

    let err = client
        .inspect("ghost")
        .await
        .expect_err("no such container");
    assert_eq!(err.code(), Some(Code::NotFound));
    assert_eq!(err.to_string(), "no such container: ghost");
    let err = client.inspect("empty").await.expect_err("empty reply");
    assert!(
        matches!(&err, Error::Status(s) if s.code() == Code::Internal),
        "{err:?}"
    );
}

#[tokio::test]
async fn run_streams_output_and_exits_with_the_container() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &["run", "--rm", "--rootfs", "rel", "sh", "-c", "exit 3"],
    )
    .await;
    assert_eq!(text(&out.stdout), "out1\npart");
    assert_eq!(text(&out.stderr), "err1\n");
    assert_eq!(out.status.code(), Some(3));

    let out = rsupctl(
        socket,
        &["run", "--name", "killed", "--rootfs", "/r", "sleep", "9"],
    )
    .await;
    assert_eq!(out.status.code(), Some(137));

    let out = rsupctl(
        socket,
        &["run", "-d", "--name", "bg", "--rootfs", "/r", "true"],
    )
    .await;
    assert_eq!(text(&out.stdout), format!("{ID}-bg\n"));
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn run_failures_before_start_exit_125_with_one_line() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &["run", "--name", "broken", "--rootfs", "/r", "nope"],
    )
    .await;
    assert_eq!(text(&out.stderr), "error: exec: \"nope\" not found\n");
    assert_eq!(out.status.code(), Some(125));

    let missing = socket.with_file_name("missing.sock");
    let out = rsupctl(&missing, &["run", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot connect to rsupd at "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn verbs_over_several_containers_keep_going() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(socket, &["stop", "-t", "1", "a", "ghost", "b"]).await;
    assert_eq!(text(&out.stdout), "a\nb\n");
    assert_eq!(text(&out.stderr), "error: no such container: ghost\n");
    assert_eq!(out.status.code(), Some(1));

    for args in [
        &["start", "a"][..],
        &["kill", "a"],
        &["restart", "a"],
        &["rm", "-f", "a"],
    ] {
        let out = rsupctl(socket, args).await;
        assert_eq!(text(&out.stdout), "a\n", "{args:?}: {}", text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }

    // Warnings of a request that did its work: on stderr, exit 0.
    for args in [
        &["stop", "full"][..],
        &["kill", "full"],
        &["rm", "-f", "full"],
    ] {
        let out = rsupctl(socket, args).await;
        assert_eq!(text(&out.stdout), "full\n", "{args:?}");
        assert_eq!(
            text(&out.stderr),
            "warning: container full: its state is not saved (no space left)\n",
            "{args:?}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }

    let out = rsupctl(socket, &["kill", "-s", "TERM", "a"]).await;
    assert_eq!(text(&out.stderr), "error: expected KILL, got TERM\n");
    assert_eq!(out.status.code(), Some(1));

    let out = rsupctl(socket, &["wait", "a", "killed"]).await;
    assert_eq!(text(&out.stdout), "3\n137\n");
    assert_eq!(out.status.code(), Some(137));
}

#[tokio::test]
async fn listings_and_inspection() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(socket, &["ps", "-a"]).await;
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("CONTAINER ID   NAME   COMMAND"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("c0ffee012345   web    \"sh -c exit 3\""),
        "{stdout}"
    );
    assert!(lines[2].contains("Exited (3) "), "{stdout}");

    let out = rsupctl(socket, &["ps", "--format", "json"]).await;
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(line["state"], "running");
    assert_eq!(line["pid"], 4242);

    let out = rsupctl(socket, &["inspect", "web", "ghost"]).await;
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(all[0]["State"]["Status"], "running");
    assert_eq!(all[0]["State"]["StartedAt"], "2023-11-14T22:13:21Z");
    assert_eq!(all[0]["State"]["OOMKilled"], false);
    assert_eq!(all[0]["HostConfig"]["Memory"], 0);
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    assert_eq!(text(&out.stderr), "error: no such container: ghost\n");
    assert_eq!(out.status.code(), Some(1));

    let out = rsupctl(socket, &["logs", "-t", "--tail", "2", "web"]).await;
    assert_eq!(text(&out.stdout), "2023-11-14T22:13:20.000000007Z part");
    assert_eq!(text(&out.stderr), "2023-11-14T22:13:20.000000007Z err1\n");

    let out = rsupctl(socket, &["info"]).await;
    assert!(text(&out.stdout).contains("Server Version: 9.9.9\n"));
    assert!(text(&out.stdout).contains("Cgroup Driver: v2\n"));
}

#[tokio::test]
async fn library_update_and_stats() {
    let daemon = serve().await;
    let client = Client::connect(&daemon.socket).await.expect("connect");
    let limits = Resources {
        memory_bytes: Some(256 << 20),
        cpus: Some(0.5),
        ..Default::default()
    };
    let updated = client.update("web", limits).await.expect("update");
    assert_eq!(updated.spec.and_then(|s| s.resources), Some(limits));
    let err = client
        .update("ghost", Resources::default())
        .await
        .expect_err("no such container");
    assert_eq!(err.code(), Some(Code::NotFound));

    let mut samples = client
        .stats(&["a".to_owned(), "b".to_owned()], false)
        .await
        .expect("stats");
    let sample = samples.message().await.expect("sample").expect("one");
    let names: Vec<&str> = sample.stats.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(samples.message().await.expect("end").is_none());
}

#[tokio::test]
async fn update_passes_the_flags_as_given() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "update",
            "-m",
            "1.5g",
            "--memory-swap",
            "-1",
            "--cpus",
            "0",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "-5",
            "a",
            "ghost",
            "b",
        ],
    )
    .await;
    assert_eq!(text(&out.stdout), "a\nb\n");
    assert_eq!(text(&out.stderr), "error: no such container: ghost\n");
    assert_eq!(out.status.code(), Some(1));
    let expected = Resources {
        memory_bytes: Some(1_610_612_736),
        memory_swap_bytes: Some(-1),
        cpus: Some(0.0),
        cpu_shares: Some(512),
        pids_limit: Some(-5),
    };
    let updates = daemon.fake.updates.all();
    let seen: Vec<(&str, Option<&Resources>)> = updates
        .iter()
        .map(|u| (u.container.as_str(), u.resources.as_ref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a", Some(&expected)),
            ("ghost", Some(&expected)),
            ("b", Some(&expected))
        ]
    );

    let out = rsupctl(socket, &["update", "--memory", "0", "a"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = daemon.fake.updates.pop();
    assert_eq!(
        last.and_then(|u| u.resources),
        Some(Resources {
            memory_bytes: Some(0),
            ..Default::default()
        })
    );

    let out = rsupctl(socket, &["update", "a"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        text(&out.stderr)
    );

    let out = rsupctl(socket, &["update", "--memory", "12x", "a"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--memory")
            && stderr.contains("expected a size such as 256m, 1g or a number of bytes"),
        "{stderr}"
    );
    assert_eq!(daemon.fake.updates.len(), 3);
}

#[tokio::test]
async fn run_and_create_send_resource_limits() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "run", "-d", "-m", "256m", "--cpus", "1.5", "--rootfs", "/r", "sh", "-m", "1",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(
        socket,
        &["create", "--pids-limit", "-5", "--rootfs", "/r", "true"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let specs = daemon.fake.specs.all();
    let sent: Vec<(Vec<String>, Option<Resources>)> = specs
        .into_iter()
        .map(|s| (s.command, s.resources))
        .collect();
    let argv = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sent,
        [
            (
                argv(&["sh", "-m", "1"]),
                Some(Resources {
                    memory_bytes: Some(256 << 20),
                    cpus: Some(1.5),
                    ..Default::default()
                })
            ),
            (
                argv(&["true"]),
                Some(Resources {
                    pids_limit: Some(-5),
                    ..Default::default()
                })
            ),
            (argv(&["true"]), None),
        ]
    );
}

#[tokio::test]
async fn stats_tables_and_json() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(socket, &["stats", "--no-stream"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "CONTAINER ID   NAME   CPU %    MEM USAGE / LIMIT   MEM %   PIDS   OOM KILLS   RESTARTS\n\
         c0ffee012345   web    50.00%   3MiB / 64MiB        4.69%   2      1           0\n"
    );

    // Streaming into a pipe: the table again for every sample, no escapes.
    let out = rsupctl(socket, &["stats", "a"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("CONTAINER ID").count(), 2, "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout}");

    let out = rsupctl(
        socket,
        &["stats", "--no-stream", "--format", "json", "a", "b"],
    )
    .await;
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[1]["name"], "b");
    assert_eq!(lines[0]["memory_limit_bytes"], 64 << 20);
    assert_eq!(lines[0]["cpu_percent"], 50.0);

    let out = rsupctl(socket, &["stats", "--no-stream", "ghost"]).await;
    assert_eq!(text(&out.stderr), "error: no such container: ghost\n");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn events_print_lines_and_json() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "events",
            "--filter",
            "type=die",
            "--filter",
            "container=web",
            "--filter",
            "type=oom",
            "--since",
            "5m",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["type"], "start");
    assert_eq!(
        lines[1],
        serde_json::json!({"time": "2023-11-14T22:13:20.123456789Z", "type": "die",
                           "subject_type": "container", "subject": "web", "id": ID,
                           "attributes": {"exit_code": "1", "oom_killed": "false",
                                          "signal": "0"}})
    );
    let request = daemon.fake.events.pop().expect("one request");
    assert_eq!(request.types, ["die", "oom"]);
    assert_eq!(request.containers, ["web"]);
    let since = request.since.expect("--since is sent").seconds;
    let five_minutes_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        - 300;
    let five_minutes_ago = i64::try_from(five_minutes_ago).expect("small");
    assert!(
        (five_minutes_ago - 60..=five_minutes_ago).contains(&since),
        "{since} vs {five_minutes_ago}"
    );

    let out = rsupctl(socket, &["events"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "2023-11-14T22:13:20.000000005Z container start web (id=c0ffee012345)\n\
         2023-11-14T22:13:20.123456789Z container die web \
         (exit_code=1, oom_killed=false, signal=0, id=c0ffee012345)\n"
    );
    let request = daemon.fake.events.pop();
    assert_eq!(request, Some(EventsRequest::default()));

    let out = rsupctl(socket, &["events", "--filter", "label=x"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected type=EVENT or container=NAME"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn restart_policy_is_passed_through_and_inspected() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "run",
            "-d",
            "--restart",
            "on-failure:3",
            "--restart-delay",
            "250ms",
            "--rootfs",
            "/r",
            "true",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let specs = daemon.fake.specs.all();
    let sent: Vec<Option<RestartPolicy>> = specs.into_iter().map(|s| s.restart).collect();
    assert_eq!(
        sent,
        [
            Some(RestartPolicy {
                policy: "on-failure:3".to_owned(),
                delay_ms: Some(250),
                ..Default::default()
            }),
            None
        ]
    );

    let out = rsupctl(
        socket,
        &["run", "--restart-delay", "-1s", "--rootfs", "/r", "true"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--restart-delay") && stderr.contains("expected a duration such as"),
        "{stderr}"
    );
    assert_eq!(daemon.fake.specs.len(), 2);

    let out = rsupctl(socket, &["inspect", "flappy"]).await;
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    let v = &all[0];
    assert_eq!(v["State"]["Status"], "restarting");
    assert_eq!(v["State"]["Restarting"], true);
    assert_eq!(v["State"]["NextStartAt"], "2023-11-14T22:13:23Z");
    assert_eq!(v["State"]["RestartDelayMs"], 400);
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(
        v["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 5})
    );
}

#[tokio::test]
async fn library_supervisor_calls_round_trip() {
    let daemon = serve().await;
    let client = Client::connect(&daemon.socket).await.expect("connect");
    let request = CreateSupervisorRequest {
        name: "app".to_owned(),
        strategy: "one_for_all".to_owned(),
        intensity: 3,
        period_ms: 10_000,
        parent: String::new(),
    };
    let created = client
        .create_supervisor(request.clone())
        .await
        .expect("create");
    assert_eq!(
        (created.name.as_str(), created.state.as_str()),
        ("app", "running")
    );
    let listed = client.list_supervisors().await.expect("list");
    assert_eq!(listed, tree());
    client.remove_supervisor("app").await.expect("remove");
    let err = client
        .remove_supervisor("ghost")
        .await
        .expect_err("no such supervisor");
    assert_eq!(err.code(), Some(Code::NotFound));
    let sent = daemon.fake.supervisors.all();
    assert_eq!(sent, [request]);
}

#[tokio::test]
async fn supervisor_create_passes_the_arguments_as_given() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(socket, &["supervisor", "create", "app"]).await;
    assert_eq!(text(&out.stdout), "app\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));

    let out = rsupctl(
        socket,
        &[
            "supervisor",
            "create",
            "workers",
            "--strategy",
            "rest_for_one",
            "--intensity",
            "5",
            "--period",
            "1m30s",
            "--parent",
            "app",
        ],
    )
    .await;
    assert_eq!(text(&out.stdout), "workers\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));

    // Intensity 0 and unknown strategies are the daemon's to refuse.
    let out = rsupctl(
        socket,
        &[
            "supervisor",
            "create",
            "zero",
            "--intensity",
            "0",
            "--strategy",
            "odd",
        ],
    )
    .await;
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "error: intensity must be at least 1\n");
    assert_eq!(out.status.code(), Some(1));

    let out = rsupctl(socket, &["supervisor", "create", "bad", "--period", "-5s"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--period") && stderr.contains("expected a duration such as"),
        "{stderr}"
    );

    let sent = daemon.fake.supervisors.all();
    let request =
        |name: &str, strategy: &str, intensity, period_ms, parent: &str| CreateSupervisorRequest {
            name: name.to_owned(),
            strategy: strategy.to_owned(),
            intensity,
            period_ms,
            parent: parent.to_owned(),
        };
    assert_eq!(
        sent,
        [
            request("app", "one_for_one", 1, 5_000, ""),
            request("workers", "rest_for_one", 5, 90_000, "app"),
            request("zero", "odd", 0, 5_000, ""),
        ]
    );
}

#[tokio::test]
async fn tree_shows_two_levels_in_start_order() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(socket, &["tree"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "app (one_for_all, 3 in 10s) running, 2 restarts\n\
         ├── db  container running\n\
         ├── web container running\n\
         └── workers (one_for_one, 5 in 30s) running, 0 restarts\n\
         \x20   └── w1 container restarting\n"
    );

    let out = rsupctl(socket, &["tree", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let roots: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object"))
        .collect();
    assert_eq!(roots.len(), 1, "{stdout}");
    assert_eq!(roots[0]["name"], "app");
    assert_eq!(roots[0]["period_ms"], 10_000);
    let names: Vec<&str> = roots[0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["db", "web", "workers"]);
    let workers = &roots[0]["children"][2];
    assert_eq!(workers["kind"], "supervisor");
    assert_eq!(workers["strategy"], "one_for_one");
    assert_eq!(
        workers["children"],
        serde_json::json!([{"kind": "container", "name": "w1", "state": "restarting"}])
    );
}

#[tokio::test]
async fn supervisor_listing_removal_and_inspection() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(socket, &["supervisor", "ls"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NAME      STRATEGY      INTENSITY   PERIOD   PARENT   STATE     RESTARTS   CHILDREN\n\
         app       one_for_all   3           10s      -        running   2          3\n\
         workers   one_for_one   5           30s      app      running   0          1\n"
    );

    let out = rsupctl(socket, &["supervisor", "rm", "workers", "ghost", "app"]).await;
    assert_eq!(text(&out.stdout), "workers\napp\n");
    assert_eq!(text(&out.stderr), "error: no such supervisor: ghost\n");
    assert_eq!(out.status.code(), Some(1));

    let out = rsupctl(socket, &["supervisor", "inspect", "workers", "ghost"]).await;
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(
        all,
        serde_json::json!([{"name": "workers", "strategy": "one_for_one", "intensity": 5,
                            "period_ms": 30000, "parent": "app", "state": "running",
                            "restarts": 0, "children": [
                                {"kind": "container", "name": "w1", "state": "restarting"}]}])
    );
    assert_eq!(text(&out.stderr), "error: no such supervisor: ghost\n");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn run_and_create_join_a_supervisor() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &["run", "-d", "--supervisor", "app", "--rootfs", "/r", "true"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(
        socket,
        &[
            "create",
            "--supervisor",
            "workers",
            "--rootfs",
            "/r",
            "true",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let specs = daemon.fake.specs.all();
    let joined: Vec<String> = specs.into_iter().map(|s| s.supervisor).collect();
    assert_eq!(joined, ["app", "workers", ""]);
}

#[tokio::test]
async fn exec_passes_the_arguments_and_the_outcome_through() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "exec",
            "-e",
            "A=1",
            "-u",
            "1000:100",
            "-w",
            "/tmp",
            "web",
            "sh",
            "-c",
            "echo -e x",
            "-u",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"sh -c echo -e x -u\xff\n");
    assert_eq!(text(&out.stderr), "err\n");

    let out = rsupctl(socket, &["exec", "web", "exit", "3"]).await;
    assert_eq!(out.status.code(), Some(3));
    let out = rsupctl(socket, &["exec", "web", "exit", "-1"]).await;
    assert_eq!(out.status.code(), Some(255));
    let out = rsupctl(socket, &["exec", "slow", "sleep", "9"]).await;
    assert_eq!(out.status.code(), Some(126));
    assert_eq!(text(&out.stdout), "");

    let out = rsupctl(socket, &["exec", "stopped", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "error: container stopped is not running\n"
    );
    let out = rsupctl(socket, &["exec", "ghost", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: no such container: ghost\n");

    // A container without a command is clap's to refuse.
    let out = rsupctl(socket, &["exec", "web"]).await;
    assert_eq!(out.status.code(), Some(2));

    let sent = daemon.fake.execs.all();
    assert_eq!(sent.len(), 6, "{sent:?}");
    assert_eq!(
        sent[0],
        ExecRequest {
            container: "web".to_owned(),
            command: ["sh", "-c", "echo -e x", "-u"].map(str::to_owned).to_vec(),
            env: vec!["A=1".to_owned()],
            user: "1000:100".to_owned(),
            working_dir: "/tmp".to_owned(),
            timeout_ms: None,
        }
    );
    assert_eq!(
        sent[1],
        ExecRequest {
            container: "web".to_owned(),
            command: vec!["exit".to_owned(), "3".to_owned()],
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn library_exec_round_trips() {
    let daemon = serve().await;
    let client = Client::connect(&daemon.socket).await.expect("connect");
    let request = ExecRequest {
        container: "web".to_owned(),
        command: vec!["exit".to_owned(), "7".to_owned()],
        timeout_ms: Some(500),
        ..Default::default()
    };
    let reply = client.exec(request.clone()).await.expect("exec");
    assert_eq!(reply.exit_code, 7);
    assert_eq!(reply.stdout, b"exit 7\xff\n");
    assert_eq!(reply.stderr, b"err\n");
    assert!(!reply.timed_out);
    let err = client
        .exec(ExecRequest {
            container: "stopped".to_owned(),
            command: vec!["true".to_owned()],
            ..Default::default()
        })
        .await
        .expect_err("not running");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    let sent = daemon.fake.execs.all();
    assert_eq!(sent.first(), Some(&request));
}

#[tokio::test]
async fn health_flags_are_passed_through_and_shown() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "run",
            "-d",
            "--restart",
            "always",
            "--health-cmd",
            "test -e /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            "--restart-on-unhealthy",
            "--rootfs",
            "/r",
            "sleep",
            "1000",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(
        socket,
        &[
            "create",
            "--health-cmd",
            "true",
            "--health-timeout",
            "1s",
            "--health-start-period",
            "2s",
            "--rootfs",
            "/r",
            "true",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let specs = daemon.fake.specs.all();
    let sent: Vec<Option<HealthCheck>> = specs.into_iter().map(|s| s.health).collect();
    assert_eq!(
        sent,
        [
            Some(HealthCheck {
                cmd: "test -e /tmp/ok".to_owned(),
                interval_ms: Some(300),
                retries: Some(2),
                restart_on_unhealthy: true,
                ..Default::default()
            }),
            Some(HealthCheck {
                cmd: "true".to_owned(),
                timeout_ms: Some(1000),
                start_period_ms: Some(2000),
                ..Default::default()
            }),
            None,
        ]
    );

    let out = rsupctl(socket, &["inspect", "checked"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(
        all[0]["State"]["Health"],
        serde_json::json!({"Status": "healthy", "FailingStreak": 0,
                           "Log": [{"End": "2023-11-14T22:13:22Z", "Output": "ok\n"}]})
    );
    assert_eq!(
        all[0]["Config"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 1_500_000_000u64,
                           "Timeout": 0, "StartPeriod": 0, "Retries": 0})
    );
    let out = rsupctl(socket, &["inspect", "web"]).await;
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert!(all[0]["State"].get("Health").is_none(), "{all}");
}

#[tokio::test]
async fn run_and_create_pass_the_network_flags() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "run",
            "-d",
            "--network",
            "front",
            "--net",
            "back",
            "--network-alias",
            "db",
            "--ip",
            "10.90.0.9",
            "-p",
            "127.0.0.1:8080:80",
            "--publish",
            "9090:90",
            "--rootfs",
            "/r",
            "sleep",
            "9",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(
        socket,
        &["create", "--network", "none", "--rootfs", "/r", "true"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let specs = daemon.fake.specs.all();
    let sent: Vec<_> = specs
        .into_iter()
        .map(|s| (s.networks, s.network_aliases, s.ip, s.ports))
        .collect();
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sent,
        [
            (
                strings(&["front", "back"]),
                strings(&["db"]),
                "10.90.0.9".to_owned(),
                strings(&["127.0.0.1:8080:80", "9090:90"]),
            ),
            (strings(&["none"]), Vec::new(), String::new(), Vec::new()),
            (Vec::new(), Vec::new(), String::new(), Vec::new()),
        ]
    );

    let out = rsupctl(socket, &["inspect", "wired"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(
        all[0]["NetworkSettings"]["Networks"],
        serde_json::json!({
            "default": {"IPAddress": "10.88.0.7", "IPPrefixLen": 24, "Gateway": "10.88.0.1",
                        "Aliases": ["web"], "InterfaceName": "eth0",
                        "HostInterfaceName": "rsvc0ffee010"},
            "back": {"IPAddress": "10.90.0.4", "IPPrefixLen": 24, "Gateway": "10.90.0.1",
                     "Aliases": [], "InterfaceName": "eth1",
                     "HostInterfaceName": "rsvc0ffee011"}})
    );
    assert_eq!(
        all[0]["HostConfig"]["PortBindings"],
        serde_json::json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                           "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}]})
    );
}

#[tokio::test]
async fn library_network_calls_round_trip() {
    let client = Client::connect(&serve().await.socket)
        .await
        .expect("connect");
    let made = client
        .create_network(CreateNetworkRequest {
            name: "front".to_owned(),
            subnet: String::new(),
            gateway: String::new(),
            internal: false,
        })
        .await
        .expect("create");
    assert_eq!(made.subnet, "10.89.0.0/24");
    let names: Vec<String> = client
        .list_networks()
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["default", "back"]);
    let back = client.inspect_network("back").await.expect("inspect");
    assert_eq!(back.containers.len(), 2);
    client.remove_network("front").await.expect("remove");
    let err = client.remove_network("back").await.expect_err("in use");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    let err = client.inspect_network("ghost").await.expect_err("unknown");
    assert_eq!(err.code(), Some(Code::NotFound));
    assert_eq!(err.to_string(), "no such network: ghost");
}

#[tokio::test]
async fn network_verbs_print_names_tables_and_json() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "network",
            "create",
            "--subnet",
            "10.91.0.0/24",
            "--gateway",
            "10.91.0.254",
            "--internal",
            "front",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "front\n");
    let out = rsupctl(socket, &["network", "create", "plain"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(
        socket,
        &["network", "create", "--subnet", "10.0.0.0/33", "bad"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: \"10.0.0.0/33\": prefix length above 32\n"
    );
    assert_eq!(text(&out.stdout), "");
    let sent = daemon.fake.networks.all();
    assert_eq!(
        sent,
        [
            CreateNetworkRequest {
                name: "front".to_owned(),
                subnet: "10.91.0.0/24".to_owned(),
                gateway: "10.91.0.254".to_owned(),
                internal: true,
            },
            CreateNetworkRequest {
                name: "plain".to_owned(),
                subnet: String::new(),
                gateway: String::new(),
                internal: false,
            },
            CreateNetworkRequest {
                name: "bad".to_owned(),
                subnet: "10.0.0.0/33".to_owned(),
                gateway: String::new(),
                internal: false,
            },
        ]
    );

    let out = rsupctl(socket, &["network", "ls"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NAME      SUBNET         GATEWAY     BRIDGE        INTERNAL   CONTAINERS\n\
         default   10.88.0.0/16   10.88.0.1   rsb1e2d3c4b   false      0\n\
         back      10.90.0.0/24   10.90.0.1   rsb5a6b7c8d   true       2\n"
    );

    let out = rsupctl(socket, &["network", "inspect", "back", "ghost"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: no such network: ghost\n");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(
        all,
        serde_json::json!([{"Name": "back", "Subnet": "10.90.0.0/24", "Gateway": "10.90.0.1",
                            "Internal": true, "Bridge": "rsb5a6b7c8d",
                            "Created": "2023-11-14T22:13:21Z",
                            "Containers": {"db": {"IPv4Address": "10.90.0.2/24"},
                                           "app": {"IPv4Address": "10.90.0.3/24"}},
                            "DNS": "10.90.0.1:53"}])
    );

    let out = rsupctl(
        socket,
        &["network", "rm", "front", "back", "ghost", "plain"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "front\nplain\n");
    assert_eq!(
        text(&out.stderr),
        "error: network back is in use by db, app: remove them first\n\
         error: no such network: ghost\n"
    );
}

#[tokio::test]
async fn run_and_create_pass_the_security_flags() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "run",
            "-d",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "CAP_SYS_TIME",
            "--cap-drop",
            "chown",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "no-new-privileges",
            "--rootfs",
            "/r",
            "sh",
            "--privileged",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(
        socket,
        &[
            "create",
            "--privileged",
            "--cap-drop",
            "ALL",
            "--rootfs",
            "/r",
            "true",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let specs = daemon.fake.specs.all();
    let sent: Vec<_> = specs
        .into_iter()
        .map(|s| {
            (
                s.cap_add,
                s.cap_drop,
                s.privileged,
                s.security_opt,
                s.command,
            )
        })
        .collect();
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sent,
        [
            (
                strings(&["NET_ADMIN", "CAP_SYS_TIME"]),
                strings(&["chown"]),
                false,
                strings(&["seccomp=unconfined", "no-new-privileges"]),
                strings(&["sh", "--privileged"]),
            ),
            (
                Vec::new(),
                strings(&["ALL"]),
                true,
                Vec::new(),
                strings(&["true"]),
            ),
            (
                Vec::new(),
                Vec::new(),
                false,
                Vec::new(),
                strings(&["true"])
            ),
        ]
    );

    let out = rsupctl(socket, &["inspect", "hardened"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    let host = &all[0]["HostConfig"];
    assert_eq!(
        host["CapAdd"],
        serde_json::json!(["CAP_CHOWN", "CAP_NET_ADMIN"])
    );
    assert_eq!(host["Privileged"], true);
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["seccomp=unconfined"])
    );
}

#[tokio::test]
async fn run_and_create_pass_the_storage_flags() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let out = rsupctl(
        socket,
        &[
            "run",
            "-d",
            "-v",
            "data:/data",
            "--volume",
            "/srv:/host:ro",
            "--tmpfs",
            "/tmp:size=1m",
            "--read-only",
            "--rootfs",
            "/r",
            "sh",
            "-v",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = rsupctl(socket, &["create", "--rootfs", "/r", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let specs = daemon.fake.specs.all();
    let sent: Vec<_> = specs
        .into_iter()
        .map(|s| (s.volumes, s.tmpfs, s.read_only, s.command))
        .collect();
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sent,
        [
            (
                strings(&["data:/data", "/srv:/host:ro"]),
                strings(&["/tmp:size=1m"]),
                true,
                strings(&["sh", "-v"]),
            ),
            (Vec::new(), Vec::new(), false, strings(&["true"])),
        ]
    );
}

#[tokio::test]
async fn volume_verbs_print_names_tables_and_json() {
    let daemon = serve().await;
    let socket = &daemon.socket;
    let client = Client::connect(socket).await.expect("connects");
    assert_eq!(client.list_volumes().await.expect("list"), [data_volume()]);
    assert_eq!(
        client.create_volume("cache").await.expect("create").name,
        "cache"
    );
    let err = client.remove_volume("data").await.expect_err("in use");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));

    let out = rsupctl(socket, &["volume", "create", "cache"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cache\n");
    let out = rsupctl(socket, &["volume", "ls"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NAME   MOUNTPOINT                   CONTAINERS\n\
         data   /var/lib/rsup/volumes/data   1\n"
    );
    let out = rsupctl(socket, &["volume", "inspect", "data", "ghost"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: no such volume: ghost\n");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(
        all,
        serde_json::json!([{"Name": "data", "Mountpoint": "/var/lib/rsup/volumes/data",
                            "CreatedAt": "2023-11-14T22:13:20Z", "Containers": ["db"]}])
    );
    let out = rsupctl(socket, &["volume", "rm", "cache", "data"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "cache\n");
    assert_eq!(
        text(&out.stderr),
        "error: volume data is in use by db: remove it first\n"
    );
}
