//! Robust state: every failure leaves the state as it was, and the operator
//! keeps control on a full disk.
//!
//! * Same-name creates racing from 20 tasks for 30 s, and five `run` of one
//!   name, leave exactly one lease per container: a refused create gives its
//!   address back (no RESOURCE_EXHAUSTED from leaked leases).
//! * With the state dir on a 20 MB tmpfs filled by a container that logs in a
//!   loop: the log-dropped count grows, creates of containers, networks and
//!   supervisors fail with RESOURCE_EXHAUSTED naming the state device and
//!   leave nothing, logging resumes once there is space, stop and rm -f work
//!   (with warnings), no temporary file survives a restart of rsupd, and
//!   everything works once space is freed.
//! * `rm -f` of a container whose directory (or veth, or state.json) was
//!   deleted by hand finishes the rest and succeeds.
//! * A start that fails (its bind source vanished after the create) leaves
//!   no cgroup, veth or netns mount, and the container keeps its lease.
//!
//! Subnets are carved from the daemon's own block (see networks.rs), so
//! concurrent test daemons never share one.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rsup_client::proto::{self, ContainerState};
use rsup_tests::{
    Daemon, TempDir, code_of, describe, eventually, host_links, mounts_mentioning, net_identity,
    stderr, stdout,
};
use tokio::task::JoinSet;
use tonic::Code;

/// Bound of any wait for something rsupd does within a few seconds.
const WAIT: Duration = Duration::from_secs(30);

/// `10.A.B.<start>/<prefix>` of the daemon's spare block: its default
/// subnet `10.X.B.0/24` moved up by 64 in the second octet.
fn subnet(d: &Daemon, start: u8, prefix: u8) -> String {
    let (_, default) = net_identity(d.state_dir());
    let o: Vec<u8> = default
        .split(['.', '/'])
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(o.len(), 5, "unexpected default subnet {default}");
    format!("10.{}.{}.{start}/{prefix}", o[1] + 64, o[2])
}

fn create_network(d: &Daemon, name: &str, subnet: &str) {
    d.ctl_ok(["network", "create", "--subnet", subnet, name]);
}

/// (container name, ip) of every lease of `network`.
async fn leases(d: &Daemon, network: &str) -> Vec<(String, String)> {
    let n = d
        .client()
        .inspect_network(network)
        .await
        .unwrap_or_else(|e| panic!("inspect network {network}: {e}"));
    let mut l: Vec<(String, String)> = n
        .containers
        .into_iter()
        .map(|c| (c.container, c.ip))
        .collect();
    l.sort();
    l
}

/// Names of the containers attached to `network`.
async fn attached(d: &Daemon, network: &str) -> Vec<String> {
    let mut names: Vec<String> = d
        .client()
        .list(true)
        .await
        .expect("list")
        .into_iter()
        .filter(|c| {
            c.spec
                .as_ref()
                .is_some_and(|s| s.networks.iter().any(|n| n == network))
        })
        .map(|c| c.name)
        .collect();
    names.sort();
    names
}

/// Asserts that every container on `network` has one lease and nothing
/// else has one.
async fn assert_leases_match(d: &Daemon, network: &str) {
    let l = leases(d, network).await;
    let names: Vec<String> = l.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names,
        attached(d, network).await,
        "leases of {network}: {l:?}"
    );
}

/// The host end of the container's veth on `network`.
fn veth_of(d: &Daemon, container: &str, network: &str) -> String {
    let j = d.inspect_json(container);
    j["NetworkSettings"]["Networks"][network]["HostInterfaceName"]
        .as_str()
        .unwrap_or_else(|| panic!("no veth of {container} on {network}: {j}"))
        .to_owned()
}

/// Every cgroup directory named `id` (a container id: 64 hex digits, found
/// nowhere else) in the host's cgroup hierarchies.
fn cgroups_named(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if e.file_name() == id {
                out.push(p);
            } else if depth > 0 {
                walk(&p, id, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), id, 10, &mut out);
    out
}

/// `rsupctl run -d` that must succeed; returns the container id.
fn run_detached(d: &Daemon, flags: &[&str], command: &[&str]) -> String {
    let mut all = vec!["-d"];
    all.extend_from_slice(flags);
    let out = d.run(&all, command);
    assert!(out.status.success(), "run {flags:?}\n{}", describe(&out));
    stdout(&out).trim().to_owned()
}

// ---------------------------------------------------------------------------
// Leases

#[tokio::test(flavor = "multi_thread")]
async fn five_runs_of_one_name_keep_one_lease() {
    let d = Daemon::start().await;
    create_network(&d, "five", &subnet(&d, 0, 28));
    for i in 0..5 {
        let out = d.run(
            &["-d", "--name", "lx", "--network", "five"],
            &["sleep", "100000"],
        );
        assert_eq!(out.status.success(), i == 0, "run #{i}\n{}", describe(&out));
        if i > 0 {
            assert!(
                stderr(&out).contains("already exists"),
                "{}",
                describe(&out)
            );
        }
    }
    assert_eq!(leases(&d, "five").await.len(), 1);
    assert_leases_match(&d, "five").await;
    d.ctl_ok(["rm", "-f", "lx"]);
    assert_eq!(leases(&d, "five").await, Vec::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn same_name_creates_racing_for_30s_leak_no_lease() {
    let d = Daemon::start().await;
    // 29 addresses: the 20 racers can hold at most 20 at once, so a single
    // leaked lease per 10 refused creates would exhaust it within seconds.
    create_network(&d, "race", &subnet(&d, 32, 27));
    let mut spec = d.spec("lx", &["sleep", "100000"]);
    spec.networks = vec!["race".into()];
    let created = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (c, spec) = (d.client().clone(), spec.clone());
        let (created, refused) = (created.clone(), refused.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match c.create(spec.clone()).await {
                    Ok(ct) => {
                        created.fetch_add(1, Ordering::Relaxed);
                        // Free the name again, for the race to go on.
                        match c.remove(&ct.id, true).await {
                            Ok(()) => {}
                            Err(e) if e.code() == Some(Code::NotFound) => {}
                            Err(e) => return Err(format!("remove: {e}")),
                        }
                    }
                    Err(e) if e.code() == Some(Code::AlreadyExists) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(format!("create: {:?}: {e}", e.code())),
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").unwrap_or_else(|e| panic!("{e}"));
    }
    let (created, refused) = (
        created.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!("{created} creates, {refused} refused");
    assert!(
        created > 1 && refused > 0,
        "{created} creates, {refused} refused: no race"
    );
    assert_leases_match(&d, "race").await;
    // No directory of a refused create is left.
    let dirs = fs::read_dir(d.state_dir().join("containers"))
        .expect("ls")
        .count();
    assert_eq!(dirs, d.client().list(true).await.expect("list").len());
    // A restarted rsupd finds nothing to reconcile.
    let mut d = d;
    d.restart().await;
    assert_leases_match(&d, "race").await;
    let log = fs::read_to_string(d.dir().join("rsupd.log")).expect("log");
    assert!(!log.contains("reconciled a lease"), "{log}");
}

// ---------------------------------------------------------------------------
// A full state device

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    st.blocks_available() * st.fragment_size()
}

/// Every temporary file of the store's atomic writes under `root`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, out),
                Ok(t) if t.is_file() && name.starts_with('.') && name.ends_with(".tmp") => {
                    out.push(p)
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

/// The log-dropped count (bytes, records) `rsupctl inspect` shows.
fn log_dropped(d: &Daemon, name: &str) -> (u64, u64) {
    let j = d.inspect_json(name);
    let n = |k: &str| j["LogDropped"][k].as_u64().unwrap_or(0);
    (n("Bytes"), n("Records"))
}

/// Waits until the tmpfs holding `path` is full (less than one page free).
async fn wait_full(path: &Path) {
    eventually(
        "the state device to fill up",
        WAIT,
        async || match free_bytes(path) {
            f if f < 4096 => Ok(()),
            f => Err(format!("{f} bytes free")),
        },
    )
    .await;
}

/// Asserts that `what` failed with RESOURCE_EXHAUSTED naming the state
/// device (its mount point is the state dir).
fn assert_no_space<T: std::fmt::Debug>(d: &Daemon, what: &str, r: Result<T, rsup_client::Error>) {
    let msg = match &r {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    };
    assert_eq!(code_of(what, r), Code::ResourceExhausted, "{what}: {msg}");
    let state = d.state_dir().display().to_string();
    assert!(
        msg.contains("no space left on the state device tmpfs")
            && msg.contains(&format!("mounted at {state}")),
        "{what}: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_device_keeps_the_operator_in_control() {
    // The state dir is a 20 MB tmpfs; the harness unmounts it with the
    // daemon's directory, whatever happens here.
    let mut d = Daemon::start_with_state_setup::<&str>(&[], |state| {
        fs::create_dir_all(state).expect("mkdir state");
        nix::mount::mount(
            Some("tmpfs"),
            state,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=20m,mode=0710"),
        )
        .expect("mount tmpfs");
    })
    .await;
    let state = d.state_dir().to_path_buf();
    create_network(&d, "full", &subnet(&d, 64, 27));
    // Room to free later, to see the log writer resume.
    let ballast = state.join("ballast");
    fs::write(&ballast, vec![7u8; 2 << 20]).expect("ballast");
    run_detached(
        &d,
        &["--name", "idle", "--network", "full"],
        &["sleep", "100000"],
    );
    run_detached(
        &d,
        &[
            "--name",
            "hog",
            "--network",
            "full",
            "--log-max-size",
            "100000000",
        ],
        &[
            "sh",
            "-c",
            "while true; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done",
        ],
    );
    wait_full(&state).await;

    // The log writer drops what it cannot write, counts it, and the count
    // is readable while the disk is full.
    let first = eventually("a log-dropped count", WAIT, async || {
        match log_dropped(&d, "hog") {
            (0, _) => Err("nothing dropped yet".to_string()),
            c => Ok(c),
        }
    })
    .await;
    eventually("the log-dropped count to grow", WAIT, async || {
        let now = log_dropped(&d, "hog");
        if now.0 > first.0 && now.1 > first.1 {
            Ok(())
        } else {
            Err(format!("{now:?} after {first:?}"))
        }
    })
    .await;

    // Creates are refused with RESOURCE_EXHAUSTED naming the device, and
    // leave nothing: no container, lease, directory or temporary file.
    let c = d.client().clone();
    let dirs_before = fs::read_dir(state.join("containers")).expect("ls").count();
    let leases_before = leases(&d, "full").await;
    let mut spec = d.spec("new", &["true"]);
    spec.networks = vec!["full".into()];
    assert_no_space(&d, "Create", c.create(spec.clone()).await);
    spec.networks = vec!["none".into()];
    assert_no_space(&d, "Create --network none", c.create(spec).await);
    assert_no_space(
        &d,
        "Networks.Create",
        c.create_network(proto::CreateNetworkRequest {
            name: "other".into(),
            subnet: subnet(&d, 128, 27),
            gateway: String::new(),
            internal: false,
        })
        .await,
    );
    assert_no_space(
        &d,
        "Supervisors.Create",
        c.create_supervisor(proto::CreateSupervisorRequest {
            name: "sup".into(),
            strategy: "one_for_one".into(),
            intensity: 3,
            period_ms: 5000,
            parent: String::new(),
        })
        .await,
    );
    let out = d.ctl([
        "network",
        "create",
        "--subnet",
        &subnet(&d, 128, 27),
        "other2",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no space left on the state device"),
        "{}",
        describe(&out)
    );
    let names: BTreeSet<String> = c
        .list(true)
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["hog", "idle"].map(String::from).into());
    assert_eq!(leases(&d, "full").await, leases_before);
    assert_eq!(
        fs::read_dir(state.join("containers")).expect("ls").count(),
        dirs_before
    );
    assert_eq!(temp_files(&state), Vec::<PathBuf>::new());

    // Space comes back: the writer resumes (and fills it again).
    let log = d.inspect_json("hog")["LogPath"]
        .as_str()
        .expect("LogPath")
        .to_owned();
    let size = fs::metadata(&log).expect("log").len();
    fs::remove_file(&ballast).expect("rm ballast");
    eventually(
        "the log writer to resume",
        WAIT,
        async || match fs::metadata(&log).map(|m| m.len()) {
            Ok(now) if now > size + (1 << 20) => Ok(()),
            other => Err(format!("{other:?} after {size}")),
        },
    )
    .await;
    wait_full(&state).await;

    // stop and rm -f act even though the state cannot be saved, and say so.
    let out = d.ctl(["stop", "-t", "1", "hog"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(
            "warning: container hog: its state is not saved (no space left on the state device"
        ),
        "{}",
        describe(&out)
    );
    assert_eq!(
        d.client().inspect("hog").await.expect("inspect").state(),
        ContainerState::Exited
    );
    let idle_id = d.client().inspect("idle").await.expect("inspect").id;
    let out = d.ctl(["rm", "-f", "idle"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!d.container_dir(&idle_id).exists());
    assert_eq!(
        leases(&d, "full").await.len(),
        1,
        "idle's lease is released"
    );

    // A restart with the disk still full: no temporary file is left.
    d.restart().await;
    assert_eq!(temp_files(&state), Vec::<PathBuf>::new());
    assert_eq!(
        d.client().inspect("hog").await.expect("inspect").state(),
        ContainerState::Exited
    );

    // Free the space: everything works again.
    let out = d.ctl(["rm", "-f", "hog"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(free_bytes(&state) > 10 << 20, "{} free", free_bytes(&state));
    run_detached(
        &d,
        &["--name", "after", "--network", "full"],
        &["sh", "-c", "echo back; sleep 100000"],
    );
    d.wait_log_line("after", "back", WAIT).await;
    d.ctl_ok([
        "network",
        "create",
        "--subnet",
        &subnet(&d, 128, 27),
        "other",
    ]);
    d.ctl_ok(["supervisor", "create", "sup"]);
    d.ctl_ok(["stop", "-t", "1", "after"]);
    d.ctl_ok(["rm", "after"]);
    d.ctl_ok(["network", "rm", "other"]);
    d.ctl_ok(["supervisor", "rm", "sup"]);
    assert_eq!(leases(&d, "full").await, Vec::new());
}

// ---------------------------------------------------------------------------
// Idempotent removal and failed starts

#[tokio::test(flavor = "multi_thread")]
async fn rm_f_finishes_what_was_deleted_by_hand() {
    let d = Daemon::start().await;
    create_network(&d, "byhand", &subnet(&d, 96, 28));
    // A running container whose whole directory goes.
    let gone = run_detached(
        &d,
        &["--name", "gone", "--network", "byhand"],
        &["sleep", "100000"],
    );
    // An exited one that loses its veth and its state.json.
    let half = run_detached(&d, &["--name", "half", "--network", "byhand"], &["true"]);
    d.wait_state("gone", ContainerState::Running, WAIT).await;
    d.wait_state("half", ContainerState::Exited, WAIT).await;
    let veths = [veth_of(&d, "gone", "byhand"), veth_of(&d, "half", "byhand")];
    let (prefix, _) = net_identity(d.state_dir());
    for v in &veths {
        assert!(host_links(&prefix).contains(v), "{v} missing");
    }
    assert!(!cgroups_named(&gone).is_empty(), "no cgroup of gone");

    let dir = d.container_dir(&gone);
    nix::mount::umount2(&dir.join("netns"), nix::mount::MntFlags::MNT_DETACH).expect("umount");
    fs::remove_dir_all(&dir).expect("rm -rf");
    let out = std::process::Command::new("ip")
        .args(["link", "del", &veths[1]])
        .output()
        .expect("ip");
    assert!(out.status.success(), "{}", describe(&out));
    fs::remove_file(d.container_dir(&half).join("state.json")).expect("rm state.json");

    for name in ["gone", "half"] {
        let out = d.ctl(["rm", "-f", name]);
        assert!(out.status.success(), "rm -f {name}\n{}", describe(&out));
    }
    assert_eq!(d.client().list(true).await.expect("list"), Vec::new());
    assert_eq!(leases(&d, "byhand").await, Vec::new());
    for v in &veths {
        assert!(!host_links(&prefix).contains(v), "{v} left");
    }
    for id in [&gone, &half] {
        assert_eq!(cgroups_named(id), Vec::<PathBuf>::new());
        assert!(!d.container_dir(id).exists());
        assert_eq!(
            mounts_mentioning(&d.container_dir(id)),
            Vec::<String>::new()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_start_leaves_nothing_but_keeps_the_lease() {
    let d = Daemon::start().await;
    create_network(&d, "fail", &subnet(&d, 112, 28));
    let src = TempDir::new();
    // A file: a missing directory source makes the shim create a file
    // target in the upper dir, which a later start cannot mount a
    // directory on.
    let data = src.path().join("data");
    fs::write(&data, "x").expect("write");
    let bind = format!("{}:/data", data.display());
    let out = d.ctl([
        "create",
        "--name",
        "late",
        "--network",
        "fail",
        "-v",
        &bind,
        "--rootfs",
        &rsup_tests::busybox_rootfs().display().to_string(),
        "--",
        "sleep",
        "100000",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let id = d.client().inspect("late").await.expect("inspect").id;
    let lease = leases(&d, "fail").await;
    assert_eq!(lease.len(), 1);
    // The bind source vanishes between the create and the start.
    fs::remove_file(&data).expect("rm");
    let out = d.ctl(["start", "late"]);
    assert!(!out.status.success(), "{}", describe(&out));

    let c = d.client().inspect("late").await.expect("inspect");
    assert_eq!(c.state(), ContainerState::Created);
    assert_eq!(c.pid, 0);
    assert_eq!(leases(&d, "fail").await, lease, "the lease stays");
    assert_eq!(cgroups_named(&id), Vec::<PathBuf>::new());
    let (prefix, _) = net_identity(d.state_dir());
    let veth = veth_of(&d, "late", "fail");
    assert!(!host_links(&prefix).contains(&veth), "{veth} left");
    assert_eq!(
        mounts_mentioning(&d.container_dir(&id)),
        Vec::<String>::new()
    );
    let state = d.state_json(&id).expect("state.json");
    assert_eq!(state["shim_pid"], 0, "{state}");

    // Exactly as before: once the source is back, it starts.
    fs::write(&data, "x").expect("write");
    d.ctl_ok(["start", "late"]);
    d.wait_state("late", ContainerState::Running, WAIT).await;
    assert!(host_links(&prefix).contains(&veth));
    assert_eq!(leases(&d, "fail").await, lease);
    d.ctl_ok(["rm", "-f", "late"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_at_start_fixes_leases_and_reports_them() {
    let (mut d, metrics) = Daemon::start_with_metrics(&[]).await;
    create_network(&d, "rec", &subnet(&d, 144, 28));
    run_detached(
        &d,
        &["--name", "kept", "--network", "rec"],
        &["sleep", "100000"],
    );
    let lease = leases(&d, "rec").await;
    assert_eq!(lease.len(), 1);
    // While rsupd is down the record loses kept's lease and gains one of
    // a container that does not exist.
    d.stop();
    let path = d.state_dir().join("networks/rec.json");
    let mut net: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    let orphan_ip = subnet(&d, 157, 32).replace("/32", "");
    let orphan = "f".repeat(64);
    net["pool"]["leases"] = serde_json::json!({ orphan_ip.clone(): orphan });
    fs::write(&path, serde_json::to_vec(&net).expect("json")).expect("write");
    let since = std::time::SystemTime::now();
    d.start_again().await;

    assert_eq!(leases(&d, "rec").await, lease);
    // Both fixes are reported as events (and in the log).
    let mut events = d
        .client()
        .events(proto::EventsRequest {
            types: vec!["reconcile".into()],
            containers: Vec::new(),
            since: Some(since.into()),
        })
        .await
        .expect("events");
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("not ended");
        assert_eq!(
            (e.subject_type.as_str(), e.subject.as_str()),
            ("network", "rec")
        );
        got.push((
            e.attributes["action"].clone(),
            e.attributes["owner"].clone(),
            e.attributes["ip"].clone(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("released".to_string(), orphan, orphan_ip),
            (
                "restored".to_string(),
                "kept".to_string(),
                lease[0].1.clone()
            ),
        ]
    );
    let log = fs::read_to_string(d.dir().join("rsupd.log")).expect("log");
    assert_eq!(log.matches("reconciled a lease").count(), 2, "{log}");

    // Leases and containers per network, and the log-dropped counter.
    let (code, body) = rsup_tests::http_get(metrics, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200);
    for want in [
        "rsup_network_leases{network=\"rec\"} 1",
        "rsup_network_containers{network=\"rec\"} 1",
        "# TYPE rsup_container_log_dropped_bytes_total counter",
    ] {
        assert!(body.lines().any(|l| l == want), "no {want:?} in\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("rsup_container_log_dropped_bytes_total{")
                && l.contains("name=\"kept\"")
                && l.ends_with(" 0")),
        "{body}"
    );
    d.ctl_ok(["rm", "-f", "kept"]);
}
