//! The name table of one network: which container answers to which names.
//!
//! Pure data, no I/O. Each owner (a container id) has one IPv4 address and a
//! list of names (its container name first, then aliases). Names are single
//! DNS labels, stored lowercase; several owners may share a name (the lookup
//! then returns all their addresses, as round-robin DNS would).
//!
//! A query matches a name when it is the name itself or the name under
//! [`DOMAIN`], with or without the trailing dot, in any case: `web`, `web.`,
//! `WEB.rsup` and `web.rsup.` all find `web`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// The domain the containers' names live under (`web.rsup.`); PTR answers
/// use it.
pub const DOMAIN: &str = "rsup";

#[derive(Debug, Clone)]
struct Entry {
    names: Vec<String>,
    ip: Ipv4Addr,
}

/// Names and addresses of one network. See the module docs for the names
/// a lookup accepts.
#[derive(Debug, Clone, Default)]
pub struct Records {
    owners: BTreeMap<String, Entry>,
    /// name -> owners that answer to it.
    by_name: HashMap<String, BTreeSet<String>>,
    /// address -> owners that hold it.
    by_ip: HashMap<Ipv4Addr, BTreeSet<String>>,
}

/// `name` as a stored label: lowercase, 1-63 bytes of letters, digits, '-'
/// and '_'; None if it cannot be one.
fn label(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| name.to_ascii_lowercase())
}

/// The label a query name asks for: strips one trailing '.' and then a
/// `.rsup` suffix; None if what is left is not a single label.
fn query_label(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let name = match name.strip_suffix(DOMAIN) {
        Some(rest) if rest.ends_with('.') => &rest[..rest.len() - 1],
        _ => name.as_str(),
    };
    label(name)
}

impl Records {
    /// Sets the names and address of `owner`, replacing what it had. Names
    /// that are not valid single labels (see [`label`]) are skipped, with a
    /// warning; duplicates collapse.
    pub fn set(&mut self, owner: &str, names: &[String], ip: Ipv4Addr) {
        self.remove(owner);
        let mut labels: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            match label(n) {
                Some(l) if !labels.contains(&l) => labels.push(l),
                Some(_) => {}
                None => tracing::warn!(owner, name = %n, "not a DNS label, not served"),
            }
        }
        for l in &labels {
            self.by_name
                .entry(l.clone())
                .or_default()
                .insert(owner.to_owned());
        }
        self.by_ip.entry(ip).or_default().insert(owner.to_owned());
        self.owners
            .insert(owner.to_owned(), Entry { names: labels, ip });
    }

    /// Forgets `owner` (nothing happens if it is unknown).
    pub fn remove(&mut self, owner: &str) {
        let Some(old) = self.owners.remove(owner) else {
            return;
        };
        for n in &old.names {
            if let Some(set) = self.by_name.get_mut(n) {
                set.remove(owner);
                if set.is_empty() {
                    self.by_name.remove(n);
                }
            }
        }
        if let Some(set) = self.by_ip.get_mut(&old.ip) {
            set.remove(owner);
            if set.is_empty() {
                self.by_ip.remove(&old.ip);
            }
        }
    }

    /// The addresses `name` resolves to (sorted, no duplicates; empty if
    /// unknown). See the module docs for the forms accepted.
    pub fn lookup(&self, name: &str) -> Vec<Ipv4Addr> {
        let Some(l) = query_label(name) else {
            return Vec::new();
        };
        let ips: BTreeSet<Ipv4Addr> = self
            .by_name
            .get(&l)
            .into_iter()
            .flatten()
            .filter_map(|o| self.owners.get(o).map(|e| e.ip))
            .collect();
        ips.into_iter().collect()
    }

    /// The primary name (first valid name) of the owner of `ip`, as a bare
    /// label; if several owners share the address, the smallest owner id
    /// wins.
    pub fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
        self.by_ip
            .get(&ip)?
            .iter()
            .filter_map(|o| self.owners.get(o)?.names.first())
            .next()
            .cloned()
    }

    /// Whether any owner is known.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn set_lookup_replace_remove() {
        let mut r = Records::default();
        let ip = Ipv4Addr::new(10, 88, 0, 2);
        r.set("c1", &names(&["Web", "www"]), ip);
        for q in ["web", "web.", "WEB", "web.rsup", "Web.Rsup.", "www"] {
            assert_eq!(r.lookup(q), vec![ip], "{q}");
        }
        for q in [
            "",
            ".",
            "web.other",
            "web.rsup.x",
            "x.web.rsup.",
            "rsup",
            "rsup.",
        ] {
            assert!(r.lookup(q).is_empty(), "{q}");
        }
        assert_eq!(r.reverse(ip).as_deref(), Some("web"));

        let ip2 = Ipv4Addr::new(10, 88, 0, 3);
        r.set("c1", &names(&["web"]), ip2);
        assert_eq!(r.lookup("web"), vec![ip2]);
        assert!(r.lookup("www").is_empty(), "old alias dropped");
        assert_eq!(r.reverse(ip), None);
        assert_eq!(r.reverse(ip2).as_deref(), Some("web"));

        r.remove("c1");
        assert!(r.lookup("web").is_empty());
        assert_eq!(r.reverse(ip2), None);
        assert!(r.is_empty());
        r.remove("c1");
    }

    #[test]
    fn shared_names_and_invalid_labels() {
        let mut r = Records::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 3));
        r.set("c1", &names(&["db", "bad.name", "", "db"]), a);
        r.set("c2", &names(&["db", "replica"]), b);
        assert_eq!(r.lookup("db"), vec![b, a]);
        assert!(r.lookup("bad.name").is_empty());
        r.remove("c1");
        assert_eq!(r.lookup("db"), vec![b]);
        // An owner with no valid name still owns its address, with no PTR.
        r.set("c3", &names(&["no/slash"]), a);
        assert_eq!(r.reverse(a), None);
    }
}
