//! rsup-runtime: the library that builds and supervises rsup's containers.
//!
//! [`Runtime`] is everything a user can do with rsupd, without gRPC: the
//! daemon translates requests into calls of this API. Containers are real
//! processes in their own PID, MNT, UTS, IPC and NET namespaces (and, on
//! request, a user namespace: see [`userns`]), built by a
//! per-container shim (see [`process`]); state is kept under a state
//! directory (see [`store`]).

pub mod bounds;
pub mod cgroups;
pub mod config;
pub mod containers;
pub mod error;
pub mod images;
pub mod imagestore;
pub mod lifecycle;
mod lock;
pub mod logs;
pub mod names;
pub mod netstack;
pub mod networks;
pub mod paths;
pub mod process;
pub mod rollback;
mod runtime;
pub mod seccomp;
pub mod security;
pub mod signal;
pub mod spec;
pub mod store;
pub mod supervisors;
pub mod sys;
pub mod userns;
pub mod volumes;

pub use config::RuntimeConfig;
pub use containers::entry::{ContainerInfo, ContainerState, LogStreamItem, OpReport};
pub use containers::stats::ContainerStats;
pub use error::Error;
pub use process::ExitInfo;
pub use runtime::Runtime;
pub use spec::{ContainerSpec, ResourcesRequest, SpecRequest};
pub use supervisors::{SupervisorInfo, SupervisorRequest};
