//! The Docker CLI on rsupd (issue #18): a [`DockerDaemon`] is a [`Daemon`]
//! started with `--docker-socket <its dir>/docker.sock`, driven by Debian's
//! docker 20.10 CLI (`/usr/bin/docker`, API v1.41), which it runs bounded in
//! time with its output captured; a busybox image as `docker save` writes
//! it, to `docker load`; `docker logs -f` and the like as children read line
//! by line; and raw requests to the Docker socket, to see the status and
//! body the CLI turned into its message.
//!
//! Invariants: the CLI never sees the user's configuration or daemon: every
//! invocation gets `DOCKER_HOST=unix://<socket>` and `DOCKER_CONFIG=<a
//! directory of the daemon's own>`, and no other `DOCKER_*` variable of the
//! environment; each is killed after [`DOCKER_TIMEOUT`]; no dockerd is ever
//! started. The image archive is built once per test process (under a
//! [`TempDir`] removed at exit, as the busybox rootfs is).

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, TarEntry};

use crate::daemon::{Daemon, DaemonOptions};
use crate::process::{KillOnDrop, describe, output_with_stdin, output_with_timeout, stdout};
use crate::tempdir::{TempDir, remove_tree};
use crate::wait::blocking;

/// The docker CLI the tests drive: Debian's 20.10 (API 1.41), not a newer
/// one that may be installed elsewhere (`/usr/local/bin/docker`).
pub const DOCKER_CLI: &str = "/usr/bin/docker";
/// How long one docker CLI invocation may take before it is killed.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// The name of the image [`DockerDaemon::load_busybox`] loads.
pub const BUSYBOX_IMAGE: &str = "rsuptest/busybox:1";

/// A [`Daemon`] that also serves the Docker Engine API on
/// `<its dir>/docker.sock`, and a `DOCKER_CONFIG` directory of its own.
pub struct DockerDaemon {
    /// Dropped first: stops rsupd and removes its directory (which is below
    /// `home`).
    pub daemon: Daemon,
    docker_socket: PathBuf,
    config_dir: PathBuf,
    /// Last field: holds the daemon's directory and the CLI's config.
    _home: TempDir,
}

impl std::ops::Deref for DockerDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DockerDaemon {
    /// Starts rsupd with `--docker-socket <its dir>/docker.sock` (and
    /// `extra` arguments), waits until it is SERVING on gRPC and answers
    /// `GET /_ping` on the Docker socket.
    pub async fn start(extra: &[&str]) -> DockerDaemon {
        let home = TempDir::new();
        let dir = home.path().join("daemon");
        let docker_socket = dir.join("docker.sock");
        let config_dir = home.path().join("docker-config");
        std::fs::create_dir(&config_dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", config_dir.display()));
        let mut args: Vec<OsString> = vec!["--docker-socket".into(), docker_socket.clone().into()];
        args.extend(extra.iter().map(OsString::from));
        let opts = DaemonOptions {
            dir: Some(dir),
            args,
            ..DaemonOptions::default()
        };
        let daemon = Daemon::try_start(opts)
            .await
            .unwrap_or_else(|e| panic!("starting rsupd with --docker-socket: {e:#}"));
        let d = DockerDaemon {
            daemon,
            docker_socket,
            config_dir,
            _home: home,
        };
        d.wait_ping().await;
        d
    }

    /// Polls `GET /_ping` until it answers 200 `OK` (bounded).
    async fn wait_ping(&self) {
        let last = crate::wait::eventually(
            "the Docker socket to answer /_ping",
            Duration::from_secs(20),
            async || match blocking(|| self.api("GET", "/_ping", None)) {
                Ok(r) if r.status == 200 => Ok(r),
                Ok(r) => Err(format!("{r:?}")),
                Err(e) => Err(e),
            },
        )
        .await;
        assert_eq!(last.body.trim(), "OK", "/_ping answered {last:?}");
    }

    /// The Docker API socket.
    pub fn docker_socket(&self) -> &Path {
        &self.docker_socket
    }

    /// `/usr/bin/docker` on this daemon's Docker socket, with a config
    /// directory of its own and no other `DOCKER_*` variable.
    pub fn docker_command(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DOCKER_") {
                cmd.env_remove(key);
            }
        }
        let mut host = OsString::from("unix://");
        host.push(&self.docker_socket);
        cmd.env("DOCKER_HOST", host)
            .env("DOCKER_CONFIG", &self.config_dir)
            // Plain text output, whatever the terminal of the test run.
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs `docker ARGS...` to completion (bounded by [`DOCKER_TIMEOUT`]).
    /// Blocks the calling thread: call it from the test body.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.docker_command();
        cmd.args(args);
        blocking(|| output_with_timeout(cmd, DOCKER_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`DockerDaemon::docker`] with `input` on its stdin.
    pub fn docker_stdin<I, S>(&self, args: I, input: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.docker_command();
        cmd.args(args);
        blocking(|| output_with_stdin(cmd, input, DOCKER_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`DockerDaemon::docker`] that must exit 0; returns its stdout.
    pub fn docker_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.docker(&args);
        assert!(
            out.status.success(),
            "docker {args:?} failed\n{}\n{}",
            describe(&out),
            self.log_tail(30)
        );
        stdout(&out)
    }

    /// The last `lines` lines of rsupd's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- rsupd log (last {lines} lines) ---\n{}",
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Spawns `docker ARGS...` (e.g. `logs -f NAME`) with its stdout read
    /// line by line; killed and reaped when dropped.
    pub fn docker_spawn(&self, args: &[&str]) -> DockerChild {
        let mut cmd = self.docker_command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning docker {args:?}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err.read_to_string(&mut buf);
            buf
        });
        DockerChild {
            child: KillOnDrop(child),
            lines: rx,
            stderr: Some(stderr),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Loads the busybox image ([`busybox_image_tar`]) with `docker load -i`;
    /// returns what `docker load` printed.
    pub fn load_busybox(&self) -> String {
        let tar = busybox_image_tar();
        self.docker_ok([OsStr::new("load"), OsStr::new("-i"), tar.as_os_str()])
    }

    /// One raw HTTP/1.0 request to the Docker socket (so that the reply is
    /// never chunked and ends with the connection), bounded by 20 s: for the
    /// status and body behind a CLI message.
    pub fn api(&self, method: &str, path: &str, json: Option<&str>) -> Result<ApiReply, String> {
        api_request(&self.docker_socket, method, path, json)
    }

    /// `docker ps -a --format {{.Names}}`, one name per element.
    pub fn all_names(&self) -> Vec<String> {
        nonempty_lines(&self.docker_ok(["ps", "-a", "--format", "{{.Names}}"]))
    }

    /// `docker inspect --format FORMAT NAME`, trimmed; must succeed.
    pub fn inspect_format(&self, name: &str, format: &str) -> String {
        self.docker_ok(["inspect", "--format", format, name])
            .trim()
            .to_owned()
    }
}

/// The non-empty lines of `text`, trimmed.
pub fn nonempty_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `s` is a full container or image id: 64 lowercase hex digits.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A running `docker` child whose stdout is read line by line.
pub struct DockerChild {
    child: KillOnDrop,
    lines: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    args: Vec<String>,
}

impl DockerChild {
    /// The next line of stdout, `Ok(None)` at its end, or `Err` after
    /// `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Result<Option<String>, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(Some(l)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "docker {:?} printed no line within {timeout:?}",
                self.args
            )),
        }
    }

    /// Waits (bounded) for the child to exit; its status and the rest of
    /// its stdout and stderr, or why not.
    pub fn wait(&mut self, timeout: Duration) -> Result<(ExitStatus, Vec<String>, String), String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.0.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    return Err(format!(
                        "docker {:?} still running after {timeout:?}",
                        self.args
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for docker {:?}: {e}", self.args)),
            }
        };
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok((status, rest, err))
    }
}

/// What [`api_request`] got: an HTTP reply.
pub type ApiReply = crate::http::HttpReply;

impl crate::http::HttpReply {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// `METHOD PATH` over HTTP/1.0 on the Unix socket `socket`, with `json` as
/// the body; the whole reply, or why not. Bounded by 20 s.
pub fn api_request(
    socket: &Path,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<ApiReply, String> {
    let step = Duration::from_secs(20);
    let mut s =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(step)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(step)).map_err(|e| e.to_string())?;
    let body = json.unwrap_or("");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n");
    if json.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(request.as_bytes())
        .map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read reply to {method} {path}: {e}"))?;
    crate::http::parse_reply(&String::from_utf8_lossy(&raw))
}

static IMAGE_TAR: OnceLock<(PathBuf, String)> = OnceLock::new();

/// A `docker save` tarball of a one-layer busybox image named
/// [`BUSYBOX_IMAGE`]: `/bin/busybox` and a symlink per applet of
/// `/bin/busybox --list`, `/etc/passwd` and `/etc/group` (root, nobody),
/// `Cmd ["sh"]` and Docker's default `PATH`. Built once per test process
/// under a temporary directory removed at exit.
pub fn busybox_image_tar() -> PathBuf {
    busybox_image().0
}

/// [`busybox_image_tar`] and its image id (`sha256:` of its config).
pub fn busybox_image() -> (PathBuf, String) {
    IMAGE_TAR
        .get_or_init(|| {
            let dir = TempDir::new();
            let path = dir.path().join("busybox-image.tar");
            let id = build_busybox_image(&path)
                .unwrap_or_else(|e| panic!("building {}: {e:#}", path.display()));
            std::mem::forget(dir);
            // SAFETY: a plain `extern "C" fn()` that never unwinds.
            let rc = unsafe { libc::atexit(remove_image_at_exit) };
            if rc != 0 {
                eprintln!("warning: atexit failed; {} stays behind", path.display());
            }
            (path, id)
        })
        .clone()
}

extern "C" fn remove_image_at_exit() {
    if let Some(parent) = IMAGE_TAR.get().and_then(|(p, _)| p.parent()) {
        remove_tree(parent);
    }
}

fn build_busybox_image(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let busybox = Path::new("/bin/busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .context("running /bin/busybox --list (install busybox-static)")?;
    anyhow::ensure!(list.status.success(), "busybox --list: {}", list.status);
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    let refs: Vec<&str> = applets.iter().map(String::as_str).collect();
    let mut layer = build::busybox_rootfs(busybox, &refs);
    for d in ["proc", "dev", "sys", "root", "var", "usr", "home"] {
        layer.push(TarEntry::dir(d));
    }
    layer.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ));
    layer.push(TarEntry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"));
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..Default::default()
    };
    let opts = BuildOptions {
        ref_name: Some(BUSYBOX_IMAGE.to_owned()),
        ..Default::default()
    };
    let built =
        build::docker_save_tar(path, &[layer], &config, &opts).context("docker_save_tar")?;
    Ok(built.id)
}

/// The stdout of `out` if it exited 0, else a description (for polling).
pub fn ok_stdout(out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(stdout(out))
    } else {
        Err(describe(out))
    }
}
