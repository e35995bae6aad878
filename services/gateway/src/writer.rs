//! The writing half of a connection, in a task of its own. Replies and
//! pushes go out in order, each write within a deadline: a client that stops
//! reading fills its socket, and the write that cannot finish ends the
//! connection — instead of stalling the loop that reads requests, times the
//! heartbeat and acts on kicks and shutdown, which would keep the slot for
//! ever. Pushes are written here too, so they drain while a request is being
//! handled (a slow request no longer lets the push queue overflow).
//!
//! The queue between the two is a few frames behind a mutex rather than a
//! channel: every idle connection holds one, and a channel's preallocated
//! block and padded wakers cost more than the rest of the writer.

use crate::hub::Frames;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Small (the larger variants boxed): every queue holds a few of them.
enum Outgoing {
    Frame(String),
    /// The connection's push queue, once it has logged in.
    Pushes(Box<Frames>),
    Close(Box<CloseFrame>),
}

/// Frames waiting for the writer: requests are answered one at a time, so a
/// few cover a reply, a kick notice and the close frame.
const QUEUE: usize = 4;

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Outgoing>>,
    /// Wakes the writer: something was queued, or the sender is done.
    work: Notify,
    /// Wakes a sender waiting for room, or for the writer's end.
    room: Notify,
    /// The sender will queue nothing more.
    done: AtomicBool,
    /// The writer has ended: nothing queued will be written.
    ended: AtomicBool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Outgoing>> {
        // A panic while holding it cannot leave the queue inconsistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Taken by `close`; if the connection ends without it (a panic), the
    /// task is stopped on drop, and the socket with it.
    task: Option<JoinHandle<()>>,
    deadline: Duration,
}

impl Writer {
    /// Takes over `sink`; every write must finish within `deadline`.
    pub(crate) fn spawn(sink: SplitSink<WebSocket, Message>, deadline: Duration) -> Writer {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(sink, shared.clone(), deadline));
        Writer {
            shared,
            task: Some(task),
            deadline,
        }
    }

    /// Queues a frame after the ones before it. False once the writer has
    /// ended (the client left, or did not take a write in time).
    pub(crate) async fn send(&self, frame: String) -> bool {
        self.queue(Outgoing::Frame(frame)).await
    }

    /// From now on the writer also forwards the hub's pushes.
    pub(crate) async fn attach(&self, pushes: Frames) -> bool {
        self.queue(Outgoing::Pushes(Box::new(pushes))).await
    }

    async fn queue(&self, item: Outgoing) -> bool {
        let mut item = Some(item);
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before looking, so a wake-up in between is kept.
            room.as_mut().enable();
            if self.shared.ended.load(Ordering::Acquire) {
                return false;
            }
            {
                let mut queue = self.shared.queue();
                if queue.len() < QUEUE {
                    queue.extend(item.take());
                    drop(queue);
                    self.shared.work.notify_one();
                    return true;
                }
            }
            room.await;
        }
    }

    /// Resolves when the writer has ended.
    pub(crate) async fn ended(&self) {
        loop {
            let woken = self.shared.room.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.shared.ended.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// Sends `frame` (if the client still takes writes) and waits for the
    /// writer to end — at most its write deadline, then it is stopped.
    pub(crate) async fn close(mut self, frame: Option<CloseFrame>) {
        if let Some(frame) = frame {
            self.queue(Outgoing::Close(Box::new(frame))).await;
        }
        self.shared.done.store(true, Ordering::Release);
        self.shared.work.notify_one();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Marks the writer ended however it stops, and wakes whoever waits on it.
struct EndGuard(Arc<Shared>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        self.0.room.notify_waiters();
    }
}

async fn run(mut sink: SplitSink<WebSocket, Message>, shared: Arc<Shared>, deadline: Duration) {
    let _end = EndGuard(shared.clone());
    let mut pushes: Option<Frames> = None;
    loop {
        // Replies first: a reply is what the client is waiting for.
        let queued = shared.queue().pop_front();
        let next = match queued {
            Some(next) => {
                shared.room.notify_waiters();
                next
            }
            None if shared.done.load(Ordering::Acquire) => return,
            None => tokio::select! {
                biased;
                _ = shared.work.notified() => continue,
                push = next_push(&mut pushes) => match push {
                    Some(frame) => Outgoing::Frame(frame),
                    // The hub let go of this connection (a kick or
                    // slow-consumer close follows through the connection loop).
                    None => {
                        pushes = None;
                        continue;
                    }
                },
            },
        };
        let message = match next {
            Outgoing::Pushes(frames) => {
                pushes = Some(*frames);
                continue;
            }
            Outgoing::Frame(text) => Message::Text(text.into()),
            Outgoing::Close(frame) => {
                let _ = write(&mut sink, Message::Close(Some(*frame)), deadline).await;
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
