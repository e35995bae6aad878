//! Threads: creation and membership.

use crate::UserId;
use serde::{Deserialize, Serialize};

/// A private thread between two users was opened. Its `ThreadId` is the
/// position of this event; a later event for the same pair is a no-op, so the
/// pair keeps exactly one thread even when two servers race to create it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivateThreadCreated {
    /// The smaller user id of the pair.
    pub user_low: UserId,
    /// The larger user id of the pair.
    pub user_high: UserId,
}

impl PrivateThreadCreated {
    /// The partitioning key: the ordered pair, so racing creations of one
    /// pair's thread are ordered by the log.
    pub fn pair_key(&self) -> String {
        format!("{}:{}", self.user_low, self.user_high)
    }
}
