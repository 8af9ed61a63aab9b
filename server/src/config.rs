//! rsupd's configuration: command-line flags with environment fallbacks,
//! resolved once into an immutable [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use rsup_runtime::imagestore::limits::{FreeReserve, InodeReserve, UnpackLimits};
use rsup_runtime::spec::LogConfig;

/// rsupd: runs and supervises containers, driven over gRPC.
#[derive(Debug, Parser)]
#[command(name = "rsupd", version)]
pub struct Cli {
    /// Unix socket to serve gRPC on (created mode 0660).
    #[arg(long, env = "RSUP_SOCKET", default_value = "/run/rsup/rsupd.sock")]
    pub socket: PathBuf,
    /// Group (name or gid) that owns the socket; default: rsupd's own group.
    #[arg(long, env = "RSUP_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Also serve Docker's Engine API (v1.41, a subset: docs/docker-api.md)
    /// on this Unix socket (mode 0660, the --socket-group's), e.g.
    /// /run/rsup/docker.sock for DOCKER_HOST=unix:///run/rsup/docker.sock.
    /// Off unless given: whoever reaches it controls rsupd, as with the
    /// gRPC socket.
    #[arg(long, env = "RSUP_DOCKER_SOCKET", value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// Directory for all persistent state.
    #[arg(long, env = "RSUP_STATE_DIR", default_value = "/var/lib/rsup")]
    pub state_dir: PathBuf,
    /// Log filter (tracing EnvFilter syntax, e.g. "info" or "rsup_runtime=debug").
    #[arg(long, env = "RSUP_LOG", default_value = "info")]
    pub log_level: String,
    /// Default size at which a container's log file is rotated, in bytes.
    #[arg(long, default_value_t = LogConfig::default().max_size)]
    pub log_max_size: u64,
    /// Default number of log files kept per container (current + rotated).
    #[arg(long, default_value_t = LogConfig::default().max_files)]
    pub log_max_files: u32,
    /// Name of the cgroup subtree, under rsupd's own cgroup, that holds the
    /// containers' cgroups.
    #[arg(long, env = "RSUP_CGROUP_SUBTREE", default_value = "rsup")]
    pub cgroup_subtree: String,
    /// Run containers without cgroups (no limits, no stats).
    #[arg(long)]
    pub no_cgroups: bool,
    /// Seconds between usage samples (CPU %, OOM detection, metrics).
    #[arg(long, default_value_t = 1.0)]
    pub stats_interval: f64,
    /// Prefix (1-4 of a-z, 0-9) of the links rsupd makes: bridges
    /// `<prefix>b…`, veths `<prefix>v…`. Leftovers with it are removed at start.
    #[arg(long, env = "RSUP_NET_PREFIX", default_value = "rs")]
    pub net_prefix: String,
    /// Subnet of the `default` network when it is first created.
    #[arg(long, env = "RSUP_DEFAULT_SUBNET", default_value = "10.88.0.0/16")]
    pub default_subnet: String,
    /// Port of the networks' embedded DNS servers.
    #[arg(long, default_value_t = 53)]
    pub dns_port: u16,
    /// Upstream DNS server (IP[:PORT]) for names a network does not know;
    /// repeatable. None: such names get NXDOMAIN.
    #[arg(long = "dns-upstream")]
    pub dns_upstream: Vec<String>,
    /// Host user (name or uid) whose subordinate id ranges `--userns remap`
    /// containers use.
    #[arg(long, env = "RSUP_USERNS_REMAP_USER", default_value = "rsup")]
    pub userns_remap_user: String,
    /// subuid file (`name-or-uid:start:count` lines) read at each create.
    #[arg(long, env = "RSUP_SUBUID_FILE", default_value = "/etc/subuid")]
    pub subuid_file: PathBuf,
    /// subgid file, as --subuid-file.
    #[arg(long, env = "RSUP_SUBGID_FILE", default_value = "/etc/subgid")]
    pub subgid_file: PathBuf,
    /// pids limit of a container created without --pids-limit (Podman's
    /// default is 2048); 0 means unlimited. A container's own --pids-limit
    /// wins (0 there: unlimited).
    #[arg(long, env = "RSUP_DEFAULT_PIDS_LIMIT", default_value_t = 2048)]
    pub default_pids_limit: u64,
    /// Most an image may unpack to (its layers uncompressed, summed; the
    /// unpacked archive too), enforced while it is read: bytes or a size
    /// such as 512m, 16g (powers of 1024). Beyond it an import fails with
    /// INVALID_ARGUMENT and leaves nothing behind.
    #[arg(long, env = "RSUP_IMAGE_MAX_SIZE", default_value = "16g")]
    pub image_max_size: String,
    /// Free space an image import (and its upload) must leave on the state
    /// directory's filesystem, checked while it is written: a size (2g), a
    /// share of the filesystem (10%), or "auto": the larger of 1 GiB and
    /// 5%. Below it an import fails with RESOURCE_EXHAUSTED and leaves
    /// nothing behind. 0 turns the check off.
    #[arg(long, env = "RSUP_IMAGE_MIN_FREE", default_value = "auto")]
    pub image_min_free: String,
    /// Free inodes an image import (and the shifted copy of an image for
    /// --userns remap) must leave on the state directory's filesystem: a
    /// count (20000), a share of its inodes (2%), or "auto": the larger of
    /// 10000 and 1%. Below it an import fails with RESOURCE_EXHAUSTED and
    /// leaves nothing behind. 0 turns the check off; so does a filesystem
    /// that reports no inode count (btrfs).
    #[arg(long, env = "RSUP_IMAGE_MIN_FREE_INODES", default_value = "auto")]
    pub image_min_free_inodes: String,
    /// A registry (host[:port]) that may be reached over plain HTTP when
    /// HTTPS fails, as loopback registries always may (Docker's rule).
    /// Repeatable.
    #[arg(
        long = "insecure-registry",
        env = "RSUP_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub insecure_registries: Vec<String>,
    /// A CA certificate (PEM) trusted for one registry besides the
    /// system's roots: HOST[:PORT]=FILE. Repeatable.
    #[arg(
        long = "registry-ca",
        env = "RSUP_REGISTRY_CA",
        value_delimiter = ',',
        value_name = "HOST[:PORT]=FILE"
    )]
    pub registry_cas: Vec<String>,
    /// A certs.d-style directory: DIR/HOST[:PORT]/*.crt are CA
    /// certificates trusted for that registry (as /etc/docker/certs.d).
    #[arg(
        long,
        env = "RSUP_REGISTRY_CERTS_DIR",
        default_value = "/etc/rsup/certs.d",
        value_name = "DIR"
    )]
    pub registry_certs_dir: PathBuf,
    /// Address of the Prometheus /metrics endpoint ("" to disable).
    #[arg(long, env = "RSUP_METRICS_ADDR", default_value = "127.0.0.1:9750")]
    pub metrics_addr: String,
    /// Also serve gRPC on this TCP address (IP:PORT; port 0 picks one and
    /// logs it), with mutual TLS: needs --tls-cert, --tls-key and --tls-ca.
    #[arg(long, env = "RSUP_TCP", value_name = "IP:PORT")]
    pub tcp: Option<String>,
    /// Server certificate (PEM, with any intermediates) for --tcp.
    #[arg(long, env = "RSUP_TLS_SERVER_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "RSUP_TLS_SERVER_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that sign the client certificates --tcp
    /// accepts; a client without one is refused during the handshake.
    #[arg(long, env = "RSUP_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Also serve gRPC on this TCP address WITHOUT TLS or any
    /// authentication: loopback addresses only (127.0.0.0/8, ::1).
    #[arg(long, env = "RSUP_INSECURE_TCP", value_name = "IP:PORT")]
    pub insecure_tcp: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_gid: Option<u32>,
    pub docker_socket: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub log_level: String,
    pub log: LogConfig,
    pub cgroup_subtree: String,
    pub no_cgroups: bool,
    pub stats_interval: std::time::Duration,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub net: rsup_runtime::netstack::NetConfig,
    /// The mutual-TLS TCP listener, if any.
    pub tcp: Option<TlsListener>,
    /// The unauthenticated loopback TCP listener, if any.
    pub insecure_tcp: Option<SocketAddr>,
    pub userns: rsup_runtime::userns::UsernsConfig,
    /// `--default-pids-limit`; `None`: unlimited.
    pub default_pids_limit: Option<u64>,
    /// `--image-max-size`, `--image-min-free` and `--image-min-free-inodes`.
    pub image_limits: UnpackLimits,
    pub registries: rsup_runtime::config::RegistryConfig,
}

/// `DIGITS[UNIT]` in bytes, UNIT one of k, m, g, t (powers of 1024,
/// case-insensitive, with an optional `b` or `ib`: `16g`, `16GiB`, `512MB`).
fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim().to_ascii_lowercase();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// `--insecure-registry`, `--registry-ca` and `--registry-certs-dir`:
/// every host a valid registry host, every CA file readable.
fn resolve_registries(
    insecure: &[String],
    cas: &[String],
    certs_dir: PathBuf,
) -> anyhow::Result<rsup_runtime::config::RegistryConfig> {
    let host = |flag: &str, h: &str| -> anyhow::Result<String> {
        match rsup_runtime::names::RemoteRef::parse(&format!("{h}/x")) {
            Ok(r) if r.registry() == h => Ok(h.to_string()),
            _ => anyhow::bail!("{flag} {h:?}: expected a registry host[:port]"),
        }
    };
    let insecure = insecure
        .iter()
        .map(|h| host("--insecure-registry", h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut ca_files = Vec::new();
    for c in cas {
        let Some((h, file)) = c.split_once('=') else {
            anyhow::bail!("--registry-ca {c:?}: expected HOST[:PORT]=FILE");
        };
        let h = host("--registry-ca", h)?;
        let file = PathBuf::from(file);
        std::fs::read(&file)
            .map_err(|e| anyhow::anyhow!("--registry-ca {c:?}: {}: {e}", file.display()))?;
        ca_files.push((h, file));
    }
    Ok(rsup_runtime::config::RegistryConfig {
        insecure,
        ca_files,
        certs_dir: Some(certs_dir),
    })
}

/// `--image-max-size`: a size above 0.
fn resolve_image_max_size(value: &str) -> anyhow::Result<u64> {
    match parse_size(value) {
        Some(0) => anyhow::bail!("--image-max-size must be above 0"),
        Some(n) => Ok(n),
        None => anyhow::bail!(
            "--image-max-size {value:?}: expected bytes or a size such as 512m or 16g"
        ),
    }
}

/// `--image-min-free`: `auto`, `N%` (0-100) or a size.
fn resolve_image_min_free(value: &str) -> anyhow::Result<FreeReserve> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(FreeReserve::Auto);
    }
    if let Some(p) = v.strip_suffix('%') {
        return match p.trim().parse::<u8>() {
            Ok(p) if p <= 100 => Ok(FreeReserve::Percent(p)),
            _ => anyhow::bail!("--image-min-free {value:?}: a share is 0% to 100%"),
        };
    }
    parse_size(v).map(FreeReserve::Bytes).ok_or_else(|| {
        anyhow::anyhow!(
            "--image-min-free {value:?}: expected \"auto\", a share such as 5% or a size such as 2g"
        )
    })
}

/// `--image-min-free-inodes`: `auto`, `N%` (0-100) or a count.
fn resolve_image_min_free_inodes(value: &str) -> anyhow::Result<InodeReserve> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(InodeReserve::Auto);
    }
    if let Some(p) = v.strip_suffix('%') {
        return match p.trim().parse::<u8>() {
            Ok(p) if p <= 100 => Ok(InodeReserve::Percent(p)),
            _ => anyhow::bail!("--image-min-free-inodes {value:?}: a share is 0% to 100%"),
        };
    }
    v.parse::<u64>().map(InodeReserve::Count).map_err(|_| {
        anyhow::anyhow!(
            "--image-min-free-inodes {value:?}: expected \"auto\", a share such as 1% or a number of inodes"
        )
    })
}

/// `--tcp` with its certificate files, read at start so that a missing or
/// unreadable file stops rsupd before it serves anything.
#[derive(Clone)]
pub struct TlsListener {
    pub addr: SocketAddr,
    /// Server certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Server private key, PEM.
    pub key_pem: Vec<u8>,
    /// CA(s) that client certificates must chain to, PEM.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsListener {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// An `IP:PORT` for a TCP listener; host names are refused so that what is
/// bound (and checked for loopback) is exactly what was written.
fn parse_listen_addr(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value.parse().map_err(|_| {
        anyhow::anyhow!(
            "{flag} {value:?}: expected IP:PORT such as 127.0.0.1:7443 or [::1]:7443 (host names are not accepted)"
        )
    })
}

/// Reads one PEM file named by `flag`, checking that it holds PEM at all.
fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        anyhow::bail!("{flag} {}: not a PEM file", path.display());
    }
    Ok(bytes)
}

/// `--tcp` and its three files: all of them, or none.
fn resolve_tcp(
    tcp: Option<&str>,
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> anyhow::Result<Option<TlsListener>> {
    let Some(tcp) = tcp else {
        if cert.is_some() || key.is_some() || ca.is_some() {
            anyhow::bail!("--tls-cert, --tls-key and --tls-ca apply to --tcp, which is not given");
        }
        return Ok(None);
    };
    let addr = parse_listen_addr("--tcp", tcp)?;
    let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) else {
        let missing: Vec<&str> = [
            (cert.is_none(), "--tls-cert"),
            (key.is_none(), "--tls-key"),
            (ca.is_none(), "--tls-ca"),
        ]
        .into_iter()
        .filter_map(|(absent, flag)| absent.then_some(flag))
        .collect();
        anyhow::bail!(
            "--tcp serves only mutual TLS and needs --tls-cert, --tls-key and --tls-ca (missing: {}); \
             for an unauthenticated listener on loopback use --insecure-tcp",
            missing.join(", ")
        );
    };
    Ok(Some(TlsListener {
        addr,
        cert_pem: read_pem("--tls-cert", cert)?,
        key_pem: read_pem("--tls-key", key)?,
        ca_pem: read_pem("--tls-ca", ca)?,
    }))
}

/// `--insecure-tcp`: a loopback IP:PORT only.
fn resolve_insecure_tcp(value: Option<&str>) -> anyhow::Result<Option<SocketAddr>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let addr = parse_listen_addr("--insecure-tcp", value)?;
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-tcp {value}: refused, an unauthenticated listener may only bind a loopback \
             address (127.0.0.0/8 or ::1); use --tcp with mutual TLS for other addresses"
        );
    }
    Ok(Some(addr))
}

impl Cli {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let socket_gid = match &self.socket_group {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => nix::unistd::Group::from_name(g)?
                    .ok_or_else(|| anyhow::anyhow!("--socket-group: no group named {g:?}"))?
                    .gid
                    .as_raw(),
            }),
        };
        // The ranges a container's own log options have.
        let (size, files) = (
            rsup_runtime::bounds::LOG_MAX_SIZE,
            rsup_runtime::bounds::LOG_MAX_FILES,
        );
        if !size.contains(&self.log_max_size) {
            anyhow::bail!(
                "--log-max-size must be between {} and {} bytes",
                size.start(),
                size.end()
            );
        }
        if !files.contains(&u64::from(self.log_max_files)) {
            anyhow::bail!(
                "--log-max-files must be between {} and {}",
                files.start(),
                files.end()
            );
        }
        let state_dir = if self.state_dir.is_absolute() {
            self.state_dir
        } else {
            std::env::current_dir()?.join(self.state_dir)
        };
        if !(self.stats_interval >= 0.1 && self.stats_interval <= 3600.0) {
            anyhow::bail!("--stats-interval must be between 0.1 and 3600 seconds");
        }
        if !rsup_runtime::spec::is_dns_label(&self.cgroup_subtree) {
            anyhow::bail!("--cgroup-subtree must be a single name such as \"rsup\"");
        }
        let metrics_addr = if self.metrics_addr.is_empty() {
            None
        } else {
            Some(
                self.metrics_addr
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--metrics-addr {:?}: {e}", self.metrics_addr))?,
            )
        };
        if self.net_prefix.is_empty()
            || self.net_prefix.len() > 4
            || !self
                .net_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            anyhow::bail!("--net-prefix must be 1-4 of a-z and 0-9");
        }
        let default_subnet = self
            .default_subnet
            .parse()
            .map_err(|e| anyhow::anyhow!("--default-subnet {:?}: {e}", self.default_subnet))?;
        let dns_upstream = self
            .dns_upstream
            .iter()
            .map(|u| {
                u.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        u.parse::<std::net::IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| anyhow::anyhow!("--dns-upstream {u:?} is not IP[:PORT]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tcp = resolve_tcp(
            self.tcp.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )?;
        let insecure_tcp = resolve_insecure_tcp(self.insecure_tcp.as_deref())?;
        if self.userns_remap_user.is_empty() || self.userns_remap_user.contains(':') {
            anyhow::bail!("--userns-remap-user must be a user name or uid");
        }
        let absolute = |p: PathBuf| -> anyhow::Result<PathBuf> {
            Ok(if p.is_absolute() {
                p
            } else {
                std::env::current_dir()?.join(p)
            })
        };
        let userns = rsup_runtime::userns::UsernsConfig {
            user: self.userns_remap_user,
            subuid_file: absolute(self.subuid_file)?,
            subgid_file: absolute(self.subgid_file)?,
        };
        let image_limits = UnpackLimits {
            max_image_bytes: resolve_image_max_size(&self.image_max_size)?,
            min_free: resolve_image_min_free(&self.image_min_free)?,
            min_free_inodes: resolve_image_min_free_inodes(&self.image_min_free_inodes)?,
        };
        let registries = resolve_registries(
            &self.insecure_registries,
            &self.registry_cas,
            absolute(self.registry_certs_dir)?,
        )?;
        Ok(Config {
            registries,
            default_pids_limit: (self.default_pids_limit > 0).then_some(self.default_pids_limit),
            image_limits,
            tcp,
            insecure_tcp,
            userns,
            net: rsup_runtime::netstack::NetConfig {
                prefix: self.net_prefix,
                default_subnet,
                dns_port: self.dns_port,
                dns_upstream,
            },
            cgroup_subtree: self.cgroup_subtree,
            no_cgroups: self.no_cgroups,
            stats_interval: std::time::Duration::from_secs_f64(self.stats_interval),
            metrics_addr,
            docker_socket: self.docker_socket,
            socket: self.socket,
            socket_gid,
            state_dir,
            log_level: self.log_level,
            log: LogConfig {
                max_size: self.log_max_size,
                max_files: self.log_max_files,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_flags_take_hosts_and_readable_cas() {
        let dir = std::env::temp_dir().join(format!("rsup-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "pem").expect("write");
        let r = resolve_registries(
            &["reg.example:5000".into(), "localhost".into()],
            &[format!("reg.example:5000={}", ca.display())],
            dir.clone(),
        )
        .expect("valid");
        assert_eq!(r.insecure, vec!["reg.example:5000", "localhost"]);
        assert_eq!(
            r.ca_files,
            vec![("reg.example:5000".to_string(), ca.clone())]
        );
        assert_eq!(r.certs_dir, Some(dir.clone()));
        for bad in ["", "a/b", "Bad Host", "reg.example:port", "../x"] {
            assert!(
                resolve_registries(&[bad.into()], &[], dir.clone()).is_err(),
                "--insecure-registry {bad:?}"
            );
        }
        for bad in [
            "reg.example".to_string(),
            format!("a/b={}", ca.display()),
            format!("reg.example={}", dir.join("missing.pem").display()),
        ] {
            assert!(
                resolve_registries(&[], std::slice::from_ref(&bad), dir.clone()).is_err(),
                "--registry-ca {bad:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn insecure_tcp_takes_loopback_only() {
        for ok in ["127.0.0.1:7000", "127.1.2.3:0", "[::1]:7000"] {
            assert!(
                resolve_insecure_tcp(Some(ok)).expect("ok").is_some(),
                "{ok}"
            );
        }
        for bad in [
            "0.0.0.0:7000",
            "10.0.0.1:7000",
            "[::]:7000",
            "localhost:7000",
        ] {
            assert!(resolve_insecure_tcp(Some(bad)).is_err(), "{bad}");
        }
        let err = resolve_insecure_tcp(Some("0.0.0.0:7000")).expect_err("refused");
        assert!(err.to_string().contains("loopback"), "{err}");
        let err = resolve_insecure_tcp(Some("localhost:7000")).expect_err("refused");
        assert!(err.to_string().contains("host names"), "{err}");
    }

    #[test]
    fn image_limits_parse() {
        assert_eq!(parse_size("16g"), Some(16 << 30));
        assert_eq!(parse_size("16GiB"), Some(16 << 30));
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1.5g"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999t"), None);
        assert!(resolve_image_max_size("0").is_err());
        assert_eq!(resolve_image_max_size("1m").expect("ok"), 1 << 20);
        let err = resolve_image_max_size("lots").expect_err("refused");
        assert!(err.to_string().contains("--image-max-size"), "{err}");
        assert_eq!(
            resolve_image_min_free("auto").expect("ok"),
            FreeReserve::Auto
        );
        assert_eq!(
            resolve_image_min_free("10%").expect("ok"),
            FreeReserve::Percent(10)
        );
        assert_eq!(
            resolve_image_min_free("2g").expect("ok"),
            FreeReserve::Bytes(2 << 30)
        );
        assert!(resolve_image_min_free("101%").is_err());
        assert!(resolve_image_min_free("some").is_err());
        assert_eq!(
            resolve_image_min_free_inodes("auto").expect("ok"),
            InodeReserve::Auto
        );
        assert_eq!(
            resolve_image_min_free_inodes("2%").expect("ok"),
            InodeReserve::Percent(2)
        );
        assert_eq!(
            resolve_image_min_free_inodes("20000").expect("ok"),
            InodeReserve::Count(20000)
        );
        assert_eq!(
            resolve_image_min_free_inodes("0").expect("ok"),
            InodeReserve::Count(0)
        );
        assert!(resolve_image_min_free_inodes("101%").is_err());
        assert!(resolve_image_min_free_inodes("2k").is_err());
    }

    #[test]
    fn tcp_needs_all_three_files() {
        let p = Path::new("/nonexistent");
        let err = resolve_tcp(Some("127.0.0.1:7000"), Some(p), None, None).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("missing: --tls-key, --tls-ca"), "{text}");
        let err = resolve_tcp(None, Some(p), None, None).expect_err("refused");
        assert!(err.to_string().contains("--tcp"), "{err}");
        assert!(resolve_tcp(None, None, None, None).expect("ok").is_none());
    }

    #[test]
    fn tls_files_must_exist_and_hold_pem() {
        let dir = std::env::temp_dir().join(format!("rsupd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("ok");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem").expect("ok");
        let missing = dir.join("missing.pem");
        let err = resolve_tcp(
            Some("127.0.0.1:7000"),
            Some(&missing),
            Some(&junk),
            Some(&junk),
        )
        .expect_err("refused");
        assert!(err.to_string().starts_with("--tls-cert "), "{err}");
        let err = read_pem("--tls-ca", &junk).expect_err("refused");
        assert!(err.to_string().contains("not a PEM file"), "{err}");
        std::fs::remove_dir_all(&dir).expect("ok");
    }
}
