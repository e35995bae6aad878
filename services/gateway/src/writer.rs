//! The writing half of a connection, in a task of its own. Replies and
//! pushes go out in order, each write within a deadline: a client that stops
//! reading fills its socket, and the write that cannot finish ends the
//! connection — instead of stalling the loop that reads requests, times the
//! heartbeat and acts on kicks and shutdown, which would keep the slot for
//! ever. Pushes are written here too, so they drain while a request is being
//! handled (a slow request no longer lets the push queue overflow).

use crate::hub::Frames;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

enum Outgoing {
    Frame(String),
    /// The connection's push queue, once it has logged in.
    Pushes(Frames),
    Close(CloseFrame),
}

/// Replies in flight to the writer: requests are answered one at a time, so
/// a few cover a reply, a kick notice and the close frame.
const QUEUE: usize = 8;

pub(crate) struct Writer {
    tx: mpsc::Sender<Outgoing>,
    ended: CancellationToken,
    task: JoinHandle<()>,
    deadline: Duration,
}

impl Writer {
    /// Takes over `sink`; every write must finish within `deadline`.
    pub(crate) fn spawn(sink: SplitSink<WebSocket, Message>, deadline: Duration) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let ended = CancellationToken::new();
        let task = tokio::spawn(run(sink, rx, deadline, ended.clone()));
        Writer {
            tx,
            ended,
            task,
            deadline,
        }
    }

    /// Queues a frame after the ones before it. False once the writer has
    /// ended (the client left, or did not take a write in time).
    pub(crate) async fn send(&self, frame: String) -> bool {
        self.tx.send(Outgoing::Frame(frame)).await.is_ok()
    }

    /// From now on the writer also forwards the hub's pushes.
    pub(crate) async fn attach(&self, pushes: Frames) -> bool {
        self.tx.send(Outgoing::Pushes(pushes)).await.is_ok()
    }

    /// Resolves when the writer has ended.
    pub(crate) async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Sends `frame` (if the client still takes writes) and waits for the
    /// writer to end — at most its write deadline, then it is stopped.
    pub(crate) async fn close(self, frame: Option<CloseFrame>) {
        if let Some(frame) = frame {
            let _ = self.tx.send(Outgoing::Close(frame)).await;
        }
        drop(self.tx);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(self.deadline, self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    deadline: Duration,
    ended: CancellationToken,
) {
    let _ended = ended.drop_guard();
    let mut pushes: Option<Frames> = None;
    loop {
        let next = tokio::select! {
            // Replies first: a reply is what the client is waiting for.
            biased;
            next = rx.recv() => match next {
                Some(next) => next,
                None => return,
            },
            push = next_push(&mut pushes) => match push {
                Some(frame) => Outgoing::Frame(frame),
                // The hub let go of this connection (a kick or slow-consumer
                // close follows through the connection loop).
                None => {
                    pushes = None;
                    continue;
                }
            },
        };
        let message = match next {
            Outgoing::Pushes(frames) => {
                pushes = Some(frames);
                continue;
            }
            Outgoing::Frame(text) => Message::Text(text.into()),
            Outgoing::Close(frame) => {
                let _ = write(&mut sink, Message::Close(Some(frame)), deadline).await;
                return;
            }
        };
        if !write(&mut sink, message, deadline).await {
            return;
        }
    }
}

/// One write, flushed, within `deadline`. False: the client is gone, or
/// does not read.
async fn write(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    deadline: Duration,
) -> bool {
    match tokio::time::timeout(deadline, sink.send(message)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            metrics::counter!("imlog_gateway_write_timeouts_total").increment(1);
            tracing::info!(
                ?deadline,
                "a client took no write within the deadline: closing"
            );
            false
        }
    }
}

async fn next_push(pushes: &mut Option<Frames>) -> Option<String> {
    match pushes {
        Some(frames) => frames.recv().await,
        None => std::future::pending().await,
    }
}
