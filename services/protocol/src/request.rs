//! Requests, tagged by `op`. Deserialising one parses every field into its
//! value type; a text item of `send_messages` is parsed on its own, so that
//! one bad item is answered alone and the others are still sent.

use crate::values::{
    Alias, AvatarRef, Description, Device, Greeting, GroupName, MessageBody, NewPassword, Nick,
    Password, SearchQuery, UniqueId, UserName, MAX_BATCH_ITEMS, MAX_PAGE,
};
use crate::{ErrorCode, WireError};
use chrono::{DateTime, Utc};
use imlog_events::{
    GroupRole, MessageId, Sex, TaskId, ThreadId, TransferMode, UploadId, UploadKind, UserId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Register {
        name: UserName,
        password: NewPassword,
    },
    Login {
        name: UserName,
        password: Password,
        #[serde(default = "Device::unknown")]
        device: Device,
    },
    /// Resumes a session on a new connection with its token.
    Auth {
        token: String,
    },
    Ping {},
    Logout {},
    OpenPrivateThread {
        #[serde(with = "id::positive")]
        user_id: UserId,
    },
    SendMessages {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        items: Vec<OutgoingItem>,
        /// The client resends after a lost reply: the server checks for the
        /// first send against everything already appended, not just what is
        /// projected.
        #[serde(default)]
        retry: bool,
    },
    /// Your threads in the order you joined them, after a cursor (the
    /// `next_cursor` of the last page; 0 from the start).
    SyncThreads {
        #[serde(default)]
        after: Cursor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// Messages after `since`, or, with `before`, the page just before it
    /// (scrollback).
    SyncMessages {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(default, with = "id::cursor")]
        since: MessageId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Before>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// You have read `thread_id` up to `up_to`.
    MarkRead {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(with = "id::positive")]
        up_to: MessageId,
    },
    /// Withdraw a message you sent, within the recall window.
    Recall {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(with = "id::positive")]
        message_id: MessageId,
    },
    /// The members' read markers of a thread, paged by user id.
    ReadReceipts {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(default, with = "id::cursor")]
        after: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// Ask `user_id` to be friends.
    FriendApply {
        #[serde(with = "id::positive")]
        user_id: UserId,
        #[serde(default)]
        greeting: Greeting,
        /// What you will call them.
        #[serde(default)]
        alias: Alias,
    },
    /// Accept `user_id`'s pending request.
    FriendAccept {
        #[serde(with = "id::positive")]
        user_id: UserId,
        /// What you will call them.
        #[serde(default)]
        alias: Alias,
    },
    FriendReject {
        #[serde(with = "id::positive")]
        user_id: UserId,
    },
    /// Pending friend requests to you (`incoming`) or from you (`outgoing`),
    /// paged by the other user's id.
    FriendRequests {
        direction: Direction,
        #[serde(default, with = "id::cursor")]
        after: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// Your friends with your aliases for them, paged by user id.
    Friends {
        #[serde(default, with = "id::cursor")]
        after: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// Change your profile; fields left out keep their value.
    UpdateProfile {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nick: Option<Nick>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sex: Option<Sex>,
        /// An empty string removes it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<AvatarRef>,
    },
    /// Anyone's public profile, with presence.
    Profile {
        #[serde(with = "id::positive")]
        user_id: UserId,
    },
    /// Users by exact id or name prefix, paged by user id.
    SearchUsers {
        query: SearchQuery,
        #[serde(default, with = "id::cursor")]
        after: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// A group thread with you as its owner.
    CreateGroup {
        name: GroupName,
        #[serde(default)]
        members: Vec<MemberId>,
    },
    AddMembers {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        members: Vec<MemberId>,
    },
    RemoveMember {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(with = "id::positive")]
        user_id: UserId,
    },
    LeaveGroup {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
    },
    RenameGroup {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        name: GroupName,
    },
    /// Mute `user_id` until a time (`null`: unmute).
    MuteMember {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(with = "id::positive")]
        user_id: UserId,
        until: Option<DateTime<Utc>>,
    },
    /// Make a member an admin, or an admin a member.
    SetRole {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(with = "id::positive")]
        user_id: UserId,
        role: GroupRole,
    },
    TransferOwnership {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(with = "id::positive")]
        user_id: UserId,
    },
    /// A thread's members with their roles, paged by user id.
    Members {
        #[serde(with = "id::positive")]
        thread_id: ThreadId,
        #[serde(default, with = "id::cursor")]
        after: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<PageSize>,
    },
    /// Offer a friend a file. `online`: give `name` and `size`; both then
    /// join the relay at `relay_url`. `offline`: give the `upload_id` of a
    /// completed upload of yours; they fetch it when they like.
    OfferFile {
        #[serde(with = "id::positive")]
        user_id: UserId,
        mode: TransferMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<crate::FileName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_id: Option<UploadId>,
    },
    /// The receiver declines a transfer before it starts.
    RefuseFile {
        task_id: TaskId,
    },
    /// Either party gives up a transfer that has not ended.
    CancelFile {
        task_id: TaskId,
    },
    /// Offline files offered to you and not yet fetched, oldest first.
    OfflineFiles {},
    /// You have fetched an offline file: its record goes.
    AckOfflineFile {
        task_id: TaskId,
    },
}

/// A paging cursor that is not an id (a position): 0 and below are the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Cursor(i64);

impl Cursor {
    pub fn new(raw: i64) -> Cursor {
        Cursor(raw.max(0))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Cursor::new(i64::deserialize(d)?))
    }
}

/// A scrollback cursor: a positive message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Before(#[serde(with = "id::positive")] pub MessageId);

/// A user id in a list: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(#[serde(with = "id::positive")] pub UserId);

/// Which friend requests: to you, or from you.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Request {
    /// The op name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Login { .. } => "login",
            Request::Auth { .. } => "auth",
            Request::Ping {} => "ping",
            Request::Logout {} => "logout",
            Request::OpenPrivateThread { .. } => "open_private_thread",
            Request::SendMessages { .. } => "send_messages",
            Request::SyncThreads { .. } => "sync_threads",
            Request::SyncMessages { .. } => "sync_messages",
            Request::MarkRead { .. } => "mark_read",
            Request::Recall { .. } => "recall",
            Request::ReadReceipts { .. } => "read_receipts",
            Request::FriendApply { .. } => "friend_apply",
            Request::FriendAccept { .. } => "friend_accept",
            Request::FriendReject { .. } => "friend_reject",
            Request::FriendRequests { .. } => "friend_requests",
            Request::Friends { .. } => "friends",
            Request::UpdateProfile { .. } => "update_profile",
            Request::Profile { .. } => "profile",
            Request::SearchUsers { .. } => "search_users",
            Request::CreateGroup { .. } => "create_group",
            Request::AddMembers { .. } => "add_members",
            Request::RemoveMember { .. } => "remove_member",
            Request::LeaveGroup { .. } => "leave_group",
            Request::RenameGroup { .. } => "rename_group",
            Request::MuteMember { .. } => "mute_member",
            Request::SetRole { .. } => "set_role",
            Request::TransferOwnership { .. } => "transfer_ownership",
            Request::Members { .. } => "members",
            Request::OfferFile { .. } => "offer_file",
            Request::RefuseFile { .. } => "refuse_file",
            Request::CancelFile { .. } => "cancel_file",
            Request::OfflineFiles {} => "offline_files",
            Request::AckOfflineFile { .. } => "ack_offline_file",
        }
    }

    /// Rules across fields that serde cannot express.
    pub(crate) fn checked(self) -> Result<Request, WireError> {
        match &self {
            Request::SendMessages { items, .. }
                if items.is_empty() || items.len() > MAX_BATCH_ITEMS =>
            {
                Err(WireError::bad_request(format!(
                    "items must hold 1-{MAX_BATCH_ITEMS} messages"
                )))
            }
            Request::CreateGroup { members, .. } | Request::AddMembers { members, .. }
                if members.len() > MAX_MEMBERS_PER_REQUEST =>
            {
                Err(WireError::bad_request(format!(
                    "at most {MAX_MEMBERS_PER_REQUEST} members per request"
                )))
            }
            Request::OfferFile {
                mode: TransferMode::Online,
                name,
                size,
                upload_id,
                ..
            } if name.is_none() || size.is_none_or(|s| s == 0) || upload_id.is_some() => {
                Err(WireError::bad_request(
                    "an online offer names the file (name) and its size (from 1), and no upload_id",
                ))
            }
            Request::OfferFile {
                mode: TransferMode::Offline,
                name,
                size,
                upload_id,
                ..
            } if upload_id.is_none() || name.is_some() || size.is_some() => {
                Err(WireError::bad_request(
                    "an offline offer names the upload_id of a completed upload of yours (its name and size come from it)",
                ))
            }
            Request::AddMembers { members, .. } if members.is_empty() => Err(
                WireError::bad_request("members must name at least one user"),
            ),
            _ => Ok(self),
        }
    }
}

/// How many users one `create_group` or `add_members` may name (a group
/// holds up to 10,000; larger groups are built in several requests, each
/// within the 64 KiB frame).
pub const MAX_MEMBERS_PER_REQUEST: usize = 5_000;

/// A page size asked for: 1..=`MAX_PAGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PageSize(usize);

impl PageSize {
    pub fn get(self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = usize::deserialize(d)?;
        if (1..=MAX_PAGE).contains(&n) {
            Ok(PageSize(n))
        } else {
            Err(serde::de::Error::custom(format!(
                "limit must be 1-{MAX_PAGE}"
            )))
        }
    }
}

impl TryFrom<usize> for PageSize {
    type Error = WireError;
    fn try_from(n: usize) -> Result<Self, WireError> {
        if (1..=MAX_PAGE).contains(&n) {
            Ok(PageSize(n))
        } else {
            Err(WireError::bad_request(format!(
                "limit must be 1-{MAX_PAGE}"
            )))
        }
    }
}

/// One item of `send_messages` as sent; [`OutgoingItem::parse`] validates
/// it. A text has a `body`; an image, file or video names its `upload_id`
/// (and may have a `body` caption and a `preview`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingItem {
    pub unique_id: String,
    #[serde(default)]
    pub body: String,
    /// `text` (the default), `image`, `file` or `video`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

impl OutgoingItem {
    pub fn new(unique_id: impl Into<String>, body: impl Into<String>) -> Self {
        OutgoingItem {
            unique_id: unique_id.into(),
            body: body.into(),
            kind: None,
            upload_id: None,
            preview: None,
        }
    }

    /// An image, file or video message showing `upload_id`.
    pub fn media(
        unique_id: impl Into<String>,
        kind: UploadKind,
        upload_id: UploadId,
        caption: impl Into<String>,
        preview: Option<String>,
    ) -> Self {
        OutgoingItem {
            unique_id: unique_id.into(),
            body: caption.into(),
            kind: Some(kind.as_str().to_owned()),
            upload_id: Some(upload_id.to_string()),
            preview,
        }
    }

    /// The validated message, or the item's `unique_id` (as sent) and why not.
    pub fn parse(self) -> Result<OutgoingMessage, (String, WireError)> {
        let unique_id = match UniqueId::parse(self.unique_id.clone()) {
            Ok(u) => u,
            Err(e) => return Err((self.unique_id, e)),
        };
        let fail = |e| Err((self.unique_id.clone(), e));
        let kind = self.kind.as_deref().unwrap_or("text");
        if kind == "text" {
            if self.upload_id.is_some() || self.preview.is_some() {
                return fail(WireError::bad_request(
                    "a text has no upload_id or preview; give kind image, file or video",
                ));
            }
            return match MessageBody::parse(self.body) {
                Ok(body) => Ok(OutgoingMessage {
                    unique_id,
                    body: body.into_string(),
                    media: None,
                }),
                Err(e) => fail(e),
            };
        }
        let Some(kind) = UploadKind::from_name(kind) else {
            return fail(WireError::bad_request(
                "kind must be text, image, file or video",
            ));
        };
        let Some(upload_id) = self.upload_id.as_deref().and_then(UploadId::parse) else {
            return fail(WireError::bad_request(
                "a media message needs the upload_id (a UUID) of your upload",
            ));
        };
        let preview = match self.preview.map(Preview::parse).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return fail(e),
        };
        let body = if self.body.is_empty() {
            String::new()
        } else {
            match MessageBody::parse(self.body) {
                Ok(caption) => caption.into_string(),
                Err(e) => return fail(e),
            }
        };
        Ok(OutgoingMessage {
            unique_id,
            body,
            media: Some(OutgoingMedia {
                kind,
                upload_id,
                preview,
            }),
        })
    }
}

/// A validated item of `send_messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub unique_id: UniqueId,
    /// The text, or a media message's caption (may be empty).
    pub body: String,
    pub media: Option<OutgoingMedia>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMedia {
    pub kind: UploadKind,
    pub upload_id: UploadId,
    pub preview: Preview,
}

/// The most a preview may be (a thumbnail, not the picture).
pub const MAX_PREVIEW_BYTES: usize = 16 * 1024;

/// A media message's preview: a `data:image/{png,jpeg,gif,webp};base64,`
/// URL of at most [`MAX_PREVIEW_BYTES`] — something a browser can only
/// show, never run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview(String);

impl Preview {
    pub fn parse(raw: String) -> Result<Preview, WireError> {
        if raw.len() > MAX_PREVIEW_BYTES {
            return Err(WireError::new(
                ErrorCode::TooLong,
                format!("a preview may be at most {MAX_PREVIEW_BYTES} bytes"),
            ));
        }
        let data = ["png", "jpeg", "gif", "webp"]
            .iter()
            .find_map(|t| raw.strip_prefix(&format!("data:image/{t};base64,")));
        let base64 = |d: &str| {
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        };
        match data {
            Some(d) if base64(d) => Ok(Preview(raw)),
            _ => Err(WireError::bad_request(
                "preview must be a data:image/(png|jpeg|gif|webp);base64, URL",
            )),
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Serde helpers for ids in requests.
mod id {
    use imlog_events::{MessageId, ThreadId, UserId};

    pub trait RawId: Sized + Copy {
        fn parse(raw: i64) -> Option<Self>;
        fn new(raw: i64) -> Self;
        fn get(self) -> i64;
    }

    macro_rules! raw_id {
        ($($t:ty),*) => {$(
            impl RawId for $t {
                fn parse(raw: i64) -> Option<Self> { <$t>::parse(raw) }
                fn new(raw: i64) -> Self { <$t>::new(raw) }
                fn get(self) -> i64 { <$t>::get(self) }
            }
        )*};
    }
    raw_id!(UserId, ThreadId, MessageId);

    /// An id that must name something: positive.
    pub mod positive {
        use super::RawId;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer, T: RawId>(id: &T, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_i64(id.get())
        }

        pub fn deserialize<'de, D: Deserializer<'de>, T: RawId>(d: D) -> Result<T, D::Error> {
            let raw = i64::deserialize(d)?;
            T::parse(raw).ok_or_else(|| serde::de::Error::custom("ids are positive integers"))
        }
    }

    /// A paging cursor: "after this id"; 0 (and anything below) is the start.
    pub mod cursor {
        use super::RawId;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer, T: RawId>(id: &T, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_i64(id.get())
        }

        pub fn deserialize<'de, D: Deserializer<'de>, T: RawId>(d: D) -> Result<T, D::Error> {
            Ok(T::new(i64::deserialize(d)?.max(0)))
        }
    }
}
