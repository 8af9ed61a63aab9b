//! The errors of the networks service, typed: each says which step failed
//! on which network, link or address, with the kernel's error as its
//! source. They reach the API as [`crate::Error::Network`] (one gRPC code
//! for all: the system is not in a state to do it).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::netstack::NetError;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The netlink connection could not be made.
    #[error("netlink: {0}")]
    Netlink(#[source] NetError),
    #[error("bridge {bridge}: {source}")]
    Bridge {
        bridge: String,
        #[source]
        source: NetError,
    },
    #[error("deleting bridge {bridge}: {source}")]
    DeleteBridge {
        bridge: String,
        #[source]
        source: NetError,
    },
    /// A container's veth could not be attached.
    #[error("attaching to network {network}: {source}")]
    Attach {
        network: String,
        #[source]
        source: NetError,
    },
    #[error("creating the network namespace: {0}")]
    Netns(#[source] std::io::Error),
    #[error("netns task: {0}")]
    NetnsTask(String),
    #[error("opening {}: {source}", path.display())]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A published port could not be bound (taken, or not an address of
    /// this host).
    #[error("publishing {addr}: {source}")]
    Publish {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// `network rm` of a network that containers use.
    #[error("network {network} is in use by {}: remove them first", users.join(", "))]
    InUse { network: String, users: Vec<String> },
    /// `network rm` of a network on which a quarantined container holds
    /// an address (its bridge would be pulled from under it).
    #[error(
        "network {network} is in use by quarantined container {}: `rsupctl rm -f` it first",
        ids.join(", ")
    )]
    InUseQuarantined { network: String, ids: Vec<String> },
}
