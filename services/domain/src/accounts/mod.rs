//! Accounts: registration, login (argon2id), token authentication and
//! logout. A login appends `session.started`; the token is handed out only
//! once that session is projected, so it works at once on every instance.

mod hashing;

use crate::credentials::{hash_password, new_token, token_digest, verify_password};
use crate::journal::{Journal, StoreError, Writes};
use hashing::{HashingError, HashingPool};
use imlog_events::{
    SessionEndReason, SessionEnded, SessionId, SessionStarted, Topic, UserId, UserRegistered,
};
use imlog_protocol::{
    Authenticated, Device, LoggedIn, NewPassword, Password, Registered, UserName,
};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AccountsError {
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    #[error("wrong name or password")]
    BadCredentials,
    #[error("the token is unknown, expired, or its session ended")]
    BadToken,
    #[error("too many logins at once")]
    Busy,
    #[error("password hashing failed")]
    Hashing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct AccountsSettings {
    /// This instance's name, recorded in the sessions it starts.
    pub gateway_id: String,
    pub session_ttl: Duration,
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// Offset of the session's `session.started` event: a session only ever
    /// kicks sessions that started before it.
    pub start_offset: i64,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

pub struct Accounts {
    journal: Arc<Journal>,
    settings: AccountsSettings,
    hashing: HashingPool,
}

impl Accounts {
    pub fn new(journal: Arc<Journal>, settings: AccountsSettings) -> Accounts {
        // One per core, at most 8: each keeps ~19 MiB of argon2 memory.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
        Accounts {
            journal,
            settings,
            hashing: HashingPool::new(cores),
        }
    }

    pub fn gateway_id(&self) -> &str {
        &self.settings.gateway_id
    }

    /// Runs password hashing off the runtime, on one thread per core: each
    /// takes ~19 MiB and tens of milliseconds (see `hashing.rs`). Waits up
    /// to 5 s for a thread.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccountsError> {
        self.hashing
            .run(Duration::from_secs(5), work)
            .await
            .map_err(|e| match e {
                HashingError::Busy => AccountsError::Busy,
                HashingError::Failed => AccountsError::Hashing,
            })
    }

    #[tracing::instrument(skip_all, fields(name = name.as_str()))]
    pub async fn register(
        &self,
        writes: &mut Writes,
        name: UserName,
        password: NewPassword,
    ) -> Result<Registered, AccountsError> {
        let read = self.journal.read();
        let taken = || AccountsError::NameTaken(name.as_str().to_owned());
        if read
            .user_by_name(name.as_str())
            .await
            .map_err(StoreError::from)?
            .is_some()
        {
            return Err(taken());
        }
        let password = password.as_str().to_owned();
        let password_hash = self
            .hashing(move || hash_password(&password))
            .await?
            .map_err(|_| AccountsError::Hashing)?;
        let pos = self
            .journal
            .append(
                writes,
                None,
                UserRegistered {
                    name: name.as_str().to_owned(),
                    password_hash,
                },
            )
            .await?;
        let user_id = UserId::from_position(pos);
        // Two registrations of one name may race; the log decides: the first
        // one projected owns the name.
        self.journal.settle(writes, &[Topic::Users]).await?;
        match read
            .user_by_name(name.as_str())
            .await
            .map_err(StoreError::from)?
        {
            Some(owner) if owner.user_id == user_id => {
                tracing::info!(%user_id, "user registered");
                Ok(Registered { user_id })
            }
            _ => Err(taken()),
        }
    }

    #[tracing::instrument(skip_all, fields(name = name.as_str()))]
    pub async fn login(
        &self,
        writes: &mut Writes,
        name: UserName,
        password: Password,
        device: Device,
    ) -> Result<(Session, LoggedIn), AccountsError> {
        let user = self
            .journal
            .read()
            .user_by_name(name.as_str())
            .await
            .map_err(StoreError::from)?
            .ok_or(AccountsError::BadCredentials)?;
        let phc = user.password_hash;
        let offered = password.as_str().to_owned();
        if !self
            .hashing(move || verify_password(&offered, &phc))
            .await?
        {
            return Err(AccountsError::BadCredentials);
        }
        let token = new_token();
        let session_id = SessionId::random();
        let expires_at = chrono::Utc::now()
            + chrono::Duration::from_std(self.settings.session_ttl)
                .unwrap_or(chrono::Duration::days(30));
        let pos = self
            .journal
            .append(
                writes,
                Some(user.user_id),
                SessionStarted {
                    user_id: user.user_id,
                    session_id,
                    token_sha256: token_digest(&token),
                    gateway_id: self.settings.gateway_id.clone(),
                    device: device.as_str().to_owned(),
                    expires_at,
                },
            )
            .await?;
        // The token is handed out only once it works everywhere (auth on
        // another connection, the HTTP API).
        self.journal.settle(writes, &[Topic::Sessions]).await?;
        tracing::info!(user_id = %user.user_id, %session_id, "session started");
        let session = Session {
            user_id: user.user_id,
            session_id,
            start_offset: pos.offset,
            expires_at,
        };
        let reply = LoggedIn {
            user_id: user.user_id,
            session_id,
            token,
            expires_at,
        };
        Ok((session, reply))
    }

    /// The live session a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Session, AccountsError> {
        let session = self
            .journal
            .read()
            .live_session(&token_digest(token))
            .await
            .map_err(StoreError::from)?
            .ok_or(AccountsError::BadToken)?;
        Ok(Session {
            user_id: session.user_id,
            session_id: session.session_id,
            start_offset: session.start_offset,
            expires_at: session.expires_at,
        })
    }

    pub fn authenticated(session: &Session) -> Authenticated {
        Authenticated {
            user_id: session.user_id,
            session_id: session.session_id,
        }
    }

    pub async fn logout(
        &self,
        writes: &mut Writes,
        session: &Session,
    ) -> Result<(), AccountsError> {
        self.journal
            .append(
                writes,
                Some(session.user_id),
                SessionEnded {
                    user_id: session.user_id,
                    session_id: session.session_id,
                    reason: SessionEndReason::Logout,
                },
            )
            .await?;
        // The reply says the token is dead: only once it is, everywhere.
        // The end is durable either way; a read model that lags past the
        // wait only delays it, so the logout still succeeds.
        if let Err(e) = self.journal.settle(writes, &[Topic::Sessions]).await {
            tracing::warn!(error = %e, "logout recorded; its session ends when the read model catches up");
        }
        Ok(())
    }
}
