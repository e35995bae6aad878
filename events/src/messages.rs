//! Messages: posted (and, later, read and recalled), keyed by thread so that
//! one thread is in one partition.

use crate::{MessageId, ThreadId, UploadId, UserId};
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
    /// A line written by the server (a friendship opened, a group changed),
    /// shown as a notice rather than as the sender's words. Since v2 of
    /// `message.posted`.
    System,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::File => "file",
            MessageKind::Video => "video",
            MessageKind::System => "system",
        }
    }

    pub fn from_name(name: &str) -> Option<MessageKind> {
        [
            Self::Text,
            Self::Image,
            Self::File,
            Self::Video,
            Self::System,
        ]
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
    /// Who a push goes to. Empty for group threads: then every member but
    /// the sender, as the fan-out knows them.
    pub recipients: Vec<UserId>,
    /// For a group: the threads-topic offset up to which membership was
    /// applied when the sender was checked. The fan-out pushes to the
    /// members as of at least that point, so a member removed before the
    /// send is not pushed it. Since v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_as_of: Option<i64>,
    /// An image, file or video message: the upload it shows. Since v3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaAttachment>,
}

/// Where a media message's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaState {
    /// Not all bytes are stored yet.
    Uploading,
    /// The upload completed: the bytes can be downloaded.
    Uploaded,
    /// The upload failed or expired: they never will be.
    Failed,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::Uploading => "uploading",
            MediaState::Uploaded => "uploaded",
            MediaState::Failed => "failed",
        }
    }
}

/// What a media message carries of its upload: the stored object's name,
/// size and checksum, a small preview, and whether the bytes are there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaAttachment {
    pub upload_id: UploadId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    /// A `data:image/...;base64,` URL from the sender (a thumbnail, a
    /// video's first frame), shown before the download; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preview: String,
    /// As of posting: `uploaded` if the upload had completed.
    pub state: MediaState,
}

/// A media message's upload ended: its bytes are there (`uploaded`) or
/// never will be (`failed`). Both sides are pushed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageMediaSettled {
    pub thread_id: ThreadId,
    pub message_id: MessageId,
    pub upload_id: UploadId,
    pub state: MediaState,
    /// Who is pushed (a private thread's two members), or (empty) the
    /// group's members as of `members_as_of`, sender included.
    pub recipients: Vec<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_as_of: Option<i64>,
}

/// `reader` has read `thread_id` up to `up_to` (and everything before it).
/// Read markers only move forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRead {
    pub thread_id: ThreadId,
    pub reader: UserId,
    pub up_to: MessageId,
    /// Who is pushed the receipt (the peer, or a small group's members);
    /// empty: nobody.
    pub recipients: Vec<UserId>,
}

/// The sender withdrew a message: its body is gone from every projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecalled {
    pub thread_id: ThreadId,
    pub message_id: MessageId,
    pub by: UserId,
    /// As in `MessagePosted`: who is pushed, or (empty) the group's members
    /// as of `members_as_of`.
    pub recipients: Vec<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_as_of: Option<i64>,
}
