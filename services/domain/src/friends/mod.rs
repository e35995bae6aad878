//! Friends: apply (with a greeting and an alias), accept (with your own
//! alias), reject, and the lists. Acceptance is one event; the friendship's
//! private thread and first messages follow from it through the
//! [`acceptance`] process, exactly once.

pub mod acceptance;

use crate::accounts::Session;
use crate::journal::{Journal, StoreError, Writes};
use imlog_events::{
    pair_key, FriendAccepted, FriendRejected, FriendRequested, ThreadId, Topic, UserId,
};
use imlog_projections::friends::{FriendRequestRow, FriendRow, RequestStatus};
use imlog_protocol::{
    Alias, FriendApplied, FriendRequestView, FriendView, Greeting, Page, UserView,
};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FriendsError {
    #[error("you cannot befriend yourself")]
    Yourself,
    #[error("no user {0}")]
    NoSuchUser(UserId),
    #[error("you are friends with user {0} already")]
    AlreadyFriends(UserId),
    #[error("user {0} has no pending friend request to you")]
    NoPendingRequest(UserId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Friends {
    journal: Arc<Journal>,
}

/// How often an acceptance looks for the thread the process creates.
const THREAD_POLL: Duration = Duration::from_millis(20);

impl Friends {
    pub fn new(journal: Arc<Journal>) -> Friends {
        Friends { journal }
    }

    /// Asks `to` to be friends. If `to` has already asked you, this accepts
    /// their request instead: two people asking each other want the same.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, to = %to))]
    pub async fn apply(
        &self,
        writes: &mut Writes,
        session: &Session,
        to: UserId,
        greeting: Greeting,
        alias: Alias,
    ) -> Result<FriendApplied, FriendsError> {
        let me = session.user_id;
        if to == me {
            return Err(FriendsError::Yourself);
        }
        let read = self.journal.read();
        self.settle_pair(me, to).await?;
        if read.user(to).await.map_err(StoreError::from)?.is_none() {
            return Err(FriendsError::NoSuchUser(to));
        }
        if read.are_friends(me, to).await.map_err(StoreError::from)? {
            return Err(FriendsError::AlreadyFriends(to));
        }
        let theirs = read
            .friend_request(to, me)
            .await
            .map_err(StoreError::from)?;
        if theirs.is_some_and(|r| r.status == RequestStatus::Pending) {
            let thread_id = self.accept_pending(writes, me, to, alias).await?;
            return Ok(FriendApplied::Accepted { thread_id });
        }
        self.journal
            .append(
                writes,
                Some(me),
                FriendRequested {
                    from: me,
                    to,
                    greeting: greeting.into_string(),
                    alias: alias.into_string(),
                },
            )
            .await?;
        tracing::info!("friend request sent");
        Ok(FriendApplied::Requested)
    }

    /// Accepts `from`'s pending request. Accepting again is harmless: the
    /// answer is the same friendship. The reply carries the pair's thread
    /// once the acceptance process has created it (within the projection
    /// wait); otherwise it follows as pushes.
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, from = %from))]
    pub async fn accept(
        &self,
        writes: &mut Writes,
        session: &Session,
        from: UserId,
        alias: Alias,
    ) -> Result<Option<ThreadId>, FriendsError> {
        let me = session.user_id;
        let read = self.journal.read();
        self.settle_pair(me, from).await?;
        if read.are_friends(me, from).await.map_err(StoreError::from)? {
            return self.wait_for_thread(me, from).await;
        }
        let request = read
            .friend_request(from, me)
            .await
            .map_err(StoreError::from)?;
        match request.map(|r| r.status) {
            Some(RequestStatus::Pending) => self.accept_pending(writes, me, from, alias).await,
            // Settled between the two reads, by an acceptance racing this one.
            Some(RequestStatus::Accepted) => self.wait_for_thread(me, from).await,
            _ => Err(FriendsError::NoPendingRequest(from)),
        }
    }

    async fn accept_pending(
        &self,
        writes: &mut Writes,
        me: UserId,
        from: UserId,
        alias: Alias,
    ) -> Result<Option<ThreadId>, FriendsError> {
        self.journal
            .append(
                writes,
                Some(me),
                FriendAccepted {
                    from,
                    to: me,
                    alias: alias.into_string(),
                },
            )
            .await?;
        self.journal.settle(writes, &[Topic::Social]).await?;
        tracing::info!("friend request accepted");
        self.wait_for_thread(me, from).await
    }

    /// Waits until everything appended about the pair so far is projected,
    /// by anyone: a request sent a moment ago from another connection is
    /// seen by the acceptance that follows it.
    async fn settle_pair(&self, a: UserId, b: UserId) -> Result<(), StoreError> {
        self.journal
            .settle_partition(Topic::Social, &pair_key(a, b))
            .await
    }

    /// The pair's private thread, waiting a while for the acceptance
    /// process to create it.
    async fn wait_for_thread(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<Option<ThreadId>, FriendsError> {
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        let deadline = tokio::time::Instant::now() + self.journal.projection_wait();
        loop {
            let thread = self
                .journal
                .read()
                .private_thread(low, high)
                .await
                .map_err(StoreError::from)?;
            if thread.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(thread);
            }
            tokio::time::sleep(THREAD_POLL).await;
        }
    }

    pub async fn reject(
        &self,
        writes: &mut Writes,
        session: &Session,
        from: UserId,
    ) -> Result<(), FriendsError> {
        let me = session.user_id;
        self.settle_pair(me, from).await?;
        match self
            .journal
            .read()
            .friend_request(from, me)
            .await
            .map_err(StoreError::from)?
        {
            Some(r) if r.status == RequestStatus::Pending => {
                self.journal
                    .append(writes, Some(me), FriendRejected { from, to: me })
                    .await?;
                Ok(())
            }
            _ => Err(FriendsError::NoPendingRequest(from)),
        }
    }

    /// Pending requests to you (`incoming`) or from you.
    pub async fn requests(
        &self,
        writes: &mut Writes,
        session: &Session,
        incoming: bool,
        after: UserId,
        limit: usize,
    ) -> Result<Page<FriendRequestView>, FriendsError> {
        // A request pushed a moment ago is in the list.
        self.journal.settle(writes, &[Topic::Social]).await?;
        self.journal.settle_topic(Topic::Social).await?;
        let page = self
            .journal
            .read()
            .pending_requests(session.user_id, incoming, after, limit)
            .await
            .map_err(StoreError::from)?;
        Ok(crate::page(page, request_view))
    }

    pub async fn list(
        &self,
        writes: &mut Writes,
        session: &Session,
        after: UserId,
        limit: usize,
    ) -> Result<Page<FriendView>, FriendsError> {
        self.journal
            .settle(writes, &[Topic::Social, Topic::Threads])
            .await?;
        // An acceptance pushed a moment ago is in the list.
        self.journal.settle_topic(Topic::Social).await?;
        let page = self
            .journal
            .read()
            .friends_page(session.user_id, after, limit)
            .await
            .map_err(StoreError::from)?;
        Ok(crate::page(page, friend_view))
    }
}

fn request_view(r: FriendRequestRow) -> FriendRequestView {
    FriendRequestView {
        from: UserView {
            user_id: r.from,
            name: r.from_name,
        },
        to: UserView {
            user_id: r.to,
            name: r.to_name,
        },
        greeting: r.greeting,
        requested_at: r.requested_at,
    }
}

fn friend_view(f: FriendRow) -> FriendView {
    FriendView {
        user: UserView {
            user_id: f.user_id,
            name: f.name,
        },
        alias: f.alias,
        since: f.since,
        thread_id: f.thread_id,
    }
}
