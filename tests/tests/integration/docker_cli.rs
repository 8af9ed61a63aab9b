//! The Docker CLI on rsupd (issue #18): Debian's docker 20.10 CLI
//! (`/usr/bin/docker`, API v1.41) on the socket of `rsupd --docker-socket`,
//! its exit codes and output compared with what Docker documents: version
//! and info, `load` of a `docker save` tarball, `run` (attached with --rm,
//! detached, interactive), logs (--tail, --timestamps, -f), ps filters and
//! Go templates, inspect, exec, user networks (DNS by name, connect),
//! volumes, published ports, restart policies, kill/restart/wait/rm -f; and
//! the errors: unknown objects, unsupported features (TTY, pause) refused
//! with Docker's error shape and nothing left behind, hostile names refused.
//!
//! Each test has its own rsupd (and so its own containers, images, networks
//! and volumes); no test sleeps for a state, it polls with a bound.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsup_tests::{
    BUSYBOX_IMAGE, DockerDaemon, busybox_image, describe, eventually, free_loopback_addr, http_get,
    is_full_id, nonempty_lines, ok_stdout, stderr, stdout, unique_name,
};

const WAIT: Duration = Duration::from_secs(30);
const IMG: &str = BUSYBOX_IMAGE;

/// A daemon with the Docker socket and the busybox image loaded.
async fn docker_with_image() -> DockerDaemon {
    let d = DockerDaemon::start(&[]).await;
    let loaded = d.load_busybox();
    assert!(
        loaded.contains(&format!("Loaded image: {IMG}")),
        "docker load printed {loaded:?}"
    );
    d
}

/// `docker run -d --name NAME FLAGS... IMG COMMAND...`, which must print a
/// full id; returns it.
fn run_detached(d: &DockerDaemon, name: &str, flags: &[&str], command: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.push(IMG);
    args.extend_from_slice(command);
    let id = d.docker_ok(&args).trim().to_owned();
    assert!(is_full_id(&id), "docker {args:?} printed {id:?}, not an id");
    id
}

/// `docker exec NAME COMMAND...`, any outcome.
fn exec(d: &DockerDaemon, name: &str, command: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", name];
    args.extend_from_slice(command);
    d.docker(&args)
}

/// Polls `docker inspect --format FORMAT NAME` until `want` holds of it.
async fn wait_inspect(
    d: &DockerDaemon,
    name: &str,
    format: &str,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    eventually(what, WAIT, async || {
        let out = d.docker(["inspect", "--format", format, name]);
        let text = ok_stdout(&out)?.trim().to_owned();
        if want(&text) {
            Ok(text)
        } else {
            Err(format!("{format} = {text:?}"))
        }
    })
    .await
}

/// Asserts `out` failed with exit code `code` and `needle` in its stderr.
fn assert_fails(out: &std::process::Output, code: i32, needle: &str, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}\n{}", describe(out));
    assert!(
        stderr(out).contains(needle),
        "{what}: stderr lacks {needle:?}\n{}",
        describe(out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn version_and_info_show_the_server() {
    let d = DockerDaemon::start(&[]).await;
    let version = d.docker_ok(["version"]);
    assert!(version.contains("Server:"), "docker version:\n{version}");
    let api = d.docker_ok(["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(api.trim(), "1.41", "the server's API version");
    let os = d.docker_ok(["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"]);
    assert!(os.trim().starts_with("linux/"), "server os/arch: {os:?}");

    let info = d.docker_ok(["info"]);
    assert!(
        info.contains("Server:") && info.contains("Containers:"),
        "docker info:\n{info}"
    );
    let counts = d.docker_ok(["info", "--format", "{{.Containers}} {{.Images}}"]);
    assert_eq!(
        counts.trim(),
        "0 0",
        "a fresh daemon: no container, no image"
    );

    d.load_busybox();
    run_detached(&d, &unique_name("info"), &[], &["sleep", "600"]);
    let counts = d.docker_ok([
        "info",
        "--format",
        "{{.Containers}} {{.ContainersRunning}} {{.Images}}",
    ]);
    assert_eq!(counts.trim(), "1 1 1", "one running container, one image");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_lists_and_inspects_the_image() {
    let d = DockerDaemon::start(&[]).await;
    let (_, id) = busybox_image();
    let loaded = d.load_busybox();
    assert_eq!(
        loaded.trim(),
        format!("Loaded image: {IMG}"),
        "docker load -i's output"
    );

    let images = nonempty_lines(&d.docker_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert_eq!(images, [IMG], "docker images");
    let short = d.docker_ok(["images", "-q"]);
    assert_eq!(
        short.trim(),
        &id["sha256:".len()..][..12],
        "docker images -q"
    );

    let inspect = d.docker_ok(["image", "inspect", "--format", "{{.Id}}", IMG]);
    assert_eq!(inspect.trim(), id, "image inspect .Id");
    let cmd = d.docker_ok(["image", "inspect", "--format", "{{json .Config.Cmd}}", IMG]);
    assert_eq!(cmd.trim(), r#"["sh"]"#, "image inspect .Config.Cmd");
    let os = d.docker_ok([
        "image",
        "inspect",
        "--format",
        "{{.Os}} {{index .RepoTags 0}}",
        IMG,
    ]);
    assert_eq!(os.trim(), format!("linux {IMG}"));
    // The whole document is JSON: an array of one object.
    let whole = d.docker_ok(["image", "inspect", IMG]);
    let v: serde_json::Value =
        serde_json::from_str(&whole).unwrap_or_else(|e| panic!("image inspect: {e}\n{whole}"));
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{whole}");

    let missing = d.docker(["image", "inspect", "rsuptest/no-such:1"]);
    assert_fails(
        &missing,
        1,
        "No such image: rsuptest/no-such:1",
        "image inspect of a missing image",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_rm_removes_the_image() {
    let d = docker_with_image().await;
    let out = d.docker_ok(["rmi", IMG]);
    assert!(
        out.contains(&format!("Untagged: {IMG}")),
        "docker rmi: {out}"
    );
    let images = d.docker_ok(["images", "-q"]);
    assert_eq!(images.trim(), "", "docker images after rmi");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_rm_keeps_streams_apart_and_exits_with_the_code() {
    let d = docker_with_image().await;
    let name = unique_name("rm");
    let out = d.docker([
        "run",
        "--rm",
        "--name",
        &name,
        IMG,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n", "{}", describe(&out));
    assert_eq!(stderr(&out), "err\n", "{}", describe(&out));
    // --rm: the CLI waited for the removal, so it is gone already.
    let names = d.all_names();
    assert!(!names.contains(&name), "{name} still listed: {names:?}");

    // Without --rm the container stays, exited with its code.
    let kept = unique_name("kept");
    let out = d.docker(["run", "--name", &kept, IMG, "echo", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "hello\n");
    let status = d.docker_ok([
        "ps",
        "-a",
        "--filter",
        &format!("name={kept}"),
        "--format",
        "{{.Status}}",
    ]);
    assert!(
        status.trim().starts_with("Exited (0)"),
        "ps status of {kept}: {status:?}"
    );
    // The image's Cmd when none is given: sh, which ends at once on no input.
    let out = d.docker(["run", "--rm", IMG]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// `docker run -i` and `docker exec -i`.
#[tokio::test(flavor = "multi_thread")]
async fn stdin_is_refused_clearly_and_leaves_nothing() {
    // rsupd does not pass stdin through (docs/docker-api.md): `run -i` and
    // `exec -i` are refused with a message that says so, before anything
    // is created or run.
    let d = docker_with_image().await;
    let before = d.docker_ok(["ps", "-aq"]);
    let out = d.docker_stdin(["run", "-i", "--rm", IMG, "sh"], b"echo piped\n");
    assert_eq!(out.status.code(), Some(125), "run -i: {}", describe(&out));
    assert!(
        stderr(&out).contains("stdin (docker run -i) is not supported by rsupd"),
        "run -i: {}",
        describe(&out)
    );
    assert_eq!(
        d.docker_ok(["ps", "-aq"]),
        before,
        "run -i left a container"
    );

    let name = unique_name("stdin");
    run_detached(&d, &name, &[], &["sleep", "600"]);
    let out = d.docker_stdin(["exec", "-i", &name, "cat"], b"through stdin\n");
    assert_ne!(out.status.code(), Some(0), "exec -i: {}", describe(&out));
    assert!(
        stderr(&out).contains("stdin for exec (docker exec -i) is not supported by rsupd"),
        "exec -i: {}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_logs_tail_timestamps_and_follow() {
    let d = docker_with_image().await;
    let name = unique_name("logs");
    run_detached(
        &d,
        &name,
        &[],
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    let first = eventually("three lines in docker logs", WAIT, async || {
        let l = nonempty_lines(&ok_stdout(&d.docker(["logs", &name]))?);
        if l.len() >= 3 {
            Ok(l)
        } else {
            Err(format!("{l:?}"))
        }
    })
    .await;
    assert_eq!(&first[..3], ["line0", "line1", "line2"], "docker logs");

    let number = |l: &str| -> u64 {
        l.strip_prefix("line")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a lineN: {l:?}"))
    };
    let tail = nonempty_lines(&d.docker_ok(["logs", "--tail", "2", &name]));
    assert_eq!(tail.len(), 2, "logs --tail 2: {tail:?}");
    assert_eq!(number(&tail[0]) + 1, number(&tail[1]), "{tail:?}");
    assert!(number(&tail[0]) >= 1, "{tail:?}");

    let stamped = nonempty_lines(&d.docker_ok(["logs", "--timestamps", &name]));
    assert!(stamped.len() >= 3, "{stamped:?}");
    for (i, l) in stamped.iter().enumerate() {
        let (time, rest) = l
            .split_once(' ')
            .unwrap_or_else(|| panic!("no timestamp in {l:?}"));
        // RFC 3339 with nanoseconds, UTC: 2006-01-02T15:04:05.999999999Z.
        assert!(
            time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "timestamp {time:?} of {l:?}"
        );
        assert_eq!(rest, format!("line{i}"), "{stamped:?}");
    }

    let seen = nonempty_lines(&d.docker_ok(["logs", &name])).len() as u64;
    let mut follow = d.docker_spawn(&["logs", "-f", &name]);
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "logs -f printed no new line: {got:?}"
        );
        match follow.next_line(WAIT) {
            Ok(Some(l)) => {
                let n = number(&l);
                got.push(l);
                if n >= seen + 2 {
                    break;
                }
            }
            Ok(None) => panic!("logs -f ended early: {got:?} {:?}", follow.wait(WAIT)),
            Err(e) => panic!("{e}: {got:?}"),
        }
    }
    // Lines in order, none twice.
    for w in got.windows(2) {
        assert_eq!(number(&w[0]) + 1, number(&w[1]), "logs -f: {got:?}");
    }
    assert_eq!(d.docker_ok(["stop", &name]).trim(), name, "docker stop");
    let (status, _, err) = follow
        .wait(WAIT)
        .unwrap_or_else(|e| panic!("logs -f did not end after stop: {e}"));
    assert!(status.success(), "logs -f ended with {status}: {err}");

    assert_eq!(d.inspect_format(&name, "{{.State.Status}}"), "exited");
    assert_eq!(d.docker_ok(["rm", &name]).trim(), name, "docker rm");
    assert!(!d.all_names().contains(&name));
}

#[tokio::test(flavor = "multi_thread")]
async fn ps_filters_formats_and_inspect_templates() {
    let d = docker_with_image().await;
    let p = unique_name("psf");
    let (a, b, c) = (format!("{p}-a"), format!("{p}-b"), format!("{p}-c"));
    let other = unique_name("other");
    let id_a = run_detached(&d, &a, &["--label", "k=v"], &["sh", "-c", "exit 2"]);
    run_detached(&d, &b, &["--label", "k=w"], &["sh", "-c", "exit 0"]);
    run_detached(&d, &c, &["--label", "k=v"], &["sleep", "600"]);
    run_detached(&d, &other, &["--label", "k=v"], &["sh", "-c", "exit 2"]);
    assert_eq!(d.docker_ok(["wait", &a]).trim(), "2", "docker wait {a}");
    assert_eq!(d.docker_ok(["wait", &b]).trim(), "0", "docker wait {b}");
    assert_eq!(d.docker_ok(["wait", &other]).trim(), "2");

    let ps = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["ps"];
        all.extend_from_slice(args);
        let mut names = nonempty_lines(&d.docker_ok(&all));
        names.sort();
        names
    };
    let name_filter = format!("name={p}");
    assert_eq!(
        ps(&[
            "-a",
            "--filter",
            &name_filter,
            "--filter",
            "label=k=v",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}}",
        ]),
        [a.as_str()],
        "name + label + status filters"
    );
    assert_eq!(
        ps(&["--filter", &name_filter, "--format", "{{.Names}}"]),
        [c.as_str()],
        "ps without -a: running only"
    );
    assert_eq!(
        ps(&["-a", "--filter", &name_filter, "--format", "{{.Names}}"]),
        [a.as_str(), b.as_str(), c.as_str()]
    );
    assert_eq!(
        ps(&["-a", "--filter", "label=k=w", "--format", "{{.Names}}"]),
        [b.as_str()]
    );
    assert_eq!(
        ps(&["-a", "--filter", "label=k", "--format", "{{.Names}}"]).len(),
        4,
        "label=k matches every value"
    );
    assert_eq!(
        ps(&["-a", "--filter", "status=running", "--format", "{{.Names}}"]),
        [c.as_str()]
    );
    // -q: short ids, the prefix of the full one.
    let q = ps(&["-aq", "--filter", &format!("name={a}")]);
    assert_eq!(q, [id_a[..12].to_owned()], "ps -aq");
    let row = ps(&[
        "-a",
        "--filter",
        &format!("name={a}"),
        "--format",
        "{{.Image}}|{{.Status}}|{{.Label \"k\"}}",
    ]);
    assert_eq!(row.len(), 1, "{row:?}");
    assert!(
        row[0].starts_with(&format!("{IMG}|Exited (2)")) && row[0].ends_with("|v"),
        "ps row of {a}: {row:?}"
    );

    assert_eq!(
        d.inspect_format(
            &a,
            "{{.State.Status}} {{.State.ExitCode}} {{.Config.Labels}}"
        ),
        "exited 2 map[k:v]"
    );
    assert_eq!(
        d.inspect_format(&c, "{{.State.Status}} {{.State.Running}} {{.Name}}"),
        format!("running true /{c}")
    );
    assert_eq!(d.inspect_format(&a, "{{.Id}}"), id_a);
    assert_eq!(d.inspect_format(&id_a[..12], "{{.Config.Image}}"), IMG);
    // The whole document is a JSON array of one object.
    let whole = d.docker_ok(["inspect", &c]);
    let v: serde_json::Value =
        serde_json::from_str(&whole).unwrap_or_else(|e| panic!("inspect: {e}\n{whole}"));
    assert_eq!(v[0]["Name"], format!("/{c}"), "{whole}");
    assert!(v[0]["State"]["Pid"].as_i64().unwrap_or(0) > 0, "{whole}");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_then_start_attached() {
    let d = docker_with_image().await;
    let name = unique_name("create");
    let id = d.docker_ok([
        "create",
        "--name",
        &name,
        IMG,
        "sh",
        "-c",
        "echo created-out; exit 4",
    ]);
    assert!(is_full_id(id.trim()), "docker create printed {id:?}");
    assert_eq!(d.inspect_format(&name, "{{.State.Status}}"), "created");
    let created = d.docker_ok([
        "ps",
        "-a",
        "--filter",
        "status=created",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(created.trim(), name);
    let out = d.docker(["start", "-a", &name]);
    assert_eq!(stdout(&out), "created-out\n", "{}", describe(&out));
    assert_eq!(out.status.code(), Some(4), "start -a: {}", describe(&out));
    assert_eq!(d.docker_ok(["wait", &name]).trim(), "4");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_in_the_container_and_returns_its_code() {
    let d = docker_with_image().await;
    let name = unique_name("exec");
    run_detached(&d, &name, &[], &["sleep", "600"]);
    let out = exec(&d, &name, &["echo", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "hi\n");
    let out = exec(&d, &name, &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let out = exec(&d, &name, &["sh", "-c", "echo o; echo e >&2"]);
    assert_eq!((stdout(&out), stderr(&out)), ("o\n".into(), "e\n".into()));
    let out = d.docker([
        "exec",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        &name,
        "sh",
        "-c",
        "echo $FOO $(pwd)",
    ]);
    assert_eq!(stdout(&out), "bar /tmp\n", "{}", describe(&out));
    // In the container's PID namespace: sleep is there.
    let out = exec(&d, &name, &["ps"]);
    assert!(stdout(&out).contains("sleep 600"), "{}", describe(&out));

    d.docker_ok(["stop", "-t", "1", &name]);
    let out = exec(&d, &name, &["echo", "hi"]);
    assert_fails(&out, 1, "is not running", "exec in a stopped container");
    assert_eq!(stdout(&out), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn network_by_name_connect_inspect_and_rm() {
    let d = docker_with_image().await;
    let net = unique_name("net");
    let id = d.docker_ok(["network", "create", &net]);
    assert!(is_full_id(id.trim()), "network create printed {id:?}");
    let names = nonempty_lines(&d.docker_ok(["network", "ls", "--format", "{{.Name}}"]));
    assert!(names.contains(&net), "network ls: {names:?}");

    let (srv, cli) = (unique_name("srv"), unique_name("cli"));
    run_detached(
        &d,
        &srv,
        &["--network", &net],
        &[
            "sh",
            "-c",
            "while true; do echo hello-net | nc -l -p 8080; done",
        ],
    );
    run_detached(&d, &cli, &["--network", &net], &["sleep", "600"]);
    let ask = |from: &str| -> Result<String, String> {
        let out = exec(&d, from, &["nc", "-w", "2", &srv, "8080"]);
        if out.status.success() && stdout(&out).contains("hello-net") {
            Ok(stdout(&out))
        } else {
            Err(describe(&out))
        }
    };
    eventually("cli to reach srv by name", WAIT, async || ask(&cli)).await;
    let out = exec(&d, &cli, &["nslookup", &srv]);
    assert!(out.status.success(), "nslookup {srv}: {}", describe(&out));

    let members: BTreeSet<String> = d
        .docker_ok([
            "network",
            "inspect",
            "--format",
            "{{range .Containers}}{{.Name}} {{end}}",
            &net,
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = [&srv, &cli].into_iter().cloned().collect();
    assert_eq!(members, want, "network inspect .Containers");
    assert_eq!(
        d.docker_ok([
            "network",
            "inspect",
            "--format",
            "{{.Name}} {{.Driver}}",
            &net
        ])
        .trim(),
        format!("{net} bridge")
    );
    let nets = d.inspect_format(
        &cli,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert_eq!(nets, net, "{cli}'s networks");

    // In use: refused (Docker: "has active endpoints").
    let out = d.docker(["network", "rm", &net]);
    assert!(
        !out.status.success(),
        "network rm in use: {}",
        describe(&out)
    );
    d.docker_ok(["rm", "-f", &srv, &cli]);
    assert_eq!(d.docker_ok(["network", "rm", &net]).trim(), net);
    let names = nonempty_lines(&d.docker_ok(["network", "ls", "--format", "{{.Name}}"]));
    assert!(!names.contains(&net), "network ls after rm: {names:?}");
    let out = d.docker(["network", "inspect", &net]);
    assert_fails(
        &out,
        1,
        &format!("No such network: {net}"),
        "inspect after rm",
    );
}

/// `docker network connect` of a running container started on the default
/// network: it reaches the network's containers by address and by name,
/// and `network disconnect` takes it off again.
#[tokio::test(flavor = "multi_thread")]
async fn network_connect_joins_a_running_container() {
    let d = docker_with_image().await;
    let net = unique_name("net");
    d.docker_ok(["network", "create", &net]);
    let (srv, other) = (unique_name("srv"), unique_name("oth"));
    run_detached(
        &d,
        &srv,
        &["--network", &net],
        &[
            "sh",
            "-c",
            "while true; do echo hello-net | nc -l -p 8080; done",
        ],
    );
    let ask = |from: &str| -> Result<String, String> {
        let out = exec(&d, from, &["nc", "-w", "2", &srv, "8080"]);
        if out.status.success() && stdout(&out).contains("hello-net") {
            Ok(stdout(&out))
        } else {
            Err(describe(&out))
        }
    };
    // On another network the name is unknown, until connected.
    run_detached(&d, &other, &[], &["sleep", "600"]);
    let out = exec(&d, &other, &["nslookup", &srv]);
    assert!(
        !out.status.success(),
        "{srv} resolved from another network: {}",
        describe(&out)
    );
    d.docker_ok(["network", "connect", &net, &other]);
    // Its address on the network first, then its name.
    let ip = d.inspect_format(
        &srv,
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
    );
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "{srv}'s address on {net}: {ip:?}"
    );
    eventually(
        "other to reach srv's address once connected",
        WAIT,
        async || {
            let out = exec(&d, &other, &["nc", "-w", "2", &ip, "8080"]);
            if stdout(&out).contains("hello-net") {
                Ok(())
            } else {
                Err(describe(&out))
            }
        },
    )
    .await;
    eventually(
        "other to reach srv by name once connected",
        WAIT,
        async || {
            ask(&other).map_err(|e| {
                // What the resolver of `other` is, for the report.
                let conf = exec(&d, &other, &["cat", "/etc/resolv.conf"]);
                format!("{e}\n/etc/resolv.conf of {other}:\n{}", stdout(&conf))
            })
        },
    )
    .await;

    let members: BTreeSet<String> = d
        .docker_ok([
            "network",
            "inspect",
            "--format",
            "{{range .Containers}}{{.Name}} {{end}}",
            &net,
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = [&srv, &other].into_iter().cloned().collect();
    assert_eq!(members, want, "network inspect .Containers after connect");
    let nets = d.inspect_format(
        &other,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert!(
        nets.split_whitespace().any(|n| n == net),
        "{other}'s networks: {nets:?}"
    );
    d.docker_ok(["network", "disconnect", &net, &other]);
    let nets = d.inspect_format(
        &other,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert!(
        !nets.split_whitespace().any(|n| n == net),
        "{other}'s networks after disconnect: {nets:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_keep_data_between_runs() {
    let d = docker_with_image().await;
    let v = unique_name("vol");
    assert_eq!(d.docker_ok(["volume", "create", &v]).trim(), v);
    let mount = format!("{v}:/data");
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        &mount,
        IMG,
        "sh",
        "-c",
        "echo x > /data/f",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = d.docker(["run", "--rm", "-v", &mount, IMG, "cat", "/data/f"]);
    assert_eq!(stdout(&out), "x\n", "{}", describe(&out));

    let info = d.docker_ok([
        "volume",
        "inspect",
        "--format",
        "{{.Name}} {{.Driver}} {{.Mountpoint}}",
        &v,
    ]);
    let parts: Vec<&str> = info.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "volume inspect: {info:?}");
    assert_eq!(
        &parts[..2],
        [v.as_str(), "local"],
        "volume inspect: {info:?}"
    );
    let on_host = std::path::Path::new(parts[2]).join("f");
    assert_eq!(
        std::fs::read_to_string(&on_host).ok().as_deref(),
        Some("x\n"),
        "the Mountpoint {} holds the volume's files",
        parts[2]
    );
    let names = nonempty_lines(&d.docker_ok(["volume", "ls", "--format", "{{.Name}}"]));
    assert!(names.contains(&v), "volume ls: {names:?}");

    // run -v NAME:/path makes a volume that does not exist yet.
    let auto = unique_name("auto");
    let out = d.docker(["run", "--rm", "-v", &format!("{auto}:/a"), IMG, "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let names = nonempty_lines(&d.docker_ok(["volume", "ls", "-q"]));
    assert!(names.contains(&auto), "volume ls -q: {names:?}");

    // In use: refused; then removed.
    let user = unique_name("user");
    run_detached(&d, &user, &["-v", &mount], &["sleep", "600"]);
    let out = d.docker(["volume", "rm", &v]);
    assert!(
        !out.status.success(),
        "volume rm in use: {}",
        describe(&out)
    );
    d.docker_ok(["rm", "-f", &user]);
    assert_eq!(d.docker_ok(["volume", "rm", &v]).trim(), v);
    let names = nonempty_lines(&d.docker_ok(["volume", "ls", "-q"]));
    assert!(!names.contains(&v), "volume ls after rm: {names:?}");
    let out = d.docker(["volume", "inspect", &v]);
    assert_fails(&out, 1, &format!("No such volume: {v}"), "inspect after rm");
}

#[tokio::test(flavor = "multi_thread")]
async fn published_port_serves_on_loopback() {
    let d = docker_with_image().await;
    let name = unique_name("web");
    let port = free_loopback_addr().port();
    let publish = format!("127.0.0.1:{port}:80");
    run_detached(
        &d,
        &name,
        &["-p", &publish],
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-www > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (status, body) = eventually("httpd to answer on the published port", WAIT, async || {
        http_get(addr, "/index.html").await
    })
    .await;
    assert_eq!((status, body.as_str()), (200, "hello-www\n"));
    assert_eq!(
        d.docker_ok(["port", &name, "80"]).trim(),
        format!("127.0.0.1:{port}"),
        "docker port"
    );
    let ports = d.docker_ok([
        "ps",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Ports}}",
    ]);
    assert!(
        ports.contains(&format!("127.0.0.1:{port}->80/tcp")),
        "ps .Ports: {ports:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_always_starts_again_until_stopped() {
    let d = docker_with_image().await;
    let name = unique_name("always");
    // Exits 1 the first time; runs on once restarted (its root is kept).
    run_detached(
        &d,
        &name,
        &["--restart", "always"],
        &[
            "sh",
            "-c",
            "echo started; if [ -e /once ]; then exec sleep 600; fi; touch /once; exit 1",
        ],
    );
    let state = wait_inspect(
        &d,
        &name,
        "{{.RestartCount}} {{.State.Status}}",
        "a restart, then running",
        |s| {
            let mut it = s.split_whitespace();
            let count: u64 = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            count >= 1 && it.next() == Some("running")
        },
    )
    .await;
    assert!(state.ends_with("running"), "{state}");
    assert_eq!(
        d.inspect_format(&name, "{{.HostConfig.RestartPolicy.Name}}"),
        "always"
    );
    let logs = d.docker_ok(["logs", &name]);
    assert!(
        logs.matches("started").count() >= 2,
        "logs of the two runs: {logs:?}"
    );
    d.docker_ok(["stop", "-t", "2", &name]);
    let after = d.inspect_format(&name, "{{.State.Status}} {{.State.Running}}");
    assert_eq!(
        after, "exited false",
        "a stopped container is not restarted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_restart_wait_and_forced_rm() {
    let d = docker_with_image().await;
    let name = unique_name("life");
    let id = run_detached(&d, &name, &[], &["sleep", "600"]);
    assert_eq!(d.docker_ok(["kill", &name]).trim(), name, "docker kill");
    assert_eq!(
        d.docker_ok(["wait", &name]).trim(),
        "137",
        "wait after SIGKILL"
    );
    assert_eq!(
        d.inspect_format(&name, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    assert_eq!(
        d.docker_ok(["restart", &name]).trim(),
        name,
        "docker restart"
    );
    assert_eq!(
        d.inspect_format(&name, "{{.State.Status}} {{.State.Running}} {{.Id}}"),
        format!("running true {id}"),
        "restart keeps the container"
    );
    // A running container: rm refuses, rm -f kills and removes.
    let out = d.docker(["rm", &name]);
    assert!(
        !out.status.success(),
        "rm of a running container: {}",
        describe(&out)
    );
    assert!(stderr(&out).contains("running"), "{}", describe(&out));
    assert_eq!(d.docker_ok(["rm", "-f", &name]).trim(), name);
    assert!(!d.all_names().contains(&name));

    // wait prints the code the command exited with; kill -s a signal.
    let code = unique_name("code");
    run_detached(
        &d,
        &code,
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 5' USR1; while true; do sleep 0.1; done",
        ],
    );
    assert_eq!(d.docker_ok(["kill", "-s", "USR1", &code]).trim(), code);
    assert_eq!(d.docker_ok(["wait", &code]).trim(), "5");
}

/// Unknown names: every command fails as Docker's does (exit 1, Docker's
/// message), and the daemon answers 404 with Docker's `{"message": ...}`.
/// Every mismatch is collected, then reported together.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_objects_are_not_found() {
    let d = docker_with_image().await;
    let mut wrong = Vec::new();
    let cases: [(&[&str], i32, &str); 11] = [
        (
            &["inspect", "no-such-thing"],
            1,
            "No such object: no-such-thing",
        ),
        (
            &["container", "inspect", "no-such-thing"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["logs", "no-such-thing"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["stop", "no-such-thing"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["kill", "no-such-thing"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["start", "no-such-thing"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["rm", "no-such-thing"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["exec", "no-such-thing", "true"],
            1,
            "No such container: no-such-thing",
        ),
        (
            &["network", "inspect", "no-such-thing"],
            1,
            "No such network: no-such-thing",
        ),
        (
            &["volume", "inspect", "no-such-thing"],
            1,
            "No such volume: no-such-thing",
        ),
        // --pull never: the CLI would otherwise ask rsupd to pull from
        // Docker Hub. Docker: 125 and "No such image: rsuptest/no-such:1".
        (
            &[
                "run",
                "--rm",
                "--pull",
                "never",
                "rsuptest/no-such:1",
                "true",
            ],
            125,
            "No such image: rsuptest/no-such:1",
        ),
    ];
    for (args, code, needle) in cases {
        let out = d.docker(args);
        if out.status.code() != Some(code) || !stderr(&out).contains(needle) {
            wrong.push(format!(
                "docker {args:?}: want exit {code} and {needle:?}\n{}",
                describe(&out)
            ));
        }
    }
    // The error documents themselves: 404 and {"message": ...}.
    for (path, message) in [
        (
            "/v1.41/containers/no-such-thing/json",
            "No such container: no-such-thing",
        ),
        // Docker says "No such image: no-such-thing" or, with the tag it
        // looked up, "No such image: no-such-thing:latest": both are taken.
        (
            "/v1.41/images/no-such-thing/json",
            "No such image: no-such-thing",
        ),
        (
            "/v1.41/networks/no-such-thing",
            "network no-such-thing not found",
        ),
        (
            "/v1.41/volumes/no-such-thing",
            "get no-such-thing: no such volume",
        ),
    ] {
        let reply = d.api("GET", path, None).unwrap_or_else(|e| panic!("{e}"));
        let got = reply
            .json()
            .and_then(|v| v["message"].as_str().map(str::to_owned));
        let same = got.as_deref().is_some_and(|g| {
            g == message || (path.contains("/images/") && g == format!("{message}:latest"))
        });
        if reply.status != 404 || !same {
            wrong.push(format!(
                "GET {path}: want 404 {{\"message\": {message:?}}}, got {reply:?}"
            ));
        }
    }
    assert!(d.all_names().is_empty());
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// Whether `reply` is a refusal in Docker's shape: 400 or 501 and a JSON
/// `{"message": ...}` that says what is not supported.
fn unsupported(reply: &rsup_tests::ApiReply) -> Result<String, String> {
    if ![400, 501].contains(&reply.status) {
        return Err(format!(
            "status {} (want 400 or 501): {reply:?}",
            reply.status
        ));
    }
    let message = reply
        .json()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .ok_or_else(|| format!("no JSON message: {reply:?}"))?;
    if message.trim().is_empty() {
        return Err(format!("empty message: {reply:?}"));
    }
    Ok(message)
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_and_pause_are_refused_clearly() {
    let d = docker_with_image().await;
    let name = unique_name("tty");
    let out = d.docker(["run", "-t", "--name", &name, IMG, "true"]);
    assert_eq!(out.status.code(), Some(125), "run -t: {}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Error response from daemon:") && err.to_lowercase().contains("support"),
        "run -t should say rsupd does not support a TTY: {}",
        describe(&out)
    );
    assert!(d.all_names().is_empty(), "run -t left {:?}", d.all_names());
    let body = format!(r#"{{"Image":"{IMG}","Cmd":["true"],"Tty":true}}"#);
    let reply = d
        .api(
            "POST",
            &format!("/v1.41/containers/create?name={name}"),
            Some(&body),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    unsupported(&reply).unwrap_or_else(|e| panic!("create with Tty: {e}"));
    assert!(d.all_names().is_empty(), "create with Tty left a container");

    let paused = unique_name("pause");
    run_detached(&d, &paused, &[], &["sleep", "600"]);
    let out = d.docker(["pause", &paused]);
    assert_eq!(out.status.code(), Some(1), "pause: {}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Error response from daemon:") && err.to_lowercase().contains("support"),
        "pause should say rsupd does not support it: {}",
        describe(&out)
    );
    let reply = d
        .api("POST", &format!("/v1.41/containers/{paused}/pause"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    unsupported(&reply).unwrap_or_else(|e| panic!("pause: {e}"));
    assert_eq!(
        d.inspect_format(&paused, "{{.State.Status}} {{.State.Paused}}"),
        "running false"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_are_refused_with_nothing_created() {
    let d = docker_with_image().await;
    let listing = |dir: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let home = d
        .dir()
        .parent()
        .expect("the daemon's dir has a parent")
        .to_owned();
    let before = (listing(&home), listing(d.dir()), listing(d.state_dir()));

    for name in ["../x", "a/b", "x y", ".hidden"] {
        let out = d.docker(["run", "--name", name, IMG, "true"]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "run --name {name:?}: {}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains("Error response from daemon:"),
            "{}",
            describe(&out)
        );
    }
    for mount in ["../../etc:/x", "..:/x", "../v:/x"] {
        let out = d.docker(["run", "--rm", "-v", mount, IMG, "true"]);
        assert!(
            !out.status.success(),
            "run -v {mount:?} was accepted: {}",
            describe(&out)
        );
    }
    for volume in ["..", "../v", "a/b"] {
        let out = d.docker(["volume", "create", volume]);
        assert!(
            !out.status.success(),
            "volume create {volume:?} was accepted: {}",
            describe(&out)
        );
    }
    for network in ["../n", "a/b"] {
        let out = d.docker(["network", "create", network]);
        assert!(
            !out.status.success(),
            "network create {network:?} was accepted: {}",
            describe(&out)
        );
    }

    assert!(d.all_names().is_empty(), "containers: {:?}", d.all_names());
    let volumes = nonempty_lines(&d.docker_ok(["volume", "ls", "-q"]));
    assert!(volumes.is_empty(), "volumes: {volumes:?}");
    let networks = nonempty_lines(&d.docker_ok(["network", "ls", "--format", "{{.Name}}"]));
    assert!(
        !networks.iter().any(|n| n.contains('/') || n.contains("..")),
        "networks: {networks:?}"
    );
    let after = (listing(&home), listing(d.dir()), listing(d.state_dir()));
    assert_eq!(before, after, "files made beside or in the daemon's dirs");
}

/// `docker run`'s common flags reach the container as Docker documents
/// them: -e, -w, -u, --hostname, --entrypoint, and the limits (-m, --cpus,
/// --pids-limit) as inspect reports them.
#[tokio::test(flavor = "multi_thread")]
async fn run_flags_reach_the_container() {
    let d = docker_with_image().await;
    let out = d.docker([
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "65534:65534",
        "--hostname",
        "dockerhost",
        IMG,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u):$(id -g) $(hostname)",
    ]);
    assert_eq!(
        stdout(&out),
        "bar /tmp 65534:65534 dockerhost\n",
        "{}",
        describe(&out)
    );
    let out = d.docker([
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        IMG,
        "from-entrypoint",
    ]);
    assert_eq!(stdout(&out), "from-entrypoint\n", "{}", describe(&out));

    let name = unique_name("limits");
    run_detached(
        &d,
        &name,
        &["-m", "64m", "--cpus", "0.5", "--pids-limit", "32"],
        &["sleep", "600"],
    );
    assert_eq!(
        d.inspect_format(
            &name,
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"
        ),
        "67108864 500000000 32"
    );
    // The limit the container sees (cgroup v1 or v2).
    let out = exec(
        &d,
        &name,
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        ],
    );
    let seen = stdout(&out);
    if out.status.success() {
        assert_eq!(seen.trim(), "67108864", "{}", describe(&out));
    }
}

/// `docker events` streams a container's life as Docker names it (create,
/// start, die, destroy), and `docker stats --no-stream` reports it.
#[tokio::test(flavor = "multi_thread")]
async fn events_and_stats() {
    let d = docker_with_image().await;
    let name = unique_name("ev");
    // --since a moment ago: the events from before the stream was open
    // come too, so there is no race with the run below.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .saturating_sub(5)
        .to_string();
    let mut events = d.docker_spawn(&[
        "events",
        "--since",
        &since,
        "--filter",
        "type=container",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let out = d.docker(["run", "--rm", "--name", &name, IMG, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen
        .iter()
        .any(|l: &String| l == &format!("container destroy {name}"))
    {
        assert!(Instant::now() < deadline, "docker events: {seen:?}");
        match events.next_line(WAIT) {
            Ok(Some(l)) => seen.push(l),
            Ok(None) => panic!("docker events ended: {seen:?} {:?}", events.wait(WAIT)),
            Err(e) => panic!("{e}: {seen:?}"),
        }
    }
    let actions: Vec<&str> = seen
        .iter()
        .filter(|l| l.ends_with(&format!(" {name}")))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let order = ["create", "start", "die", "destroy"];
    let mut at = 0;
    for a in &actions {
        if at < order.len() && *a == order[at] {
            at += 1;
        }
    }
    assert_eq!(at, order.len(), "want {order:?} in order, got {actions:?}");

    let busy = unique_name("stats");
    run_detached(&d, &busy, &["-m", "64m"], &["sleep", "600"]);
    let stats = d.docker_ok([
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.MemUsage}}|{{.PIDs}}",
        &busy,
    ]);
    let parts: Vec<&str> = stats.trim().split('|').collect();
    assert_eq!(parts.len(), 3, "stats: {stats:?}");
    assert_eq!(parts[0], busy, "stats: {stats:?}");
    assert!(parts[1].ends_with("64MiB"), "stats MemUsage: {stats:?}");
    assert!(
        parts[2].parse::<u32>().is_ok_and(|n| n >= 1),
        "stats PIDs: {stats:?}"
    );
}

/// What rsupd's Docker API does not do is refused with a clear message
/// (not a hang, not a silent success) and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn unsupported_commands_are_refused_and_change_nothing() {
    let d = docker_with_image().await;
    let name = unique_name("unsup");
    let id = run_detached(&d, &name, &[], &["sleep", "600"]);
    let renamed = unique_name("renamed");
    let copy = d.dir().join("copied-out");
    let copy_arg = copy.display().to_string();
    let from = format!("{name}:/etc/passwd");
    let mut wrong = Vec::new();
    for args in [
        &["top", &name][..],
        &["rename", &name, &renamed],
        &["unpause", &name],
        &["diff", &name],
        &["commit", &name, "rsuptest/committed:1"],
        &["update", "--memory", "128m", &name],
        &["cp", &from, &copy_arg],
        &["export", &name],
    ] {
        let out = d.docker(args);
        let err = stderr(&out);
        if out.status.success()
            || !(err.contains("not supported") || err.contains("Not Implemented"))
        {
            wrong.push(format!("docker {args:?}: {}", describe(&out)));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    assert_eq!(
        d.inspect_format(&name, "{{.Id}} {{.State.Status}}"),
        format!("{id} running")
    );
    assert_eq!(d.all_names(), [name.as_str()]);
    assert!(!copy.exists(), "docker cp wrote {}", copy.display());
    let images = nonempty_lines(&d.docker_ok(["images", "--format", "{{.Repository}}"]));
    assert_eq!(images, ["rsuptest/busybox"]);
}

/// `docker logs` gives stdout and stderr back on their own streams.
#[tokio::test(flavor = "multi_thread")]
async fn logs_keep_stdout_and_stderr_apart() {
    let d = docker_with_image().await;
    let name = unique_name("streams");
    run_detached(
        &d,
        &name,
        &[],
        &["sh", "-c", "echo to-out; echo to-err >&2"],
    );
    assert_eq!(d.docker_ok(["wait", &name]).trim(), "0");
    let out = d.docker(["logs", &name]);
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("to-out\n", "to-err\n"),
        "{}",
        describe(&out)
    );
}

/// Bind mounts of host directories: read-write, and `:ro` refused writes.
#[tokio::test(flavor = "multi_thread")]
async fn bind_mounts_read_write_and_read_only() {
    let d = docker_with_image().await;
    let host = rsup_tests::TempDir::new();
    std::fs::write(host.path().join("in"), "from-host\n").expect("write");
    let rw = format!("{}:/h", host.path().display());
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        &rw,
        IMG,
        "sh",
        "-c",
        "cat /h/in && echo from-container > /h/out",
    ]);
    assert_eq!(stdout(&out), "from-host\n", "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(host.path().join("out"))
            .ok()
            .as_deref(),
        Some("from-container\n")
    );
    let ro = format!("{}:/h:ro", host.path().display());
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        &ro,
        IMG,
        "sh",
        "-c",
        "echo x > /h/ro-write",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!host.path().join("ro-write").exists(), "wrote through :ro");
    assert_eq!(
        d.docker_ok(["run", "--rm", "-v", &ro, IMG, "cat", "/h/in"]),
        "from-host\n"
    );
}

/// `--restart on-failure:2`: restarted twice, then left exited.
#[tokio::test(flavor = "multi_thread")]
async fn restart_on_failure_stops_after_max_retries() {
    let d = docker_with_image().await;
    let name = unique_name("onfail");
    run_detached(
        &d,
        &name,
        &["--restart", "on-failure:2"],
        &["sh", "-c", "echo attempt; exit 1"],
    );
    let state = wait_inspect(
        &d,
        &name,
        "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}",
        "two restarts, then exited for good",
        |s| s == "2 exited 1",
    )
    .await;
    assert_eq!(state, "2 exited 1");
    assert_eq!(
        d.inspect_format(
            &name,
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        ),
        "on-failure 2"
    );
    let logs = d.docker_ok(["logs", &name]);
    assert_eq!(logs.matches("attempt").count(), 3, "three runs: {logs:?}");
}

/// `docker stop -t 1` of a command that ignores SIGTERM: SIGKILL after the
/// grace period, exit code 137.
#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_after_the_grace_period() {
    let d = docker_with_image().await;
    let name = unique_name("stubborn");
    run_detached(
        &d,
        &name,
        &[],
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    eventually("the trap to be set", WAIT, async || {
        let logs = ok_stdout(&d.docker(["logs", &name]))?;
        if logs.contains("ready") {
            Ok(())
        } else {
            Err(logs)
        }
    })
    .await;
    let started = Instant::now();
    assert_eq!(d.docker_ok(["stop", "-t", "1", &name]).trim(), name);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "stop took {took:?}");
    assert_eq!(
        d.inspect_format(&name, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
}

/// `docker login`, `tag`, `push` and `pull` against a real registry on
/// loopback (Debian's docker-registry with htpasswd): a push without a login
/// is refused; after `login --password-stdin` the push lands (skopeo reads
/// it back with the image's config); the pulled copy runs.
#[tokio::test(flavor = "multi_thread")]
async fn login_tag_push_and_pull_through_a_registry() {
    let d = docker_with_image().await;
    let reg = rsup_tests::Registry::start(rsup_tests::RegistryKind::Htpasswd {
        user: "alice".into(),
        password: "s3cret-pw".into(),
    });
    let target = format!("{}/team/bb:1", reg.host());
    d.docker_ok(["tag", IMG, &target]);
    assert!(
        d.docker_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .any(|l| l == target),
        "the tag is listed"
    );

    let out = d.docker(["push", &target]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "push without login: {}\n{}",
        describe(&out),
        d.log_tail(40)
    );

    let out = d.docker_stdin(
        ["login", "-u", "alice", "--password-stdin", &reg.host()],
        b"wrong-password\n",
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a wrong login: {}",
        describe(&out)
    );
    let out = d.docker_stdin(
        ["login", "-u", "alice", "--password-stdin", &reg.host()],
        b"s3cret-pw\n",
    );
    assert_eq!(out.status.code(), Some(0), "login: {}", describe(&out));
    assert!(
        stdout(&out).contains("Login Succeeded"),
        "{}",
        describe(&out)
    );

    let out = d.docker(["push", &target]);
    assert_eq!(out.status.code(), Some(0), "push: {}", describe(&out));
    assert!(
        stdout(&out).contains("digest: sha256:"),
        "push: {}\n{}",
        describe(&out),
        d.log_tail(30)
    );
    let remote = reg.skopeo_inspect("team/bb:1");
    let local_id = d.docker_ok(["image", "inspect", "--format", "{{.Id}}", IMG]);
    assert_eq!(
        remote["Digest"].as_str().map(str::len),
        Some(71),
        "skopeo sees a manifest: {remote}"
    );
    assert!(!local_id.trim().is_empty());

    // Gone here, pulled back, and it runs.
    d.docker_ok(["rmi", &target]);
    let out = d.docker(["pull", &target]);
    assert_eq!(out.status.code(), Some(0), "pull: {}", describe(&out));
    let out = d.docker(["run", "--rm", &target, "echo", "pulled-and-ran"]);
    assert_eq!(out.status.code(), Some(0), "run: {}", describe(&out));
    assert_eq!(stdout(&out), "pulled-and-ran\n");
    assert!(
        !d.log_tail(2000).contains("s3cret-pw"),
        "the password reached rsupd's log"
    );
}
