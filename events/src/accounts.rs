//! Accounts and sessions: registrations, logins, logouts and kicks.

use crate::{SessionId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

impl SessionEndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEndReason::Logout => "logout",
            SessionEndReason::Kicked => "kicked",
            SessionEndReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub reason: SessionEndReason,
}

/// What a user says of their sex on their profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    #[default]
    Unspecified,
    Female,
    Male,
    Other,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Unspecified => "unspecified",
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<Sex> {
        [Sex::Unspecified, Sex::Female, Sex::Male, Sex::Other]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A user's public profile, whole as it now is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub user_id: UserId,
    pub nick: String,
    pub description: String,
    pub sex: Sex,
    /// A reference to the avatar image (an upload), if any.
    pub avatar: Option<String>,
}

/// Why a user came online or went offline on one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceReason {
    /// A connection logged in or resumed its session.
    Connected,
    Logout,
    /// A newer login elsewhere replaced the session.
    Kicked,
    /// The connection went silent past the heartbeat timeout.
    Timeout,
    /// The connection closed (by the client, or the server stopping).
    Closed,
}

impl PresenceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceReason::Connected => "connected",
            PresenceReason::Logout => "logout",
            PresenceReason::Kicked => "kicked",
            PresenceReason::Timeout => "timeout",
            PresenceReason::Closed => "closed",
        }
    }
}

/// The user's first connection on `gateway_id` attached (`online`), or its
/// last one there closed. A user is online while some live gateway has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceChanged {
    pub user_id: UserId,
    pub gateway_id: String,
    pub online: bool,
    pub reason: PresenceReason,
}
