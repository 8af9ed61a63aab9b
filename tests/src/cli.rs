//! `rsupctl` as a test drives it: on a [`Daemon`]'s socket, bounded in
//! time, with its output captured, and the shorthands the tests use most
//! (`run` on the busybox rootfs, `ps`/`inspect` as JSON, a named `run`).
//!
//! Invariants: every invocation is bounded by [`CTL_TIMEOUT`] (killed after
//! it) and ignores an `RSUP_SOCKET` of the environment; these helpers block
//! the calling thread (inside a multi-threaded runtime, announced with
//! [`blocking`]), so call them from the test body, not from a spawned task.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::daemon::{CTL_TIMEOUT, Daemon};
use crate::process::{describe, output_with_timeout, stdout};
use crate::rootfs::busybox_rootfs;
use crate::tempdir::unique_name;
use crate::wait::{blocking, eventually};

impl Daemon {
    /// `rsupctl --socket <socket>`, ready for more arguments.
    pub fn ctl_command(&self) -> Command {
        self.ctl_command_at(self.binary("rsupctl"))
    }

    /// [`Daemon::ctl_command`] without the check that the binary exists,
    /// which panics: for teardown, where a failure to spawn is reported.
    pub(crate) fn ctl_command_at(&self, rsupctl: PathBuf) -> Command {
        let mut cmd = Command::new(rsupctl);
        cmd.env_remove("RSUP_SOCKET")
            .arg("--socket")
            .arg(&self.socket);
        cmd
    }

    /// Runs `rsupctl --socket <socket> ARGS...` to completion (bounded by
    /// [`CTL_TIMEOUT`]). Blocks the calling thread: call it from the test
    /// body, not from a spawned task.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.ctl_command();
        cmd.args(args);
        blocking(|| output_with_timeout(cmd, CTL_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::ctl`] that must succeed; returns its stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args);
        assert!(
            out.status.success(),
            "rsupctl {args:?} failed\n{}",
            describe(&out)
        );
        stdout(&out)
    }

    /// `rsupctl run --rootfs <busybox> FLAGS... -- COMMAND...`.
    pub fn run(&self, flags: &[&str], command: &[&str]) -> Output {
        let rootfs = busybox_rootfs();
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("run"),
            OsStr::new("--rootfs"),
            rootfs.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        args.push(OsStr::new("--"));
        args.extend(command.iter().map(OsStr::new));
        self.ctl(args)
    }

    /// `rsupctl ps -a --format json`, one value per container.
    pub fn ps_json(&self) -> Vec<serde_json::Value> {
        self.ctl_ok(["ps", "-a", "--format", "json"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ps line {l:?}: {e}")))
            .collect()
    }

    /// `rsupctl inspect NAME`, element 0.
    pub fn inspect_json(&self, name: &str) -> serde_json::Value {
        let text = self.ctl_ok(["inspect", name]);
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {text:?}: {e}"));
        value
            .get(0)
            .cloned()
            .unwrap_or_else(|| panic!("inspect printed no element: {text}"))
    }

    /// Polls `rsupctl logs NAME` until a line equals `line`.
    pub async fn wait_log_line(&self, name: &str, line: &str, timeout: Duration) {
        eventually(&format!("{name} to log {line:?}"), timeout, async || {
            let out = self.ctl(["logs", name]);
            if out.status.success() && stdout(&out).lines().any(|l| l == line) {
                Ok(())
            } else {
                Err(describe(&out))
            }
        })
        .await;
    }
}

/// `rsupctl run FLAGS... -- COMMAND...` with a `--name` made by
/// [`unique_name`]`(prefix)` put first, unless FLAGS already has a `--name`;
/// any outcome.
pub fn run_named(d: &Daemon, prefix: &str, flags: &[&str], command: &[&str]) -> Output {
    if flags.contains(&"--name") {
        return d.run(flags, command);
    }
    let name = unique_name(prefix);
    let mut all = vec!["--name", name.as_str()];
    all.extend_from_slice(flags);
    d.run(&all, command)
}

/// [`run_named`] that must exit 0; returns its stdout.
pub fn run_named_ok(d: &Daemon, prefix: &str, flags: &[&str], command: &[&str]) -> String {
    let out = run_named(d, prefix, flags, command);
    assert_eq!(
        out.status.code(),
        Some(0),
        "run {flags:?} {command:?}\n{}",
        describe(&out)
    );
    stdout(&out)
}
