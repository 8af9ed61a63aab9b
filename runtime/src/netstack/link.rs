//! Bridges and veth pairs over rtnetlink (`NETLINK_ROUTE`).
//!
//! A [`Netlink`] owns one netlink socket and the task that drives it; the
//! socket is bound to the network namespace of the thread that opened it
//! (the host's, for the daemon). Invariants kept here:
//! - a bridge made by [`Netlink::ensure_bridge`] carries a fixed, locally
//!   administered unicast MAC derived from its name ([`bridge_mac`]): the
//!   kernel would otherwise give the bridge the lowest MAC of its ports, and
//!   it would change as containers come and go;
//! - work inside a container's netns happens on a dedicated thread (see
//!   `super::netns`), never on a tokio worker; attaching a container, which
//!   needs that, is `super::attach`'s;
//! - deleting a link that is already gone is not an error (teardown keeps
//!   going).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec};
use tracing::{debug, instrument};

use super::NetError;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// A netlink socket in the network namespace of the thread that opened it.
pub struct Netlink {
    pub(super) handle: rtnetlink::Handle,
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

    pub(super) fn err(
        &self,
        op: impl Into<String>,
        link: &str,
        source: rtnetlink::Error,
    ) -> NetError {
        NetError::Netlink {
            op: op.into(),
            link: link.to_owned(),
            netns: self.netns.clone(),
            source: Box::new(source),
        }
    }

    /// The link called `name`, or None.
    pub(super) async fn get_link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        check_ifname(name)?;
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.err("get link", name, e)),
        }
    }

    pub(super) async fn require_index(&self, name: &str) -> Result<u32, NetError> {
        self.link_index(name)
            .await?
            .ok_or_else(|| NetError::NoSuchLink {
                link: name.to_owned(),
                netns: self.netns.clone(),
            })
    }

    pub(super) async fn set(&self, msg: LinkMessage, op: &str, link: &str) -> Result<(), NetError> {
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
}

pub(super) fn check_prefix(prefix: u8) -> Result<(), NetError> {
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
    }
}
