//! Container networking: one Linux bridge per network, one veth pair per
//! container attachment, an address pool and an embedded DNS server.
//!
//! [`ipam`] is the pure IPv4 allocator of a network: a [`Subnet`], its
//! gateway and the leases of containers. It does no I/O, keeps its invariants
//! (no lease on the network, broadcast or gateway address; one owner per
//! address; freed addresses reused last) and is persisted by the caller.
//!
//! [`link`] drives the kernel over rtnetlink (`NETLINK_ROUTE`), never by
//! running `ip`. A [`Netlink`] is one netlink socket, bound to the network
//! namespace of the thread that opened it. The bridge gets a fixed MAC address
//! derived from its name, so enslaving or removing ports never changes it (and
//! containers' ARP caches stay valid). A container attachment is made from the
//! host side (create the veth pair, enslave the host end, move the peer into
//! the container's netns), then finished inside that netns by a short-lived
//! std thread that `setns`es there and opens its own netlink socket (see
//! `netns`): tokio workers never change namespace. A failed attachment
//! deletes the host end, which takes the peer with it: no half-made veth.
//!
//! [`dns`] answers A and PTR queries for the containers of one network from
//! [`Records`], a plain name table the caller updates in place (changes are
//! visible to the next query; every answer has TTL 0), on the network's
//! gateway address over UDP and TCP, built on hickory-server. Other names go
//! to the upstream servers the caller configures, or get NXDOMAIN; it never
//! reads the host's resolver configuration by itself.

pub mod attach;
pub mod dns;
pub mod ipam;
pub mod link;
mod netns;

use std::net::SocketAddr;

pub use attach::Attachment;
pub use dns::{DnsServer, Records, View, Views};
pub use ipam::{IpamError, Pool, Subnet};
pub use link::{Netlink, bridge_mac};

/// Network settings of the daemon.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Prefix of every link rsupd makes (bridges `<prefix>b…`, veths
    /// `<prefix>v…`), 1-4 characters; leftovers with it are swept at start.
    pub prefix: String,
    /// Subnet of the `default` network when it is first made.
    pub default_subnet: Subnet,
    /// Port of the embedded DNS servers (53).
    pub dns_port: u16,
    /// Where names unknown to a network go; none: NXDOMAIN.
    pub dns_upstream: Vec<std::net::SocketAddr>,
}

/// Errors of the network layer, each with the link, namespace or address it
/// concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An interface name that the kernel would refuse (empty, longer than 15
    /// bytes, or with '/', ':', NUL or whitespace).
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("opening a netlink socket in {netns}: {source}")]
    Socket {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed; `op` says what was asked (with the address,
    /// if any), `link` on which interface.
    #[error("{op} on {link} in {netns}: {source}")]
    Netlink {
        op: String,
        link: String,
        netns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("no link {link} in {netns}")]
    NoSuchLink { link: String, netns: String },
    #[error("link {link} in {netns} is a {kind}, not a bridge")]
    NotABridge {
        link: String,
        netns: String,
        kind: String,
    },
    #[error("entering {netns}: {source}")]
    Setns {
        netns: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// The helper thread working inside `netns` could not be started or died.
    #[error("worker thread in {netns}: {reason}")]
    Worker { netns: String, reason: String },
    /// A create failed (`cause`) and undoing it failed too (`cleanup`).
    #[error("{cause}; cleanup failed too: {cleanup}")]
    Cleanup {
        #[source]
        cause: Box<NetError>,
        cleanup: Box<NetError>,
    },
    #[error("dns server on {addr}/{proto}: {source}")]
    DnsBind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

impl NetError {
    /// The errno the kernel answered a failed netlink request with (positive,
    /// e.g. `libc::EEXIST`), if this is such an error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { source, .. } => link::errno_of(source),
            NetError::Cleanup { cause, .. } => cause.errno(),
            _ => None,
        }
    }
}
