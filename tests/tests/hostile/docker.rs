//! The Docker Engine API socket (`rsupd --docker-socket`, issue 18) spoken
//! to by an attacker in raw HTTP/1.1: hostile names in every path segment,
//! query parameter and body field (`..`, `/`, NUL, `%2e%2e`, 100 KB,
//! non-UTF-8, unicode), binds and tmpfs targets climbing out, fields Docker
//! would honour and rsup must refuse, malformed and huge bodies, filters
//! that are not JSON, absurd times, unknown endpoints and methods, and
//! streams and hijacked connections the client abandons.
//!
//! Each answer must be an error (4xx or 5xx) in Docker's shape
//! (`{"message": ...}`, at most 4 KiB) when it comes from rsupd's router, or
//! hyper's own 4xx for a request line it cannot parse; the daemon answers
//! `/_ping` after every one; and at the end nothing was created (no
//! container, volume, network, image name or spooled upload) and the canary
//! outside the state dir is unchanged. Like the rest of the suite, it runs
//! only inside the throwaway VM.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::common::{self, Canary};
use rsup_runtime::names::RemoteRef;
use rsup_tests::{Daemon, TempDir};

/// The longest error message a client may see.
const MAX_MESSAGE: usize = 4096;
/// Bound of one exchange (the VM emulates its CPU and is slow).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The hostile image every create names (imported over gRPC).
const IMAGE: &str = "hostile-docker:1";

/// An answer: status, header block (lowercased names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    /// True when the answer comes from rsupd's router (it sets
    /// `Api-Version` on every one), not from hyper's parser.
    fn is_the_routers(&self) -> bool {
        self.head.to_ascii_lowercase().contains("\r\napi-version:")
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned()
    }
}

/// A raw request: `Connection: close`, a `Content-Length` for a body.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n").into_bytes();
    for (k, v) in headers {
        r.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            r.extend_from_slice(b"Content-Type: application/json\r\n");
        }
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// The position just past the header block of `buf`, if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &str) -> Result<u16, String> {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {:?}", &head[..head.len().min(200)]))
}

/// A chunked body, decoded (what could be decoded).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Sends `raw` on a fresh connection and reads the whole answer (the
/// server closes after it); `Err` when there is none, e.g. the connection
/// closed without an answer (a panic in a handler).
async fn exchange(sock: &Path, raw: &[u8]) -> Result<Reply, String> {
    let work = async {
        let mut s = UnixStream::connect(sock)
            .await
            .map_err(|e| format!("connect {}: {e}", sock.display()))?;
        // The server may answer (and close) before the whole body is
        // written: a write error is not the answer.
        let _ = s.write_all(raw).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let Some(end) = head_end(&buf) else {
            return Err(format!(
                "no answer ({} bytes: {:?}): the connection closed without one",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ));
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = parse_head(&head)?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(&buf[end..])
        } else {
            buf[end..].to_vec()
        };
        Ok(Reply { status, head, body })
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")))
}

/// `Ok` when `r` is a refusal: 4xx/5xx; from the router, `{"message": s}`
/// with `s` at most [`MAX_MESSAGE`] bytes (HEAD: no body); from hyper, a
/// 4xx.
fn check_refusal(r: &Reply, head_only: bool) -> Result<(), String> {
    if !(400..=599).contains(&r.status) {
        return Err(format!(
            "answered {} (not an error): {}",
            r.status,
            r.body_text()
        ));
    }
    if !r.is_the_routers() {
        return if (400..=499).contains(&r.status) {
            Ok(())
        } else {
            Err(format!("hyper answered {}", r.status))
        };
    }
    if head_only {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
        format!(
            "{} with a body that is not JSON ({e}): {}",
            r.status,
            r.body_text()
        )
    })?;
    let Some(m) = v.get("message").and_then(Value::as_str) else {
        return Err(format!("{} without a message: {}", r.status, r.body_text()));
    };
    if m.len() > MAX_MESSAGE {
        return Err(format!("{} with a message of {} bytes", r.status, m.len()));
    }
    Ok(())
}

/// The daemon still answers `GET /_ping` with `OK`.
async fn ping(sock: &Path) -> Result<(), String> {
    let r = exchange(sock, &request("GET", "/_ping", &[], b"")).await?;
    if r.status == 200 && r.body == b"OK" {
        Ok(())
    } else {
        Err(format!("/_ping answered {} {}", r.status, r.body_text()))
    }
}

/// Percent-encodes everything but unreserved characters (query values).
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One hostile request and what it is.
struct Case {
    label: String,
    method: String,
    raw: Vec<u8>,
}

/// Collects cases and their failures.
#[derive(Default)]
struct Cases(Vec<Case>);

impl Cases {
    fn raw(&mut self, label: impl Into<String>, method: &str, raw: Vec<u8>) {
        self.0.push(Case {
            label: label.into(),
            method: method.to_owned(),
            raw,
        });
    }

    fn req(&mut self, label: impl Into<String>, method: &str, target: &str, body: &[u8]) {
        let raw = request(method, target, &[], body);
        self.raw(label, method, raw);
    }

    fn json(&mut self, label: impl Into<String>, target: &str, body: &Value) {
        let b = serde_json::to_vec(body).expect("json");
        self.req(label, "POST", target, &b);
    }
}

/// Hostile path segments, as they go on the wire (the router sees them
/// percent-encoded: it does not decode paths).
fn hostile_segments() -> Vec<String> {
    let mut v: Vec<String> = [
        "..",
        ".",
        "%2e%2e",
        "%2E%2E",
        "..%2F..%2F..%2Fetc",
        "%2F",
        "%2Fetc%2Fpasswd",
        "x%00y",
        "%00",
        "%C3%A9",
        "%FF%FE",
        "-rf",
        "*",
        "%20",
        "a;b",
        "x:y",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("a".repeat(8 * 1024));
    v.push(format!("{}%2F..%2F..", "x".repeat(4096)));
    v
}

/// Hostile strings for names in query parameters and JSON fields.
fn hostile_strings(canary: &Path) -> Vec<String> {
    let abs = canary.display().to_string();
    let mut v: Vec<String> = [
        "..",
        ".",
        "/",
        "../x",
        "x/y",
        "x/../..",
        "%2e%2e",
        "\0",
        "x\0y",
        "-x",
        ".x",
        "_x",
        "é",
        "x\u{202e}y",
        " x",
        "x ",
        "a:b",
        "a@b",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(abs.clone());
    v.push(format!("{abs}/.."));
    v.push("a".repeat(129));
    v.push("a".repeat(100 * 1024));
    v.push("é".repeat(20 * 1024));
    v
}

/// Starts a daemon with the Docker socket at `<dir>/docker.sock`, with the
/// hostile image imported; returns it and the socket.
async fn docker_daemon(dir: &TempDir) -> (Daemon, PathBuf) {
    let sock = dir.path().join("docker.sock");
    let arg = sock.display().to_string();
    let d = common::image_daemon(&["--docker-socket", &arg]).await;
    common::import_hostile_image(&d, IMAGE, &[]).await;
    // The socket is root's, 0660, and answers.
    let meta = fs::symlink_metadata(&sock).expect("the Docker socket");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        sock.display()
    );
    assert_eq!(meta.mode() & 0o7777, 0o660, "the Docker socket's mode");
    assert_eq!(meta.uid(), 0, "the Docker socket's owner");
    ping(&sock).await.expect("the Docker socket answers /_ping");
    (d, sock)
}

/// What the daemon holds: containers, volumes, networks, image names, and
/// the entries of its containers, volumes and uploads dirs.
async fn holdings(d: &Daemon) -> BTreeSet<String> {
    let c = d.client();
    let mut out = BTreeSet::new();
    for x in c.list(true).await.expect("containers") {
        out.insert(format!("container {} {}", x.id, x.name));
    }
    for v in c.list_volumes().await.expect("volumes") {
        out.insert(format!("volume {}", v.name));
    }
    for n in c.list_networks().await.expect("networks") {
        out.insert(format!("network {}", n.name));
    }
    for i in c.list_images().await.expect("images") {
        out.insert(format!("image {} {:?}", i.id, i.names));
    }
    for dir in ["containers", "volumes", "uploads"] {
        for e in common::tree_names(&d.state_dir().join(dir)) {
            out.insert(format!("{dir}/{e}"));
        }
    }
    out
}

/// Runs every case; after each, `/_ping` must answer. Returns the failures.
async fn run(sock: &Path, cases: &Cases) -> Vec<String> {
    let mut failures = Vec::new();
    for c in &cases.0 {
        let head_only = c.method == "HEAD";
        match exchange(sock, &c.raw).await {
            Ok(r) => {
                if let Err(e) = check_refusal(&r, head_only) {
                    failures.push(format!("{}: {e}", c.label));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", c.label)),
        }
        if let Err(e) = ping(sock).await {
            failures.push(format!("after {}: {e}", c.label));
            // A dead daemon fails every case after: stop here.
            break;
        }
    }
    failures
}

fn short(s: &str) -> String {
    if s.len() <= 40 {
        format!("{s:?}")
    } else {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}...({} bytes)", &s[..end], s.len())
    }
}

/// Every endpoint with a hostile path segment.
fn path_cases(cases: &mut Cases) {
    for s in hostile_segments() {
        let l = short(&s);
        for (m, t) in [
            ("GET", format!("/containers/{s}/json")),
            ("POST", format!("/containers/{s}/start")),
            ("POST", format!("/containers/{s}/stop?t=1")),
            ("POST", format!("/containers/{s}/restart?t=1")),
            ("POST", format!("/containers/{s}/kill")),
            ("POST", format!("/containers/{s}/wait")),
            ("DELETE", format!("/containers/{s}?force=1&v=1")),
            ("GET", format!("/containers/{s}/logs?stdout=1&stderr=1")),
            ("POST", format!("/containers/{s}/attach?stream=1&stdout=1")),
            ("GET", format!("/containers/{s}/stats?stream=0")),
            ("GET", format!("/containers/{s}/top")),
            ("GET", format!("/containers/{s}/archive?path=/etc")),
            ("PUT", format!("/containers/{s}/archive?path=/")),
            ("GET", format!("/exec/{s}/json")),
            ("POST", format!("/exec/{s}/start")),
            ("GET", format!("/images/{s}/json")),
            ("DELETE", format!("/images/{s}?force=1")),
            ("GET", format!("/networks/{s}")),
            ("DELETE", format!("/networks/{s}")),
            ("GET", format!("/volumes/{s}")),
            ("DELETE", format!("/volumes/{s}?force=1")),
            ("GET", format!("/v1.41/containers/{s}/json")),
            ("GET", format!("/v{s}/containers/json")),
        ] {
            cases.req(format!("{m} {} with {l}", short(&t)), m, &t, b"");
        }
        if RemoteRef::parse(&s).is_err() {
            cases.req(
                format!("push {l}"),
                "POST",
                &format!("/images/{s}/push"),
                b"",
            );
        }
        cases.json(
            format!("exec create in {l}"),
            &format!("/containers/{s}/exec"),
            &json!({"Cmd": ["true"], "AttachStdout": true}),
        );
        cases.json(
            format!("connect to network {l}"),
            &format!("/networks/{s}/connect"),
            &json!({"Container": "nosuch"}),
        );
        cases.json(
            format!("disconnect from network {l}"),
            &format!("/networks/{s}/disconnect"),
            &json!({"Container": "nosuch"}),
        );
        cases.req(
            format!("tag {l}"),
            "POST",
            &format!("/images/{s}/tag?repo=x&tag=y"),
            b"",
        );
        cases.req(
            format!("tag {IMAGE} as {l}"),
            "POST",
            &format!("/images/{IMAGE}/tag?repo={s}&tag=x"),
            b"",
        );
        cases.req(
            format!("tag {IMAGE} with the tag {l}"),
            "POST",
            &format!("/images/{IMAGE}/tag?repo=x&tag={s}"),
            b"",
        );
    }
    // Raw non-ASCII and control bytes on the request line (hyper refuses
    // them before the router).
    for (label, seg) in [
        ("raw é", "\u{e9}".as_bytes().to_vec()),
        ("raw 0xff", vec![0xff]),
        ("raw NUL", vec![0]),
        ("raw tab", vec![b'\t']),
    ] {
        let mut raw = b"GET /containers/".to_vec();
        raw.extend_from_slice(&seg);
        raw.extend_from_slice(b"/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
        cases.raw(format!("GET /containers/<{label}>/json"), "GET", raw);
    }
}

/// Creates with hostile names and fields.
fn create_cases(cases: &mut Cases, canary: &Path) {
    let abs = canary.display().to_string();
    let base = || json!({"Image": IMAGE, "Cmd": ["true"]});
    let with_host = |host: Value| {
        let mut b = base();
        b["HostConfig"] = host;
        b
    };
    for s in hostile_strings(canary) {
        let l = short(&s);
        cases.json(
            format!("create named {l}"),
            &format!("/containers/create?name={}", pct(&s)),
            &base(),
        );
        cases.json(
            format!("create of the image {l}"),
            "/containers/create",
            &json!({"Image": s, "Cmd": ["true"]}),
        );
        cases.json(
            format!("create on the network {l}"),
            "/containers/create",
            &with_host(json!({"NetworkMode": s})),
        );
        // An absolute source is a host bind (as over gRPC): not hostile.
        if !s.starts_with('/') {
            cases.json(
                format!("create with the volume {l}"),
                "/containers/create",
                &with_host(json!({"Binds": [format!("{s}:/data")]})),
            );
        }
        // The canary's own path (and `/` for a working dir) are valid
        // targets inside the container: not hostile there.
        let valid_target = s == abs;
        if !valid_target {
            cases.json(
                format!("create with a bind onto {l}"),
                "/containers/create",
                &with_host(json!({"Binds": [format!("{abs}:{s}")]})),
            );
            cases.json(
                format!("create with a tmpfs on {l}"),
                "/containers/create",
                &with_host(json!({"Tmpfs": {s.clone(): ""}})),
            );
        }
        // Inside the container `..` resolves in its own root.
        if !s.starts_with('/') {
            cases.json(
                format!("create with the working dir {l}"),
                "/containers/create",
                &json!({"Image": IMAGE, "Cmd": ["true"], "WorkingDir": s}),
            );
        }
        cases.json(
            format!("create with the restart policy {l}"),
            "/containers/create",
            &with_host(json!({"RestartPolicy": {"Name": s}})),
        );
        cases.json(
            format!("create with the security option {l}"),
            "/containers/create",
            &with_host(json!({"SecurityOpt": [s]})),
        );
        cases.json(
            format!("create with the capability {l}"),
            "/containers/create",
            &with_host(json!({"CapAdd": [s]})),
        );
        cases.json(
            format!("create with the log driver {l}"),
            "/containers/create",
            &with_host(json!({"LogConfig": {"Type": s}})),
        );
        cases.json(
            format!("create with the alias {l}"),
            "/containers/create",
            &json!({"Image": IMAGE, "HostConfig": {"NetworkMode": "default"},
                "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": [s]}}}}),
        );
        cases.json(
            format!("create publishing to {l}"),
            "/containers/create",
            &with_host(json!({"PortBindings": {"80/tcp": [{"HostIp": s, "HostPort": "8080"}]}})),
        );
    }
    // Binds and tmpfs mounts that climb out or ask for what rsup refuses.
    for b in [
        "../../etc:/x".to_owned(),
        "..:/x".into(),
        ".:/x".into(),
        "a/../..:/x".into(),
        "x/../../..:/x".into(),
        "../../canary:/x".into(),
        ":/x".into(),
        "data:".into(),
        "data:/".into(),
        "data:x".into(),
        "data:/x/../../etc".into(),
        "data:/x:rx".into(),
        "data:/x:ro:extra".into(),
        "/etc:/x:Z".into(),
        "/etc:/x:z".into(),
        "/etc:/x:shared".into(),
        "/etc:/x:rshared".into(),
        "/etc:/x:slave".into(),
        "/etc:/x:ro,Z".into(),
        format!("{abs}:/x:Z"),
        format!("{abs}:/x:rshared"),
        format!("{abs}/nosuch:/x"),
        "/nonexistent-rsup-docker:/x".into(),
        format!("{abs}\0:/x"),
        "data".into(),
        "data:/x:ro:ro:ro".into(),
    ] {
        cases.json(
            format!("create with the bind {}", short(&b)),
            "/containers/create",
            &with_host(json!({"Binds": [b]})),
        );
    }
    for (path, opts) in [
        ("/x/../../etc", ""),
        ("../x", ""),
        ("x", ""),
        ("/", ""),
        ("/tmp", "size=1m,../x"),
        ("/tmp", "exec,suid,dev,bogus"),
        ("/tmp", "mode=99999"),
        ("/tmp", "size=-1"),
        ("/tmp:rw", "x"),
        ("/tmp", "\0"),
    ] {
        cases.json(
            format!("create with the tmpfs {} {}", short(path), short(opts)),
            "/containers/create",
            &with_host(json!({"Tmpfs": {path: opts}})),
        );
    }
    // What Docker would do and rsupd must refuse, not ignore.
    let refused_host = [
        json!({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]}),
        json!({"DeviceCgroupRules": ["a *:* rwm"]}),
        json!({"DeviceRequests": [{"Driver": "nvidia", "Count": -1}]}),
        json!({"PidMode": "host"}),
        json!({"PidMode": "container:x"}),
        json!({"IpcMode": "host"}),
        json!({"UTSMode": "host"}),
        json!({"CgroupnsMode": "host"}),
        json!({"UsernsMode": "remap:x"}),
        json!({"NetworkMode": "host"}),
        json!({"NetworkMode": "container:abc"}),
        json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}),
        json!({"VolumesFrom": ["x"]}),
        json!({"CgroupParent": "/../../.."}),
        json!({"Sysctls": {"kernel.core_pattern": "|/tmp/x"}}),
        json!({"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 1}]}),
        json!({"SecurityOpt": ["seccomp=/etc/passwd"]}),
        // An inline profile (how the docker CLI sends a profile file) is the
        // runtime's custom profile, as with gRPC: a broken one is refused.
        json!({"SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_NOT_AN_ACTION\"}"]}),
        json!({"SecurityOpt": ["seccomp={not json"]}),
        json!({"SecurityOpt": ["seccomp={}", "seccomp={}"]}),
        json!({"SecurityOpt": ["apparmor=unconfined"]}),
        json!({"SecurityOpt": ["label=disable"]}),
        json!({"SecurityOpt": ["systempaths=unconfined"]}),
        json!({"CapAdd": ["CAP_NOT_A_CAP"]}),
        json!({"Runtime": "/bin/sh"}),
        json!({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "unix:///dev/log"}}}),
        json!({"VolumeDriver": "x"}),
        json!({"Isolation": "hyperv"}),
        json!({"StorageOpt": {"size": "1G"}}),
        json!({"ExtraHosts": ["x:1.2.3.4"]}),
        json!({"Dns": ["1.2.3.4"]}),
        json!({"Links": ["x:y"]}),
        json!({"Init": true}),
        json!({"OomKillDisable": true}),
        json!({"RestartPolicy": {"Name": "bogus"}}),
        json!({"PidsLimit": 1_000_000_000_000_i64}),
        json!({"PortBindings": {"80/udp": [{"HostPort": "53"}]}}),
        json!({"PortBindings": {"80/tcp": [{"HostPort": ""}]}}),
        json!({"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}}),
        json!({"PortBindings": {"../80/tcp": [{"HostPort": "8080"}]}}),
        json!({"Binds": "notalist"}),
        json!({"Binds": [1, 2]}),
        json!({"Tmpfs": ["/tmp"]}),
        json!({"Tmpfs": {"/tmp": 1}}),
    ];
    for h in refused_host {
        cases.json(
            format!("create with HostConfig {}", short(&h.to_string())),
            "/containers/create",
            &with_host(h),
        );
    }
    let mut many_labels = serde_json::Map::new();
    for i in 0..2000 {
        many_labels.insert(format!("l{i}"), json!("v"));
    }
    let refused_body = [
        json!({"Image": IMAGE, "Tty": true}),
        json!({"Image": IMAGE, "OpenStdin": true}),
        json!({"Image": IMAGE, "StopSignal": "SIGKILL"}),
        json!({"Image": IMAGE, "Env": ["=x"]}),
        json!({"Image": IMAGE, "Env": ["A\u{0}B=x"]}),
        json!({"Image": IMAGE, "Env": [1]}),
        json!({"Image": IMAGE, "Cmd": ["a\u{0}b"]}),
        json!({"Image": IMAGE, "Cmd": {"x": 1}}),
        json!({"Image": IMAGE, "Entrypoint": [1]}),
        json!({"Image": IMAGE, "User": "x\u{0}"}),
        json!({"Image": IMAGE, "User": "nosuchuser"}),
        json!({"Image": IMAGE, "Hostname": "../x"}),
        json!({"Image": IMAGE, "Hostname": "a".repeat(300)}),
        json!({"Image": IMAGE, "Labels": {"a": 1}}),
        json!({"Image": IMAGE, "Labels": {"a": "x\u{0}"}}),
        json!({"Image": IMAGE, "Labels": many_labels}),
        json!({"Image": IMAGE, "Healthcheck": {"Test": ["CMD", "true"]}}),
        json!({"Image": IMAGE, "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 1}}),
        json!({"Image": IMAGE, "HostConfig": {"NetworkMode": "nosuchnet"}}),
        json!({"Image": IMAGE, "NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}}),
        json!({"Image": IMAGE, "NetworkingConfig": {"EndpointsConfig": {"default": {"IPAMConfig": {"IPv4Address": "../x"}}}}}),
        json!({"Image": ""}),
        json!({}),
        json!({"Image": "nosuchimage:1"}),
        json!({"Image": "sha256:0000"}),
    ];
    for b in refused_body {
        cases.json(
            format!("create with {}", short(&b.to_string())),
            "/containers/create",
            &b,
        );
    }
}

/// Volumes, networks, images, exec, filters, times, bodies, methods.
fn other_cases(cases: &mut Cases, canary: &Path) {
    for s in hostile_strings(canary) {
        let l = short(&s);
        cases.json(
            format!("volume create {l}"),
            "/volumes/create",
            &json!({"Name": s}),
        );
        cases.json(
            format!("network create {l}"),
            "/networks/create",
            &json!({"Name": s}),
        );
        cases.json(
            format!("network create with subnet {l}"),
            "/networks/create",
            &json!({"Name": "hostilenet", "IPAM": {"Config": [{"Subnet": s}]}}),
        );
        cases.json(
            format!("connect the container {l}"),
            "/networks/default/connect",
            &json!({"Container": s}),
        );
        cases.json(
            format!("disconnect the container {l}"),
            "/networks/default/disconnect",
            &json!({"Container": s}),
        );
        // A reference that parses is a pull (answered 200, its failure in
        // the stream, as in Docker): only the others are hostile here.
        if RemoteRef::parse(&s).is_err() {
            cases.req(
                format!("pull {l}"),
                "POST",
                &format!("/images/create?fromImage={}", pct(&s)),
                b"",
            );
        }
        if RemoteRef::parse(&format!("127.0.0.1:1/x:{s}")).is_err() {
            cases.req(
                format!("pull x with the tag {l}"),
                "POST",
                &format!("/images/create?fromImage=127.0.0.1:1/x&tag={}", pct(&s)),
                b"",
            );
        }
        cases.req(
            format!("kill with the signal {l}"),
            "POST",
            &format!("/containers/nosuch/kill?signal={}", pct(&s)),
            b"",
        );
    }
    for body in [
        json!({"Name": "v", "Driver": "nfs"}),
        json!({"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": "/etc"}}),
        json!({"Name": "v", "DriverOpts": {"device": canary.display().to_string()}}),
        json!({"Name": 5}),
    ] {
        cases.json(
            format!("volume create {}", short(&body.to_string())),
            "/volumes/create",
            &body,
        );
    }
    for body in [
        json!({"Name": "n", "Driver": "macvlan"}),
        json!({"Name": "n", "Options": {"com.docker.network.bridge.name": "eth0"}}),
        json!({"Name": "n", "Options": {"parent": "lo"}}),
        json!({"Name": "n", "EnableIPv6": true}),
        json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24"}, {"Subnet": "10.98.0.0/24"}]}}),
        json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24", "IPRange": "10.99.0.0/25"}]}}),
        json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24", "Gateway": "../x"}]}}),
        json!({"Name": "none"}),
        json!({"Name": "host"}),
        json!({"Name": "default"}),
    ] {
        cases.json(
            format!("network create {}", short(&body.to_string())),
            "/networks/create",
            &body,
        );
    }
    cases.json(
        "connect with a fixed address",
        "/networks/default/connect",
        &json!({"Container": "nosuch", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.5"}}}),
    );
    // Registry credentials that are not what Docker sends, for a pull that
    // would otherwise go to a closed loopback port.
    for auth in [
        "!!!not base64!!!".to_owned(),
        "bm90IGpzb24".into(),
        "A".repeat(64 * 1024),
    ] {
        let raw = request(
            "POST",
            "/images/create?fromImage=127.0.0.1:1/x&tag=1",
            &[("X-Registry-Auth", &auth)],
            b"",
        );
        cases.raw(
            format!("pull with X-Registry-Auth {}", short(&auth)),
            "POST",
            raw,
        );
    }
    cases.req(
        "pull fromSrc=/etc/passwd",
        "POST",
        "/images/create?fromSrc=%2Fetc%2Fpasswd",
        b"",
    );
    cases.req(
        "pull fromSrc=-",
        "POST",
        "/images/create?fromSrc=-&repo=x",
        b"",
    );
    cases.req(
        "pull for another platform",
        "POST",
        "/images/create?fromImage=127.0.0.1:1/x&platform=..%2F..",
        b"",
    );
    // `docker load` of what is not an archive, and of an archive that lies
    // about its length.
    cases.raw(
        "load of garbage",
        "POST",
        request(
            "POST",
            "/images/load",
            &[("Content-Type", "application/x-tar")],
            &[0x42; 4096],
        ),
    );
    cases.raw(
        "load of an empty body",
        "POST",
        request(
            "POST",
            "/images/load",
            &[("Content-Type", "application/x-tar")],
            b"",
        ),
    );
    cases.raw(
        "load of a tar entry climbing out",
        "POST",
        request(
            "POST",
            "/images/load",
            &[("Content-Type", "application/x-tar")],
            &tar_with_entry("../../../../canary/evil", b"evil"),
        ),
    );
    // exec: no such instance; creating one in no container.
    for id in [
        "0".repeat(64),
        "g".repeat(64),
        "0".repeat(63),
        "0".repeat(65),
    ] {
        cases.json(
            format!("exec start {}", short(&id)),
            &format!("/exec/{id}/start"),
            &json!({"Detach": false}),
        );
        cases.req(
            format!("exec inspect {}", short(&id)),
            "GET",
            &format!("/exec/{id}/json"),
            b"",
        );
    }
    // Filters that are not what Docker sends.
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    for f in [
        "notjson".to_owned(),
        "[]".into(),
        "1".into(),
        "null".into(),
        r#"{"bogus":["x"]}"#.into(),
        r#"{"name":[1]}"#.into(),
        r#"{"name":1}"#.into(),
        format!(r#"{{"name":{deep}}}"#),
        deep.clone(),
        "\u{0}".into(),
    ] {
        for target in [
            "/containers/json?all=1",
            "/images/json",
            "/networks",
            "/volumes",
            "/events",
        ] {
            cases.req(
                format!("GET {target} with filters {}", short(&f)),
                "GET",
                &format!(
                    "{target}{}filters={}",
                    if target.contains('?') { "&" } else { "?" },
                    pct(&f)
                ),
                b"",
            );
        }
    }
    // Times: not numbers, negative, not finite, beyond any clock. (An
    // out-of-range date such as 2026-13-45T99:99:99Z is read loosely as a
    // later valid time by the runtime's parser: an events stream that stays
    // open, not an error, so it is not here.)
    for t in [
        "x",
        "-1",
        "NaN",
        "inf",
        "-inf",
        "1e300",
        "1e19",
        "18446744073709551615",
        "1e400",
        "9223372036854775807.5",
        "99999-01-01T00:00:00Z",
        "0000-00-00T00:00:00Z",
        "9999-12-31T23:59:59.999999999999Z",
    ] {
        for (what, target) in [
            ("events since", format!("/events?since={}", pct(t))),
            ("events until", format!("/events?until={}", pct(t))),
            (
                "logs since",
                format!("/containers/nosuch/logs?stdout=1&since={}", pct(t)),
            ),
            (
                "logs until",
                format!("/containers/nosuch/logs?stdout=1&until={}", pct(t)),
            ),
        ] {
            cases.req(format!("{what} {t}"), "GET", &target, b"");
        }
    }
    for t in ["x", "1e300", "99999999999999999999", "86401"] {
        cases.req(
            format!("stop with t={t}"),
            "POST",
            &format!("/containers/nosuch/stop?t={t}"),
            b"",
        );
    }
    cases.req(
        "logs tail=x",
        "GET",
        "/containers/nosuch/logs?stdout=1&tail=x",
        b"",
    );
    cases.req(
        "wait condition=../x",
        "POST",
        "/containers/nosuch/wait?condition=..%2Fx",
        b"",
    );
    // Malformed bodies.
    for (label, body) in [
        ("{", b"{".to_vec()),
        ("[]", b"[]".to_vec()),
        ("\"x\"", b"\"x\"".to_vec()),
        ("null", b"null".to_vec()),
        ("non-UTF-8", b"{\"Image\": \"\xff\xfe\"}".to_vec()),
        ("a lone surrogate", br#"{"Image": "\ud800"}"#.to_vec()),
        ("deep nesting", {
            let mut b = b"{\"Image\":".to_vec();
            b.extend(std::iter::repeat_n(b'[', 200_000));
            b
        }),
        ("trailing garbage", b"{\"Image\": \"x\"} x".to_vec()),
        ("NUL bytes", vec![0; 1024]),
    ] {
        for target in [
            "/containers/create",
            "/volumes/create",
            "/networks/create",
            "/networks/default/connect",
            "/containers/nosuch/exec",
        ] {
            cases.req(format!("POST {target} with {label}"), "POST", target, &body);
        }
    }
    // Methods and endpoints rsupd does not serve.
    for (m, t) in [
        ("HEAD", "/containers/json"),
        ("OPTIONS", "/_ping"),
        ("OPTIONS", "*"),
        ("PUT", "/containers/create"),
        ("PATCH", "/containers/nosuch/json"),
        ("TRACE", "/_ping"),
        ("CONNECT", "/_ping"),
        ("BREW", "/_ping"),
        ("DELETE", "/_ping"),
        ("POST", "/_ping"),
        ("POST", "/build?remote=file%3A%2F%2F%2Fetc"),
        ("POST", "/commit?container=x&repo=y"),
        ("GET", "/images/get?names=x"),
        ("GET", "/images/search?term=x"),
        ("POST", "/swarm/init"),
        ("GET", "/plugins"),
        ("POST", "/plugins/pull?remote=x"),
        ("POST", "/session"),
        ("GET", "/system/df"),
        ("POST", "/containers/prune"),
        ("POST", "/volumes/prune"),
        ("POST", "/networks/prune"),
        ("POST", "/images/prune"),
        ("POST", "/containers/nosuch/update"),
        ("POST", "/containers/nosuch/rename?name=..%2Fx"),
        ("POST", "/containers/nosuch/pause"),
        ("GET", "/containers/nosuch/export"),
        ("HEAD", "/containers/nosuch/archive?path=%2Fetc"),
        ("GET", "/v1.99/_ping"),
        ("GET", "/v0.1/_ping"),
        ("GET", "/v1.41/../../_ping"),
        ("GET", "/../../etc/passwd"),
        ("GET", "//containers//json"),
        ("GET", "/containers/json/"),
        ("GET", "http://docker/../../etc/passwd"),
    ] {
        cases.req(format!("{m} {t}"), m, t, b"");
    }
    // A hijack that asks for stdin.
    cases.raw(
        "attach with stdin",
        "POST",
        request(
            "POST",
            "/containers/nosuch/attach?stream=1&stdin=1&stdout=1",
            &[("Connection", "Upgrade"), ("Upgrade", "tcp")],
            b"",
        ),
    );
}

/// A one-entry ustar archive (name up to 100 bytes), for `docker load`.
fn tar_with_entry(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let size = format!("{:011o}", content.len());
    h[124..135].copy_from_slice(size.as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let sum = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(sum.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_docker_requests_are_refused_and_touch_nothing() {
    if !common::in_throwaway_vm() {
        return;
    }
    let dir = TempDir::new();
    let canary = Canary::plant(dir.path());
    let (d, sock) = docker_daemon(&dir).await;
    let before = holdings(&d).await;

    let mut cases = Cases::default();
    path_cases(&mut cases);
    create_cases(&mut cases, canary.path());
    other_cases(&mut cases, canary.path());
    let total = cases.0.len();
    let failures = run(&sock, &cases).await;

    canary.assert_intact("after the hostile Docker requests");
    let after = holdings(&d).await;
    let made: Vec<&String> = after.difference(&before).collect();
    let gone: Vec<&String> = before.difference(&after).collect();
    assert!(
        failures.is_empty(),
        "{} of {total} hostile Docker requests were not refused as they must be:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        made.is_empty() && gone.is_empty(),
        "the hostile Docker requests changed the daemon's holdings: made {made:?}, gone {gone:?}"
    );
    println!("{total} hostile Docker requests refused; nothing made, the canary intact");
}

/// Sends `raw` with a header claiming `claimed` bytes and then up to
/// `send` bytes of filler, while reading; the answer must come (an error)
/// before the whole claimed body was sent.
async fn oversized(sock: &Path, head: String, send: usize) -> Result<Reply, String> {
    let s = UnixStream::connect(sock)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < send {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let read = async {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 8192];
        loop {
            let n = rd.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&tmp[..n]);
            if head_end(&buf).is_some() {
                break;
            }
        }
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(CALL_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))??;
    writer.abort();
    let Some(end) = head_end(&buf) else {
        return Err(format!("no answer ({} bytes)", buf.len()));
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = parse_head(&head)?;
    Ok(Reply {
        status,
        head,
        body: Vec::new(),
    })
}

/// The resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_docker_bodies_are_refused_not_read() {
    if !common::in_throwaway_vm() {
        return;
    }
    let dir = TempDir::new();
    let (d, sock) = docker_daemon(&dir).await;
    let before = holdings(&d).await;
    let rss_before = rss_kib(d.pid());
    let mut failures = Vec::new();
    for target in [
        "/containers/create",
        "/volumes/create",
        "/networks/create",
        "/networks/default/connect",
        "/containers/nosuch/exec",
        "/exec/0000000000000000000000000000000000000000000000000000000000000000/start",
    ] {
        // A length of 1 GiB announced, 32 MiB sent.
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            1u64 << 30
        );
        match oversized(&sock, head, 32 << 20).await {
            Ok(r) if (400..=599).contains(&r.status) => {}
            Ok(r) => failures.push(format!("{target} (length): answered {}", r.status)),
            Err(e) => failures.push(format!("{target} (length): {e}")),
        }
        // Chunked, without end.
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1000000\r\n"
        );
        match oversized(&sock, head, 32 << 20).await {
            Ok(r) if (400..=599).contains(&r.status) => {}
            Ok(r) => failures.push(format!("{target} (chunked): answered {}", r.status)),
            Err(e) => failures.push(format!("{target} (chunked): {e}")),
        }
        if let Err(e) = ping(&sock).await {
            failures.push(format!("after {target}: {e}"));
            break;
        }
    }
    // Headers and a query without end.
    let big_header = format!(
        "GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Registry-Auth: {}\r\n\r\n",
        "A".repeat(4 << 20)
    );
    match exchange(&sock, big_header.as_bytes()).await {
        Ok(r) if (400..=599).contains(&r.status) => {}
        Ok(r) => failures.push(format!("a 4 MiB header: answered {}", r.status)),
        // hyper may close on it without an answer: that is a refusal too.
        Err(_) => {}
    }
    let big_query = format!(
        "GET /containers/json?filters={} HTTP/1.1\r\nHost: docker\r\n\r\n",
        "a".repeat(4 << 20)
    );
    match exchange(&sock, big_query.as_bytes()).await {
        Ok(r) if (400..=599).contains(&r.status) => {}
        Ok(r) => failures.push(format!("a 4 MiB query: answered {}", r.status)),
        Err(_) => {}
    }
    if let Err(e) = ping(&sock).await {
        failures.push(format!("at the end: {e}"));
    }
    let rss_after = rss_kib(d.pid());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        rss_after < rss_before + 256 * 1024,
        "rsupd grew from {rss_before} KiB to {rss_after} KiB on refused bodies"
    );
    let after = holdings(&d).await;
    assert_eq!(
        before, after,
        "refused bodies changed the daemon's holdings"
    );
}

/// The open descriptors of `pid`.
fn fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Opens a request, reads its answer's head, then drops the connection.
async fn open_and_abandon(sock: &Path, raw: &[u8]) -> Result<u16, String> {
    let mut s = UnixStream::connect(sock)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(raw).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("closed after {} bytes", buf.len()));
            }
            buf.extend_from_slice(&tmp[..n]);
            if let Some(end) = head_end(&buf) {
                return parse_head(&String::from_utf8_lossy(&buf[..end]));
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, read)
        .await
        .map_err(|_| "no answer".to_owned())?
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_docker_streams_and_hijacks_end() {
    if !common::in_throwaway_vm() {
        return;
    }
    let dir = TempDir::new();
    let (d, sock) = docker_daemon(&dir).await;
    // A quiet container: its streams carry nothing until it stops.
    let id =
        common::start_detached(&d, common::image_spec("quiet", IMAGE, &["sleep", "3600"])).await;
    let pid = d.pid();
    // Settle, then the baseline.
    ping(&sock).await.expect("ping");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = fds(pid);
    const N: usize = 16;
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        (
            "attach (hijacked)",
            format!(
                "POST /containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "attach (not hijacked)",
            format!(
                "POST /containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "logs --follow",
            format!(
                "GET /containers/{id}/logs?follow=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: docker\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "events",
            b"GET /events HTTP/1.1\r\nHost: docker\r\n\r\n".to_vec(),
        ),
        (
            "stats",
            format!("GET /containers/{id}/stats HTTP/1.1\r\nHost: docker\r\n\r\n").into_bytes(),
        ),
        (
            "wait",
            format!(
                "POST /containers/{id}/wait HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "a request never finished",
            b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 100\r\n\r\n{".to_vec(),
        ),
    ];
    let mut leaks = Vec::new();
    for (what, raw) in &kinds {
        let baseline = baseline.max(fds(pid));
        for _ in 0..N {
            if *what == "a request never finished" {
                let mut s = UnixStream::connect(&sock).await.expect("connect");
                s.write_all(raw).await.expect("send");
                drop(s);
                continue;
            }
            match open_and_abandon(&sock, raw).await {
                Ok(status) if status < 400 => {}
                Ok(status) => panic!("{what}: answered {status}"),
                Err(e) => panic!("{what}: {e}"),
            }
        }
        // Every descriptor of an abandoned stream is closed within 20 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut now = fds(pid);
        while now > baseline + 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            now = fds(pid);
        }
        if now > baseline + 2 {
            leaks.push(format!(
                "{N} abandoned {what}: rsupd holds {now} descriptors, {baseline} before"
            ));
        }
        ping(&sock).await.expect("ping after abandoned streams");
    }
    let _ = d.client().remove(&id, true).await;
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}
