//! Pushes: frames the server sends without a request, `{"push": kind, "data": ...}`.

use crate::{MessageView, ThreadKind};
use chrono::{DateTime, Utc};
use imlog_events::{MessageId, Sex, ThreadId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "push", content = "data", rename_all = "snake_case")]
pub enum Push {
    /// A message was posted to a thread you are in.
    Message(MessageView),
    /// A newer login of your account replaced this session; the connection
    /// closes (4001) right after.
    Kicked { reason: String },
    /// A thread that includes you was created, or you were added to one:
    /// `sync_threads` has the rest.
    Thread {
        thread_id: ThreadId,
        kind: ThreadKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `user_id` read `thread_id` up to `up_to` (private threads and groups
    /// of up to 100 members).
    Read {
        thread_id: ThreadId,
        user_id: UserId,
        up_to: MessageId,
    },
    /// The sender withdrew a message: show it as recalled.
    Recalled {
        thread_id: ThreadId,
        message_id: MessageId,
        by: UserId,
    },
    /// A media message's upload ended: download it (`uploaded`) or show
    /// it failed. Both sides of the thread are pushed it.
    MediaSettled {
        thread_id: ThreadId,
        message_id: MessageId,
        upload_id: imlog_events::UploadId,
        state: imlog_events::MediaState,
    },
    /// A friend offers you a file (online: join its relay; offline: it is
    /// in `offline_files`).
    FileOffer(crate::TransferView),
    /// A transfer you are party to changed state (`done`, `refused`,
    /// `cancelled`, `error`, or a relay state).
    Transfer {
        task_id: imlog_events::TaskId,
        state: imlog_events::TransferState,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// A friend came online or went offline.
    Presence {
        user_id: UserId,
        online: bool,
        #[serde(default)]
        last_seen: Option<DateTime<Utc>>,
    },
    /// A friend changed their profile (the new one, whole).
    ProfileUpdated {
        user_id: UserId,
        nick: String,
        description: String,
        sex: Sex,
        #[serde(default)]
        avatar: Option<String>,
    },
    /// `from` asks you to be friends.
    FriendRequest { from: UserId, greeting: String },
    /// `to` accepted `from`'s request: you are friends. Sent to both; the
    /// thread and its first messages follow as `message` pushes.
    FriendAccepted { from: UserId, to: UserId },
}

impl Push {
    /// The text frame.
    pub fn frame(&self) -> String {
        // Our own plain types always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}
