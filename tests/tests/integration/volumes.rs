//! Volumes and mounts: named volumes that outlive a container's crash, its
//! removal and a restart of rsupd; `:ro` volumes; bind mounts of host
//! directories; `--read-only` roots with `--tmpfs`; Docker's `--tmpfs`
//! options (`noexec` by default, `exec`, `ro`, size and mode) as the kernel
//! applies them; root writes that vanish with the container; and bad `-v`
//! and `--tmpfs` values refused with nothing created.

use std::fs;
use std::time::Duration;

use rsup_client::proto::ContainerState;
use rsup_tests::{
    Daemon, TempDir, busybox_rootfs, code_of, container_ids, describe, eventually, run_named,
    run_named_ok, stderr, stdout, unique_name,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

/// `rsupctl volume ls` names (first column, header skipped).
fn volume_names(d: &Daemon) -> Vec<String> {
    d.ctl_ok(["volume", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| Some(l.split_whitespace().next()?.to_owned()))
        .collect()
}

/// `rsupctl volume inspect NAME`, element 0.
fn volume_json(d: &Daemon, name: &str) -> serde_json::Value {
    let text = d.ctl_ok(["volume", "inspect", name]);
    let all: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {text:?}: {e}"));
    all[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn named_volume_survives_crash_rm_and_a_new_container() {
    let mut d = Daemon::start().await;
    let out = d.run(
        &[
            "-d",
            "--name",
            "a",
            "-v",
            "data:/data",
            "--restart",
            "always",
        ],
        &["sh", "-c", "echo one >> /data/f; sleep 1000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let first = d.wait_state("a", ContainerState::Running, WAIT).await;

    // Created on first use, shown with its user and its host directory.
    let v = volume_json(&d, "data");
    assert_eq!(v["Name"], "data", "{v}");
    assert_eq!(v["Containers"], serde_json::json!(["a"]), "{v}");
    let mountpoint = v["Mountpoint"].as_str().expect("a mountpoint").to_owned();
    let file = std::path::Path::new(&mountpoint).join("f");
    let read = || fs::read_to_string(&file).unwrap_or_default();
    eventually("the first line", WAIT, async || {
        (read() == "one\n").then_some(()).ok_or_else(read)
    })
    .await;

    // A crash: the policy restarts it, and the volume keeps the first run's line.
    d.ctl_ok(["kill", "-s", "KILL", "a"]);
    eventually("a restarted", WAIT, async || {
        let c = d.client().inspect("a").await.map_err(|e| e.to_string())?;
        (c.state == ContainerState::Running as i32 && c.restart_count >= 1 && c.pid != first.pid)
            .then_some(())
            .ok_or_else(|| format!("{c:?}"))
    })
    .await;
    eventually("two lines", WAIT, async || {
        (read() == "one\none\n").then_some(()).ok_or_else(read)
    })
    .await;

    // Removing the container keeps the volume and its data.
    d.ctl_ok(["rm", "-f", "a"]);
    assert!(volume_names(&d).contains(&"data".to_owned()));
    let out = d.run(&["--rm", "-v", "data:/data"], &["cat", "/data/f"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "one\none\n", "{}", describe(&out));

    // And so does a restart of rsupd.
    d.restart().await;
    assert!(volume_names(&d).contains(&"data".to_owned()));
    let out = run_named_ok(&d, "reader", &["-v", "data:/data:ro"], &["cat", "/data/f"]);
    assert_eq!(out, "one\none\n");

    // In use: refused, with one error line and the gRPC code.
    let out = d.ctl(["volume", "rm", "data"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1 && err.contains("in use"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        code_of("remove_volume", d.client().remove_volume("data").await),
        Code::FailedPrecondition
    );
    assert!(volume_names(&d).contains(&"data".to_owned()));

    // Once its users are gone, it goes.
    for c in d.client().list(true).await.expect("list") {
        d.ctl_ok(["rm", "-f", &c.id]);
    }
    assert!(container_ids(d.client()).await.is_empty());
    assert_eq!(d.ctl_ok(["volume", "rm", "data"]), "data\n");
    assert!(!volume_names(&d).contains(&"data".to_owned()));
    assert!(!std::path::Path::new(&mountpoint).exists(), "{mountpoint}");
    assert_eq!(
        code_of("inspect_volume", d.client().inspect_volume("data").await),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_volume_refuses_writes() {
    let d = Daemon::start().await;
    let out = run_named(
        &d,
        "ro",
        &["-v", "ro1:/data:ro"],
        &["sh", "-c", "touch /data/x 2>&1"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("Read-only file system"),
        "{}",
        describe(&out)
    );
    let v = volume_json(&d, "ro1");
    let mountpoint = v["Mountpoint"].as_str().expect("a mountpoint");
    assert!(!std::path::Path::new(mountpoint).join("x").exists());
}

/// Unmounts a host mount the test made, also when it fails.
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `:ro` covers every mount below the bound directory too (the detached
/// copy is made read-only recursively before it is attached).
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_bind_is_read_only_below_too() {
    let d = Daemon::start().await;
    let host = TempDir::new();
    let sub = host.path().join("sub");
    fs::create_dir(&sub).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "rsup-test"])
        .arg(&sub)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount a tmpfs on {}", sub.display());
    let _guard = HostMount(sub.clone());
    let ro = format!("{}:/host:ro", host.path().display());
    let out = run_named(
        &d,
        "bind",
        &["-v", &ro],
        &[
            "sh",
            "-c",
            "touch /host/sub/new 2>&1; grep ' /host/sub ' /proc/mounts",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("Read-only file system"), "{}", describe(&out));
    assert!(
        text.contains(" ro,") || text.contains(" ro "),
        "{}",
        describe(&out)
    );
    assert!(!sub.join("new").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_mount_and_read_only_root() {
    let d = Daemon::start().await;
    let host = TempDir::new();
    let dir = host.path().to_str().expect("utf-8 path").to_owned();
    fs::write(host.path().join("hello"), "from the host\n").expect("write");

    // Read-only bind: readable, not writable.
    let ro = format!("{dir}:/host:ro");
    let out = run_named_ok(&d, "bind", &["-v", &ro], &["cat", "/host/hello"]);
    assert_eq!(out, "from the host\n");
    let out = run_named(
        &d,
        "bind",
        &["-v", &ro],
        &["sh", "-c", "touch /host/new 2>&1"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!host.path().join("new").exists());

    // Read-write bind: writes show on the host.
    let rw = format!("{dir}:/rw");
    run_named_ok(
        &d,
        "bind",
        &["-v", &rw],
        &["sh", "-c", "echo from inside > /rw/out"],
    );
    assert_eq!(
        fs::read_to_string(host.path().join("out")).expect("written on the host"),
        "from inside\n"
    );

    // A read-only root with a writable tmpfs.
    let name = unique_name("rootro");
    let out = d.run(
        &["--name", &name, "--read-only", "--tmpfs", "/tmp"],
        &[
            "sh",
            "-c",
            "touch /x 2>&1 && exit 10; touch /tmp/x || exit 11; test -e /tmp/x || exit 12",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("Read-only file system"),
        "{}",
        describe(&out)
    );
    let j = d.inspect_json(&name);
    assert_eq!(j["HostConfig"]["ReadonlyRootfs"], true, "{j}");
    // The daemon reports the options it applied (Docker's defaults).
    assert_eq!(
        j["HostConfig"]["Tmpfs"]["/tmp"], "rw,noexec,nosuid,nodev",
        "{j}"
    );
    assert!(!busybox_rootfs().join("x").exists());
}

/// Runs `script` with `--tmpfs /x:OPTIONS` (just `/x` when `opts` is
/// empty) and returns its output and the options `/proc/mounts` shows for
/// `/x` inside (stderr goes to stdout).
fn tmpfs_run(d: &Daemon, name: &str, opts: &str, script: &str) -> (String, Vec<String>) {
    let tmpfs = if opts.is_empty() {
        "/x".to_owned()
    } else {
        format!("/x:{opts}")
    };
    let script = format!("exec 2>&1; {script}; grep ' /x ' /proc/mounts");
    let out = d.run(&["--name", name, "--tmpfs", &tmpfs], &["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{opts}: {}", describe(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/x"))
        .unwrap_or_else(|| panic!("{opts}: no /x in /proc/mounts: {}", describe(&out)));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2], "tmpfs", "{line}");
    let mount_opts = fields[3].split(',').map(str::to_owned).collect();
    (text, mount_opts)
}

#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_options_are_applied_as_docker_does() {
    let d = Daemon::start().await;
    let has = |o: &[String], want: &str| o.iter().any(|x| x == want);
    // A copy of busybox on the tmpfs: by default (Docker's noexec) and with
    // noexec it cannot run (126, permission denied); with exec it runs.
    let run_copy = "cp /bin/busybox /x/busybox && /x/busybox true; echo rc=$?";
    for opts in ["", "noexec", "exec,noexec", "rw,size=8m"] {
        let name = unique_name("tmpfs-noexec");
        let (out, m) = tmpfs_run(&d, &name, opts, run_copy);
        assert!(out.contains("rc=126"), "{opts}: {out}");
        assert!(out.contains("Permission denied"), "{opts}: {out}");
        for flag in ["rw", "noexec", "nosuid", "nodev"] {
            assert!(has(&m, flag), "{opts}: {flag} not in {m:?}");
        }
        let shown = &d.inspect_json(&name)["HostConfig"]["Tmpfs"]["/x"];
        assert!(
            shown
                .as_str()
                .is_some_and(|s| s.starts_with("rw,noexec,nosuid,nodev")),
            "{opts}: {shown}"
        );
    }
    for opts in ["exec", "noexec,exec", "exec,suid,dev"] {
        let (out, m) = tmpfs_run(&d, &unique_name("tmpfs-exec"), opts, run_copy);
        assert!(out.contains("rc=0"), "{opts}: {out}");
        assert!(!has(&m, "noexec"), "{opts}: {m:?}");
        let locked = !opts.ends_with("suid,dev");
        assert_eq!(has(&m, "nosuid"), locked, "{opts}: {m:?}");
        assert_eq!(has(&m, "nodev"), locked, "{opts}: {m:?}");
    }
    // ro: writes fail, and the kernel says ro.
    let write = "touch /x/f 2>&1; echo rc=$?";
    let (out, m) = tmpfs_run(&d, &unique_name("tmpfs-ro"), "ro", write);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(has(&m, "ro") && !has(&m, "rw"), "{m:?}");
    let (out, m) = tmpfs_run(&d, &unique_name("tmpfs-rw"), "ro,rw", write);
    assert!(out.contains("rc=0"), "{out}");
    assert!(has(&m, "rw"), "{m:?}");
    // Size and mode reach the kernel.
    let stat = "stat -c mode=%a /x";
    let (out, m) = tmpfs_run(&d, &unique_name("tmpfs-size"), "size=1m,mode=700", stat);
    assert!(out.contains("mode=700\n"), "{out}");
    assert!(has(&m, "size=1024k") && has(&m, "mode=700"), "{m:?}");
    // Options Docker does not take are refused before anything is made.
    for bad in [
        "/x:mpol=default",
        "/x:noexec,bogus",
        "/x:size=lots",
        "/x:mode=8",
    ] {
        let out = d.run(&["--tmpfs", bad], &["true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", describe(&out));
        assert!(
            stderr(&out).starts_with("error: ") && stderr(&out).contains("tmpfs"),
            "{bad}: {}",
            describe(&out)
        );
    }
    let mut spec = d.spec(&unique_name("tmpfs-bad"), &["true"]);
    spec.tmpfs = vec!["/x:relatime".to_owned()];
    assert_eq!(
        code_of("relatime", d.client().create(spec).await),
        Code::InvalidArgument
    );
    assert_eq!(d.ps_json().len(), 10, "only the good ones were created");
}

#[tokio::test(flavor = "multi_thread")]
async fn root_writes_are_gone_after_rm() {
    let d = Daemon::start().await;
    let marker = format!("/{}", unique_name("root-write"));
    let first = unique_name("writer");
    let script = format!("echo data > {marker} && cat {marker}");
    let out = d.run(&["--name", &first], &["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "data\n");
    d.ctl_ok(["rm", &first]);

    let script = format!("test -e {marker} && echo present || echo absent");
    let out = run_named_ok(&d, "fresh", &[], &["sh", "-c", &script]);
    assert_eq!(out, "absent\n");
    let on_host = busybox_rootfs().join(marker.trim_start_matches('/'));
    assert!(
        !on_host.exists(),
        "{} written into the rootfs",
        on_host.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_bad_input() {
    let d = Daemon::start().await;
    let before = container_ids(d.client()).await;
    let volumes_before = volume_names(&d);
    for (volume, code) in [
        ("data:relative", Code::InvalidArgument),
        ("data:/a/../b", Code::InvalidArgument),
        ("bad name:/x", Code::InvalidArgument),
        ("/nonexistent-rsup-dir:/x", Code::NotFound),
    ] {
        let mut spec = d.spec(&unique_name("bad"), &["true"]);
        spec.volumes = vec![volume.to_owned()];
        assert_eq!(
            code_of(volume, d.client().create(spec).await),
            code,
            "{volume}"
        );
    }
    // Through rsupctl: one error line, exit 125, nothing created.
    let out = d.run(&["-v", "data:relative"], &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with("error: ") && stderr(&out).lines().count() == 1,
        "{}",
        describe(&out)
    );
    assert_eq!(container_ids(d.client()).await, before);
    assert!(d.ps_json().is_empty());
    assert_eq!(volume_names(&d), volumes_before);
    assert!(!volume_names(&d).contains(&"data".to_owned()));
}
