//! A real CNCF distribution registry (Debian's `docker-registry`, 2.8) on a
//! free loopback port, for the tests that pull images: plain HTTP, plain
//! HTTP behind htpasswd basic auth, plain HTTP behind bearer tokens of a
//! [`TokenServer`] run here, or HTTPS with a server certificate of a test
//! CA made here with the `openssl` CLI ([`RegistryKind`]); images are
//! pushed into it with `skopeo` ([`Registry::seed`]) and looked at the same
//! way ([`Registry::skopeo_inspect`]), and its filesystem storage is open to
//! the test ([`Registry::blob_data_path`], to corrupt a blob). A
//! [`ThrottledProxy`] in front of it caps what it sends, so that a test can
//! watch a pull's partial download grow and kill the registry mid-layer.
//!
//! What registry 2.8 does that a pull client meets (checked by hand, with
//! curl, against blobs seeded here):
//! - a manifest is served only to a client that accepts its media type: an
//!   OCI manifest without `application/vnd.oci.image.manifest.v1+json` in
//!   `Accept` is a 404 `MANIFEST_UNKNOWN` ("OCI manifest found, but accept
//!   header does not support OCI manifests"), a Docker schema-2 manifest
//!   without `application/vnd.docker.distribution.manifest.v2+json` a 400
//!   `MANIFEST_INVALID` (it tries to downgrade it to schema 1);
//! - blobs are served with `Accept-Ranges: bytes`: `Range: bytes=N-` (or
//!   `N-M`, or a suffix) is a 206 with `Content-Range`, also on HEAD, and
//!   `If-Range` with the blob's ETag (`"sha256:..."`) is honoured; a range
//!   starting at or past the end is a 416 whose `Content-Length` is the
//!   blob's size while its body is the 33-byte error text, so a client must
//!   not trust the length of a 416;
//! - with `auth: token:`, every request without a token that grants what
//!   it needs (none at all, one that is expired, or one without the scope)
//!   is a 401 with `WWW-Authenticate: Bearer realm=...,service=...,
//!   scope=...` (and `error="invalid_token"` or `"insufficient_scope"`);
//!   `GET /v2/` wants a valid token and no scope; a token is taken until
//!   its `exp` + 60 s;
//! - the whole of a blob goes into the kernel's socket buffers within
//!   milliseconds, whatever the client reads: hence the proxy's cut.
//!
//! Invariants: everything a registry has (config, storage, htpasswd file,
//! certificates, token signing certificate and token log, skopeo's
//! temporary files, log) lives in one `/tmp/rsup-test-<pid>-<n>` owned by
//! its [`Registry`], and the config's path is in the registry's arguments,
//! so `scripts/test.sh`'s sweep finds a registry orphaned by a killed run;
//! a token server is threads of the test's own process, stopped when its
//! [`Registry`] is dropped; the registry is signalled only through its own,
//! not yet reaped `Child` (so by a pid that is still ours); every wait is a
//! bounded poll; dropping a [`Registry`] or a [`ThrottledProxy`] never
//! panics.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::daemon::log_tail;
use crate::http::free_loopback_addr;
use crate::process::{describe, output_with_timeout};
use crate::tempdir::TempDir;
use crate::tokenserver::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};
use crate::wait::{POLL_INTERVAL, blocking};

/// How long the registry may take to answer `GET /v2/` after a (re)start.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one `curl` probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of one `skopeo` run (a seed of a big image included).
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound of one `openssl` or `htpasswd` run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the registry's log shown in a failure.
const LOG_LINES: usize = 80;

/// What the registry asks of its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryKind {
    /// Plain HTTP, no authentication.
    Plain,
    /// Plain HTTP, HTTP basic auth against an htpasswd file (bcrypt) holding
    /// this one user.
    Htpasswd { user: String, password: String },
    /// Plain HTTP, bearer tokens (`auth: token:`) of a [`TokenServer`] on
    /// another loopback port ([`Registry::token_server`]) that takes this
    /// one user's basic credentials and grants them pull and push on every
    /// repository, and gives anyone else anonymous tokens that grant
    /// nothing.
    Token { user: String, password: String },
    /// HTTPS with a server certificate for IP 127.0.0.1 and DNS `localhost`
    /// signed by a test CA ([`Registry::ca_cert`]); no authentication.
    Tls,
}

/// A `docker-registry` on `127.0.0.1:PORT` with its config, storage and log
/// in a temporary directory of its own. SIGKILLed (through its own `Child`)
/// and reaped on drop, then the directory is removed; when a test panics,
/// the end of its log is shown first.
#[derive(Debug)]
pub struct Registry {
    kind: RegistryKind,
    addr: SocketAddr,
    config: PathBuf,
    storage: PathBuf,
    log: PathBuf,
    /// skopeo's TMPDIR (an oci-archive source is unpacked there).
    tmp: PathBuf,
    /// [`RegistryKind::Tls`]: the CA's certificate, and a directory holding
    /// only a copy of it as `ca.crt` (skopeo's `--cert-dir`).
    ca_cert: Option<PathBuf>,
    cert_dir: Option<PathBuf>,
    /// [`RegistryKind::Token`]: its token server (running while the
    /// registry is killed).
    token: Option<TokenServer>,
    /// `None` while killed.
    child: Option<Child>,
    /// Last field: removed after `Drop::drop` has killed the registry.
    dir: TempDir,
}

impl Registry {
    /// Writes the config (and, per kind, the htpasswd file, the token
    /// server's signing certificate, or the test CA and server
    /// certificate), starts `docker-registry` on a free loopback port (and
    /// the token server on another) and returns once `GET /v2/` answers
    /// (200; or 401 without credentials and 200 with them for
    /// [`RegistryKind::Htpasswd`]; or 401 with the token server's `Bearer`
    /// challenge without a token and 200 with one for
    /// [`RegistryKind::Token`]).
    /// Panics, with the registry's log, if it exits or does not answer in
    /// time. Blocking; a multi-threaded tokio runtime keeps running its
    /// other tasks meanwhile.
    pub fn start(kind: RegistryKind) -> Registry {
        blocking(|| Registry::start_blocking(kind))
    }

    fn start_blocking(kind: RegistryKind) -> Registry {
        let dir = TempDir::new();
        let base = dir.path().to_owned();
        let storage = base.join("storage");
        let tmp = base.join("tmp");
        for d in [&storage, &tmp] {
            fs::create_dir(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        }
        // The kernel's pick, released for the registry to bind (the registry
        // sets SO_REUSEADDR, so a restart can bind it again at once).
        let addr = free_loopback_addr();
        // Per kind: lines of the `http:` section, an `auth:` section, the
        // CA's certificate and skopeo's certificate directory.
        let mut token = None;
        let (http_tls, auth, ca_cert, cert_dir) = match &kind {
            RegistryKind::Plain => (String::new(), String::new(), None, None),
            RegistryKind::Token { user, password } => {
                let server = TokenServer::start(&base.join("token"), user, password);
                let auth = format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                     issuer: {TOKEN_ISSUER}\n    rootcertbundle: {bundle}\n",
                    realm = server.realm(),
                    bundle = yaml_str(server.cert_bundle())
                );
                token = Some(server);
                (String::new(), auth, None, None)
            }
            RegistryKind::Htpasswd { user, password } => {
                let file = base.join("htpasswd");
                write_htpasswd(&file, user, password);
                let auth = format!(
                    "auth:\n  htpasswd:\n    realm: rsup-test\n    path: {}\n",
                    yaml_str(&file)
                );
                (String::new(), auth, None, None)
            }
            RegistryKind::Tls => {
                let tls = make_test_ca(&base.join("tls"));
                let http_tls = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    yaml_str(&tls.server_cert),
                    yaml_str(&tls.server_key)
                );
                (
                    http_tls,
                    String::new(),
                    Some(tls.ca_cert),
                    Some(tls.cert_dir),
                )
            }
        };
        // `http.secret` is fixed so that an upload's state token stays valid
        // across a restart; upload purging is off so that a restart keeps
        // partial uploads; no blob descriptor cache, so that every request
        // looks at the storage (a corrupted blob is served as it is on disk).
        let config = base.join("config.yml");
        let text = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  \
             delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: rsup-test-registry-secret\n{http_tls}\
             {auth}",
            root = yaml_str(&storage),
        );
        fs::write(&config, text).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let mut registry = Registry {
            kind,
            addr,
            config,
            storage,
            log: base.join("registry.log"),
            tmp,
            ca_cert,
            cert_dir,
            token,
            child: None,
            dir,
        };
        registry.launch();
        registry.wait_serving();
        registry
    }

    /// Spawns `docker-registry serve CONFIG`, its output appended to the log.
    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of {}: {e}", self.log.display()));
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // REGISTRY_* variables override the config file: none of ours.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawning docker-registry: {e} (install Debian's `docker-registry`; \
                 scripts/test.sh does)"
            )
        });
        self.child = Some(child);
    }

    /// Polls `GET /v2/` until it answers as this kind should; panics with
    /// the log if the registry exits first or the time runs out.
    fn wait_serving(&mut self) {
        let want = match self.kind {
            RegistryKind::Htpasswd { .. } | RegistryKind::Token { .. } => 401,
            _ => 200,
        };
        let deadline = Instant::now() + SERVE_TIMEOUT;
        let first = loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "docker-registry exited ({status}) before serving on {}; its log:\n{}",
                    self.addr,
                    log_tail(&self.log, LOG_LINES)
                );
            }
            let last = match self.probe(ProbeAuth::None) {
                Ok(p) if p.code == want => break p,
                Ok(p) => format!("GET /v2/ answered {}, not {want}", p.code),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "docker-registry not serving on {} after {SERVE_TIMEOUT:?} (last: {last}); \
                 its log:\n{}",
                self.addr,
                log_tail(&self.log, LOG_LINES)
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        let with_creds = match (&self.kind, &self.token) {
            (RegistryKind::Htpasswd { user, password }, _) => {
                ProbeAuth::Basic(user.clone(), password.clone())
            }
            (RegistryKind::Token { user, .. }, Some(server)) => {
                // The challenge names our token server...
                let want = format!(
                    "Bearer realm=\"{}\",service=\"{TOKEN_SERVICE}\"",
                    server.realm()
                );
                assert!(
                    first.challenge.as_deref() == Some(want.as_str()),
                    "docker-registry on {} challenges with {:?}, not {want:?}; its log:\n{}",
                    self.addr,
                    first.challenge,
                    log_tail(&self.log, LOG_LINES)
                );
                // ... and a token of it is taken (its signature, issuer and
                // audience checked): `/v2/` needs no scope.
                ProbeAuth::Bearer(server.mint(user, &[]))
            }
            _ => return,
        };
        match self.probe(with_creds) {
            Ok(p) if p.code == 200 => {}
            other => panic!(
                "docker-registry on {} refuses the {:?} user: {other:?}; its log:\n{}",
                self.addr,
                self.kind,
                log_tail(&self.log, LOG_LINES)
            ),
        }
    }

    /// `GET /v2/` (with `auth`), through `curl` (which checks the test CA
    /// for TLS): its status and `WWW-Authenticate` header.
    fn probe(&self, auth: ProbeAuth) -> Result<Probe, String> {
        let mut cmd = Command::new("curl");
        // The header block to stdout, then the status on a line of its own.
        cmd.args(["-sS", "-o", "/dev/null", "-D", "-", "-w", "\n%{http_code}"])
            .arg("--max-time")
            .arg(PROBE_TIMEOUT.as_secs().to_string());
        if let Some(ca) = &self.ca_cert {
            cmd.arg("--cacert").arg(ca);
        }
        match auth {
            ProbeAuth::None => {}
            ProbeAuth::Basic(user, password) => {
                cmd.arg("-u").arg(format!("{user}:{password}"));
            }
            ProbeAuth::Bearer(token) => {
                cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
            }
        }
        cmd.arg(format!("{}/v2/", self.url()));
        let out = output_with_timeout(cmd, PROBE_TIMEOUT + Duration::from_secs(5))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let code = text.lines().last().unwrap_or("").trim().parse::<u16>();
        let challenge = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("www-authenticate")
                .then(|| value.trim().to_owned())
        });
        match code {
            Ok(code) if code != 0 => Ok(Probe { code, challenge }),
            _ => Err(format!("curl: {}", describe(&out).replace('\n', " "))),
        }
    }

    /// `127.0.0.1:PORT`, as an image reference's registry part.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://...` for [`RegistryKind::Tls`].
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            RegistryKind::Tls => "https",
            _ => "http",
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn kind(&self) -> &RegistryKind {
        &self.kind
    }

    /// [`RegistryKind::Token`]: its token server (to count its tokens, or
    /// set their lifetimes). Panics for another kind.
    pub fn token_server(&self) -> &TokenServer {
        self.token.as_ref().unwrap_or_else(|| {
            panic!(
                "a {:?} registry has no token server (RegistryKind::Token has)",
                self.kind
            )
        })
    }

    /// [`RegistryKind::Tls`]: the PEM certificate of the test CA that signed
    /// the registry's certificate.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.ca_cert.clone()
    }

    /// Its temporary directory: `config.yml`, `storage/`, `registry.log`,
    /// `htpasswd`, `token/` (the signing certificate and `token.log`) or
    /// `tls/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file its stdout and stderr go to (appended across restarts).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The registry's pid; `None` while killed.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Pushes the OCI image-layout tarball `archive` (as
    /// `rsup_runtime::imagestore::build::oci_layout_tar` writes them) as
    /// `HOST/reference` (`repo/name:tag`) exactly as it is
    /// (`--preserve-digests`): the registry then serves the archive's own
    /// manifest and blobs, so its digests are the built ones, gzipped
    /// layers or not (without that flag skopeo would gzip uncompressed
    /// layers and rewrite the manifest). Of a multi-platform archive, the
    /// image for this machine's platform is pushed, not the index. Panics
    /// if skopeo fails.
    pub fn seed(&self, archive: &Path, reference: &str) {
        self.copy(archive, reference, &["--preserve-digests"]);
    }

    /// [`Registry::seed`] of every image of a multi-platform archive: the
    /// registry holds the index too (`skopeo copy --all`).
    pub fn seed_all(&self, archive: &Path, reference: &str) {
        self.copy(archive, reference, &["--all", "--preserve-digests"]);
    }

    /// Pushes `archive` as `HOST/reference` converted to a Docker schema-2
    /// manifest (`--format v2s2`): a new manifest over the same config and
    /// gzipped layers. Gzipped layers are pushed as they are; uncompressed
    /// ones skopeo gzips (new digests), unless it finds a blob of the same
    /// content in the registry already (pushed by [`Registry::seed`], say),
    /// which it then reuses, uncompressed. Panics if skopeo fails.
    pub fn seed_docker_format(&self, archive: &Path, reference: &str) {
        self.copy(archive, reference, &["--format", "v2s2"]);
    }

    fn copy(&self, archive: &Path, reference: &str, extra: &[&str]) {
        let mut args: Vec<OsString> = vec!["--insecure-policy".into(), "copy".into()];
        args.extend(self.skopeo_flags("--dest-"));
        args.extend(extra.iter().map(OsString::from));
        let mut src = OsString::from("oci-archive:");
        src.push(archive);
        args.push(src);
        args.push(self.docker_ref(reference).into());
        self.skopeo_ok(&args);
    }

    /// `skopeo inspect docker://HOST/reference`, parsed: `Digest`, `Layers`
    /// (digests), `Architecture`, `Os`, `Env`, `RepoTags`... (skopeo 1.9
    /// has no `LayersData`: sizes and media types are in
    /// [`Registry::raw_manifest`]). Panics if skopeo fails.
    pub fn skopeo_inspect(&self, reference: &str) -> serde_json::Value {
        self.inspect(reference, false)
    }

    /// `skopeo inspect --raw`: the manifest (or index) as the registry
    /// serves it, parsed (its `mediaType`, `layers`, `config`).
    pub fn raw_manifest(&self, reference: &str) -> serde_json::Value {
        self.inspect(reference, true)
    }

    fn inspect(&self, reference: &str, raw: bool) -> serde_json::Value {
        let mut args: Vec<OsString> = vec!["inspect".into()];
        if raw {
            args.push("--raw".into());
        }
        args.extend(self.skopeo_flags("--"));
        args.push(self.docker_ref(reference).into());
        let out = self.skopeo_ok(&args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "skopeo inspect {reference}: not JSON ({e}):\n{}",
                describe(&out)
            )
        })
    }

    /// The digest (`sha256:...`) of the manifest `reference` names, as
    /// `skopeo inspect` reports it.
    pub fn manifest_digest(&self, reference: &str) -> String {
        let info = self.skopeo_inspect(reference);
        info["Digest"]
            .as_str()
            .unwrap_or_else(|| panic!("no Digest in skopeo inspect {reference}: {info}"))
            .to_owned()
    }

    /// The file the filesystem driver keeps blob `digest` (`sha256:HEX`, or
    /// bare HEX) in: `<root>/docker/registry/v2/blobs/sha256/<HE>/<HEX>/data`.
    /// Whether it exists is not checked.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        let prefix = hex
            .get(..2)
            .unwrap_or_else(|| panic!("digest {digest:?} is too short"));
        self.storage
            .join("docker/registry/v2/blobs")
            .join(algorithm)
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// SIGKILLs the registry (a crash: uploads and downloads in flight are
    /// cut) and reaps it. Nothing happens if it is already killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Our own, not yet reaped child: the pid is still ours.
            if let Err(e) = child.kill() {
                eprintln!("warning: SIGKILL to docker-registry: {e}");
            }
            if let Err(e) = child.wait() {
                eprintln!("warning: reaping docker-registry: {e}");
            }
        }
    }

    /// Starts the registry again (killing it first if it still runs) on the
    /// same port, config and storage, and returns once it serves, as
    /// [`Registry::start`] does.
    pub fn restart(&mut self) {
        blocking(|| {
            self.kill();
            self.launch();
            self.wait_serving();
        });
    }

    /// `docker://HOST/reference`.
    fn docker_ref(&self, reference: &str) -> String {
        format!("docker://{}/{reference}", self.addr)
    }

    /// skopeo's TLS and credential flags for this kind, with `prefix`
    /// `--dest-` (copy's destination) or `--` (inspect).
    fn skopeo_flags(&self, prefix: &str) -> Vec<OsString> {
        let mut flags: Vec<OsString> = Vec::new();
        match &self.kind {
            RegistryKind::Plain => flags.push(format!("{prefix}tls-verify=false").into()),
            RegistryKind::Htpasswd { user, password } | RegistryKind::Token { user, password } => {
                flags.push(format!("{prefix}tls-verify=false").into());
                flags.push(format!("{prefix}creds").into());
                flags.push(format!("{user}:{password}").into());
            }
            RegistryKind::Tls => {
                flags.push(format!("{prefix}cert-dir").into());
                if let Some(dir) = &self.cert_dir {
                    flags.push(dir.into());
                }
            }
        }
        // No credentials from the host's auth.json: ours, or none.
        flags.push(format!("{prefix}authfile").into());
        flags.push(self.tmp.join("auth.json").into());
        flags
    }

    /// Runs skopeo with `args` and TMPDIR in our directory; panics (with
    /// its output and the end of the registry's log) unless it succeeds.
    fn skopeo_ok(&self, args: &[OsString]) -> Output {
        assert!(
            self.child.is_some(),
            "skopeo {args:?}: the registry is killed (restart it first)"
        );
        let mut cmd = Command::new("skopeo");
        cmd.args(args).env("TMPDIR", &self.tmp);
        let out = blocking(|| output_with_timeout(cmd, SKOPEO_TIMEOUT))
            .unwrap_or_else(|e| panic!("{e} (install `skopeo`; scripts/test.sh does)"));
        assert!(
            out.status.success(),
            "skopeo {args:?} failed:\n{}\nregistry log:\n{}",
            describe(&out),
            log_tail(&self.log, LOG_LINES)
        );
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}), last lines ---\n{}\n--- end ---",
                self.log.display(),
                log_tail(&self.log, 40)
            );
            if let Some(server) = &self.token {
                eprintln!(
                    "--- token server log ({}), last lines ---\n{}\n--- end ---",
                    server.log().display(),
                    log_tail(server.log(), 40)
                );
            }
        }
    }
}

/// What [`Registry::probe`] sends.
enum ProbeAuth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// What [`Registry::probe`] got.
#[derive(Debug)]
struct Probe {
    code: u16,
    challenge: Option<String>,
}

/// A YAML double-quoted string of `path` (the directories here have no
/// character that needs escaping, but a caller's may).
fn yaml_str(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

/// Runs a setup tool (openssl, htpasswd); panics unless it succeeds.
fn tool_ok(cmd: Command, package: &str) -> Output {
    let what = format!("{cmd:?}");
    let out = output_with_timeout(cmd, TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e} (install `{package}`; scripts/test.sh does)"));
    assert!(out.status.success(), "{what} failed:\n{}", describe(&out));
    out
}

/// `htpasswd -Bbn USER PASSWORD` (bcrypt, the only hash the registry
/// takes) into `file`.
fn write_htpasswd(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("htpasswd");
    cmd.args(["-Bbn", user, password]);
    let out = tool_ok(cmd, "apache2-utils");
    let line = String::from_utf8_lossy(&out.stdout);
    fs::write(file, format!("{}\n", line.trim()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
}

/// What [`make_test_ca`] made.
struct TlsFiles {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// Holds only `ca.crt`: skopeo's `--cert-dir` reads every `*.crt` of a
    /// directory as a CA, and `*.cert`/`*.key` pairs as client certificates.
    cert_dir: PathBuf,
}

/// A test CA and a server certificate it signs for IP 127.0.0.1 and DNS
/// `localhost` (P-256 keys, valid for two days), made with the `openssl`
/// CLI in `dir`, which must not exist. The extensions come from a config
/// file written here, so the system's openssl.cnf does not matter.
fn make_test_ca(dir: &Path) -> TlsFiles {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let cnf = dir.join("openssl.cnf");
    fs::write(
        &cnf,
        "[req]\n\
         distinguished_name = dn\n\
         prompt = no\n\
         [dn]\n\
         CN = rsup-test\n\
         [ca_ext]\n\
         basicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server_ext]\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n",
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", cnf.display()));
    let files = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        cert_dir: dir.join("skopeo-certs"),
    };
    // Run in `dir`, with names relative to it; no argument has a space.
    let openssl = |args: &str| {
        let mut cmd = Command::new("openssl");
        cmd.args(args.split_whitespace()).current_dir(dir);
        tool_ok(cmd, "openssl");
    };
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(&format!(
        "req -x509 -config openssl.cnf -extensions ca_ext {new_key} \
         -keyout ca.key -out ca.crt -days 2 -subj /CN=rsup-test-CA"
    ));
    openssl(&format!(
        "req -new -config openssl.cnf {new_key} \
         -keyout server.key -out server.csr -subj /CN=localhost"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 \
         -extfile openssl.cnf -extensions server_ext -out server.crt",
    );
    fs::create_dir(&files.cert_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", files.cert_dir.display()));
    let copy = files.cert_dir.join("ca.crt");
    fs::copy(&files.ca_cert, &copy)
        .unwrap_or_else(|e| panic!("copying to {}: {e}", copy.display()));
    files
}

/// How often the proxy looks, while it has connections, whether the
/// target's listening socket is still the one they were made to.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// A TCP proxy on `127.0.0.1:<free port>` to `target` that forwards both
/// directions and caps the target-to-client direction at `bytes_per_sec`,
/// summed over all its connections (a token bucket holding at most a tenth
/// of a second's worth, and at most 16 KiB). Std threads, so it works under
/// any runtime. Drop stops it: the listener closes and every connection is
/// cut; it never panics.
///
/// A killed target is seen as a client would see a real one die: a
/// registry writes a whole blob into its kernel's socket buffers in a few
/// milliseconds, and a killed process's kernel still delivers them, so the
/// proxy watches the target's listening socket (in `/proc/net/tcp`, every
/// 10 ms while it has connections) and cuts every connection made to a
/// listener that is gone (killed, or replaced by a restart): what it has
/// not forwarded yet is dropped and the client's stream ends there. After
/// [`Registry::kill`], about `bytes_per_sec` x 20 ms more reach the client
/// (14 to 39 KiB at 1 MiB/s in the fixture test).
#[derive(Debug)]
pub struct ThrottledProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct ProxyShared {
    target: SocketAddr,
    rate: f64,
    /// Largest grant of the bucket, and its capacity.
    burst: usize,
    stop: AtomicBool,
    to_client: AtomicU64,
    connections: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Each open connection; it leaves when both of its pumps have ended.
    open: Mutex<HashMap<u64, OpenConn>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// What the proxy keeps of an open connection to cut it.
#[derive(Debug)]
struct OpenConn {
    /// Clones of the client's and the target's socket.
    sockets: [TcpStream; 2],
    /// Inode of the target's listening socket when the connection was made.
    listener: Option<u64>,
    /// Set when cut: the pumps forward nothing more.
    cut: Arc<AtomicBool>,
}

impl OpenConn {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ThrottledProxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `target`, at most `bytes_per_sec` (> 0) from `target` to clients.
    pub fn start(target: SocketAddr, bytes_per_sec: u64) -> ThrottledProxy {
        assert!(bytes_per_sec > 0, "a ThrottledProxy needs a rate above 0");
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr of the proxy");
        let burst = usize::try_from(bytes_per_sec / 10)
            .unwrap_or(usize::MAX)
            .clamp(1, 16 * 1024);
        let shared = Arc::new(ProxyShared {
            target,
            rate: bytes_per_sec as f64,
            burst,
            stop: AtomicBool::new(false),
            to_client: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: burst as f64,
                last: Instant::now(),
            }),
            open: Mutex::new(HashMap::new()),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(&listener, &accept_shared))
            .expect("spawning the proxy's accept thread");
        let watch_shared = shared.clone();
        let watch = std::thread::Builder::new()
            .name("proxy-watch".into())
            .spawn(move || watch_target(&watch_shared))
            .expect("spawning the proxy's watch thread");
        ThrottledProxy {
            addr,
            shared,
            threads: vec![watch, accept],
        }
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes forwarded from the target to clients so far (all connections).
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Cuts every open connection now, as a dropped network would (the
    /// client's stream ends; nothing more is forwarded either way). New
    /// connections are accepted as before.
    pub fn cut(&self) {
        for conn in lock(&self.shared.open).values() {
            conn.cut();
        }
    }
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop, which then sees `stop`; if that connection
        // cannot be made the thread is left to end with the process rather
        // than waited for. The watch thread ends within POLL_INTERVAL.
        let woken = TcpStream::connect(self.addr).is_ok();
        for (i, t) in self.threads.drain(..).enumerate() {
            if (i == 0 || woken) && t.join().is_err() {
                eprintln!("warning: a proxy thread panicked");
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<ProxyShared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let client = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("warning: proxy accept: {e}");
                continue;
            }
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst);
        let upstream = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) {
            Ok(s) => s,
            // The client sees its connection closed, as if refused late.
            Err(e) => {
                eprintln!("proxy: connecting to {}: {e}", shared.target);
                continue;
            }
        };
        let listener_inode = listening_inode(shared.target);
        if let Err(e) = spawn_pumps(id, client, upstream, listener_inode, shared) {
            eprintln!("warning: proxy connection {id}: {e}");
        }
    }
}

/// Cuts the connections whose target listener is gone, until the proxy
/// stops.
fn watch_target(shared: &ProxyShared) {
    while !shared.stop.load(Ordering::SeqCst) {
        if lock(&shared.open).is_empty() {
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        let now = listening_inode(shared.target);
        for conn in lock(&shared.open).values() {
            if conn.listener.is_some() && conn.listener != now && !conn.cut.load(Ordering::SeqCst) {
                conn.cut();
            }
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// The inode of the socket listening on `target` (or on its port of the
/// unspecified address), from `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_inode(target: SocketAddr) -> Option<u64> {
    let tables: &[&str] = match target {
        SocketAddr::V4(_) => &["/proc/net/tcp", "/proc/net/tcp6"],
        SocketAddr::V6(_) => &["/proc/net/tcp6"],
    };
    for table in tables {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... uid timeout inode
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let Some((ip, port)) = fields[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(port, 16).ok() != Some(target.port()) {
                continue;
            }
            let Some(ip) = proc_net_ip(ip) else { continue };
            if ip.to_canonical() == target.ip() || ip.is_unspecified() {
                return fields[9].parse().ok();
            }
        }
    }
    None
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in hex, each
/// in the machine's byte order.
fn proc_net_ip(hex: &str) -> Option<IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    for i in (0..hex.len()).step_by(8) {
        let word = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Removes its connection from the open set once both pumps (which share
/// it) have ended.
struct ConnEntry {
    id: u64,
    shared: Arc<ProxyShared>,
}

impl Drop for ConnEntry {
    fn drop(&mut self) {
        lock(&self.shared.open).remove(&self.id);
    }
}

fn spawn_pumps(
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
    listener: Option<u64>,
    shared: &Arc<ProxyShared>,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let cut = Arc::new(AtomicBool::new(false));
    {
        let mut open = lock(&shared.open);
        let conn = OpenConn {
            sockets: [client.try_clone()?, upstream.try_clone()?],
            listener,
            cut: cut.clone(),
        };
        // Checked under the lock that Drop takes after setting it: a
        // connection accepted while the proxy stops is cut here.
        if shared.stop.load(Ordering::SeqCst) {
            conn.cut();
        }
        open.insert(id, conn);
    }
    let entry = Arc::new(ConnEntry {
        id,
        shared: shared.clone(),
    });
    let (client_r, upstream_w) = (client.try_clone()?, upstream.try_clone()?);
    let up_entry = entry.clone();
    std::thread::Builder::new()
        .name(format!("proxy-up-{id}"))
        .spawn(move || {
            pump_up(client_r, upstream_w);
            drop(up_entry);
        })?;
    let down_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("proxy-down-{id}"))
        .spawn(move || {
            pump_down(upstream, client, &down_shared, &cut);
            drop(entry);
        })?;
    Ok(())
}

/// Client to target, unthrottled; the client's end of stream is passed on.
fn pump_up(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Target to client, throttled by the shared bucket, until the target's
/// end of stream (passed on) or a cut.
fn pump_down(mut from: TcpStream, mut to: TcpStream, shared: &ProxyShared, cut: &AtomicBool) {
    let mut buf = vec![0u8; shared.burst];
    'read: loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut pos = 0;
        while pos < n {
            let grant = shared.acquire(n - pos);
            if grant == 0
                || cut.load(Ordering::SeqCst)
                || to.write_all(&buf[pos..pos + grant]).is_err()
            {
                let _ = from.shutdown(Shutdown::Both);
                break 'read;
            }
            shared.to_client.fetch_add(grant as u64, Ordering::SeqCst);
            pos += grant;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl ProxyShared {
    /// Takes between 1 and `want` bytes' worth of tokens, waiting (in steps
    /// of at most [`POLL_INTERVAL`]) until there is one; 0 once the proxy
    /// stops.
    fn acquire(&self, want: usize) -> usize {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return 0;
            }
            let wait = {
                let mut b = lock(&self.bucket);
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() * self.rate;
                b.tokens = (b.tokens + refill).min(self.burst as f64);
                b.last = now;
                if b.tokens >= 1.0 {
                    let grant = want.min(b.tokens as usize);
                    b.tokens -= grant as f64;
                    return grant;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / self.rate)
            };
            std::thread::sleep(wait.min(POLL_INTERVAL));
        }
    }
}
