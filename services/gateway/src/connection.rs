//! One client connection: a loop over incoming frames, pushes from the hub,
//! the heartbeat deadline and shutdown. Requests on one connection are
//! answered in order.

use crate::error::{store_error, ApiError};
use crate::hub::{close_code, Closing, Mailbox};
use crate::writer::Writer;
use crate::Gateway;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::StreamExt;
use imlog_domain::accounts::{Accounts, Session};
use imlog_domain::files::transfers::Offer;
use imlog_domain::messages::Posted;
use imlog_domain::profiles::ProfileChange;
use imlog_domain::Writes;
use imlog_protocol::{
    error_reply, ok_reply, Befriended, Direction, ErrorCode, GroupCreatedView, OutgoingItem,
    OutgoingMessage, Push, Request, Sent, SentItem, WireError, DEFAULT_MESSAGE_PAGE,
    DEFAULT_THREAD_PAGE, MAX_PAGE,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Largest request frame the protocol accepts. Larger ones (up to the
/// transport's hard limit) get `payload_too_large` and the connection stays.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Frames beyond this are a protocol violation: the transport closes with 1009.
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;

struct Connection {
    gateway: Arc<Gateway>,
    conn_id: u64,
    /// The client's address (rate limits).
    peer: std::net::IpAddr,
    session: Option<Session>,
    writes: Writes,
    /// Set by a login, picked up by the loop.
    new_mailbox: Option<Mailbox>,
    logged_out: bool,
}

pub async fn serve(socket: WebSocket, gateway: Arc<Gateway>, peer: std::net::IpAddr) {
    let conn_id = gateway.hub.next_conn_id();
    let shutdown = gateway.shutdown.clone();
    let heartbeat = gateway.settings.heartbeat_timeout;
    let mut conn = Connection {
        gateway: gateway.clone(),
        conn_id,
        peer,
        session: None,
        writes: Writes::default(),
        new_mailbox: None,
        logged_out: false,
    };
    let (sink, mut stream) = socket.split();
    // A write the client does not take within the heartbeat timeout ends
    // the connection: it is not reading.
    let writer = Writer::spawn(sink, heartbeat);
    let mut closing_rx: Option<watch::Receiver<Option<Closing>>> = None;
    let mut deadline = tokio::time::Instant::now() + heartbeat;
    // A connection that has not logged in by then gives its slot back.
    let login_by = tokio::time::Instant::now() + gateway.settings.login_timeout;
    metrics::gauge!("imlog_gateway_connections").increment(1.0);
    let closing = loop {
        tokio::select! {
            incoming = stream.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    // The transport refused the frame (over the hard limit, or
                    // not valid WebSocket): say so if the peer still listens.
                    Some(Err(_)) => break Some(Closing { code: close_code::MESSAGE_TOO_BIG, reason: "frame too large or malformed" }),
                    None => break None,
                };
                deadline = tokio::time::Instant::now() + heartbeat;
                let reply = match message {
                    // Boxed: the handling of every op is a large future, and
                    // inline it would be in every idle connection's state.
                    Message::Text(text) => Box::pin(conn.handle(text.as_str())).await,
                    Message::Binary(_) => error_reply(&Value::Null, &ApiError::bad_request(
                        "binary frames are not part of the chat protocol; send JSON text").0),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(_) => break None,
                };
                if !writer.send(reply).await {
                    break None;
                }
                if let Some(mailbox) = conn.new_mailbox.take() {
                    if !writer.attach(mailbox.frames).await {
                        break None;
                    }
                    closing_rx = Some(mailbox.closing);
                }
                if conn.logged_out {
                    break Some(Closing { code: close_code::SESSION_ENDED, reason: "logged out" });
                }
            }
            _ = writer.ended() => break None,
            closing = next_closing(&mut closing_rx) => break Some(closing),
            _ = login_deadline(conn.session.is_none(), login_by) => {
                break Some(Closing { code: close_code::LOGIN_TIMEOUT, reason: "log in (login or auth) sooner after connecting" });
            }
            _ = session_expiry(conn.session.as_ref()) => {
                break Some(Closing { code: close_code::SESSION_ENDED, reason: "session expired; log in again" });
            }
            _ = tokio::time::sleep_until(deadline) => {
                break Some(Closing { code: close_code::HEARTBEAT_TIMEOUT, reason: "no frame within the heartbeat timeout" });
            }
            _ = shutdown.cancelled() => {
                break Some(Closing { code: close_code::GOING_AWAY, reason: "server shutting down" });
            }
        }
    };
    let close_frame = closing.map(|closing| CloseFrame {
        code: closing.code,
        reason: closing.reason.into(),
    });
    if let Some(closing) = closing {
        if closing.code == close_code::KICKED {
            let kicked = Push::Kicked {
                reason: closing.reason.to_owned(),
            };
            writer.send(kicked.frame()).await;
        }
        tracing::info!(
            conn_id,
            code = closing.code,
            reason = closing.reason,
            "connection closed by server"
        );
    }
    writer.close(close_frame).await;
    if let Some(session) = conn.session {
        gateway
            .presence
            .detach(
                &gateway.hub,
                &gateway.domain.profiles,
                &gateway.settings.instance_id,
                conn_id,
                session.user_id,
                closing,
            )
            .await;
    }
    metrics::gauge!("imlog_gateway_connections").decrement(1.0);
}

/// Resolves at `by` while the connection has not logged in.
async fn login_deadline(anonymous: bool, by: tokio::time::Instant) {
    if anonymous {
        tokio::time::sleep_until(by).await
    } else {
        std::future::pending().await
    }
}

/// Resolves when the connection's session expires (never before login).
async fn session_expiry(session: Option<&Session>) {
    match session {
        Some(session) => {
            let left = (session.expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(left).await
        }
        None => std::future::pending().await,
    }
}

async fn next_closing(closing: &mut Option<watch::Receiver<Option<Closing>>>) -> Closing {
    if let Some(rx) = closing {
        loop {
            if let Some(c) = *rx.borrow_and_update() {
                return c;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
    std::future::pending().await
}

impl Connection {
    /// Answers one text frame; never fails, every problem becomes an error reply.
    async fn handle(&mut self, text: &str) -> String {
        if text.len() > MAX_REQUEST_BYTES {
            let e = ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "frame is {} bytes; the limit is {MAX_REQUEST_BYTES}",
                    text.len()
                ),
            );
            return error_reply(&Value::Null, &e.0);
        }
        let (req, request) = imlog_protocol::parse(text);
        let op = request.as_ref().map(Request::op).unwrap_or("invalid");
        let started = Instant::now();
        let span = tracing::info_span!("request", conn_id = self.conn_id, op, req = %req,
            user_id = self.session.map(|s| s.user_id.get()));
        let result = match request {
            Ok(request) => {
                tracing::Instrument::instrument(self.dispatch(request), span.clone()).await
            }
            Err(e) => Err(ApiError(e)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code().as_str(),
        };
        metrics::counter!("imlog_gateway_requests_total", "op" => op, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("imlog_gateway_request_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(data) => ok_reply(&req, data),
            Err(e) => {
                span.in_scope(
                    || tracing::debug!(code = ?e.0.code, message = %e.0.message, "request refused"),
                );
                error_reply(&req, &e.0)
            }
        }
    }

    /// A password check (argon2, deliberately slow) counts against this
    /// client address's allowance, so that one address cannot monopolise
    /// hashing or create accounts without bound.
    fn rate_limit(&self) -> Result<(), ApiError> {
        match self.gateway.auth_limits.check_key(&self.peer) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                metrics::counter!("imlog_gateway_rate_limited_total").increment(1);
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many registrations or logins from your address; retry in {} s",
                        wait.as_secs().max(1)
                    ),
                ))
            }
        }
    }

    async fn dispatch(&mut self, request: Request) -> Result<Value, ApiError> {
        let accounts = &self.gateway.domain.accounts;
        match request {
            Request::Ping {} => Ok(json!({})),
            Request::Register { name, password } => {
                self.rate_limit()?;
                to_value(accounts.register(&mut self.writes, name, password).await?)
            }
            Request::Login {
                name,
                password,
                device,
            } => {
                self.refuse_second_login()?;
                self.rate_limit()?;
                let (session, reply) = accounts
                    .login(&mut self.writes, name, password, device)
                    .await?;
                self.attach(session).await;
                to_value(reply)
            }
            Request::Auth { token } => {
                self.refuse_second_login()?;
                let session = accounts.authenticate(&token).await?;
                self.attach(session).await;
                to_value(Accounts::authenticated(&session))
            }
            authenticated => {
                let session = self.session.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Unauthenticated,
                        "log in (op login or auth) before this request",
                    )
                })?;
                self.dispatch_authenticated(session, authenticated).await
            }
        }
    }

    async fn dispatch_authenticated(
        &mut self,
        session: Session,
        request: Request,
    ) -> Result<Value, ApiError> {
        let domain = &self.gateway.domain;
        let w = &mut self.writes;
        match request {
            Request::Logout {} => {
                domain.accounts.logout(w, &session).await?;
                self.logged_out = true;
                Ok(json!({}))
            }
            Request::OpenPrivateThread { user_id } => {
                to_value(domain.threads.open_private(w, &session, user_id).await?)
            }
            Request::SendMessages {
                thread_id,
                items,
                retry,
            } => {
                // Invalid items are answered here; the valid ones are posted.
                let parsed: Vec<_> = items.into_iter().map(OutgoingItem::parse).collect();
                let valid = parsed.iter().filter_map(|i| i.as_ref().ok().cloned());
                let posted = domain
                    .messages
                    .post(w, &session, thread_id, valid.collect(), retry)
                    .await?;
                to_value(sent(posted, parsed))
            }
            Request::SyncThreads { after, limit } => {
                let limit = limit.map_or(DEFAULT_THREAD_PAGE, |l| l.get());
                to_value(domain.threads.sync(w, &session, after.get(), limit).await?)
            }
            Request::SyncMessages {
                thread_id,
                since,
                before,
                limit,
            } => {
                let limit = limit.map_or(DEFAULT_MESSAGE_PAGE, |l| l.get());
                let before = before.map(|b| b.0);
                to_value(
                    domain
                        .messages
                        .sync(w, &session, thread_id, since, before, limit)
                        .await?,
                )
            }
            Request::MarkRead { thread_id, up_to } => {
                domain
                    .messages
                    .mark_read(w, &session, thread_id, up_to)
                    .await?;
                Ok(json!({}))
            }
            Request::Recall {
                thread_id,
                message_id,
            } => {
                domain
                    .messages
                    .recall(w, &session, thread_id, message_id)
                    .await?;
                Ok(json!({}))
            }
            Request::ReadReceipts {
                thread_id,
                after,
                limit,
            } => {
                let limit = limit.map_or(MAX_PAGE, |l| l.get());
                to_value(
                    domain
                        .messages
                        .receipts(w, &session, thread_id, after, limit)
                        .await?,
                )
            }
            Request::FriendApply {
                user_id,
                greeting,
                alias,
            } => to_value(
                domain
                    .friends
                    .apply(w, &session, user_id, greeting, alias)
                    .await?,
            ),
            Request::FriendAccept { user_id, alias } => {
                let thread_id = domain.friends.accept(w, &session, user_id, alias).await?;
                to_value(Befriended { user_id, thread_id })
            }
            Request::FriendReject { user_id } => {
                domain.friends.reject(w, &session, user_id).await?;
                Ok(json!({}))
            }
            Request::FriendRequests {
                direction,
                after,
                limit,
            } => {
                let limit = limit.map_or(MAX_PAGE, |l| l.get());
                let incoming = direction == Direction::Incoming;
                to_value(
                    domain
                        .friends
                        .requests(w, &session, incoming, after, limit)
                        .await?,
                )
            }
            Request::Friends { after, limit } => {
                let limit = limit.map_or(MAX_PAGE, |l| l.get());
                to_value(domain.friends.list(w, &session, after, limit).await?)
            }
            Request::UpdateProfile {
                nick,
                description,
                sex,
                avatar,
            } => {
                let change = ProfileChange {
                    nick,
                    description,
                    sex,
                    avatar: avatar.map(|a| (!a.is_empty()).then_some(a)),
                };
                to_value(domain.profiles.update(w, &session, change).await?)
            }
            Request::Profile { user_id } => to_value(domain.profiles.get(w, user_id).await?),
            Request::SearchUsers {
                query,
                after,
                limit,
            } => {
                let limit = limit.map_or(MAX_PAGE, |l| l.get());
                to_value(domain.profiles.search(query, after, limit).await?)
            }
            Request::CreateGroup { name, members } => {
                let members = members.into_iter().map(|m| m.0).collect();
                let thread_id = domain.groups.create(w, &session, name, members).await?;
                to_value(GroupCreatedView { thread_id })
            }
            Request::AddMembers { thread_id, members } => {
                let members = members.into_iter().map(|m| m.0).collect();
                domain.groups.add(w, &session, thread_id, members).await?;
                Ok(json!({}))
            }
            Request::RemoveMember { thread_id, user_id } => {
                domain
                    .groups
                    .remove(w, &session, thread_id, user_id)
                    .await?;
                Ok(json!({}))
            }
            Request::LeaveGroup { thread_id } => {
                domain.groups.leave(w, &session, thread_id).await?;
                Ok(json!({}))
            }
            Request::RenameGroup { thread_id, name } => {
                domain.groups.rename(w, &session, thread_id, name).await?;
                Ok(json!({}))
            }
            Request::MuteMember {
                thread_id,
                user_id,
                until,
            } => {
                domain
                    .groups
                    .mute(w, &session, thread_id, user_id, until)
                    .await?;
                Ok(json!({}))
            }
            Request::SetRole {
                thread_id,
                user_id,
                role,
            } => {
                domain
                    .groups
                    .set_role(w, &session, thread_id, user_id, role)
                    .await?;
                Ok(json!({}))
            }
            Request::TransferOwnership { thread_id, user_id } => {
                domain
                    .groups
                    .transfer(w, &session, thread_id, user_id)
                    .await?;
                Ok(json!({}))
            }
            Request::Members {
                thread_id,
                after,
                limit,
            } => {
                let limit = limit.map_or(MAX_PAGE, |l| l.get());
                to_value(
                    domain
                        .groups
                        .members(w, &session, thread_id, after, limit)
                        .await?,
                )
            }
            Request::OfferFile {
                user_id,
                name,
                size,
                upload_id,
                ..
            } => {
                // `checked` made sure the mode's fields are there.
                let offer = match (name, size, upload_id) {
                    (_, _, Some(upload_id)) => Offer::Offline { upload_id },
                    (Some(name), Some(size), None) => Offer::Online { name, size },
                    _ => return Err(ApiError::bad_request("name and size, or upload_id")),
                };
                let relay = self.gateway.relay();
                to_value(
                    domain
                        .transfers
                        .offer(w, &session, user_id, offer, &relay)
                        .await?,
                )
            }
            Request::RefuseFile { task_id } => {
                domain.transfers.refuse(w, &session, task_id).await?;
                Ok(json!({}))
            }
            Request::CancelFile { task_id } => {
                domain.transfers.cancel(w, &session, task_id).await?;
                Ok(json!({}))
            }
            Request::OfflineFiles {} => {
                to_value(domain.transfers.offline_files(w, &session).await?)
            }
            Request::AckOfflineFile { task_id } => {
                domain.transfers.ack_offline(w, &session, task_id).await?;
                Ok(json!({}))
            }
            Request::Ping {}
            | Request::Register { .. }
            | Request::Login { .. }
            | Request::Auth { .. } => Err(ApiError::new(
                ErrorCode::Internal,
                "request routed to the wrong handler",
            )),
        }
    }

    fn refuse_second_login(&self) -> Result<(), ApiError> {
        match self.session {
            Some(_) => Err(ApiError::bad_request(
                "this connection is already logged in",
            )),
            None => Ok(()),
        }
    }

    async fn attach(&mut self, session: Session) {
        self.session = Some(session);
        let g = &self.gateway;
        let mailbox = g
            .presence
            .attach(
                &g.hub,
                &g.domain.profiles,
                &g.settings.instance_id,
                self.conn_id,
                session.user_id,
                (session.session_id, session.start_offset),
            )
            .await;
        self.new_mailbox = Some(mailbox);
    }
}

/// The wire answer of a posted batch.
fn sent(posted: Posted, parsed: Vec<Result<OutgoingMessage, (String, WireError)>>) -> Sent {
    let mut outcomes = posted.items.into_iter();
    let items = parsed
        .into_iter()
        .map(|item| match item {
            Err((unique_id, invalid)) => SentItem::failed(unique_id, invalid),
            Ok(text) => {
                let unique_id = text.unique_id.into_string();
                match outcomes.next() {
                    Some(Ok(message_id)) => SentItem {
                        unique_id,
                        message_id: Some(message_id),
                        error: None,
                    },
                    Some(Err(e)) => SentItem::failed(unique_id, store_error(&e)),
                    None => SentItem::failed(
                        unique_id,
                        WireError::new(ErrorCode::Internal, "no answer for this item"),
                    ),
                }
            }
        })
        .collect();
    Sent {
        thread_id: posted.thread_id,
        items,
    }
}

fn to_value(data: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(data).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imlog_events::{SessionId, UserId};
    use std::time::Duration;

    fn session(expires_in: chrono::Duration) -> Session {
        Session {
            user_id: UserId::new(1),
            session_id: SessionId::new(uuid::Uuid::nil()),
            start_offset: 0,
            expires_at: chrono::Utc::now() + expires_in,
        }
    }

    #[tokio::test]
    async fn a_connection_ends_when_its_session_expires() {
        let soon = session(chrono::Duration::milliseconds(50));
        tokio::time::timeout(Duration::from_secs(2), session_expiry(Some(&soon)))
            .await
            .expect("expired");
        let past = session(chrono::Duration::seconds(-5));
        tokio::time::timeout(Duration::from_millis(100), session_expiry(Some(&past)))
            .await
            .expect("already expired");
        let later = session(chrono::Duration::hours(1));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), session_expiry(Some(&later)))
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), session_expiry(None))
                .await
                .is_err()
        );
    }
}
