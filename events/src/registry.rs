//! The registry of event types: **one declaration per event type** (its
//! stable name, schema version, topic and partitioning key). The `Event`
//! enum, encoding, decoding, the list of names and the version checks are
//! all generated from it, so adding an event is a struct in its feature's
//! module plus one entry here (and a fixture in `tests/fixtures/`).
//!
//! Names are past tense and stable (`message.posted`). Changing a payload
//! means a new version plus an upcaster in `envelope.rs`, never an edit that
//! breaks stored events.

use crate::accounts::{
    PresenceChanged, ProfileUpdated, SessionEnded, SessionStarted, UserRegistered,
};
use crate::files::{
    task_key, upload_key, TransferOffered, TransferStateChanged, UploadChunkAcked, UploadCompleted,
    UploadDeclared, UploadFailed,
};
use crate::groups::{
    GroupCreated, GroupMemberMuted, GroupMemberRemoved, GroupMembersAdded,
    GroupOwnershipTransferred, GroupRenamed, GroupRoleChanged,
};
use crate::messages::{
    messages_key, MessageMediaSettled, MessagePosted, MessageRecalled, MessagesRead,
};
use crate::social::{pair_key, FriendAccepted, FriendRejected, FriendRequested};
use crate::threads::PrivateThreadCreated;
use crate::Topic;

macro_rules! declare_events {
    ($(
        $(#[$doc:meta])*
        $variant:ident { name: $name:literal, version: $version:literal, topic: $topic:ident, key: |$e:ident| $key:expr $(,)? }
    )*) => {
        /// Everything that can be on the log.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $($(#[$doc])* $variant($variant),)*
        }

        /// The stable name of every event type, for tools and the fixture test.
        pub const TYPE_NAMES: &[&str] = &[$($name),*];

        impl Event {
            /// The stable name written into the envelope.
            pub fn type_name(&self) -> &'static str {
                match self { $(Event::$variant(_) => $name,)* }
            }

            /// The schema version this build writes.
            pub fn schema_version(&self) -> u32 {
                match self { $(Event::$variant(_) => $version,)* }
            }

            /// The topic the event is appended to.
            pub fn topic(&self) -> Topic {
                match self { $(Event::$variant(_) => Topic::$topic,)* }
            }

            /// The partitioning key: every event about one thread (or one
            /// user's sessions, or one pair) lands in one partition, in order.
            pub fn key(&self) -> String {
                match self { $(Event::$variant($e) => $key,)* }
            }

            pub(crate) fn data(&self) -> serde_json::Result<serde_json::Value> {
                match self { $(Event::$variant(e) => serde_json::to_value(e),)* }
            }

            /// Builds the event from a payload already upcast to the current version.
            pub(crate) fn from_data(type_name: &str, data: serde_json::Value) -> Result<Event, FromDataError> {
                Ok(match type_name {
                    $($name => Event::$variant(serde_json::from_value(data)?),)*
                    other => return Err(FromDataError::UnknownType(other.to_owned())),
                })
            }
        }

        /// The version this build writes of the type called `type_name`.
        pub fn current_version(type_name: &str) -> Option<u32> {
            match type_name { $($name => Some($version),)* _ => None }
        }

        $(
            impl From<$variant> for Event {
                fn from(e: $variant) -> Event { Event::$variant(e) }
            }

            impl $variant {
                /// The stable name of this event type.
                pub const TYPE_NAME: &'static str = $name;
                /// The topic this event type is appended to.
                pub const TOPIC: Topic = Topic::$topic;
            }
        )*
    };
}

declare_events! {
    /// `users`, keyed by name. User id = offset + 1.
    UserRegistered { name: "user.registered", version: 1, topic: Users, key: |e| e.name.clone() }
    SessionStarted { name: "session.started", version: 1, topic: Sessions, key: |e| e.user_id.to_string() }
    SessionEnded { name: "session.ended", version: 1, topic: Sessions, key: |e| e.user_id.to_string() }
    ProfileUpdated { name: "user.profile_updated", version: 1, topic: Users, key: |e| e.user_id.to_string() }
    PresenceChanged { name: "presence.changed", version: 1, topic: Sessions, key: |e| e.user_id.to_string() }
    /// `threads`, one partition. Thread id = offset + 1.
    PrivateThreadCreated { name: "thread.private_created", version: 1, topic: Threads, key: |e| e.pair_key() }
    /// `threads` too: group changes share the order of thread creation.
    GroupCreated { name: "group.created", version: 1, topic: Threads, key: |e| e.owner.to_string() }
    GroupMembersAdded { name: "group.members_added", version: 1, topic: Threads, key: |e| e.thread_id.to_string() }
    GroupMemberRemoved { name: "group.member_removed", version: 1, topic: Threads, key: |e| e.thread_id.to_string() }
    GroupRenamed { name: "group.renamed", version: 1, topic: Threads, key: |e| e.thread_id.to_string() }
    GroupMemberMuted { name: "group.member_muted", version: 1, topic: Threads, key: |e| e.thread_id.to_string() }
    GroupRoleChanged { name: "group.role_changed", version: 1, topic: Threads, key: |e| e.thread_id.to_string() }
    GroupOwnershipTransferred { name: "group.ownership_transferred", version: 1, topic: Threads, key: |e| e.thread_id.to_string() }
    /// `messages`, keyed by thread. v2: `kind` may be `system`; v3: `media`.
    MessagePosted { name: "message.posted", version: 3, topic: Messages, key: |e| messages_key(e.thread_id) }
    MessageMediaSettled { name: "message.media_settled", version: 1, topic: Messages, key: |e| messages_key(e.thread_id) }
    MessagesRead { name: "messages.read", version: 1, topic: Messages, key: |e| messages_key(e.thread_id) }
    MessageRecalled { name: "message.recalled", version: 1, topic: Messages, key: |e| messages_key(e.thread_id) }
    /// `social`, keyed by the ordered pair.
    FriendRequested { name: "friend.requested", version: 1, topic: Social, key: |e| pair_key(e.from, e.to) }
    FriendAccepted { name: "friend.accepted", version: 1, topic: Social, key: |e| pair_key(e.from, e.to) }
    FriendRejected { name: "friend.rejected", version: 1, topic: Social, key: |e| pair_key(e.from, e.to) }
    /// `files`, keyed by upload.
    UploadDeclared { name: "upload.declared", version: 1, topic: Files, key: |e| upload_key(e.upload_id) }
    UploadChunkAcked { name: "upload.chunk_acked", version: 1, topic: Files, key: |e| upload_key(e.upload_id) }
    UploadCompleted { name: "upload.completed", version: 1, topic: Files, key: |e| upload_key(e.upload_id) }
    UploadFailed { name: "upload.failed", version: 1, topic: Files, key: |e| upload_key(e.upload_id) }
    /// `files` too, keyed by transfer task.
    TransferOffered { name: "transfer.offered", version: 1, topic: Files, key: |e| task_key(e.task_id) }
    TransferStateChanged { name: "transfer.state_changed", version: 1, topic: Files, key: |e| task_key(e.task_id) }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FromDataError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
