//! Accounts: users and their sessions.

mod queries;

use crate::{Feature, Projection, ProjectionError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use imlog_events::{Envelope, Event, SessionEndReason, Topic, UserId};
use imlog_log::Record;
use imlog_postgres::Migration;

pub use queries::{LiveSession, PresenceRow, ProfileRow, UserCredentials, UserRow};

pub(crate) const FEATURE: Feature = Feature {
    projection: &Accounts,
    tables: &["users", "sessions", "presence", "last_seen"],
    migrations: &[Migration {
        version: 5,
        name: "profiles and presence",
        sql: include_str!("profiles.sql"),
    }],
};

pub struct Accounts;

#[async_trait]
impl Projection for Accounts {
    fn name(&self) -> &'static str {
        "accounts"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Users, Topic::Sessions]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let at = envelope.meta.occurred_at;
        match &envelope.event {
            Event::UserRegistered(e) => {
                // The first registration of a name wins; a racing second one
                // is a no-op, and its command handler reports the name taken.
                let user_id = UserId::from_position(record.position());
                tx.execute(
                    "INSERT INTO users (user_id, name, password_hash, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&user_id.get(), &e.name, &e.password_hash, &at],
                )
                .await?;
            }
            Event::SessionStarted(e) => {
                tx.execute(
                    "INSERT INTO sessions (session_id, user_id, token_sha256, gateway_id, device, start_offset,
                                           started_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &e.session_id.get(),
                        &e.user_id.get(),
                        &e.token_sha256,
                        &e.gateway_id,
                        &e.device,
                        &record.offset,
                        &at,
                        &e.expires_at,
                    ],
                )
                .await?;
                // One live session per user: a new login ends the older ones.
                tx.execute(
                    "UPDATE sessions SET ended_at = $3, end_reason = $4
                     WHERE user_id = $1 AND session_id <> $2 AND ended_at IS NULL",
                    &[
                        &e.user_id.get(),
                        &e.session_id.get(),
                        &at,
                        &SessionEndReason::Kicked.as_str(),
                    ],
                )
                .await?;
            }
            Event::ProfileUpdated(e) => {
                tx.execute(
                    "UPDATE users SET nick = $2, description = $3, sex = $4, avatar = $5 WHERE user_id = $1",
                    &[&e.user_id.get(), &e.nick, &e.description, &e.sex.as_str(), &e.avatar],
                )
                .await?;
            }
            Event::PresenceChanged(e) => {
                if e.online {
                    tx.execute(
                        "INSERT INTO presence (user_id, gateway_id, since) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&e.user_id.get(), &e.gateway_id, &at],
                    )
                    .await?;
                } else {
                    tx.execute(
                        "DELETE FROM presence WHERE user_id = $1 AND gateway_id = $2",
                        &[&e.user_id.get(), &e.gateway_id],
                    )
                    .await?;
                }
                tx.execute(
                    "INSERT INTO last_seen (user_id, at) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET at = GREATEST(last_seen.at, EXCLUDED.at)",
                    &[&e.user_id.get(), &at],
                )
                .await?;
            }
            Event::SessionEnded(e) => {
                tx.execute(
                    "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE session_id = $1 AND ended_at IS NULL",
                    &[&e.session_id.get(), &at, &e.reason.as_str()],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
