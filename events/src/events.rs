//! The event types. Names are past tense and stable (`message.posted`); each
//! carries a schema version. Changing a payload means a new version plus an
//! upcaster in `envelope.rs`, never an edit that breaks stored events.

use crate::{SessionId, ThreadId, Topic, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The partitioning key of a thread's messages: one thread, one partition.
pub fn messages_key(thread_id: ThreadId) -> String {
    thread_id.to_string()
}

/// The stable name of every event type, for tools and the fixture test.
pub const TYPE_NAMES: &[&str] = &[
    "user.registered",
    "session.started",
    "session.ended",
    "thread.private_created",
    "message.posted",
];

/// Everything that can be on the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    UserRegistered(UserRegistered),
    SessionStarted(SessionStarted),
    SessionEnded(SessionEnded),
    PrivateThreadCreated(PrivateThreadCreated),
    MessagePosted(MessagePosted),
}

/// An account was created. Its `UserId` is the position of this event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// Unique login name, already normalised (lower case, validated).
    pub name: String,
    /// Argon2id PHC string; the password itself is never on the log.
    pub password_hash: String,
}

/// A user logged in. A newer session of the same user ends every older one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// SHA-256 of the bearer token, hex; the token itself is never on the log.
    pub token_sha256: String,
    /// The gateway instance holding the connection.
    pub gateway_id: String,
    pub device: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    Logout,
    /// A newer login of the same user replaced it.
    Kicked,
    /// The connection went silent past the heartbeat timeout.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub reason: SessionEndReason,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    Image,
    File,
    Video,
}

/// A message was posted to a thread. Its `MessageId` is the position of this
/// event; a repeat of the same (sender, unique_id) is ignored by projections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePosted {
    pub thread_id: ThreadId,
    pub sender_id: UserId,
    /// Client-generated id, so that a retried send does not post twice.
    pub unique_id: String,
    pub kind: MessageKind,
    pub body: String,
    /// Members of the thread other than the sender, when it was posted: who a
    /// push goes to.
    pub recipients: Vec<UserId>,
}

impl Event {
    /// The stable name written into the envelope.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::UserRegistered(_) => "user.registered",
            Event::SessionStarted(_) => "session.started",
            Event::SessionEnded(_) => "session.ended",
            Event::PrivateThreadCreated(_) => "thread.private_created",
            Event::MessagePosted(_) => "message.posted",
        }
    }

    /// The schema version this build writes.
    pub fn schema_version(&self) -> u32 {
        1
    }

    pub fn topic(&self) -> Topic {
        match self {
            Event::UserRegistered(_) => Topic::Users,
            Event::SessionStarted(_) | Event::SessionEnded(_) => Topic::Sessions,
            Event::PrivateThreadCreated(_) => Topic::Threads,
            Event::MessagePosted(_) => Topic::Messages,
        }
    }

    /// The partitioning key: every event about one thread (or one user's
    /// sessions) lands in one partition, in order.
    pub fn key(&self) -> String {
        match self {
            Event::UserRegistered(e) => e.name.clone(),
            Event::SessionStarted(e) => e.user_id.to_string(),
            Event::SessionEnded(e) => e.user_id.to_string(),
            Event::PrivateThreadCreated(e) => format!("{}:{}", e.user_low, e.user_high),
            Event::MessagePosted(e) => messages_key(e.thread_id),
        }
    }

    pub(crate) fn data(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Event::UserRegistered(e) => serde_json::to_value(e),
            Event::SessionStarted(e) => serde_json::to_value(e),
            Event::SessionEnded(e) => serde_json::to_value(e),
            Event::PrivateThreadCreated(e) => serde_json::to_value(e),
            Event::MessagePosted(e) => serde_json::to_value(e),
        }
    }

    /// Builds the event from a payload already upcast to the current version.
    pub(crate) fn from_data(
        type_name: &str,
        data: serde_json::Value,
    ) -> Result<Event, FromDataError> {
        use serde_json::from_value as v;
        Ok(match type_name {
            "user.registered" => Event::UserRegistered(v(data)?),
            "session.started" => Event::SessionStarted(v(data)?),
            "session.ended" => Event::SessionEnded(v(data)?),
            "thread.private_created" => Event::PrivateThreadCreated(v(data)?),
            "message.posted" => Event::MessagePosted(v(data)?),
            other => return Err(FromDataError::UnknownType(other.to_owned())),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FromDataError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
