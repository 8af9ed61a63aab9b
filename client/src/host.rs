//! [`Host`]: where rsupd listens, written the way Docker's `-H` takes it:
//! `unix:///run/rsup/rsupd.sock` or `tcp://HOST:PORT` (an IPv6 address in
//! brackets, `tcp://[::1]:7443`). [`TlsFiles`]: the three PEM files of a
//! mutual-TLS connection over TCP.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The address of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address; `host` is a name, an IPv4 address or a bracketless
    /// IPv6 address.
    Tcp {
        /// Name or address (no brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

impl Host {
    /// `host:port` as it goes into a URI (IPv6 in brackets).
    pub fn authority(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{}", path.display()),
            Host::Tcp { host, port } => write!(f, "tcp://{}", Host::authority(host, *port)),
        }
    }
}

/// Why a `-H` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected unix:///PATH or tcp://HOST:PORT")]
pub struct HostError(String);

impl FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Host, HostError> {
        let bad = || HostError(s.to_owned());
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        let rest = s.strip_prefix("tcp://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':').ok_or_else(bad)?)
        } else {
            // An IPv6 address needs its brackets: `::1:7443` is ambiguous.
            let (host, port) = rest.split_once(':').ok_or_else(bad)?;
            (host, port)
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
            && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
        if !valid_host || port == 0 {
            return Err(bad());
        }
        Ok(Host::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

/// The files of a TLS connection: the CA that signed rsupd's certificate,
/// and this client's certificate and key (all PEM). rsupd's `--tcp` requires
/// the client certificate; without one the handshake is refused.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate(s) that rsupd's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate, signed by the CA rsupd trusts (`--tls-ca`).
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name to verify rsupd's certificate against instead of the host part
    /// of the address.
    pub server_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Host {
        Host::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn parses_docker_style_hosts() {
        assert_eq!(
            "unix:///run/rsup/rsupd.sock".parse(),
            Ok(Host::Unix("/run/rsup/rsupd.sock".into()))
        );
        assert_eq!("tcp://127.0.0.1:7443".parse(), Ok(tcp("127.0.0.1", 7443)));
        assert_eq!(
            "tcp://rsup.example:7443/".parse(),
            Ok(tcp("rsup.example", 7443))
        );
        assert_eq!("tcp://[::1]:7443".parse(), Ok(tcp("::1", 7443)));
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "/run/rsup/rsupd.sock",
            "unix://relative.sock",
            "tcp://127.0.0.1",
            "tcp://:7443",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:99999",
            "tcp://::1:7443",
            "tcp://[::1]7443",
            "http://127.0.0.1:7443",
            "tcp://a b:1",
        ] {
            assert!(bad.parse::<Host>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn displays_as_parsed() {
        for text in ["unix:///x.sock", "tcp://127.0.0.1:1", "tcp://[::1]:2"] {
            let host: Host = text.parse().expect("valid");
            assert_eq!(host.to_string(), text);
        }
    }
}
