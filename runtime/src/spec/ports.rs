//! The ports part of a container spec: a published port as the user writes
//! it (Docker's `[IP:]HOSTPORT:PORT[/tcp]`), parsed into a [`PortMap`]:
//! TCP only, both ports in 1-65535, the host address an IP (all addresses
//! when left out). Parsing binds nothing: rsupd's proxy listens while the
//! container runs.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::names::quote;

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMap {
    /// Parses Docker's `[IP:]HOSTPORT:PORT[/tcp]`.
    pub fn parse(s: &str) -> Result<PortMap, Error> {
        let bad = |why: &str| Error::InvalidArgument {
            field: "ports",
            reason: format!("{}: {why}; use [IP:]HOSTPORT:PORT[/tcp]", quote(s)),
        };
        let body = match s.rsplit_once('/') {
            Some((b, "tcp")) => b,
            Some((_, p)) => {
                return Err(bad(&format!(
                    "protocol {} is not supported (tcp only)",
                    quote(p)
                )));
            }
            None => s,
        };
        let parts: Vec<&str> = body.rsplitn(3, ':').collect();
        let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0);
        let (ip, host, ctr) = match parts.as_slice() {
            [c, h] => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), *h, *c),
            [c, h, ip] => (
                ip.trim_matches(|c| c == '[' || c == ']')
                    .parse()
                    .map_err(|_| bad("not an IP address"))?,
                *h,
                *c,
            ),
            _ => return Err(bad("missing a port")),
        };
        Ok(PortMap {
            host_ip: ip,
            host_port: port(host).ok_or_else(|| bad("bad host port"))?,
            container_port: port(ctr).ok_or_else(|| bad("bad container port"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p = PortMap::parse("8080:80").expect("ok");
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port),
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080, 80)
        );
        let p = PortMap::parse("127.0.0.1:8080:80/tcp").expect("ok");
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        for bad in [
            "80",
            "0:80",
            "x:80",
            "8080:80/udp",
            "1.2.3:8080:80",
            "70000:80",
        ] {
            assert!(PortMap::parse(bad).is_err(), "{bad}");
        }
    }
}
