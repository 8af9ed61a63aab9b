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

mod copy;
pub mod error;
mod map;
mod request;
mod shifted;

pub use error::UsernsError;
pub use map::{IdMap, IdRange, MAX_RANGES, proc_map_text};
pub use request::{DEFAULT_SIZE, UsernsConfig, UsernsRequest, parse_subid, resolve};
pub use shifted::{cache_dir, shifted_lowerdirs, shifted_lowerdirs_within};
