//! Users and their sessions.

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use imlog_events::{Envelope, Event, SessionEndReason, Topic, UserId};
use imlog_log::Record;
use tokio_postgres::Transaction;

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
                    &[&user_id.0, &e.name, &e.password_hash, &at],
                )
                .await?;
            }
            Event::SessionStarted(e) => {
                tx.execute(
                    "INSERT INTO sessions (session_id, user_id, token_sha256, gateway_id, device, start_offset,
                                           started_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &e.session_id.0,
                        &e.user_id.0,
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
                        &e.user_id.0,
                        &e.session_id.0,
                        &at,
                        &reason(SessionEndReason::Kicked),
                    ],
                )
                .await?;
            }
            Event::SessionEnded(e) => {
                tx.execute(
                    "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE session_id = $1 AND ended_at IS NULL",
                    &[&e.session_id.0, &at, &reason(e.reason)],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn reason(r: SessionEndReason) -> &'static str {
    match r {
        SessionEndReason::Logout => "logout",
        SessionEndReason::Kicked => "kicked",
        SessionEndReason::Timeout => "timeout",
    }
}
