//! The errors of user namespaces, typed: the remap user's subordinate id
//! ranges that cannot be read or are missing, and the shifted copies of
//! lower dirs that cannot be made. They reach the API as
//! [`crate::Error::Userns`] (the host is not set up for it: a failed
//! precondition).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A subordinate id file (`/etc/subuid`, `/etc/subgid`) could not be
    /// read.
    #[error("reading {}: {source}", path.display())]
    ReadIds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The remap user has no ranges in `path`.
    #[error(
        "user namespaces need {kind} ranges of {user} in {}, and there are none \
         (add a line such as {user}:100000:65536, or start rsupd with another \
         --userns-remap-user)",
        path.display()
    )]
    NoRanges {
        /// "subuid" or "subgid".
        kind: &'static str,
        user: String,
        path: PathBuf,
    },
    /// A file of a shifted copy of lower dir `lower` could not be made.
    #[error("shifted copy of {} for {map}: {op} {}: {source}", lower.display(), path.display())]
    Shift {
        lower: PathBuf,
        /// The id map, as its cache names it.
        map: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cache of shifted copies could not be used.
    #[error("{op} {}: {source}", path.display())]
    Cache {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A finished copy could not be moved into the cache.
    #[error("renaming {} to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cache holds something else where a copy should be.
    #[error("{} holds a shifted copy of something else (hash collision?); remove it", path.display())]
    Collision { path: PathBuf },
}
