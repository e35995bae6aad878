//! A client for the imlog WebSocket protocol (docs/PROTOCOL.md), used by the
//! integration tests, the benchmarks and tools. Replies are matched to
//! requests by `req`; pushes that arrive meanwhile are queued.

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
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
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("unexpected frame: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_req: u64,
    pushes: VecDeque<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoggedIn {
    pub user_id: i64,
    pub session_id: String,
    pub token: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    pub items: Vec<Value>,
    pub load_more: bool,
    pub next_cursor: i64,
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

impl Client {
    /// Connects to `ws://host:port/ws`.
    pub async fn connect(url: &str) -> Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(transport)?;
        Ok(Client {
            ws,
            next_req: 1,
            pushes: VecDeque::new(),
        })
    }

    /// Sends `{"req": n, "op": op, ...fields}` and returns the reply's `data`.
    pub async fn request(&mut self, op: &str, fields: Value) -> Result<Value> {
        let req = self.next_req;
        self.next_req += 1;
        let mut frame = match fields {
            Value::Object(map) => map,
            Value::Null => Default::default(),
            other => {
                return Err(ClientError::Protocol(format!(
                    "fields must be an object, not {other}"
                )))
            }
        };
        frame.insert("req".into(), json!(req));
        frame.insert("op".into(), json!(op));
        self.send_frame(Value::Object(frame).to_string()).await?;
        let reply = self.next_reply(Some(json!(req))).await?;
        into_data(reply)
    }

    /// Sends a raw text frame (for testing bad input) and returns the next
    /// reply, whatever its `req`.
    pub async fn request_raw(&mut self, text: impl Into<String>) -> Result<Value> {
        self.send_frame(text.into()).await?;
        self.next_reply(None).await
    }

    /// Sends a raw binary frame and returns the next reply.
    pub async fn request_binary(&mut self, bytes: Vec<u8>) -> Result<Value> {
        self.ws
            .send(Message::binary(bytes))
            .await
            .map_err(transport)?;
        self.next_reply(None).await
    }

    async fn send_frame(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::text(text)).await.map_err(transport)
    }

    /// The next reply (a frame that is not a push); pushes are queued.
    async fn next_reply(&mut self, req: Option<Value>) -> Result<Value> {
        loop {
            let frame = self
                .next_frame(REPLY_TIMEOUT)
                .await?
                .ok_or(ClientError::Timeout)?;
            if frame.get("push").is_some() {
                self.pushes.push_back(frame);
                continue;
            }
            match &req {
                Some(req) if frame.get("req") != Some(req) => {
                    return Err(ClientError::Protocol(format!(
                        "reply for another request: {frame}"
                    )))
                }
                _ => return Ok(frame),
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
                        .map_err(|e| ClientError::Protocol(format!("reply is not JSON: {e}")))
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

    /// The next push (`{"push": kind, "data": ...}`), waiting up to `wait`.
    pub async fn next_push(&mut self, wait: Duration) -> Result<Option<Value>> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(Some(p));
        }
        match self.next_frame(wait).await? {
            None => Ok(None),
            Some(frame) if frame.get("push").is_some() => Ok(Some(frame)),
            Some(frame) => Err(ClientError::Protocol(format!("unexpected reply: {frame}"))),
        }
    }

    /// Reads until the server closes the connection; returns its close code
    /// and reason, and the pushes received before it.
    pub async fn wait_closed(&mut self, wait: Duration) -> Result<(u16, String, Vec<Value>)> {
        let mut pushes: Vec<Value> = self.pushes.drain(..).collect();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(None) => return Err(ClientError::Timeout),
                Ok(Some(frame)) => pushes.push(frame),
                Err(ClientError::Closed { code, reason }) => return Ok((code, reason, pushes)),
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn register(&mut self, name: &str, password: &str) -> Result<i64> {
        let data = self
            .request("register", json!({ "name": name, "password": password }))
            .await?;
        field_i64(&data, "user_id")
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Result<LoggedIn> {
        let data = self
            .request(
                "login",
                json!({ "name": name, "password": password, "device": "imlog-client" }),
            )
            .await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn auth(&mut self, token: &str) -> Result<Value> {
        self.request("auth", json!({ "token": token })).await
    }

    pub async fn ping(&mut self) -> Result<()> {
        self.request("ping", Value::Null).await.map(drop)
    }

    pub async fn open_private_thread(&mut self, peer: i64) -> Result<i64> {
        let data = self
            .request("open_private_thread", json!({ "user_id": peer }))
            .await?;
        field_i64(&data, "thread_id")
    }

    /// Sends a batch of `(unique_id, body)` texts; returns each item's answer
    /// (`{"unique_id", "message_id"}` or `{"unique_id", "error"}`).
    pub async fn send_texts(
        &mut self,
        thread_id: i64,
        items: &[(&str, &str)],
    ) -> Result<Vec<Value>> {
        self.send_batch(thread_id, items, false).await
    }

    /// Sends a batch again after its reply was lost (`retry: true`): items
    /// already appended are answered with their first ids.
    pub async fn resend_texts(
        &mut self,
        thread_id: i64,
        items: &[(&str, &str)],
    ) -> Result<Vec<Value>> {
        self.send_batch(thread_id, items, true).await
    }

    async fn send_batch(
        &mut self,
        thread_id: i64,
        items: &[(&str, &str)],
        retry: bool,
    ) -> Result<Vec<Value>> {
        let items: Vec<Value> = items
            .iter()
            .map(|(unique_id, body)| json!({ "unique_id": unique_id, "body": body }))
            .collect();
        let data = self
            .request(
                "send_messages",
                json!({ "thread_id": thread_id, "items": items, "retry": retry }),
            )
            .await?;
        match data.get("items") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(ClientError::Protocol(format!("no items in {data}"))),
        }
    }

    /// Sends one text and returns its message id.
    pub async fn send_text(&mut self, thread_id: i64, unique_id: &str, body: &str) -> Result<i64> {
        let items = self.send_texts(thread_id, &[(unique_id, body)]).await?;
        let item = items
            .first()
            .ok_or_else(|| ClientError::Protocol("empty answer".into()))?;
        if let Some(error) = item.get("error") {
            return Err(ClientError::Server {
                code: error["code"].as_str().unwrap_or_default().to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        field_i64(item, "message_id")
    }

    pub async fn sync_threads(&mut self, after: i64, limit: usize) -> Result<Page> {
        let data = self
            .request("sync_threads", json!({ "after": after, "limit": limit }))
            .await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn sync_messages(
        &mut self,
        thread_id: i64,
        since: i64,
        limit: usize,
    ) -> Result<Page> {
        let data = self
            .request(
                "sync_messages",
                json!({ "thread_id": thread_id, "since": since, "limit": limit }),
            )
            .await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Every message of a thread after `since`, following `load_more`.
    pub async fn sync_all_messages(
        &mut self,
        thread_id: i64,
        mut since: i64,
    ) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let page = self.sync_messages(thread_id, since, 100).await?;
            all.extend(page.items);
            since = page.next_cursor;
            if !page.load_more {
                return Ok(all);
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn into_data(reply: Value) -> Result<Value> {
    if reply.get("ok") == Some(&Value::Bool(true)) {
        return Ok(reply.get("data").cloned().unwrap_or(Value::Null));
    }
    let error = reply.get("error").cloned().unwrap_or(Value::Null);
    Err(ClientError::Server {
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
    })
}

fn field_i64(data: &Value, field: &str) -> Result<i64> {
    data.get(field)
        .and_then(Value::as_i64)
        .ok_or_else(|| ClientError::Protocol(format!("no {field} in {data}")))
}
