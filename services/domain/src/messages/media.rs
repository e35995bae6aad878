//! The media process: a media message turns "uploaded" (or "failed") when
//! its upload ends, and both sides are pushed the change — exactly once.
//!
//! Two events can settle a message: the upload ending (for messages posted
//! before) and the message being posted (for uploads that ended before it
//! was projected). Both reactions run in this one process, in log order,
//! and each checks the message in the read model — after waiting until
//! everything appended to its partition is projected, its own earlier
//! settlements included — before appending a settlement. So a message is
//! settled once, also when the process is killed between its append and
//! storing its offsets (the re-run finds the message settled).

use crate::journal::{Journal, StoreError, Writes};
use crate::processes::{failpoint, ProcessError, ProcessManager, Trigger};
use async_trait::async_trait;
use imlog_events::{
    messages_key, upload_key, Event, MediaState, MessageId, MessageMediaSettled, ThreadId, Topic,
    UploadId, UserId,
};
use imlog_projections::files::UploadState;

pub struct MediaDelivery;

#[async_trait]
impl ProcessManager for MediaDelivery {
    fn name(&self) -> &'static str {
        "media_delivery"
    }

    fn topics(&self) -> &'static [Topic] {
        &[Topic::Files, Topic::Messages]
    }

    async fn react(&self, journal: &Journal, trigger: &Trigger<'_>) -> Result<(), ProcessError> {
        match &trigger.envelope.event {
            Event::UploadCompleted(e) => upload_ended(journal, trigger, e.upload_id).await,
            Event::UploadFailed(e) => upload_ended(journal, trigger, e.upload_id).await,
            Event::MessagePosted(m) => {
                let Some(media) = m
                    .media
                    .as_ref()
                    .filter(|m| m.state == MediaState::Uploading)
                else {
                    return Ok(());
                };
                journal
                    .settle_partition(Topic::Files, &upload_key(media.upload_id))
                    .await?;
                let upload = journal
                    .read()
                    .upload(media.upload_id)
                    .await
                    .map_err(StoreError::from)?;
                let state = match upload.map(|u| u.state) {
                    Some(UploadState::Completed) => MediaState::Uploaded,
                    Some(UploadState::Failed(_)) => MediaState::Failed,
                    // Still uploading: its end will settle the message.
                    Some(UploadState::Uploading) | None => return Ok(()),
                };
                let message_id = MessageId::from_position(trigger.record.position());
                let message = Posted {
                    thread_id: m.thread_id,
                    message_id,
                    sender: m.sender_id,
                    upload_id: media.upload_id,
                };
                settle(journal, trigger, message, state).await
            }
            _ => Ok(()),
        }
    }
}

/// A media message as the process needs it.
struct Posted {
    thread_id: ThreadId,
    message_id: MessageId,
    sender: UserId,
    upload_id: UploadId,
}

/// Settles every message posted so far that shows `upload_id`, the way
/// the upload ended (the first end in the log: a cancel racing completion
/// can append both).
async fn upload_ended(
    journal: &Journal,
    trigger: &Trigger<'_>,
    upload_id: UploadId,
) -> Result<(), ProcessError> {
    journal
        .settle_partition(Topic::Files, &upload_key(upload_id))
        .await?;
    let ended = journal
        .read()
        .upload(upload_id)
        .await
        .map_err(StoreError::from)?
        .map(|u| u.state);
    let state = match ended {
        Some(UploadState::Completed) => MediaState::Uploaded,
        Some(UploadState::Failed(_)) => MediaState::Failed,
        Some(UploadState::Uploading) | None => return Ok(()),
    };
    journal.settle_topic(Topic::Messages).await?;
    let messages = journal
        .read()
        .media_messages(upload_id)
        .await
        .map_err(StoreError::from)?;
    for m in messages {
        if m.state == MediaState::Uploading {
            let message = Posted {
                thread_id: m.thread_id,
                message_id: m.message_id,
                sender: m.sender_id,
                upload_id,
            };
            settle(journal, trigger, message, state).await?;
        }
    }
    Ok(())
}

/// Appends the settlement of `message` unless the read model (once its
/// partition is projected) shows it settled already.
async fn settle(
    journal: &Journal,
    trigger: &Trigger<'_>,
    message: Posted,
    state: MediaState,
) -> Result<(), ProcessError> {
    let Posted {
        thread_id,
        message_id,
        sender,
        upload_id,
    } = message;
    journal
        .settle_partition(Topic::Messages, &messages_key(thread_id))
        .await?;
    let read = journal.read();
    let current = read
        .message(thread_id, message_id)
        .await
        .map_err(StoreError::from)?;
    let unsettled = current
        .and_then(|m| m.media)
        .is_some_and(|media| media.state == MediaState::Uploading);
    if !unsettled {
        return Ok(());
    }
    // A private thread's two members, or a group's members (sender
    // included) as of now.
    let membership = read
        .membership(thread_id, sender)
        .await
        .map_err(StoreError::from)?;
    let (recipients, members_as_of) = match membership {
        Some(m) => match m.peer {
            Some(peer) => (vec![sender, peer], None),
            None => (vec![], Some(m.as_of)),
        },
        None => (vec![], None),
    };
    let settled = MessageMediaSettled {
        thread_id,
        message_id,
        upload_id,
        state,
        recipients,
        members_as_of,
    };
    let step = trigger.step(&format!("settle-{message_id}"), settled);
    let mut writes = Writes::default();
    for result in journal.append_all(&mut writes, &[step]).await {
        result?;
    }
    failpoint("media_delivery.settled");
    // Projected before the next reaction looks at this message.
    journal.settle(&mut writes, &[Topic::Messages]).await?;
    tracing::info!(%thread_id, %message_id, %upload_id, state = state.as_str(), "media message settled");
    Ok(())
}
