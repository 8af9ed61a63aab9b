//! The registry fixture itself (rsup_tests::registry): a real
//! `docker-registry` of each kind (plain, htpasswd, token, TLS) takes an image
//! built with `build::oci_layout_tar` through skopeo, in its OCI and its
//! Docker schema-2 form, and serves it; a token registry's token server
//! grants what it should, and its tokens expire when it says; its blobs lie where
//! `blob_data_path` says; a killed registry restarts on the same port with
//! its storage; the throttled proxy caps the rate, serves ranges, and cuts
//! a download mid-blob when the registry is killed.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, BuiltImage, TarEntry};
use rsup_tests::{
    Access, Registry, RegistryKind, TOKEN_SERVICE, TempDir, ThrottledProxy, eventually, http_get,
};

const WAIT: Duration = Duration::from_secs(20);

const APPLETS: [&str; 4] = ["sh", "cat", "echo", "ls"];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `len` incompressible bytes (xorshift64*), the same for the same `seed`.
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

/// The two layers of [`build::two_layers`] over a busybox root, and a third
/// holding `noise_len` bytes of noise in `/data/noise.bin`.
fn layers(noise_len: usize) -> Vec<Vec<TarEntry>> {
    let mut base = build::busybox_rootfs(Path::new("/bin/busybox"), &APPLETS);
    base.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n",
    ));
    let mut all = build::two_layers(base);
    all.push(vec![
        TarEntry::dir("data"),
        TarEntry::file("data/noise.bin", noise(noise_len, 7)),
    ]);
    all
}

/// An OCI image layout tarball of [`layers`]; `opts` default to gzipped
/// layers.
fn oci_archive(
    dir: &Path,
    name: &str,
    noise_len: usize,
    opts: Option<BuildOptions>,
) -> (PathBuf, BuiltImage) {
    let path = dir.join(format!("{name}.tar"));
    let config = ImageConfig {
        cmd: vec!["sh".into(), "-c".into(), "cat /data/a.txt".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let opts = opts.unwrap_or(BuildOptions {
        ref_name: Some(format!("{name}:v1")),
        gzip_layers: true,
        ..Default::default()
    });
    let built = build::oci_layout_tar(&path, &layers(noise_len), &config, &opts)
        .expect("building an OCI layout");
    (path, built)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The digests and media types of a raw manifest's layers.
fn manifest_layers(raw: &serde_json::Value) -> Vec<(String, String, u64)> {
    raw["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {raw:#}"))
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap_or_default().to_owned(),
                l["mediaType"].as_str().unwrap_or_default().to_owned(),
                l["size"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Seeds both forms of one image and checks what skopeo and the storage
/// show of them.
async fn seeded_image_is_served(kind: RegistryKind) {
    let work = TempDir::new();
    let (archive, built) = oci_archive(work.path(), "fixture", 64 * 1024, None);
    let reg = Registry::start(kind.clone());
    reg.seed(&archive, "rsup/fixture:v1");
    reg.seed_docker_format(&archive, "rsup/fixture:docker");

    // The OCI form: the built manifest and blobs, as they were.
    let info = reg.skopeo_inspect("rsup/fixture:v1");
    assert_eq!(strings(&info["Layers"]), built.layer_digests, "{info:#}");
    assert_eq!(info["Architecture"], BuildOptions::default().architecture);
    assert_eq!(strings(&info["Env"]), ["PATH=/bin"], "{info:#}");
    let mut tags = strings(&info["RepoTags"]);
    tags.sort();
    assert_eq!(tags, ["docker", "v1"], "{info:#}");
    let raw = reg.raw_manifest("rsup/fixture:v1");
    assert_eq!(raw["mediaType"], OCI_MANIFEST, "{raw:#}");
    assert_eq!(raw["config"]["digest"], built.id.as_str(), "{raw:#}");
    let digest = reg.manifest_digest("rsup/fixture:v1");
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(info["Digest"], digest.as_str());

    // Each layer's data file is where blob_data_path says, with its size.
    for (d, media_type, size) in manifest_layers(&raw) {
        assert_eq!(media_type, OCI_GZIP_LAYER, "{raw:#}");
        let path = reg.blob_data_path(&d);
        let len = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert_eq!(len, size, "{}", path.display());
    }

    // The Docker schema-2 form: a different manifest over the same blobs.
    let docker = reg.raw_manifest("rsup/fixture:docker");
    assert_eq!(docker["mediaType"], DOCKER_MANIFEST, "{docker:#}");
    assert_eq!(docker["config"]["digest"], built.id.as_str(), "{docker:#}");
    let docker_layers = manifest_layers(&docker);
    for (_, media_type, _) in &docker_layers {
        assert_eq!(media_type, DOCKER_GZIP_LAYER, "{docker:#}");
    }
    let docker_digests: Vec<String> = docker_layers.into_iter().map(|l| l.0).collect();
    assert_eq!(docker_digests, built.layer_digests);
    assert_ne!(reg.manifest_digest("rsup/fixture:docker"), digest);

    // What the kind asks of a client that brings nothing.
    let tags_path = "/v2/rsup/fixture/tags/list";
    match &kind {
        RegistryKind::Plain => {
            let (code, body) = http_get(reg.addr(), tags_path).await.expect("GET tags");
            assert_eq!(code, 200, "{body}");
            assert!(body.contains("\"v1\""), "{body}");
            assert!(reg.ca_cert().is_none());
        }
        RegistryKind::Htpasswd { .. } => {
            let (code, body) = http_get(reg.addr(), tags_path).await.expect("GET tags");
            assert_eq!(code, 401, "{body}");
        }
        RegistryKind::Token { .. } => {
            let (code, head, body) = fetch_with(reg.addr(), tags_path, &[]).await;
            assert_eq!(code, 401, "{head}");
            let realm = reg.token_server().realm();
            assert!(
                head.contains(&format!(
                    "Www-Authenticate: Bearer realm=\"{realm}\",service=\"{TOKEN_SERVICE}\",\
                     scope=\"repository:rsup/fixture:pull\""
                )),
                "{head}\n{}",
                String::from_utf8_lossy(&body)
            );
            assert!(reg.token_server().tokens_issued() > 0);
        }
        RegistryKind::Tls => {
            // Plain HTTP to the TLS port is refused by Go's server.
            let (code, body) = http_get(reg.addr(), "/v2/")
                .await
                .expect("GET /v2/ in plain HTTP");
            assert_eq!(code, 400, "{body}");
            let ca = reg.ca_cert().expect("a TLS registry's CA");
            let pem = fs::read_to_string(&ca).expect("reading the CA");
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
            assert!(reg.url().starts_with("https://127.0.0.1:"));
        }
    }
    assert!(reg.host().starts_with("127.0.0.1:"), "{}", reg.host());
    assert!(reg.log().starts_with(reg.dir()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_registry_serves_a_seeded_image() {
    seeded_image_is_served(RegistryKind::Plain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seeding_keeps_uncompressed_layers_and_picks_this_platform() {
    let work = TempDir::new();
    let reg = Registry::start(RegistryKind::Plain);

    // Uncompressed layers stay uncompressed (skopeo would gzip them but
    // for --preserve-digests), so the registry's digests are the built ones.
    let (archive, built) = oci_archive(
        work.path(),
        "plain-layers",
        1024,
        Some(BuildOptions {
            gzip_layers: false,
            ..Default::default()
        }),
    );
    reg.seed(&archive, "rsup/plain-layers:v1");
    let raw = reg.raw_manifest("rsup/plain-layers:v1");
    let layers = manifest_layers(&raw);
    for (_, media_type, _) in &layers {
        assert_eq!(media_type, OCI_TAR_LAYER, "{raw:#}");
    }
    let digests: Vec<String> = layers.into_iter().map(|l| l.0).collect();
    assert_eq!(digests, built.layer_digests);
    // Its Docker form: a schema-2 manifest (whose layers skopeo gzips, or
    // not when it can reuse a blob of the same content the registry has).
    reg.seed_docker_format(&archive, "rsup/plain-layers:docker");
    let docker = reg.raw_manifest("rsup/plain-layers:docker");
    assert_eq!(docker["mediaType"], DOCKER_MANIFEST, "{docker:#}");
    for (_, media_type, _) in manifest_layers(&docker) {
        assert!(
            media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar"),
            "{docker:#}"
        );
    }

    // A multi-platform archive: this machine's image, as a plain manifest.
    let (archive, built) = oci_archive(
        work.path(),
        "multi",
        1024,
        Some(BuildOptions {
            gzip_layers: true,
            multi_platform: true,
            ..Default::default()
        }),
    );
    reg.seed(&archive, "rsup/multi:v1");
    let raw = reg.raw_manifest("rsup/multi:v1");
    assert_eq!(raw["mediaType"], OCI_MANIFEST, "{raw:#}");
    assert_eq!(raw["config"]["digest"], built.id.as_str(), "{raw:#}");
    let info = reg.skopeo_inspect("rsup/multi:v1");
    assert_eq!(info["Architecture"], BuildOptions::default().architecture);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_htpasswd_registry_serves_a_seeded_image_to_its_user_only() {
    seeded_image_is_served(RegistryKind::Htpasswd {
        user: "puller".into(),
        password: "s3cret pass".into(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_registry_serves_a_seeded_image_to_its_user_only() {
    seeded_image_is_served(RegistryKind::Token {
        user: "puller".into(),
        password: "s3cret pass".into(),
    })
    .await;
}

/// `GET /token` of the token server at `query`, with `Authorization:
/// Basic` of `creds` if any: the status and the JSON answer.
async fn get_token(
    reg: &Registry,
    query: &str,
    creds: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let auth = creds
        .map(|(u, p)| {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            vec![format!("Authorization: Basic {b}")]
        })
        .unwrap_or_default();
    let (code, head, body) =
        fetch_with(reg.token_server().addr(), &format!("/token?{query}"), &auth).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{head}: not JSON ({e}): {body:?}"));
    (code, json)
}

/// A token's claims, decoded (not verified: the registry does that).
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT has claims");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url claims");
    serde_json::from_slice(&raw).expect("JSON claims")
}

/// What the token server grants: nothing to anyone anonymous, pull and
/// push to its user, a 401 to a wrong password and a 400 to another
/// service; its tokens are counted, advertise the lifetime set, and the
/// registry stops taking one when its accepted lifetime has passed.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_server_grants_its_user_only_and_its_tokens_expire() {
    let work = TempDir::new();
    let (archive, _) = oci_archive(work.path(), "tok", 1024, None);
    let (user, password) = ("puller", "s3cret:pass");
    let reg = Registry::start(RegistryKind::Token {
        user: user.into(),
        password: password.into(),
    });
    reg.seed(&archive, "rsup/tok:v1");
    let server = reg.token_server();
    let tags = "/v2/rsup/tok/tags/list";
    let scope = format!("service={TOKEN_SERVICE}&scope=repository%3Arsup%2Ftok%3Apull%2Cpush");
    let with_token = |token: &str| vec![format!("Authorization: Bearer {token}")];

    // Anonymous: a token (counted) that grants nothing.
    let before = server.tokens_issued();
    let (code, anon) = get_token(&reg, &scope, None).await;
    assert_eq!(code, 200, "{anon}");
    assert_eq!(server.tokens_issued(), before + 1);
    assert_eq!(anon["token"], anon["access_token"]);
    assert_eq!(anon["expires_in"], 300);
    assert!(
        anon["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{anon}"
    );
    let token = anon["token"].as_str().expect("token");
    let c = claims(token);
    assert_eq!(c["sub"], "", "{c}");
    assert_eq!(c["access"], serde_json::json!([]), "{c}");
    let (code, head, _) = fetch_with(reg.addr(), tags, &with_token(token)).await;
    assert_eq!(code, 401, "{head}");
    assert!(head.contains("insufficient_scope"), "{head}");
    // ... though it is a valid token: /v2/ takes it.
    let (code, head, _) = fetch_with(reg.addr(), "/v2/", &with_token(token)).await;
    assert_eq!(code, 200, "{head}");

    // Wrong credentials, another service: refused, not counted.
    let before = server.tokens_issued();
    let (code, body) = get_token(&reg, &scope, Some((user, "wrong"))).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = get_token(&reg, &scope, Some(("someone", password))).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = get_token(
        &reg,
        "service=other&scope=repository%3Arsup%2Ftok%3Apull",
        Some((user, password)),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(server.tokens_issued(), before);
    let log = fs::read_to_string(server.log()).expect("token log");
    assert!(!log.contains(password), "the password is in the token log");

    // The user: pull and push (not more) on what was asked.
    let query = format!("{scope},delete&scope=registry%3Acatalog%3A%2A");
    let (code, body) = get_token(&reg, &query, Some((user, password))).await;
    assert_eq!(code, 200, "{body}");
    let token = body["token"].as_str().expect("token");
    let c = claims(token);
    assert_eq!(c["sub"], user);
    assert_eq!(c["aud"], TOKEN_SERVICE);
    assert_eq!(
        c["access"],
        serde_json::json!([{"type": "repository", "name": "rsup/tok", "actions": ["pull", "push"]}]),
        "{c}"
    );
    let (code, head, body) = fetch_with(reg.addr(), tags, &with_token(token)).await;
    assert_eq!(code, 200, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"v1\""));
    // A token for another repository does not open this one.
    let other = server.mint(
        user,
        &[Access {
            kind: "repository".into(),
            name: "rsup/other".into(),
            actions: vec!["pull".into()],
        }],
    );
    let (code, head, _) = fetch_with(reg.addr(), tags, &with_token(&other)).await;
    assert_eq!(code, 401, "{head}");

    // The advertised lifetime, and the registry's end of a token's use.
    server.set_token_lifetime(Duration::from_secs(2));
    let (_, body) = get_token(&reg, &scope, Some((user, password))).await;
    assert_eq!(body["expires_in"], 2);
    let c = claims(body["token"].as_str().expect("token"));
    assert_eq!(
        c["exp"].as_u64().expect("exp"),
        c["iat"].as_u64().expect("iat") + 2
    );
    server.set_token_lifetime(Duration::from_secs(300));
    server.set_accepted_lifetime(Some(Duration::from_secs(2)));
    let issued = Instant::now();
    let (_, body) = get_token(&reg, &scope, Some((user, password))).await;
    server.set_accepted_lifetime(None);
    assert_eq!(body["expires_in"], 300);
    let short = body["token"].as_str().expect("token").to_owned();
    let (code, head, _) = fetch_with(reg.addr(), tags, &with_token(&short)).await;
    assert_eq!(code, 200, "{head}");
    eventually("the registry to refuse the token", WAIT, async || {
        let (code, head, _) = fetch_with(reg.addr(), tags, &with_token(&short)).await;
        if code == 401 && head.contains("invalid_token") {
            Ok(())
        } else {
            Err(format!("{code}"))
        }
    })
    .await;
    let refused_after = issued.elapsed();
    assert!(
        refused_after >= Duration::from_secs(1) && refused_after < Duration::from_secs(10),
        "refused after {refused_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_registry_serves_a_seeded_image_under_the_test_ca() {
    seeded_image_is_served(RegistryKind::Tls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_registry_restarts_on_its_port_with_its_storage() {
    let work = TempDir::new();
    let (archive, built) = oci_archive(work.path(), "restart", 1024, None);
    let mut reg = Registry::start(RegistryKind::Tls);
    reg.seed(&archive, "rsup/restart:v1");
    let digest = reg.manifest_digest("rsup/restart:v1");
    let host = reg.host();
    let first = reg.pid().expect("running");

    reg.kill();
    assert_eq!(reg.pid(), None);
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "pid {first} was reaped"
    );
    assert!(
        std::net::TcpStream::connect(reg.addr()).is_err(),
        "nothing listens on {host} once the registry is killed"
    );
    reg.kill(); // a second kill is a no-op

    reg.restart();
    let second = reg.pid().expect("running again");
    assert_ne!(first, second);
    assert_eq!(reg.host(), host);
    assert_eq!(reg.manifest_digest("rsup/restart:v1"), digest);
    let info = reg.skopeo_inspect("rsup/restart:v1");
    assert_eq!(strings(&info["Layers"]), built.layer_digests);

    // A restart of a running registry kills it first.
    reg.restart();
    assert_ne!(reg.pid(), Some(second));
    assert_eq!(reg.manifest_digest("rsup/restart:v1"), digest);
}

/// `GET path` over HTTP/1.0 with an optional `Range`, bounded by [`WAIT`]:
/// the status, the header block and whatever body arrived before the end
/// of the stream (or a reset).
async fn fetch(addr: SocketAddr, path: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    let range: Vec<String> = range.map(|r| format!("Range: {r}")).into_iter().collect();
    fetch_with(addr, path, &range).await
}

/// [`fetch`] with these header lines.
async fn fetch_with(addr: SocketAddr, path: &str, headers: &[String]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connecting");
        let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n");
        s.write_all(req.as_bytes()).await.expect("sending");
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the fetch ended in time");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, head, raw[end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_proxy_caps_the_rate_serves_ranges_and_is_cut_by_a_kill() {
    const NOISE: usize = 2 * 1024 * 1024;
    const RATE: u64 = 1024 * 1024;
    let work = TempDir::new();
    let (archive, built) = oci_archive(work.path(), "slow", NOISE, None);
    let mut reg = Registry::start(RegistryKind::Plain);
    reg.seed(&archive, "rsup/slow:v1");
    // The noise layer is the last one.
    let digest = built.layer_digests.last().expect("layers").clone();
    let blob = fs::read(reg.blob_data_path(&digest)).expect("reading the blob's data");
    let size = blob.len();
    assert!(size > NOISE, "{size}");
    let path = format!("/v2/rsup/slow/blobs/{digest}");
    let proxy = ThrottledProxy::start(reg.addr(), RATE);

    // A range: 206, only that part crosses the proxy.
    let (code, head, body) = fetch(proxy.addr(), &path, Some("bytes=1000-1999")).await;
    assert_eq!(code, 206, "{head}");
    assert!(
        head.contains(&format!("Content-Range: bytes 1000-1999/{size}")),
        "{head}"
    );
    assert_eq!(body, blob[1000..2000]);
    assert!(
        proxy.bytes_to_client() < 4096,
        "{}",
        proxy.bytes_to_client()
    );

    // The whole blob, no faster than the rate.
    let before = proxy.bytes_to_client();
    let started = Instant::now();
    let (code, head, body) = fetch(proxy.addr(), &path, None).await;
    let took = started.elapsed();
    assert_eq!(code, 200, "{head}");
    assert!(body == blob, "the blob came through whole");
    let crossed = proxy.bytes_to_client() - before;
    assert!(crossed >= size as u64, "{crossed} < {size}");
    let least = Duration::from_secs_f64(0.8 * size as f64 / RATE as f64);
    assert!(took >= least, "{size} bytes at {RATE} B/s took {took:?}");
    eprintln!("{size} bytes at {RATE} B/s took {took:?}");

    // Killed mid-blob: the download ends short, soon.
    let before = proxy.bytes_to_client();
    let addr = proxy.addr();
    let download = {
        let path = path.clone();
        tokio::spawn(async move { fetch(addr, &path, None).await })
    };
    eventually("the download to be under way", WAIT, async || {
        let n = proxy.bytes_to_client() - before;
        if n >= 256 * 1024 {
            Ok(())
        } else {
            Err(format!("{n} bytes so far"))
        }
    })
    .await;
    reg.kill();
    let killed_at = proxy.bytes_to_client() - before;
    let (code, head, partial) = download.await.expect("the download task");
    assert_eq!(code, 200, "{head}");
    assert!(partial.len() < size, "{} of {size}", partial.len());
    assert_eq!(partial, blob[..partial.len()]);
    eprintln!(
        "killed at {killed_at} bytes to the client; the download ended with {} of {size}",
        partial.len()
    );

    // Restarted, the rest comes as a range, and less than the blob crosses.
    reg.restart();
    let before = proxy.bytes_to_client();
    let (code, head, rest) = fetch(
        proxy.addr(),
        &path,
        Some(&format!("bytes={}-", partial.len())),
    )
    .await;
    assert_eq!(code, 206, "{head}");
    assert!(
        [partial.as_slice(), rest.as_slice()].concat() == blob,
        "the range completes the blob"
    );
    let crossed = proxy.bytes_to_client() - before;
    assert!(crossed < size as u64, "{crossed} >= {size}");
}
