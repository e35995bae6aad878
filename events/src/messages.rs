//! Messages: posted (and, later, read and recalled), keyed by thread so that
//! one thread is in one partition.

use crate::{ThreadId, UserId};
use serde::{Deserialize, Serialize};

/// The partitioning key of a thread's messages: one thread, one partition.
pub fn messages_key(thread_id: ThreadId) -> String {
    thread_id.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    Image,
    File,
    Video,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::File => "file",
            MessageKind::Video => "video",
        }
    }

    pub fn from_name(name: &str) -> Option<MessageKind> {
        [Self::Text, Self::Image, Self::File, Self::Video]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
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
