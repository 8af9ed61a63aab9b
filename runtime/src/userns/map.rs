//! Id maps: [`IdRange`], one line of a kernel id map, and [`IdMap`], the
//! uid and gid maps of a container's user namespace, with the translation
//! of container ids to host ids, the text the kernel takes, and the stable
//! key that names a map's shifted copies.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::quote;

/// Most ranges a kernel id map takes (`user_namespaces(7)`).
pub const MAX_RANGES: usize = 340;

/// One line of an id map: `size` ids from `container` on are host ids from
/// `host` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdRange {
    pub(super) fn container_end(&self) -> u64 {
        u64::from(self.container) + u64::from(self.size)
    }

    pub(super) fn host_end(&self) -> u64 {
        u64::from(self.host) + u64::from(self.size)
    }

    /// Parses podman's `CONTAINER_ID:HOST_ID:SIZE`.
    pub fn parse(s: &str) -> Result<IdRange, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [c, h, n] = parts[..] else {
            return Err(format!("{} is not CONTAINER_ID:HOST_ID:SIZE", quote(s)));
        };
        let num = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{}: {what} {} is not a number", quote(s), quote(v)))
        };
        let r = IdRange {
            container: num(c, "container id")?,
            host: num(h, "host id")?,
            size: num(n, "size")?,
        };
        if r.size == 0 {
            return Err(format!("{}: the size must be at least 1", quote(s)));
        }
        if r.container_end() > u64::from(u32::MAX) || r.host_end() > u64::from(u32::MAX) {
            return Err(format!("{}: the range goes past the last id", quote(s)));
        }
        Ok(r)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

/// The uid and gid maps of a container's user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

pub(super) fn map_id(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.container && u64::from(id) < r.container_end())
        .map(|r| r.host + (id - r.container))
}

/// The text of `/proc/PID/uid_map` (or gid_map) for `ranges`.
pub fn proc_map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

impl IdMap {
    /// Host uid of container uid `id`, if mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        map_id(&self.uids, id)
    }

    /// Host gid of container gid `id`, if mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        map_id(&self.gids, id)
    }

    /// Host uid and gid of container root.
    pub fn root(&self) -> (u32, u32) {
        (self.host_uid(0).unwrap_or(0), self.host_gid(0).unwrap_or(0))
    }

    /// A stable name of the map, used as a directory name of the cache.
    pub fn key(&self) -> String {
        let text = format!(
            "u{}g{}",
            proc_map_text(&self.uids),
            proc_map_text(&self.gids)
        );
        format!("{:016x}", fnv1a(text.as_bytes()))
    }

    pub(super) fn describe(&self) -> String {
        let list = |r: &[IdRange]| {
            r.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("uids {} gids {}", list(&self.uids), list(&self.gids))
    }
}

/// FNV-1a, 64 bits: a stable hash for cache directory names (the full key is
/// also stored in the entry and compared, so a collision cannot mix copies).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_config_json_without_userns_loads() {
        let spec = crate::spec::ContainerSpec {
            name: "old".into(),
            rootfs: "/".into(),
            image: None,
            command: vec!["true".into()],
            executable: "/bin/true".into(),
            env: Vec::new(),
            working_dir: "/".into(),
            user_spec: String::new(),
            user_at_start: false,
            user: crate::spec::User { uid: 0, gid: 0 },
            hostname: "old".into(),
            auto_remove: false,
            log: crate::spec::LogConfig::default(),
            resources: Default::default(),
            restart: Default::default(),
            supervisor: None,
            health: None,
            networks: Vec::new(),
            ports: Vec::new(),
            security: Default::default(),
            mounts: Vec::new(),
            read_only: false,
            userns: None,
            labels: Default::default(),
        };
        let mut json = serde_json::to_value(&spec).expect("json");
        json.as_object_mut().expect("object").remove("userns");
        let back: crate::spec::ContainerSpec = serde_json::from_value(json).expect("loads");
        assert_eq!(back, spec);
    }
}
