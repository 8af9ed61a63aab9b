//! A token server for a `docker-registry` configured with `auth: token:`
//! (the distribution spec's bearer flow, as Docker Hub runs it): plain HTTP
//! on a free `127.0.0.1` port (a loopback realm may be plain HTTP, for
//! rsupd as for skopeo), std threads, so it works under any runtime.
//!
//! `GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...]`:
//! - without an `Authorization` header: an anonymous token that grants
//!   nothing (the registry then answers 401 `insufficient_scope`);
//! - with HTTP basic auth of its one user: a token granting, of the
//!   requested actions on `repository` scopes, `pull` and `push`;
//! - with any other credentials: 401; a `service` other than
//!   [`TOKEN_SERVICE`] (or none): 400.
//!
//! The answer is `{"token", "access_token", "expires_in", "issued_at"}`;
//! the token a JWT signed ES256 with a P-256 key made here, whose
//! self-signed certificate is the registry's `rootcertbundle`
//! ([`TokenServer::cert_bundle`]) and rides in the JWT's `x5c` header
//! (distribution 2.8 verifies that chain against the bundle). Its claims:
//! `iss` [`TOKEN_ISSUER`], `sub` the user (empty when anonymous), `aud` the
//! service, `exp`, `nbf`, `iat`, a unique `jti`, and `access`.
//!
//! Lifetimes: the token says `expires_in` = [`TokenServer::set_token_lifetime`]
//! (300 s by default) and carries `exp` = `iat` + that lifetime. Registry
//! 2.8 takes a token until `exp` + 60 s ([`REGISTRY_LEEWAY`], for clock
//! skew); [`TokenServer::set_accepted_lifetime`] signs a shorter `exp`
//! while the advertised lifetime stays, so that the registry refuses the
//! token before its holder expects: the closest a test gets to revoking
//! tokens (the registry has no revocation).
//!
//! Invariants: every socket the server reads has a timeout, and a request
//! head is read up to 16 KiB only; the password is never written to its log
//! (`token.log` in the directory it is given); dropping a [`TokenServer`]
//! never panics (its accept thread is woken and joined; a connection's
//! thread ends within its socket timeouts).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// The registry's `auth.token.service`: the `service` of its challenge and
/// the `aud` of the tokens.
pub const TOKEN_SERVICE: &str = "rsup-test";
/// The registry's `auth.token.issuer`: the tokens' `iss`.
pub const TOKEN_ISSUER: &str = "rsup-test-issuer";
/// What registry 2.8 adds to `exp` (and takes from `nbf`) before it refuses
/// a token (`token.Leeway` in registry/auth/token/token.go).
pub const REGISTRY_LEEWAY: Duration = Duration::from_secs(60);
/// The lifetime a token advertises and signs unless a test sets another.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Bound of each read and write on a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// The actions a logged-in user may have on any repository.
const USER_ACTIONS: [&str; 2] = ["pull", "push"];

/// One resource's granted actions, as the JWT's `access` claim lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `repository` (the only type granted here).
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// A token server on `127.0.0.1:PORT` (see the module's doc), with its
/// signing key, its counter of tokens and its log. Dropping it stops it.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    cert_bundle: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    user: String,
    password: String,
    signer: EcdsaKeyPair,
    rng: SystemRandom,
    /// The signing certificate, base64 (standard, padded) DER: `x5c[0]`.
    cert_b64: String,
    lifetimes: Mutex<Lifetimes>,
    issued: AtomicU64,
    /// Sequence of the `jti`s (tokens minted by [`TokenServer::mint`] too).
    minted: AtomicU64,
    stop: AtomicBool,
    log: PathBuf,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    advertised: Duration,
    /// `None`: the advertised one.
    accepted: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TokenServer {
    /// Makes a P-256 key and its self-signed certificate (written, PEM, to
    /// `dir/signing.crt`, the registry's `rootcertbundle`), listens on a
    /// free `127.0.0.1` port and serves `GET /token` for `user` and
    /// `password`. `dir` is created; it must not exist.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let key = rcgen::KeyPair::generate().expect("generating the token signing key");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rsup-test token signer");
        let cert = params
            .self_signed(&key)
            .expect("self-signing the token certificate");
        let cert_bundle = dir.join("signing.crt");
        fs::write(&cert_bundle, cert.pem())
            .unwrap_or_else(|e| panic!("writing {}: {e}", cert_bundle.display()));
        let rng = SystemRandom::new();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.serialized_der(), &rng)
                .expect("ring takes rcgen's PKCS#8 P-256 key");
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local_addr of the token server");
        let shared = Arc::new(Shared {
            user: user.to_owned(),
            password: password.to_owned(),
            signer,
            rng,
            cert_b64: STANDARD.encode(cert.der()),
            lifetimes: Mutex::new(Lifetimes {
                advertised: DEFAULT_TOKEN_LIFETIME,
                accepted: None,
            }),
            issued: AtomicU64::new(0),
            minted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            log: dir.join("token.log"),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("token-accept".into())
            .spawn(move || accept_loop(&listener, &accept_shared))
            .expect("spawning the token server's accept thread");
        TokenServer {
            addr,
            cert_bundle,
            shared,
            accept: Some(accept),
        }
    }

    /// Where it listens: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`: the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The PEM certificate of the signing key: the registry's
    /// `auth.token.rootcertbundle`.
    pub fn cert_bundle(&self) -> &Path {
        &self.cert_bundle
    }

    /// Its log: a line per request (never the password).
    pub fn log(&self) -> &Path {
        &self.shared.log
    }

    /// Tokens answered to `GET /token` so far (anonymous ones included;
    /// not those of [`TokenServer::mint`]).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// The lifetime tokens issued from now on advertise (`expires_in`) and
    /// sign (`exp` = `iat` + it; the registry takes them for
    /// [`REGISTRY_LEEWAY`] more). Whole seconds.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.shared.lifetimes).advertised = lifetime;
    }

    /// `Some(d)`: tokens issued from now on are taken by the registry for
    /// `d` only (whole seconds, so between `d` - 1 s and `d`): their `exp`
    /// is `iat` + `d` - [`REGISTRY_LEEWAY`], whatever lifetime they
    /// advertise. `None`: back to `exp` = `iat` + the advertised lifetime.
    pub fn set_accepted_lifetime(&self, accepted: Option<Duration>) {
        lock(&self.shared.lifetimes).accepted = accepted;
    }

    /// A token for `subject` with `access`, signed and timed as the server
    /// signs them, without a request (not counted in
    /// [`TokenServer::tokens_issued`]).
    pub fn mint(&self, subject: &str, access: &[Access]) -> String {
        self.shared.mint(subject, access).0
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`; if that connection
        // cannot be made the thread is left to end with the process.
        if TcpStream::connect(self.addr).is_ok()
            && let Some(t) = self.accept.take()
            && t.join().is_err()
        {
            eprintln!("warning: the token server's accept thread panicked");
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("warning: token server accept: {e}");
                continue;
            }
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("token-conn".into())
            .spawn(move || serve(conn, &shared));
        if let Err(e) = spawned {
            eprintln!("warning: token server: spawning a connection thread: {e}");
        }
    }
}

/// A reply: status, reason, extra header lines, JSON body.
struct Reply {
    status: u16,
    reason: &'static str,
    headers: Vec<String>,
    body: serde_json::Value,
}

impl Reply {
    fn error(status: u16, reason: &'static str, details: &str) -> Reply {
        Reply {
            status,
            reason,
            headers: Vec::new(),
            body: serde_json::json!({ "details": details }),
        }
    }
}

/// Answers one request and closes the connection.
fn serve(mut conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    let (reply, note) = answer(&head, shared);
    shared.log_line(&format!(
        "{} -> {} {note}",
        head.lines().next().unwrap_or(""),
        reply.status
    ));
    let body = reply.body.to_string();
    let mut text = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        reply.status,
        reply.reason,
        body.len()
    );
    for h in &reply.headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(&body);
    if conn.write_all(text.as_bytes()).is_ok() {
        let _ = conn.flush();
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// The request head (request line and headers), or `None` if the client
/// closed, timed out or sent more than [`MAX_HEAD`] bytes without its end.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&raw[..end]).into_owned());
        }
        if raw.len() > MAX_HEAD {
            return None;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// The reply to a request head, and a note for the log.
fn answer(head: &str, shared: &Shared) -> (Reply, String) {
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorization = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/token" {
        return (
            Reply::error(404, "Not Found", "no such path"),
            String::new(),
        );
    }
    if method != "GET" {
        return (
            Reply::error(405, "Method Not Allowed", "GET only"),
            String::new(),
        );
    }
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v);
    if service.map(String::as_str) != Some(TOKEN_SERVICE) {
        return (
            Reply::error(400, "Bad Request", "unknown service"),
            format!("service {service:?}"),
        );
    }
    let scopes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter(|s| !s.is_empty())
        .collect();
    // Anonymous, the user, or refused.
    let subject = match authorization {
        None => None,
        Some(a) => match basic_credentials(&a) {
            Some((u, p)) if u == shared.user && p == shared.password => Some(u),
            Some((u, _)) => {
                let mut reply = Reply::error(401, "Unauthorized", "incorrect username or password");
                reply
                    .headers
                    .push("WWW-Authenticate: Basic realm=\"rsup-test-token\"".into());
                return (reply, format!("wrong credentials for user {u:?}"));
            }
            None => {
                return (
                    Reply::error(401, "Unauthorized", "basic credentials expected"),
                    "not basic credentials".into(),
                );
            }
        },
    };
    let access: Vec<Access> = match &subject {
        None => Vec::new(),
        Some(_) => scopes.iter().filter_map(|s| grant(s)).collect(),
    };
    let (token, lifetimes, iat) = shared.mint(subject.as_deref().unwrap_or(""), &access);
    let n = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": lifetimes.advertised.as_secs(),
        "issued_at": rfc3339(iat),
    });
    let note = format!(
        "token #{n} for {} (scopes {scopes:?}, granted {:?}, expires_in {}s, accepted {:?})",
        subject.as_deref().unwrap_or("<anonymous>"),
        access
            .iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect::<Vec<_>>(),
        lifetimes.advertised.as_secs(),
        lifetimes.accepted
    );
    (
        Reply {
            status: 200,
            reason: "OK",
            headers: Vec::new(),
            body,
        },
        note,
    )
}

/// What the user gets of a `repository:NAME:ACTIONS` scope: the requested
/// actions among [`USER_ACTIONS`]; nothing of other resource types.
fn grant(scope: &str) -> Option<Access> {
    let (resource, actions) = scope.rsplit_once(':')?;
    let (kind, name) = resource.split_once(':')?;
    if kind != "repository" || name.is_empty() {
        return None;
    }
    let actions: Vec<String> = actions
        .split(',')
        .filter(|a| USER_ACTIONS.contains(a))
        .map(str::to_owned)
        .collect();
    Some(Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions,
    })
}

/// `Basic base64(user:password)` decoded.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; a malformed escape stays as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Shared {
    /// A signed token, the lifetimes it was made with, and its `iat`.
    fn mint(&self, subject: &str, access: &[Access]) -> (String, Lifetimes, u64) {
        let lifetimes = *lock(&self.lifetimes);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let exp = match lifetimes.accepted {
            // The registry takes it until exp + its leeway.
            Some(d) => (now + d.as_secs()).saturating_sub(REGISTRY_LEEWAY.as_secs()),
            None => now + lifetimes.advertised.as_secs(),
        };
        let jti = format!(
            "rsup-test-{}-{}",
            std::process::id(),
            self.minted.fetch_add(1, Ordering::SeqCst)
        );
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [self.cert_b64],
        });
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": exp,
            "nbf": now,
            "iat": now,
            "jti": jti,
            "access": access.iter().map(|a| serde_json::json!({
                "type": a.kind,
                "name": a.name,
                "actions": a.actions,
            })).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // FIXED: r || s, 64 bytes, as JWS's ES256 wants (not ASN.1).
        let signature = self
            .signer
            .sign(&self.rng, signing_input.as_bytes())
            .expect("signing a token");
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        );
        (token, lifetimes, now)
    }

    fn log_line(&self, line: &str) {
        let written = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            eprintln!("warning: token server log {}: {e}", self.log.display());
        }
    }
}

/// `secs` since the epoch as RFC 3339 in UTC (`2006-01-02T15:04:05Z`).
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn scopes_and_queries() {
        assert_eq!(
            percent_decode("repository%3Ateam%2Fapp%3Apull%2Cpush+x%zz%4"),
            "repository:team/app:pull,push x%zz%4"
        );
        assert_eq!(
            grant("repository:team/app:pull,push,delete"),
            Some(Access {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into(), "push".into()],
            })
        );
        assert_eq!(grant("registry:catalog:*"), None);
        assert_eq!(
            basic_credentials(&format!("Basic {}", STANDARD.encode("al:ice:pw"))),
            Some(("al".into(), "ice:pw".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
    }
}
