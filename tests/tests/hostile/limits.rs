//! (e) Limits that keep a hostile image or container from exhausting the
//! host: a decompression bomb (a gzip layer of a few hundred KB that
//! unpacks to far more than the daemon allows, with correct digests, so
//! that only a limit can stop it) is refused while streaming and leaves
//! nothing under the store; a fork bomb in a container started without
//! `--pids-limit` stops at the daemon's default pids limit.
//!
//! The flags and codes are those of rsupd's limits: `--image-max-size
//! BYTES` (an image beyond it is INVALID_ARGUMENT), `--image-min-free
//! BYTES` (an import that would leave less free is RESOURCE_EXHAUSTED),
//! `--default-pids-limit N`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsup_client::proto;
use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, EntryKind, TarEntry};
use rsup_tests::{Daemon, ProcId, TempDir, eventually, unique_name};
use tonic::Code;

use super::common::{image_daemon, in_throwaway_vm, start_detached, tree_names};

const MIB: u64 = 1 << 20;

/// One bomb at a time: the free-space test needs /tmp's free space to hold
/// still while it runs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How much the bomb unpacks to: far beyond both limits below, yet cheap to
/// build (every byte is hashed for the diff id, by a debug build, under TCG).
const BOMB_BYTES: u64 = 24 * MIB;

/// The bomb both tests import, built once. Its directory stays until the
/// process ends (in the VM's throwaway /tmp).
static BOMB: tokio::sync::OnceCell<(TempDir, PathBuf)> = tokio::sync::OnceCell::const_new();

/// An OCI archive whose one gzip layer holds [`BOMB_BYTES`] of zeros (a
/// sparse host file read while building; the digests are right, so only a
/// limit can stop the import).
async fn bomb() -> &'static Path {
    let (_, path) = BOMB
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let dir = TempDir::new();
                let path = build_bomb(dir.path(), BOMB_BYTES);
                (dir, path)
            })
            .await
            .expect("building the bomb")
        })
        .await;
    path
}

fn build_bomb(dir: &Path, unpacked: u64) -> PathBuf {
    let started = Instant::now();
    let zeros = dir.join("zeros");
    fs::File::create(&zeros)
        .and_then(|f| f.set_len(unpacked))
        .expect("sparse file");
    let layer = vec![
        TarEntry::dir("bomb"),
        TarEntry::new("bomb/zeros", EntryKind::HostFile(zeros.clone()), 0o644),
    ];
    let archive = dir.join("bomb.tar");
    build::oci_layout_tar(
        &archive,
        &[layer],
        &ImageConfig::default(),
        &BuildOptions {
            gzip_layers: true,
            ..Default::default()
        },
    )
    .expect("building the bomb");
    let _ = fs::remove_file(&zeros);
    let size = fs::metadata(&archive).expect("archive").len();
    eprintln!(
        "bomb: {size} bytes of archive unpack to {unpacked} bytes (built in {:?})",
        started.elapsed()
    );
    assert!(
        size < unpacked / 50,
        "the bomb does not compress: {size} bytes"
    );
    archive
}

/// Imports the bomb on `d`: it must be refused with `code` and a short
/// message of the daemon's own, and leave the store as it was.
async fn refused_without_a_trace(d: &Daemon, archive: &Path, code: Code, what: &str) {
    let store = d.state_dir().join("images");
    let before = tree_names(&store);
    let result = d.client().import_image(archive, Some("bomb:1")).await;
    let after = tree_names(&store);
    match result {
        Ok(image) => panic!("{what}: the bomb was imported: {image:?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: {e}");
            let message = e.to_string();
            // (An h2 error for an oversized status is also RESOURCE_EXHAUSTED.)
            assert!(
                message.len() <= 4096 && !message.starts_with("h2 protocol error"),
                "{what}: {message}"
            );
            eprintln!("{what}: refused: {e}");
        }
    }
    assert_eq!(before, after, "{what}: the store changed");
    assert!(
        d.client()
            .images()
            .list(proto::ListImagesRequest {})
            .await
            .expect("list images")
            .into_inner()
            .images
            .is_empty(),
        "{what}: an image is listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_stops_at_the_image_size_limit() {
    if !in_throwaway_vm() {
        return;
    }
    let archive = bomb().await;
    let _alone = ONE_AT_A_TIME.lock().await;
    // No free-space reserve: only the per-image maximum can stop it.
    let max = (2 * MIB).to_string();
    let d = image_daemon(&["--image-max-size", &max]).await;
    let files = TempDir::new();
    refused_without_a_trace(&d, archive, Code::InvalidArgument, "--image-max-size 2 MiB").await;
    // A small image still imports on that daemon.
    let small = files.path().join("small.tar");
    build::oci_layout_tar(
        &small,
        &[vec![TarEntry::file("hello.txt", "hello\n")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("small image");
    d.client()
        .import_image(&small, Some("small:1"))
        .await
        .expect("a small image imports under the limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_stops_at_the_free_space_reserve() {
    if !in_throwaway_vm() {
        return;
    }
    // The reserve leaves 10 MiB to unpack into; the bomb needs 24 MiB. The
    // per-image maximum is far above both, so only the reserve can stop it:
    // while streaming, or up front when the tests running beside this one
    // have eaten the margin meanwhile. Either way nothing may be left.
    let archive = bomb().await;
    let _alone = ONE_AT_A_TIME.lock().await;
    let stat = nix::sys::statvfs::statvfs("/tmp").expect("statvfs /tmp");
    let free = stat.blocks_available() * stat.fragment_size();
    assert!(free > 256 * MIB, "only {free} bytes free in /tmp");
    let reserve = free - 10 * MIB;
    let d = Daemon::start_with_args(&[
        "--image-min-free",
        &reserve.to_string(),
        "--image-max-size",
        &(1024 * MIB).to_string(),
    ])
    .await;
    refused_without_a_trace(
        &d,
        archive,
        Code::ResourceExhausted,
        "--image-min-free (10 MiB to spare)",
    )
    .await;
}

/// The cgroup v2 directory of `pid` (the VM has cgroup v2 only).
fn cgroup_dir(pid: i32) -> std::path::PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/PID/cgroup");
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {text:?}"));
    Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// The `max N` count of `pids.events`: forks refused at the limit.
fn refused_forks(dir: &Path) -> u64 {
    read_trim(&dir.join("pids.events"))
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_default_pids_limit() {
    if !in_throwaway_vm() {
        return;
    }
    const LIMIT: u64 = 64;
    let d = Daemon::start_with_args(&["--default-pids-limit", &LIMIT.to_string()]).await;
    let name = unique_name("forkbomb");
    // A subshell forks sleeps until a fork fails (ash gives up then); the
    // command has exec'd into a sleep, so the container keeps running.
    let bomb = "(i=0; while [ $i -lt 500 ]; do sleep 300 & i=$((i+1)); done; echo all-forked) \
                & exec sleep 1000";
    start_detached(&d, d.spec(&name, &["sh", "-c", bomb])).await;
    let init = d.client().inspect(&name).await.expect("inspect").pid;
    let init = ProcId::of(init).expect("the init runs");
    let cg = cgroup_dir(init.pid);
    assert_eq!(
        read_trim(&cg.join("pids.max")),
        LIMIT.to_string(),
        "a container without --pids-limit gets the daemon's default"
    );
    eventually(
        "the fork bomb to hit the limit",
        Duration::from_secs(60),
        async || match refused_forks(&cg) {
            0 => Err(format!(
                "pids.current {}",
                read_trim(&cg.join("pids.current"))
            )),
            n => Ok(n),
        },
    )
    .await;
    for _ in 0..5 {
        let current: u64 = read_trim(&cg.join("pids.current"))
            .parse()
            .expect("pids.current");
        assert!(current <= LIMIT, "the container has {current} tasks");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The host still forks.
    let status = std::process::Command::new("/bin/busybox")
        .arg("true")
        .status()
        .expect("the host forks");
    assert!(status.success());
    let logs = super::common::logs_of(&d, &name).await;
    assert!(
        !logs.contains("all-forked"),
        "every fork succeeded:\n{logs}"
    );

    // An explicit --pids-limit overrides the default.
    let roomy = unique_name("roomy");
    let mut spec = d.spec(&roomy, &["sleep", "1000"]);
    spec.resources = Some(proto::Resources {
        pids_limit: Some(100),
        ..Default::default()
    });
    start_detached(&d, spec).await;
    let roomy_init = d.client().inspect(&roomy).await.expect("inspect").pid;
    assert_eq!(read_trim(&cgroup_dir(roomy_init).join("pids.max")), "100");

    // Killing the container ends the bomb.
    d.client()
        .remove(&name, true)
        .await
        .expect("rm -f the bomb");
    eventually(
        "the bomb's init to be gone",
        Duration::from_secs(30),
        async || {
            if init.exists() {
                Err(format!("pid {} still exists", init.pid))
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert!(
        !cg.join("pids.current").exists() || read_trim(&cg.join("pids.current")) == "0",
        "tasks are left in {}",
        cg.display()
    );
}
