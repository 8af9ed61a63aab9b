//! A container's life, the pure part: its state and the transitions each
//! event makes (`state`), the decisions that follow an exit, a start
//! request or rsupd's start (`container`), restart policies and backoff,
//! supervisor strategies with intensity and escalation (`tree`), health
//! checks (`health`), and the events users watch. No I/O: the containers
//! and supervisors services carry the decisions out.

pub mod backoff;
pub mod container;
pub mod events;
pub mod health;
pub mod policy;
pub mod state;
pub mod tree;

pub use backoff::{Backoff, BackoffConfig};
pub use events::{Event, EventBus, EventFilter, EventKind, Watch};
pub use policy::{Ending, RestartPolicy};
pub use tree::{ChildRestart, RestartWindow, Strategy, SupervisorSpec};
