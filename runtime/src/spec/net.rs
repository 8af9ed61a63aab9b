//! The network part of a container spec: the networks a container asks to
//! join ([`NetRequest`]), checked into a plan ([`NetPlan`]) that names the
//! networks in attachment order, and the attachments the runtime leased
//! for it ([`NetAttach`], stored in `config.json`).
//!
//! A plan is either empty (`--network none`: only `lo`, and then no
//! `--ip`, alias or published port) or one or more distinct networks, the
//! `default` network when none is named; aliases are DNS labels and a fixed
//! address is an IPv4 address (taken on the first network). Whether the
//! networks exist and the address is free is the lease's business (the
//! runtime's networks), not the plan's.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::Error;
use crate::names::{NetworkName, is_dns_label, quote};

/// The network a container joins when its request names none.
pub const DEFAULT_NETWORK: &str = "default";

/// The container side of a network request.
#[derive(Debug, Clone, Default)]
pub struct NetRequest {
    /// Network names; empty = the default network; ["none"] = only `lo`.
    pub networks: Vec<NetworkName>,
    pub aliases: Vec<String>,
    /// Fixed address on the first network ("" = allocate).
    pub ip: String,
    /// `[IP:]HOSTPORT:PORT[/tcp]`.
    pub ports: Vec<String>,
}

/// A network request, checked: what the create leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPlan {
    /// Networks to attach to, in order (`eth0`, `eth1`, ...), none twice;
    /// empty: only `lo`.
    pub networks: Vec<NetworkName>,
    /// Extra DNS names on every network.
    pub aliases: Vec<String>,
    /// Fixed address on the first network.
    pub ip: Option<Ipv4Addr>,
}

/// How a container is attached to one network (part of its spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAttach {
    pub network: NetworkName,
    /// `eth0`, `eth1`, ... inside the container.
    pub ifname: String,
    /// The veth end on the host.
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Extra DNS names on this network (the container's name is always one).
    pub aliases: Vec<String>,
}

impl NetRequest {
    /// Checks the request (not the published ports: see
    /// [`super::PortMap::parse`]) into the networks to lease.
    pub fn validate(&self) -> Result<NetPlan, Error> {
        let networks: Vec<NetworkName> = if self.networks.is_empty() {
            vec![NetworkName::parse(DEFAULT_NETWORK)?]
        } else {
            self.networks.clone()
        };
        if networks.iter().any(|n| n == "none") {
            if networks.len() > 1 {
                return Err(invalid(
                    "networks",
                    "\"none\" cannot be combined with other networks",
                ));
            }
            if !self.ip.is_empty() || !self.aliases.is_empty() {
                return Err(invalid(
                    "networks",
                    "--ip and --network-alias need a network",
                ));
            }
            return Ok(NetPlan::default());
        }
        for a in &self.aliases {
            if !is_dns_label(a) {
                return Err(invalid(
                    "aliases",
                    format!("{} is not a DNS label", quote(a)),
                ));
            }
        }
        let ip = if self.ip.is_empty() {
            None
        } else {
            Some(self.ip.parse::<Ipv4Addr>().map_err(|_| {
                invalid("ip", format!("{} is not an IPv4 address", quote(&self.ip)))
            })?)
        };
        for (i, name) in networks.iter().enumerate() {
            if networks[..i].contains(name) {
                return Err(invalid("networks", format!("{name} is given twice")));
            }
        }
        Ok(NetPlan {
            networks,
            aliases: self.aliases.clone(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::invalid_field;

    fn names(ns: &[&str]) -> Vec<NetworkName> {
        ns.iter()
            .map(|n| NetworkName::parse(n).expect("name"))
            .collect()
    }

    #[test]
    fn no_network_named_is_the_default_one() {
        let plan = NetRequest::default().validate().expect("valid");
        assert_eq!(plan.networks, names(&[DEFAULT_NETWORK]));
        assert_eq!(plan.ip, None);
        let plan = NetRequest {
            networks: names(&["front", "back"]),
            aliases: vec!["db".into()],
            ip: "10.89.0.7".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(plan.networks, names(&["front", "back"]));
        assert_eq!(plan.ip, Some(Ipv4Addr::new(10, 89, 0, 7)));
    }

    #[test]
    fn none_is_only_lo() {
        let none = NetRequest {
            networks: names(&["none"]),
            ..Default::default()
        };
        assert_eq!(none.validate().expect("valid"), NetPlan::default());
        let field = |f: &dyn Fn(&mut NetRequest)| {
            let mut r = none.clone();
            f(&mut r);
            invalid_field(r.validate())
        };
        assert_eq!(field(&|r| r.networks = names(&["none", "a"])), "networks");
        assert_eq!(field(&|r| r.ip = "10.0.0.2".into()), "networks");
        assert_eq!(field(&|r| r.aliases = vec!["x".into()]), "networks");
    }

    #[test]
    fn bad_requests_name_their_field() {
        let field = |r: NetRequest| invalid_field(r.validate());
        assert_eq!(
            field(NetRequest {
                aliases: vec!["Not_A_Label".into()],
                ..Default::default()
            }),
            "aliases"
        );
        assert_eq!(
            field(NetRequest {
                ip: "10.0.0.256".into(),
                ..Default::default()
            }),
            "ip"
        );
        assert_eq!(
            field(NetRequest {
                networks: names(&["a", "b", "a"]),
                ..Default::default()
            }),
            "networks"
        );
    }
}
