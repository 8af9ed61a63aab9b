//! Private state: what containers write (setuid binaries included), their
//! environment and their logs are root's alone on the host. Checked as a
//! real unprivileged host user (uid 65534 through `setpriv`), which must get
//! EACCES on a setuid-root copy of busybox a container left in its root and
//! in a named volume, on `config.json` (holding `-e` secrets) and on
//! `container.log`; by the modes themselves (root 0710, rsup's directories
//! 0700, its files 0600); by an old state directory with 0755 modes that
//! rsupd narrows at start; and by a non-root container user who still uses
//! `/`, a volume and a tmpfs as before.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rsup_client::proto::ContainerState;
use rsup_tests::{Daemon, describe, output_with_timeout, stdout, unique_name};

const WAIT: Duration = Duration::from_secs(20);
/// The unprivileged host user the checks run as (nobody).
const NOBODY: &str = "65534";

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// `ARGS` run as uid/gid 65534 with no supplementary groups. Through a
/// shell: setpriv keeps its capabilities until its own execve (its lookup
/// of ARGS[0] would bypass the modes under test), a shell it started has
/// none.
fn as_nobody(args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
        "/bin/sh",
        "-c",
        "exec \"$@\"",
        "sh",
    ])
    .args(args)
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("LC_ALL", "C");
    output_with_timeout(cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"))
}

/// `ARGS` as nobody must fail with "Permission denied" (EACCES).
fn denied(what: &str, args: &[&str]) {
    let out = as_nobody(args);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{what}: {args:?} as uid {NOBODY} was not refused with EACCES\n{}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_users_cannot_reach_what_containers_write() {
    let d = Daemon::start().await;
    let name = unique_name("priv");
    let volume = unique_name("privvol");
    let vol_arg = format!("{volume}:/data");
    let script = "cp /bin/busybox /suid && chmod 4755 /suid && \
                  cp /bin/busybox /data/suid && chmod 4755 /data/suid && \
                  echo secret-output";
    let out = d.run(
        &["--name", &name, "-e", "SECRET=hunter2", "-v", &vol_arg],
        &["sh", "-c", script],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let id = d.inspect_json(&name)["Id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let state = d.state_dir();
    let dir = d.container_dir(&id);
    let upper_suid = dir.join("upper/suid");
    let vol_dir = state.join("volumes").join(&volume);
    let vol_suid = vol_dir.join("_data/suid");
    let config = dir.join("config.json");
    let log = dir.join("container.log");

    // They are there, setuid root, and hold what a host user must not read.
    for p in [&upper_suid, &vol_suid] {
        let md = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            (md.uid(), md.mode() & 0o7777),
            (0, 0o4755),
            "{}",
            p.display()
        );
    }
    assert!(
        fs::read_to_string(&config)
            .expect("config")
            .contains("SECRET=hunter2")
    );
    assert!(
        fs::read_to_string(&log)
            .expect("log")
            .contains("secret-output")
    );

    // The checks are real: nobody reaches what is not rsup's.
    let out = as_nobody(&["stat", &d.dir().display().to_string()]);
    assert!(
        out.status.success(),
        "setpriv as nobody: {}",
        describe(&out)
    );

    for p in [&upper_suid, &vol_suid] {
        let p = p.display().to_string();
        denied("stat of a setuid file", &["stat", &p]);
        denied("exec of a setuid file", &[&p, "id", "-u"]);
    }
    for p in [&config, &log] {
        denied("reading a state file", &["cat", &p.display().to_string()]);
    }

    // The modes: root 0710, rsup's directories 0700, its files 0600; what
    // the container sees keeps Docker's 0755.
    assert_eq!(mode(state), 0o710);
    for top in [
        "containers",
        "volumes",
        "networks",
        "supervisors",
        "run",
        "images",
    ] {
        assert_eq!(mode(&state.join(top)), 0o700, "{top}/");
    }
    assert_eq!(mode(&dir), 0o700, "containers/<id>");
    assert_eq!(mode(&vol_dir), 0o700, "volumes/<name>");
    for f in [
        "config.json",
        "state.json",
        "exit.json",
        "shim.log",
        "container.log",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for f in fs::read_dir(state.join("networks"))
        .expect("networks")
        .flatten()
    {
        assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
    }
    assert_eq!(mode(&state.join("rsupd.lock")), 0o600);
    assert_eq!(mode(&dir.join("upper")), 0o755, "upper/");
    assert_eq!(mode(&dir.join("work")), 0o755, "work/");
    assert_eq!(mode(&vol_dir.join("_data")), 0o755, "_data");
    d.ctl_ok(["rm", "-f", &name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_state_dir_is_made_private_at_start() {
    let mut d = Daemon::start().await;
    let name = unique_name("privold");
    let volume = unique_name("privoldvol");
    let vol_arg = format!("{volume}:/data");
    let out = d.run(
        &["-d", "--name", &name, "-v", &vol_arg],
        &["sh", "-c", "echo before; sleep 1000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let id = stdout(&out).trim().to_owned();
    d.wait_log_line(&name, "before", WAIT).await;
    d.stop();

    // What an older rsupd left: everything readable by all.
    let state = d.state_dir().to_path_buf();
    let dir = d.container_dir(&id);
    let vol_dir = state.join("volumes").join(&volume);
    let chmod = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(m))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()))
    };
    for p in [
        &state,
        &state.join("containers"),
        &state.join("volumes"),
        &dir,
        &vol_dir,
    ] {
        chmod(p, 0o755);
    }
    let files = ["config.json", "state.json", "shim.log", "container.log"];
    for f in files {
        chmod(&dir.join(f), 0o644);
    }

    d.start_again().await;
    assert_eq!(mode(&state), 0o710);
    for p in [
        &state.join("containers"),
        &state.join("volumes"),
        &dir,
        &vol_dir,
    ] {
        assert_eq!(mode(p), 0o700, "{}", p.display());
    }
    for f in files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&dir.join("upper")), 0o755, "upper/ is the container's");
    assert_eq!(
        mode(&vol_dir.join("_data")),
        0o755,
        "_data is the container's"
    );
    let log = fs::read_to_string(d.dir().join("rsupd.log")).expect("rsupd.log");
    assert!(
        log.contains("fixed the mode of a state file") && log.contains("config.json"),
        "rsupd does not say what it changed:\n{log}"
    );
    // The re-adopted container still logs, through its shim's open file.
    d.wait_state(&name, ContainerState::Running, WAIT).await;
    d.ctl_ok(["rm", "-f", &name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_root_container_user_keeps_its_access() {
    let d = Daemon::start().await;
    let volume = unique_name("privuser");
    let vol_arg = format!("{volume}:/data");
    let script = "echo modes=$(stat -c %a / /data /scratch /tmp | tr '\\n' ' '); \
                  echo umask=$(umask); \
                  ls / >/dev/null && echo ls_root=ok; \
                  touch /tmp/x && echo tmp=ok; \
                  ls /data >/dev/null && echo ls_data=ok; \
                  touch /scratch/y && echo tmpfs=ok; \
                  cat /etc/hosts /etc/hostname >/dev/null && echo etc=ok; \
                  echo made=$(stat -c %a /tmp/x)";
    let out = rsup_tests::run_named_ok(
        &d,
        "privuser",
        &["-u", "1000:1000", "-v", &vol_arg, "--tmpfs", "/scratch"],
        &["sh", "-c", script],
    );
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}= in\n{out}"))
            .trim()
            .to_owned()
    };
    // `/` from the upper dir, a new volume's root, a tmpfs, the image's /tmp.
    assert_eq!(value("modes"), "755 755 1777 1777", "{out}");
    assert_eq!(value("umask"), "0022", "{out}");
    for key in ["ls_root", "tmp", "ls_data", "tmpfs", "etc"] {
        assert_eq!(value(key), "ok", "{key}:\n{out}");
    }
    assert_eq!(value("made"), "644", "{out}");
}
