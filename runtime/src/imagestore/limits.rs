//! Limits of an image import, enforced while the bytes stream: a gzip layer
//! of a few MiB may unpack to gigabytes (zeros compress ~1000:1), and its
//! digest is only known to be wrong once all of it has been read.
//!
//! A [`Budget`] is charged with every uncompressed byte read from an
//! archive or a layer (wrap the decompressed stream in a [`Metered`]
//! reader), before it is written anywhere: an import fails once it passes
//! the per-image maximum ([`UnpackLimits::max_image_bytes`]) or once the
//! filesystem of the store would fall under its free-space reserve
//! ([`UnpackLimits::min_free`]) or its inode reserve
//! ([`UnpackLimits::min_free_inodes`]: a layer of many empty files costs
//! few bytes but one inode each), both checked with `statvfs` at the first
//! byte, then every [`CHECK_EVERY`] bytes and every [`CHECK_EVERY_ENTRIES`]
//! tar entries ([`Budget::charge_entry`]). The reader then fails with
//! an I/O error that the tar reader passes up; the import asks the budget
//! ([`Budget::explain`]) and returns the limit's own error instead of a
//! "corrupt stream". Nothing here removes files: the import's staging and
//! spool are removed by their owners whatever the error.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Bytes between two `statvfs` checks of the free space.
pub const CHECK_EVERY: u64 = 4 << 20;
/// Tar entries (files, directories, links...) between two `statvfs`
/// checks: each may take an inode.
pub const CHECK_EVERY_ENTRIES: u64 = 1000;
/// The default [`UnpackLimits::max_image_bytes`]: 16 GiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 16 << 30;
/// The floor of [`FreeReserve::Auto`]: 1 GiB.
pub const AUTO_RESERVE_MIN: u64 = 1 << 30;
/// The share of the device [`FreeReserve::Auto`] keeps free, in percent.
pub const AUTO_RESERVE_PERCENT: u64 = 5;

/// How much of the state device an import must leave free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeReserve {
    /// The larger of 1 GiB and 5% of the device.
    Auto,
    Bytes(u64),
    /// A share of the device's size, 0-100.
    Percent(u8),
}

impl FreeReserve {
    /// The reserve in bytes on a device of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        let share = |p: u64| u64::try_from(u128::from(total) * u128::from(p) / 100).unwrap_or(0);
        match self {
            FreeReserve::Auto => AUTO_RESERVE_MIN.max(share(AUTO_RESERVE_PERCENT)),
            FreeReserve::Bytes(b) => b,
            FreeReserve::Percent(p) => share(u64::from(p.min(100))),
        }
    }
}

impl std::fmt::Display for FreeReserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreeReserve::Auto => write!(
                f,
                "the larger of {} and {AUTO_RESERVE_PERCENT}% of the device",
                human(AUTO_RESERVE_MIN)
            ),
            FreeReserve::Bytes(b) => f.write_str(&human(*b)),
            FreeReserve::Percent(p) => write!(f, "{p}% of the device"),
        }
    }
}

/// The floor of [`InodeReserve::Auto`].
pub const AUTO_INODE_RESERVE_MIN: u64 = 10_000;
/// The share of the device's inodes [`InodeReserve::Auto`] keeps free, in
/// percent.
pub const AUTO_INODE_RESERVE_PERCENT: u64 = 1;

/// How many inodes of the state device an import must leave free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeReserve {
    /// The larger of 10,000 inodes and 1% of the device's.
    Auto,
    Count(u64),
    /// A share of the device's inodes, 0-100.
    Percent(u8),
}

impl InodeReserve {
    /// The reserve on a device of `total` inodes.
    pub fn inodes(self, total: u64) -> u64 {
        let share = |p: u64| u64::try_from(u128::from(total) * u128::from(p) / 100).unwrap_or(0);
        match self {
            InodeReserve::Auto => AUTO_INODE_RESERVE_MIN.max(share(AUTO_INODE_RESERVE_PERCENT)),
            InodeReserve::Count(n) => n,
            InodeReserve::Percent(p) => share(u64::from(p.min(100))),
        }
    }
}

impl std::fmt::Display for InodeReserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InodeReserve::Auto => write!(
                f,
                "the larger of {AUTO_INODE_RESERVE_MIN} and {AUTO_INODE_RESERVE_PERCENT}% of the device's"
            ),
            InodeReserve::Count(n) => write!(f, "{n}"),
            InodeReserve::Percent(p) => write!(f, "{p}% of the device's"),
        }
    }
}

/// The limits of one import (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes an image may unpack to: the uncompressed layer streams,
    /// summed (and, separately, the unpacked outer archive). rsupd's
    /// `--image-max-size`.
    pub max_image_bytes: u64,
    /// rsupd's `--image-min-free`.
    pub min_free: FreeReserve,
    /// rsupd's `--image-min-free-inodes`.
    pub min_free_inodes: InodeReserve,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            min_free: FreeReserve::Auto,
            min_free_inodes: InodeReserve::Auto,
        }
    }
}

/// Why a budget stopped an import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "{what} unpacks to more than {} (the limit of rsupd --image-max-size)",
        human(*max)
    )]
    TooLarge { what: &'static str, max: u64 },
    #[error(
        "not enough space to import: the filesystem of {path} ({device}) has {} free, and rsupd keeps {} ({reserve}) free there (rsupd --image-min-free)",
        human(*free),
        human(*reserve_bytes)
    )]
    NoSpace {
        path: PathBuf,
        /// Mount point and source of the filesystem, as mountinfo says.
        device: String,
        free: u64,
        reserve_bytes: u64,
        reserve: FreeReserve,
    },
    #[error(
        "not enough inodes to import: the filesystem of {path} ({device}) has {free} free inodes, and rsupd keeps {reserve_inodes} ({reserve}) free there (rsupd --image-min-free-inodes)"
    )]
    NoInodes {
        path: PathBuf,
        /// Mount point and source of the filesystem, as mountinfo says.
        device: String,
        free: u64,
        reserve_inodes: u64,
        reserve: InodeReserve,
    },
    #[error("statvfs {path}: {errno}")]
    Statvfs {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Error {
        match e {
            LimitError::TooLarge { .. } => Error::InvalidArgument {
                field: "archive",
                reason: e.to_string(),
            },
            LimitError::NoSpace { .. }
            | LimitError::NoInodes { .. }
            | LimitError::Statvfs { .. } => Error::ResourceExhausted(e.to_string()),
        }
    }
}

/// Counts the bytes of one import against its limits (single-threaded:
/// one budget per stream consumer).
#[derive(Debug)]
pub struct Budget {
    what: &'static str,
    limits: UnpackLimits,
    /// Where the bytes land: the filesystem whose free space is checked.
    store: PathBuf,
    used: Cell<u64>,
    /// Bytes since the last `statvfs`; starts full so the first byte checks.
    since_check: Cell<u64>,
    /// Entries since the last `statvfs`.
    entries_since_check: Cell<u64>,
    tripped: RefCell<Option<LimitError>>,
}

impl Budget {
    /// A budget for `what` ("the image", "the archive", ...) whose bytes
    /// land on the filesystem of `store`.
    pub fn new(what: &'static str, limits: UnpackLimits, store: &Path) -> Budget {
        Budget {
            what,
            limits,
            store: store.to_path_buf(),
            used: Cell::new(0),
            since_check: Cell::new(CHECK_EVERY),
            entries_since_check: Cell::new(0),
            tripped: RefCell::new(None),
        }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    /// The error that stopped this budget, if one did.
    pub fn tripped(&self) -> Option<LimitError> {
        self.tripped.borrow().clone()
    }

    /// Counts `n` more bytes; fails (and stays failed) past a limit.
    pub fn charge(&self, n: u64) -> Result<(), LimitError> {
        if let Some(e) = self.tripped() {
            return Err(e);
        }
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        let result = if used > self.limits.max_image_bytes {
            Err(LimitError::TooLarge {
                what: self.what,
                max: self.limits.max_image_bytes,
            })
        } else {
            let since = self.since_check.get().saturating_add(n);
            if since >= CHECK_EVERY {
                self.check()
            } else {
                self.since_check.set(since);
                Ok(())
            }
        };
        self.record(result)
    }

    /// Counts one more tar entry (it may take an inode): every
    /// [`CHECK_EVERY_ENTRIES`] the reserves are checked. Fails (and stays
    /// failed) as [`Budget::charge`].
    pub fn charge_entry(&self) -> Result<(), LimitError> {
        if let Some(e) = self.tripped() {
            return Err(e);
        }
        let n = self.entries_since_check.get() + 1;
        let result = if n >= CHECK_EVERY_ENTRIES {
            self.check()
        } else {
            self.entries_since_check.set(n);
            Ok(())
        };
        self.record(result)
    }

    /// Checks both reserves now and starts counting afresh.
    fn check(&self) -> Result<(), LimitError> {
        self.since_check.set(0);
        self.entries_since_check.set(0);
        check_free(
            &self.store,
            self.limits.min_free,
            self.limits.min_free_inodes,
        )
    }

    fn record(&self, result: Result<(), LimitError>) -> Result<(), LimitError> {
        if let Err(e) = &result {
            *self.tripped.borrow_mut() = Some(e.clone());
        }
        result
    }

    /// `err` unless this budget stopped the work: then the limit's error
    /// (a tar reader reports the failing read as a corrupt stream).
    pub fn explain(&self, err: Error) -> Error {
        match self.tripped() {
            Some(limit) => limit.into(),
            None => err,
        }
    }
}

/// What `statvfs` says of a filesystem, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes available to unprivileged users (the conservative count).
    pub free: u64,
    pub total: u64,
    /// Inodes available to unprivileged users (`f_favail`).
    pub free_inodes: u64,
    /// All inodes (`f_files`); 0 on a filesystem that makes them as
    /// needed (btrfs), where no inode reserve applies.
    pub total_inodes: u64,
}

impl Usage {
    /// The filesystem of `path`, now.
    pub fn of(path: &Path) -> Result<Usage, LimitError> {
        let st = nix::sys::statvfs::statvfs(path).map_err(|errno| LimitError::Statvfs {
            path: path.to_path_buf(),
            errno,
        })?;
        // fsblkcnt_t, fsfilcnt_t and unsigned long: all u64 on the 64-bit
        // targets rsup supports.
        let frsize: u64 = st.fragment_size().max(1);
        Ok(Usage {
            free: st.blocks_available().saturating_mul(frsize),
            total: st.blocks().saturating_mul(frsize),
            free_inodes: st.files_available(),
            total_inodes: st.files(),
        })
    }

    /// Which reserve, if any, this usage is within (pure; `path` only
    /// names the filesystem in the error).
    pub fn judge(
        &self,
        path: &Path,
        blocks: FreeReserve,
        inodes: InodeReserve,
    ) -> Result<(), LimitError> {
        let reserve_bytes = blocks.bytes(self.total);
        if self.free <= reserve_bytes {
            return Err(LimitError::NoSpace {
                path: path.to_path_buf(),
                device: describe_mount(path),
                free: self.free,
                reserve_bytes,
                reserve: blocks,
            });
        }
        let reserve_inodes = inodes.inodes(self.total_inodes);
        if self.total_inodes > 0 && reserve_inodes > 0 && self.free_inodes <= reserve_inodes {
            return Err(LimitError::NoInodes {
                path: path.to_path_buf(),
                device: describe_mount(path),
                free: self.free_inodes,
                reserve_inodes,
                reserve: inodes,
            });
        }
        Ok(())
    }
}

/// Fails when the filesystem of `path` has no more than `blocks` free
/// (blocks available to unprivileged users, the conservative count) or no
/// more than `inodes` free inodes.
pub fn check_free(
    path: &Path,
    blocks: FreeReserve,
    inodes: InodeReserve,
) -> Result<(), LimitError> {
    Usage::of(path)?.judge(path, blocks, inodes)
}

/// "mounted at M from SOURCE" for the filesystem holding `path`.
fn describe_mount(path: &Path) -> String {
    match crate::store::mount_of_path(path) {
        Some((point, source)) => format!("mounted at {point} from {source}"),
        None => "mount unknown".into(),
    }
}

/// A reader that charges a [`Budget`] with every byte read through it.
pub struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<'a, R> Metered<'a, R> {
    pub fn new(inner: R, budget: &'a Budget) -> Self {
        Metered { inner, budget }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget
            .charge(n as u64)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(n)
    }
}

/// `1.5 GiB`-style size for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_in_bytes() {
        let gib = 1u64 << 30;
        assert_eq!(FreeReserve::Auto.bytes(10 * gib), gib);
        assert_eq!(FreeReserve::Auto.bytes(100 * gib), 5 * gib);
        assert_eq!(FreeReserve::Bytes(7).bytes(100), 7);
        assert_eq!(FreeReserve::Percent(10).bytes(1000), 100);
        assert_eq!(FreeReserve::Percent(200).bytes(1000), 1000);
    }

    #[test]
    fn inode_reserve() {
        assert_eq!(InodeReserve::Auto.inodes(100_000), 10_000);
        assert_eq!(InodeReserve::Auto.inodes(5_000_000), 50_000);
        assert_eq!(InodeReserve::Count(7).inodes(100), 7);
        assert_eq!(InodeReserve::Percent(10).inodes(1000), 100);
        let usage = |free_inodes, total_inodes| Usage {
            free: 1 << 40,
            total: 1 << 41,
            free_inodes,
            total_inodes,
        };
        let p = Path::new("/");
        let (bytes, auto) = (FreeReserve::Bytes(0), InodeReserve::Auto);
        usage(10_001, 100_000).judge(p, bytes, auto).expect("above");
        let e = usage(10_000, 100_000)
            .judge(p, bytes, auto)
            .expect_err("at the reserve");
        let text = e.to_string();
        assert!(
            text.contains("10000 free inodes") && text.contains("--image-min-free-inodes"),
            "{text}"
        );
        assert!(text.contains("mounted at /"), "{text}");
        assert!(matches!(Error::from(e), Error::ResourceExhausted(_)));
        // No inode count (btrfs), or no reserve: no check.
        usage(0, 0).judge(p, bytes, auto).expect("no inode count");
        usage(0, 100)
            .judge(p, bytes, InodeReserve::Count(0))
            .expect("off");
    }

    #[test]
    fn entries_are_checked_every_so_often() {
        let t = tempfile::tempdir().expect("tempdir");
        let limits = UnpackLimits {
            max_image_bytes: u64::MAX,
            min_free: FreeReserve::Bytes(0),
            min_free_inodes: InodeReserve::Count(u64::MAX),
        };
        let b = Budget::new("the image", limits, t.path());
        for _ in 1..CHECK_EVERY_ENTRIES {
            b.charge_entry().expect("not checked yet");
        }
        let e = b
            .charge_entry()
            .expect_err("no device has that many inodes");
        assert!(matches!(e, LimitError::NoInodes { .. }), "{e:?}");
        assert!(b.charge(0).is_err(), "a tripped budget stays tripped");
    }

    #[test]
    fn budget_stops_past_the_maximum_and_stays_stopped() {
        let t = tempfile::tempdir().expect("tempdir");
        let limits = UnpackLimits {
            max_image_bytes: 10,
            min_free: FreeReserve::Bytes(0),
            min_free_inodes: InodeReserve::Count(0),
        };
        let b = Budget::new("the image", limits, t.path());
        b.charge(10).expect("at the limit");
        let e = b.charge(1).expect_err("past it");
        assert!(matches!(e, LimitError::TooLarge { max: 10, .. }), "{e:?}");
        assert!(e.to_string().contains("--image-max-size"), "{e}");
        assert!(b.charge(0).is_err(), "a tripped budget stays tripped");
        let err: Error = b.explain(Error::NotFound("x".into()));
        assert!(matches!(
            err,
            Error::InvalidArgument {
                field: "archive",
                ..
            }
        ));
    }

    #[test]
    fn budget_checks_the_reserve_at_the_first_byte() {
        let t = tempfile::tempdir().expect("tempdir");
        let limits = UnpackLimits {
            max_image_bytes: u64::MAX,
            min_free: FreeReserve::Bytes(u64::MAX),
            min_free_inodes: InodeReserve::Count(0),
        };
        let b = Budget::new("the image", limits, t.path());
        let e = b.charge(1).expect_err("no device has that much free");
        let text = e.to_string();
        assert!(text.contains("--image-min-free"), "{text}");
        assert!(text.contains("mounted at /"), "{text}");
        assert!(matches!(Error::from(e), Error::ResourceExhausted(_)));
        // A reserve of nothing passes.
        let none = UnpackLimits {
            max_image_bytes: u64::MAX,
            min_free: FreeReserve::Bytes(0),
            min_free_inodes: InodeReserve::Count(0),
        };
        Budget::new("the image", none, t.path())
            .charge(1)
            .expect("no reserve");
    }

    #[test]
    fn metered_reader_fails_at_the_limit() {
        let t = tempfile::tempdir().expect("tempdir");
        let limits = UnpackLimits {
            max_image_bytes: 100,
            min_free: FreeReserve::Bytes(0),
            min_free_inodes: InodeReserve::Count(0),
        };
        let b = Budget::new("the archive", limits, t.path());
        let mut r = Metered::new(io::repeat(0).take(1000), &b);
        let mut sink = Vec::new();
        assert!(r.read_to_end(&mut sink).is_err());
        assert!(sink.len() <= 100 + 8192, "read {} bytes", sink.len());
        assert!(matches!(b.tripped(), Some(LimitError::TooLarge { .. })));
    }

    #[test]
    fn mount_of_picks_the_deepest_mount() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /var/lib rw - xfs /dev/sdb1 rw
31 22 0:41 / /var/lib/rsup\\040x rw - tmpfs tmpfs rw
";
        let at =
            |p: &str| crate::store::mount_of(info, Path::new(p)).map(|(m, s)| format!("{m} {s}"));
        assert_eq!(
            at("/var/lib/rsup/images").as_deref(),
            Some("/var/lib /dev/sdb1")
        );
        assert_eq!(
            at("/var/lib/rsup x/images").as_deref(),
            Some("/var/lib/rsup x tmpfs")
        );
        assert_eq!(at("/etc").as_deref(), Some("/ /dev/sda1"));
        assert_eq!(at("/var/library").as_deref(), Some("/ /dev/sda1"));
    }
}
