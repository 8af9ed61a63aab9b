//! [`RootDir::walk`]: following a path component by component inside a
//! root, as the kernel would, to record every path a lookup depends on
//! ([`Walk`], [`WalkEnd`]), and [`is_ancestor_or_self`] to compare the
//! paths it gives.

use nix::sys::stat::SFlag;

use super::error::chain;
use super::kind::{is_kind, kind_name};
use super::root::{RootDir, relative};

/// Symlinks followed at most in one [`RootDir::walk`] (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// The end of a [`RootDir::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// Every component exists; the path with all symlinks resolved.
    Found(String),
    /// The component at `at` (symlinks before it resolved) is missing; `full`
    /// is where the whole path would be once created.
    Missing { at: String, full: String },
    /// A symlink loop, a component that is not a directory, or an error: the
    /// walk cannot say where the path leads.
    Unknown(String),
}

/// Every path a walk looked at, and where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Absolute paths inside the root, in the order they were looked up,
    /// symlinks resolved up to each point.
    pub visited: Vec<String>,
    pub end: WalkEnd,
}

impl RootDir {
    /// Follows `path` component by component inside the root, as the kernel
    /// would (absolute symlinks restart at the root, `..` stops at it), and
    /// records every path it looks at. Each step is a [`Self::resolve_nofollow`]
    /// of an already resolved prefix, so the walk cannot leave the root
    /// either; it exists to tell which paths a lookup depends on (for
    /// example, whether a mount could change its result).
    pub fn walk(&self, path: &str) -> Walk {
        let mut visited = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        let mut pending: Vec<String> = path
            .split('/')
            .rev()
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        let mut hops = 0;
        let join = |parts: &[String]| format!("/{}", parts.join("/"));
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => {}
            }
            parts.push(c);
            let here = join(&parts);
            visited.push(here.clone());
            let st = match self.resolve_nofollow(&here).and_then(|t| self.stat_of(&t)) {
                Ok(st) => st,
                Err(e) if e.is_not_found() => {
                    let mut full = parts.clone();
                    full.extend(pending.iter().rev().filter(|c| *c != ".").cloned());
                    let full = join(&full);
                    if full.contains("/../") || full.ends_with("/..") {
                        return Walk {
                            visited,
                            end: WalkEnd::Unknown(format!("{here}: missing, then '..'")),
                        };
                    }
                    visited.push(full.clone());
                    return Walk {
                        visited,
                        end: WalkEnd::Missing { at: here, full },
                    };
                }
                Err(e) => {
                    return Walk {
                        visited,
                        end: WalkEnd::Unknown(e.to_string()),
                    };
                }
            };
            if is_kind(&st, SFlag::S_IFLNK) {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Walk {
                        visited,
                        end: WalkEnd::Unknown(format!("{here}: too many symlinks")),
                    };
                }
                let target = match self.root.readlink(relative(&here)) {
                    Ok(t) => t,
                    Err(e) => {
                        return Walk {
                            visited,
                            end: WalkEnd::Unknown(chain(&e)),
                        };
                    }
                };
                parts.pop();
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    parts.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .rev()
                        .filter(|c| !c.is_empty())
                        .map(String::from),
                );
            } else if !pending.is_empty() && !is_kind(&st, SFlag::S_IFDIR) {
                return Walk {
                    visited,
                    end: WalkEnd::Unknown(format!("{here} is {}", kind_name(&st))),
                };
            }
        }
        Walk {
            visited,
            end: WalkEnd::Found(join(&parts)),
        }
    }
}

/// True if `dir` is `path` or one of its ancestors (both absolute,
/// normalised: no `.`, `..` or `//`).
pub fn is_ancestor_or_self(dir: &str, path: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty()
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}
