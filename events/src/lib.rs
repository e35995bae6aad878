//! The wire format of the imlog event log.
//!
//! Everything in this crate is serialised onto the log, so every type here is
//! part of an IPC boundary: events written today must stay readable by every
//! later version (see `tests/fixtures.rs`). Domain rules live elsewhere; this
//! crate only says what was recorded. Event payloads live in one module per
//! feature; [`registry`](crate::Event) declares each type once.

pub mod accounts;
mod envelope;
pub mod files;
pub mod groups;
mod ids;
pub mod messages;
mod registry;
pub mod social;
pub mod threads;
mod topic;

pub use accounts::*;
pub use envelope::{DecodeError, Envelope, EventMeta};
pub use files::*;
pub use groups::*;
pub use ids::{LogPosition, MessageId, SessionId, ThreadId, UserId};
pub use messages::*;
pub use registry::{current_version, Event, TYPE_NAMES};
pub use social::*;
pub use threads::*;
pub use topic::{partition_for_key, Topic};
