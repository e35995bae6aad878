//! Friends: requests, acceptances and rejections, keyed by the ordered user
//! pair so that everything about one pair is in one partition, in order.

use crate::UserId;
use serde::{Deserialize, Serialize};

/// The partitioning key of a pair: the smaller id first.
pub fn pair_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

/// `from` asks `to` to be friends. A later request of the same pair while
/// one is pending replaces its greeting and alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendRequested {
    pub from: UserId,
    pub to: UserId,
    /// Shown to `to`; becomes the first message of the pair's thread.
    pub greeting: String,
    /// What `from` will call `to`.
    pub alias: String,
}

/// `to` accepted `from`'s pending request. The first acceptance of a
/// request in log order makes them friends; the friendship's thread and
/// first messages follow from it (the `friend_acceptance` process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendAccepted {
    /// Who asked.
    pub from: UserId,
    /// Who accepts.
    pub to: UserId,
    /// What `to` will call `from`.
    pub alias: String,
}

/// `to` turned down `from`'s pending request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendRejected {
    pub from: UserId,
    pub to: UserId,
}
