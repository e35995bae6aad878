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
