//! Threads: opening the one private thread of a pair, membership checks and
//! thread list sync.

mod memberships;

pub use memberships::Memberships;

use crate::journal::{Journal, StoreError, Writes};
use imlog_events::{PrivateThreadCreated, ThreadId, Topic, UserId};
use imlog_projections::threads::{Membership, ThreadKind as RowKind, ThreadRow};
use imlog_protocol::{OpenedThread, Page, ThreadKind, ThreadView, UserView};
use std::sync::Arc;

use crate::accounts::Session;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ThreadsError {
    #[error("a private thread needs two different users")]
    WithYourself,
    #[error("no user {0}")]
    NoSuchUser(UserId),
    #[error("only friends may open a private thread; send user {0} a friend request")]
    NotFriends(UserId),
    /// Also for a thread that does not exist, so existence does not leak.
    #[error("you are not a member of thread {0}")]
    NotMember(ThreadId),
    #[error("the created thread is missing from the read model")]
    Vanished,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Default)]
pub struct ThreadsSettings {
    /// Whether users who are not friends may open a private thread.
    pub strangers_may_chat: bool,
}

pub struct Threads {
    journal: Arc<Journal>,
    settings: ThreadsSettings,
    memberships: Memberships,
}

impl Threads {
    pub fn new(journal: Arc<Journal>, settings: ThreadsSettings) -> Threads {
        Threads {
            journal,
            settings,
            memberships: Memberships::default(),
        }
    }

    /// The private-thread memberships kept for sends.
    pub fn memberships(&self) -> &Memberships {
        &self.memberships
    }

    /// `user`'s membership of a thread: one row, whatever its size.
    pub async fn membership(
        &self,
        thread_id: ThreadId,
        user: UserId,
    ) -> Result<Membership, ThreadsError> {
        self.journal
            .read()
            .membership(thread_id, user)
            .await
            .map_err(StoreError::from)?
            .ok_or(ThreadsError::NotMember(thread_id))
    }

    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, peer = %peer))]
    pub async fn open_private(
        &self,
        writes: &mut Writes,
        session: &Session,
        peer: UserId,
    ) -> Result<OpenedThread, ThreadsError> {
        let me = session.user_id;
        if peer == me {
            return Err(ThreadsError::WithYourself);
        }
        let (low, high) = if me < peer { (me, peer) } else { (peer, me) };
        let read = self.journal.read();
        self.journal.settle(writes, &[Topic::Threads]).await?;
        if read.user(peer).await.map_err(StoreError::from)?.is_none() {
            return Err(ThreadsError::NoSuchUser(peer));
        }
        if !self.settings.strangers_may_chat
            && !read.are_friends(me, peer).await.map_err(StoreError::from)?
        {
            return Err(ThreadsError::NotFriends(peer));
        }
        if let Some(thread_id) = read
            .private_thread(low, high)
            .await
            .map_err(StoreError::from)?
        {
            return Ok(OpenedThread {
                thread_id,
                created: false,
            });
        }
        let pos = self
            .journal
            .append(
                writes,
                Some(me),
                PrivateThreadCreated {
                    user_low: low,
                    user_high: high,
                },
            )
            .await?;
        // Another server may have created the pair's thread at the same
        // moment; the first creation in the log is the thread.
        self.journal.settle(writes, &[Topic::Threads]).await?;
        let thread_id = read
            .private_thread(low, high)
            .await
            .map_err(StoreError::from)?
            .ok_or(ThreadsError::Vanished)?;
        let created = thread_id == ThreadId::from_position(pos);
        tracing::info!(%thread_id, created, "private thread opened");
        Ok(OpenedThread { thread_id, created })
    }

    pub async fn sync(
        &self,
        writes: &mut Writes,
        session: &Session,
        after: i64,
        limit: usize,
    ) -> Result<Page<ThreadView>, ThreadsError> {
        // Unread counts and last messages come from the messages topic.
        self.journal
            .settle(writes, &[Topic::Threads, Topic::Messages])
            .await?;
        let page = self
            .journal
            .read()
            .threads_page(session.user_id, after, limit)
            .await
            .map_err(StoreError::from)?;
        Ok(crate::page(page, view))
    }
}

fn view(row: ThreadRow) -> ThreadView {
    ThreadView {
        thread_id: row.thread_id,
        kind: match row.kind {
            RowKind::Private => ThreadKind::Private,
            RowKind::Group => ThreadKind::Group,
        },
        created_at: row.created_at,
        peer: row.peer.map(|p| UserView {
            user_id: p.user_id,
            name: p.name,
        }),
        name: row.name,
        members: row.members.map(|n| n.max(0) as u32),
        unread: row.unread.max(0) as u64,
        last_message: row.last_message.map(crate::messages::stored_view),
    }
}
