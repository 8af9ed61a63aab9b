//! A container's attachment to a bridge: a veth pair made from the host
//! with its peer created directly in the container's network namespace
//! (under its final name), and finished there.
//!
//! Why not create the pair on the host and move the peer: moving a link
//! between namespaces waits for the kernel to let go of it (an RCU grace
//! period, 10-20 ms here), the largest part of a network attach; a peer
//! made in place never moves.
//!
//! This sits above [`super::link`] (one netlink socket in one namespace)
//! and [`super::netns`] (work on a thread inside another namespace): it
//! uses both, and neither uses it. Invariant: [`Netlink::attach`] either
//! completes or deletes the host end of the veth pair it made (deleting one
//! end of a veth deletes the other, wherever it is), and reports a cleanup
//! failure next to the cause.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use tracing::{debug, instrument};

use super::NetError;
use super::link::{Netlink, check_ifname, check_prefix};
use super::netns::run_in_netns;

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

impl Netlink {
    /// Connects a container to a bridge with one request: a veth pair
    /// `host_name` (enslaved to `bridge`, up) <-> `ifname`, made directly
    /// in `netns`; then (inside it) `ifname` is given `addr/prefix`, set up
    /// (with `lo`) and, if `gateway` is set, a default route via it. On
    /// failure the host end is deleted (taking the peer with it) before the
    /// error is returned.
    #[instrument(skip_all, fields(veth = a.host_name, bridge = a.bridge, addr = %a.addr))]
    pub async fn attach(&self, a: &Attachment<'_>) -> Result<(), NetError> {
        check_ifname(a.host_name)?;
        check_ifname(a.ifname)?;
        check_ifname(a.bridge)?;
        check_prefix(a.prefix)?;
        let bridge = self.require_index(a.bridge).await?;
        let peer = LinkUnspec::new_with_name(a.ifname)
            .setns_by_fd(a.netns.as_raw_fd())
            .build();
        let pair = LinkVeth::new(a.host_name, a.ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .up()
            .build();
        let into = crate::sys::describe_fd(a.netns);
        self.handle.link().add(pair).execute().await.map_err(|e| {
            self.err(
                format!(
                    "create veth pair (peer {} in {into}, on {})",
                    a.ifname, a.bridge
                ),
                a.host_name,
                e,
            )
        })?;
        let (ifname, addr, prefix, gateway) = (a.ifname.to_owned(), a.addr, a.prefix, a.gateway);
        let configured = run_in_netns(a.netns, move |nl| async move {
            nl.configure_container_end(&ifname, addr, prefix, gateway)
                .await
        })
        .await;
        match configured {
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

    /// Inside the container's netns: address, up, lo up, route.
    async fn configure_container_end(
        &self,
        ifname: &str,
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        let index = self.require_index(ifname).await?;
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

/// Root tests: each runs in network namespaces of its own (see
/// `in_fresh_netns`), so the host's links are never touched.
#[cfg(test)]
mod root_tests {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::AtomicU32;

    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkFlags;
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};

    use std::sync::atomic::Ordering;

    use futures::TryStreamExt;
    use rtnetlink::LinkBridge;

    use super::*;
    use crate::netstack::bridge_mac;
    use crate::netstack::netns::run_in_netns_blocking;
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

            // The host has an eth0 of its own: the container's is made in
            // the container's namespace, so the names never meet.
            nl.handle
                .link()
                .add(LinkBridge::new("eth0").build())
                .execute()
                .await
                .expect("host eth0");
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
            let mut links = inside.links.clone();
            links.sort();
            assert_eq!(links, vec!["eth0".to_owned(), "lo".to_owned()]);
            // The peers were made in the containers' namespaces: nothing on
            // the host but the bridge, the host ends, lo and its own eth0.
            let mut host = nl.links_with_prefix("").await.expect("list");
            host.sort();
            let mut want = vec![
                br.clone(),
                v0.clone(),
                v1.clone(),
                "eth0".into(),
                "lo".into(),
            ];
            want.sort();
            assert_eq!(host, want);

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
            let mut host = nl.links_with_prefix("").await.expect("list");
            host.sort();
            let mut want = vec![br.clone(), "lo".to_owned()];
            want.sort();
            assert_eq!(host, want);
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
