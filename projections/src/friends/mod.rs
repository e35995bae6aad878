//! Friends: requests (pending, accepted, rejected) and friendships, from the
//! social topic. The friendship's private thread and first messages are not
//! written here: the acceptance process issues them as events of their own.

mod queries;

use crate::{Feature, Projection, ProjectionError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use imlog_events::{Envelope, Event, Topic};
use imlog_log::Record;
use imlog_postgres::Migration;

pub use queries::{FriendRequestRow, FriendRow, RequestStatus};

pub(crate) const FEATURE: Feature = Feature {
    projection: &Friends,
    tables: &["friend_requests", "friends"],
    migrations: &[Migration {
        version: 2,
        name: "friends",
        sql: include_str!("schema.sql"),
    }],
};

pub struct Friends;

#[async_trait]
impl Projection for Friends {
    fn name(&self) -> &'static str {
        "friends"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Social]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let at = envelope.meta.occurred_at;
        match &envelope.event {
            Event::FriendRequested(e) => {
                // Friends already: nothing to ask. Otherwise the latest
                // request of this direction is the one that counts.
                tx.execute(
                    "INSERT INTO friend_requests (from_id, to_id, greeting, alias, status, requested_at)
                     SELECT $1, $2, $3, $4, 'pending', $5
                     WHERE NOT EXISTS (SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2)
                     ON CONFLICT (from_id, to_id) DO UPDATE
                     SET greeting = EXCLUDED.greeting, alias = EXCLUDED.alias, status = 'pending',
                         requested_at = EXCLUDED.requested_at, decided_at = NULL,
                         accept_partition = NULL, accept_offset = NULL",
                    &[&e.from.get(), &e.to.get(), &e.greeting, &e.alias, &at],
                )
                .await?;
            }
            Event::FriendAccepted(e) => {
                // Only a pending request can be accepted: a second acceptance
                // (or one racing a rejection) finds it decided and changes
                // nothing.
                let accepted = tx
                    .query_opt(
                        "UPDATE friend_requests
                         SET status = 'accepted', decided_at = $3, accept_partition = $4, accept_offset = $5
                         WHERE from_id = $1 AND to_id = $2 AND status = 'pending'
                         RETURNING alias",
                        &[&e.from.get(), &e.to.get(), &at, &record.partition, &record.offset],
                    )
                    .await?;
                let Some(row) = accepted else {
                    return Ok(());
                };
                let requester_alias: String = row.get(0);
                tx.execute(
                    "INSERT INTO friends (user_id, friend_id, alias, since)
                     VALUES ($1, $2, $3, $5), ($2, $1, $4, $5)
                     ON CONFLICT DO NOTHING",
                    &[&e.from.get(), &e.to.get(), &requester_alias, &e.alias, &at],
                )
                .await?;
                // They had asked each other: the other request is settled too.
                tx.execute(
                    "UPDATE friend_requests SET status = 'accepted', decided_at = $3
                     WHERE from_id = $2 AND to_id = $1 AND status = 'pending'",
                    &[&e.from.get(), &e.to.get(), &at],
                )
                .await?;
            }
            Event::FriendRejected(e) => {
                tx.execute(
                    "UPDATE friend_requests SET status = 'rejected', decided_at = $3
                     WHERE from_id = $1 AND to_id = $2 AND status = 'pending'",
                    &[&e.from.get(), &e.to.get(), &at],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
