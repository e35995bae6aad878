//! File transfer tasks, TeamTalk's way: a sender offers a friend a file.
//! Online, both join a relay on one gateway, the receiver pulls blocks and
//! the gateway passes each to the sender and the bytes back, storing
//! nothing (`imlog_gateway::transfers`); every state of MISSION §6 is an
//! event. Offline, the sender has uploaded the file through the resumable
//! path; the receiver lists it, downloads it, acknowledges it, and the
//! record goes. Tasks nobody finishes time out ([`expire_stale`]).

use super::{find_upload, FilesError};
use crate::accounts::Session;
use crate::journal::{Journal, StoreError, Writes};
use chrono::Utc;
use imlog_events::{
    task_key, Envelope, EventMeta, TaskId, Topic, TransferMode, TransferOffered, TransferState,
    TransferStateChanged, UploadId, UserId,
};
use imlog_projections::files::{TransferRow, UploadState};
use imlog_protocol::{FileName, TransferView};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransfersError {
    #[error("you cannot send a file to yourself")]
    Yourself,
    #[error("files go to friends; user {0} is not yours")]
    NotFriends(UserId),
    #[error("no transfer {0}")]
    NoSuchTask(TaskId),
    #[error("transfer {0} is between two other users")]
    NotParty(TaskId),
    #[error("only the {0} may do that")]
    WrongRole(&'static str),
    #[error("transfer {0} has ended ({1})")]
    Ended(TaskId, &'static str),
    #[error("transfer {0} has started; cancel it instead")]
    Started(TaskId),
    #[error("transfer {0} is {1}, not {2}")]
    WrongMode(TaskId, &'static str, &'static str),
    #[error(transparent)]
    Upload(#[from] FilesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where this gateway relays online transfers.
#[derive(Debug, Clone)]
pub struct Relay {
    /// This gateway run (transfers are relayed by the run that offered them).
    pub instance_id: String,
    /// `ws://host:port`: the relay is `{base}/v1/transfers/{task_id}/ws`.
    pub ws_base: String,
}

/// What an offer names.
pub enum Offer {
    Online { name: FileName, size: u64 },
    Offline { upload_id: UploadId },
}

pub struct Transfers {
    journal: Arc<Journal>,
}

/// Offline files listed at most.
const OFFLINE_LIST: i64 = 100;

impl Transfers {
    pub fn new(journal: Arc<Journal>) -> Transfers {
        Transfers { journal }
    }

    /// Offers `to` a file; the receiver is pushed the offer.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, %to))]
    pub async fn offer(
        &self,
        writes: &mut Writes,
        session: &Session,
        to: UserId,
        offer: Offer,
        relay: &Relay,
    ) -> Result<TransferView, TransfersError> {
        let me = session.user_id;
        if to == me {
            return Err(TransfersError::Yourself);
        }
        self.journal
            .settle(writes, &[Topic::Social, Topic::Files])
            .await?;
        let read = self.journal.read();
        if !read.are_friends(me, to).await.map_err(StoreError::from)? {
            return Err(TransfersError::NotFriends(to));
        }
        let task_id = TaskId::random();
        let offered = match offer {
            Offer::Online { name, size } => TransferOffered {
                task_id,
                from: me,
                to,
                name: name.as_str().to_owned(),
                size,
                mode: TransferMode::Online,
                relay: Some(relay.instance_id.clone()),
                relay_url: Some(format!("{}/v1/transfers/{task_id}/ws", relay.ws_base)),
                upload_id: None,
            },
            Offer::Offline { upload_id } => {
                let upload = find_upload(&self.journal, writes, upload_id).await?;
                if upload.owner != me {
                    return Err(FilesError::NotYours(upload_id).into());
                }
                if upload.state != UploadState::Completed {
                    return Err(FilesError::NotUploaded(upload_id).into());
                }
                TransferOffered {
                    task_id,
                    from: me,
                    to,
                    name: upload.name,
                    size: upload.size,
                    mode: TransferMode::Offline,
                    relay: None,
                    relay_url: None,
                    upload_id: Some(upload_id),
                }
            }
        };
        let view = TransferView {
            task_id,
            from: me,
            to,
            name: offered.name.clone(),
            size: offered.size,
            mode: offered.mode,
            state: TransferState::Ready,
            reason: String::new(),
            relay_url: offered.relay_url.clone(),
            upload_id: offered.upload_id,
            offered_at: Utc::now(),
        };
        self.journal.append(writes, Some(me), offered).await?;
        tracing::info!(%task_id, mode = view.mode.as_str(), "file offered");
        Ok(view)
    }

    /// A transfer task, once its offer is projected (it may have been made
    /// a moment ago elsewhere).
    pub async fn task(
        &self,
        writes: &mut Writes,
        task_id: TaskId,
    ) -> Result<TransferRow, TransfersError> {
        self.journal.settle(writes, &[Topic::Files]).await?;
        let read = self.journal.read();
        if let Some(task) = read.transfer(task_id).await.map_err(StoreError::from)? {
            return Ok(task);
        }
        self.journal
            .settle_partition(Topic::Files, &task_key(task_id))
            .await?;
        read.transfer(task_id)
            .await
            .map_err(StoreError::from)?
            .ok_or(TransfersError::NoSuchTask(task_id))
    }

    /// The receiver declines, before any block moved.
    pub async fn refuse(
        &self,
        writes: &mut Writes,
        session: &Session,
        task_id: TaskId,
    ) -> Result<(), TransfersError> {
        let task = self.open_task(writes, session, task_id).await?;
        if session.user_id != task.to {
            return Err(TransfersError::WrongRole("receiver"));
        }
        if task.state == TransferState::Transferring {
            return Err(TransfersError::Started(task_id));
        }
        self.record(
            writes,
            Some(session.user_id),
            &task,
            TransferState::Refused,
            "the receiver refused",
        )
        .await
        .map(|_| ())
    }

    /// Either party gives up.
    pub async fn cancel(
        &self,
        writes: &mut Writes,
        session: &Session,
        task_id: TaskId,
    ) -> Result<(), TransfersError> {
        let task = self.open_task(writes, session, task_id).await?;
        let who = if session.user_id == task.from {
            "the sender"
        } else {
            "the receiver"
        };
        self.record(
            writes,
            Some(session.user_id),
            &task,
            TransferState::Cancelled,
            &format!("{who} cancelled"),
        )
        .await
        .map(|_| ())
    }

    /// Offline files offered to you and not yet fetched.
    pub async fn offline_files(
        &self,
        writes: &mut Writes,
        session: &Session,
    ) -> Result<Vec<TransferView>, TransfersError> {
        self.journal.settle(writes, &[Topic::Files]).await?;
        // Offers made a moment ago by others are included.
        self.journal.settle_topic(Topic::Files).await?;
        let rows = self
            .journal
            .read()
            .pending_offline_files(session.user_id, OFFLINE_LIST)
            .await
            .map_err(StoreError::from)?;
        Ok(rows.into_iter().map(transfer_view).collect())
    }

    /// The receiver fetched an offline file: the task is done.
    pub async fn ack_offline(
        &self,
        writes: &mut Writes,
        session: &Session,
        task_id: TaskId,
    ) -> Result<(), TransfersError> {
        let task = self.open_task(writes, session, task_id).await?;
        if task.mode != TransferMode::Offline {
            return Err(TransfersError::WrongMode(
                task_id,
                task.mode.as_str(),
                "offline",
            ));
        }
        if session.user_id != task.to {
            return Err(TransfersError::WrongRole("receiver"));
        }
        self.record(
            writes,
            Some(session.user_id),
            &task,
            TransferState::Done,
            "",
        )
        .await
        .map(|_| ())
    }

    /// Records a state of `task` (the relay's transitions come through
    /// here) unless the task has ended meanwhile (a cancel on another
    /// connection, expiry): then nothing is recorded and it answers false.
    pub async fn record(
        &self,
        writes: &mut Writes,
        actor: Option<UserId>,
        task: &TransferRow,
        state: TransferState,
        reason: &str,
    ) -> Result<bool, TransfersError> {
        self.journal
            .settle_partition(Topic::Files, &task_key(task.task_id))
            .await?;
        let now = self
            .journal
            .read()
            .transfer(task.task_id)
            .await
            .map_err(StoreError::from)?;
        if now.is_some_and(|t| t.state.is_final()) {
            return Ok(false);
        }
        let changed = TransferStateChanged {
            task_id: task.task_id,
            from: task.from,
            to: task.to,
            state,
            reason: reason.to_owned(),
        };
        self.journal.append(writes, actor, changed).await?;
        self.journal.settle(writes, &[Topic::Files]).await?;
        tracing::info!(task_id = %task.task_id, state = state.as_str(), reason, "transfer state");
        Ok(true)
    }

    /// A task `session` is party to that has not ended.
    async fn open_task(
        &self,
        writes: &mut Writes,
        session: &Session,
        task_id: TaskId,
    ) -> Result<TransferRow, TransfersError> {
        let task = self.task(writes, task_id).await?;
        if session.user_id != task.from && session.user_id != task.to {
            return Err(TransfersError::NotParty(task_id));
        }
        if task.state.is_final() {
            return Err(TransfersError::Ended(task_id, task.state.as_str()));
        }
        Ok(task)
    }
}

pub fn transfer_view(t: TransferRow) -> TransferView {
    TransferView {
        task_id: t.task_id,
        from: t.from,
        to: t.to,
        name: t.name,
        size: t.size,
        mode: t.mode,
        state: t.state,
        reason: t.reason,
        relay_url: t.relay_url,
        upload_id: t.upload_id,
        offered_at: t.offered_at,
    }
}

/// How long transfers may wait.
#[derive(Debug, Clone)]
pub struct TransferTimeouts {
    /// An online task not started (nobody, or one side, joined) this long.
    pub online_idle: Duration,
    /// An online task transferring this long (its relay died).
    pub online_transferring: Duration,
    /// An offline file not fetched this long.
    pub offline: Duration,
}

/// Ends transfers that waited too long (state `error`); returns how many.
pub async fn expire_stale(
    journal: &Journal,
    timeouts: &TransferTimeouts,
) -> Result<usize, StoreError> {
    use TransferState::*;
    let ago = |d: Duration| Utc::now() - chrono::Duration::from_std(d).unwrap_or_default();
    let read = journal.read();
    let mut stale = Vec::new();
    for (mode, states, after, why) in [
        (
            TransferMode::Online,
            &[Ready, WaitingSender, WaitingReceiver, WaitingTransfer][..],
            timeouts.online_idle,
            "timed out waiting",
        ),
        (
            TransferMode::Online,
            &[Transferring][..],
            timeouts.online_transferring,
            "timed out transferring",
        ),
        (
            TransferMode::Offline,
            &[Ready][..],
            timeouts.offline,
            "expired: not fetched in time",
        ),
    ] {
        for task in read.stale_transfers(mode, states, ago(after), 500).await? {
            stale.push((task, why));
        }
    }
    if stale.is_empty() {
        return Ok(0);
    }
    let correlation_id = uuid::Uuid::now_v7();
    let envelopes: Vec<Envelope> = stale
        .iter()
        .map(|(task, why)| {
            Envelope::new(
                EventMeta::new(None, correlation_id),
                TransferStateChanged {
                    task_id: task.task_id,
                    from: task.from,
                    to: task.to,
                    state: Error,
                    reason: (*why).to_owned(),
                },
            )
        })
        .collect();
    let mut writes = Writes::default();
    for result in journal.append_all(&mut writes, &envelopes).await {
        result?;
    }
    journal.settle(&mut writes, &[Topic::Files]).await?;
    tracing::info!(count = stale.len(), "stale transfers ended");
    Ok(stale.len())
}
