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
const USER_AGENT: &str = concat!("rsup/", env!("CARGO_PKG_VERSION"));

/// A registry reached and authenticated for one repository.
pub(crate) struct Session {
    pub client: oci_client::Client,
    /// For the reads rsup bounds itself (manifests).
    http: reqwest::Client,
    /// The bearer token of a token-auth registry.
    token: Option<String>,
    /// The host requests go to (`docker.io` resolved).
    host: String,
    pub auth: RegistryAuth,
    /// The repository (with the caller's tag or digest).
    pub reference: Reference,
    /// `host[:port]`, for messages.
    pub registry: String,
    /// `https` or `http`.
    pub scheme: &'static str,
}

impl Session {
    /// Finds how to talk to `r`'s registry and authenticates for `op`.
    /// `Unauthorized` when the registry wants credentials and `creds` are
    /// wrong (a registry that wants some and gets none answers 401 on the
    /// first request instead).
    pub async fn open(
        config: &RegistryConfig,
        r: &RemoteRef,
        creds: Option<&Credentials>,
        op: RegistryOperation,
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
        let host = reference.resolve_registry().to_string();
        let roots = ca_certificates(config, &registry)?;
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let schemes: &[&'static str] = if plain_http_allowed(config, &registry) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut first_error = None;
        for &scheme in schemes {
            match probe(&host, scheme, &roots, creds).await {
                Ok(http) => {
                    let client = oci_client::Client::new(ClientConfig {
                        protocol: if scheme == "http" {
                            ClientProtocol::Http
                        } else {
                            ClientProtocol::Https
                        },
                        extra_root_certificates: roots.clone(),
                        platform_resolver: None,
                        connect_timeout: Some(CONNECT_TIMEOUT),
                        read_timeout: Some(READ_TIMEOUT),
                        user_agent: USER_AGENT,
                        // One streamed PUT per blob (the size is known).
                        use_monolithic_push: true,
                        ..ClientConfig::default()
                    });
                    let token = client
                        .auth(&reference, &auth, op)
                        .await
                        .map_err(|e| map_err(&registry, e))?;
                    return Ok(Session {
                        client,
                        http,
                        token,
                        host,
                        auth,
                        reference,
                        registry,
                        scheme,
                    });
                }
                // A refusal is the registry's answer: no other scheme.
                Err(e @ Error::Registry(RegistryError::Unauthorized { .. })) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| unreachable(&registry, "no scheme to try".into())))
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
        let mut req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, accept.join(", "));
        req = match (&self.token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            (None, _) => req,
        };
        let mut res = req
            .send()
            .await
            .map_err(|e| unreachable(&self.registry, error_chain(&e)))?;
        let status = res.status();
        if !status.is_success() {
            let mut body = Vec::new();
            while let Ok(Some(c)) = res.chunk().await {
                body.extend_from_slice(&c);
                if body.len() > 64 << 10 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&body);
            return Err(match status.as_u16() {
                404 => Error::NotFound(format!(
                    "registry {}: manifest unknown ({url})",
                    self.registry
                )),
                401 => Error::Registry(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    reason: format!(
                        "unauthorized: {url} needs credentials (rsupctl login {})",
                        self.registry
                    ),
                }),
                403 => Error::Registry(RegistryError::Denied {
                    registry: self.registry.clone(),
                    reason: format!("denied: {url}"),
                }),
                _ => unreachable(
                    &self.registry,
                    format!("{status}: {url}: {}", crate::names::quote(text.trim())),
                ),
            });
        }
        if res.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large(&self.registry, &url, max));
        }
        let mut body = Vec::new();
        while let Some(c) = res
            .chunk()
            .await
            .map_err(|e| unreachable(&self.registry, error_chain(&e)))?
        {
            if body.len() + c.len() > max {
                return Err(too_large(&self.registry, &url, max));
            }
            body.extend_from_slice(&c);
        }
        Ok(body)
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

/// `GET /v2/`: the registry is there, speaks this scheme, and takes the
/// credentials (when it asks for basic auth; a token service checks them
/// when the client asks it for a token). Returns the HTTP client it used.
async fn probe(
    host: &str,
    scheme: &str,
    roots: &[Certificate],
    creds: Option<&Credentials>,
) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CONNECT_TIMEOUT * 3)
        .user_agent(USER_AGENT);
    for c in roots {
        let cert = reqwest::Certificate::from_pem(&c.data)
            .map_err(|e| unreachable(host, format!("CA certificate: {e}")))?;
        b = b.add_root_certificate(cert);
    }
    let client = b
        .build()
        .map_err(|e| unreachable(host, format!("HTTP client: {e}")))?;
    let url = format!("{scheme}://{host}/v2/");
    let res = client
        .get(&url)
        .send()
        .await
        .map_err(|e| unreachable(host, format!("{scheme}: {}", error_chain(&e))))?;
    let status = res.status();
    if status.is_success() {
        return Ok(client);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let basic = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("basic"));
        if !basic {
            // Bearer: the token service decides.
            return Ok(client);
        }
        let Some(c) = creds else {
            // No credentials: the pull meets the 401 and says so.
            return Ok(client);
        };
        let res = client
            .get(&url)
            .basic_auth(&c.username, Some(&c.password))
            .send()
            .await
            .map_err(|e| unreachable(host, format!("{scheme}: {}", error_chain(&e))))?;
        if res.status().is_success() {
            return Ok(client);
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
        return Ok(client);
    }
    Err(unreachable(host, format!("{scheme}: {status}")))
}

/// Loopback hosts, and those the operator named, may use plain HTTP.
fn plain_http_allowed(config: &RegistryConfig, registry: &str) -> bool {
    if config.insecure.iter().any(|h| h == registry) {
        return true;
    }
    let host = host_of(registry);
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// An error and its causes, `: `-joined (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// One protocol error as rsup's.
pub(crate) fn map_err(registry: &str, e: OciDistributionError) -> Error {
    let reg = registry.to_string();
    match e {
        OciDistributionError::ImageManifestNotFoundError(m) => Error::NotFound(m),
        OciDistributionError::AuthenticationFailure(m) => {
            Error::Registry(RegistryError::Unauthorized {
                registry: reg,
                reason: format!("authentication failed: {}", m.trim()),
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
            let reason = format!("{msg} ({url})");
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
            _ => unreachable(registry, format!("{code} {}: {url}", message.trim())),
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
