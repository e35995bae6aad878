//! Uploads: declared, each stored chunk acknowledged, then completed or
//! failed. Keyed by upload, so one upload's events are in one partition, in
//! order. The chunk acks are the upload's progress: what a client resumes
//! from, and what completing the upload needs (object_store has no way to
//! list the parts of a multipart upload).

use crate::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An upload, named by the server (a random UUID) when it is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn random() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }

    pub const fn new(raw: uuid::Uuid) -> UploadId {
        UploadId(raw)
    }

    pub const fn get(self) -> uuid::Uuid {
        self.0
    }

    /// An id a client sent: any UUID (an unknown one is "not found").
    pub fn parse(raw: &str) -> Option<UploadId> {
        uuid::Uuid::parse_str(raw).ok().map(UploadId)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The partitioning key of an upload's events.
pub fn upload_key(upload_id: UploadId) -> String {
    upload_id.to_string()
}

/// What the bytes are, as the uploader declared them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    Image,
    File,
    Video,
}

impl UploadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadKind::Image => "image",
            UploadKind::File => "file",
            UploadKind::Video => "video",
        }
    }

    pub fn from_name(name: &str) -> Option<UploadKind> {
        [UploadKind::Image, UploadKind::File, UploadKind::Video]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A user declared an upload; the server chose where its bytes go and how
/// they are cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadDeclared {
    pub upload_id: UploadId,
    pub owner: UserId,
    /// The client's name for the file: shown to people, never a path.
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Of the whole file, lower-case hex, as the client declared it.
    pub sha256: String,
    pub kind: UploadKind,
    /// Where the completed object goes (made by the server).
    pub object_key: String,
    /// Every chunk has this size but the last.
    pub chunk_size: u64,
    pub chunks: u32,
    /// The store's multipart upload id, where the store has native
    /// multipart (S3); `None`: chunks are staged as objects of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_id: Option<String>,
}

/// Chunk `index` is stored. Repeats (a chunk sent twice) are harmless: the
/// first ack of an index counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadChunkAcked {
    pub upload_id: UploadId,
    pub index: u32,
    pub size: u64,
    /// What completion needs of this chunk: the part's ETag in a native
    /// multipart upload, or the key of the staged object.
    pub part: String,
    /// The SHA-256 of every chunk as stored, when the gateway that stored
    /// this one hashed them all in order (then completion need not read
    /// the object back to verify it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_sha256: Option<String>,
}

/// Every chunk was assembled into the object and the whole file matched its
/// SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadCompleted {
    pub upload_id: UploadId,
    pub object_key: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadFailure {
    /// The assembled bytes do not match the declared SHA-256.
    ChecksumMismatch,
    /// No chunk arrived for longer than the configured time.
    Expired,
    /// The uploader gave up.
    Cancelled,
    /// The store no longer has the stored chunks (an aborted multipart
    /// upload, deleted staging objects): the upload must start again.
    PartsLost,
}

impl UploadFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadFailure::ChecksumMismatch => "checksum_mismatch",
            UploadFailure::Expired => "expired",
            UploadFailure::Cancelled => "cancelled",
            UploadFailure::PartsLost => "parts_lost",
        }
    }

    pub fn from_name(name: &str) -> Option<UploadFailure> {
        [
            Self::ChecksumMismatch,
            Self::Expired,
            Self::Cancelled,
            Self::PartsLost,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }
}

/// The upload ended without an object; its stored chunks are deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadFailed {
    pub upload_id: UploadId,
    pub reason: UploadFailure,
    /// Said to people (e.g. the digest that was found instead).
    pub detail: String,
}

/// A file transfer task (TeamTalk's online or offline transfer), named by
/// the server when it is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    pub fn random() -> TaskId {
        TaskId(uuid::Uuid::new_v4())
    }

    pub const fn new(raw: uuid::Uuid) -> TaskId {
        TaskId(raw)
    }

    pub const fn get(self) -> uuid::Uuid {
        self.0
    }

    pub fn parse(raw: &str) -> Option<TaskId> {
        uuid::Uuid::parse_str(raw).ok().map(TaskId)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The partitioning key of a transfer's events.
pub fn task_key(task_id: TaskId) -> String {
    task_id.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// Relayed between the two while both are connected; nothing stored.
    Online,
    /// Uploaded by the sender, fetched by the receiver whenever.
    Offline,
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::Online => "online",
            TransferMode::Offline => "offline",
        }
    }

    pub fn from_name(name: &str) -> Option<TransferMode> {
        [TransferMode::Online, TransferMode::Offline]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// TeamTalk's transfer states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Offered; nobody has joined the relay yet.
    Ready,
    /// The receiver joined first.
    WaitingSender,
    /// The sender joined first.
    WaitingReceiver,
    /// Both joined; no block pulled yet.
    WaitingTransfer,
    Transferring,
    Done,
    Refused,
    Cancelled,
    Error,
}

impl TransferState {
    pub const ALL: [TransferState; 9] = [
        TransferState::Ready,
        TransferState::WaitingSender,
        TransferState::WaitingReceiver,
        TransferState::WaitingTransfer,
        TransferState::Transferring,
        TransferState::Done,
        TransferState::Refused,
        TransferState::Cancelled,
        TransferState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Ready => "ready",
            TransferState::WaitingSender => "waiting_sender",
            TransferState::WaitingReceiver => "waiting_receiver",
            TransferState::WaitingTransfer => "waiting_transfer",
            TransferState::Transferring => "transferring",
            TransferState::Done => "done",
            TransferState::Refused => "refused",
            TransferState::Cancelled => "cancelled",
            TransferState::Error => "error",
        }
    }

    pub fn from_name(name: &str) -> Option<TransferState> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Done, refused, cancelled or failed: nothing follows.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TransferState::Done
                | TransferState::Refused
                | TransferState::Cancelled
                | TransferState::Error
        )
    }
}

/// `from` offers `to` a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferOffered {
    pub task_id: TaskId,
    pub from: UserId,
    pub to: UserId,
    pub name: String,
    pub size: u64,
    pub mode: TransferMode,
    /// Online: the gateway run that relays it, and where to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_url: Option<String>,
    /// Offline: the completed upload the receiver fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<UploadId>,
}

/// A transfer moved to `state` (the first final state counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferStateChanged {
    pub task_id: TaskId,
    /// The two parties, who are both told.
    pub from: UserId,
    pub to: UserId,
    pub state: TransferState,
    /// Why, said to people (who cancelled, what failed); may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
