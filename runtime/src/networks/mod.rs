//! Named networks and container attachments: the runtime side of
//! [`crate::netstack`].
//!
//! * A network is a Linux bridge (`<prefix>b<hash>`) with the gateway
//!   address and a fixed MAC, an IPAM pool, and an embedded DNS server on
//!   `gateway:53` that answers the names of that network's containers only.
//!   Persisted as `networks/<name>.json` (spec + pool with its leases).
//! * A container's addresses are leased at create and released at remove:
//!   it keeps them across its own restarts and restarts of rsupd.
//! * Each attached container has a **persistent network namespace**, bound to
//!   `containers/<id>/netns` (a pod sandbox, as Kubernetes does): made once
//!   with its veths (`<prefix>v<hash><n>`, `eth0`, `eth1`, ... inside), it
//!   outlives the container's processes, so a restart needs no network work
//!   and the address never changes. The init joins it instead of making a new
//!   one.
//! * DNS records follow the state: a container's names resolve while it is
//!   running or waiting for its policy restart, and disappear at once when it
//!   is stopped by a user, exits for good, or is removed.
//! * At start rsupd re-creates what is missing (bridges, DNS servers, a
//!   sandbox lost in a reboot), sweeps links with its prefix that belong to
//!   no known network or container, and reconciles the leases with the
//!   containers (`reconcile_pool`): a lease nobody holds is released, a
//!   container's missing lease is taken again if its address is free; each
//!   fix is logged and published as a `reconcile` event.
//! * A create takes its leases through an undo guard
//!   ([`crate::rollback::Rollback`]): a create that fails after the lease
//!   (name taken, a write refused, a cancelled request) gives them back.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tracing::{info, warn};

use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::lifecycle::{Event, EventBus, EventKind};
use crate::lock::lock;
use crate::names::{NetworkName, quote};
use crate::netstack::{DnsServer, NetConfig, Netlink, Pool, Records, Subnet};
use crate::spec::net::NetPlan;
pub use crate::spec::net::{DEFAULT_NETWORK, NetAttach, NetRequest};
use crate::store;
pub use error::NetworkError;
pub use network::{Holder, NetworkInfo, NetworkRequest, NetworkSpec};
use network::{Network, NetworkFile};
use reconcile::{LeaseFix, reconcile_pool};

pub mod error;
mod isolation;
pub mod network;
pub mod ports;
pub mod reconcile;
pub mod sandbox;

/// The networks service: owns the networks (bridges, pools, DNS servers),
/// the netlink connection and the containers' sandboxes and published
/// ports. It knows containers only by id and by their attachments
/// ([`NetAttach`]); what it needs to know of them comes in as [`Holder`]s.
#[derive(Clone)]
pub struct Networks {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: PathBuf,
    config: NetConfig,
    list: Mutex<Vec<Arc<Network>>>,
    netlink: tokio::sync::OnceCell<Netlink>,
    events: Arc<EventBus>,
    tracker: TaskTracker,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// The common start of the host ends of container `id`'s veths.
fn veth_prefix(prefix: &str, id: &str) -> String {
    format!("{prefix}v{}", &hash8(id)[..8])
}

/// FNV-1a: stable short names for links.
fn hash8(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

impl Networks {
    /// The service over the networks persisted under `state_dir`; nothing
    /// is loaded before [`Networks::open`].
    pub fn new(
        state_dir: PathBuf,
        config: NetConfig,
        events: Arc<EventBus>,
        tracker: TaskTracker,
    ) -> Networks {
        Networks {
            inner: Arc::new(Inner {
                state_dir,
                config,
                list: Mutex::new(Vec::new()),
                netlink: tokio::sync::OnceCell::new(),
                events,
                tracker,
            }),
        }
    }

    /// The prefix of every link rsupd makes.
    pub fn net_prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    fn network_path(&self, name: &NetworkName) -> PathBuf {
        self.inner
            .state_dir
            .join("networks")
            .join(format!("{name}.json"))
    }

    fn persist_network(&self, n: &Network) -> Result<(), Error> {
        // The pool stays locked until the file is written: writes reach the
        // disk in the order of the changes.
        let pool = lock(&n.pool);
        let f = NetworkFile {
            version: 1,
            spec: n.spec.clone(),
            pool: pool.clone(),
            created_at: n.created_at,
        };
        store::write_json(&self.network_path(&n.spec.name), &f)?;
        Ok(())
    }

    fn find_network(&self, name: &NetworkName) -> Option<Arc<Network>> {
        lock(&self.inner.list)
            .iter()
            .find(|n| n.spec.name == *name)
            .cloned()
    }

    async fn netlink(&self) -> Result<&Netlink, Error> {
        self.inner
            .netlink
            .get_or_try_init(|| async { Netlink::connect().await })
            .await
            .map_err(|e| NetworkError::Netlink(e).into())
    }

    /// Loads persisted networks, makes sure `default` exists, and brings up
    /// bridges and DNS servers (at start).
    pub async fn open(&self) -> Result<(), Error> {
        let dir = self.inner.state_dir.join("networks");
        let mut list = Vec::new();
        for (p, f) in store::read_json_dir::<NetworkFile>(&dir)? {
            match f {
                Ok(f) => list.push(Arc::new(Network {
                    spec: f.spec,
                    created_at: f.created_at,
                    pool: Mutex::new(f.pool),
                    records: Arc::new(RwLock::new(Records::default())),
                    views: Default::default(),
                    dns: tokio::sync::Mutex::new(None),
                    up: tokio::sync::Mutex::new(false),
                })),
                Err(e) => warn!(path = %p.display(), error = %e, "skipping an unreadable network"),
            }
        }
        list.sort_by_key(|n| n.created_at);
        *lock(&self.inner.list) = list;
        let default = NetworkName::parse(DEFAULT_NETWORK)?;
        if self.find_network(&default).is_none() {
            let subnet = self.inner.config.default_subnet.to_string();
            self.create(NetworkRequest {
                name: default,
                subnet,
                gateway: String::new(),
                internal: false,
                labels: Default::default(),
            })
            .await?;
        }
        let nets = lock(&self.inner.list).clone();
        for n in &nets {
            if let Err(e) = self.bring_up(n).await {
                warn!(network = %n.spec.name, error = %e, "cannot bring the network up");
            }
        }
        self.install_isolation();
        Ok(())
    }

    /// Bridge with its address, and the DNS server.
    async fn bring_up(&self, n: &Network) -> Result<(), Error> {
        let mut up = n.up.lock().await;
        if *up {
            return Ok(());
        }
        let nl = self.netlink().await?;
        nl.ensure_bridge(&n.spec.bridge, n.spec.gateway, n.spec.subnet.prefix)
            .await
            .map_err(|source| NetworkError::Bridge {
                bridge: n.spec.bridge.clone(),
                source,
            })?;
        *up = true;
        let mut dns = n.dns.lock().await;
        if dns.is_none() {
            let addr = SocketAddr::V4(SocketAddrV4::new(
                n.spec.gateway,
                self.inner.config.dns_port,
            ));
            match DnsServer::start_for(
                addr,
                n.records.clone(),
                self.inner.config.dns_upstream.clone(),
                Some(n.spec.subnet.clone()),
                n.views.clone(),
            )
            .await
            {
                Ok(s) => *dns = Some(s),
                Err(e) => {
                    warn!(network = %n.spec.name, error = %e, "cannot start the network's DNS server")
                }
            }
        }
        Ok(())
    }

    /// Creates a network: validates, persists, brings up its bridge and DNS.
    pub async fn create(&self, req: NetworkRequest) -> Result<NetworkInfo, Error> {
        if req.name == "none" || req.name == "host" {
            return Err(invalid(
                "name",
                format!(
                    "{:?} is not a usable network name (a DNS label, not none/host)",
                    req.name.as_str()
                ),
            ));
        }
        let existing: Vec<Subnet> = lock(&self.inner.list)
            .iter()
            .map(|n| n.spec.subnet.clone())
            .collect();
        let subnet: Subnet = if req.subnet.is_empty() {
            (0..=255u8)
                .map(|i| Subnet {
                    addr: Ipv4Addr::new(10, 89, i, 0),
                    prefix: 24,
                })
                .find(|s| !existing.iter().any(|e| e.overlaps(s)))
                .ok_or_else(|| {
                    Error::ResourceExhausted(
                        "no free /24 left in 10.89.0.0/16; give --subnet".into(),
                    )
                })?
        } else {
            req.subnet
                .parse()
                .map_err(|e| invalid("subnet", format!("{}: {e}", quote(&req.subnet))))?
        };
        if let Some(o) = existing.iter().find(|e| e.overlaps(&subnet)) {
            return Err(invalid(
                "subnet",
                format!("{subnet} overlaps {o} of another network"),
            ));
        }
        let gateway = if req.gateway.is_empty() {
            None
        } else {
            Some(req.gateway.parse::<Ipv4Addr>().map_err(|_| {
                invalid(
                    "gateway",
                    format!("{} is not an IPv4 address", quote(&req.gateway)),
                )
            })?)
        };
        let pool =
            Pool::new(subnet.clone(), gateway).map_err(|e| invalid("gateway", e.to_string()))?;
        let labels = crate::names::labels(req.labels.clone())?;
        let n = Arc::new(Network {
            spec: NetworkSpec {
                bridge: format!("{}b{}", self.net_prefix(), hash8(req.name.as_str())),
                name: req.name.clone(),
                subnet,
                gateway: pool.gateway(),
                internal: req.internal,
                labels,
            },
            created_at: SystemTime::now(),
            pool: Mutex::new(pool),
            records: Arc::new(RwLock::new(Records::default())),
            views: Default::default(),
            dns: tokio::sync::Mutex::new(None),
            up: tokio::sync::Mutex::new(false),
        });
        {
            let mut list = lock(&self.inner.list);
            if list.iter().any(|x| x.spec.name == req.name) {
                return Err(Error::AlreadyExists(format!(
                    "a network named {} already exists",
                    req.name
                )));
            }
            list.push(n.clone());
        }
        let made = async {
            self.persist_network(&n)?;
            self.bring_up(&n).await
        }
        .await;
        if let Err(e) = made {
            lock(&self.inner.list).retain(|x| !Arc::ptr_eq(x, &n));
            let _ = std::fs::remove_file(self.network_path(&req.name));
            if let Ok(nl) = self.netlink().await {
                let _ = nl.delete_link(&n.spec.bridge).await;
            }
            return Err(e);
        }
        info!(network = %req.name, subnet = %n.spec.subnet, bridge = %n.spec.bridge, "network created");
        if n.spec.internal {
            self.install_isolation();
        }
        Ok(network_info(&n, &[]))
    }

    /// Removes a network no container uses: none of `holders`, and none of
    /// the `quarantined` containers (whose attachments may be unknown)
    /// holds an address on it.
    pub async fn remove(
        &self,
        name: &NetworkName,
        holders: &[Holder<'_>],
        quarantined: &[String],
    ) -> Result<(), Error> {
        let n = self
            .find_network(name)
            .ok_or_else(|| Error::NotFound(format!("no such network: {name}")))?;
        let users: Vec<String> = holders
            .iter()
            .filter(|h| h.attachments.iter().any(|a| a.network == *name))
            .map(|h| h.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                network: name.to_string(),
                users,
            }
            .into());
        }
        refuse_quarantined_on(&n, quarantined)?;
        lock(&self.inner.list).retain(|x| !Arc::ptr_eq(x, &n));
        if let Some(dns) = n.dns.lock().await.take() {
            dns.stop().await;
        }
        let nl = self.netlink().await?;
        nl.delete_link(&n.spec.bridge)
            .await
            .map_err(|source| NetworkError::DeleteBridge {
                bridge: n.spec.bridge.clone(),
                source,
            })?;
        let p = self.network_path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Store(store::io_err("remove", &p)(e))),
        }
    }

    /// Every network, its leases named after `holders`.
    pub fn list(&self, holders: &[Holder<'_>]) -> Vec<NetworkInfo> {
        let list = lock(&self.inner.list).clone();
        list.iter().map(|n| network_info(n, holders)).collect()
    }

    pub fn inspect(
        &self,
        name: &NetworkName,
        holders: &[Holder<'_>],
    ) -> Result<NetworkInfo, Error> {
        let n = self
            .find_network(name)
            .ok_or_else(|| Error::NotFound(format!("no such network: {name}")))?;
        Ok(network_info(&n, holders))
    }

    /// Leases addresses for a new container (`id`) on the networks of
    /// `plan` (checked by [`NetRequest::validate`]); on error nothing stays
    /// leased.
    pub fn lease(&self, id: &str, plan: &NetPlan) -> Result<Vec<NetAttach>, Error> {
        self.lease_from(id, plan, 0)
    }

    /// [`Networks::lease`] for attachments numbered from `first` (`eth<first>`,
    /// ...): a container joining one more network (`network connect`).
    pub fn lease_from(
        &self,
        id: &str,
        plan: &NetPlan,
        first: usize,
    ) -> Result<Vec<NetAttach>, Error> {
        let fixed = plan.ip;
        let mut nets = Vec::new();
        for name in &plan.networks {
            nets.push(
                self.find_network(name)
                    .ok_or_else(|| Error::NotFound(format!("no such network: {name}")))?,
            );
        }
        let mut out = Vec::new();
        let release = |done: &[Arc<Network>]| {
            for n in done {
                lock(&n.pool).release_owner(id);
            }
        };
        for (i, n) in nets.iter().enumerate() {
            let leased = {
                let mut pool = lock(&n.pool);
                match (i, fixed) {
                    (0, Some(ip)) => pool.reserve(ip, id).map(|()| ip),
                    _ => pool.allocate(id),
                }
            };
            let ip = match leased {
                Ok(ip) => ip,
                Err(e) => {
                    release(&nets[..i]);
                    return Err(match e {
                        crate::netstack::IpamError::Exhausted(s) => Error::ResourceExhausted(
                            format!("network {}: no free address left in {s}", n.spec.name),
                        ),
                        other => invalid("ip", other.to_string()),
                    });
                }
            };
            let k = first + i;
            out.push(NetAttach {
                network: n.spec.name.clone(),
                ifname: format!("eth{k}"),
                host_ifname: format!("{}{k}", veth_prefix(self.net_prefix(), id)),
                ip,
                prefix: n.spec.subnet.prefix,
                gateway: n.spec.gateway,
                aliases: plan.aliases.clone(),
            });
        }
        for n in &nets {
            if let Err(e) = self.persist_network(n) {
                release(&nets);
                for n in &nets {
                    let _ = self.persist_network(n);
                }
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Releases the leases of container `id` on the networks of
    /// `attachments` and withdraws its names; returns what could not be
    /// persisted (the pool in memory is released either way, and the file
    /// catches up with the network's next write or the reconcile at start).
    pub fn release(&self, id: &str, attachments: &[NetAttach]) -> Vec<String> {
        let nets = attachments
            .iter()
            .filter_map(|a| self.find_network(&a.network));
        self.release_on(id, nets)
    }

    /// Releases every lease `id` holds, on every network, and its DNS
    /// records (a container whose attachments are not known); returns the
    /// networks whose release could not be saved.
    pub fn release_everywhere(&self, id: &str) -> Vec<String> {
        let nets = lock(&self.inner.list).clone();
        self.release_on(id, nets)
    }

    /// Withdraws `id`'s names from `nets` and releases its leases there,
    /// persisting each network whose pool changed.
    fn release_on(&self, id: &str, nets: impl IntoIterator<Item = Arc<Network>>) -> Vec<String> {
        let mut failures = Vec::new();
        for n in nets {
            n.records
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            n.views
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, v| v.owner != id);
            let freed = lock(&n.pool).release_owner(id);
            if !freed.is_empty()
                && let Err(e) = self.persist_network(&n)
            {
                warn!(network = %n.spec.name, error = %e, "cannot persist the released lease");
                failures.push(format!("network {}: {e}", n.spec.name));
            }
        }
        failures
    }

    /// Publishes (`live`) or withdraws container `id`'s DNS names (`name`
    /// and each attachment's aliases) on the networks of `attachments`.
    pub fn set_names(&self, id: &str, name: &str, attachments: &[NetAttach], live: bool) {
        for a in attachments {
            let Some(n) = self.find_network(&a.network) else {
                continue;
            };
            {
                let mut r = n.records.write().unwrap_or_else(|p| p.into_inner());
                if live {
                    let mut names = vec![name.to_string()];
                    names.extend(a.aliases.iter().cloned());
                    r.set(id, &names, a.ip);
                } else {
                    r.remove(id);
                }
            }
            // On several networks: it sees the others' names too.
            let others: Vec<_> = attachments
                .iter()
                .filter(|b| b.network != a.network)
                .filter_map(|b| self.find_network(&b.network))
                .map(|m| m.records.clone())
                .collect();
            let mut v = n.views.write().unwrap_or_else(|p| p.into_inner());
            v.retain(|_, v| v.owner != id);
            if live && !others.is_empty() {
                v.insert(
                    a.ip,
                    crate::netstack::View {
                        owner: id.to_string(),
                        tables: others,
                    },
                );
            }
        }
    }

    /// Deletes links with our prefix that no network owns, that are not
    /// one of `holders`' veths and that `keep` does not claim (the veths of
    /// a container whose attachments are not known).
    pub async fn sweep_links(&self, holders: &[Holder<'_>], keep: &dyn Fn(&str) -> bool) {
        let Ok(nl) = self.netlink().await else { return };
        let prefix = self.net_prefix().to_string();
        let mut known: Vec<String> = lock(&self.inner.list)
            .iter()
            .map(|n| n.spec.bridge.clone())
            .collect();
        known.extend(
            holders
                .iter()
                .flat_map(|h| h.attachments.iter().map(|a| a.host_ifname.clone())),
        );
        let Ok(links) = nl.links_with_prefix(&prefix).await else {
            return;
        };
        for l in links {
            let ours = l.len() > prefix.len() && matches!(l.as_bytes()[prefix.len()], b'b' | b'v');
            if ours && !known.contains(&l) && !keep(&l) {
                info!(link = %l, "removing a leftover link");
                let _ = nl.delete_link(&l).await;
            }
        }
    }

    /// At start: brings every network's leases in line with the loaded
    /// containers, `holders` (see `reconcile_pool`), keeping the
    /// addresses of ids that `on_disk` names (a record that could not be
    /// loaded is still somebody's); reports each fix in the log and as a
    /// `reconcile` event, and persists the networks it changed.
    pub fn reconcile(
        &self,
        holders: &[Holder<'_>],
        on_disk: &HashSet<String>,
    ) -> Vec<(NetworkName, LeaseFix)> {
        let known: HashSet<&str> = holders.iter().map(|h| h.id).collect();
        let mut all = Vec::new();
        for n in lock(&self.inner.list).clone() {
            let wanted: BTreeMap<Ipv4Addr, &str> = holders
                .iter()
                .flat_map(|h| {
                    h.attachments
                        .iter()
                        .filter(|a| a.network == n.spec.name)
                        .map(|a| (a.ip, h.id))
                })
                .collect();
            let fixes = reconcile_pool(&mut lock(&n.pool), &wanted, &|owner| {
                known.contains(owner) || on_disk.contains(owner)
            });
            if fixes.is_empty() {
                continue;
            }
            for f in &fixes {
                let name = |id: &str| {
                    holders
                        .iter()
                        .find(|h| h.id == id)
                        .map_or_else(|| id.to_string(), |h| h.name.to_string())
                };
                let (action, ip, owner) = match f {
                    LeaseFix::Released { ip, owner } => ("released", ip, owner.clone()),
                    LeaseFix::Restored { ip, owner } => ("restored", ip, name(owner)),
                    LeaseFix::Conflict { ip, owner, .. } => ("conflict", ip, name(owner)),
                };
                warn!(network = %n.spec.name, fix = %f, "reconciled a lease");
                self.inner.events.publish(Event {
                    time: SystemTime::now(),
                    kind: EventKind::Reconcile,
                    subject_type: "network",
                    subject: n.spec.name.to_string(),
                    id: String::new(),
                    attributes: [
                        ("action".to_string(), action.to_string()),
                        ("ip".to_string(), ip.to_string()),
                        ("owner".to_string(), owner),
                        ("detail".to_string(), f.to_string()),
                    ]
                    .into_iter()
                    .collect(),
                });
            }
            if let Err(e) = self.persist_network(&n) {
                warn!(network = %n.spec.name, error = %e, "cannot persist the reconciled leases");
            }
            all.extend(fixes.into_iter().map(|f| (n.spec.name.clone(), f)));
        }
        all
    }

    /// Stops the DNS servers (shutdown). Bridges and sandboxes stay.
    pub async fn stop_dns(&self) {
        let nets = lock(&self.inner.list).clone();
        for n in nets {
            if let Some(d) = n.dns.lock().await.take() {
                d.stop().await;
            }
        }
    }
}

/// What `network inspect` shows of `n`, its leases named after `holders`.
fn network_info(n: &Network, holders: &[Holder<'_>]) -> NetworkInfo {
    let leases: Vec<(String, Ipv4Addr)> = lock(&n.pool)
        .leases()
        .map(|(ip, owner)| {
            let name = holders
                .iter()
                .find(|h| h.id == owner && !h.name.is_empty())
                .map_or_else(|| owner.to_string(), |h| h.name.to_string());
            (name, ip)
        })
        .collect();
    let attached = holders
        .iter()
        .filter(|h| h.attachments.iter().any(|a| a.network == n.spec.name))
        .count();
    NetworkInfo {
        spec: n.spec.clone(),
        created_at: n.created_at,
        containers: leases,
        attached,
        dns: n
            .dns
            .try_lock()
            .ok()
            .and_then(|d| d.as_ref().map(|s| s.local_addr())),
    }
}

/// FAILED_PRECONDITION when one of the `quarantined` containers holds an
/// address on network `n` (removing it would pull the bridge from under it).
fn refuse_quarantined_on(n: &Network, quarantined: &[String]) -> Result<(), Error> {
    let ids: Vec<String> = lock(&n.pool)
        .leases()
        .filter(|(_, owner)| quarantined.iter().any(|id| id == owner))
        .map(|(_, owner)| owner.chars().take(12).collect())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    Err(NetworkError::InUseQuarantined {
        network: n.spec.name.to_string(),
        ids,
    }
    .into())
}
