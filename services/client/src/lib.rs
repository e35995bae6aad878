//! A client for the imlog WebSocket protocol (docs/PROTOCOL.md), used by the
//! integration tests, the benchmarks and tools. It speaks the protocol
//! crate's types: requests go out as [`Request`]s, replies come back as
//! views, pushes as [`Push`]es. Replies are matched to requests by `req`;
//! pushes that arrive meanwhile are queued.

pub mod files;
pub mod transfers;

pub use files::{sha256_hex, Downloaded, FilesClient};
pub use transfers::{RelayClient, RelayFrame};

use futures::{SinkExt, StreamExt};
use imlog_protocol::{
    Alias, Authenticated, Before, Befriended, Cursor, Device, Direction, ErrorCode, FriendApplied,
    FriendRequestView, FriendView, Greeting, GroupCreatedView, GroupName, LoggedIn, MemberId,
    MemberView, MessageId, MessageView, NewPassword, OpenedThread, OutgoingItem, Page, PageSize,
    Password, Push, Registered, Reply, Request, Sent, SentItem, ThreadId, ThreadView, UserId,
    UserName, WireError,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("connection closed by the server (code {code}: {reason})")]
    Closed { code: u16, reason: String },
    #[error("server error {0}")]
    Server(WireError),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("unexpected frame: {0}")]
    Protocol(String),
    #[error("invalid request: {0}")]
    Invalid(WireError),
}

impl ClientError {
    /// The server's error code, as on the wire, if this is a server error.
    pub fn code(&self) -> Option<&'static str> {
        self.error_code().map(ErrorCode::as_str)
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_req: u64,
    pushes: VecDeque<Push>,
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// A frame from the server: a reply, or a push.
enum Incoming {
    Reply(Reply),
    Push(Push),
}

fn incoming(frame: Value) -> Result<Incoming> {
    if frame.get("push").is_some() {
        serde_json::from_value(frame)
            .map(Incoming::Push)
            .map_err(protocol)
    } else {
        serde_json::from_value(frame)
            .map(Incoming::Reply)
            .map_err(protocol)
    }
}

impl Client {
    /// Connects to `ws://host:port/ws`.
    pub async fn connect(url: &str) -> Result<Client> {
        // A small read buffer: the default 128 KiB one is zero-filled on
        // every read, which costs a load test of many clients dearly.
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.read_buffer_size = 4 * 1024;
        config.write_buffer_size = 0;
        // Requests are small whole frames: none waits for the last one's
        // acknowledgement (TCP_NODELAY).
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(transport)?;
        Ok(Client {
            ws,
            next_req: 1,
            pushes: VecDeque::new(),
        })
    }

    /// Connects to `ws://host:port/ws` from the local address `from` (e.g.
    /// another 127.x address, to look like another client machine).
    pub async fn connect_from(url: &str, from: std::net::IpAddr) -> Result<Client> {
        let authority = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| ClientError::Transport(format!("not a ws:// URL: {url}")))?;
        let server: std::net::SocketAddr = authority.parse().map_err(transport)?;
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(transport)?;
        socket
            .bind(std::net::SocketAddr::new(from, 0))
            .map_err(transport)?;
        let tcp = socket.connect(server).await.map_err(transport)?;
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.read_buffer_size = 4 * 1024;
        config.write_buffer_size = 0;
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(tcp),
            Some(config),
        )
        .await
        .map_err(transport)?;
        Ok(Client {
            ws,
            next_req: 1,
            pushes: VecDeque::new(),
        })
    }

    /// Sends a request and returns its reply's `data`, decoded.
    pub async fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T> {
        let req = self.next_req;
        self.next_req += 1;
        let mut frame = serde_json::to_value(request).map_err(protocol)?;
        frame["req"] = json!(req);
        self.send_frame(frame.to_string()).await?;
        let reply = self.next_reply(Some(json!(req))).await?;
        let data = reply.into_result().map_err(ClientError::Server)?;
        serde_json::from_value(data).map_err(protocol)
    }

    /// Sends a raw text frame (for testing bad input) and returns the next
    /// reply, whatever its `req`, as JSON.
    pub async fn request_raw(&mut self, text: impl Into<String>) -> Result<Value> {
        self.send_frame(text.into()).await?;
        self.next_raw_reply().await
    }

    /// Sends a raw binary frame and returns the next reply as JSON.
    pub async fn request_binary(&mut self, bytes: Vec<u8>) -> Result<Value> {
        self.ws
            .send(Message::binary(bytes))
            .await
            .map_err(transport)?;
        self.next_raw_reply().await
    }

    async fn send_frame(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::text(text)).await.map_err(transport)
    }

    async fn next_raw_reply(&mut self) -> Result<Value> {
        loop {
            let frame = self
                .next_frame(REPLY_TIMEOUT)
                .await?
                .ok_or(ClientError::Timeout)?;
            if frame.get("push").is_some() {
                if let Ok(push) = serde_json::from_value(frame) {
                    self.pushes.push_back(push);
                }
                continue;
            }
            return Ok(frame);
        }
    }

    /// The next reply (a frame that is not a push); pushes are queued.
    async fn next_reply(&mut self, req: Option<Value>) -> Result<Reply> {
        loop {
            let frame = self
                .next_frame(REPLY_TIMEOUT)
                .await?
                .ok_or(ClientError::Timeout)?;
            match incoming(frame)? {
                Incoming::Push(push) => self.pushes.push_back(push),
                Incoming::Reply(reply) => match &req {
                    Some(req) if &reply.req != req => {
                        return Err(protocol(format!("reply for another request: {reply:?}")))
                    }
                    _ => return Ok(reply),
                },
            }
        }
    }

    async fn next_frame(&mut self, wait: Duration) -> Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => {
                    return Err(ClientError::Closed {
                        code: 1006,
                        reason: "connection dropped".into(),
                    })
                }
                Ok(Some(Err(e))) => return Err(transport(e)),
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|e| protocol(format!("reply is not JSON: {e}")))
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(ClientError::Closed { code, reason });
                }
                _ => continue,
            }
        }
    }

    /// The next push, waiting up to `wait`.
    pub async fn next_push(&mut self, wait: Duration) -> Result<Option<Push>> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(Some(p));
        }
        match self.next_frame(wait).await? {
            None => Ok(None),
            Some(frame) => match incoming(frame)? {
                Incoming::Push(push) => Ok(Some(push)),
                Incoming::Reply(reply) => Err(protocol(format!("unexpected reply: {reply:?}"))),
            },
        }
    }

    /// Reads until the server closes the connection; returns its close code
    /// and reason, and the pushes received before it.
    pub async fn wait_closed(&mut self, wait: Duration) -> Result<(u16, String, Vec<Push>)> {
        let mut pushes: Vec<Push> = self.pushes.drain(..).collect();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(None) => return Err(ClientError::Timeout),
                Ok(Some(frame)) => {
                    if let Incoming::Push(push) = incoming(frame)? {
                        pushes.push(push);
                    }
                }
                Err(ClientError::Closed { code, reason }) => return Ok((code, reason, pushes)),
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn register(&mut self, name: &str, password: &str) -> Result<UserId> {
        let request = Request::Register {
            name: UserName::parse(name).map_err(ClientError::Invalid)?,
            password: NewPassword::parse(password).map_err(ClientError::Invalid)?,
        };
        Ok(self.call::<Registered>(&request).await?.user_id)
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Result<LoggedIn> {
        let request = Request::Login {
            name: UserName::parse(name).map_err(ClientError::Invalid)?,
            password: Password::parse(password).map_err(ClientError::Invalid)?,
            device: Device::parse("imlog-client").map_err(ClientError::Invalid)?,
        };
        self.call(&request).await
    }

    pub async fn auth(&mut self, token: &str) -> Result<Authenticated> {
        self.call(&Request::Auth {
            token: token.to_owned(),
        })
        .await
    }

    pub async fn ping(&mut self) -> Result<()> {
        self.call::<Value>(&Request::Ping {}).await.map(drop)
    }

    pub async fn logout(&mut self) -> Result<()> {
        self.call::<Value>(&Request::Logout {}).await.map(drop)
    }

    pub async fn open_private_thread(&mut self, peer: UserId) -> Result<ThreadId> {
        let opened: OpenedThread = self
            .call(&Request::OpenPrivateThread { user_id: peer })
            .await?;
        Ok(opened.thread_id)
    }

    /// Sends a batch of `(unique_id, body)` texts; returns each item's answer.
    pub async fn send_texts(
        &mut self,
        thread_id: ThreadId,
        items: &[(&str, &str)],
    ) -> Result<Vec<SentItem>> {
        self.send_batch(thread_id, items, false).await
    }

    /// Sends a batch again after its reply was lost (`retry: true`): items
    /// already appended are answered with their first ids.
    pub async fn resend_texts(
        &mut self,
        thread_id: ThreadId,
        items: &[(&str, &str)],
    ) -> Result<Vec<SentItem>> {
        self.send_batch(thread_id, items, true).await
    }

    async fn send_batch(
        &mut self,
        thread_id: ThreadId,
        items: &[(&str, &str)],
        retry: bool,
    ) -> Result<Vec<SentItem>> {
        let request = Request::SendMessages {
            thread_id,
            items: items
                .iter()
                .map(|(unique_id, body)| OutgoingItem::new(*unique_id, *body))
                .collect(),
            retry,
        };
        Ok(self.call::<Sent>(&request).await?.items)
    }

    /// Sends one text and returns its message id.
    pub async fn send_text(
        &mut self,
        thread_id: ThreadId,
        unique_id: &str,
        body: &str,
    ) -> Result<MessageId> {
        let items = self.send_texts(thread_id, &[(unique_id, body)]).await?;
        let item = items
            .into_iter()
            .next()
            .ok_or_else(|| protocol("empty answer"))?;
        match (item.message_id, item.error) {
            (_, Some(error)) => Err(ClientError::Server(error)),
            (Some(id), None) => Ok(id),
            (None, None) => Err(protocol("an item with neither id nor error")),
        }
    }

    /// A page of your threads after `after` (0, or a page's `next_cursor`).
    pub async fn sync_threads(&mut self, after: i64, limit: usize) -> Result<Page<ThreadView>> {
        let limit = PageSize::try_from(limit).map_err(ClientError::Invalid)?;
        self.call(&Request::SyncThreads {
            after: Cursor::new(after),
            limit: Some(limit),
        })
        .await
    }

    pub async fn sync_messages(
        &mut self,
        thread_id: ThreadId,
        since: MessageId,
        limit: usize,
    ) -> Result<Page<MessageView>> {
        let limit = PageSize::try_from(limit).map_err(ClientError::Invalid)?;
        self.call(&Request::SyncMessages {
            thread_id,
            since,
            before: None,
            limit: Some(limit),
        })
        .await
    }

    /// Scrollback: the page of messages just before `before`.
    pub async fn messages_before(
        &mut self,
        thread_id: ThreadId,
        before: MessageId,
        limit: usize,
    ) -> Result<Page<MessageView>> {
        let limit = PageSize::try_from(limit).map_err(ClientError::Invalid)?;
        self.call(&Request::SyncMessages {
            thread_id,
            since: MessageId::default(),
            before: Some(Before(before)),
            limit: Some(limit),
        })
        .await
    }

    /// Every message of a thread after `since`, following `load_more`.
    pub async fn sync_all_messages(
        &mut self,
        thread_id: ThreadId,
        mut since: MessageId,
    ) -> Result<Vec<MessageView>> {
        let mut all = Vec::new();
        loop {
            let page = self.sync_messages(thread_id, since, 100).await?;
            all.extend(page.items);
            since = MessageId::new(page.next_cursor);
            if !page.load_more {
                return Ok(all);
            }
        }
    }

    /// Asks `user` to be friends, with a greeting and your alias for them.
    pub async fn friend_apply(
        &mut self,
        user: UserId,
        greeting: &str,
        alias: &str,
    ) -> Result<FriendApplied> {
        self.call(&Request::FriendApply {
            user_id: user,
            greeting: Greeting::parse(greeting).map_err(ClientError::Invalid)?,
            alias: Alias::parse(alias).map_err(ClientError::Invalid)?,
        })
        .await
    }

    /// Accepts `user`'s pending request, with your alias for them.
    pub async fn friend_accept(&mut self, user: UserId, alias: &str) -> Result<Befriended> {
        self.call(&Request::FriendAccept {
            user_id: user,
            alias: Alias::parse(alias).map_err(ClientError::Invalid)?,
        })
        .await
    }

    pub async fn friend_reject(&mut self, user: UserId) -> Result<()> {
        self.call::<Value>(&Request::FriendReject { user_id: user })
            .await
            .map(drop)
    }

    /// The first page (up to 100) of pending requests to you or from you.
    pub async fn friend_requests(&mut self, incoming: bool) -> Result<Page<FriendRequestView>> {
        let direction = if incoming {
            Direction::Incoming
        } else {
            Direction::Outgoing
        };
        self.call(&Request::FriendRequests {
            direction,
            after: UserId::default(),
            limit: None,
        })
        .await
    }

    /// The first page (up to 100) of your friends.
    pub async fn friends(&mut self) -> Result<Page<FriendView>> {
        self.call(&Request::Friends {
            after: UserId::default(),
            limit: None,
        })
        .await
    }

    /// Creates a group with you as owner; returns its thread.
    pub async fn create_group(&mut self, name: &str, members: &[UserId]) -> Result<ThreadId> {
        let created: GroupCreatedView = self
            .call(&Request::CreateGroup {
                name: GroupName::parse(name).map_err(ClientError::Invalid)?,
                members: members.iter().copied().map(MemberId).collect(),
            })
            .await?;
        Ok(created.thread_id)
    }

    /// Sends a request whose reply carries no data (the group changes).
    pub async fn command(&mut self, request: Request) -> Result<()> {
        self.call::<Value>(&request).await.map(drop)
    }

    /// The first page (up to 100) of a thread's members.
    pub async fn members(&mut self, thread_id: ThreadId) -> Result<Page<MemberView>> {
        self.call(&Request::Members {
            thread_id,
            after: UserId::default(),
            limit: None,
        })
        .await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
