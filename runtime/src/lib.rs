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
pub mod container;
pub mod error;
pub mod health;
pub mod image;
pub mod images;
pub mod logs;
pub mod names;
pub mod net;
pub mod network;
pub mod paths;
pub mod ports;
pub mod process;
pub mod quarantine;
pub mod rollback;
pub mod seccomp;
pub mod security;
pub mod signal;
pub mod spec;
pub mod store;
pub mod supervise;
pub mod supervisor;
pub mod sys;
pub mod userns;
pub mod volumes;

pub use container::{
    ContainerInfo, ContainerState, ContainerStats, LogStreamItem, OpReport, Runtime, RuntimeConfig,
};
pub use error::Error;
pub use process::ExitInfo;
pub use spec::{ContainerSpec, ResourcesRequest, SpecRequest};
pub use supervisor::{SupervisorInfo, SupervisorRequest};
