//! Leases against containers: at rsupd's start every network's pool is
//! brought in line with the containers that were loaded (`reconcile_pool`,
//! pure over a [`Pool`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::netstack::Pool;

/// One change `reconcile_pool` made (or could not make) to a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseFix {
    /// A lease that no container holds (its owner is unknown, or it is not
    /// the address its container has): given back.
    Released { ip: Ipv4Addr, owner: String },
    /// A container's address that the pool had lost: leased again.
    Restored { ip: Ipv4Addr, owner: String },
    /// A container's address that cannot be leased to it again (held by
    /// another, or not valid in the pool): left as it is.
    Conflict {
        ip: Ipv4Addr,
        owner: String,
        reason: String,
    },
}

impl std::fmt::Display for LeaseFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseFix::Released { ip, owner } => {
                write!(
                    f,
                    "released {ip}, leased to {owner}, which no container holds"
                )
            }
            LeaseFix::Restored { ip, owner } => {
                write!(
                    f,
                    "leased {ip} to container {owner} again (its lease was missing)"
                )
            }
            LeaseFix::Conflict { ip, owner, reason } => {
                write!(f, "cannot lease {ip} to container {owner} again: {reason}")
            }
        }
    }
}

/// Brings `pool` in line with `wanted` (address -> id of the loaded
/// container that has it): a lease that is not a container's address is
/// released unless `keep(owner)` (an owner whose record exists but could
/// not be read); a container's address missing from the pool is leased to
/// it again if it is free. Returns what it changed or could not.
pub(crate) fn reconcile_pool(
    pool: &mut Pool,
    wanted: &BTreeMap<Ipv4Addr, &str>,
    keep: &dyn Fn(&str) -> bool,
) -> Vec<LeaseFix> {
    let mut fixes = Vec::new();
    let stale: Vec<(Ipv4Addr, String)> = pool
        .leases()
        .filter(|(ip, owner)| wanted.get(ip) != Some(owner))
        // A loaded container holds only the addresses of its spec.
        .filter(|(_, owner)| wanted.values().any(|o| o == owner) || !keep(owner))
        .map(|(ip, owner)| (ip, owner.to_string()))
        .collect();
    for (ip, owner) in stale {
        pool.release(ip, &owner);
        fixes.push(LeaseFix::Released { ip, owner });
    }
    for (ip, owner) in wanted {
        if pool.leases().any(|(i, o)| i == *ip && o == *owner) {
            continue;
        }
        match pool.reserve(*ip, owner) {
            Ok(()) => fixes.push(LeaseFix::Restored {
                ip: *ip,
                owner: owner.to_string(),
            }),
            Err(e) => fixes.push(LeaseFix::Conflict {
                ip: *ip,
                owner: owner.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    fixes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netstack::Subnet;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn reconcile_releases_orphans_and_restores_missing_leases() {
        let subnet: Subnet = "10.9.0.0/24".parse().expect("subnet");
        let mut pool = Pool::new(subnet, None).expect("pool");
        pool.reserve(ip("10.9.0.2"), "a").expect("a");
        pool.reserve(ip("10.9.0.3"), "gone").expect("gone");
        // Loaded container "a" also holds an address that is not its own.
        pool.reserve(ip("10.9.0.4"), "a").expect("a twice");
        // An unreadable record's lease stays.
        pool.reserve(ip("10.9.0.5"), "unreadable")
            .expect("unreadable");
        // "c" wants an address "gone" held: freed first, then restored.
        let wanted: BTreeMap<Ipv4Addr, &str> = [
            (ip("10.9.0.2"), "a"),
            (ip("10.9.0.6"), "b"),
            (ip("10.9.0.3"), "c"),
            (ip("10.9.0.5"), "d"),
        ]
        .into_iter()
        .collect();
        let keep = |o: &str| ["a", "b", "c", "d", "unreadable"].contains(&o);
        let fixes = reconcile_pool(&mut pool, &wanted, &keep);
        assert_eq!(
            fixes,
            vec![
                LeaseFix::Released {
                    ip: ip("10.9.0.3"),
                    owner: "gone".into()
                },
                LeaseFix::Released {
                    ip: ip("10.9.0.4"),
                    owner: "a".into()
                },
                LeaseFix::Restored {
                    ip: ip("10.9.0.3"),
                    owner: "c".into()
                },
                LeaseFix::Conflict {
                    ip: ip("10.9.0.5"),
                    owner: "d".into(),
                    reason: "10.9.0.5 is already leased to unreadable".into()
                },
                LeaseFix::Restored {
                    ip: ip("10.9.0.6"),
                    owner: "b".into()
                },
            ]
        );
        let leases: Vec<(Ipv4Addr, String)> =
            pool.leases().map(|(i, o)| (i, o.to_string())).collect();
        assert_eq!(
            leases,
            vec![
                (ip("10.9.0.2"), "a".into()),
                (ip("10.9.0.3"), "c".into()),
                (ip("10.9.0.5"), "unreadable".into()),
                (ip("10.9.0.6"), "b".into()),
            ]
        );
        // A second pass has nothing to change but the conflict.
        let again = reconcile_pool(&mut pool, &wanted, &keep);
        assert!(
            matches!(again.as_slice(), [LeaseFix::Conflict { .. }]),
            "{again:?}"
        );
    }
}
