//! (h) The `release_agent` of a cgroup v1 hierarchy is out of reach of
//! container root with `--cap-add SYS_ADMIN`. A container's cgroup
//! namespace roots every hierarchy at the cgroup its init was in when it
//! unshared; in a hierarchy rsupd did not place it in, that is rsupd's own
//! cgroup, here the root, whose `release_agent` the kernel runs as host
//! root when a cgroup with `notify_on_release` empties.
//!
//! The VM is pure cgroup v2, so the test brings its own v1 hierarchy: a
//! named one (`none,name=...`), mounted in the daemon's mount namespace
//! before it starts. The container mounts it, writes a payload's host path
//! to `release_agent` and empties a `notify_on_release` cgroup: the payload
//! must never run. A control run of the same steps from the host side
//! shows that the kernel does run a release agent in this VM.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rsup_tests::{Daemon, NamedCgroup, TempDir, cgroup_subtree, eventually, unique_name};

use super::common::{exec_sh, in_throwaway_vm, start_detached};

/// How long the test waits for a payload that must not run.
const NEVER: Duration = Duration::from_secs(5);

/// A payload script at `<dir>/<name>.sh` that creates `<dir>/<name>.ran`.
fn payload(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (script, marker) = (
        dir.join(format!("{name}.sh")),
        dir.join(format!("{name}.ran")),
    );
    fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" > {}\n", marker.display()),
    )
    .expect("write payload");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, marker)
}

#[tokio::test(flavor = "multi_thread")]
async fn sys_admin_cannot_reach_a_release_agent() {
    if !in_throwaway_vm() {
        return;
    }
    let named = NamedCgroup::new();
    let files = TempDir::new();
    let d = Daemon::start_in_mount_namespace::<&str>(&named.mount_command(), &[]).await;
    // The hierarchy as the daemon's mount namespace shows it.
    let hierarchy = PathBuf::from(format!("/proc/{}/root", d.pid())).join(
        named
            .mount_point()
            .strip_prefix("/")
            .expect("absolute mount point"),
    );
    assert!(
        hierarchy.join("release_agent").exists(),
        "the daemon does not see the hierarchy at {}",
        hierarchy.display()
    );

    let name = unique_name("agent");
    let mut spec = d.spec(&name, &["sleep", "100000"]);
    spec.cap_add = vec!["SYS_ADMIN".into()];
    let id = start_detached(&d, spec).await;
    let (script, marker) = payload(files.path(), "payload");
    let attack = format!(
        "d=/tmp/cg; mkdir -p $d; mount -t cgroup -o none,name={} cgroup $d; echo mount=$?; \
         echo sees: $(ls $d); \
         echo {} > $d/release_agent; echo agent=$?; \
         mkdir $d/x; echo 1 > $d/x/notify_on_release; echo notify=$?; \
         sh -c \"echo \\$\\$ > $d/x/cgroup.procs\"; echo joined=$?",
        named.name(),
        script.display()
    );
    let (_, out) = exec_sh(&d, &name, &attack).await;
    // The container could mount the hierarchy and use it: the attack got
    // as far as it can.
    assert!(out.contains("mount=0"), "{out}");
    assert!(
        out.contains("notify=0") && out.contains("joined=0"),
        "{out}"
    );
    // Its view was its own cgroup: no release_agent there, and its `x` is
    // under the container's cgroup on the daemon's side.
    assert!(!out.contains("agent=0"), "release_agent written:\n{out}");
    let leaf = hierarchy.join(cgroup_subtree(d.state_dir())).join(&id);
    assert!(leaf.join("x").is_dir(), "no {}/x:\n{out}", leaf.display());
    let agent = fs::read_to_string(hierarchy.join("release_agent")).expect("read release_agent");
    assert_eq!(agent.trim(), "", "the hierarchy's release_agent changed");
    let deadline = Instant::now() + NEVER;
    while Instant::now() < deadline {
        assert!(
            !marker.exists(),
            "the payload ran as host root: {:?}\n{out}",
            fs::read_to_string(&marker)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.client()
        .remove(&name, true)
        .await
        .unwrap_or_else(|e| panic!("rm -f {name}: {e}"));
    assert!(!leaf.exists(), "{} left after rm", leaf.display());

    // Control: the same steps from the host side run a release agent.
    let (script, marker) = payload(files.path(), "control");
    fs::write(
        hierarchy.join("release_agent"),
        script.to_string_lossy().as_bytes(),
    )
    .expect("write release_agent");
    let ctl = hierarchy.join("control");
    fs::create_dir(&ctl).expect("mkdir control cgroup");
    fs::write(ctl.join("notify_on_release"), "1").expect("notify_on_release");
    let joined = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}", ctl.join("cgroup.procs").display()))
        .status()
        .expect("sh");
    assert!(joined.success());
    let ran = eventually(
        "the control release agent",
        Duration::from_secs(20),
        async || match fs::read_to_string(&marker) {
            Ok(text) if !text.trim().is_empty() => Ok(text),
            Ok(_) => Err("empty so far".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    assert!(ran.contains("/control"), "{ran}");
    fs::write(hierarchy.join("release_agent"), "\n").expect("reset release_agent");
    let _ = fs::remove_dir(&ctl);
    drop(d);
    drop(named);
}
