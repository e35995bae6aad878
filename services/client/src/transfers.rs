//! One side of an online transfer relay (docs/PROTOCOL.md, "Online
//! transfer"): join as sender or receiver, then pull blocks (receiver) or
//! answer pulls with blocks (sender).

use crate::{protocol, transport, ClientError, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the relay sent.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayFrame {
    /// `{"event": ...}` (state, pull, error).
    Event(Value),
    Block(Vec<u8>),
    /// The relay closed the socket (with its reason).
    Closed(String),
}

pub struct RelayClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RelayClient {
    /// Connects to `relay_url` and joins with `token` as `role`
    /// (`sender` or `receiver`). The relay's answer is the first frame.
    pub async fn join(relay_url: &str, token: &str, role: &str) -> Result<RelayClient> {
        let (ws, _) = tokio_tungstenite::connect_async(relay_url)
            .await
            .map_err(transport)?;
        let mut client = RelayClient { ws };
        client
            .send(json!({ "op": "join", "token": token, "role": role }))
            .await?;
        Ok(client)
    }

    pub async fn send(&mut self, request: Value) -> Result<()> {
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .map_err(transport)
    }

    pub async fn pull(&mut self, offset: u64, size: u64) -> Result<()> {
        self.send(json!({ "op": "pull", "offset": offset, "size": size }))
            .await
    }

    pub async fn send_block(&mut self, block: Vec<u8>) -> Result<()> {
        self.ws
            .send(Message::Binary(block.into()))
            .await
            .map_err(transport)
    }

    /// The next frame, or an error after `within`.
    pub async fn next(&mut self, within: Duration) -> Result<RelayFrame> {
        loop {
            let frame = tokio::time::timeout(within, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            return Ok(match frame {
                None => RelayFrame::Closed(String::new()),
                Some(Err(e)) => return Err(transport(e)),
                Some(Ok(Message::Text(text))) => {
                    RelayFrame::Event(serde_json::from_str(text.as_str()).map_err(protocol)?)
                }
                Some(Ok(Message::Binary(bytes))) => RelayFrame::Block(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    RelayFrame::Closed(frame.map(|f| f.reason.to_string()).unwrap_or_default())
                }
                Some(Ok(_)) => continue,
            });
        }
    }

    /// The next event (skipping nothing): its JSON.
    pub async fn next_event(&mut self, within: Duration) -> Result<Value> {
        match self.next(within).await? {
            RelayFrame::Event(v) => Ok(v),
            other => Err(ClientError::Protocol(format!(
                "expected an event, got {other:?}"
            ))),
        }
    }

    /// Waits for `{"event":"state","state":state}`, skipping other frames.
    pub async fn wait_state(&mut self, state: &str, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline
                .checked_duration_since(tokio::time::Instant::now())
                .ok_or(ClientError::Timeout)?;
            match self.next(left).await? {
                RelayFrame::Event(v) if v["event"] == "state" && v["state"] == state => {
                    return Ok(v)
                }
                RelayFrame::Closed(reason) => {
                    return Err(ClientError::Closed { code: 1000, reason })
                }
                _ => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
