//! Registries: real `docker-registry` servers on loopback (plain, htpasswd,
//! bearer tokens of a token server run here, TLS from a test CA;
//! `rsup_tests::registry`), seeded with images built here, pulled and
//! pushed by rsupd: pull and run (OCI and Docker schema 2, an index picking
//! this machine's image), whiteouts applied, layers shared with an imported
//! copy, `run` pulling a missing image; credentials refused, then accepted
//! after `login`, forgotten by `logout`, never in rsupd's log; the same
//! through a token server, and a token the registry stops taking mid-pull
//! renewed on its 401; TLS only with the registry's CA; a push that skopeo
//! reads back; a missing tag NOT_FOUND and a registry that is down
//! UNAVAILABLE; a pull cut off mid-layer (registry killed) that resumes
//! where it stopped; a blob that does not match its digest refused with
//! nothing left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsup_client::proto::image_progress::Event;
use rsup_client::{ImageProgress, RegistryLogin};
use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, BuiltImage, TarEntry};
use rsup_tests::{
    Daemon, Registry, RegistryKind, TempDir, ThrottledProxy, code_of, describe, eventually, stderr,
    stdout,
};
use sha2::{Digest, Sha256};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

const APPLETS: [&str; 8] = ["sh", "cat", "test", "echo", "ls", "wc", "sha256sum", "cut"];

/// `len` incompressible bytes, the same for the same `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A busybox root and [`build::two_layers`]' second layer (which whites out
/// `/etc/removed.txt`), plus a third layer of `noise_len` bytes of noise
/// (seeded by `seed`) when `noise_len > 0`.
fn layers(noise_len: usize, seed: u64) -> Vec<Vec<TarEntry>> {
    let mut base = build::busybox_rootfs(Path::new("/bin/busybox"), &APPLETS);
    base.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n",
    ));
    let mut all = build::two_layers(base);
    if noise_len > 0 {
        all.push(vec![
            TarEntry::dir("noise"),
            TarEntry::file("noise/blob.bin", noise(noise_len, seed)),
        ]);
    }
    all
}

/// Prints both layers' files and whether the whited-out file is gone.
fn show_config() -> ImageConfig {
    ImageConfig {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "cat /data/a.txt /data/b.txt; test -e /etc/removed.txt && echo still-there || echo removed-is-gone".into(),
        ],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

/// An OCI layout tarball with gzipped layers.
fn archive(dir: &Path, name: &str, noise_len: usize, seed: u64) -> (PathBuf, BuiltImage) {
    archive_with(dir, name, noise_len, seed, BuildOptions::default())
}

fn archive_with(
    dir: &Path,
    name: &str,
    noise_len: usize,
    seed: u64,
    opts: BuildOptions,
) -> (PathBuf, BuiltImage) {
    let path = dir.join(format!("{name}.tar"));
    let opts = BuildOptions {
        gzip_layers: true,
        ..opts
    };
    let built = build::oci_layout_tar(&path, &layers(noise_len, seed), &show_config(), &opts)
        .expect("building an OCI layout");
    (path, built)
}

const SHOWN: &str = "a from layer 1\nb from layer 2\nremoved-is-gone\n";

/// `rsupctl ARGS` with its own credentials file.
fn ctl_auth(d: &Daemon, auth: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = d.ctl_command();
    cmd.env("RSUP_AUTH_FILE", auth).args(args);
    rsup_tests::blocking(|| rsup_tests::output_with_timeout(cmd, Duration::from_secs(120)))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ctl_auth_ok(d: &Daemon, auth: &Path, args: &[&str]) -> String {
    let out = ctl_auth(d, auth, args);
    assert!(
        out.status.success(),
        "rsupctl {args:?} failed\n{}",
        describe(&out)
    );
    stdout(&out)
}

fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn images_dir(d: &Daemon, sub: &str) -> PathBuf {
    d.state_dir().join("images").join(sub)
}

/// Pull and run from a plain registry: OCI and Docker schema-2 manifests,
/// whiteouts, layers shared with an imported copy, repo digests, a digest
/// reference, `run` pulling what is missing, a missing tag, a registry that
/// is down.
#[tokio::test(flavor = "multi_thread")]
async fn pull_and_run_from_a_registry() {
    let reg = Registry::start(RegistryKind::Plain);
    let tmp = TempDir::new();
    let host = reg.host();
    let (oci, built) = archive(tmp.path(), "app", 0, 0);
    reg.seed(&oci, "team/app:v1");
    reg.seed_docker_format(&oci, "team/app:docker");
    let (big, big_built) = archive(tmp.path(), "big", 1 << 20, 3);
    reg.seed(&big, "team/big:v1");
    let d = Daemon::start().await;

    // An imported copy first: the pull finds every layer in the store.
    d.ctl_ok([
        "image",
        "import",
        oci.to_str().expect("utf-8"),
        "--name",
        "local:v1",
    ]);
    let layers_before = entries(&images_dir(&d, "layers")).len();
    assert_eq!(layers_before, 2);
    let r = format!("{host}/team/app:v1");
    let out = d.ctl_ok(["pull", &r]);
    assert_eq!(out.matches("already exists").count(), 2, "{out}");
    assert!(!out.contains("downloading"), "{out}");
    let digest = reg.manifest_digest("team/app:v1");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(entries(&images_dir(&d, "layers")).len(), layers_before);
    let pulled = d.client().inspect_image(&r).await.expect("inspect");
    assert_eq!(pulled.id, built.id);
    assert_eq!(pulled.layers, built.diff_ids);
    assert!(
        pulled
            .repo_digests
            .contains(&format!("{host}/team/app@{digest}")),
        "{:?}",
        pulled.repo_digests
    );
    assert!(pulled.names.contains(&"local:v1".to_string()));
    assert!(pulled.names.contains(&r));

    // Run it: both layers, the whiteout applied.
    let out = d.ctl_ok(["run", "--rm", &r]);
    assert_eq!(out, SHOWN);

    // The Docker schema-2 form of the same image: same config, same layers.
    let out = d.ctl_ok(["pull", &format!("{host}/team/app:docker")]);
    assert_eq!(out.matches("already exists").count(), 2, "{out}");

    // By digest: found again, and runnable by that reference.
    let by_digest = format!("{host}/team/app@{digest}");
    d.ctl_ok(["pull", "-q", &by_digest]);
    assert_eq!(d.ctl_ok(["run", "--rm", &by_digest]), SHOWN);

    // A new image: its third layer is downloaded, the other two shared.
    let rb = format!("{host}/team/big:v1");
    let out = d.ctl_ok(["pull", &rb]);
    assert_eq!(out.matches("already exists").count(), 2, "{out}");
    assert!(out.contains("download complete"), "{out}");
    assert!(out.contains("pull complete"), "{out}");
    assert_eq!(entries(&images_dir(&d, "layers")).len(), 3);
    assert!(entries(&images_dir(&d, "downloads")).is_empty());
    let want = hex(&Sha256::digest(noise(1 << 20, 3)));
    let out = d.ctl_ok([
        "run",
        "--rm",
        &rb,
        "sh",
        "-c",
        "sha256sum /noise/blob.bin | cut -d' ' -f1",
    ]);
    assert_eq!(out.trim(), want);
    assert_eq!(
        d.client().inspect_image(&rb).await.expect("big").id,
        big_built.id
    );

    // `run` pulls what it does not have, as `docker run` does.
    reg.seed(&big, "team/auto:v1");
    let ra = format!("{host}/team/auto:v1");
    let out = d.ctl(["run", "--rm", &ra, "echo", "auto"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "auto\n");
    assert!(
        stderr(&out).contains(&format!("Unable to find image '{ra}' locally")),
        "{}",
        describe(&out)
    );
    // ... unless told not to.
    let out = d.ctl([
        "run",
        "--rm",
        "--pull",
        "never",
        &format!("{host}/team/never:v1"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", describe(&out));

    // A missing tag, a missing repository: NOT_FOUND; nothing is left.
    for missing in [
        format!("{host}/team/app:nope"),
        format!("{host}/team/none:v1"),
    ] {
        let code = code_of(
            &missing,
            d.client().pull_image(&missing, None, |_| {}).await,
        );
        assert_eq!(code, Code::NotFound, "{missing}");
    }
    let out = d.ctl(["pull", &format!("{host}/team/app:nope")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", describe(&out));
    // A registry that is down: UNAVAILABLE.
    let closed = rsup_tests::free_loopback_addr();
    let down = format!("{closed}/team/app:v1");
    let code = code_of(&down, d.client().pull_image(&down, None, |_| {}).await);
    assert_eq!(code, Code::Unavailable);
    // Bad references are refused before any request.
    for bad in ["", "bad name", "-flag", "app@sha256:short", "a/../b"] {
        let code = code_of(bad, d.client().pull_image(bad, None, |_| {}).await);
        assert_eq!(code, Code::InvalidArgument, "{bad:?}");
    }
    assert!(entries(&images_dir(&d, "downloads")).is_empty());
}

/// An index (manifest list) of two platforms: the pull takes this
/// machine's.
#[tokio::test(flavor = "multi_thread")]
async fn a_multi_platform_index_pulls_this_machines_image() {
    let reg = Registry::start(RegistryKind::Plain);
    let tmp = TempDir::new();
    let (multi, built) = archive_with(
        tmp.path(),
        "multi",
        0,
        0,
        BuildOptions {
            multi_platform: true,
            ..BuildOptions::default()
        },
    );
    reg.seed_all(&multi, "multi:v1");
    let index = reg.raw_manifest("multi:v1");
    assert!(index["manifests"].is_array(), "{index}");
    let d = Daemon::start().await;
    let r = format!("{}/multi:v1", reg.host());
    d.ctl_ok(["pull", &r]);
    let i = d.client().inspect_image(&r).await.expect("inspect");
    assert_eq!(i.id, built.id);
    assert_eq!(i.architecture, "amd64");
    assert_eq!(d.ctl_ok(["run", "--rm", &r]), SHOWN);
}

/// A registry that wants credentials: refused without, refused with wrong
/// ones (and nothing stored), pulled after `login`, never logged; a tagged
/// image pushed and read back by skopeo; `logout` forgets.
#[tokio::test(flavor = "multi_thread")]
async fn login_pull_and_push_with_credentials() {
    let password = "wonderland-42-secret";
    let reg = Registry::start(RegistryKind::Htpasswd {
        user: "alice".into(),
        password: password.into(),
    });
    let tmp = TempDir::new();
    let host = reg.host();
    let (oci, built) = archive(tmp.path(), "app", 0, 0);
    reg.seed(&oci, "app:v1");
    let d = Daemon::start().await;
    let auth = tmp.path().join("cfg").join("auth.json");
    let r = format!("{host}/app:v1");

    let code = code_of(
        "anonymous pull",
        d.client().pull_image(&r, None, |_| {}).await,
    );
    assert_eq!(code, Code::Unauthenticated);
    let out = ctl_auth(&d, &auth, &["pull", &r]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("login"), "{}", describe(&out));

    // Wrong password: refused, nothing stored.
    let out = ctl_auth(&d, &auth, &["login", "-u", "alice", "-p", "not-it", &host]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!auth.exists());
    let wrong = RegistryLogin {
        username: "alice".into(),
        password: "not-it".into(),
    };
    let code = code_of(
        "wrong login",
        d.client().registry_login(&host, &wrong).await,
    );
    assert_eq!(code, Code::Unauthenticated);

    // The right one, from stdin: stored in a file only its owner reads.
    let mut cmd = d.ctl_command();
    cmd.env("RSUP_AUTH_FILE", &auth)
        .args(["login", "-u", "alice", "--password-stdin", &host]);
    let out = rsup_tests::blocking(|| {
        rsup_tests::output_with_stdin(cmd, format!("{password}\n").as_bytes(), WAIT)
    })
    .expect("login");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("Login Succeeded"));
    let mode = fs::metadata(&auth).expect("auth file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!fs::read_to_string(&auth).expect("read").contains(password));

    let out = ctl_auth_ok(&d, &auth, &["pull", &r]);
    assert!(out.contains("pull complete"), "{out}");
    assert_eq!(ctl_auth_ok(&d, &auth, &["run", "--rm", &r]), SHOWN);

    // Tag and push: skopeo reads back the same image.
    let target = format!("{host}/pushed/app:v2");
    ctl_auth_ok(&d, &auth, &["tag", &r, &target]);
    let out = ctl_auth_ok(&d, &auth, &["push", &target]);
    let inspected = reg.skopeo_inspect("pushed/app:v2");
    let digest = inspected["Digest"].as_str().expect("digest").to_string();
    assert!(out.contains(&digest), "{out}\n{inspected}");
    let layers: Vec<String> = inspected["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l.as_str().expect("str").to_string())
        .collect();
    assert_eq!(layers, built.layer_digests);
    let raw = reg.raw_manifest("pushed/app:v2");
    assert_eq!(raw["config"]["digest"], built.id.as_str());
    // Pushing again sends no blob.
    let out = ctl_auth_ok(&d, &auth, &["push", &target]);
    assert!(!out.contains("pushing"), "{out}");
    assert_eq!(out.matches("already exists").count(), 2, "{out}");
    // A push without credentials is refused.
    let code = code_of(
        "anonymous push",
        d.client().push_image(&target, None, |_| {}).await,
    );
    assert_eq!(code, Code::Unauthenticated);

    // The password never reaches rsupd's log.
    let log = fs::read_to_string(d.log_path()).expect("log");
    assert!(!log.contains(password), "the password is in rsupd's log");

    // logout forgets: the next pull is refused again.
    let out = ctl_auth_ok(&d, &auth, &["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    d.ctl_ok(["image", "rm", "-f", &r]);
    let out = ctl_auth(&d, &auth, &["pull", &target]);
    assert!(!out.status.success(), "{}", describe(&out));
}

/// HTTPS with a test CA: refused until rsupd trusts the CA (by
/// --registry-ca, or a certs.d directory); no fallback to plain HTTP
/// against an HTTPS port.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_registry_needs_its_ca() {
    let reg = Registry::start(RegistryKind::Tls);
    let tmp = TempDir::new();
    let host = reg.host();
    let ca = reg.ca_cert().expect("ca");
    let (oci, built) = archive(tmp.path(), "app", 0, 0);
    reg.seed(&oci, "secure/app:v1");
    let r = format!("{host}/secure/app:v1");

    let d = Daemon::start().await;
    let err = d
        .client()
        .pull_image(&r, None, |_| {})
        .await
        .expect_err("untrusted");
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(err.to_string().contains("https"), "{err}");
    drop(d);

    let flag = format!("{host}={}", ca.display());
    let d = Daemon::start_with_args(&["--registry-ca", &flag]).await;
    d.ctl_ok(["pull", &r]);
    assert_eq!(
        d.client().inspect_image(&r).await.expect("inspect").id,
        built.id
    );
    assert_eq!(d.ctl_ok(["run", "--rm", &r]), SHOWN);
    drop(d);

    let certs = tmp.path().join("certs.d");
    fs::create_dir_all(certs.join(&host)).expect("mkdir");
    fs::copy(&ca, certs.join(&host).join("ca.crt")).expect("copy");
    let d =
        Daemon::start_with_args(&["--registry-certs-dir", certs.to_str().expect("utf-8")]).await;
    d.ctl_ok(["pull", &r]);
}

/// A pull cut off mid-layer (the registry killed) keeps what came; the
/// next pull asks for the rest only, and the image is whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_pull_resumes() {
    let mut reg = Registry::start(RegistryKind::Plain);
    let tmp = TempDir::new();
    let size = 6 << 20;
    let (big, built) = archive(tmp.path(), "big", size, 11);
    reg.seed(&big, "big:v1");
    let noise_digest = built.layer_digests[2].clone();
    let blob_size = fs::metadata(reg.blob_data_path(&noise_digest))
        .expect("blob")
        .len();
    // 1 MiB/s: the noise layer takes ~6 s, time to cut it off.
    let proxy = ThrottledProxy::start(reg.addr(), 1 << 20);
    let d = Daemon::start().await;
    let r = format!("{}/big:v1", proxy.addr());
    let client = d.client().clone();
    let r2 = r.clone();
    let first = tokio::spawn(async move { client.pull_image(&r2, None, |_| {}).await });
    let downloads = images_dir(&d, "downloads");
    let partial = downloads.join(format!(
        "{}.partial",
        noise_digest.trim_start_matches("sha256:")
    ));
    eventually(
        "a partial download of 1 MiB",
        WAIT,
        async || match fs::metadata(&partial) {
            Ok(m) if m.len() >= 1 << 20 => Ok(()),
            Ok(m) => Err(format!("{} bytes", m.len())),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    reg.kill();
    let err = first
        .await
        .expect("join")
        .expect_err("the pull was cut off");
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(err.to_string().contains("pull again to resume"), "{err}");
    let kept = fs::metadata(&partial).expect("the partial stays").len();
    assert!(kept > 0 && kept < blob_size, "{kept} of {blob_size}");
    assert!(d.client().inspect_image(&r).await.is_err(), "no image yet");

    reg.restart();
    let before = proxy.bytes_to_client();
    let seen: Arc<Mutex<Vec<ImageProgress>>> = Arc::default();
    let log = seen.clone();
    let image = d
        .client()
        .pull_image(&r, None, move |p| {
            log.lock().expect("lock").push(p.clone());
        })
        .await
        .expect("the second pull");
    assert_eq!(image.id, built.id);
    let sent = proxy.bytes_to_client() - before;
    assert!(
        sent < blob_size,
        "the second pull took {sent} bytes, the blob is {blob_size}: it started over"
    );
    let resumed = seen.lock().expect("lock").iter().any(|p| {
        matches!(&p.event, Some(Event::Layer(l))
            if l.digest == noise_digest && l.status == "resuming" && l.current >= kept)
    });
    assert!(
        resumed,
        "no resuming event: {:?}",
        seen.lock().expect("lock")
    );
    assert!(entries(&downloads).is_empty(), "{:?}", entries(&downloads));
    let want = hex(&Sha256::digest(noise(size, 11)));
    let out = d.ctl_ok([
        "run",
        "--rm",
        &r,
        "sh",
        "-c",
        "sha256sum /noise/blob.bin | cut -d' ' -f1",
    ]);
    assert_eq!(out.trim(), want);
}

/// A blob whose content is not its digest: DATA_LOSS, and nothing of the
/// pull stays (no image, no layer, no config, no download).
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_that_does_not_match_its_digest_is_refused() {
    let reg = Registry::start(RegistryKind::Plain);
    let tmp = TempDir::new();
    let (oci, built) = archive(tmp.path(), "app", 64 << 10, 5);
    reg.seed(&oci, "bad:v1");
    let path = reg.blob_data_path(&built.layer_digests[2]);
    let mut data = fs::read(&path).expect("blob");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&path, &data).expect("corrupt");
    let d = Daemon::start().await;
    let r = format!("{}/bad:v1", reg.host());
    let err = d
        .client()
        .pull_image(&r, None, |_| {})
        .await
        .expect_err("corrupt");
    assert_eq!(err.code(), Some(Code::DataLoss), "{err}");
    assert!(err.to_string().contains("digest"), "{err}");
    for sub in ["layers", "downloads", "configs", "images", "tmp"] {
        let left = entries(&images_dir(&d, sub));
        assert!(left.is_empty(), "images/{sub}: {left:?}");
    }
    assert!(d.client().list_images().await.expect("list").is_empty());
    let out = d.ctl(["pull", &r]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("digest"), "{}", describe(&out));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hostile "registry" (a loopback server of the test's own) that answers
/// a manifest request with an endless body: the pull stops reading at 4 MiB
/// and refuses it; rsupd stays up and keeps nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_manifest_is_cut_off() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    // Skip the headers.
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    if path == "/v2/" {
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
                        );
                        continue;
                    }
                    // A chunked body that never ends.
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    );
                    let chunk = vec![b' '; 64 << 10];
                    loop {
                        let head = format!("{:x}\r\n", chunk.len());
                        if conn.write_all(head.as_bytes()).is_err()
                            || conn.write_all(&chunk).is_err()
                            || conn.write_all(b"\r\n").is_err()
                        {
                            return;
                        }
                        let n = counter
                            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if n > 1 << 30 {
                            return;
                        }
                    }
                }
            });
        }
    });
    let d = Daemon::start().await;
    let r = format!("{addr}/endless:v1");
    let err = d
        .client()
        .pull_image(&r, None, |_| {})
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(Code::DataLoss), "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
    let read = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read < 64 << 20, "rsupd read {read} bytes of it");
    assert!(d.client().list_images().await.expect("up").is_empty());
}

/// The host-boundary limits hold for pulls: an image beyond
/// --image-max-size is refused while it is read, and nothing stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_beyond_the_image_limit_is_refused() {
    let reg = Registry::start(RegistryKind::Plain);
    let tmp = TempDir::new();
    let (big, _) = archive(tmp.path(), "big", 4 << 20, 9);
    reg.seed(&big, "big:v1");
    let d = Daemon::start_with_args(&["--image-max-size", "3m"]).await;
    let r = format!("{}/big:v1", reg.host());
    let err = d
        .client()
        .pull_image(&r, None, |_| {})
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("image-max-size"), "{err}");
    for sub in ["layers", "downloads", "configs", "images", "tmp"] {
        let left = entries(&images_dir(&d, sub));
        assert!(left.is_empty(), "images/{sub}: {left:?}");
    }
}

/// Pulls at the same time of two images that share their layers: each
/// layer is downloaded once, both pulls succeed, and nothing is left in
/// downloads/.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_share_their_layers() {
    let reg = Registry::start(RegistryKind::Plain);
    let tmp = TempDir::new();
    let (a, built_a) = archive(tmp.path(), "a", 2 << 20, 21);
    let b = tmp.path().join("b.tar");
    let other = ImageConfig {
        cmd: vec!["echo".into(), "b".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let built_b = build::oci_layout_tar(
        &b,
        &layers(2 << 20, 21),
        &other,
        &BuildOptions {
            gzip_layers: true,
            ..BuildOptions::default()
        },
    )
    .expect("b");
    assert_eq!(built_a.layer_digests, built_b.layer_digests);
    assert_ne!(built_a.id, built_b.id);
    reg.seed(&a, "a:v1");
    reg.seed(&b, "b:v1");
    // Slow enough that the two pulls overlap.
    let proxy = ThrottledProxy::start(reg.addr(), 4 << 20);
    let d = Daemon::start().await;
    let (ra, rb) = (
        format!("{}/a:v1", proxy.addr()),
        format!("{}/b:v1", proxy.addr()),
    );
    let (ia, ib) = tokio::join!(
        d.client().pull_image(&ra, None, |_| {}),
        d.client().pull_image(&rb, None, |_| {}),
    );
    assert_eq!(ia.expect("a").id, built_a.id);
    assert_eq!(ib.expect("b").id, built_b.id);
    assert_eq!(entries(&images_dir(&d, "layers")).len(), 3);
    assert!(entries(&images_dir(&d, "downloads")).is_empty());
    assert_eq!(d.ctl_ok(["run", "--rm", &rb]), "b\n");
}

/// A token registry (bearer tokens from a token server of the test's own,
/// as Docker Hub runs it): an anonymous pull gets a token that grants
/// nothing and is refused; `login` is checked by the token server (a wrong
/// password refused); pull, run and push with the stored login; and a
/// token the registry stops taking mid-pull (as if revoked) is renewed on
/// the 401 and the pull goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_registry_takes_a_login() {
    let password = "token-secret-77";
    let reg = Registry::start(RegistryKind::Token {
        user: "bob".into(),
        password: password.into(),
    });
    let tokens = reg.token_server();
    let tmp = TempDir::new();
    let host = reg.host();
    let (oci, built) = archive(tmp.path(), "app", 0, 0);
    reg.seed(&oci, "team/app:v1");
    assert!(tokens.tokens_issued() > 0, "skopeo fetched its tokens");
    let d = Daemon::start().await;
    let auth = tmp.path().join("cfg").join("auth.json");
    let r = format!("{host}/team/app:v1");

    // Anonymous: rsupd gets a token (that grants nothing), and the registry
    // refuses it (twice: rsupd renews a refused token once).
    let before = tokens.tokens_issued();
    let code = code_of(
        "anonymous pull",
        d.client().pull_image(&r, None, |_| {}).await,
    );
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(tokens.tokens_issued() - before, 2);
    let out = ctl_auth(&d, &auth, &["pull", &r]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("login"), "{}", describe(&out));

    // A wrong password: the token server refuses it, nothing is stored.
    let before = tokens.tokens_issued();
    let out = ctl_auth(&d, &auth, &["login", "-u", "bob", "-p", "not-it", &host]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!auth.exists());
    let wrong = RegistryLogin {
        username: "bob".into(),
        password: "not-it".into(),
    };
    let code = code_of(
        "wrong login",
        d.client().registry_login(&host, &wrong).await,
    );
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(tokens.tokens_issued(), before);
    // The right one: a token is issued for it.
    let out = ctl_auth_ok(&d, &auth, &["login", "-u", "bob", "-p", password, &host]);
    assert!(out.contains("Login Succeeded"), "{out}");
    assert_eq!(tokens.tokens_issued(), before + 1);

    let out = ctl_auth_ok(&d, &auth, &["pull", &r]);
    assert!(out.contains("pull complete"), "{out}");
    assert_eq!(
        d.client().inspect_image(&r).await.expect("inspect").id,
        built.id
    );
    assert_eq!(ctl_auth_ok(&d, &auth, &["run", "--rm", &r]), SHOWN);

    // Tag and push (a token for pull and push): skopeo reads it back.
    let target = format!("{host}/pushed/x:v1");
    ctl_auth_ok(&d, &auth, &["tag", &r, &target]);
    let out = ctl_auth_ok(&d, &auth, &["push", &target]);
    let inspected = reg.skopeo_inspect("pushed/x:v1");
    let digest = inspected["Digest"].as_str().expect("digest").to_string();
    assert!(out.contains(&digest), "{out}\n{inspected}");
    let pushed: Vec<String> = inspected["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l.as_str().expect("str").to_string())
        .collect();
    assert_eq!(pushed, built.layer_digests);
    // Without credentials the push is refused (an anonymous token).
    let code = code_of(
        "anonymous push",
        d.client().push_image(&target, None, |_| {}).await,
    );
    assert_eq!(code, Code::Unauthenticated);
    let log = fs::read_to_string(d.log_path()).expect("log");
    assert!(!log.contains(password), "the password is in rsupd's log");

    // Renewal on a 401. Tokens issued from here on are taken by the
    // registry for 3 s only while they still advertise 300 s, so rsupd
    // has no reason to renew them early: only the registry's 401 tells it.
    // The image's first layer is 6 MiB of noise behind a 1 MiB/s proxy
    // (its next two are in the store already, from team/app), and rsupd
    // downloads three layers at a time, starting the next when the oldest
    // is done: the fourth layer's request waits for the noise, at least
    // ~6 s after the session's token was issued, and the registry refuses
    // that token then.
    let size = 6 << 20;
    let mut slow_layers = vec![vec![
        TarEntry::dir("noise"),
        TarEntry::file("noise/blob.bin", noise(size, 13)),
    ]];
    slow_layers.extend(layers(0, 0));
    slow_layers.push(vec![TarEntry::file("tail.txt", "after the noise\n")]);
    let slow = tmp.path().join("slow.tar");
    let slow_built = build::oci_layout_tar(
        &slow,
        &slow_layers,
        &show_config(),
        &BuildOptions {
            gzip_layers: true,
            ..BuildOptions::default()
        },
    )
    .expect("building the slow image");
    assert_eq!(slow_built.layer_digests.len(), 4);
    reg.seed(&slow, "team/slow:v1");
    let proxy = ThrottledProxy::start(reg.addr(), 1 << 20);
    let accepted = Duration::from_secs(3);
    tokens.set_accepted_lifetime(Some(accepted));
    let login = RegistryLogin {
        username: "bob".into(),
        password: password.into(),
    };
    let rs = format!("{}/team/slow:v1", proxy.addr());
    let before = tokens.tokens_issued();
    let started = std::time::Instant::now();
    let image = d
        .client()
        .pull_image(&rs, Some(&login), |_| {})
        .await
        .expect("the slow pull, its token renewed");
    let took = started.elapsed();
    let during = tokens.tokens_issued() - before;
    tokens.set_accepted_lifetime(None);
    eprintln!("the slow pull took {took:?}; {during} tokens were issued during it");
    assert_eq!(image.id, slow_built.id);
    assert!(took > accepted, "the pull took {took:?}");
    assert!(
        during >= 2,
        "{during} token(s) during a pull of {took:?} whose first token the registry \
         took for {accepted:?}: no request met the expired token (see the token log {})",
        tokens.log().display()
    );
    // The registry refused the expired token.
    let reg_log = fs::read_to_string(reg.log()).expect("registry log");
    assert!(
        reg_log.contains("token not to be used after"),
        "the registry logged no expired token"
    );
    assert_eq!(ctl_auth_ok(&d, &auth, &["run", "--rm", &rs]), SHOWN);
}
