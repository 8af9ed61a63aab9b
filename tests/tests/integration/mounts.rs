//! The host boundary of mounts: mount targets are resolved inside the
//! container's root by fd, so a symlink in the image or rootfs, or one a
//! container left in a named volume, never leads a `-v` or `--tmpfs` mount
//! (nor the directories and files made for it) out of the root, also under
//! `--userns remap`; targets on procfs or sysfs are refused; `/dev` holds
//! the container's own device nodes, so chmod and chown inside leave the
//! host's nodes alone; /etc/hosts and friends are bind-mounted from the
//! container's directory, never written through an image's symlink; and the
//! command is looked up inside the container after the mounts, as Docker
//! does (a missing one exits 127).
//!
//! Each test touches on the host only what it made under its own [`TempDir`]:
//! every hostile symlink points at a canary directory or file of that
//! TempDir (never a system path), and the test asserts the canary stays as
//! it was. The /dev test reads the host's /dev nodes and changes nodes only
//! after checking that the container's are not the host's.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rsup_tests::{Daemon, TempDir, busybox_rootfs, describe, stderr, stdout, unique_name};

/// A copy of the busybox rootfs under `dir`, to plant symlinks in.
fn own_rootfs(dir: &Path) -> PathBuf {
    let dst = dir.join("rootfs");
    let out = Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(&dst)
        .output()
        .expect("cp");
    assert!(out.status.success(), "cp -a: {}", describe(&out));
    dst
}

/// `rsupctl run --rootfs ROOTFS --name <unique> FLAGS... -- COMMAND...`.
fn run_in(d: &Daemon, rootfs: &Path, flags: &[&str], command: &[&str]) -> Output {
    let name = unique_name("mnt");
    let mut args: Vec<&str> = vec!["run", "--rootfs"];
    let root = rootfs.to_str().expect("utf-8 path");
    args.push(root);
    args.extend(["--name", name.as_str()]);
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    d.ctl(&args)
}

/// Every entry under `dir`, recursively (for messages and emptiness).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&e.path()));
            }
        }
    }
    out
}

fn assert_untouched(canary: &Path, what: &str) {
    let found = tree(canary);
    assert!(
        found.is_empty(),
        "{what}: the canary {} outside the root got {found:?}",
        canary.display()
    );
}

/// The canary dir of `tmp` and, in `rootfs`, `/evil` pointing at it by its
/// absolute host path.
fn plant_evil(tmp: &TempDir, rootfs: &Path) -> PathBuf {
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).expect("mkdir canary");
    symlink(&canary, rootfs.join("evil")).expect("ln -s");
    canary
}

/// The hostile mounts of every symlinked-target test: a named volume, a host
/// directory, a host file and a tmpfs, each under `/evil`.
fn hostile_mounts(tmp: &TempDir) -> Vec<Vec<String>> {
    let dir = tmp.path().join("srcdir");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("marker"), "marker\n").expect("write");
    let file = tmp.path().join("srcfile");
    fs::write(&file, "src\n").expect("write");
    let vol = unique_name("v");
    vec![
        vec!["-v".into(), format!("{vol}:/evil/x")],
        vec!["-v".into(), format!("{}:/evil/x", dir.display())],
        vec!["-v".into(), format!("{}:/evil/deep/f", file.display())],
        vec!["--tmpfs".into(), "/evil/x".into()],
    ]
}

/// Runs every hostile mount under `/evil` of `rootfs`: first with the
/// symlink dangling inside the root (the start must fail, nothing made
/// outside), then with its target made inside the root (the mount lands
/// there and works). `extra` flags go to every run.
fn symlinked_targets_stay_inside(d: &Daemon, tmp: &TempDir, rootfs: &Path, extra: &[&str]) {
    let canary = plant_evil(tmp, rootfs);
    let mounts = hostile_mounts(tmp);
    for m in &mounts {
        let mut flags: Vec<&str> = m.iter().map(String::as_str).collect();
        flags.extend_from_slice(extra);
        let out = run_in(d, rootfs, &flags, &["sh", "-c", "touch /evil/x/f; true"]);
        assert_untouched(&canary, &format!("{flags:?} (dangling)"));
        assert_ne!(out.status.code(), Some(0), "{flags:?}: {}", describe(&out));
    }
    // The same path made inside the root: /evil now leads there.
    let inside = rootfs.join(canary.strip_prefix("/").expect("absolute"));
    fs::create_dir_all(&inside).expect("mkdir inside");
    // A new entry at the top changes the rootfs' mtime, so a --userns
    // shifted copy of it is made again (see userns::shifted_lowerdirs).
    fs::write(rootfs.join(".changed"), "").expect("touch");
    for m in &mounts {
        let mut flags: Vec<&str> = m.iter().map(String::as_str).collect();
        flags.extend_from_slice(extra);
        let file_target = m[1].ends_with("/evil/deep/f");
        let cmd = if file_target {
            "cat /evil/deep/f"
        } else {
            "test -d /evil/x && ls /evil/x && echo ok"
        };
        let out = run_in(d, rootfs, &flags, &["sh", "-c", cmd]);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", describe(&out));
        let got = stdout(&out);
        if file_target {
            assert_eq!(got, "src\n", "{flags:?}");
        } else {
            assert!(got.ends_with("ok\n"), "{flags:?}: {got}");
            if m[1].starts_with(&format!("{}:", tmp.path().join("srcdir").display())) {
                assert!(
                    got.contains("marker"),
                    "{flags:?}: the bind mount is there: {got}"
                );
            }
        }
        assert_untouched(&canary, &format!("{flags:?} (inside)"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinked_targets_in_the_rootfs_stay_inside_the_root() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let rootfs = own_rootfs(tmp.path());
    symlinked_targets_stay_inside(&d, &tmp, &rootfs, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinked_targets_stay_inside_the_root_under_userns_remap() {
    let tmp = TempDir::new();
    // A subordinate range of this test's own (see userns.rs for the scheme).
    let base = 300_000_000 + (std::process::id() % 1000) * 4 * 65536;
    let line = format!("rsup:{base}:65536\n");
    let (uid_file, gid_file) = (tmp.path().join("subuid"), tmp.path().join("subgid"));
    fs::write(&uid_file, &line).expect("write");
    fs::write(&gid_file, &line).expect("write");
    let d = Daemon::start_with_args(&[
        "--userns-remap-user".as_ref(),
        "rsup".as_ref(),
        "--subuid-file".as_ref(),
        uid_file.as_os_str(),
        "--subgid-file".as_ref(),
        gid_file.as_os_str(),
    ])
    .await;
    let rootfs = own_rootfs(tmp.path());
    symlinked_targets_stay_inside(&d, &tmp, &rootfs, &["--userns", "remap"]);
    // /dev holds the container's own nodes, owned by its root.
    let out = run_in(
        &d,
        &rootfs,
        &["--userns", "remap"],
        &[
            "sh",
            "-c",
            "stat -c '%u %g %a' /dev/null && chmod 600 /dev/null && stat -c %a /dev/null",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "0 0 666\n600\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_left_in_a_volume_does_not_lead_a_later_mount_out() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).expect("mkdir");
    let vol = unique_name("left");
    let link = format!(
        "ln -s {} /data/link && ln -s {} /data/file",
        canary.display(),
        canary.join("f").display()
    );
    let out = d.run(&["-v", &format!("{vol}:/data")], &["sh", "-c", &link]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let srcfile = tmp.path().join("srcfile");
    fs::write(&srcfile, "f\n").expect("write");
    for inner in [
        format!("-v={}:/data/link/x", src.display()),
        "--tmpfs=/data/link/x".to_string(),
        format!("-v={}:/data/link/f", srcfile.display()),
        format!("-v={}:/data/file", srcfile.display()),
        format!("-v={}-2:/data/link/x", vol),
    ] {
        let out = d.run(
            &["-v", &format!("{vol}:/data"), &inner],
            &["sh", "-c", "echo x > /data/link/x/f; true"],
        );
        assert_untouched(&canary, &inner);
        assert_ne!(out.status.code(), Some(0), "{inner}: {}", describe(&out));
    }
    // Nested volumes themselves still work, whatever order they are given in.
    let (outer, inner) = (unique_name("outer"), unique_name("inner"));
    let out = d.run(
        &[
            "-v",
            &format!("{inner}:/n/sub"),
            "-v",
            &format!("{outer}:/n"),
        ],
        &[
            "sh",
            "-c",
            "echo deep > /n/sub/f && echo top > /n/g && ls /n",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = d.run(&["-v", &format!("{inner}:/m")], &["cat", "/m/f"]);
    assert_eq!(stdout(&out), "deep\n", "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_on_procfs_or_sysfs_are_refused() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let rootfs = own_rootfs(tmp.path());
    symlink("/proc/sys/kernel", rootfs.join("etc/kern")).expect("ln");
    let vol = unique_name("p");
    for flags in [
        vec!["--tmpfs", "/proc/sys"],
        vec!["-v", "PLACEHOLDER:/proc/sys/kernel"],
        vec!["-v", "PLACEHOLDER:/etc/kern"],
        vec!["--tmpfs", "/sys/kernel"],
    ] {
        let flags: Vec<String> = flags
            .iter()
            .map(|f| f.replace("PLACEHOLDER", &vol))
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = run_in(&d, &rootfs, &flags, &["true"]);
        assert_ne!(out.status.code(), Some(0), "{flags:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains("procfs") || err.contains("sysfs") || err.contains("mount target"),
            "{flags:?}: {err}"
        );
    }
}

/// (mode, uid, gid, rdev, dev, ino) of a host path.
fn node(p: &str) -> (u32, u32, u32, u64, u64, u64) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    (m.mode(), m.uid(), m.gid(), m.rdev(), m.dev(), m.ino())
}

const NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

#[tokio::test(flavor = "multi_thread")]
async fn chmod_and_chown_of_dev_nodes_inside_leave_the_hosts_alone() {
    let d = Daemon::start().await;
    let paths: Vec<String> = NODES.iter().map(|n| format!("/dev/{n}")).collect();
    let before: Vec<_> = paths.iter().map(|p| node(p)).collect();
    // Guard first: the container's nodes must be its own inodes, not the
    // host's; otherwise stop before anything is changed.
    let list = paths.join(" ");
    let out = d.run(
        &[],
        &["sh", "-c", &format!("stat -c '%d %i %t:%T %a' {list}")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), NODES.len(), "{lines:?}");
    for ((line, host), name) in lines.iter().zip(&before).zip(NODES) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dev, ino): (u64, u64) = (f[0].parse().expect("dev"), f[1].parse().expect("ino"));
        assert_ne!(
            (dev, ino),
            (host.4, host.5),
            "/dev/{name} in the container is the host's node: not changing it"
        );
        let rdev = host.3;
        let want = format!(
            "{:x}:{:x}",
            (rdev >> 8) & 0xfff,
            (rdev & 0xff) | ((rdev >> 12) & 0xfff00)
        );
        assert_eq!(f[2], want, "/dev/{name} is the same device as the host's");
        assert_eq!(f[3], "666", "/dev/{name} mode");
    }
    for flags in [&[][..], &["--read-only"][..]] {
        let script = format!("chmod 600 {list} && chown 1:1 {list} && stat -c '%a %u' {list}");
        let out = d.run(flags, &["sh", "-c", &script]);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", describe(&out));
        assert!(
            stdout(&out).lines().all(|l| l == "600 1"),
            "{flags:?}: the container's own nodes changed: {}",
            stdout(&out)
        );
        let after: Vec<_> = paths.iter().map(|p| node(p)).collect();
        assert_eq!(before, after, "{flags:?}: the host's /dev nodes changed");
    }
    // Docker's masked files are covered by the container's own /dev/null.
    let same = r#"for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
        if [ -e $f ]; then [ "$(stat -c %d:%i $f)" = "$(stat -c %d:%i /dev/null)" ] && echo same; break; fi
    done"#;
    let out = d.run(&[], &["sh", "-c", same]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "same\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn etc_files_are_never_written_through_an_image_symlink() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let rootfs = own_rootfs(tmp.path());
    let canary = tmp.path().join("canary-hosts");
    fs::write(&canary, "canary\n").expect("write");
    let before = fs::metadata(&canary).expect("stat");
    symlink(&canary, rootfs.join("etc/hosts")).expect("ln");
    // A procfs file as target (harmless here: the container's own UTS
    // hostname) is refused too.
    symlink("/proc/sys/kernel/hostname", rootfs.join("etc/hostname")).expect("ln");
    let name = unique_name("etc");
    let root = rootfs.to_str().expect("utf-8");
    let out = d.ctl([
        "run",
        "--rootfs",
        root,
        "--name",
        &name,
        "--hostname",
        "boundary",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/hosts 2>&1; true",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stdout(&out).starts_with("boundary\n"), "{}", stdout(&out));
    assert_eq!(fs::read_to_string(&canary).expect("read"), "canary\n");
    let after = fs::metadata(&canary).expect("stat");
    assert_eq!(
        (
            before.mtime(),
            before.mtime_nsec(),
            before.mode(),
            before.uid()
        ),
        (after.mtime(), after.mtime_nsec(), after.mode(), after.uid()),
        "the canary file was touched"
    );
    // shim.log says why each was left alone.
    let id = d.inspect_json(&name)["Id"].as_str().expect("id").to_owned();
    let log = fs::read_to_string(d.container_dir(&id).join("shim.log")).unwrap_or_default();
    assert!(log.contains("/etc/hosts not mounted"), "{log}");
    assert!(log.contains("/etc/hostname not mounted"), "{log}");
    assert!(log.contains("procfs"), "{log}");

    // A plain image: the files are bind mounts from the container's own
    // directory, writable by root, and still there with --read-only.
    let out = d.run(
        &["--read-only", "--hostname", "ro"],
        &[
            "sh",
            "-c",
            "cat /etc/hostname && echo '10.9.9.9 extra' >> /etc/hosts && grep -c extra /etc/hosts",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "ro\n1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_provided_by_a_bind_mount_runs() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let tools = tmp.path().join("tools");
    fs::create_dir(&tools).expect("mkdir");
    let script = tools.join("hello");
    fs::write(&script, "#!/bin/sh\necho from-the-bind-mount \"$@\"\n").expect("write");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bind = format!("{}:/usr/local/bin:ro", tools.display());
    // By name in the default PATH, and by its path.
    for cmd in [&["hello", "a"][..], &["/usr/local/bin/hello", "a"][..]] {
        let out = d.run(&["-v", &bind], cmd);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {}", describe(&out));
        assert_eq!(stdout(&out), "from-the-bind-mount a\n");
    }
    // A user that only a mounted /etc/passwd defines.
    let passwd = tmp.path().join("passwd");
    fs::write(
        &passwd,
        "root:x:0:0::/root:/bin/sh\ntester:x:4321:4322::/home/t:/bin/sh\n",
    )
    .expect("write");
    let out = d.run(
        &[
            "-v",
            &format!("{}:/etc/passwd:ro", passwd.display()),
            "-u",
            "tester",
        ],
        &["sh", "-c", "id -u; id -g; echo $HOME"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "4321\n4322\n/home/t\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_command_exits_127_with_the_message() {
    let d = Daemon::start().await;
    // A mount could provide it, so create accepts it and the start finds
    // it missing.
    let name = unique_name("nocmd");
    for detach in [false, true] {
        let name = format!("{name}-{}", u8::from(detach));
        let mut flags = vec!["--name", name.as_str(), "--tmpfs", "/usr/local/bin"];
        if detach {
            flags.push("-d");
        }
        let out = d.run(&flags, &["nosuchcmd"]);
        assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
        assert!(
            stderr(&out).contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
            "{}",
            stderr(&out)
        );
        let v = d.inspect_json(&name);
        assert_eq!(v["State"]["ExitCode"], 127, "{v}");
        assert!(
            v["State"]["Error"]
                .as_str()
                .unwrap_or_default()
                .contains("executable file not found"),
            "{v}"
        );
    }
    // A path that is not there.
    let out = d.run(&["--tmpfs", "/opt"], &["/opt/nothing"]);
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no such file or directory"),
        "{}",
        stderr(&out)
    );
    // Found but not executable (a directory): 126.
    let out = d.run(&["--tmpfs", "/opt"], &["/opt"]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    // Without a mount that could provide it, create still refuses it (125).
    let out = d.run(&["--tmpfs", "/opt"], &["nosuchcmd"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
}
