//! The client wire format of imlog (docs/PROTOCOL.md): every type a client
//! and a server exchange, in one crate that both ends use — the gateway, the
//! HTTP API, the fan-out, `replay --export` and the Rust client.
//!
//! Request: `{"req": 7, "op": "send_messages", ...fields}`.
//! Reply:   `{"req": 7, "ok": true, "data": {...}}` or
//!          `{"req": 7, "ok": false, "error": {"code": "...", "message": "..."}}`.
//! Push:    `{"push": "message", "data": {...}}`.
//!
//! Requests deserialise into parsed values ("parse, don't validate"): a
//! [`UserName`] that exists is a valid name, an id that exists is positive.
//! Domain rules do not live here; this crate only says what may cross the wire.

mod error;
mod files;
mod frame;
mod push;
mod request;
mod values;
mod views;

pub use error::{ErrorCode, WireError};
pub use files::{
    ChunkAckView, ChunkChecksum, ContentType, DeclareUpload, FileName, Sha256Hex, TransferView,
    UploadStateView, UploadView, CHUNK_CRC32C_HEADER, CHUNK_SHA256_HEADER,
};
pub use frame::{error_reply, ok_reply, parse, Reply};
pub use push::Push;
pub use request::PageSize;
pub use request::{
    Before, Cursor, Direction, MemberId, OutgoingItem, OutgoingMedia, OutgoingMessage, Preview,
    Request, MAX_MEMBERS_PER_REQUEST, MAX_PREVIEW_BYTES,
};
pub use values::{
    Alias, AvatarRef, Description, Device, Greeting, GroupName, MessageBody, NewPassword, Nick,
    Password, SearchQuery, UniqueId, UserName, DEFAULT_MESSAGE_PAGE, DEFAULT_THREAD_PAGE,
    MAX_BATCH_ITEMS, MAX_PAGE, MAX_TEXT_CHARS,
};
pub use views::{
    Authenticated, Befriended, FriendApplied, FriendRequestView, FriendView, GatewayView,
    GroupCreatedView, LoggedIn, MediaView, MemberView, MessageView, OpenedThread, Page,
    ProfileView, ReceiptView, Registered, Sent, SentItem, ThreadKind, ThreadView, UserView,
};

/// The ids a client names, re-exported so that a client needs this crate only.
pub use imlog_events::{
    GroupRole, MediaState, MessageId, MessageKind, SessionId, Sex, TaskId, ThreadId, TransferMode,
    TransferState, UploadId, UploadKind, UserId,
};
