//! Messages: posting batches (exactly one message per client `unique_id`,
//! also across retries), message sync, and the one mapping from stored or
//! logged messages to the wire's [`MessageView`]. Media messages turn
//! "uploaded" through the [`media`] process.

mod earlier;
pub mod media;

use crate::accounts::Session;
use crate::journal::{Journal, StoreError, Writes};
use crate::threads::{Threads, ThreadsError};
use chrono::{DateTime, Utc};
use earlier::EarlierSends;
use imlog_events::{
    messages_key, Envelope, EventMeta, LogPosition, MessageId, MessageKind, MessagePosted,
    MessageRecalled, MessagesRead, ThreadId, Topic, UserId,
};
use imlog_projections::messages::MessageRow;
use imlog_protocol::{MessageView, OutgoingMessage, Page, ReceiptView};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MessagesError {
    #[error(transparent)]
    Thread(#[from] ThreadsError),
    #[error("you are muted in this group until {0}")]
    Muted(DateTime<Utc>),
    #[error("no message {0} in this thread")]
    NoSuchMessage(MessageId),
    #[error("only its sender may recall a message")]
    NotSender,
    #[error("a message can be recalled within {0:?} of sending")]
    RecallWindowPassed(std::time::Duration),
    #[error(transparent)]
    Upload(#[from] crate::files::FilesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer for each item of a batch, in the order sent: its id, or why
/// its append failed (the item may be resent with `retry`).
pub struct Posted {
    pub thread_id: ThreadId,
    pub items: Vec<Result<MessageId, StoreError>>,
}

#[derive(Debug, Clone)]
pub struct MessagesSettings {
    /// How long after sending a message its sender may recall it.
    pub recall_window: std::time::Duration,
}

impl Default for MessagesSettings {
    fn default() -> Self {
        MessagesSettings {
            recall_window: std::time::Duration::from_secs(120),
        }
    }
}

/// Read receipts are pushed in private threads and groups up to this size;
/// in larger groups they would be a storm (everyone reading, everyone told),
/// and `read_receipts` answers instead.
pub const RECEIPT_PUSH_LIMIT: usize = 100;

pub struct Messages {
    journal: Arc<Journal>,
    threads: Arc<Threads>,
    earlier: EarlierSends,
    settings: MessagesSettings,
}

impl Messages {
    pub fn new(
        journal: Arc<Journal>,
        threads: Arc<Threads>,
        settings: MessagesSettings,
    ) -> Messages {
        Messages {
            earlier: EarlierSends::new(journal.read().clone()),
            journal,
            threads,
            settings,
        }
    }

    /// Posts a batch of texts and media messages (validated by the caller;
    /// the answers come in the same order). A media message must show an
    /// upload of the sender's of its kind that has not failed. A `unique_id`
    /// already posted by the sender in this thread (a retry after a lost
    /// reply), or repeated in the batch, is answered with the first
    /// message's id; a copy is appended only when the earlier one is looked
    /// for alongside the append (a kept membership, below), and the
    /// projection drops it.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, thread_id = %thread_id))]
    pub async fn post(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        texts: Vec<OutgoingMessage>,
        retry: bool,
    ) -> Result<Posted, MessagesError> {
        let me = session.user_id;
        self.journal.settle(writes, &[Topic::Threads]).await?;
        if retry {
            // A stranger or a muted member is refused at once, not after
            // the wait below.
            let membership = self.threads.membership(thread_id, me).await?;
            if let Some(until) = membership.muted_until.filter(|&until| until > Utc::now()) {
                return Err(MessagesError::Muted(until));
            }
            // The first send may have been acknowledged a moment ago on
            // another connection: wait until everything appended to the
            // thread's partition is projected, so it is found.
            self.journal
                .settle_partition(Topic::Messages, &messages_key(thread_id))
                .await?;
        }
        // A private thread's membership is kept by this gateway (it never
        // changes), and the earlier sends of these unique_ids are then read
        // while appending (below); otherwise both are read first, in one
        // round trip.
        let memberships = self.threads.memberships();
        let kept = if retry {
            None
        } else {
            memberships.get(thread_id, me)
        };
        let (membership, already_sent) = match kept {
            Some(membership) => (membership, None),
            None => {
                let unique_ids: Vec<&str> = texts.iter().map(|t| t.unique_id.as_str()).collect();
                let (membership, sent) = self
                    .journal
                    .read()
                    .membership_and_sent(thread_id, me, &unique_ids)
                    .await
                    .map_err(StoreError::from)?
                    .ok_or(ThreadsError::NotMember(thread_id))?;
                memberships.keep(thread_id, me, &membership);
                (membership, Some(sent))
            }
        };
        if let Some(until) = membership.muted_until.filter(|&until| until > Utc::now()) {
            return Err(MessagesError::Muted(until));
        }
        // A private thread names its peer; a group's pushes go to its
        // members as the fan-out knows them, so a send never carries a
        // member list.
        let recipients: Vec<_> = membership.peer.into_iter().collect();
        let members_as_of = recipients.is_empty().then_some(membership.as_of);

        let mut answers: Vec<Result<MessageId, StoreError>> = Vec::with_capacity(texts.len());
        let mut envelopes = Vec::new();
        // For each envelope: the answers it settles (a unique_id repeated
        // inside one batch is one message).
        let mut settles: Vec<Vec<usize>> = Vec::new();
        let mut in_batch: HashMap<String, usize> = HashMap::new();
        let correlation_id = Uuid::now_v7();
        for text in texts {
            let index = answers.len();
            let unique_id = text.unique_id.into_string();
            if let Some(&id) = already_sent.as_ref().and_then(|sent| sent.get(&unique_id)) {
                answers.push(Ok(id));
                continue;
            }
            // A placeholder until the append answers.
            answers.push(Ok(MessageId::default()));
            if let Some(&envelope) = in_batch.get(&unique_id) {
                settles[envelope].push(index);
                continue;
            }
            in_batch.insert(unique_id.clone(), settles.len());
            settles.push(vec![index]);
            let (kind, media) = match text.media {
                None => (MessageKind::Text, None),
                Some(media) => (
                    media_kind(media.kind),
                    Some(crate::files::attachment(&self.journal, writes, me, media).await?),
                ),
            };
            let event = MessagePosted {
                thread_id,
                sender_id: me,
                unique_id,
                kind,
                body: text.body,
                recipients: recipients.clone(),
                members_as_of,
                media,
            };
            envelopes.push(Envelope::new(
                EventMeta::new(Some(me), correlation_id),
                event,
            ));
        }
        imlog_postgres::pausepoint("messages.before_append").await;
        let (results, sent_before) = match already_sent {
            Some(_) => (self.journal.append_all(writes, &envelopes).await, None),
            None => {
                // A unique_id sent before (the protocol asks for a fresh one
                // unless `retry`, but a client may err) is answered with its
                // first message; the copy appended here is dropped by the
                // projection. Read alongside the append: no wait for it.
                let appending: Vec<String> = in_batch.keys().cloned().collect();
                let (results, sent) = tokio::join!(
                    self.journal.append_all(writes, &envelopes),
                    self.earlier.of(thread_id, me, appending)
                );
                (results, Some(sent))
            }
        };
        for (indices, result) in settles.iter().zip(results) {
            for &index in indices {
                answers[index] = result.clone().map(MessageId::from_position);
            }
        }
        match sent_before {
            None => {}
            Some(Ok(sent)) => {
                for (unique_id, id) in sent {
                    for &index in in_batch.get(&unique_id).map_or(&[][..], |&e| &settles[e]) {
                        if answers[index].is_ok() {
                            answers[index] = Ok(id);
                        }
                    }
                }
            }
            // The messages are stored and pushed: answer with their ids. Had
            // one reused a unique_id without `retry` (a client's mistake),
            // its id is one the read model drops, as when the first copy is
            // not projected yet.
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not look for earlier sends of these unique_ids");
            }
        }
        if retry && !envelopes.is_empty() {
            // Our copy may not be the one the read model keeps: the first
            // send may have reached the log after the wait above (its
            // gateway died with the append in flight, and the broker took it
            // late). The projection keeps the first copy and drops the
            // others. Answer with whichever copy the read model kept, so an
            // acked id is always the one sync shows. (A log never writes one
            // append twice by itself: `KafkaSettings::idempotent`.)
            // Lagging or unreachable: the request fails retryably (the
            // messages are stored; a resend is answered from the read model).
            self.journal.settle(writes, &[Topic::Messages]).await?;
            let appended: Vec<&str> = in_batch.keys().map(String::as_str).collect();
            let kept = self
                .journal
                .read()
                .membership_and_sent(thread_id, me, &appended)
                .await
                .map_err(StoreError::from)?
                // Removed from the group since: the read model still kept
                // one copy each; ours stands unless it shows otherwise.
                .map(|(_, kept)| kept)
                .unwrap_or_default();
            for (unique_id, &envelope) in &in_batch {
                let Some(&id) = kept.get(unique_id) else {
                    continue;
                };
                for &index in &settles[envelope] {
                    if let Ok(answer) = &mut answers[index] {
                        if *answer != id {
                            tracing::info!(%unique_id, appended = %answer, kept = %id,
                                "a retried message was already in the log: answering with the kept copy");
                            *answer = id;
                        }
                    }
                }
            }
        }
        Ok(Posted {
            thread_id,
            items: answers,
        })
    }

    /// A thread's messages after `since`, or with `before`, the page just
    /// before that message (scrollback).
    pub async fn sync(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        since: MessageId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<MessageView>, MessagesError> {
        self.journal
            .settle(writes, &[Topic::Threads, Topic::Messages])
            .await?;
        self.threads.membership(thread_id, session.user_id).await?;
        let read = self.journal.read();
        let page = match before {
            Some(before) => read.messages_before(thread_id, before, limit).await,
            None => read.messages_page(thread_id, since, limit).await,
        }
        .map_err(StoreError::from)?;
        Ok(crate::page(page, stored_view))
    }

    /// Moves your read marker in a thread forward to `up_to`; the other
    /// members are pushed the receipt (in threads up to
    /// [`RECEIPT_PUSH_LIMIT`] members).
    pub async fn mark_read(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        up_to: MessageId,
    ) -> Result<(), MessagesError> {
        let me = session.user_id;
        self.journal.settle(writes, &[Topic::Threads]).await?;
        let membership = self.threads.membership(thread_id, me).await?;
        let recipients = match membership.peer {
            Some(peer) => vec![peer],
            None if membership.members <= RECEIPT_PUSH_LIMIT => {
                let (members, _) = self
                    .journal
                    .read()
                    .members_as_of(thread_id)
                    .await
                    .map_err(StoreError::from)?;
                members.into_iter().filter(|&u| u != me).collect()
            }
            None => vec![],
        };
        self.journal
            .append(
                writes,
                Some(me),
                MessagesRead {
                    thread_id,
                    reader: me,
                    up_to,
                    recipients,
                },
            )
            .await?;
        Ok(())
    }

    /// Withdraws a message you sent, within the recall window. Recalling it
    /// again is harmless.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, %thread_id, %message_id))]
    pub async fn recall(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        message_id: MessageId,
    ) -> Result<(), MessagesError> {
        let me = session.user_id;
        self.journal.settle(writes, &[Topic::Threads]).await?;
        let membership = self.threads.membership(thread_id, me).await?;
        // The message may have been acknowledged a moment ago elsewhere.
        self.journal
            .settle_partition(Topic::Messages, &messages_key(thread_id))
            .await?;
        let message = self
            .journal
            .read()
            .message(thread_id, message_id)
            .await
            .map_err(StoreError::from)?
            .ok_or(MessagesError::NoSuchMessage(message_id))?;
        if message.sender_id != me || message.kind == MessageKind::System {
            return Err(MessagesError::NotSender);
        }
        if message.recalled {
            return Ok(());
        }
        let window = self.settings.recall_window;
        let age = (Utc::now() - message.created_at)
            .to_std()
            .unwrap_or_default();
        if age > window {
            return Err(MessagesError::RecallWindowPassed(window));
        }
        let recipients: Vec<_> = membership.peer.into_iter().collect();
        let members_as_of = recipients.is_empty().then_some(membership.as_of);
        self.journal
            .append(
                writes,
                Some(me),
                MessageRecalled {
                    thread_id,
                    message_id,
                    by: me,
                    recipients,
                    members_as_of,
                },
            )
            .await?;
        tracing::info!("message recalled");
        Ok(())
    }

    /// The members' read markers of a thread you are in.
    pub async fn receipts(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        after: UserId,
        limit: usize,
    ) -> Result<Page<ReceiptView>, MessagesError> {
        self.journal
            .settle(writes, &[Topic::Threads, Topic::Messages])
            .await?;
        self.threads.membership(thread_id, session.user_id).await?;
        let page = self
            .journal
            .read()
            .receipts_page(thread_id, after, limit)
            .await
            .map_err(StoreError::from)?;
        Ok(crate::page(page, |r| ReceiptView {
            user_id: r.user_id,
            up_to: r.up_to,
            at: r.at,
        }))
    }
}

/// The message kind of an upload's kind.
fn media_kind(kind: imlog_events::UploadKind) -> MessageKind {
    match kind {
        imlog_events::UploadKind::Image => MessageKind::Image,
        imlog_events::UploadKind::File => MessageKind::File,
        imlog_events::UploadKind::Video => MessageKind::Video,
    }
}

/// A stored message as the wire shows it.
pub fn stored_view(row: MessageRow) -> MessageView {
    MessageView {
        message_id: row.message_id,
        thread_id: row.thread_id,
        seq: Some(row.seq),
        sender_id: row.sender_id,
        unique_id: row.unique_id,
        kind: row.kind,
        body: row.body,
        created_at: row.created_at,
        recalled: row.recalled,
        media: row.media.map(Into::into),
    }
}

/// A message straight from the log (a push): no seq yet, the projection
/// assigns it.
pub fn logged_view(
    position: LogPosition,
    m: &MessagePosted,
    occurred_at: DateTime<Utc>,
) -> MessageView {
    MessageView {
        message_id: MessageId::from_position(position),
        thread_id: m.thread_id,
        seq: None,
        sender_id: m.sender_id,
        unique_id: m.unique_id.clone(),
        kind: m.kind,
        body: m.body.clone(),
        created_at: occurred_at,
        recalled: false,
        media: m.media.clone().map(Into::into),
    }
}

/// Writes the whole message history as JSON lines of [`MessageView`], in
/// message id order (log order within each thread).
pub async fn export_history(
    read: &imlog_projections::ReadModel,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, ExportError> {
    let mut after = MessageId::default();
    let mut written = 0u64;
    loop {
        let rows = read
            .messages_after(after, 5000)
            .await
            .map_err(StoreError::from)?;
        let Some(last) = rows.last() else {
            return Ok(written);
        };
        after = last.message_id;
        for row in rows {
            serde_json::to_writer(&mut *out, &stored_view(row))?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding the export: {0}")]
    Json(#[from] serde_json::Error),
}
