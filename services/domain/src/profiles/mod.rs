//! Profiles, user search and presence. A profile (nick, description, sex,
//! avatar reference) is one event holding the whole new profile; presence is
//! one event each time a user's first connection on a gateway attaches or
//! its last one closes, and a user is online while a live gateway has them.

use crate::accounts::Session;
use crate::gateways::Gateways;
use crate::journal::{Journal, StoreError, Writes};
use imlog_events::{
    Envelope, EventMeta, PresenceChanged, PresenceReason, ProfileUpdated, Sex, Topic, UserId,
};
use imlog_projections::accounts::{PresenceRow, ProfileRow};
use imlog_protocol::{AvatarRef, Description, Nick, Page, ProfileView, SearchQuery};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProfilesError {
    #[error("no user {0}")]
    NoSuchUser(UserId),
    #[error("an avatar must be a completed image upload of yours: {0}")]
    Avatar(crate::files::FilesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The fields of a profile update; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub nick: Option<Nick>,
    pub description: Option<Description>,
    pub sex: Option<Sex>,
    /// `Some(None)` removes the avatar.
    pub avatar: Option<Option<AvatarRef>>,
}

/// Presence rows a reaping round ends at most, and rounds per reaping.
const REAP_BATCH: usize = 1000;
const REAP_ROUNDS: usize = 20;

pub struct Profiles {
    journal: Arc<Journal>,
    gateways: Gateways,
}

impl Profiles {
    pub fn new(journal: Arc<Journal>, gateways: Gateways) -> Profiles {
        Profiles { journal, gateways }
    }

    /// Changes your own profile; your friends are pushed the new one.
    pub async fn update(
        &self,
        writes: &mut Writes,
        session: &Session,
        change: ProfileChange,
    ) -> Result<ProfileView, ProfilesError> {
        let me = session.user_id;
        // Profile updates of one user are applied in order: start from the
        // latest one this caller wrote.
        self.journal.settle(writes, &[Topic::Users]).await?;
        let current = self.row(me).await?;
        if let Some(upload_id) = change.avatar.as_ref().and_then(|a| a.as_ref()?.upload_id()) {
            crate::files::avatar(&self.journal, writes, me, upload_id)
                .await
                .map_err(ProfilesError::Avatar)?;
        }
        let updated = ProfileUpdated {
            user_id: me,
            nick: change.nick.map_or(current.nick, |n| n.as_str().to_owned()),
            description: change
                .description
                .map_or(current.description, |d| d.as_str().to_owned()),
            sex: change.sex.unwrap_or(current.sex),
            avatar: match change.avatar {
                Some(avatar) => avatar.map(|a| a.as_str().to_owned()),
                None => current.avatar,
            },
        };
        self.journal.append(writes, Some(me), updated).await?;
        self.journal.settle(writes, &[Topic::Users]).await?;
        self.get(writes, me).await
    }

    /// Anyone's public profile, with presence.
    pub async fn get(
        &self,
        writes: &mut Writes,
        user: UserId,
    ) -> Result<ProfileView, ProfilesError> {
        self.journal
            .settle(writes, &[Topic::Users, Topic::Sessions])
            .await?;
        let row = self.row(user).await?;
        let mut views = self.with_presence(vec![row]).await?;
        Ok(views.remove(0))
    }

    /// Users by exact id (a query of digits) or by name prefix, paged by id.
    pub async fn search(
        &self,
        query: SearchQuery,
        after: UserId,
        limit: usize,
    ) -> Result<Page<ProfileView>, ProfilesError> {
        let read = self.journal.read();
        let (rows, load_more, next_cursor) = match query.as_id() {
            Some(id) => {
                let rows: Vec<ProfileRow> =
                    match read.profile(id).await.map_err(StoreError::from)? {
                        Some(row) if id > after => vec![row],
                        _ => vec![],
                    };
                let next = rows.last().map_or(after.get(), |r| r.user_id.get());
                (rows, false, next)
            }
            None => {
                let page = read
                    .users_by_prefix(query.as_str(), after, limit)
                    .await
                    .map_err(StoreError::from)?;
                (page.items, page.load_more, page.next_cursor)
            }
        };
        Ok(Page {
            items: self.with_presence(rows).await?,
            load_more,
            next_cursor,
        })
    }

    /// Records that `user`'s first connection on `gateway_id` attached, or
    /// its last one there closed.
    pub async fn presence_changed(
        &self,
        user: UserId,
        gateway_id: &str,
        online: bool,
        reason: PresenceReason,
    ) -> Result<(), ProfilesError> {
        let event = PresenceChanged {
            user_id: user,
            gateway_id: gateway_id.to_owned(),
            online,
            reason,
        };
        self.journal
            .append(&mut Writes::default(), Some(user), event)
            .await?;
        Ok(())
    }

    /// Ends the presence that gateways silent for `after` left behind
    /// (killed, they never said goodbye), so that friends are told and the
    /// rows go. `after` is well past the liveness window, so that a gateway
    /// whose database connection hiccups is not reaped. Any gateway may do
    /// it; doing it twice changes nothing. Returns how many it ended.
    pub async fn reap_dead_gateways(&self, after: Duration) -> Result<usize, ProfilesError> {
        let alive: Vec<String> = match self.gateways.heard_within(after).await {
            Ok(alive) => alive.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read gateway liveness; not reaping");
                return Ok(0);
            }
        };
        let mut ended = 0;
        // A round at a time, each appended as one batch and projected before
        // the next looks again (else it would find the same rows).
        for _ in 0..REAP_ROUNDS {
            let stale = self
                .journal
                .read()
                .presence_elsewhere(&alive, after.as_secs_f64(), REAP_BATCH)
                .await
                .map_err(StoreError::from)?;
            let offline: Vec<Envelope> = stale
                .iter()
                .map(|(user, gateway)| {
                    let event = PresenceChanged {
                        user_id: *user,
                        gateway_id: gateway.clone(),
                        online: false,
                        reason: PresenceReason::Timeout,
                    };
                    Envelope::new(EventMeta::new(Some(*user), Uuid::now_v7()), event)
                })
                .collect();
            let mut writes = Writes::default();
            for result in self.journal.append_all(&mut writes, &offline).await {
                result?;
            }
            ended += stale.len();
            if stale.len() < REAP_BATCH {
                break;
            }
            self.journal.settle(&mut writes, &[Topic::Sessions]).await?;
        }
        Ok(ended)
    }

    /// Whether each of `users` is online (on a live gateway), and when last seen.
    pub async fn presence(
        &self,
        users: &[UserId],
    ) -> Result<HashMap<UserId, (bool, Option<chrono::DateTime<chrono::Utc>>)>, ProfilesError> {
        let rows = self
            .journal
            .read()
            .presence(users)
            .await
            .map_err(StoreError::from)?;
        let live = self.live_gateways(&rows).await;
        Ok(rows
            .into_iter()
            .map(|(user, p)| (user, (online(&p, &live), p.last_seen)))
            .collect())
    }

    async fn live_gateways(&self, rows: &HashMap<UserId, PresenceRow>) -> HashSet<String> {
        if rows.values().all(|p| p.gateways.is_empty()) {
            return HashSet::new();
        }
        match self.gateways.live().await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read gateway liveness; presence shows offline");
                HashSet::new()
            }
        }
    }

    async fn row(&self, user: UserId) -> Result<ProfileRow, ProfilesError> {
        self.journal
            .read()
            .profile(user)
            .await
            .map_err(StoreError::from)?
            .ok_or(ProfilesError::NoSuchUser(user))
    }

    async fn with_presence(
        &self,
        rows: Vec<ProfileRow>,
    ) -> Result<Vec<ProfileView>, ProfilesError> {
        let ids: Vec<UserId> = rows.iter().map(|r| r.user_id).collect();
        let presence = self.presence(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let (online, last_seen) = presence.get(&r.user_id).copied().unwrap_or_default();
                ProfileView {
                    user_id: r.user_id,
                    name: r.name,
                    nick: r.nick,
                    description: r.description,
                    sex: r.sex,
                    avatar: r.avatar,
                    online,
                    last_seen,
                }
            })
            .collect())
    }
}

fn online(presence: &PresenceRow, live: &HashSet<String>) -> bool {
    presence.gateways.iter().any(|g| live.contains(g))
}
