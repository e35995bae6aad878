//! The chat service: command handlers (validate against the read model,
//! append an event, answer once the append is durable) and queries (read the
//! read model after this connection's own writes are projected).

use crate::credentials::{hash_password, new_token, token_digest, verify_password};
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{NewPassword, OutgoingText, UserName};
use imlog_events::{
    messages_key, partition_for_key, Envelope, Event, EventMeta, LogPosition, MessageId,
    MessageKind, MessagePosted, PrivateThreadCreated, SessionEndReason, SessionEnded, SessionId,
    SessionStarted, ThreadId, Topic, UserId, UserRegistered,
};
use imlog_log::{AppendRecord, SharedLog};
use imlog_postgres::Pool;
use imlog_projections::progress::Progress;
use imlog_projections::queries::{self, MessageView, Page, ThreadSummary};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// This instance's name, recorded in the sessions it starts.
    pub gateway_id: String,
    pub session_ttl: Duration,
    /// How long a query waits for the read model to catch up with the
    /// connection's own writes.
    pub projection_wait: Duration,
}

/// An authenticated connection's identity.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// Offset of the session's `session.started` event.
    pub start_offset: i64,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The last position a connection appended per topic partition: what its
/// reads must wait for (read-your-writes).
#[derive(Debug, Default)]
pub struct Writes(BTreeMap<(Topic, i32), i64>);

impl Writes {
    fn record(&mut self, topic: Topic, pos: LogPosition) {
        let entry = self.0.entry((topic, pos.partition)).or_insert(pos.offset);
        *entry = (*entry).max(pos.offset);
    }

    /// Once projected, a write need not be waited for again.
    fn forget(&mut self, topics: &[Topic]) {
        self.0.retain(|(topic, _), _| !topics.contains(topic));
    }

    fn positions(&self, topics: &[Topic]) -> Vec<(Topic, LogPosition)> {
        self.0
            .iter()
            .filter(|((topic, _), _)| topics.contains(topic))
            .map(|(&(topic, partition), &offset)| (topic, LogPosition { partition, offset }))
            .collect()
    }
}

pub struct Chat {
    log: SharedLog,
    db: Pool,
    progress: Progress,
    settings: ChatSettings,
    hashing_slots: tokio::sync::Semaphore,
}

#[derive(Serialize)]
pub struct Registered {
    pub user_id: UserId,
}

#[derive(Serialize)]
pub struct LoggedIn {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize)]
pub struct OpenedThread {
    pub thread_id: ThreadId,
    /// Whether this request created it (false: it already existed, or a
    /// concurrent request created it first).
    pub created: bool,
}

#[derive(Serialize)]
pub struct SentItem {
    pub unique_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SentError>,
}

impl SentItem {
    fn failed(unique_id: String, e: ApiError) -> SentItem {
        SentItem {
            unique_id,
            message_id: None,
            error: Some(SentError {
                code: e.code,
                message: e.message,
            }),
        }
    }
}

#[derive(Serialize)]
pub struct SentError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Serialize)]
pub struct Sent {
    pub thread_id: ThreadId,
    pub items: Vec<SentItem>,
}

impl Chat {
    pub fn new(log: SharedLog, db: Pool, progress: Progress, settings: ChatSettings) -> Chat {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Chat {
            log,
            db,
            progress,
            settings,
            hashing_slots: tokio::sync::Semaphore::new(cores),
        }
    }

    /// Runs password hashing off the runtime, at most one per core at a
    /// time: each takes ~19 MiB and tens of milliseconds, so unbounded
    /// logins could exhaust memory. Waits up to 5 s for a slot.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = || {
            ApiError::new(
                ErrorCode::Unavailable,
                "too many logins at once; retry shortly",
            )
        };
        let _slot = tokio::time::timeout(Duration::from_secs(5), self.hashing_slots.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Internal, "password hashing failed"))
    }

    pub fn db(&self) -> &Pool {
        &self.db
    }

    async fn append(
        &self,
        writes: &mut Writes,
        actor: Option<UserId>,
        event: impl Into<Event>,
    ) -> Result<LogPosition, ApiError> {
        let envelope = Envelope::new(EventMeta::new(actor, Uuid::now_v7()), event);
        let topic = envelope.event.topic();
        let pos = self
            .log
            .append(topic, &envelope.event.key(), envelope.encode())
            .await?;
        writes.record(topic, pos);
        Ok(pos)
    }

    /// Waits until the read model reflects this connection's writes to `topics`.
    async fn settle(&self, writes: &mut Writes, topics: &[Topic]) -> Result<(), ApiError> {
        let positions = writes.positions(topics);
        if positions.is_empty() {
            return Ok(());
        }
        if self
            .progress
            .wait_for(&positions, self.settings.projection_wait)
            .await?
        {
            writes.forget(topics);
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::ProjectionLagging,
                "the read model has not caught up with your last write yet; retry",
            ))
        }
    }

    /// Waits until everything appended to the thread's partition so far is
    /// projected, so a resent `unique_id` finds its first send even if that
    /// was acknowledged a moment ago on another connection.
    async fn settle_thread_messages(&self, thread_id: ThreadId) -> Result<(), ApiError> {
        let partition = partition_for_key(
            messages_key(thread_id).as_bytes(),
            Topic::Messages.partitions(),
        );
        let ends = self.log.end_offsets(Topic::Messages).await?;
        let end = ends.get(partition as usize).copied().unwrap_or(0);
        if end == 0 {
            return Ok(());
        }
        let mut appended = Writes::default();
        appended.record(
            Topic::Messages,
            LogPosition {
                partition,
                offset: end - 1,
            },
        );
        self.settle(&mut appended, &[Topic::Messages]).await
    }

    #[tracing::instrument(skip_all, fields(name = name.as_str()))]
    pub async fn register(
        &self,
        writes: &mut Writes,
        name: UserName,
        password: NewPassword,
    ) -> Result<Registered, ApiError> {
        let client = self.db.get().await?;
        if queries::user_by_name(&**client, name.as_str())
            .await?
            .is_some()
        {
            return Err(name_taken(&name));
        }
        drop(client);
        let password = password.as_str().to_owned();
        let password_hash = self
            .hashing(move || hash_password(&password))
            .await?
            .map_err(|_| ApiError::new(ErrorCode::Internal, "hashing failed"))?;
        let pos = self
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
        self.settle(writes, &[Topic::Users]).await?;
        let client = self.db.get().await?;
        match queries::user_by_name(&**client, name.as_str()).await? {
            Some(owner) if owner.user_id == user_id => {
                tracing::info!(%user_id, "user registered");
                Ok(Registered { user_id })
            }
            _ => Err(name_taken(&name)),
        }
    }

    #[tracing::instrument(skip_all, fields(name = name.as_str()))]
    pub async fn login(
        &self,
        writes: &mut Writes,
        name: UserName,
        password: String,
        device: String,
    ) -> Result<(Session, LoggedIn), ApiError> {
        let bad = || ApiError::new(ErrorCode::BadCredentials, "wrong name or password");
        let client = self.db.get().await?;
        let user = queries::user_by_name(&**client, name.as_str())
            .await?
            .ok_or_else(bad)?;
        drop(client);
        let phc = user.password_hash;
        let verified = self
            .hashing(move || verify_password(&password, &phc))
            .await?;
        if !verified {
            return Err(bad());
        }
        let token = new_token();
        let session_id = SessionId(Uuid::new_v4());
        let expires_at = chrono::Utc::now()
            + chrono::Duration::from_std(self.settings.session_ttl)
                .unwrap_or(chrono::Duration::days(30));
        let pos = self
            .append(
                writes,
                Some(user.user_id),
                SessionStarted {
                    user_id: user.user_id,
                    session_id,
                    token_sha256: token_digest(&token),
                    gateway_id: self.settings.gateway_id.clone(),
                    device,
                    expires_at,
                },
            )
            .await?;
        // The token is handed out only once it works everywhere (auth on
        // another connection, the HTTP API).
        self.settle(writes, &[Topic::Sessions]).await?;
        tracing::info!(user_id = %user.user_id, %session_id, "session started");
        Ok((
            Session {
                user_id: user.user_id,
                session_id,
                start_offset: pos.offset,
                expires_at,
            },
            LoggedIn {
                user_id: user.user_id,
                session_id,
                token,
                expires_at,
            },
        ))
    }

    /// The live session a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Session, ApiError> {
        let client = self.db.get().await?;
        let session = queries::live_session(&**client, &token_digest(token))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::BadToken,
                    "the token is unknown, expired, or its session ended",
                )
            })?;
        Ok(Session {
            user_id: session.user_id,
            session_id: session.session_id,
            start_offset: session.start_offset,
            expires_at: session.expires_at,
        })
    }

    pub async fn logout(&self, writes: &mut Writes, session: &Session) -> Result<(), ApiError> {
        self.append(
            writes,
            Some(session.user_id),
            SessionEnded {
                user_id: session.user_id,
                session_id: session.session_id,
                reason: SessionEndReason::Logout,
            },
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, peer = %peer))]
    pub async fn open_private_thread(
        &self,
        writes: &mut Writes,
        session: &Session,
        peer: UserId,
    ) -> Result<OpenedThread, ApiError> {
        let me = session.user_id;
        if peer == me {
            return Err(ApiError::bad_request(
                "a private thread needs two different users",
            ));
        }
        let (low, high) = if me < peer { (me, peer) } else { (peer, me) };
        self.settle(writes, &[Topic::Threads]).await?;
        let client = self.db.get().await?;
        if queries::user(&**client, peer).await?.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no user {peer}"),
            ));
        }
        if let Some(thread_id) = queries::private_thread(&**client, low, high).await? {
            return Ok(OpenedThread {
                thread_id,
                created: false,
            });
        }
        drop(client);
        let pos = self
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
        self.settle(writes, &[Topic::Threads]).await?;
        let client = self.db.get().await?;
        let thread_id = queries::private_thread(&**client, low, high)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Internal,
                    "the created thread is missing from the read model",
                )
            })?;
        let created = thread_id == ThreadId::from_position(pos);
        tracing::info!(%thread_id, created, "private thread opened");
        Ok(OpenedThread { thread_id, created })
    }

    #[tracing::instrument(skip_all, fields(user_id = %session.user_id, thread_id = %thread_id))]
    pub async fn send_messages(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        items: Vec<Result<OutgoingText, (String, ApiError)>>,
        retry: bool,
    ) -> Result<Sent, ApiError> {
        let me = session.user_id;
        self.settle(writes, &[Topic::Threads]).await?;
        if retry {
            self.settle_thread_messages(thread_id).await?;
        }
        let client = self.db.get().await?;
        let members = members_if_member(&client, thread_id, me).await?;
        let recipients: Vec<UserId> = members.into_iter().filter(|&u| u != me).collect();
        let unique_ids: Vec<&str> = items
            .iter()
            .filter_map(|item| item.as_ref().ok().map(|t| t.unique_id.as_str()))
            .collect();
        // Retries after a lost reply: answer with the ids already given.
        let already_sent =
            queries::messages_by_unique_ids(&**client, thread_id, me, &unique_ids).await?;
        drop(client);
        let mut answers: Vec<SentItem> = Vec::with_capacity(items.len());
        let mut to_append = Vec::new();
        // For each record to append: the answers it settles (a unique_id
        // repeated inside one batch is one message).
        let mut settles: Vec<Vec<usize>> = Vec::new();
        let mut in_batch: HashMap<String, usize> = HashMap::new();
        let correlation_id = Uuid::now_v7();
        for item in items {
            let index = answers.len();
            match item {
                Err((unique_id, e)) => answers.push(SentItem::failed(unique_id, e)),
                Ok(text) => {
                    answers.push(SentItem {
                        unique_id: text.unique_id.clone(),
                        message_id: already_sent.get(&text.unique_id).copied(),
                        error: None,
                    });
                    if already_sent.contains_key(&text.unique_id) {
                        continue;
                    }
                    if let Some(&record) = in_batch.get(&text.unique_id) {
                        settles[record].push(index);
                        continue;
                    }
                    in_batch.insert(text.unique_id.clone(), settles.len());
                    settles.push(vec![index]);
                    let event = MessagePosted {
                        thread_id,
                        sender_id: me,
                        unique_id: text.unique_id,
                        kind: MessageKind::Text,
                        body: text.body,
                        recipients: recipients.clone(),
                    };
                    let envelope = Envelope::new(EventMeta::new(Some(me), correlation_id), event);
                    to_append.push(AppendRecord {
                        topic: Topic::Messages,
                        key: envelope.event.key(),
                        payload: envelope.encode(),
                    });
                }
            }
        }
        let results = self.log.append_all(to_append).await;
        for (indices, result) in settles.into_iter().zip(results) {
            let result = result.map_err(ApiError::from);
            if let Ok(pos) = result {
                writes.record(Topic::Messages, pos);
            }
            for index in indices {
                match &result {
                    Ok(pos) => answers[index].message_id = Some(MessageId::from_position(*pos)),
                    Err(e) => {
                        let unique_id = std::mem::take(&mut answers[index].unique_id);
                        answers[index] = SentItem::failed(unique_id, e.clone());
                    }
                }
            }
        }
        Ok(Sent {
            thread_id,
            items: answers,
        })
    }

    pub async fn sync_threads(
        &self,
        writes: &mut Writes,
        session: &Session,
        after: ThreadId,
        limit: usize,
    ) -> Result<Page<ThreadSummary>, ApiError> {
        self.settle(writes, &[Topic::Threads]).await?;
        let client = self.db.get().await?;
        Ok(queries::threads_page(&**client, session.user_id, after, limit).await?)
    }

    pub async fn sync_messages(
        &self,
        writes: &mut Writes,
        session: &Session,
        thread_id: ThreadId,
        since: MessageId,
        limit: usize,
    ) -> Result<Page<MessageView>, ApiError> {
        self.settle(writes, &[Topic::Threads, Topic::Messages])
            .await?;
        let client = self.db.get().await?;
        members_if_member(&client, thread_id, session.user_id).await?;
        Ok(queries::messages_page(&**client, thread_id, since, limit).await?)
    }
}

/// The thread's members, if `user` is one of them; a thread that does not
/// exist is refused the same way, so its existence does not leak.
async fn members_if_member(
    client: &tokio_postgres::Client,
    thread_id: ThreadId,
    user: UserId,
) -> Result<Vec<UserId>, ApiError> {
    let members = queries::thread_members(client, thread_id).await?;
    if members.contains(&user) {
        Ok(members)
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("you are not a member of thread {thread_id}"),
        ))
    }
}

fn name_taken(name: &UserName) -> ApiError {
    ApiError::new(
        ErrorCode::NameTaken,
        format!("the name {:?} is taken", name.as_str()),
    )
}
