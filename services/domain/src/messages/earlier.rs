//! Earlier sends of `unique_id`s, looked up for many sends at once.
//!
//! A send to a private thread looks for an earlier message with the same
//! `unique_id` while it appends (`Messages::post`). At a few thousand sends
//! a second, one statement each would be most of what Postgres executes for
//! the gateway; instead one task takes every look-up queued while its last
//! statement ran and answers them all with the next one, as the log's
//! writer does for appends.

use crate::journal::StoreError;
use imlog_events::{MessageId, ThreadId, UserId};
use imlog_projections::ReadModel;
use std::collections::HashMap;
use std::sync::OnceLock;
use tokio::sync::{mpsc, oneshot};

/// Look-ups one statement answers at most.
const MAX_LOOKUPS: usize = 256;
/// Look-ups waiting; past it, senders wait for room.
const QUEUED: usize = 4096;

/// Each `unique_id` found, with the message its first send produced.
pub(super) type Found = HashMap<String, MessageId>;

struct Lookup {
    thread_id: ThreadId,
    sender: UserId,
    unique_ids: Vec<String>,
    answer: oneshot::Sender<Result<Found, StoreError>>,
}

/// The queue to the look-up task, started on first use (in the runtime).
pub(super) struct EarlierSends {
    read: ReadModel,
    queue: OnceLock<mpsc::Sender<Lookup>>,
}

impl EarlierSends {
    pub(super) fn new(read: ReadModel) -> EarlierSends {
        EarlierSends {
            read,
            queue: OnceLock::new(),
        }
    }

    /// The messages earlier sends of `unique_ids` by `sender` produced in
    /// `thread_id`, by `unique_id`.
    pub(super) async fn of(
        &self,
        thread_id: ThreadId,
        sender: UserId,
        unique_ids: Vec<String>,
    ) -> Result<Found, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (queue, lookups) = mpsc::channel(QUEUED);
            tokio::spawn(answer_lookups(self.read.clone(), lookups));
            queue
        });
        let (answer, answered) = oneshot::channel();
        let lookup = Lookup {
            thread_id,
            sender,
            unique_ids,
            answer,
        };
        let stopped = || StoreError::Read("the look-up of earlier sends stopped".into());
        queue.send(lookup).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Until every queue handle is gone: whatever is queued, in one statement.
async fn answer_lookups(read: ReadModel, mut queue: mpsc::Receiver<Lookup>) {
    let mut lookups = Vec::with_capacity(MAX_LOOKUPS);
    while queue.recv_many(&mut lookups, MAX_LOOKUPS).await > 0 {
        let wanted: Vec<(ThreadId, UserId, &str)> = lookups
            .iter()
            .flat_map(|l| {
                l.unique_ids
                    .iter()
                    .map(move |u| (l.thread_id, l.sender, u.as_str()))
            })
            .collect();
        let found = read.sent(&wanted).await.map(|rows| {
            rows.into_iter()
                .map(|(thread, sender, unique_id, id)| ((thread, sender, unique_id), id))
                .collect::<HashMap<_, _>>()
        });
        for lookup in lookups.drain(..) {
            let answer = match &found {
                Ok(found) => Ok(lookup
                    .unique_ids
                    .into_iter()
                    .filter_map(|u| {
                        let id = found.get(&(lookup.thread_id, lookup.sender, u.clone()));
                        id.map(|&id| (u, id))
                    })
                    .collect()),
                Err(e) => Err(StoreError::Read(e.to_string())),
            };
            // The sender may have gone (its connection closed).
            let _ = lookup.answer.send(answer);
        }
    }
}
