//! Reads of accounts and sessions.

use crate::read_model::overfetch;
use crate::{Page, ReadError, ReadModel};
use chrono::{DateTime, Utc};
use imlog_events::{SessionId, Sex, UserId};
use imlog_postgres::Prepared;
use std::collections::HashMap;
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

/// A user's public profile.
#[derive(Debug, Clone)]
pub struct ProfileRow {
    pub user_id: UserId,
    pub name: String,
    pub nick: String,
    pub description: String,
    pub sex: Sex,
    pub avatar: Option<String>,
}

/// Where a user is connected, and when they were last seen.
#[derive(Debug, Clone, Default)]
pub struct PresenceRow {
    pub gateways: Vec<String>,
    pub last_seen: Option<DateTime<Utc>>,
}

const PROFILE_COLUMNS: &str = "user_id, name, nick, description, sex, avatar";

fn profile_row(r: &tokio_postgres::Row) -> ProfileRow {
    ProfileRow {
        user_id: UserId::new(r.get(0)),
        name: r.get(1),
        nick: r.get(2),
        description: r.get(3),
        sex: Sex::from_name(r.get(4)).unwrap_or_default(),
        avatar: r.get(5),
    }
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
            .query_prepared_opt(
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
            .query_prepared_opt(
                "SELECT user_id, name FROM users WHERE user_id = $1",
                &[(&user_id.get(), Type::INT8)],
            )
            .await?
            .map(|r| UserRow {
                user_id: UserId::new(r.get(0)),
                name: r.get(1),
            }))
    }

    pub async fn profile(&self, user_id: UserId) -> Result<Option<ProfileRow>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared_opt(
                &format!("SELECT {PROFILE_COLUMNS} FROM users WHERE user_id = $1"),
                &[(&user_id.get(), Type::INT8)],
            )
            .await?
            .as_ref()
            .map(profile_row))
    }

    /// Users whose name starts with `prefix`, by user id after `after`.
    pub async fn users_by_prefix(
        &self,
        prefix: &str,
        after: UserId,
        limit: usize,
    ) -> Result<Page<ProfileRow>, ReadError> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = self
            .client()
            .await?
            .query_prepared(
                &format!(
                    "SELECT {PROFILE_COLUMNS} FROM users WHERE name LIKE $1 AND user_id > $2
                     ORDER BY user_id LIMIT $3"
                ),
                &[
                    (&pattern, Type::TEXT),
                    (&after.get(), Type::INT8),
                    (&overfetch(limit), Type::INT8),
                ],
            )
            .await?;
        let items = rows.iter().map(profile_row).collect();
        Ok(Page::from_overfetch(items, limit, after.get(), |p| {
            p.user_id.get()
        }))
    }

    /// The gateways `ids` are connected on and when they were last seen.
    pub async fn presence(
        &self,
        ids: &[UserId],
    ) -> Result<HashMap<UserId, PresenceRow>, ReadError> {
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        let rows = self
            .client()
            .await?
            .query_prepared(
                "SELECT u, (SELECT array_agg(gateway_id) FROM presence WHERE user_id = u),
                        (SELECT at FROM last_seen WHERE user_id = u)
                 FROM unnest($1::bigint[]) AS u",
                &[(&raw, Type::INT8_ARRAY)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let presence = PresenceRow {
                    gateways: r.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
                    last_seen: r.get(2),
                };
                (UserId::new(r.get(0)), presence)
            })
            .collect())
    }

    /// Up to `limit` presence rows older than `older_than_secs` on gateways
    /// other than `alive` (a row that new was written by a gateway that may
    /// not have published its first heartbeat yet).
    pub async fn presence_elsewhere(
        &self,
        alive: &[String],
        older_than_secs: f64,
        limit: usize,
    ) -> Result<Vec<(UserId, String)>, ReadError> {
        Ok(self
            .client()
            .await?
            .query_prepared(
                "SELECT user_id, gateway_id FROM presence
                 WHERE NOT (gateway_id = ANY($1)) AND since < now() - make_interval(secs => $2)
                 LIMIT $3",
                &[
                    (&alive, Type::TEXT_ARRAY),
                    (&older_than_secs, Type::FLOAT8),
                    (&(limit as i64), Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(|r| (UserId::new(r.get(0)), r.get(1)))
            .collect())
    }

    /// Which of `ids` are registered users.
    pub async fn existing_users(&self, ids: &[UserId]) -> Result<Vec<UserId>, ReadError> {
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        Ok(self
            .client()
            .await?
            .query_prepared(
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
            .query_prepared(
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
            .query_prepared_opt(
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
