//! Supervision: restart policies and backoff (pure), and the events users
//! watch. The containers service (`crate::containers`) applies them when a
//! container's process ends.

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
