//! User namespaces: container root as an unprivileged host uid.
//!
//! A container with a user namespace runs every process with ids translated
//! by an [`IdMap`]: container uid `c` is host uid `host + (c - container)`
//! for the range that holds `c`. The maps come from the daemon's remap user
//! (`--userns-remap-user`, `rsup` by default) and its subordinate id ranges
//! in `/etc/subuid` and `/etc/subgid` (`name-or-uid:start:count`, several
//! lines allowed): `--userns remap` maps container ids `0..N` onto the start
//! of the first range (N = min(count, 65536)); explicit `--uidmap` /
//! `--gidmap` entries (`CONTAINER:HOST:SIZE`) must lie inside those ranges,
//! must not overlap, and must map id 0.
//!
//! Invariants:
//! * A validated [`IdMap`] maps container id 0 in both maps, its ranges do
//!   not overlap on either side, and it has at most [`MAX_RANGES`] ranges
//!   (the kernel's limit).
//! * The lower directories of a remapped container are shifted copies
//!   ([`shifted_lowerdirs`]): every entry chowned through the map, built once
//!   per (map, lower dir) in a temporary directory and renamed into place, so
//!   a copy that exists is complete. The cache is never modified after the
//!   rename and nothing here removes it.
//! * A shifted copy keeps the holes of sparse files (only their data ranges
//!   are copied, found with `SEEK_DATA`/`SEEK_HOLE`), and, built through
//!   [`shifted_lowerdirs_within`], stops with RESOURCE_EXHAUSTED before the
//!   state filesystem falls under the image import's free-space or inode
//!   reserve: an image's files cost the same here as when it was imported.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::imagestore::limits::{Budget, CHECK_EVERY, LimitError, UnpackLimits};
use crate::names::quote;

/// Most ranges a kernel id map takes (`user_namespaces(7)`).
pub const MAX_RANGES: usize = 340;
/// Ids a `--userns remap` maps at most (Docker's and podman's default size).
pub const DEFAULT_SIZE: u32 = 65536;

/// One line of an id map: `size` ids from `container` on are host ids from
/// `host` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdRange {
    fn container_end(&self) -> u64 {
        u64::from(self.container) + u64::from(self.size)
    }

    fn host_end(&self) -> u64 {
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

fn map_id(ranges: &[IdRange], id: u32) -> Option<u32> {
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

    fn describe(&self) -> String {
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
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

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
            return Err(Error::FailedPrecondition(format!(
                "reading {}: {e}",
                file.display()
            )));
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
    let missing = |kind: &str, file: &Path| {
        Error::FailedPrecondition(format!(
            "user namespaces need {kind} ranges of {user} in {}, and there are none \
             (add a line such as {user}:100000:65536, or start rsupd with another \
             --userns-remap-user)",
            file.display()
        ))
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

/// Errors of building a shifted copy.
#[derive(Debug, thiserror::Error)]
#[error("shifted copy of {lower} for {map}: {op} {path}: {source}")]
pub struct ShiftError {
    lower: PathBuf,
    map: String,
    op: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl From<ShiftError> for Error {
    fn from(e: ShiftError) -> Error {
        Error::FailedPrecondition(e.to_string())
    }
}

/// Directory of the shifted copies of `state`.
pub fn cache_dir(state: &Path) -> PathBuf {
    state.join("userns")
}

/// Returns, for each of `lowers` (in the same order, top first), a copy of
/// it whose every entry is owned by the host ids `map` gives its owner
/// (ids the map lacks keep their host owner, and so show as nobody), so that
/// container root owns what host root owned. Copies are cached under
/// `<state>/userns/<map key>/<lower key>/root` and built once: in a
/// temporary directory renamed into place. The lower key covers the lower
/// dir's path and its mtime and ctime: a rootfs changed in place below its
/// top directory is not noticed (layers are immutable; a rootfs changed in
/// place needs a new path or a touch of its top directory).
///
/// Blocking (it may copy a whole tree). Checks no reserve: rsupd builds
/// the copies with [`shifted_lowerdirs_within`] before the shim's call
/// finds them here.
pub fn shifted_lowerdirs(
    state: &Path,
    lowers: &[PathBuf],
    map: &IdMap,
) -> Result<Vec<PathBuf>, Error> {
    shifted_lowerdirs_within(state, lowers, map, None)
}

/// [`shifted_lowerdirs`] that charges what it copies (bytes of data and
/// one inode per entry) against the free-space and inode reserves of
/// `limits` on the state filesystem (its per-image maximum does not apply):
/// past one, the copy stops, is removed, and the error is
/// RESOURCE_EXHAUSTED.
pub fn shifted_lowerdirs_within(
    state: &Path,
    lowers: &[PathBuf],
    map: &IdMap,
    limits: Option<&UnpackLimits>,
) -> Result<Vec<PathBuf>, Error> {
    let base = cache_dir(state);
    let map_dir = base.join(map.key());
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| {
            Error::FailedPrecondition(format!("{op} {}: {source}", path.display()))
        }
    };
    // Only root walks the cache.
    crate::store::private_dir(&base)?;
    std::fs::create_dir_all(&map_dir).map_err(io("mkdir", &map_dir))?;
    remove_abandoned_builds(&map_dir);
    let desc = map.describe();
    let map_file = map_dir.join("map");
    if !map_file.exists() {
        write_atomic(&map_file, desc.as_bytes()).map_err(io("write", &map_file))?;
    }
    lowers
        .iter()
        .map(|lower| {
            let md = std::fs::metadata(lower).map_err(io("stat", lower))?;
            let key = format!(
                "{}\n{}.{}\n{}.{}\n{desc}\n",
                lower.display(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec()
            );
            let entry = map_dir.join(format!("{:016x}", fnv1a(key.as_bytes())));
            let root = entry.join("root");
            if root.is_dir() {
                let stored = std::fs::read_to_string(entry.join("source")).unwrap_or_default();
                if stored == key {
                    return Ok(root);
                }
                return Err(Error::FailedPrecondition(format!(
                    "{} holds a shifted copy of something else (hash collision?); remove it",
                    entry.display()
                )));
            }
            build(lower, &entry, &key, map, limits)?;
            Ok(root)
        })
        .collect()
}

/// Removes `.tmp-<entry>-<pid>` build directories whose builder is gone
/// (a shim killed mid-copy); those of live builders stay.
fn remove_abandoned_builds(map_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(map_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Builds `entry` (`root` + `source`) for `lower` in a temporary directory
/// next to it and renames it into place; when another builder won the race,
/// its copy is kept and ours removed.
fn build(
    lower: &Path,
    entry: &Path,
    key: &str,
    map: &IdMap,
    limits: Option<&UnpackLimits>,
) -> Result<(), Error> {
    let name = entry
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = entry.with_file_name(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let budget = limits.map(|l| {
        let limits = UnpackLimits {
            max_image_bytes: u64::MAX,
            ..*l
        };
        Budget::new("the shifted copy", limits, entry.parent().unwrap_or(entry))
    });
    let result = (|| -> Result<(), Error> {
        let err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            let lower = lower.to_path_buf();
            let map = map.describe();
            move |source| ShiftError {
                lower,
                map,
                op,
                path,
                source,
            }
        };
        std::fs::create_dir(&tmp).map_err(err("mkdir", &tmp))?;
        let mut links = HashMap::new();
        copy_shifted(lower, &tmp.join("root"), map, &mut links, budget.as_ref()).map_err(|e| {
            match e {
                CopyError::Io(op, path, e) => Error::from(err(op, &path)(e)),
                CopyError::Limit(limit) => Error::from(limit),
            }
        })?;
        let src = tmp.join("source");
        write_atomic(&src, key.as_bytes()).map_err(err("write", &src))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, entry) {
        Ok(()) => Ok(()),
        Err(_) if entry.join("root").is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(Error::FailedPrecondition(format!(
                "renaming {} to {}: {e}",
                tmp.display(),
                entry.display()
            )))
        }
    }
}

/// Why [`copy_shifted`] stopped: an operation on a path failed, or the
/// copy reached a reserve of the state filesystem.
#[derive(Debug)]
enum CopyError {
    Io(&'static str, PathBuf, std::io::Error),
    Limit(LimitError),
}

impl From<LimitError> for CopyError {
    fn from(e: LimitError) -> CopyError {
        CopyError::Limit(e)
    }
}

/// overlayfs' mark of an opaque directory (set by the image store).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Copies `src` to `dst` (which must not exist), entry by entry: regular
/// files (hard links kept as hard links), directories, symlinks, devices,
/// fifos and sockets, each chowned through `map`, with its mode (set after
/// the chown, which clears setuid bits) and times. Regular files keep their
/// holes ([`copy_data`]). Each entry and every data byte is charged to
/// `budget`, if any, before it is written.
///
/// Each source entry is opened once, `O_PATH | O_NOFOLLOW`, and everything
/// after (its stat, its children, its content, its link target) is read
/// through that fd (as `/proc/self/fd/N`): a symlink is copied as a symlink
/// and never followed, even if an entry of a `--rootfs` is swapped for one
/// while we copy. Everything is written under `dst`, a fresh directory of
/// the root-only cache.
fn copy_shifted(
    src: &Path,
    dst: &Path,
    map: &IdMap,
    links: &mut HashMap<(u64, u64), PathBuf>,
    budget: Option<&Budget>,
) -> Result<(), CopyError> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{Mode, SFlag, UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    use std::os::fd::AsRawFd;
    let e = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err: std::io::Error| CopyError::Io(op, p, err)
    };
    let errno = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err: nix::errno::Errno| CopyError::Io(op, p, std::io::Error::from(err))
    };
    if let Some(b) = budget {
        b.charge_entry()?;
    }
    let fd = nix::fcntl::open(
        src,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open", src))?;
    let me = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let md = nix::sys::stat::fstat(&fd).map_err(errno("stat", src))?;
    let kind = md.st_mode & libc::S_IFMT;
    let uid = map.host_uid(md.st_uid).unwrap_or(md.st_uid);
    let gid = map.host_gid(md.st_gid).unwrap_or(md.st_gid);
    let mode = md.st_mode & 0o7777;
    let (is_dir, is_link, is_file) = (
        kind == libc::S_IFDIR,
        kind == libc::S_IFLNK,
        kind == libc::S_IFREG,
    );
    if is_file && md.st_nlink > 1 {
        if let Some(first) = links.get(&(md.st_dev, md.st_ino)) {
            return std::fs::hard_link(first, dst).map_err(e("link", dst));
        }
        links.insert((md.st_dev, md.st_ino), dst.to_path_buf());
    }
    if is_dir {
        std::fs::create_dir(dst).map_err(e("mkdir", dst))?;
        let mut children: Vec<_> = std::fs::read_dir(&me)
            .map_err(e("readdir", src))?
            .collect::<Result<_, _>>()
            .map_err(e("readdir", src))?;
        children.sort_by_key(|c| c.file_name());
        for c in children {
            // Resolved in this very directory (its fd), not by its path.
            copy_shifted(
                &me.join(c.file_name()),
                &dst.join(c.file_name()),
                map,
                links,
                budget,
            )?;
        }
        // An image layer's opaque directory must stay opaque in the copy.
        if let Ok(Some(v)) = crate::sys::lgetxattr(src, OPAQUE_XATTR) {
            crate::sys::lsetxattr(dst, OPAQUE_XATTR, &v).map_err(errno("setxattr", dst))?;
        }
    } else if is_link {
        let target = nix::fcntl::readlinkat(&fd, "").map_err(errno("readlink", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(e("symlink", dst))?;
    } else if is_file {
        // The magic link reopens exactly the inode stat'ed above.
        copy_data(&me, dst, budget)?;
    } else {
        let kind = SFlag::from_bits_truncate(kind);
        nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(mode), md.st_rdev)
            .map_err(errno("mknod", dst))?;
    }
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(e("chown", dst))?;
    if !is_link {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
            .map_err(e("chmod", dst))?;
    }
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &TimeSpec::new(md.st_atime, md.st_atime_nsec),
        &TimeSpec::new(md.st_mtime, md.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(errno("utimensat", dst))?;
    Ok(())
}

/// Copies the regular file `src` to the new file `dst` (mode 0600 until
/// the caller sets its own), data ranges only: what `SEEK_DATA`/`SEEK_HOLE`
/// say is a hole stays one (then `dst` gets `src`'s length), so a sparse
/// file of 50 GB costs here what its data costs. A filesystem without
/// hole reporting shows the whole file as data. Each chunk of at most
/// [`CHECK_EVERY`] bytes is charged to `budget` before it is written.
fn copy_data(src: &Path, dst: &Path, budget: Option<&Budget>) -> Result<(), CopyError> {
    use nix::errno::Errno;
    use nix::unistd::{Whence, lseek};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err: std::io::Error| CopyError::Io(op, p, err)
    };
    let mut from = std::fs::File::open(src).map_err(io("open", src))?;
    let len = from.metadata().map_err(io("stat", src))?.len();
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io("create", dst))?;
    let mut pos: i64 = 0;
    while pos < end {
        let data = match lseek(&from, pos, Whence::SeekData) {
            Ok(d) => d,
            // Nothing but a hole from `pos` to the end.
            Err(Errno::ENXIO) => break,
            Err(err) => return Err(io("seek data in", src)(err.into())),
        };
        let hole = lseek(&from, data, Whence::SeekHole)
            .map_err(|err| io("seek a hole in", src)(err.into()))?
            .min(end);
        let mut at = data;
        while at < hole {
            let chunk = (hole - at).min(i64::try_from(CHECK_EVERY).unwrap_or(i64::MAX));
            let n = u64::try_from(chunk).unwrap_or(0);
            if let Some(b) = budget {
                b.charge(n)?;
            }
            let offset = u64::try_from(at).unwrap_or(0);
            from.seek(SeekFrom::Start(offset))
                .map_err(io("seek", src))?;
            to.seek(SeekFrom::Start(offset)).map_err(io("seek", dst))?;
            // std copies file to file with copy_file_range where it can.
            let copied =
                std::io::copy(&mut (&mut from).take(n), &mut to).map_err(io("copy to", dst))?;
            if copied < n {
                // The file shrank under us: what is left is a hole.
                break;
            }
            at += chunk;
        }
        pos = hole.max(pos + 1);
    }
    to.set_len(len).map_err(io("truncate", dst))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
            Err(Error::FailedPrecondition(m)) => assert!(m.contains("subuid"), "{m}"),
            other => panic!("{other:?}"),
        }
        let c = UsernsConfig {
            subuid_file: d.path().join("nonexistent"),
            ..c
        };
        assert!(matches!(
            resolve(&req("remap", &[], &[]), &c),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn shifted_copy_chowns_through_the_map_and_is_cached() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let lower = d.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).expect("mkdir");
        std::fs::write(lower.join("etc/passwd"), "root\n").expect("write");
        std::fs::set_permissions(
            lower.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("chmod");
        std::fs::hard_link(lower.join("etc/passwd"), lower.join("etc/hl")).expect("link");
        symlink("passwd", lower.join("etc/link")).expect("ln");
        // Symlinks out of the tree are copied as symlinks, never followed.
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "s").expect("write");
        let before = std::fs::metadata(outside.join("secret")).expect("stat");
        symlink(&outside, lower.join("out")).expect("ln");
        symlink(outside.join("secret"), lower.join("etc/secret")).expect("ln");
        std::fs::write(lower.join("app"), "x").expect("write");
        std::os::unix::fs::chown(lower.join("app"), Some(1000), Some(50)).expect("chown");
        std::os::unix::fs::chown(d.path().join("lower/etc"), Some(70000), Some(0)).expect("chown");
        let map = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: 200000,
                size: 65536,
            }],
            gids: vec![IdRange {
                container: 0,
                host: 300000,
                size: 65536,
            }],
        };
        let state = d.path().join("state");
        let out = shifted_lowerdirs(&state, std::slice::from_ref(&lower), &map).expect("copy");
        let root = &out[0];
        let owner = |p: &str| {
            let m = std::fs::symlink_metadata(root.join(p)).expect("stat");
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(owner(""), (200000, 300000, 0o755));
        assert_eq!(owner("etc/passwd"), (200000, 300000, 0o4755));
        assert_eq!(owner("app"), (201000, 300050, 0o644));
        assert_eq!(owner("etc").0, 70000, "unmapped owners are kept");
        assert_eq!(owner("etc/link").0, 200000);
        assert_eq!(
            std::fs::read_link(root.join("etc/link")).expect("readlink"),
            Path::new("passwd")
        );
        for (link, to) in [
            ("out", outside.clone()),
            ("etc/secret", outside.join("secret")),
        ] {
            let m = std::fs::symlink_metadata(root.join(link)).expect("lstat");
            assert!(m.file_type().is_symlink(), "{link}");
            assert_eq!(std::fs::read_link(root.join(link)).expect("readlink"), to);
        }
        let theirs = std::fs::metadata(outside.join("secret")).expect("stat");
        assert_eq!(
            (theirs.uid(), theirs.gid(), theirs.mode()),
            (before.uid(), before.gid(), before.mode()),
            "outside untouched"
        );
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);
        let ino = |p: &str| std::fs::metadata(root.join(p)).expect("stat").ino();
        assert_eq!(ino("etc/passwd"), ino("etc/hl"), "hard links stay linked");
        // The original is untouched.
        assert_eq!(
            std::fs::metadata(lower.join("etc/passwd"))
                .expect("stat")
                .uid(),
            0
        );
        // A second call reuses the copy.
        std::fs::write(root.join("reused"), "").expect("write");
        let again = shifted_lowerdirs(&state, std::slice::from_ref(&lower), &map).expect("copy");
        assert_eq!(again, out);
        assert!(again[0].join("reused").exists());
        // Another map gets its own copy.
        let other = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: 400000,
                size: 10,
            }],
            gids: map.gids.clone(),
        };
        let o = shifted_lowerdirs(&state, std::slice::from_ref(&lower), &other).expect("copy");
        assert_ne!(o, out);
        assert_eq!(std::fs::metadata(&o[0]).expect("stat").uid(), 400000);
        // A build abandoned by a dead builder is swept; a live one's is kept.
        let map_dir = out[0].parent().and_then(Path::parent).expect("map dir");
        let dead = map_dir.join(format!(".tmp-abc-{}", u32::MAX - 1));
        let live = map_dir.join(format!(".tmp-abc-{}", std::process::id()));
        std::fs::create_dir(&dead).expect("mkdir");
        std::fs::create_dir(&live).expect("mkdir");
        shifted_lowerdirs(&state, &[lower], &map).expect("copy");
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[test]
    fn a_sparse_file_keeps_its_holes() {
        use std::io::{Seek, SeekFrom};
        let d = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        let size: u64 = 20 << 30;
        {
            let mut f = std::fs::File::create(&src).expect("create");
            f.write_all(b"head").expect("write");
            f.seek(SeekFrom::Start(10 << 30)).expect("seek");
            f.write_all(b"middle").expect("write");
            f.set_len(size).expect("truncate");
        }
        let limits = UnpackLimits {
            max_image_bytes: u64::MAX,
            min_free: crate::imagestore::limits::FreeReserve::Bytes(0),
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(0),
        };
        let budget = Budget::new("the shifted copy", limits, d.path());
        copy_data(&src, &dst, Some(&budget)).expect("copy");
        let m = std::fs::metadata(&dst).expect("stat");
        assert_eq!(m.len(), size);
        assert!(m.blocks() * 512 < 4 << 20, "{} blocks written", m.blocks());
        // Only the data was charged.
        assert!(budget.used() < 1 << 20, "charged {}", budget.used());
        let read_at = |at: u64, n: usize| {
            use std::io::Read;
            let mut f = std::fs::File::open(&dst).expect("open");
            f.seek(SeekFrom::Start(at)).expect("seek");
            let mut b = vec![0u8; n];
            f.read_exact(&mut b).expect("read");
            b
        };
        assert_eq!(read_at(0, 4), b"head");
        assert_eq!(read_at(10 << 30, 6), b"middle");
        assert_eq!(read_at(5 << 30, 3), [0, 0, 0]);
        // A file that is all hole, and an empty one.
        for (name, len) in [("hole", 1u64 << 30), ("empty", 0)] {
            let (s, t) = (d.path().join(name), d.path().join(format!("{name}.copy")));
            std::fs::File::create(&s)
                .and_then(|f| f.set_len(len))
                .expect("create");
            copy_data(&s, &t, None).expect("copy");
            let m = std::fs::metadata(&t).expect("stat");
            assert_eq!((m.len(), m.blocks()), (len, 0), "{name}");
        }
    }

    #[test]
    fn a_shifted_copy_stops_at_the_reserve_and_leaves_nothing() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let lower = d.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).expect("mkdir");
        std::fs::write(lower.join("etc/passwd"), "root\n").expect("write");
        let map = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: 200000,
                size: 65536,
            }],
            gids: vec![IdRange {
                container: 0,
                host: 200000,
                size: 65536,
            }],
        };
        let state = d.path().join("state");
        let full = UnpackLimits {
            max_image_bytes: 1,
            min_free: crate::imagestore::limits::FreeReserve::Bytes(u64::MAX),
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(0),
        };
        let lowers = std::slice::from_ref(&lower);
        match shifted_lowerdirs_within(&state, lowers, &map, Some(&full)) {
            Err(Error::ResourceExhausted(msg)) => {
                assert!(msg.contains("--image-min-free"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        let inodes = UnpackLimits {
            min_free: crate::imagestore::limits::FreeReserve::Bytes(0),
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(u64::MAX),
            ..full
        };
        match shifted_lowerdirs_within(&state, lowers, &map, Some(&inodes)) {
            Err(Error::ResourceExhausted(msg)) => {
                assert!(msg.contains("--image-min-free-inodes"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // Nothing left of either try but the map's directory and file; the
        // per-image maximum does not apply to a copy.
        let map_dir = cache_dir(&state).join(map.key());
        let names: Vec<String> = std::fs::read_dir(&map_dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["map".to_string()]);
        let fits = UnpackLimits {
            min_free_inodes: crate::imagestore::limits::InodeReserve::Count(0),
            ..inodes
        };
        shifted_lowerdirs_within(&state, lowers, &map, Some(&fits)).expect("copy");
    }

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
        };
        let mut json = serde_json::to_value(&spec).expect("json");
        json.as_object_mut().expect("object").remove("userns");
        let back: crate::spec::ContainerSpec = serde_json::from_value(json).expect("loads");
        assert_eq!(back, spec);
    }
}
