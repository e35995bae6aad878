//! The online transfer relay (TeamTalk's file server, docs/PROTOCOL.md
//! "Online transfer"): both parties of a task join
//! `/v1/transfers/{task_id}/ws` on the gateway that offered it, the sender
//! as `sender`, the receiver as `receiver`. The receiver pulls blocks
//! (`offset`, `size`); each pull is passed to the sender, whose next binary
//! frame is the block, passed back as a binary frame. Pulls are answered in
//! order. Nothing is stored; at most [`MAX_PULLS`] pulls are outstanding and
//! the receiver's queue of blocks is bounded, so a slow receiver slows the
//! sender. Control frames (states, pulls, errors) have their own queue, a
//! few per pull at most, so telling a side something never waits on it.
//! Every state change is recorded as an event before both are told; a final
//! state recorded elsewhere (`cancel_file`, expiry) closes the room too.

use crate::http::AppState;
use crate::Gateway;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use imlog_domain::accounts::Session;
use imlog_domain::Writes;
use imlog_events::{TaskId, TransferMode, TransferState};
use imlog_projections::files::TransferRow;
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The largest block one pull may ask for.
pub const MAX_BLOCK: u64 = 1024 * 1024;
/// Pulls a receiver may have outstanding.
pub const MAX_PULLS: usize = 4;
/// Frames queued for one side (blocks, for the receiver).
const OUTBOX: usize = MAX_PULLS;

pub(crate) fn routes(app: Router<AppState>) -> Router<AppState> {
    app.route("/v1/transfers/{task_id}/ws", get(upgrade))
}

/// A control frame for one side of a relay.
enum Ctrl {
    Text(String),
    /// The transfer ended: close with this reason.
    Close(String),
}

/// How to reach one side.
#[derive(Clone)]
struct Side {
    ctrl: mpsc::UnboundedSender<Ctrl>,
    /// The receiver's blocks (bounded); `None` for the sender.
    blocks: Option<mpsc::Sender<Bytes>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Role {
    Sender,
    Receiver,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// The relays this gateway runs, by task.
#[derive(Default)]
pub struct Relays {
    rooms: Mutex<HashMap<TaskId, Room>>,
}

#[derive(Default)]
struct Room {
    sender: Option<Side>,
    receiver: Option<Side>,
    /// Pulls passed to the sender and not yet answered, oldest first.
    pending: VecDeque<u64>,
    transferring: bool,
    ended: bool,
}

impl Room {
    fn slot(&mut self, role: Role) -> &mut Option<Side> {
        match role {
            Role::Sender => &mut self.sender,
            Role::Receiver => &mut self.receiver,
        }
    }

    /// Tells both sides (never waits).
    fn tell(&self, frame: &str) {
        for side in self.sender.iter().chain(self.receiver.iter()) {
            let _ = side.ctrl.send(Ctrl::Text(frame.to_owned()));
        }
    }

    fn close(&self, reason: &str) {
        for side in self.sender.iter().chain(self.receiver.iter()) {
            let _ = side.ctrl.send(Ctrl::Close(reason.to_owned()));
        }
    }
}

impl Relays {
    /// `f` on the task's room, if it has one.
    fn room<T>(&self, task: TaskId, f: impl FnOnce(&mut Room) -> T) -> Option<T> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get_mut(&task).map(f)
    }

    /// Takes `role`'s place in the task's room (made on first join): whether
    /// both are there now, or why not.
    fn enter(&self, task: TaskId, role: Role, side: Side) -> Result<bool, String> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.entry(task).or_default();
        if room.ended {
            return Err("the transfer has ended".to_owned());
        }
        if room.slot(role).is_some() {
            return Err(format!("the {} has joined already", role.name()));
        }
        *room.slot(role) = Some(side);
        Ok(room.sender.is_some() && room.receiver.is_some())
    }

    /// A final state was recorded (here or elsewhere): both sides are told
    /// and closed, once.
    pub fn close(&self, task: TaskId, state: TransferState, reason: &str) {
        self.room(task, |room| {
            if !std::mem::replace(&mut room.ended, true) {
                room.tell(&state_event(state, reason));
                room.close(reason);
            }
        });
    }

    /// `role` left; the room goes once both have.
    fn leave(&self, task: TaskId, role: Role) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get_mut(&task) {
            *room.slot(role) = None;
            if room.sender.is_none() && room.receiver.is_none() {
                rooms.remove(&task);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Join { token: String, role: Role },
    Pull { offset: u64, size: u64 },
    Done {},
    Refuse {},
    Cancel {},
}

async fn upgrade(
    State(state): State<AppState>,
    Path(task): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let gateway = state.gateway.clone();
    // A relay socket takes a connection slot like a chat session.
    let Ok(permit) = gateway.connections.clone().try_acquire_owned() else {
        metrics::counter!("imlog_gateway_connections_refused_total").increment(1);
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ok": false, "error": { "code": "unavailable", "message": "this gateway is full; retry" } })),
        )
            .into_response();
    };
    ws.max_message_size(MAX_BLOCK as usize + 1024)
        .max_frame_size(MAX_BLOCK as usize + 1024)
        .on_upgrade(move |socket| async move {
            let task = TaskId::parse(&task);
            serve(socket, gateway, task).await;
            drop(permit);
        })
        .into_response()
}

fn event(name: &str, data: serde_json::Value) -> String {
    let mut frame = json!({ "event": name });
    if let (Some(frame), Some(data)) = (frame.as_object_mut(), data.as_object()) {
        frame.extend(data.clone());
    }
    frame.to_string()
}

fn error(code: &str, message: impl Into<String>) -> String {
    event(
        "error",
        json!({ "error": { "code": code, "message": message.into() } }),
    )
}

fn state_event(state: TransferState, reason: &str) -> String {
    event(
        "state",
        json!({ "state": state.as_str(), "reason": reason }),
    )
}

/// A joined side: who, for which task.
struct Joined {
    session: Session,
    task: TransferRow,
    role: Role,
}

async fn serve(socket: WebSocket, gateway: Arc<Gateway>, task: Option<TaskId>) {
    let (mut sink, mut stream) = socket.split();
    let joined = match join(&gateway, &mut stream, task).await {
        Ok(joined) => joined,
        Err(refusal) => {
            let _ = sink.send(Message::Text(refusal.into())).await;
            let frame = CloseFrame {
                code: 4003,
                reason: "not joined".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            return;
        }
    };
    let Joined {
        session,
        task,
        role,
    } = joined;
    let task_id = task.task_id;
    let (ctrl, mut ctrl_rx) = mpsc::unbounded_channel::<Ctrl>();
    let (blocks, mut blocks_rx) = mpsc::channel::<Bytes>(OUTBOX);
    let side = Side {
        ctrl: ctrl.clone(),
        blocks: (role == Role::Receiver).then_some(blocks),
    };
    let relays = &gateway.relays;
    let both = match relays.enter(task_id, role, side) {
        Ok(both) => both,
        Err(why) => {
            let _ = sink
                .send(Message::Text(error("conflict", why).into()))
                .await;
            let frame = CloseFrame {
                code: 4003,
                reason: "not joined".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            return;
        }
    };
    let state = match (both, role) {
        (true, _) => TransferState::WaitingTransfer,
        (false, Role::Sender) => TransferState::WaitingReceiver,
        (false, Role::Receiver) => TransferState::WaitingSender,
    };
    let relay = Relay {
        gateway: &gateway,
        session: &session,
        task: &task,
        role,
    };
    if !relay.announce(state, "").await {
        // Ended as this side came in (a cancel, a timeout): say so, leave.
        relays.leave(task_id, role);
        let _ = sink
            .send(Message::Text(
                error("conflict", "the transfer has ended").into(),
            ))
            .await;
        let frame = CloseFrame {
            code: 4003,
            reason: "not joined".into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        return;
    }

    let shutdown = gateway.shutdown.clone();
    let ended = loop {
        tokio::select! {
            incoming = stream.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    _ => break None,
                };
                match message {
                    Message::Text(text) => {
                        if let Some(end) = relay.on_request(text.as_str(), &ctrl).await {
                            break Some((end, true));
                        }
                    }
                    Message::Binary(block) => {
                        if let Some(end) = relay.on_block(block, &shutdown).await {
                            break Some((end, true));
                        }
                    }
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            out = ctrl_rx.recv() => {
                let text = match out {
                    Some(Ctrl::Text(text)) => text,
                    // Told to close: everything before it was sent already.
                    Some(Ctrl::Close(reason)) => break Some((reason, false)),
                    None => break None,
                };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break None;
                }
            }
            Some(block) = blocks_rx.recv() => {
                if sink.send(Message::Binary(block)).await.is_err() {
                    break None;
                }
            }
            _ = shutdown.cancelled() => break None,
        }
    };
    // Out of the room first: nobody waits on this side any more.
    relays.leave(task_id, role);
    drop(blocks_rx);
    match ended {
        Some((reason, ended_here)) => {
            // Ended by this side: the final state is queued for it too, up
            // to its close; send that first.
            while let (true, Ok(Ctrl::Text(text))) = (ended_here, ctrl_rx.try_recv()) {
                let _ = sink.send(Message::Text(text.into())).await;
            }
            let frame = CloseFrame {
                code: 1000,
                reason: reason.into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        None => {
            // This side left (or the gateway stops) before the end.
            let reason = format!("the {} left", role.name());
            relay.end(TransferState::Cancelled, &reason).await;
        }
    }
}

/// Reads the `join` frame and checks it: a live token of a party to an
/// online task relayed here that has not ended, in that party's role.
async fn join(
    gateway: &Gateway,
    stream: &mut futures::stream::SplitStream<WebSocket>,
    task: Option<TaskId>,
) -> Result<Joined, String> {
    let task_id = task.ok_or_else(|| error("bad_request", "the task id must be a UUID"))?;
    let first = tokio::time::timeout(gateway.settings.login_timeout, stream.next())
        .await
        .map_err(|_| error("unauthenticated", "send join sooner after connecting"))?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err(error("bad_request", "the first frame must be a join"));
    };
    let (token, role) = match serde_json::from_str::<Request>(text.as_str()) {
        Ok(Request::Join { token, role }) => (token, role),
        _ => {
            return Err(error(
                "bad_request",
                r#"the first frame must be {"op":"join","token":...,"role":"sender"|"receiver"}"#,
            ))
        }
    };
    let session = gateway
        .domain
        .accounts
        .authenticate(token.trim())
        .await
        .map_err(|e| {
            let e = crate::error::ApiError::from(e);
            error(e.code().as_str(), e.0.message)
        })?;
    let task = gateway
        .domain
        .transfers
        .task(&mut Writes::default(), task_id)
        .await
        .map_err(|e| {
            let e = crate::error::ApiError::from(e);
            error(e.code().as_str(), e.0.message)
        })?;
    let party = match role {
        Role::Sender => task.from,
        Role::Receiver => task.to,
    };
    if session.user_id != party {
        return Err(error(
            "forbidden",
            format!("you are not this transfer's {}", role.name()),
        ));
    }
    if task.mode != TransferMode::Online {
        return Err(error(
            "bad_request",
            "an offline transfer is downloaded, not relayed",
        ));
    }
    if task.state.is_final() {
        return Err(error(
            "conflict",
            format!("the transfer has ended ({})", task.state.as_str()),
        ));
    }
    if task.relay.as_deref() != Some(gateway.settings.instance_id.as_str()) {
        return Err(error(
            "not_found",
            format!(
                "this transfer is relayed at {}",
                task.relay_url
                    .as_deref()
                    .unwrap_or("another gateway, which is gone")
            ),
        ));
    }
    Ok(Joined {
        session,
        task,
        role,
    })
}

/// One side's view of the relay.
struct Relay<'a> {
    gateway: &'a Gateway,
    session: &'a Session,
    task: &'a TransferRow,
    role: Role,
}

impl Relay<'_> {
    fn relays(&self) -> &Relays {
        &self.gateway.relays
    }

    /// Records `state`; true if it was (not if the transfer had ended).
    async fn record(&self, state: TransferState, reason: &str) -> bool {
        let recorded = self
            .gateway
            .domain
            .transfers
            .record(
                &mut Writes::default(),
                Some(self.session.user_id),
                self.task,
                state,
                reason,
            )
            .await;
        match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::warn!(task_id = %self.task.task_id, error = %e, "cannot record a transfer state");
                false
            }
        }
    }

    /// Records `state`, then tells both sides.
    /// Records `state`, then tells both sides; false if it could not be
    /// recorded (the transfer ended meanwhile).
    async fn announce(&self, state: TransferState, reason: &str) -> bool {
        let recorded = self.record(state, reason).await;
        if recorded {
            let frame = state_event(state, reason);
            // Nothing is said after the final state.
            self.relays().room(self.task.task_id, |room| {
                if !room.ended {
                    room.tell(&frame);
                }
            });
        }
        recorded
    }

    /// Ends the transfer (once: the end is claimed before it is recorded):
    /// records it, tells both and closes both. If the transfer had ended
    /// elsewhere meanwhile, both are told how it did end.
    /// `None` when another side is already ending it: its state and close
    /// are on their way to this side too.
    async fn end(&self, state: TransferState, reason: &str) -> Option<String> {
        let task = self.task.task_id;
        let first = self
            .relays()
            .room(task, |room| !std::mem::replace(&mut room.ended, true))
            .unwrap_or(true);
        if !first {
            return None;
        }
        let (mut state, mut reason) = (state, reason.to_owned());
        if !self.record(state, &reason).await {
            let recorded = self
                .gateway
                .domain
                .transfers
                .task(&mut Writes::default(), task)
                .await;
            if let Some(t) = recorded.ok().filter(|t| t.state.is_final()) {
                (state, reason) = (t.state, t.reason);
            }
        }
        self.relays().room(task, |room| {
            room.tell(&state_event(state, &reason));
            room.close(&reason);
        });
        Some(reason)
    }

    /// A text frame; `Some` when the transfer ended.
    async fn on_request(&self, text: &str, me: &mpsc::UnboundedSender<Ctrl>) -> Option<String> {
        let reply = |frame: String| async move {
            let _ = me.send(Ctrl::Text(frame));
        };
        let request = match serde_json::from_str::<Request>(text) {
            Ok(request) => request,
            Err(e) => {
                reply(error("bad_request", format!("not a relay request: {e}"))).await;
                return None;
            }
        };
        match (request, self.role) {
            (Request::Pull { offset, size }, Role::Receiver) => {
                self.on_pull(offset, size, me).await;
                None
            }
            (Request::Done {}, Role::Receiver) => self.end(TransferState::Done, "").await,
            (Request::Refuse {}, Role::Receiver) => {
                let started = self
                    .relays()
                    .room(self.task.task_id, |room| room.transferring)
                    .unwrap_or(false);
                if started {
                    reply(error(
                        "conflict",
                        "the transfer has started; cancel it instead",
                    ))
                    .await;
                    return None;
                }
                self.end(TransferState::Refused, "the receiver refused")
                    .await
            }
            (Request::Cancel {}, role) => {
                let reason = format!("the {} cancelled", role.name());
                self.end(TransferState::Cancelled, &reason).await
            }
            (Request::Join { .. }, _) => {
                reply(error("conflict", "joined already")).await;
                None
            }
            (_, role) => {
                reply(error(
                    "forbidden",
                    format!("the {} cannot do that", role.name()),
                ))
                .await;
                None
            }
        }
    }

    async fn on_pull(&self, offset: u64, size: u64, me: &mpsc::UnboundedSender<Ctrl>) {
        let file = self.task.size;
        let fits = (1..=MAX_BLOCK).contains(&size)
            && offset.checked_add(size).is_some_and(|end| end <= file);
        if !fits {
            let message = format!("pull 1-{MAX_BLOCK} bytes within the file's {file}: offset {offset} size {size} is not");
            let _ = me.send(Ctrl::Text(error("bad_request", message)));
            return;
        }
        let pulled = self.relays().room(self.task.task_id, |room| {
            if room.ended {
                return (Err("the transfer has ended"), false);
            }
            let Some(sender) = room.sender.clone() else {
                return (Err("the sender has not joined"), false);
            };
            if room.pending.len() >= MAX_PULLS {
                return (Err("too many pulls outstanding; wait for a block"), false);
            }
            room.pending.push_back(size);
            let first = !std::mem::replace(&mut room.transferring, true);
            (Ok(sender), first)
        });
        let (sender, first) = pulled.unwrap_or((Err("the transfer has ended"), false));
        let sender = match sender {
            Ok(sender) => sender,
            Err(why) => {
                let _ = me.send(Ctrl::Text(error("conflict", why)));
                return;
            }
        };
        if first {
            let _ = self.announce(TransferState::Transferring, "").await;
        }
        let pull = event("pull", json!({ "offset": offset, "size": size }));
        let _ = sender.ctrl.send(Ctrl::Text(pull));
    }

    /// A block from the sender: the answer to the oldest pull.
    async fn on_block(
        &self,
        block: Bytes,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<String> {
        if self.role != Role::Sender {
            return self
                .end(TransferState::Error, "the receiver sent data")
                .await;
        }
        let (expected, receiver) = self
            .relays()
            .room(self.task.task_id, |room| {
                (room.pending.pop_front(), room.receiver.clone())
            })
            .unwrap_or((None, None));
        let Some(expected) = expected else {
            return self
                .end(
                    TransferState::Error,
                    "the sender sent a block nobody pulled",
                )
                .await;
        };
        if block.len() as u64 != expected {
            let reason = format!(
                "the sender sent {} bytes for a pull of {expected}",
                block.len()
            );
            return self.end(TransferState::Error, &reason).await;
        }
        let Some(blocks) = receiver.and_then(|r| r.blocks) else {
            return self
                .end(TransferState::Cancelled, "the receiver left")
                .await;
        };
        metrics::counter!("imlog_transfer_relayed_bytes_total").increment(block.len() as u64);
        // Waits while the receiver's queue is full: the sender's frames are
        // not read meanwhile, so it slows down too.
        tokio::select! {
            sent = blocks.send(block) => match sent {
                Ok(()) => None,
                // Its task ended: it left.
                Err(_) => self.end(TransferState::Cancelled, "the receiver left").await,
            },
            _ = shutdown.cancelled() => Some("the server is shutting down".to_owned()),
        }
    }
}
