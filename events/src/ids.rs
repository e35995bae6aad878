//! Typed identifiers. Users, threads and messages take their ids from the log
//! position of the event that created them, so an id is known as soon as the
//! append is acknowledged and is identical after a replay or a `log copy`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a record sits in the log: topic partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogPosition {
    pub partition: i32,
    pub offset: i64,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// The default, 0, names nothing: it is the "from the start" cursor.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Wraps a stored id (a read-model column, a decoded event).
            pub const fn new(raw: i64) -> Self {
                $name(raw)
            }

            /// An id a client sent: ids are positive, 0 and below name nothing.
            pub fn parse(raw: i64) -> Option<Self> {
                (raw > 0).then_some($name(raw))
            }

            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user; `offset + 1` of its `UserRegistered` event in the single-partition users topic.
    UserId
);
id_type!(
    /// A thread; `offset + 1` of its creation event in the single-partition threads
    /// topic, so thread ids increase in creation order across the whole system.
    ThreadId
);
id_type!(
    /// A message; derived from the (partition, offset) of its `MessagePosted` event.
    /// A thread lives in one partition, so ids increase within a thread in log order.
    MessageId
);

/// Partitions per topic are capped so that a partition fits in the low bits of a
/// message id.
const PARTITION_BITS: u32 = 10;
pub const MAX_PARTITIONS: i32 = 1 << PARTITION_BITS;

impl UserId {
    pub fn from_position(pos: LogPosition) -> Self {
        UserId(pos.offset + 1)
    }
}

impl ThreadId {
    pub fn from_position(pos: LogPosition) -> Self {
        ThreadId(pos.offset + 1)
    }
}

impl MessageId {
    /// `(offset + 1) << 10 | partition`: unique across partitions, increasing with
    /// the offset, and never 0 (0 is the "from the start" sync cursor).
    pub fn from_position(pos: LogPosition) -> Self {
        debug_assert!((0..MAX_PARTITIONS).contains(&pos.partition));
        MessageId(((pos.offset + 1) << PARTITION_BITS) | i64::from(pos.partition))
    }

    pub fn position(self) -> LogPosition {
        LogPosition {
            partition: (self.0 & i64::from(MAX_PARTITIONS - 1)) as i32,
            offset: (self.0 >> PARTITION_BITS) - 1,
        }
    }
}

/// One login of one user on one device; a newer session of the same user kicks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(uuid::Uuid);

impl SessionId {
    pub fn random() -> Self {
        SessionId(uuid::Uuid::new_v4())
    }

    pub const fn new(raw: uuid::Uuid) -> Self {
        SessionId(raw)
    }

    pub const fn get(self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_round_trips_and_orders_by_offset() {
        let a = MessageId::from_position(LogPosition {
            partition: 3,
            offset: 0,
        });
        let b = MessageId::from_position(LogPosition {
            partition: 3,
            offset: 1,
        });
        assert!(a < b);
        assert!(a.0 > 0);
        assert_eq!(
            b.position(),
            LogPosition {
                partition: 3,
                offset: 1
            }
        );
        let other = MessageId::from_position(LogPosition {
            partition: 4,
            offset: 0,
        });
        assert_ne!(a, other);
    }
}
