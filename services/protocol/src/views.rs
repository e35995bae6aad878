//! What replies and pushes carry: views of the read model and the answers
//! of commands. Read-model types never reach the wire; they are converted
//! into these.

use crate::WireError;
use chrono::{DateTime, Utc};
use imlog_events::{GroupRole, MessageId, MessageKind, SessionId, Sex, ThreadId, UserId};
use serde::{Deserialize, Serialize};

/// One page of a cursor-paged list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items follow: ask again from `next_cursor`.
    pub load_more: bool,
    /// The cursor to ask from next: the last item's id (for the thread
    /// list, its join position; for scrollback, the first item's id), or the
    /// given cursor when the page is empty.
    pub next_cursor: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub user_id: UserId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedIn {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The answer to `auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authenticated {
    pub user_id: UserId,
    pub session_id: SessionId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedThread {
    pub thread_id: ThreadId,
    /// Whether this request created it (false: it already existed, or a
    /// concurrent request created it first).
    pub created: bool,
}

/// The answer for one item of `send_messages`: its id, or why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentItem {
    pub unique_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl SentItem {
    pub fn failed(unique_id: String, error: WireError) -> SentItem {
        SentItem {
            unique_id,
            message_id: None,
            error: Some(error),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub thread_id: ThreadId,
    pub items: Vec<SentItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    pub user_id: UserId,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadKind {
    Private,
    Group,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadView {
    pub thread_id: ThreadId,
    pub kind: ThreadKind,
    pub created_at: DateTime<Utc>,
    /// For a private thread: the other user.
    #[serde(default)]
    pub peer: Option<UserView>,
    /// For a group: its name and how many members it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// Messages after your read marker.
    #[serde(default)]
    pub unread: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessageView>,
}

/// A message, as sync pages, pushes and `replay --export` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    pub message_id: MessageId,
    pub thread_id: ThreadId,
    /// Gapless per thread; assigned by the projection, so a push (which
    /// comes straight from the log) has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub sender_id: UserId,
    pub unique_id: String,
    pub kind: MessageKind,
    /// Empty once recalled.
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// The sender withdrew it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recalled: bool,
    /// An image, file or video message's upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaView>,
}

/// A media message's upload: download it from
/// `GET /v1/uploads/{upload_id}/content` once `state` is `uploaded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaView {
    pub upload_id: imlog_events::UploadId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    /// The sender's `data:image/...;base64,` thumbnail; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preview: String,
    /// `uploading`, `uploaded` or `failed`.
    pub state: imlog_events::MediaState,
}

impl From<imlog_events::MediaAttachment> for MediaView {
    fn from(m: imlog_events::MediaAttachment) -> Self {
        MediaView {
            upload_id: m.upload_id,
            name: m.name,
            size: m.size,
            content_type: m.content_type,
            sha256: m.sha256,
            preview: m.preview,
            state: m.state,
        }
    }
}

/// How far one member has read a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptView {
    pub user_id: UserId,
    /// The last message they have read (everything before it too).
    pub up_to: MessageId,
    pub at: DateTime<Utc>,
}

/// The answer to `friend_apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FriendApplied {
    /// The request is pending; they are pushed it.
    Requested,
    /// They had asked you already: this accepted their request. The thread
    /// is given once it exists (else it follows as pushes).
    Accepted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<ThreadId>,
    },
}

/// The answer to `friend_accept`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Befriended {
    pub user_id: UserId,
    /// The pair's private thread, once it exists (else it follows as pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<ThreadId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendRequestView {
    pub from: UserView,
    pub to: UserView,
    pub greeting: String,
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendView {
    pub user: UserView,
    /// What you call them ("" for none).
    pub alias: String,
    pub since: DateTime<Utc>,
    /// Your private thread with them.
    #[serde(default)]
    pub thread_id: Option<ThreadId>,
}

/// The answer to `create_group`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCreatedView {
    pub thread_id: ThreadId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub user: UserView,
    pub role: GroupRole,
    pub joined_at: DateTime<Utc>,
    /// Set while the member may not post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<DateTime<Utc>>,
}

/// A user's public profile and presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileView {
    pub user_id: UserId,
    pub name: String,
    pub nick: String,
    pub description: String,
    pub sex: Sex,
    #[serde(default)]
    pub avatar: Option<String>,
    /// Connected to a live gateway now.
    pub online: bool,
    /// When they last connected or disconnected.
    #[serde(default)]
    pub last_seen: Option<DateTime<Utc>>,
}

/// Where to connect: the least-loaded live gateway (`GET /v1/gateway`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayView {
    pub gateway_id: String,
    pub ws_url: String,
    pub connections: i32,
}
