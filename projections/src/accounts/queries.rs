//! Reads of accounts and sessions.

use crate::{ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{SessionId, UserId};
use tokio_postgres::types::Type;

pub struct UserCredentials {
    pub user_id: UserId,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub user_id: UserId,
    pub name: String,
}

pub struct LiveSession {
    pub session_id: SessionId,
    pub user_id: UserId,
    /// Offset of its `session.started` event.
    pub start_offset: i64,
    pub expires_at: DateTime<Utc>,
}

impl ReadModel {
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserCredentials>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_typed_opt(
                "SELECT user_id, password_hash FROM users WHERE name = $1",
                &[(&name, Type::TEXT)],
            )
            .await?
            .map(|r| UserCredentials {
                user_id: UserId::new(r.get(0)),
                password_hash: r.get(1),
            }))
    }

    pub async fn user(&self, user_id: UserId) -> Result<Option<UserRow>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_typed_opt(
                "SELECT user_id, name FROM users WHERE user_id = $1",
                &[(&user_id.get(), Type::INT8)],
            )
            .await?
            .map(|r| UserRow {
                user_id: UserId::new(r.get(0)),
                name: r.get(1),
            }))
    }

    /// Which of `ids` are registered users.
    pub async fn existing_users(&self, ids: &[UserId]) -> Result<Vec<UserId>, ReadError> {
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        Ok(self
            .client()
            .await?
            .query_typed(
                "SELECT user_id FROM users WHERE user_id = ANY($1)",
                &[(&raw, Type::INT8_ARRAY)],
            )
            .await?
            .iter()
            .map(|r| UserId::new(r.get(0)))
            .collect())
    }

    /// The names of `ids`, for lines that mention them.
    pub async fn user_names(&self, ids: &[UserId]) -> Result<Vec<(UserId, String)>, ReadError> {
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        Ok(self
            .client()
            .await?
            .query_typed(
                "SELECT user_id, name FROM users WHERE user_id = ANY($1)",
                &[(&raw, Type::INT8_ARRAY)],
            )
            .await?
            .iter()
            .map(|r| (UserId::new(r.get(0)), r.get(1)))
            .collect())
    }

    /// The session a bearer token belongs to, if it has not ended or expired.
    pub async fn live_session(&self, token_sha256: &str) -> Result<Option<LiveSession>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_typed_opt(
                "SELECT session_id, user_id, start_offset, expires_at FROM sessions
                 WHERE token_sha256 = $1 AND ended_at IS NULL AND expires_at > now()",
                &[(&token_sha256, Type::TEXT)],
            )
            .await?
            .map(|r| LiveSession {
                session_id: SessionId::new(r.get(0)),
                user_id: UserId::new(r.get(1)),
                start_offset: r.get(2),
                expires_at: r.get(3),
            }))
    }
}
