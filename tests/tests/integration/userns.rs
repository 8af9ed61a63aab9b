//! User namespaces (`--userns remap`, `--uidmap`, `--gidmap`): container root
//! is an unprivileged host uid from the remap user's subordinate range, seen
//! from the host's `/proc`; the shifted copy of the rootfs lets container
//! root write `/` and `/etc`; host-root-only files stay out of reach; and the
//! lifecycle (stop, start, kill, exec, logs) works as without one.
//!
//! Each daemon reads temporary subuid/subgid files (never `/etc`), with a
//! range unique to this test process and test, so parallel runs never share
//! host ids.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsup_client::proto;
use rsup_tests::{
    Daemon, TempDir, children_of, code_of, container_ids, describe, eventually, stderr, stdout,
    unique_name,
};
use tonic::Code;

/// First host id of the range of test `slot` in this test process.
fn range_start(slot: u32) -> u32 {
    100_000_000 + ((std::process::id() % 1000) * 8 + slot) * 65536
}

/// A daemon whose remap user `rsup` owns `subuid`/`subgid` (file contents).
async fn daemon_with(files: &TempDir, subuid: &str, subgid: &str) -> Daemon {
    let uid_file = files.path().join("subuid");
    let gid_file = files.path().join("subgid");
    fs::write(&uid_file, subuid).expect("write subuid");
    fs::write(&gid_file, subgid).expect("write subgid");
    Daemon::start_with_args(&[
        "--userns-remap-user".as_ref(),
        "rsup".as_ref(),
        "--subuid-file".as_ref(),
        uid_file.as_os_str(),
        "--subgid-file".as_ref(),
        gid_file.as_os_str(),
    ])
    .await
}

/// A daemon with 65536 ids from `range_start(slot)` for uids and gids.
async fn remap_daemon(files: &TempDir, slot: u32) -> (Daemon, u32) {
    let base = range_start(slot);
    let line = format!("other:1000:10\nrsup:{base}:65536\n");
    (daemon_with(files, &line, &line).await, base)
}

/// Fields of the host's `/proc/PID/status`.
fn host_status(pid: i32) -> std::collections::BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((
                k.trim().to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect()
}

/// All four ids (real, effective, saved, fs) of `Uid:` and `Gid:`.
fn assert_ids(pid: i32, uid: u32, gid: u32, what: &str) {
    let st = host_status(pid);
    assert_eq!(
        st.get("Uid").map(String::as_str),
        Some(format!("{uid} {uid} {uid} {uid}").as_str()),
        "{what} (pid {pid}): {st:?}"
    );
    assert_eq!(
        st.get("Gid").map(String::as_str),
        Some(format!("{gid} {gid} {gid} {gid}").as_str()),
        "{what} (pid {pid}): {st:?}"
    );
}

/// `/proc/PID/uid_map` (or gid_map) with runs of blanks squeezed.
fn proc_map(pid: i32, file: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e}"))
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The init's pid and the id of the running container `name`.
fn init_of(d: &Daemon, name: &str) -> (i32, String) {
    let j = d.inspect_json(name);
    let pid = j["State"]["Pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
        .unwrap_or_else(|| panic!("no init pid: {j}"));
    let id = j["Id"].as_str().unwrap_or_else(|| panic!("no Id: {j}"));
    (pid, id.to_owned())
}

/// The command (the init's only child) of a running container.
async fn command_of(init: i32) -> i32 {
    eventually(
        "the command to appear",
        Duration::from_secs(10),
        async || match children_of(init)[..] {
            [pid] => Ok(pid),
            ref other => Err(format!("children of {init}: {other:?}")),
        },
    )
    .await
}

/// `rsupctl run FLAGS -- COMMAND` that must succeed.
fn run_ok(d: &Daemon, flags: &[&str], command: &[&str]) -> String {
    let out = d.run(flags, command);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    stdout(&out)
}

fn exec_ok(d: &Daemon, name: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", name];
    args.extend_from_slice(cmd);
    d.ctl_ok(args)
}

/// A host directory with a host-root-only file (0600) in it.
fn secret_dir(files: &TempDir) -> PathBuf {
    let dir = files.path().join("secret");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let f = dir.join("key");
    fs::write(&f, "host-root-only\n").expect("write");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).expect("chmod");
    dir
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

#[tokio::test(flavor = "multi_thread")]
async fn remapped_root_is_an_unprivileged_host_uid() {
    let files = TempDir::new();
    let (d, base) = remap_daemon(&files, 0).await;
    let secret = secret_dir(&files);
    let name = unique_name("userns");
    let vol = format!("{}:/secret:ro", secret.display());
    run_ok(
        &d,
        &["-d", "--name", &name, "--userns", "remap", "-v", &vol],
        &["sleep", "1000"],
    );
    let (init, id) = init_of(&d, &name);
    let cmd = command_of(init).await;

    // From the host: init and command run as the first id of the range.
    assert_ids(init, base, base, "the init");
    assert_ids(cmd, base, base, "the command");
    assert_eq!(proc_map(cmd, "uid_map"), format!("0 {base} 65536"));
    assert_eq!(proc_map(cmd, "gid_map"), format!("0 {base} 65536"));
    assert_ne!(
        fs::read_link(format!("/proc/{cmd}/ns/user")).expect("ns"),
        fs::read_link("/proc/self/ns/user").expect("ns"),
        "the command shares the host's user namespace"
    );
    // Inside: root, with the container's capability set, in its own namespace.
    assert_eq!(exec_ok(&d, &name, &["id", "-u"]).trim(), "0");
    assert_eq!(exec_ok(&d, &name, &["id", "-g"]).trim(), "0");
    assert_eq!(
        exec_ok(&d, &name, &["cat", "/proc/self/uid_map"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", &base.to_string(), "65536"]
    );

    // Container root owns its root filesystem (the shifted copy): it writes
    // in /, in /etc, and into a file of the rootfs.
    let out = exec_ok(
        &d,
        &name,
        &[
            "sh",
            "-c",
            "echo one > /new-file && echo two > /etc/new-file && echo extra >> /etc/passwd \
             && cat /new-file /etc/new-file && stat -c %u:%g / /etc /etc/passwd",
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["one", "two", "0:0", "0:0", "0:0"],
        "{out}"
    );
    let upper = d.container_dir(&id).join("upper");
    assert_eq!(owner(&upper.join("new-file")), (base, base));
    assert_eq!(owner(&upper.join("etc/new-file")), (base, base));
    assert_eq!(owner(&upper.join("etc/passwd")), (base, base));
    assert!(
        !fs::read_to_string(rsup_tests::busybox_rootfs().join("etc/passwd"))
            .expect("read")
            .contains("extra"),
        "the rootfs itself was written"
    );

    // It is not host root: a host-root-only file is out of reach, even for
    // container root with CAP_DAC_OVERRIDE.
    let out = d.ctl(["exec", &name, "sh", "-c", "cat /secret/key; echo status=$?"]);
    let text = stdout(&out);
    assert!(text.contains("status=1"), "{}", describe(&out));
    assert!(!text.contains("host-root-only"), "{}", describe(&out));
    // ...which a container without a user namespace does read.
    let plain = unique_name("userns");
    let out = d.run(&["--name", &plain, "-v", &vol], &["cat", "/secret/key"]);
    assert_eq!(stdout(&out).trim(), "host-root-only", "{}", describe(&out));

    // The replies carry the maps.
    let c = d.client().inspect(&name).await.expect("inspect");
    let spec = c.spec.expect("spec");
    assert_eq!(spec.userns, "remap");
    assert_eq!(spec.uid_map, [format!("0:{base}:65536")]);
    assert_eq!(spec.gid_map, [format!("0:{base}:65536")]);
    d.ctl_ok(["rm", "-f", &name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn remapped_user_and_explicit_maps() {
    let files = TempDir::new();
    let (d, base) = remap_daemon(&files, 1).await;
    // -u 1000 inside is base+1000 outside.
    let name = unique_name("userns");
    run_ok(
        &d,
        &["-d", "--name", &name, "--userns", "remap", "-u", "1000"],
        &["sleep", "1000"],
    );
    let (init, _) = init_of(&d, &name);
    let cmd = command_of(init).await;
    assert_ids(cmd, base + 1000, base + 1000, "the command of -u 1000");
    assert_ids(init, base, base, "the init");
    // An exec runs as the container's user, so it too is base+1000 outside.
    assert_eq!(exec_ok(&d, &name, &["id", "-u"]).trim(), "1000");
    d.ctl_ok(["rm", "-f", &name]);

    // A read-only root stays read-only for container root; a tmpfs is
    // writable, and rsup's own files in /etc belong to container root.
    let out = run_ok(
        &d,
        &["--userns", "remap", "--read-only", "--tmpfs", "/tmp"],
        &[
            "sh",
            "-c",
            "echo hi > /tmp/f && cat /tmp/f; touch /x 2>/dev/null; echo touch=$?; \
             stat -c %u /etc/hosts /dev /dev/shm",
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hi", "touch=1", "0", "0", "0"],
        "{out}"
    );

    // Explicit maps inside the range, with a gid map of its own.
    let name = unique_name("userns");
    let uidmap = format!("0:{}:2000", base + 10000);
    let gidmap = format!("0:{}:2000", base + 20000);
    let out = d.run(
        &["--name", &name, "--uidmap", &uidmap, "--gidmap", &gidmap],
        &[
            "sh",
            "-c",
            "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map",
        ],
    );
    let text = stdout(&out);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "0".to_owned(),
            "0".to_owned(),
            format!("0 {} 2000", base + 10000),
            format!("0 {} 2000", base + 20000)
        ],
        "{}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remapped_container_lifecycle() {
    let files = TempDir::new();
    let (mut d, base) = remap_daemon(&files, 2).await;
    let name = unique_name("userns");
    run_ok(
        &d,
        &[
            "-d",
            "--name",
            &name,
            "--userns",
            "remap",
            "--health-cmd",
            "test $(id -u) = 0",
            "--health-interval",
            "200ms",
        ],
        &["sh", "-c", "echo started-as-$(id -u); exec sleep 1000"],
    );
    d.wait_log_line(&name, "started-as-0", Duration::from_secs(10))
        .await;
    eventually("healthy", Duration::from_secs(15), async || {
        let s = d.inspect_json(&name)["State"]["Health"]["Status"].clone();
        if s == "healthy" {
            Ok(())
        } else {
            Err(format!("health {s}"))
        }
    })
    .await;
    // Stop (SIGTERM reaches the command through the init), start again.
    d.ctl_ok(["stop", "-t", "5", &name]);
    d.ctl_ok(["start", &name]);
    let (init, _) = init_of(&d, &name);
    assert_ids(init, base, base, "the init after a restart");
    assert_eq!(exec_ok(&d, &name, &["id", "-u"]).trim(), "0");
    d.ctl_ok(["restart", &name]);
    let (init2, _) = init_of(&d, &name);
    assert_ne!(init, init2);
    assert_ids(
        command_of(init2).await,
        base,
        base,
        "the command after restart",
    );
    // Files written survive a restart (same upper dir).
    exec_ok(&d, &name, &["sh", "-c", "echo kept > /root/kept"]);
    d.ctl_ok(["restart", &name]);
    assert_eq!(exec_ok(&d, &name, &["cat", "/root/kept"]).trim(), "kept");
    // A restart of rsupd re-adopts it as it is.
    let (before, _) = init_of(&d, &name);
    d.restart().await;
    let (after, _) = init_of(&d, &name);
    assert_eq!(before, after, "the container was restarted with rsupd");
    assert_ids(after, base, base, "the init after an rsupd restart");
    assert_eq!(exec_ok(&d, &name, &["id", "-u"]).trim(), "0");
    d.ctl_ok(["kill", &name]);
    d.wait_state(
        &name,
        proto::ContainerState::Exited,
        Duration::from_secs(10),
    )
    .await;
    let logs = d.ctl_ok(["logs", &name]);
    assert!(logs.matches("started-as-0").count() >= 3, "{logs}");
    d.ctl_ok(["rm", &name]);
    // The shifted copy is shared and kept for the next container.
    let cache = d.state_dir().join("userns");
    let maps: Vec<_> = fs::read_dir(&cache).expect("cache").collect();
    assert_eq!(maps.len(), 1, "{maps:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn userns_bad_input() {
    let files = TempDir::new();
    let (d, base) = remap_daemon(&files, 3).await;
    let before = container_ids(d.client()).await;
    let strings = |v: &[String]| v.to_vec();
    let spec = |uid: &[String], gid: &[String], mode: &str| proto::ContainerSpec {
        userns: mode.into(),
        uid_map: strings(uid),
        gid_map: strings(gid),
        ..d.spec(&unique_name("bad"), &["true"])
    };
    let outside = "0:5000:1000".to_owned();
    let cases = [
        (
            "uid map outside the range",
            spec(std::slice::from_ref(&outside), &[], ""),
        ),
        (
            "gid map outside the range",
            spec(
                &[format!("0:{base}:10")],
                std::slice::from_ref(&outside),
                "",
            ),
        ),
        (
            "uid 0 unmapped",
            spec(&[format!("1:{base}:10")], &[], "remap"),
        ),
        (
            "overlapping",
            spec(
                &[format!("0:{base}:10"), format!("5:{}:10", base + 100)],
                &[],
                "",
            ),
        ),
        ("not C:H:S", spec(&["0:1".to_owned()], &[], "")),
        (
            "host with maps",
            spec(&[format!("0:{base}:10")], &[], "host"),
        ),
        ("unknown mode", spec(&[], &[], "private")),
    ];
    for (what, s) in cases {
        let code = code_of(what, d.client().create(s).await);
        assert_eq!(code, Code::InvalidArgument, "{what}");
    }
    // -u outside the map.
    let mut s = spec(&[format!("0:{base}:100")], &[], "");
    s.user = "1000".into();
    assert_eq!(
        code_of("user outside the map", d.client().create(s).await),
        Code::InvalidArgument
    );
    assert_eq!(container_ids(d.client()).await, before, "a create was left");

    // Through rsupctl: the reason, and nothing started.
    let out = d.run(&["--uidmap", &outside], &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "host ids 5000-5999 are outside the subuid ranges of rsup ({base}-{})",
            base + 65535
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(container_ids(d.client()).await, before, "rsupctl left one");
    assert!(!d.state_dir().join("userns").exists(), "a copy was made");

    // No range for the remap user: remap is refused with the reason.
    let files2 = TempDir::new();
    let empty = daemon_with(&files2, "", "").await;
    let out = empty.run(&["--userns", "remap"], &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr(&out).contains("subuid"), "{}", describe(&out));
    assert_eq!(
        code_of(
            "remap without ranges",
            empty
                .client()
                .create(proto::ContainerSpec {
                    userns: "remap".into(),
                    ..empty.spec(&unique_name("bad"), &["true"])
                })
                .await
        ),
        Code::FailedPrecondition
    );
    assert!(container_ids(empty.client()).await.is_empty());
    // Containers without a user namespace still run there.
    let out = empty.run(&[], &["id", "-u"]);
    assert_eq!(stdout(&out).trim(), "0", "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn remapped_root_cannot_mount_even_with_sys_admin() {
    let files = TempDir::new();
    let (d, _) = remap_daemon(&files, 4).await;
    // The mount and network namespaces belong to the host's user namespace:
    // CAP_SYS_ADMIN and CAP_NET_ADMIN inside the container's do not reach
    // them (stricter than Docker's userns-remap).
    let script = "mkdir -p /mnt; mount -t tmpfs x /mnt 2>&1; echo mount=$?; \
                  ip link set lo down 2>&1; echo link=$?; echo done=1";
    let flags = [
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
    ];
    let marker = |out: &str, key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    };
    let mut remap = vec!["--userns", "remap"];
    remap.extend_from_slice(&flags);
    let out = run_ok(&d, &remap, &["sh", "-c", script]);
    assert_eq!(marker(&out, "done").as_deref(), Some("1"), "{out}");
    assert_ne!(marker(&out, "mount").as_deref(), Some("0"), "{out}");
    assert_ne!(marker(&out, "link").as_deref(), Some("0"), "{out}");
    // The same flags without a user namespace can: the check is not vacuous.
    let out = run_ok(&d, &flags, &["sh", "-c", script]);
    assert_eq!(marker(&out, "mount").as_deref(), Some("0"), "{out}");
    assert_eq!(marker(&out, "link").as_deref(), Some("0"), "{out}");
}

/// An image's layers get shifted copies too: the merged root (the whiteout
/// of the second layer included) is container root's, and the layers in the
/// image store keep their owners.
#[tokio::test(flavor = "multi_thread")]
async fn remapped_container_from_an_image() {
    use rsup_runtime::imagestore::ImageConfig;
    use rsup_runtime::imagestore::build::{self, BuildOptions, TarEntry};

    let files = TempDir::new();
    let (d, base) = remap_daemon(&files, 6).await;
    let mut root = build::busybox_rootfs(
        Path::new("/bin/busybox"),
        &["sh", "cat", "test", "echo", "id", "touch", "stat", "sleep"],
    );
    root.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n",
    ));
    let mut layers = build::two_layers(root);
    // An opaque directory in the second layer hides the first layer's data/a.txt.
    layers[1].push(TarEntry::opaque("data"));
    let archive = files.path().join("img.tar");
    build::oci_layout_tar(
        &archive,
        &layers,
        &ImageConfig {
            cmd: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        },
        &BuildOptions::default(),
    )
    .expect("building the image");
    let arg = archive.display().to_string();
    d.ctl_ok(["image", "import", arg.as_str(), "--name", "remapped"]);

    let name = unique_name("ns-img");
    let out = d.ctl([
        "run",
        "-d",
        "--name",
        name.as_str(),
        "--userns",
        "remap",
        "remapped",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let c = d
        .wait_state(
            &name,
            proto::ContainerState::Running,
            Duration::from_secs(20),
        )
        .await;
    assert_ids(c.pid, base, base, "the image container's init");
    let v = d.inspect_json(&name);
    assert_eq!(v["HostConfig"]["UsernsMode"], "remap", "{v}");
    assert_eq!(
        v["HostConfig"]["UIDMaps"],
        serde_json::json!([format!("0:{base}:65536")]),
        "{v}"
    );
    assert_eq!(v["Config"]["Image"], "remapped", "{v}");
    let out = d.ctl_ok([
        "exec",
        name.as_str(),
        "sh",
        "-c",
        "id -u; test -e /etc/removed.txt && echo whiteout-lost || echo whiteout-kept; \
         test -e /data/a.txt && echo opaque-lost || echo opaque-kept; cat /data/b.txt; \
         touch /etc/new && stat -c %u /etc/new",
    ]);
    assert_eq!(
        out, "0\nwhiteout-kept\nopaque-kept\nb from layer 2\n0\n",
        "the merged root as the image defines it, owned by container root"
    );
    // The store's layers are untouched: still owned by host root.
    let layers_dir = d.state_dir().join("images").join("layers");
    for layer in fs::read_dir(&layers_dir).expect("layers").flatten() {
        let etc = layer.path().join("diff").join("etc");
        if let Ok(m) = fs::metadata(&etc) {
            assert_eq!(m.uid(), 0, "{} keeps its owner", etc.display());
        }
    }
    d.ctl_ok(["rm", "-f", name.as_str()]);
}
