//! What every hostile test shares: the guard that keeps the suite out of any
//! machine but the throwaway VM, canary trees with a fingerprint that any
//! change shows in (entry, type, mode, owner, times, content, link target),
//! small root filesystems and images carrying hostile symlinks, containers
//! run to the end over gRPC, and commands run as the host's `nobody`.
//!
//! The guard needs every marker at once: `RSUP_IN_V2VM=1` (set by
//! `scripts/test.sh` for the VM step only) and four facts only the v2vm
//! guest has: hostname `v2vm`, a `v2vm.run=` kernel argument, a root
//! filesystem that is the `v2vm-root` overlay, and the v2vm stage-2 script
//! as PID 1. The environment variable alone, or a host renamed `v2vm`, is
//! not enough.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rsup_client::proto;
use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, TarEntry};
use rsup_tests::{Daemon, TempDir, output_with_timeout};

/// What a guarded test prints when it does not run.
pub const SKIPPED: &str = "skipped: hostile tests run only inside the throwaway VM";

/// The host uid (and gid) of the unprivileged user the privacy tests act as.
pub const NOBODY: u32 = 65534;

/// How long a container of these tests may run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// rsupd arguments for a daemon that imports images or makes `--userns
/// remap` shifted copies in the VM: its default free-space reserve (the
/// larger of 1 GiB and 5% of the device) is more than the VM's whole /tmp,
/// where the state dirs live.
pub const IMAGES_IN_THE_VM: [&str; 2] = ["--image-min-free", "0"];

/// A daemon with [`IMAGES_IN_THE_VM`] and `args`.
pub async fn image_daemon(args: &[&str]) -> Daemon {
    let mut all: Vec<&str> = IMAGES_IN_THE_VM.to_vec();
    all.extend_from_slice(args);
    Daemon::start_with_args(&all).await
}

/// Why this process is not inside the throwaway VM, or `Ok` if it is.
pub fn vm_markers() -> Result<(), String> {
    let mut missing = Vec::new();
    if std::env::var_os("RSUP_IN_V2VM").is_none_or(|v| v != "1") {
        missing.push("RSUP_IN_V2VM=1 is not set".to_owned());
    }
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if hostname.trim() != "v2vm" {
        missing.push(format!("hostname is {:?}, not \"v2vm\"", hostname.trim()));
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !cmdline
        .split_whitespace()
        .any(|a| a.starts_with("v2vm.run="))
    {
        missing.push("no v2vm.run= on the kernel command line".to_owned());
    }
    let root = root_mount();
    if root
        .as_ref()
        .is_none_or(|(fstype, source)| fstype != "overlay" || source != "v2vm-root")
    {
        missing.push(format!(
            "the root filesystem is {root:?}, not the v2vm-root overlay"
        ));
    }
    let init = fs::read("/proc/1/cmdline").unwrap_or_default();
    if !String::from_utf8_lossy(&init).contains("/run/v2vm/stage2") {
        missing.push("PID 1 is not the v2vm stage-2 script".to_owned());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Filesystem type and source of the mount this process sees at `/` (the
/// top one when several are stacked there).
fn root_mount() -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (pre.split(' ').nth(4)? == "/").then_some(())?;
        let mut post = post.split(' ');
        Some((post.next()?.to_owned(), post.next()?.to_owned()))
    })
}

/// The first statement of every hostile test: `true` only inside the
/// throwaway VM; anywhere else it prints why the test is skipped.
pub fn in_throwaway_vm() -> bool {
    match vm_markers() {
        Ok(()) => true,
        Err(why) => {
            println!("{SKIPPED} ({why})");
            false
        }
    }
}

// ---------------------------------------------------------------------------
// Canary trees.

/// A small tree outside every state dir that no test may change: files
/// (one setuid, one private and owned by another user), directories (one
/// empty, one 0700), a relative, an absolute and a dangling symlink and a
/// FIFO. [`Canary::check`] compares it with its fingerprint at planting.
#[derive(Debug)]
pub struct Canary {
    root: PathBuf,
    print: BTreeMap<String, String>,
}

impl Canary {
    /// Plants `<parent>/canary`.
    pub fn plant(parent: &Path) -> Canary {
        Canary::plant_at(parent.join("canary"))
    }

    /// Removes the tree (after a case changed it) and plants it again at
    /// the same path, so that the next case starts from an intact canary.
    pub fn replant(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            panic!("removing the canary {}: {e}", self.root.display());
        }
        *self = Canary::plant_at(self.root.clone());
    }

    fn plant_at(root: PathBuf) -> Canary {
        let mode = |p: &Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()))
        };
        fs::create_dir(&root).expect("mkdir canary");
        mode(&root, 0o755);
        let file = |rel: &str, content: &str, m: u32| {
            let p = root.join(rel);
            fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            mode(&p, m);
        };
        for d in ["dir", "empty"] {
            fs::create_dir(root.join(d)).expect("mkdir in canary");
        }
        mode(&root.join("dir"), 0o700);
        file("file.txt", "canary file: must never change\n", 0o644);
        file("secret", "host secret\n", 0o600);
        std::os::unix::fs::chown(root.join("secret"), Some(1000), Some(1000)).expect("chown");
        file("run.sh", "#!/bin/sh\necho canary\n", 0o755);
        file("setuid", "not really a program\n", 0o4755);
        file("dir/nested.txt", "nested canary\n", 0o640);
        symlink("file.txt", root.join("link")).expect("symlink");
        symlink(root.join("file.txt"), root.join("abs-link")).expect("symlink");
        symlink("no-such-target", root.join("dangling")).expect("symlink");
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let print = fingerprint(&root);
        Canary { root, print }
    }

    /// The canary directory (absolute).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `Err` with what changed since planting.
    pub fn check(&self) -> Result<(), String> {
        let now = fingerprint(&self.root);
        if now == self.print {
            return Ok(());
        }
        let mut diff = Vec::new();
        for (k, v) in &self.print {
            match now.get(k) {
                None => diff.push(format!("gone: {k} ({v})")),
                Some(w) if w != v => diff.push(format!("changed: {k}: {v} -> {w}")),
                Some(_) => {}
            }
        }
        for (k, w) in &now {
            if !self.print.contains_key(k) {
                diff.push(format!("new: {k} ({w})"));
            }
        }
        Err(format!(
            "the canary tree {} changed:\n  {}",
            self.root.display(),
            diff.join("\n  ")
        ))
    }

    /// Panics (naming `what`) if anything changed.
    pub fn assert_intact(&self, what: &str) {
        if let Err(e) = self.check() {
            panic!("{what}: {e}");
        }
    }
}

/// Every entry below (and including) `root`, without following symlinks:
/// relative path -> type, mode, owner, mtime, ctime and content or target.
pub fn fingerprint(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                out.insert(rel, format!("unreadable: {e}"));
                continue;
            }
        };
        let t = m.file_type();
        let what = if t.is_symlink() {
            format!(
                "symlink -> {:?}",
                fs::read_link(&p).map(|t| t.display().to_string())
            )
        } else if t.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
            "dir".to_owned()
        } else if t.is_file() {
            format!(
                "file {:?}",
                fs::read(&p).map(|c| String::from_utf8_lossy(&c).into_owned())
            )
        } else {
            format!("special rdev={:#x}", m.rdev())
        };
        out.insert(
            rel,
            format!(
                "{what} mode={:o} owner={}:{} ino={} mtime={}.{} ctime={}.{}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
        );
    }
    out
}

/// Names of every entry below `dir` (relative paths, sorted), for
/// "nothing new was left there".
pub fn tree_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Hostile roots and images.

/// Applets the hostile roots carry.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "ln", "test", "[", "id", "mkdir", "chmod", "chown", "mknod", "rm",
    "cp", "stat", "sleep", "readlink", "true", "grep", "touch",
];

/// A minimal root under `dir/<name>`: busybox and [`APPLETS`], `/etc`
/// (passwd, group), `/tmp` (1777), `/data`, plus `links` (path -> target)
/// made as symlinks, parents created. For `--rootfs`.
pub fn hostile_rootfs(dir: &Path, name: &str, links: &[(&str, String)]) -> PathBuf {
    let root = dir.join(name);
    for d in ["bin", "etc", "tmp", "data", "dev", "proc", "sys", "root"] {
        fs::create_dir_all(root.join(d)).expect("mkdir in rootfs");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copying /bin/busybox (install busybox-static)");
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).expect("applet symlink");
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    for (path, target) in links {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir for a link");
        }
        let _ = fs::remove_file(&p);
        symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
    }
    root
}

/// Imports a one-layer image: a busybox root ([`APPLETS`]) with `/etc`,
/// `/tmp`, `/data`, plus `links` (path -> target) as symlinks, tagged `reference`.
pub async fn import_hostile_image(d: &Daemon, reference: &str, links: &[(&str, String)]) {
    let dir = TempDir::new();
    let mut entries = build::busybox_rootfs(Path::new("/bin/busybox"), APPLETS);
    entries.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    ));
    entries.push(TarEntry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"));
    for (path, target) in links {
        entries.push(TarEntry::symlink(path, target));
    }
    let archive = dir.path().join("image.tar");
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    build::oci_layout_tar(&archive, &[entries], &config, &BuildOptions::default())
        .expect("building the image");
    d.client()
        .import_image(&archive, Some(reference))
        .await
        .unwrap_or_else(|e| panic!("importing {reference}: {e}"));
}

// ---------------------------------------------------------------------------
// Containers over gRPC.

/// A spec running `command` on the root directory `rootfs`.
pub fn rootfs_spec(name: &str, rootfs: &Path, command: &[&str]) -> proto::ContainerSpec {
    proto::ContainerSpec {
        name: name.to_owned(),
        rootfs: rootfs.display().to_string(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// A spec running `command` on the image `image`.
pub fn image_spec(name: &str, image: &str, command: &[&str]) -> proto::ContainerSpec {
    proto::ContainerSpec {
        name: name.to_owned(),
        image: image.to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// How a container run by [`run_to_end`] ended.
#[derive(Debug)]
pub struct Ran {
    pub exit_code: i32,
    /// stdout and stderr lines, in order.
    pub output: String,
}

/// Creates, starts and waits for a container, collects its log and removes
/// it. `Err` with the status when the daemon refused to create or start it
/// (nothing is left behind then either).
pub async fn run_to_end(d: &Daemon, spec: proto::ContainerSpec) -> Result<Ran, tonic::Status> {
    let c = d.client();
    let created = c
        .containers()
        .create(proto::CreateRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| tonic::Status::internal("create returned no container"))?;
    let id = created.id;
    let result = async {
        c.containers()
            .start(proto::StartRequest {
                container: id.clone(),
            })
            .await?;
        let status = tokio::time::timeout(
            RUN_TIMEOUT,
            c.containers().wait(proto::WaitRequest {
                container: id.clone(),
            }),
        )
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("the container ran too long"))??
        .into_inner()
        .status
        .unwrap_or_default();
        Ok(Ran {
            exit_code: status.exit_code,
            output: logs_of(d, &id).await,
        })
    }
    .await;
    if let Err(e) = c.remove(&id, true).await {
        eprintln!("warning: removing {id}: {e}");
    }
    result
}

/// Every line the container logged so far (stdout and stderr).
pub async fn logs_of(d: &Daemon, container: &str) -> String {
    let mut out = String::new();
    let Ok(mut stream) = d.client().logs(container, false, None).await else {
        return out;
    };
    while let Ok(Some(entry)) = stream.message().await {
        out.push_str(&String::from_utf8_lossy(&entry.line));
        out.push('\n');
    }
    out
}

/// Creates and starts a long-running container; returns its id.
pub async fn start_detached(d: &Daemon, spec: proto::ContainerSpec) -> String {
    let name = spec.name.clone();
    let c = d
        .client()
        .create(spec)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    d.client()
        .start(&c.id)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    c.id
}

/// `sh -c script` in the running container `name`; exit code and output.
pub async fn exec_sh(d: &Daemon, name: &str, script: &str) -> (i32, String) {
    let reply = d
        .client()
        .exec(proto::ExecRequest {
            container: name.to_owned(),
            command: vec!["sh".into(), "-c".into(), script.to_owned()],
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("exec in {name}: {e}"));
    (
        reply.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&reply.stdout),
            String::from_utf8_lossy(&reply.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------
// Daemons.

/// A daemon whose remap user `rsup` owns 65536 uids and gids from
/// `200_000_000 + slot * 65536` (temporary subuid/subgid files in `files`,
/// never `/etc`), with [`IMAGES_IN_THE_VM`] (its shifted copies stop at
/// the free-space reserve); returns it and the first host id.
pub async fn remap_daemon(files: &TempDir, slot: u32) -> (Daemon, u32) {
    let base = 200_000_000 + slot * 65536;
    let line = format!("rsup:{base}:65536\n");
    let uid_file = files.path().join("subuid");
    let gid_file = files.path().join("subgid");
    fs::write(&uid_file, &line).expect("write subuid");
    fs::write(&gid_file, &line).expect("write subgid");
    let d = Daemon::start_with_args(&[
        IMAGES_IN_THE_VM[0].as_ref(),
        IMAGES_IN_THE_VM[1].as_ref(),
        "--userns-remap-user".as_ref(),
        "rsup".as_ref(),
        "--subuid-file".as_ref(),
        uid_file.as_os_str(),
        "--subgid-file".as_ref(),
        gid_file.as_os_str(),
    ])
    .await;
    (d, base)
}

// ---------------------------------------------------------------------------
// The host's unprivileged user.

/// Runs the host's `/bin/busybox ARGS...` as uid and gid [`NOBODY`] with no
/// supplementary groups, from `/`.
pub fn as_nobody(args: &[&str]) -> Output {
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(args)
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .env_clear()
        .env("PATH", "/bin");
    output_with_timeout(cmd, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}
