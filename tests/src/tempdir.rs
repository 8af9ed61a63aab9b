//! Temporary directories and names: every directory the tests and the
//! benchmarks make is `/tmp/rsup-test-<pid>-<n>` (or a directory the caller
//! names, such as the bench's `<work>/<subcommand>`), owned by one
//! [`TempDir`] that unmounts whatever is still mounted below it and deletes
//! it when dropped, also while a test panics.
//!
//! Invariants: the `rsup-test-` prefix is what `scripts/test.sh` sweeps
//! after a killed run, so nothing else may use it; the pid in the name keeps
//! a live run from being swept; `n` comes from one process-wide counter, so
//! two directories or names of one run never collide.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::procfs::mount_points;

/// Prefix of every directory the tests create under `/tmp`.
pub const TEMP_PREFIX: &str = "rsup-test-";

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A container name no other test of this run uses: `<prefix>-<pid>-<n>`.
/// Keep `prefix` a short lowercase DNS label.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty `/tmp/rsup-test-<pid>-<n>`, removed (after unmounting
/// anything mounted below it) on drop. `RSUP_TEST_KEEP=1` keeps it.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new() -> TempDir {
        loop {
            let path = Path::new("/tmp").join(format!(
                "{TEMP_PREFIX}{}-{}",
                std::process::id(),
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::create_dir(&path) {
                Ok(()) => return TempDir { path, keep: false },
                // Left by an earlier run whose pid was ours: take the next n.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating {}: {e}", path.display()),
            }
        }
    }

    /// Makes `path` (its parents as needed; `path` itself must not exist)
    /// and owns it as a temporary directory.
    pub fn create_at(path: &Path) -> std::io::Result<TempDir> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::create_dir(path)?;
        Ok(TempDir {
            path: path.to_owned(),
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped (for its logs, after a
    /// failure).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        if std::env::var_os("RSUP_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("RSUP_TEST_KEEP=1: keeping {}", self.path.display());
            return;
        }
        remove_tree(&self.path);
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first, then
/// removes `dir`. Errors are reported, not raised.
pub(crate) fn remove_tree(dir: &Path) {
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("warning: umount {}: {e}", point.display());
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("warning: removing {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
