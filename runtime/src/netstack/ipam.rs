//! IPv4 address management for one bridge network: a pure allocator, no I/O.
//!
//! A [`Pool`] hands out the host addresses of a [`Subnet`] to owners
//! (container ids). Invariants, checked on construction and on
//! deserialization: the subnet has no host bits set and a prefix in 8..=30;
//! the gateway is a host address inside it; every lease is a host address
//! inside it, never the network address, the broadcast address or the
//! gateway, and held by exactly one owner. Allocation walks forward from the
//! last address handed out (wrapping), so a freed address is not reused until
//! the rest of the pool has been used: a late packet for a stopped container
//! does not reach its successor. The caller persists the pool (serde).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors of the allocator. Each carries the address or subnet at fault.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0}")]
    InvalidSubnet(String),
    #[error("invalid gateway {0}")]
    InvalidGateway(String),
    #[error("{ip} is outside subnet {subnet}")]
    OutsideSubnet { ip: Ipv4Addr, subnet: Subnet },
    /// The network address, the broadcast address or the gateway.
    #[error("{0} is reserved (network, broadcast or gateway address)")]
    Reserved(Ipv4Addr),
    #[error("{ip} is already leased to {by}")]
    Taken { ip: Ipv4Addr, by: String },
    #[error("no free address left in {0}")]
    Exhausted(Subnet),
}

/// An IPv4 network: its network address (host bits zero) and prefix length.
///
/// Parsed from and shown as `10.88.0.0/24`; prefixes outside 8..=30 are
/// rejected (a /31 or /32 has no room for a gateway and a container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSubnet")]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// The serialized shape of [`Subnet`], validated on the way in.
#[derive(Deserialize)]
struct RawSubnet {
    addr: Ipv4Addr,
    prefix: u8,
}

impl TryFrom<RawSubnet> for Subnet {
    type Error = IpamError;
    fn try_from(raw: RawSubnet) -> Result<Self, IpamError> {
        Subnet::new(raw.addr, raw.prefix)
    }
}

impl Subnet {
    /// Validates `addr/prefix`: prefix in 8..=30 and no host bits set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet, IpamError> {
        if !(8..=30).contains(&prefix) {
            return Err(IpamError::InvalidSubnet(format!(
                "{addr}/{prefix}: prefix must be between 8 and 30"
            )));
        }
        let s = Subnet { addr, prefix };
        if u32::from(addr) & !s.mask() != 0 {
            return Err(IpamError::InvalidSubnet(format!(
                "{addr}/{prefix}: host bits are set (network address is {})",
                Ipv4Addr::from(u32::from(addr) & s.mask())
            )));
        }
        Ok(s)
    }

    /// The netmask as an integer (`/24` -> `0xffff_ff00`).
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    fn network(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }

    /// The broadcast address of the subnet.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() | !self.mask())
    }

    /// The first host address (network + 1).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 1)
    }

    /// The last host address (broadcast - 1).
    pub fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from((self.network() | !self.mask()) - 1)
    }

    /// Whether `ip` lies in the subnet (network and broadcast included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }

    /// Whether `ip` is a usable host address: inside, neither network nor
    /// broadcast.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.addr && ip != self.broadcast()
    }

    /// Whether the two subnets share at least one address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        // Two prefixes overlap iff one contains the other: compare under the
        // shorter mask.
        let mask = self.mask() & other.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Subnet, IpamError> {
        let bad =
            |why: &str| IpamError::InvalidSubnet(format!("{}: {why}", crate::names::quote(s)));
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        Subnet::new(addr, prefix)
    }
}

/// The leases of one network. See the module docs for the invariants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawPool")]
pub struct Pool {
    subnet: Subnet,
    gateway: Ipv4Addr,
    /// Leased address -> owner.
    leases: BTreeMap<Ipv4Addr, String>,
    /// The last address handed out by [`Pool::allocate`] (as an integer), or
    /// 0 before the first allocation; the next search starts after it.
    cursor: u32,
}

/// The serialized shape of [`Pool`], validated on the way in (a hand-edited
/// or corrupt state file must not yield a pool that breaks the invariants).
#[derive(Deserialize)]
struct RawPool {
    subnet: Subnet,
    gateway: Ipv4Addr,
    leases: BTreeMap<Ipv4Addr, String>,
    cursor: u32,
}

impl TryFrom<RawPool> for Pool {
    type Error = IpamError;
    fn try_from(raw: RawPool) -> Result<Self, IpamError> {
        let mut pool = Pool::new(raw.subnet, Some(raw.gateway))?;
        for (ip, owner) in raw.leases {
            pool.reserve(ip, &owner)?;
        }
        pool.cursor = raw.cursor;
        Ok(pool)
    }
}

impl Pool {
    /// A pool with no leases. The gateway defaults to the first host address
    /// (`.1` of a /24); an explicit one must be a host address of `subnet`.
    pub fn new(subnet: Subnet, gateway: Option<Ipv4Addr>) -> Result<Pool, IpamError> {
        // Re-validate: the fields of Subnet are public.
        let subnet = Subnet::new(subnet.addr, subnet.prefix)?;
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.is_host(gateway) {
            return Err(IpamError::InvalidGateway(format!(
                "{gateway}: not a host address of {subnet}"
            )));
        }
        Ok(Pool {
            subnet,
            gateway,
            leases: BTreeMap::new(),
            cursor: 0,
        })
    }

    /// The address of `owner`: its existing lease if it has one (the lowest,
    /// if it holds several), else the next free host address after the last
    /// one handed out, wrapping around; network, broadcast, gateway and
    /// leased addresses are skipped.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.lease_of(owner) {
            return Ok(ip);
        }
        let first = u32::from(self.subnet.first_host());
        let last = u32::from(self.subnet.last_host());
        let span = last - first + 1;
        // Start right after the cursor; a cursor outside the host range
        // (fresh pool) starts at the first host.
        let start = if (first..=last).contains(&self.cursor) {
            self.cursor - first + 1
        } else {
            0
        };
        for step in 0..span {
            let ip = Ipv4Addr::from(first + (start + step) % span);
            if ip != self.gateway && !self.leases.contains_key(&ip) {
                self.leases.insert(ip, owner.to_owned());
                self.cursor = u32::from(ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(self.subnet.clone()))
    }

    /// Leases the explicit address `ip` (a user's `--ip`) to `owner`.
    /// Reserving the same address for the same owner again is a no-op.
    pub fn reserve(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        if !self.subnet.contains(ip) {
            return Err(IpamError::OutsideSubnet {
                ip,
                subnet: self.subnet.clone(),
            });
        }
        if !self.subnet.is_host(ip) || ip == self.gateway {
            return Err(IpamError::Reserved(ip));
        }
        match self.leases.get(&ip) {
            Some(by) if by == owner => Ok(()),
            Some(by) => Err(IpamError::Taken { ip, by: by.clone() }),
            None => {
                self.leases.insert(ip, owner.to_owned());
                Ok(())
            }
        }
    }

    /// Frees every address of `owner` and returns them (empty if it had none).
    pub fn release_owner(&mut self, owner: &str) -> Vec<Ipv4Addr> {
        let freed: Vec<Ipv4Addr> = self
            .leases
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &freed {
            self.leases.remove(ip);
        }
        freed
    }

    /// Frees `ip` if `owner` holds it; true when it did.
    pub fn release(&mut self, ip: Ipv4Addr, owner: &str) -> bool {
        if self.leases.get(&ip).is_some_and(|o| o == owner) {
            self.leases.remove(&ip);
            return true;
        }
        false
    }

    /// The (lowest) address leased to `owner`.
    pub fn lease_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.leases
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    /// All leases, in address order.
    pub fn leases(&self) -> impl Iterator<Item = (Ipv4Addr, &str)> {
        self.leases.iter().map(|(ip, o)| (*ip, o.as_str()))
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn pool24() -> Pool {
        Pool::new("10.88.0.0/24".parse().expect("subnet"), None).expect("pool")
    }

    #[test]
    fn parses_and_displays_subnets() {
        let s: Subnet = "10.88.0.0/24".parse().expect("subnet");
        assert_eq!(s.addr, Ipv4Addr::new(10, 88, 0, 0));
        assert_eq!(s.prefix, 24);
        assert_eq!(s.to_string(), "10.88.0.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 88, 0, 255));
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.last_host(), Ipv4Addr::new(10, 88, 0, 254));
        assert!(s.contains(Ipv4Addr::new(10, 88, 0, 77)));
        assert!(!s.contains(Ipv4Addr::new(10, 88, 1, 0)));
        let wide: Subnet = "10.0.0.0/8".parse().expect("subnet");
        assert_eq!(wide.broadcast(), Ipv4Addr::new(10, 255, 255, 255));
        let small: Subnet = "192.168.5.4/30".parse().expect("subnet");
        assert_eq!(small.first_host(), Ipv4Addr::new(192, 168, 5, 5));
        assert_eq!(small.last_host(), Ipv4Addr::new(192, 168, 5, 6));
    }

    #[test]
    fn rejects_bad_subnets() {
        for bad in [
            "10.88.0.1/24",
            "10.88.0.0/31",
            "10.88.0.0/32",
            "10.0.0.0/7",
            "10.88.0.0",
            "10.88.0/24",
            "10.88.0.0/x",
            "fd00::/64",
        ] {
            assert!(
                matches!(bad.parse::<Subnet>(), Err(IpamError::InvalidSubnet(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn overlaps() {
        let a: Subnet = "10.88.0.0/24".parse().expect("subnet");
        let b: Subnet = "10.88.0.0/16".parse().expect("subnet");
        let c: Subnet = "10.89.0.0/24".parse().expect("subnet");
        let d: Subnet = "10.88.0.128/25".parse().expect("subnet");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(a.overlaps(&a));
        assert!(a.overlaps(&d) && d.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        assert!(b.overlaps(&"10.88.255.0/24".parse().expect("subnet")));
        assert!(!b.overlaps(&c));
    }

    #[test]
    fn gateway_defaults_and_validation() {
        let p = pool24();
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let s: Subnet = "10.88.0.0/24".parse().expect("subnet");
        let custom = Pool::new(s.clone(), Some(Ipv4Addr::new(10, 88, 0, 254))).expect("pool");
        assert_eq!(custom.gateway(), Ipv4Addr::new(10, 88, 0, 254));
        for bad in [
            Ipv4Addr::new(10, 88, 0, 0),
            Ipv4Addr::new(10, 88, 0, 255),
            Ipv4Addr::new(10, 88, 1, 1),
        ] {
            assert!(matches!(
                Pool::new(s.clone(), Some(bad)),
                Err(IpamError::InvalidGateway(_))
            ));
        }
        // Public fields: a hand-built bad subnet is still caught.
        let raw = Subnet {
            addr: Ipv4Addr::new(10, 88, 0, 9),
            prefix: 24,
        };
        assert!(matches!(
            Pool::new(raw, None),
            Err(IpamError::InvalidSubnet(_))
        ));
    }

    #[test]
    fn slash24_has_253_container_addresses() {
        let mut p = pool24();
        let mut seen = HashSet::new();
        for i in 0..253 {
            let ip = p.allocate(&format!("c{i}")).expect("allocate");
            assert!(p.subnet().is_host(ip));
            assert_ne!(ip, p.gateway());
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert!(matches!(
            p.allocate("one-more"),
            Err(IpamError::Exhausted(_))
        ));
        assert_eq!(p.leases().count(), 253);
    }

    #[test]
    fn two_hundred_allocations_are_unique_and_sequential() {
        let mut p = pool24();
        let ips: Vec<Ipv4Addr> = (0..200)
            .map(|i| p.allocate(&format!("c{i}")).expect("allocate"))
            .collect();
        let unique: HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), 200);
        assert_eq!(ips[0], Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(ips[199], Ipv4Addr::new(10, 88, 0, 201));
    }

    #[test]
    fn allocate_is_idempotent_per_owner() {
        let mut p = pool24();
        let a = p.allocate("a").expect("allocate");
        assert_eq!(p.allocate("a").expect("allocate"), a);
        assert_eq!(p.lease_of("a"), Some(a));
        assert_eq!(p.leases().count(), 1);
    }

    #[test]
    fn released_address_is_not_reused_until_the_pool_wraps() {
        let mut p: Pool = Pool::new("10.88.0.0/28".parse().expect("subnet"), None).expect("pool");
        // Hosts .1-.14, gateway .1: 13 container addresses (.2-.14).
        let first = p.allocate("a").expect("allocate");
        assert_eq!(first, Ipv4Addr::new(10, 88, 0, 2));
        let _b = p.allocate("b").expect("allocate");
        assert_eq!(p.release_owner("a"), vec![first]);
        assert_eq!(p.lease_of("a"), None);
        assert!(p.release_owner("a").is_empty());
        // The 12 addresses after b come first, then the wrap reaches .2.
        let mut next = Vec::new();
        for i in 0..12 {
            next.push(p.allocate(&format!("n{i}")).expect("allocate"));
        }
        assert!(!next[..11].contains(&first));
        assert_eq!(
            next[11], first,
            "the pool wrapped back to the freed address"
        );
        assert!(matches!(p.allocate("full"), Err(IpamError::Exhausted(_))));
        // Freeing one in the middle: the only free address is handed out.
        let mid = Ipv4Addr::new(10, 88, 0, 7);
        let holder = p
            .leases()
            .find(|(ip, _)| *ip == mid)
            .expect("leased")
            .1
            .to_owned();
        p.release_owner(&holder);
        assert_eq!(p.allocate("late").expect("allocate"), mid);
    }

    #[test]
    fn reserve_errors() {
        let mut p = pool24();
        let s = p.subnet().clone();
        assert!(matches!(
            p.reserve(Ipv4Addr::new(10, 89, 0, 5), "x"),
            Err(IpamError::OutsideSubnet { subnet, .. }) if subnet == s
        ));
        for reserved in [
            Ipv4Addr::new(10, 88, 0, 0),
            Ipv4Addr::new(10, 88, 0, 255),
            Ipv4Addr::new(10, 88, 0, 1),
        ] {
            assert!(
                matches!(p.reserve(reserved, "x"), Err(IpamError::Reserved(ip)) if ip == reserved)
            );
        }
        let ip = Ipv4Addr::new(10, 88, 0, 50);
        p.reserve(ip, "x").expect("reserve");
        p.reserve(ip, "x").expect("reserve");
        assert!(matches!(
            p.reserve(ip, "y"),
            Err(IpamError::Taken { by, .. }) if by == "x"
        ));
        // allocate for the same owner returns the reserved address.
        assert_eq!(p.allocate("x").expect("allocate"), ip);
        // allocate never hands out a reserved address.
        let mut q = pool24();
        q.reserve(Ipv4Addr::new(10, 88, 0, 2), "fixed")
            .expect("reserve");
        assert_eq!(
            q.allocate("a").expect("allocate"),
            Ipv4Addr::new(10, 88, 0, 3)
        );
    }

    #[test]
    fn serde_round_trip() {
        let mut p = pool24();
        p.allocate("a").expect("allocate");
        p.allocate("b").expect("allocate");
        p.reserve(Ipv4Addr::new(10, 88, 0, 99), "c")
            .expect("reserve");
        p.release_owner("a");
        let json = serde_json::to_string(&p).expect("serialize");
        let mut back: Pool = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.subnet(), p.subnet());
        assert_eq!(back.gateway(), p.gateway());
        assert_eq!(
            back.leases().collect::<Vec<_>>(),
            p.leases().collect::<Vec<_>>()
        );
        // The cursor survives: the freed .2 is not handed out next.
        assert_eq!(
            back.allocate("d").expect("allocate"),
            Ipv4Addr::new(10, 88, 0, 4)
        );

        let s: Subnet =
            serde_json::from_str(r#"{"addr":"10.1.0.0","prefix":16}"#).expect("deserialize");
        assert_eq!(s.to_string(), "10.1.0.0/16");
        assert!(serde_json::from_str::<Subnet>(r#"{"addr":"10.1.0.1","prefix":16}"#).is_err());
    }

    #[test]
    fn corrupt_state_is_rejected() {
        let bad_lease = r#"{"subnet":{"addr":"10.88.0.0","prefix":24},"gateway":"10.88.0.1",
            "leases":{"10.88.0.1":"a"},"cursor":0}"#;
        assert!(serde_json::from_str::<Pool>(bad_lease).is_err());
        let bad_gw = r#"{"subnet":{"addr":"10.88.0.0","prefix":24},"gateway":"10.9.0.1",
            "leases":{},"cursor":0}"#;
        assert!(serde_json::from_str::<Pool>(bad_gw).is_err());
    }
}
