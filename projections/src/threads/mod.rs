//! Threads and their members: private threads (one per pair) and group
//! threads with roles, mutes and names.

mod groups;
pub mod permissions;
mod queries;

use crate::{Feature, Projection, ProjectionError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use imlog_events::{Envelope, Event, ThreadId, Topic};
use imlog_log::Record;
use imlog_postgres::Migration;

pub use queries::{GroupChangeRow, MemberRow, Membership, ThreadKind, ThreadRow};

pub(crate) const FEATURE: Feature = Feature {
    projection: &Threads,
    tables: &[
        "threads",
        "private_threads",
        "thread_members",
        "group_threads",
        "group_changes",
    ],
    migrations: &[
        Migration {
            version: 3,
            name: "group threads",
            sql: include_str!("groups.sql"),
        },
        Migration {
            version: 6,
            name: "thread list by join position",
            sql: include_str!("joined.sql"),
        },
    ],
};

pub struct Threads;

#[async_trait]
impl Projection for Threads {
    fn name(&self) -> &'static str {
        "threads"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Threads]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        record: &Record,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let at = envelope.meta.occurred_at;
        if let Event::PrivateThreadCreated(e) = &envelope.event {
            // Two servers may race to open the same pair's thread; the first
            // event in log order creates it, later ones are no-ops.
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM private_threads WHERE user_low = $1 AND user_high = $2",
                    &[&e.user_low.get(), &e.user_high.get()],
                )
                .await?
                .is_some();
            if exists || e.user_low >= e.user_high {
                return Ok(());
            }
            let thread_id = ThreadId::from_position(record.position());
            tx.execute(
                "INSERT INTO threads (thread_id, kind, created_at) VALUES ($1, 'private', $2)",
                &[&thread_id.get(), &at],
            )
            .await?;
            tx.execute(
                "INSERT INTO private_threads (thread_id, user_low, user_high) VALUES ($1, $2, $3)",
                &[&thread_id.get(), &e.user_low.get(), &e.user_high.get()],
            )
            .await?;
            tx.execute(
                "INSERT INTO thread_members (thread_id, user_id, role, joined_at, joined_pos)
                 VALUES ($1, $2, 'member', $4, $1), ($1, $3, 'member', $4, $1)",
                &[&thread_id.get(), &e.user_low.get(), &e.user_high.get(), &at],
            )
            .await?;
        } else {
            groups::apply(tx, record.position(), &envelope.event, at).await?;
        }
        Ok(())
    }
}
