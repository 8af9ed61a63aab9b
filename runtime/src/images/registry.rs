//! Reaching a registry: which scheme (HTTPS, or plain HTTP for loopback
//! and `--insecure-registry` hosts when HTTPS fails, as Docker does), which
//! CA certificates, which credentials, and the distribution client
//! (`oci-client`) set up with them. Errors of the protocol become rsup's
//! [`Error`]s here, once.
//!
//! Credentials come with each request (rsupctl reads them from its own
//! file) and live only as long as the call: they are never logged (their
//! `Debug` is redacted) and never written by rsupd.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use crate::config::RegistryConfig;
use crate::error::{Error, RegistryError};
use crate::names::{RemoteRef, quote};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Validates a login as it arrives: a user name of 1-256 bytes without
    /// `:` (HTTP basic auth splits there), a password of 1-4096 bytes, and
    /// no control characters in either. A refusal never echoes the
    /// password.
    pub fn parse(username: &str, password: &str) -> Result<Credentials, Error> {
        let bad = |reason: String| Error::InvalidArgument {
            field: "auth",
            reason,
        };
        if username.is_empty() || username.len() > 256 {
            return Err(bad("the user name must be 1-256 bytes".into()));
        }
        if username.contains(':') || username.chars().any(char::is_control) {
            return Err(bad(format!(
                "the user name {} has a ':' or a control character",
                quote(username)
            )));
        }
        if password.is_empty() || password.len() > 4096 {
            return Err(bad("the password must be 1-4096 bytes".into()));
        }
        if password.chars().any(char::is_control) {
            return Err(bad("the password has a control character".into()));
        }
        Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A registry that sends nothing for this long mid-blob is given up on
/// (the download stays for a resume).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of a small request (`/v2/`, a token, a manifest).
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("rsup/", env!("CARGO_PKG_VERSION"));
/// Most of an error body or token answer rsupd reads.
const MAX_SMALL_BODY: usize = 64 << 10;

/// How the registry asked to be authenticated (`WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A bearer token and how long it may be used.
struct Token {
    value: String,
    fetched: std::time::Instant,
    lifetime: Duration,
}

/// Where a token-auth registry's tokens come from (to fetch a new one when
/// the last expires).
struct TokenSource {
    realm: String,
    service: Option<String>,
    /// `repository:NAME:ACTIONS`; none for a login.
    scope: Option<String>,
    /// The insecure-registry list, for the realm's scheme rule.
    config: RegistryConfig,
}

/// A registry reached and authenticated for one repository. Every read a
/// pull makes goes through rsupd's own HTTP client with bounded bodies;
/// `pusher` (oci-client) is made only for pushes, with the token found
/// here.
pub(crate) struct Session {
    pusher: Option<oci_client::Client>,
    http: reqwest::Client,
    /// The bearer token of a token-auth registry, renewed when it expires.
    token: tokio::sync::Mutex<Option<Token>>,
    token_source: Option<TokenSource>,
    basic: Option<Credentials>,
    /// The host requests go to (`docker.io` resolved).
    host: String,
    /// The repository (with the caller's tag or digest).
    pub reference: Reference,
    /// `host[:port]`, for messages.
    pub registry: String,
    /// `https` or `http`.
    pub scheme: &'static str,
}

/// The answer to a blob request.
pub(crate) enum Blob {
    /// The whole blob (also the answer to a range the registry ignored).
    Full(reqwest::Response),
    /// From the requested offset on (206).
    Partial(reqwest::Response),
}

/// What a session is opened for: the token's scope, and whether it
/// pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Pull,
    Push,
    /// `login`: the credentials checked, a token asked for no repository
    /// (as Docker does).
    Login,
}

impl Session {
    /// Finds how to talk to `r`'s registry and authenticates for
    /// `purpose`. `Unauthorized` when the registry wants credentials and
    /// `creds` are wrong (a registry that wants some and gets none answers
    /// 401 on the first request instead).
    pub async fn open(
        config: &RegistryConfig,
        r: &RemoteRef,
        creds: Option<&Credentials>,
        purpose: Purpose,
    ) -> Result<Session, Error> {
        // reqwest's rustls has no provider of its own: ring, as rsupd's
        // TLS. Installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reference = match r.digest() {
            Some(d) => Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                d.to_string(),
            ),
            None => Reference::with_tag(
                r.registry().to_string(),
                r.repository().to_string(),
                r.tag().to_string(),
            ),
        };
        let registry = r.registry().to_string();
        // Where requests go: Docker Hub's API is registry-1.docker.io (as
        // Docker calls it); oci-client keys its logins by its own name.
        let host = match registry.as_str() {
            crate::names::DEFAULT_REGISTRY => "registry-1.docker.io".to_string(),
            other => other.to_string(),
        };
        let oci_host = reference.resolve_registry().to_string();
        let roots = ca_certificates(config, &registry)?;
        // Plain HTTP only where it may be used, and never for a host whose
        // CA the operator configured (its TLS failing is an error to see).
        let schemes: &[&'static str] = if plain_http_allowed(config, &registry) && roots.is_empty()
        {
            &["https", "http"]
        } else {
            &["https"]
        };
        let loopback = is_loopback(&registry);
        let mut first_error: Option<Error> = None;
        for &scheme in schemes {
            let http = http_client(&roots, loopback).map_err(|e| unreachable(&host, e))?;
            let challenge = match probe(&http, &host, scheme, creds).await {
                Ok(c) => c,
                // A refusal is the registry's answer: no other scheme.
                Err(e @ Error::Registry(RegistryError::Unauthorized { .. })) => return Err(e),
                // A certificate that does not verify is not a reason to
                // try without TLS.
                Err(e) if is_certificate_error(&e) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let token_source = match &challenge {
                Challenge::Bearer { realm, service } => Some(TokenSource {
                    realm: realm.clone(),
                    service: service.clone(),
                    scope: match purpose {
                        Purpose::Pull => Some(scope(r.repository(), RegistryOperation::Pull)),
                        Purpose::Push => Some(scope(r.repository(), RegistryOperation::Push)),
                        Purpose::Login => None,
                    },
                    config: config.clone(),
                }),
                _ => None,
            };
            let token = match &token_source {
                Some(src) => Some(fetch_token(&http, &registry, src, creds).await?),
                None => None,
            };
            let pusher = match purpose {
                Purpose::Push => Some(
                    pusher(
                        scheme,
                        &roots,
                        &registry,
                        &oci_host,
                        token.as_ref().map(|t| t.value.as_str()),
                        creds,
                    )
                    .await?,
                ),
                Purpose::Pull | Purpose::Login => None,
            };
            return Ok(Session {
                pusher,
                http,
                token: tokio::sync::Mutex::new(token),
                token_source,
                basic: creds.cloned(),
                host,
                reference,
                registry,
                scheme,
            });
        }
        Err(first_error.unwrap_or_else(|| unreachable(&registry, "no scheme to try".into())))
    }

    /// The push client (made by `open` for a push).
    pub fn pusher(&self) -> Result<&oci_client::Client, Error> {
        self.pusher.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("this registry session was opened for a pull".into())
        })
    }

    /// `GET url` with the session's authorization: its bearer token
    /// (renewed first when it is about to expire, or when `renew`), or
    /// its basic credentials.
    async fn get(&self, url: &str, renew: bool) -> Result<reqwest::RequestBuilder, Error> {
        let req = self.http.get(url);
        let Some(src) = &self.token_source else {
            return Ok(match &self.basic {
                Some(c) => req.basic_auth(&c.username, Some(&c.password)),
                None => req,
            });
        };
        let mut token = self.token.lock().await;
        let stale = token
            .as_ref()
            .is_none_or(|t| renew || t.fetched.elapsed() + Duration::from_secs(10) >= t.lifetime);
        if stale {
            *token = Some(fetch_token(&self.http, &self.registry, src, self.basic.as_ref()).await?);
        }
        Ok(match token.as_ref() {
            Some(t) => req.bearer_auth(&t.value),
            None => req,
        })
    }

    /// Sends what `build` makes of an authorized GET; a 401 to a token
    /// (expired early, revoked) gets one more try with a new token.
    async fn send(
        &self,
        url: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let res = build(self.get(url, false).await?)
            .send()
            .await
            .map_err(|e| unreachable(&self.registry, error_chain(&e)))?;
        if res.status() != reqwest::StatusCode::UNAUTHORIZED || self.token_source.is_none() {
            return Ok(res);
        }
        build(self.get(url, true).await?)
            .send()
            .await
            .map_err(|e| unreachable(&self.registry, error_chain(&e)))
    }

    /// `GET /v2/<repo>/manifests/<tag or digest>`, reading at most `max`
    /// bytes of the body (a registry is not trusted with rsupd's memory).
    pub async fn manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
        max: usize,
    ) -> Result<Vec<u8>, Error> {
        let tag = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let url = format!(
            "{}://{}/v2/{}/manifests/{tag}",
            self.scheme,
            self.host,
            reference.repository()
        );
        let accept = accept.join(", ");
        let res = self
            .send(&url, |r| {
                r.header(reqwest::header::ACCEPT, accept.as_str())
                    .timeout(SMALL_TIMEOUT)
            })
            .await?;
        if !res.status().is_success() {
            return Err(self.refusal(res, &url, "manifest").await);
        }
        if res.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large(&self.registry, &url, max));
        }
        read_capped(res, max).await.map_err(|e| match e {
            ReadError::TooLarge => too_large(&self.registry, &url, max),
            ReadError::Http(e) => unreachable(&self.registry, e),
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`, from `offset` on when it is not 0.
    /// A refusal (any status but 200 and 206) reads at most a small body; a
    /// 206 must start where it was asked to, and any other answer to a
    /// range but 200, 401, 403 and 404 is [`RegistryError::RangeRefused`].
    pub async fn blob(&self, digest: &str, offset: u64) -> Result<Blob, Error> {
        let url = format!(
            "{}://{}/v2/{}/blobs/{digest}",
            self.scheme,
            self.host,
            self.reference.repository()
        );
        let range = format!("bytes={offset}-");
        let res = self
            .send(&url, |r| {
                if offset > 0 {
                    r.header(reqwest::header::RANGE, range.as_str())
                } else {
                    r
                }
            })
            .await?;
        match res.status().as_u16() {
            200 => Ok(Blob::Full(res)),
            206 if offset > 0 => {
                let starts = res
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if starts == Some(offset) {
                    Ok(Blob::Partial(res))
                } else {
                    Err(Error::Registry(RegistryError::RangeRefused {
                        registry: self.registry.clone(),
                        reason: format!("{url}: a partial answer that does not start at {offset}"),
                    }))
                }
            }
            401 | 403 | 404 => Err(self.refusal(res, &url, "blob").await),
            _ if offset > 0 => {
                let e = self.refusal(res, &url, "blob").await;
                Err(Error::Registry(RegistryError::RangeRefused {
                    registry: self.registry.clone(),
                    reason: e.to_string(),
                }))
            }
            _ => Err(self.refusal(res, &url, "blob").await),
        }
    }

    /// An answer that is not the content: its status as rsup's error, with
    /// at most a quoted piece of its body.
    async fn refusal(&self, res: reqwest::Response, url: &str, what: &str) -> Error {
        let status = res.status();
        let body: Vec<u8> =
            match tokio::time::timeout(SMALL_TIMEOUT, read_capped(res, MAX_SMALL_BODY)).await {
                Ok(Ok(b)) => b,
                _ => Vec::new(),
            };
        let text = String::from_utf8_lossy(&body);
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["errors"][0]["message"]
                    .as_str()
                    .map(|m| format!("{}: {m}", v["errors"][0]["code"].as_str().unwrap_or("")))
            })
            .unwrap_or_else(|| text.trim().to_string());
        let reason = format!("{status}: {url}: {}", quote(&detail));
        let registry = self.registry.clone();
        match status.as_u16() {
            404 => Error::NotFound(format!("registry {registry}: {what} unknown: {url}")),
            401 => Error::Registry(RegistryError::Unauthorized {
                reason: format!("unauthorized: {url} needs credentials (rsupctl login {registry})"),
                registry,
            }),
            403 => Error::Registry(RegistryError::Denied { registry, reason }),
            416 => Error::Registry(RegistryError::RangeRefused { registry, reason }),
            _ => unreachable(&registry, reason),
        }
    }

    /// `self.reference` with another tag or digest.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }
}

fn too_large(registry: &str, url: &str, max: usize) -> Error {
    Error::Registry(RegistryError::Corrupt {
        registry: registry.to_string(),
        reason: format!("{url}: the manifest is larger than {max} bytes"),
    })
}

enum ReadError {
    TooLarge,
    Http(String),
}

/// The body of `res`, refused past `max` bytes.
async fn read_capped(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(c) = res
        .chunk()
        .await
        .map_err(|e| ReadError::Http(error_chain(&e)))?
    {
        if body.len() + c.len() > max {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&c);
    }
    Ok(body)
}

/// rsupd's HTTP client for one registry: its CAs besides the system's,
/// bounded connects, and no proxy for a loopback registry (whose traffic
/// must stay on the host).
fn http_client(roots: &[Certificate], loopback: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT);
    if loopback {
        b = b.no_proxy();
    }
    for c in roots {
        let cert =
            reqwest::Certificate::from_pem(&c.data).map_err(|e| format!("CA certificate: {e}"))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

/// `GET /v2/`: the registry is there, speaks this scheme, and says how it
/// wants to be authenticated; basic credentials are checked right here (a
/// token service checks them when it is asked for a token).
async fn probe(
    http: &reqwest::Client,
    host: &str,
    scheme: &str,
    creds: Option<&Credentials>,
) -> Result<Challenge, Error> {
    let url = format!("{scheme}://{host}/v2/");
    let res = http
        .get(&url)
        .timeout(SMALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(host, format!("{scheme}: {}", error_chain(&e))))?;
    let status = res.status();
    if status.is_success() {
        return Ok(Challenge::None);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let header = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let challenge = parse_challenge(&header);
        if challenge != Challenge::Basic {
            return Ok(challenge);
        }
        let Some(c) = creds else {
            // No credentials: the pull meets the 401 and says so.
            return Ok(Challenge::Basic);
        };
        let res = http
            .get(&url)
            .basic_auth(&c.username, Some(&c.password))
            .timeout(SMALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(host, format!("{scheme}: {}", error_chain(&e))))?;
        if res.status().is_success() {
            return Ok(Challenge::Basic);
        }
        return Err(Error::Registry(RegistryError::Unauthorized {
            registry: host.to_string(),
            reason: format!(
                "the credentials of {} were refused ({})",
                quote(&c.username),
                res.status()
            ),
        }));
    }
    if status.is_client_error() && scheme == "http" {
        // A plain HTTP request to an HTTPS port gets 400.
        return Err(unreachable(host, format!("{scheme}: {status}")));
    }
    // Some registries answer /v2/ with 404 and serve the API all the same.
    if status.is_client_error() {
        return Ok(Challenge::None);
    }
    Err(unreachable(host, format!("{scheme}: {status}")))
}

/// `Basic realm="..."` or `Bearer realm="https://...",service="..."`.
fn parse_challenge(header: &str) -> Challenge {
    let h = header.trim();
    let (kind, rest) = h.split_once(' ').unwrap_or((h, ""));
    match kind.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => {
            let mut realm = None;
            let mut service = None;
            for part in split_params(rest) {
                if let Some((k, v)) = part.split_once('=') {
                    let v = v.trim().trim_matches('"').to_string();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "realm" => realm = Some(v),
                        "service" => service = Some(v),
                        _ => {}
                    }
                }
            }
            match realm {
                Some(realm) => Challenge::Bearer { realm, service },
                None => Challenge::None,
            }
        }
        _ => Challenge::None,
    }
}

/// `a="x,y",b=z` split on the commas outside quotes.
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn scope(repository: &str, op: RegistryOperation) -> String {
    match op {
        RegistryOperation::Pull => format!("repository:{repository}:pull"),
        RegistryOperation::Push => format!("repository:{repository}:pull,push"),
    }
}

/// The distribution spec's token flow: `GET realm?service=..&scope=..`,
/// with the basic credentials if any. The realm must be HTTPS (or a host
/// that may use plain HTTP); the answer is read up to 64 KiB.
async fn fetch_token(
    http: &reqwest::Client,
    registry: &str,
    src: &TokenSource,
    creds: Option<&Credentials>,
) -> Result<Token, Error> {
    let realm = src.realm.as_str();
    let unsupported = |reason: String| {
        Error::Registry(RegistryError::Unsupported {
            registry: registry.to_string(),
            reason,
        })
    };
    let url = reqwest::Url::parse(realm)
        .map_err(|e| unsupported(format!("token realm {}: {e}", quote(realm))))?;
    let realm_host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => {
            return Err(unsupported(format!(
                "token realm {} has no host",
                quote(realm)
            )));
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if plain_http_allowed(&src.config, &realm_host) => {}
        s => {
            return Err(unsupported(format!(
                "token realm {}: {s} is not allowed (credentials would travel in the clear)",
                quote(realm)
            )));
        }
    }
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &src.scope {
        query.push(("scope", s.as_str()));
    }
    if let Some(s) = &src.service {
        query.push(("service", s.as_str()));
    }
    let mut req = http.get(url).query(&query).timeout(SMALL_TIMEOUT);
    if let Some(c) = creds {
        req = req.basic_auth(&c.username, Some(&c.password));
    }
    let res = req
        .send()
        .await
        .map_err(|e| unreachable(registry, format!("token: {}", error_chain(&e))))?;
    let status = res.status();
    let body = tokio::time::timeout(SMALL_TIMEOUT, read_capped(res, MAX_SMALL_BODY))
        .await
        .map_err(|_| unreachable(registry, "token: the answer took too long".into()))?
        .map_err(|e| match e {
            ReadError::TooLarge => {
                corrupt_token(registry, "the token answer is larger than 64 KiB")
            }
            ReadError::Http(e) => unreachable(registry, format!("token: {e}")),
        })?;
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::Registry(RegistryError::Unauthorized {
            registry: registry.to_string(),
            reason: format!("the token service refused the credentials ({status})"),
        }));
    }
    if !status.is_success() {
        return Err(unreachable(registry, format!("token service: {status}")));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| corrupt_token(registry, &format!("the token answer: {e}")))?;
    let value = v
        .get("token")
        .or_else(|| v.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty() && t.len() <= 16 << 10 && !t.chars().any(char::is_control))
        .map(str::to_string)
        .ok_or_else(|| corrupt_token(registry, "the token answer has no usable token"))?;
    // The spec's default is 60 s; a longer one is taken as given, up to
    // an hour.
    let lifetime = v
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .filter(|&e| e >= 60)
        .unwrap_or(60)
        .min(3600);
    Ok(Token {
        value,
        fetched: std::time::Instant::now(),
        lifetime: Duration::from_secs(lifetime),
    })
}

/// oci-client for a push: the scheme and CAs found, and the session's
/// authorization stored in it (a token as it is, or the basic
/// credentials), so that it does not run a token flow of its own.
async fn pusher(
    scheme: &str,
    roots: &[Certificate],
    registry: &str,
    host: &str,
    token: Option<&str>,
    creds: Option<&Credentials>,
) -> Result<oci_client::Client, Error> {
    let client = oci_client::Client::try_from(ClientConfig {
        protocol: if scheme == "http" {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates: roots.to_vec(),
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        // One streamed PUT per blob (the size is known).
        use_monolithic_push: true,
        ..ClientConfig::default()
    })
    .map_err(|e| unreachable(registry, error_chain(&e)))?;
    let auth = match (token, creds) {
        (Some(t), _) => RegistryAuth::Bearer(t.to_string()),
        (None, Some(c)) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        (None, None) => RegistryAuth::Anonymous,
    };
    client.store_auth_if_needed(host, &auth).await;
    Ok(client)
}

fn corrupt_token(registry: &str, reason: &str) -> Error {
    Error::Registry(RegistryError::Corrupt {
        registry: registry.to_string(),
        reason: reason.to_string(),
    })
}

/// Whether `e` is TLS refusing the server's certificate.
fn is_certificate_error(e: &Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("certificate") || s.contains("unknownissuer") || s.contains("notvalidforname")
}

fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Loopback hosts, and those the operator named, may use plain HTTP.
fn plain_http_allowed(config: &RegistryConfig, registry: &str) -> bool {
    config.insecure.iter().any(|h| h == registry) || is_loopback(registry)
}

/// `host` of `host[:port]` (an IPv6 literal keeps its brackets).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |i| &registry[..=i]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// The CA certificates trusted for `registry` besides the system's roots:
/// `--registry-ca` files for it, then `certs_dir/<registry>/*.crt`.
fn ca_certificates(config: &RegistryConfig, registry: &str) -> Result<Vec<Certificate>, Error> {
    let mut files: Vec<PathBuf> = config
        .ca_files
        .iter()
        .filter(|(h, _)| h == registry)
        .map(|(_, p)| p.clone())
        .collect();
    if let Some(dir) = &config.certs_dir {
        // `registry` is a validated host[:port]: one path component.
        let d = dir.join(registry);
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut found: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    files
        .iter()
        .map(|p| read_pem(p, registry))
        .collect::<Result<Vec<_>, _>>()
}

fn read_pem(path: &Path, registry: &str) -> Result<Certificate, Error> {
    let data = std::fs::read(path).map_err(|e| {
        Error::FailedPrecondition(format!(
            "CA certificate {} for registry {registry}: {e}",
            path.display()
        ))
    })?;
    Ok(Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    })
}

fn unreachable(registry: &str, reason: String) -> Error {
    Error::Registry(RegistryError::Unreachable {
        registry: registry.to_string(),
        reason,
    })
}

/// An error and its causes (reqwest's own message is terse).
use crate::error::chain as error_chain;

/// One protocol error as rsup's.
pub(crate) fn map_err(registry: &str, e: OciDistributionError) -> Error {
    let reg = registry.to_string();
    match e {
        OciDistributionError::ImageManifestNotFoundError(m) => Error::NotFound(m),
        OciDistributionError::AuthenticationFailure(m) => {
            Error::Registry(RegistryError::Unauthorized {
                registry: reg,
                reason: format!("authentication failed: {}", quote(m.trim())),
            })
        }
        OciDistributionError::UnauthorizedError { url } => {
            Error::Registry(RegistryError::Unauthorized {
                registry: reg,
                reason: format!("unauthorized: {url} needs credentials (rsupctl login {registry})"),
            })
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let msg = envelope
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            let reason = format!("{} ({url})", quote(&msg));
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Error::NotFound(format!("registry {registry}: {reason}"))
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                Error::Registry(RegistryError::Unauthorized {
                    registry: reg,
                    reason,
                })
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                Error::Registry(RegistryError::Denied {
                    registry: reg,
                    reason,
                })
            } else {
                unreachable(registry, reason)
            }
        }
        OciDistributionError::ServerError { code, url, message } => match code {
            404 => Error::NotFound(format!("registry {registry}: not found: {url}")),
            401 => Error::Registry(RegistryError::Unauthorized {
                registry: reg,
                reason: format!("unauthorized: {url}"),
            }),
            403 => Error::Registry(RegistryError::Denied {
                registry: reg,
                reason: format!("denied: {url}"),
            }),
            _ => unreachable(registry, format!("{code} {}: {url}", quote(message.trim()))),
        },
        OciDistributionError::DigestError(d) => Error::Registry(RegistryError::Corrupt {
            registry: reg,
            reason: d.to_string(),
        }),
        OciDistributionError::UnsupportedSchemaVersionError(v) => {
            Error::Registry(RegistryError::Unsupported {
                registry: reg,
                reason: format!("manifest schema version {v} is not supported (only 2)"),
            })
        }
        OciDistributionError::UnsupportedMediaTypeError(m)
        | OciDistributionError::IncompatibleLayerMediaTypeError(m) => {
            Error::Registry(RegistryError::Unsupported {
                registry: reg,
                reason: format!("unsupported media type {m}"),
            })
        }
        OciDistributionError::RequestError(e) => match e.status().map(|s| s.as_u16()) {
            Some(401) => Error::Registry(RegistryError::Unauthorized {
                registry: reg,
                reason: format!(
                    "unauthorized: credentials are needed (rsupctl login {registry}): {}",
                    error_chain(&e)
                ),
            }),
            Some(403) => Error::Registry(RegistryError::Denied {
                registry: reg,
                reason: error_chain(&e),
            }),
            Some(404) => Error::NotFound(format!("registry {registry}: {}", error_chain(&e))),
            _ => unreachable(registry, error_chain(&e)),
        },
        e => unreachable(registry, error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_and_named_hosts_only() {
        let mut c = RegistryConfig::default();
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(plain_http_allowed(&c, h), "{h}");
        }
        for h in [
            "docker.io",
            "reg.example:5000",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.evil.example",
        ] {
            assert!(!plain_http_allowed(&c, h), "{h}");
        }
        c.insecure.push("reg.example:5000".into());
        assert!(plain_http_allowed(&c, "reg.example:5000"));
        assert!(!plain_http_allowed(&c, "reg.example:5001"));
    }

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Challenge::Basic);
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.example/token\",service=\"reg,istry\",scope=\"a:b:pull\""
            ),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg,istry".into()),
            }
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), Challenge::None);
        assert_eq!(parse_challenge(""), Challenge::None);
        assert_eq!(parse_challenge("Negotiate abc"), Challenge::None);
    }

    #[tokio::test]
    async fn a_token_realm_in_the_clear_is_refused_for_a_remote_host() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = http_client(&[], false).expect("client");
        let config = RegistryConfig::default();
        let creds = Credentials::parse("alice", "pw").expect("creds");
        for realm in [
            "http://auth.example/token",
            "ftp://auth.example/t",
            "not a url",
        ] {
            let src = TokenSource {
                realm: realm.into(),
                service: None,
                scope: Some("repository:a:pull".into()),
                config: config.clone(),
            };
            let e = match fetch_token(&http, "reg.example", &src, Some(&creds)).await {
                Ok(_) => panic!("{realm}: accepted"),
                Err(e) => e,
            };
            assert!(
                matches!(e, Error::Registry(RegistryError::Unsupported { .. })),
                "{realm}: {e:?}"
            );
        }
    }

    #[test]
    fn credentials_are_checked_at_the_edge() {
        assert!(Credentials::parse("alice", "pw d:x").is_ok());
        for (u, p) in [
            ("", "pw"),
            ("alice", ""),
            ("a:b", "pw"),
            ("a\nb", "pw"),
            ("alice", "p\0w"),
            ("alice", "p\r\nX-Evil: 1"),
        ] {
            let e = Credentials::parse(u, p).expect_err(u);
            assert!(!e.to_string().contains("X-Evil"), "{e}");
        }
        assert!(Credentials::parse(&"u".repeat(257), "pw").is_err());
        assert!(Credentials::parse("u", &"p".repeat(4097)).is_err());
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials {
            username: "alice".into(),
            password: "s3cret-pw".into(),
        };
        let s = format!("{c:?}");
        assert!(s.contains("alice") && !s.contains("s3cret"), "{s}");
    }
}
