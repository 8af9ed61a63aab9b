//! Bridges and veth pairs over rtnetlink (`NETLINK_ROUTE`).
//!
//! A [`Netlink`] owns one netlink socket and the task that drives it; the
//! socket is bound to the network namespace of the thread that opened it
//! (the host's, for the daemon). Invariants kept here:
//! - a bridge made by [`Netlink::ensure_bridge`] carries a fixed, locally
//!   administered unicast MAC derived from its name ([`bridge_mac`]): the
//!   kernel would otherwise give the bridge the lowest MAC of its ports, and
//!   it would change as containers come and go;
//! - [`Netlink::attach`] either completes or deletes the host end of the veth
//!   pair it made (deleting one end of a veth deletes the other, wherever it
//!   is), and reports a cleanup failure next to the cause;
//! - work inside a container's netns happens on a dedicated thread (see
//!   `super::netns`), never on a tokio worker;
//! - deleting a link that is already gone is not an error (teardown keeps
//!   going).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tracing::{debug, instrument};

use super::NetError;
use super::netns::run_in_netns;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// One container attachment to a bridge network (see [`Netlink::attach`]).
#[derive(Debug)]
pub struct Attachment<'a> {
    /// Host end of the veth pair, unique on the host, at most 15 bytes
    /// (e.g. `"rv" + 8 hex of the container id + index`).
    pub host_name: &'a str,
    /// The bridge to enslave the host end to; it must exist.
    pub bridge: &'a str,
    /// The container's network namespace (an fd of `/proc/PID/ns/net`).
    pub netns: BorrowedFd<'a>,
    /// Name of the interface inside the container (`eth0`, `eth1`...).
    pub ifname: &'a str,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// Default route via this address, if set.
    pub gateway: Option<Ipv4Addr>,
}

/// A netlink socket in the network namespace of the thread that opened it.
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
    /// The namespace, as `/proc/thread-self/ns/net` names it (for errors).
    netns: String,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

/// The locally administered, unicast MAC address of the bridge `name`:
/// `02:` followed by 5 bytes of a hash (FNV-1a) of the name. Stable across
/// restarts and machines, so the gateway's MAC never changes.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let h = fnv1a(name.as_bytes()).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rejects names the kernel would refuse (`dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name == "." || name == ".." {
        return bad("empty, '.' or '..'");
    }
    if name.len() > MAX_IFNAME {
        return bad("longer than 15 bytes");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// A fresh name for the container end of a veth pair while it still lives on
/// the host: `rvtmp` + 10 hex digits of the host name, the pid and a counter.
fn temp_peer_name(host_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut key = host_name.as_bytes().to_vec();
    key.extend_from_slice(&std::process::id().to_be_bytes());
    key.extend_from_slice(&n.to_be_bytes());
    format!("rvtmp{:010x}", fnv1a(&key) & 0xff_ffff_ffff)
}

/// The positive errno of a failed netlink request.
pub(crate) fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn current_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the current netns".into())
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace (the
    /// host's, on a tokio worker) and spawns the task that drives it; the
    /// task is aborted when the `Netlink` is dropped.
    pub async fn connect() -> Result<Netlink, NetError> {
        let netns = current_netns();
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetError::Socket {
            netns: netns.clone(),
            source,
        })?;
        let connection = tokio::spawn(conn);
        Ok(Netlink {
            handle,
            connection,
            netns,
        })
    }

    fn err(&self, op: impl Into<String>, link: &str, source: rtnetlink::Error) -> NetError {
        NetError::Netlink {
            op: op.into(),
            link: link.to_owned(),
            netns: self.netns.clone(),
            source: Box::new(source),
        }
    }

    /// The link called `name`, or None.
    async fn get_link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        check_ifname(name)?;
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.err("get link", name, e)),
        }
    }

    async fn require_index(&self, name: &str) -> Result<u32, NetError> {
        self.link_index(name)
            .await?
            .ok_or_else(|| NetError::NoSuchLink {
                link: name.to_owned(),
                netns: self.netns.clone(),
            })
    }

    async fn set(&self, msg: LinkMessage, op: &str, link: &str) -> Result<(), NetError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.err(op, link, e))
    }

    /// The ifindex of `name`, or None if there is no such link.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.get_link(name).await?.map(|l| l.header.index))
    }

    /// The MAC address of `name`, or None if there is no such link (or it has
    /// no Ethernet address).
    pub async fn link_mac(&self, name: &str) -> Result<Option<[u8; 6]>, NetError> {
        Ok(self.get_link(name).await?.and_then(|l| mac_of(&l)))
    }

    /// Deletes the link `name`; a link that is not there is fine.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(self.err("delete link", name, e)),
        }
    }

    /// Names of all links starting with `prefix` (to sweep leftovers).
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("list links", prefix, e))?;
        Ok(links
            .iter()
            .filter_map(name_of)
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Creates the bridge `name` if it is missing, gives it its fixed MAC
    /// ([`bridge_mac`]) and `gateway/prefix` unless already there, and sets
    /// it up. Returns its ifindex. Safe to call again (and concurrently).
    #[instrument(skip_all, fields(bridge = name, gateway = %gateway))]
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> Result<u32, NetError> {
        check_prefix(prefix)?;
        let mac = bridge_mac(name);
        let link = match self.get_link(name).await? {
            Some(link) => link,
            None => {
                let msg = LinkBridge::new(name).address(mac.to_vec()).build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => debug!("created bridge"),
                    // Someone else created it meanwhile: use theirs.
                    Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(self.err("create bridge", name, e)),
                }
                self.get_link(name)
                    .await?
                    .ok_or_else(|| NetError::NoSuchLink {
                        link: name.to_owned(),
                        netns: self.netns.clone(),
                    })?
            }
        };
        let kind = kind_of(&link);
        if kind != Some(&InfoKind::Bridge) {
            return Err(NetError::NotABridge {
                link: name.to_owned(),
                netns: self.netns.clone(),
                kind: kind.map_or_else(|| "device".into(), |k| k.to_string()),
            });
        }
        let index = link.header.index;
        if mac_of(&link) != Some(mac) {
            let msg = LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build();
            self.set(msg, "set MAC address", name).await?;
        }
        self.ensure_address(index, name, gateway, prefix).await?;
        self.set(
            LinkUnspec::new_with_index(index).up().build(),
            "set up",
            name,
        )
        .await?;
        Ok(index)
    }

    /// Adds `addr/prefix` to the link unless it already has `addr`.
    async fn ensure_address(
        &self,
        index: u32,
        link: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        let op = format!("add address {addr}/{prefix}");
        let present: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("list addresses", link, e))?;
        let has = present.iter().any(|m| {
            m.header.index == index
                && m.attributes.iter().any(|a| {
                    matches!(a, rtnetlink::packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) if *ip == addr)
                })
        });
        if has {
            return Ok(());
        }
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(self.err(op, link, e)),
        }
    }

    /// Connects a container to a bridge: a veth pair `host_name` <-> a
    /// temporary peer; the host end enslaved to `bridge` and up; the peer
    /// moved into `netns`, then (inside it) renamed to `ifname`, given
    /// `addr/prefix`, set up (with `lo`) and, if `gateway` is set, given a
    /// default route via it. On failure the host end is deleted (taking the
    /// peer with it) before the error is returned.
    #[instrument(skip_all, fields(veth = a.host_name, bridge = a.bridge, addr = %a.addr))]
    pub async fn attach(&self, a: &Attachment<'_>) -> Result<(), NetError> {
        check_ifname(a.host_name)?;
        check_ifname(a.ifname)?;
        check_ifname(a.bridge)?;
        check_prefix(a.prefix)?;
        let bridge = self.require_index(a.bridge).await?;
        let peer = temp_peer_name(a.host_name);
        self.handle
            .link()
            .add(LinkVeth::new(a.host_name, &peer).build())
            .execute()
            .await
            .map_err(|e| self.err(format!("create veth pair (peer {peer})"), a.host_name, e))?;
        match self.finish_attach(a, bridge, &peer).await {
            Ok(()) => {
                debug!("attached");
                Ok(())
            }
            Err(cause) => match self.delete_link(a.host_name).await {
                Ok(()) => Err(cause),
                Err(cleanup) => Err(NetError::Cleanup {
                    cause: Box::new(cause),
                    cleanup: Box::new(cleanup),
                }),
            },
        }
    }

    async fn finish_attach(
        &self,
        a: &Attachment<'_>,
        bridge: u32,
        peer: &str,
    ) -> Result<(), NetError> {
        let host = self.require_index(a.host_name).await?;
        let peer_index = self.require_index(peer).await?;
        let msg = LinkUnspec::new_with_index(host)
            .controller(bridge)
            .up()
            .build();
        self.set(
            msg,
            &format!("enslave to {} and set up", a.bridge),
            a.host_name,
        )
        .await?;
        let msg = LinkUnspec::new_with_index(peer_index)
            .setns_by_fd(a.netns.as_raw_fd())
            .build();
        let into = crate::sys::describe_fd(a.netns);
        self.set(msg, &format!("move into {into}"), peer).await?;

        let (peer, ifname) = (peer.to_owned(), a.ifname.to_owned());
        let (addr, prefix, gateway) = (a.addr, a.prefix, a.gateway);
        run_in_netns(a.netns, move |nl| async move {
            nl.configure_container_end(&peer, &ifname, addr, prefix, gateway)
                .await
        })
        .await
    }

    /// Inside the container's netns: rename, address, up, lo up, route.
    async fn configure_container_end(
        &self,
        peer: &str,
        ifname: &str,
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        let index = self.require_index(peer).await?;
        let msg = LinkUnspec::new_with_index(index).name(ifname).build();
        self.set(msg, &format!("rename to {ifname}"), peer).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .map_err(|e| self.err(format!("add address {addr}/{prefix}"), ifname, e))?;
        self.set(
            LinkUnspec::new_with_index(index).up().build(),
            "set up",
            ifname,
        )
        .await?;
        if let Some(lo) = self.link_index("lo").await? {
            self.set(LinkUnspec::new_with_index(lo).up().build(), "set up", "lo")
                .await?;
        }
        if let Some(gw) = gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            self.handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| self.err(format!("add default route via {gw}"), ifname, e))?;
        }
        Ok(())
    }
}

fn check_prefix(prefix: u8) -> Result<(), NetError> {
    if (1..=32).contains(&prefix) {
        Ok(())
    } else {
        Err(NetError::InvalidArgument {
            field: "prefix",
            reason: format!("{prefix} is not an IPv4 prefix length"),
        })
    }
}

fn name_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })
}

fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_is_stable_local_unicast() {
        let a = bridge_mac("rsup0");
        assert_eq!(a, bridge_mac("rsup0"));
        assert_ne!(a, bridge_mac("rsup1"));
        assert_eq!(a[0], 0x02, "locally administered, unicast");
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "rv0123abcd0", "abcdefghijklmno"] {
            check_ifname(ok).expect("valid name");
        }
        for bad in ["", ".", "..", "abcdefghijklmnop", "a/b", "a:b", "a b"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
        let t = temp_peer_name("rv0123abcd0");
        check_ifname(&t).expect("valid temp name");
        assert_eq!(t.len(), 15);
        assert_ne!(t, temp_peer_name("rv0123abcd0"));
    }
}

/// Root tests: each runs in network namespaces of its own (see
/// `in_fresh_netns`), so the host's links are never touched.
#[cfg(test)]
mod root_tests {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::AtomicU32;

    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkFlags;
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};

    use super::*;
    use crate::net::netns::run_in_netns_blocking;
    use crate::sys;

    /// A prefix unique to this process and test, for every link it makes.
    fn unique_prefix() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "rt{:04x}{:x}",
            std::process::id() & 0xffff,
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Runs `body` on a thread of its own in a new, empty network namespace
    /// with a current-thread runtime; the namespace disappears with the
    /// thread.
    fn in_fresh_netns<F, Fut>(body: F)
    where
        F: FnOnce(OwnedFd) -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                sys::unshare_net().expect("unshare(CLONE_NEWNET)");
                let me = sys::open_thread_netns().expect("open own netns");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(body(me));
            })
            .join()
            .expect("test body panicked");
        });
    }

    /// A new network namespace, kept alive by the returned fd only (a
    /// stand-in for a container's).
    fn new_netns() -> OwnedFd {
        std::thread::spawn(|| {
            sys::unshare_net().expect("unshare(CLONE_NEWNET)");
            sys::open_thread_netns().expect("open netns")
        })
        .join()
        .expect("netns thread")
    }

    /// Deletes the named links of a namespace on drop, even when the test
    /// fails halfway.
    struct LinkGuard {
        netns: OwnedFd,
        names: Vec<String>,
    }

    impl Drop for LinkGuard {
        fn drop(&mut self) {
            let names = std::mem::take(&mut self.names);
            let r = run_in_netns_blocking(self.netns.as_fd(), move |nl| async move {
                for n in names {
                    nl.delete_link(&n).await?;
                }
                Ok(())
            });
            if let Err(e) = r {
                eprintln!("cleanup: {e}");
            }
        }
    }

    #[derive(Debug)]
    struct Inside {
        up: bool,
        addrs: Vec<(Ipv4Addr, u8)>,
        default_via: Vec<(Ipv4Addr, u32)>,
        eth_index: u32,
        lo_up: bool,
        links: Vec<String>,
    }

    /// Reads the state of `ifname` inside `netns` over a netlink socket of
    /// that namespace.
    async fn inspect(netns: BorrowedFd<'_>, ifname: &str) -> Inside {
        let ifname = ifname.to_owned();
        run_in_netns(netns, move |nl| async move {
            let link = nl.get_link(&ifname).await?.expect("interface inside");
            let index = link.header.index;
            let lo = nl.get_link("lo").await?.expect("lo");
            let addrs: Vec<_> = nl
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .expect("addresses");
            let addrs = addrs
                .iter()
                .filter(|m| m.header.index == index)
                .flat_map(|m| {
                    m.attributes.iter().filter_map(move |a| match a {
                        AddressAttribute::Address(IpAddr::V4(ip)) => {
                            Some((*ip, m.header.prefix_len))
                        }
                        _ => None,
                    })
                })
                .collect();
            let routes: Vec<_> = nl
                .handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .expect("routes");
            let default_via = routes
                .iter()
                .filter(|r| r.header.destination_prefix_length == 0)
                .filter_map(|r| {
                    let gw = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                        _ => None,
                    })?;
                    let oif = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })?;
                    Some((gw, oif))
                })
                .collect();
            let links = nl.links_with_prefix("").await?;
            Ok(Inside {
                up: link.header.flags.contains(LinkFlags::Up),
                addrs,
                default_via,
                eth_index: index,
                lo_up: lo.header.flags.contains(LinkFlags::Up),
                links,
            })
        })
        .await
        .expect("inspect container netns")
    }

    #[test]
    fn bridge_attach_detach() {
        in_fresh_netns(|me| async move {
            let p = unique_prefix();
            let br = format!("{p}br");
            let (v0, v1) = (format!("{p}v0"), format!("{p}v1"));
            let _guard = LinkGuard {
                netns: me,
                names: vec![v0.clone(), v1.clone(), br.clone()],
            };
            let nl = Netlink::connect().await.expect("connect");
            let gw = Ipv4Addr::new(10, 77, 0, 1);

            let idx = nl.ensure_bridge(&br, gw, 24).await.expect("bridge");
            assert_eq!(nl.ensure_bridge(&br, gw, 24).await.expect("again"), idx);
            let mac = nl.link_mac(&br).await.expect("mac").expect("has mac");
            assert_eq!(mac, bridge_mac(&br));

            let c1 = new_netns();
            let c2 = new_netns();
            let a1 = Attachment {
                host_name: &v0,
                bridge: &br,
                netns: c1.as_fd(),
                ifname: "eth0",
                addr: Ipv4Addr::new(10, 77, 0, 2),
                prefix: 24,
                gateway: Some(gw),
            };
            nl.attach(&a1).await.expect("attach c1");
            let a2 = Attachment {
                host_name: &v1,
                netns: c2.as_fd(),
                addr: Ipv4Addr::new(10, 77, 0, 3),
                gateway: None,
                ..a1
            };
            nl.attach(&a2).await.expect("attach c2");
            assert_eq!(nl.link_mac(&br).await.expect("mac"), Some(mac));

            let inside = inspect(c1.as_fd(), "eth0").await;
            assert!(inside.up, "{inside:?}");
            assert!(inside.lo_up, "{inside:?}");
            assert_eq!(inside.addrs, vec![(Ipv4Addr::new(10, 77, 0, 2), 24)]);
            assert_eq!(inside.default_via, vec![(gw, inside.eth_index)]);
            let inside2 = inspect(c2.as_fd(), "eth0").await;
            assert!(inside2.default_via.is_empty(), "{inside2:?}");
            assert_eq!(inside2.addrs, vec![(Ipv4Addr::new(10, 77, 0, 3), 24)]);
            // No temporary names left anywhere.
            assert!(inside.links.iter().all(|n| !n.starts_with("rvtmp")));
            assert!(
                nl.links_with_prefix("rvtmp")
                    .await
                    .expect("list")
                    .is_empty()
            );

            let mut ours = nl.links_with_prefix(&p).await.expect("list");
            ours.sort();
            assert_eq!(ours, vec![br.clone(), v0.clone(), v1.clone()]);

            nl.delete_link(&v0).await.expect("delete v0");
            nl.delete_link(&v0).await.expect("deleting again is fine");
            assert_eq!(nl.link_mac(&br).await.expect("mac"), Some(mac));
            // Deleting the host end took the container end with it.
            let links = run_in_netns(
                c1.as_fd(),
                |nl| async move { nl.links_with_prefix("").await },
            )
            .await
            .expect("list c1");
            assert_eq!(links, vec!["lo".to_owned()]);

            nl.delete_link(&v1).await.expect("delete v1");
            nl.delete_link(&br).await.expect("delete bridge");
            assert!(nl.links_with_prefix(&p).await.expect("list").is_empty());
            assert_eq!(nl.link_index(&br).await.expect("index"), None);
            assert_eq!(nl.link_mac(&br).await.expect("mac"), None);
        });
    }

    #[test]
    fn failed_attach_leaves_nothing() {
        in_fresh_netns(|me| async move {
            let p = unique_prefix();
            let br = format!("{p}br");
            let v0 = format!("{p}v0");
            let _guard = LinkGuard {
                netns: me,
                names: vec![v0.clone(), br.clone()],
            };
            let nl = Netlink::connect().await.expect("connect");
            let gw = Ipv4Addr::new(10, 78, 0, 1);
            nl.ensure_bridge(&br, gw, 24).await.expect("bridge");
            let c = new_netns();
            // A gateway outside the subnet cannot be routed to: the last step
            // fails after the veth exists.
            let a = Attachment {
                host_name: &v0,
                bridge: &br,
                netns: c.as_fd(),
                ifname: "eth0",
                addr: Ipv4Addr::new(10, 78, 0, 2),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
            };
            let err = nl.attach(&a).await.expect_err("unreachable gateway");
            assert!(err.to_string().contains("default route"), "{err}");
            assert_eq!(nl.link_index(&v0).await.expect("index"), None);
            assert!(
                nl.links_with_prefix("rvtmp")
                    .await
                    .expect("list")
                    .is_empty()
            );
            let links = run_in_netns(
                c.as_fd(),
                |nl| async move { nl.links_with_prefix("").await },
            )
            .await
            .expect("list");
            assert_eq!(links, vec!["lo".to_owned()]);

            // A missing bridge fails before anything is made.
            let missing = format!("{p}nx");
            let err = nl
                .attach(&Attachment {
                    bridge: &missing,
                    ..a
                })
                .await
                .expect_err("no bridge");
            assert!(matches!(err, NetError::NoSuchLink { .. }), "{err}");
            assert_eq!(nl.link_index(&v0).await.expect("index"), None);
        });
    }

    #[test]
    fn ensure_bridge_refuses_other_kinds_and_fixes_mac() {
        in_fresh_netns(|me| async move {
            let p = unique_prefix();
            let (v, vp, br) = (format!("{p}v"), format!("{p}p"), format!("{p}br"));
            let _guard = LinkGuard {
                netns: me,
                names: vec![v.clone(), br.clone()],
            };
            let nl = Netlink::connect().await.expect("connect");
            nl.handle
                .link()
                .add(LinkVeth::new(&v, &vp).build())
                .execute()
                .await
                .expect("veth");
            let err = nl
                .ensure_bridge(&v, Ipv4Addr::new(10, 79, 0, 1), 24)
                .await
                .expect_err("a veth is no bridge");
            assert!(matches!(err, NetError::NotABridge { .. }), "{err}");

            // A bridge made by someone else with another MAC gets ours.
            nl.handle
                .link()
                .add(
                    LinkBridge::new(&br)
                        .address(vec![0x02, 0, 0, 0, 0, 1])
                        .build(),
                )
                .execute()
                .await
                .expect("bridge");
            nl.ensure_bridge(&br, Ipv4Addr::new(10, 79, 0, 1), 24)
                .await
                .expect("ensure");
            assert_eq!(nl.link_mac(&br).await.expect("mac"), Some(bridge_mac(&br)));
        });
    }
}
