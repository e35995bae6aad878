//! Read markers and recalls, applied in log order between runs of posts.

use crate::ProjectionError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use imlog_events::{MessageRecalled, MessagesRead};
use imlog_postgres::Prepared;
use tokio_postgres::types::Type;

/// Moves `reader`'s marker forward to the last message at or before `up_to`.
pub(super) async fn read(
    tx: &Transaction<'_>,
    e: &MessagesRead,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    tx.query_prepared(
        "INSERT INTO thread_reads (thread_id, user_id, read_seq, read_message_id, read_at)
         SELECT m.thread_id, $2, m.seq, m.message_id, $4 FROM messages m
         WHERE m.thread_id = $1 AND m.message_id <= $3
         ORDER BY m.message_id DESC LIMIT 1
         ON CONFLICT (thread_id, user_id) DO UPDATE
         SET read_seq = EXCLUDED.read_seq, read_message_id = EXCLUDED.read_message_id,
             read_at = EXCLUDED.read_at
         WHERE thread_reads.read_seq < EXCLUDED.read_seq",
        &[
            (&e.thread_id.get(), Type::INT8),
            (&e.reader.get(), Type::INT8),
            (&e.up_to.get(), Type::INT8),
            (&at, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// Empties a message's body, if `by` sent it. (The recall window is the
/// command's rule, checked against the clock when asked; the projection
/// must give the same result in a replay, whenever that runs.)
pub(super) async fn recall(
    tx: &Transaction<'_>,
    e: &MessageRecalled,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    tx.query_prepared(
        "UPDATE messages SET body = '', media = NULL, recalled_at = $4
         WHERE message_id = $1 AND thread_id = $2 AND sender_id = $3 AND recalled_at IS NULL",
        &[
            (&e.message_id.get(), Type::INT8),
            (&e.thread_id.get(), Type::INT8),
            (&e.by.get(), Type::INT8),
            (&at, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// Posting reads the thread up to your own message: one statement for a
/// run of posts (columns of the rows just inserted).
pub(super) async fn read_own_posts(
    tx: &Transaction<'_>,
    threads: &[i64],
    senders: &[i64],
    seqs: &[i64],
    message_ids: &[i64],
    at: &[DateTime<Utc>],
) -> Result<(), ProjectionError> {
    tx.query_prepared(
        "INSERT INTO thread_reads (thread_id, user_id, read_seq, read_message_id, read_at)
         SELECT t, s, max(q), max(m), max(c)
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[]) AS u(t, s, q, m, c)
         GROUP BY t, s
         ON CONFLICT (thread_id, user_id) DO UPDATE
         SET read_seq = EXCLUDED.read_seq, read_message_id = EXCLUDED.read_message_id,
             read_at = EXCLUDED.read_at
         WHERE thread_reads.read_seq < EXCLUDED.read_seq",
        &[
            (&threads, Type::INT8_ARRAY),
            (&senders, Type::INT8_ARRAY),
            (&seqs, Type::INT8_ARRAY),
            (&message_ids, Type::INT8_ARRAY),
            (&at, Type::TIMESTAMPTZ_ARRAY),
        ],
    )
    .await?;
    Ok(())
}
