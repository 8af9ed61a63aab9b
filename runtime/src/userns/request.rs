//! A user namespace as requested ([`UsernsRequest`]) and as the daemon is
//! configured for it ([`UsernsConfig`]: the remap user and its subordinate
//! id files), and [`resolve`], which turns the one into an [`IdMap`] checked
//! against the other.

use super::error::UsernsError;
use std::path::{Path, PathBuf};

use super::map::{IdMap, IdRange, MAX_RANGES, map_id};
use crate::error::Error;
use crate::names::quote;

/// Ids a `--userns remap` maps at most (Docker's and podman's default size).
pub const DEFAULT_SIZE: u32 = 65536;

/// Where the daemon finds its remap user's subordinate ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernsConfig {
    /// User whose ranges `remap` uses (a name, or a uid).
    pub user: String,
    pub subuid_file: PathBuf,
    pub subgid_file: PathBuf,
}

impl Default for UsernsConfig {
    fn default() -> Self {
        UsernsConfig {
            user: "rsup".into(),
            subuid_file: "/etc/subuid".into(),
            subgid_file: "/etc/subgid".into(),
        }
    }
}

/// A user namespace as requested.
#[derive(Debug, Clone, Default)]
pub struct UsernsRequest {
    /// "" or "host": none (unless maps are given); "remap": the daemon's range.
    pub mode: String,
    /// `CONTAINER:HOST:SIZE` entries; any entry implies a user namespace.
    pub uid_map: Vec<String>,
    /// As `uid_map`; when only `uid_map` is given, the gid map is the same.
    pub gid_map: Vec<String>,
}

/// Subordinate id ranges `(start, count)` of `user` in a subuid/subgid
/// file's text. The first field may be the name or the uid (`uid`, if the
/// user exists on the host); malformed lines and comments are skipped.
pub fn parse_subid(text: &str, user: &str, uid: Option<u32>) -> Vec<(u32, u32)> {
    let uid = uid.map(|u| u.to_string());
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() || !(owner == user || uid.as_deref() == Some(owner)) {
                return None;
            }
            let start = start.trim().parse::<u32>().ok()?;
            let count = count.trim().parse::<u32>().ok()?;
            (count > 0 && u64::from(start) + u64::from(count) <= u64::from(u32::MAX))
                .then_some((start, count))
        })
        .collect()
}

/// The ranges `user` owns in `file`. A missing file holds none.
fn subid_ranges(file: &Path, user: &str) -> Result<Vec<(u32, u32)>, Error> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(UsernsError::ReadIds {
                path: file.to_path_buf(),
                source: e,
            }
            .into());
        }
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => Some(uid),
        Err(_) => nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    };
    Ok(parse_subid(&text, user, uid))
}

/// Sorted ranges with touching or overlapping ones merged, as `[start, end)`.
fn merged(ranges: &[(u32, u32)]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(s, c)| (u64::from(s), u64::from(s) + u64::from(c)))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn show_ranges(ranges: &[(u32, u32)]) -> String {
    merged(ranges)
        .iter()
        .map(|(s, e)| format!("{s}-{}", e - 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one map against the remap user's ranges: each entry inside them,
/// no overlap on either side, id 0 mapped.
fn check_map(
    field: &'static str,
    kind: &str,
    user: &str,
    map: &[IdRange],
    allowed: &[(u32, u32)],
) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidArgument { field, reason };
    if map.len() > MAX_RANGES {
        return Err(invalid(format!(
            "{} entries: the kernel takes at most {MAX_RANGES}",
            map.len()
        )));
    }
    let allowed_merged = merged(allowed);
    for r in map {
        let inside = allowed_merged
            .iter()
            .any(|&(s, e)| u64::from(r.host) >= s && r.host_end() <= e);
        if !inside {
            return Err(invalid(format!(
                "{r}: host ids {}-{} are outside the {kind} ranges of {user} ({})",
                r.host,
                r.host_end() - 1,
                show_ranges(allowed)
            )));
        }
    }
    for (i, a) in map.iter().enumerate() {
        for b in &map[i + 1..] {
            let c = u64::from(a.container) < b.container_end()
                && u64::from(b.container) < a.container_end();
            let h = u64::from(a.host) < b.host_end() && u64::from(b.host) < a.host_end();
            if c || h {
                return Err(invalid(format!(
                    "{a} and {b} overlap ({} ids)",
                    if c { "container" } else { "host" }
                )));
            }
        }
    }
    if map_id(map, 0).is_none() {
        return Err(invalid(format!(
            "container {} 0 (root) is not mapped",
            if field == "uid_map" { "uid" } else { "gid" }
        )));
    }
    Ok(())
}

fn parse_map(field: &'static str, entries: &[String]) -> Result<Vec<IdRange>, Error> {
    entries
        .iter()
        .map(|e| IdRange::parse(e).map_err(|reason| Error::InvalidArgument { field, reason }))
        .collect()
}

/// Resolves a request into the container's maps (`None`: no user namespace),
/// reading the remap user's subordinate ranges now (so edits of the files
/// apply to the next create).
pub fn resolve(req: &UsernsRequest, cfg: &UsernsConfig) -> Result<Option<IdMap>, Error> {
    let explicit = !req.uid_map.is_empty() || !req.gid_map.is_empty();
    match req.mode.as_str() {
        "" | "host" if !explicit => return Ok(None),
        "host" => {
            return Err(Error::InvalidArgument {
                field: "userns",
                reason: "\"host\" (no user namespace) cannot be combined with uid_map or gid_map"
                    .into(),
            });
        }
        "" | "remap" => {}
        other => {
            return Err(Error::InvalidArgument {
                field: "userns",
                reason: format!(
                    "{} is not a user namespace mode (host or remap)",
                    quote(other)
                ),
            });
        }
    }
    let uid_map = parse_map("uid_map", &req.uid_map)?;
    let gid_map = parse_map("gid_map", &req.gid_map)?;
    let user = &cfg.user;
    let subuid = subid_ranges(&cfg.subuid_file, user)?;
    let subgid = subid_ranges(&cfg.subgid_file, user)?;
    let missing = |kind: &'static str, file: &Path| {
        Error::from(UsernsError::NoRanges {
            kind,
            user: user.to_string(),
            path: file.to_path_buf(),
        })
    };
    let (Some(&(uid_start, uid_count)), Some(&(gid_start, gid_count))) =
        (subuid.first(), subgid.first())
    else {
        return Err(if subuid.is_empty() {
            missing("subuid", &cfg.subuid_file)
        } else {
            missing("subgid", &cfg.subgid_file)
        });
    };
    let default_range = |start: u32, count: u32| IdRange {
        container: 0,
        host: start,
        size: count.min(DEFAULT_SIZE),
    };
    let (uids, gids) = match (uid_map.is_empty(), gid_map.is_empty()) {
        (true, true) => (
            vec![default_range(uid_start, uid_count)],
            vec![default_range(gid_start, gid_count)],
        ),
        (false, true) => (uid_map.clone(), uid_map),
        (true, false) => {
            return Err(Error::InvalidArgument {
                field: "uid_map",
                reason: "a gid_map needs a uid_map too".into(),
            });
        }
        (false, false) => (uid_map, gid_map),
    };
    check_map("uid_map", "subuid", user, &uids, &subuid)?;
    check_map("gid_map", "subgid", user, &gids, &subgid)?;
    Ok(Some(IdMap { uids, gids }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, subuid: &str, subgid: &str) -> UsernsConfig {
        std::fs::write(dir.join("subuid"), subuid).expect("write");
        std::fs::write(dir.join("subgid"), subgid).expect("write");
        UsernsConfig {
            user: "rsup".into(),
            subuid_file: dir.join("subuid"),
            subgid_file: dir.join("subgid"),
        }
    }

    fn req(mode: &str, uid: &[&str], gid: &[&str]) -> UsernsRequest {
        UsernsRequest {
            mode: mode.into(),
            uid_map: uid.iter().map(|s| s.to_string()).collect(),
            gid_map: gid.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn subid_files_parse_by_name_or_uid() {
        let text =
            "# comment\nother:1000:10\nrsup:100000:65536\n4242:300000:10\nrsup:bad:1\nrsup:5:0\n";
        assert_eq!(parse_subid(text, "rsup", None), vec![(100000, 65536)]);
        assert_eq!(
            parse_subid(text, "rsup", Some(4242)),
            vec![(100000, 65536), (300000, 10)]
        );
        assert!(parse_subid(text, "nobody-here", None).is_empty());
    }

    #[test]
    fn remap_uses_the_first_range_capped_at_65536() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = cfg(d.path(), "rsup:100000:200000\n", "rsup:300000:1000\n");
        let m = resolve(&req("remap", &[], &[]), &c)
            .expect("ok")
            .expect("a map");
        assert_eq!(
            m.uids,
            vec![IdRange {
                container: 0,
                host: 100000,
                size: 65536
            }]
        );
        assert_eq!(
            m.gids,
            vec![IdRange {
                container: 0,
                host: 300000,
                size: 1000
            }]
        );
        assert_eq!(m.host_uid(1000), Some(101000));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.root(), (100000, 300000));
        assert_eq!(resolve(&req("", &[], &[]), &c).expect("ok"), None);
        assert_eq!(resolve(&req("host", &[], &[]), &c).expect("ok"), None);
    }

    #[test]
    fn explicit_maps_are_checked() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = cfg(
            d.path(),
            "rsup:100000:65536\nrsup:165536:1000\n",
            "rsup:100000:70000\n",
        );
        let ok = resolve(&req("", &["0:100000:1000", "1000:166000:10"], &[]), &c)
            .expect("ok")
            .expect("map");
        assert_eq!(ok.gids, ok.uids, "gid map follows the uid map");
        // Touching ranges count as one.
        assert!(resolve(&req("", &["0:165000:1000"], &[]), &c).is_ok());
        let reason = |r: UsernsRequest| match resolve(&r, &c) {
            Err(Error::InvalidArgument { field, reason }) => format!("{field}: {reason}"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(req("remap", &["0:5000:1000"], &[])),
            "uid_map: 0:5000:1000: host ids 5000-5999 are outside the subuid ranges of rsup (100000-166535)"
        );
        assert!(reason(req("", &["0:100000:10", "5:100100:10"], &[])).contains("overlap"));
        assert!(reason(req("", &["0:100000:10", "100:100005:10"], &[])).contains("overlap"));
        assert!(reason(req("", &["1:100000:10"], &[])).contains("not mapped"));
        assert!(reason(req("", &["0:100000"], &[])).starts_with("uid_map:"));
        assert!(reason(req("", &["0:100000:0"], &[])).contains("at least 1"));
        assert!(reason(req("", &["0:100000:10"], &["0:180000:10"])).starts_with("gid_map:"));
        assert!(reason(req("host", &["0:100000:10"], &[])).starts_with("userns:"));
        assert!(reason(req("bogus", &[], &[])).starts_with("userns:"));
    }

    #[test]
    fn missing_ranges_are_a_failed_precondition() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = cfg(d.path(), "", "rsup:100000:65536\n");
        match resolve(&req("remap", &[], &[]), &c) {
            Err(e @ Error::Userns(UsernsError::NoRanges { kind: "subuid", .. })) => {
                assert!(e.to_string().contains("subuid ranges of rsup"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let c = UsernsConfig {
            subuid_file: d.path().join("nonexistent"),
            ..c
        };
        assert!(matches!(
            resolve(&req("remap", &[], &[]), &c),
            Err(Error::Userns(UsernsError::NoRanges { .. }))
        ));
    }
}
