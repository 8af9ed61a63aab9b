//! The data of the networks service: a network as configured and as it
//! runs, its file, what `network create` asks and `network inspect` shows,
//! and a container as the networks see it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::names::NetworkName;
use crate::netstack::{DnsServer, Pool, Records, Subnet};
use crate::spec::net::NetAttach;

/// A container as the networks see it: its id, its name and its
/// attachments.
#[derive(Debug, Clone)]
pub struct Holder<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// A copy: a running container's attachments may change (`connect`).
    pub attachments: Vec<NetAttach>,
}

/// A network as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: NetworkName,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub internal: bool,
    pub bridge: String,
    /// Metadata given at create (Docker's network labels).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct NetworkFile {
    pub(crate) version: u32,
    pub(crate) spec: NetworkSpec,
    pub(crate) pool: Pool,
    pub(crate) created_at: SystemTime,
}

/// A network of the runtime.
pub(crate) struct Network {
    pub spec: NetworkSpec,
    pub created_at: SystemTime,
    pub pool: Mutex<Pool>,
    pub records: Arc<RwLock<Records>>,
    /// What its DNS server's clients on several networks also see.
    pub views: crate::netstack::Views,
    pub dns: tokio::sync::Mutex<Option<DnsServer>>,
    /// Held while the bridge is set up; true once it is.
    pub up: tokio::sync::Mutex<bool>,
}

/// A network request (its name checked, the rest not yet validated).
#[derive(Debug, Clone)]
pub struct NetworkRequest {
    pub name: NetworkName,
    /// "" = pick a free /24 in 10.89.0.0/16.
    pub subnet: String,
    /// "" = the subnet's first host.
    pub gateway: String,
    pub internal: bool,
    /// Checked by [`crate::names::labels`] at create.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What `network inspect` shows.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub spec: NetworkSpec,
    pub created_at: SystemTime,
    /// (container name, address) of every lease.
    pub containers: Vec<(String, Ipv4Addr)>,
    /// Containers attached to the network (by their spec); equal to the
    /// number of leases unless something leaked.
    pub attached: usize,
    pub dns: Option<SocketAddr>,
}
