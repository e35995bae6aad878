//! The wire format of the imlog event log.
//!
//! Everything in this crate is serialised onto the log, so every type here is
//! part of an IPC boundary: events written today must stay readable by every
//! later version (see `tests/fixtures.rs`). Domain rules live elsewhere; this
//! crate only says what was recorded.

mod envelope;
mod events;
mod ids;
mod topic;

pub use envelope::{DecodeError, Envelope, EventMeta};
pub use events::*;
pub use ids::{LogPosition, MessageId, SessionId, ThreadId, UserId};
pub use topic::{partition_for_key, Topic};
