//! Delivery to online users: every gateway tails the topics of its
//! [`ROUTES`] from their end and hands each routed event to the connections
//! it holds. Push is an optimisation; sync is the truth, so this reader
//! keeps no offsets and starts at the end after a restart.
//!
//! A group message names no recipients: the fan-out knows the members of
//! the groups it delivers to ([`Members`]), loaded from the read model and
//! forgotten when a membership change passes on the threads topic.

use crate::hub::Hub;
use futures::future::BoxFuture;
use imlog_domain::messages::logged_view;
use imlog_domain::profiles::Profiles;
use imlog_domain::{Journal, Writes};
use imlog_events::{
    Envelope, Event, FriendAccepted, FriendRequested, GroupCreated, GroupMemberRemoved,
    GroupMembersAdded, LogPosition, MessageKind, MessageMediaSettled, MessagePosted,
    MessageRecalled, MessagesRead, PresenceChanged, PrivateThreadCreated, ProfileUpdated,
    SessionEnded, SessionStarted, ThreadId, Topic, TransferOffered, TransferState,
    TransferStateChanged, UserId,
};
use imlog_log::{read_from_end, Record};
use imlog_protocol::{Push, ThreadKind};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a route does with one event.
type Deliver = for<'a> fn(&'a Fanout, &'a Record, &'a Envelope) -> BoxFuture<'a, ()>;

/// What the fan-out does with one event type. The fan-out reads exactly the
/// topics of these event types.
pub struct Route {
    pub event: &'static str,
    pub topic: Topic,
    lane: Lane,
    deliver: Deliver,
}

/// Where a route runs. Messages must not wait behind a read-model query
/// per event of a burst (a gateway restart's thousand presence changes each
/// read the user's friends), so the routes that ask the read model to whom
/// a user's news goes run in a lane of their own, in log order among
/// themselves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lane {
    /// In log order, as read. A new thread's `thread` push stays here, so
    /// it comes before the thread's first messages (it may wait for the
    /// threads projection, as may a group message after a membership
    /// change, which reloads the members).
    Inline,
    /// The user's friends are read first: presence and profile changes,
    /// whose order relative to messages does not matter.
    Lookup,
}

/// The table: one row per event type that reaches connections.
pub const ROUTES: &[Route] = &[
    Route {
        event: MessagePosted::TYPE_NAME,
        topic: MessagePosted::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_message(f, r, e)),
    },
    Route {
        event: MessagesRead::TYPE_NAME,
        topic: MessagesRead::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_read(f, r, e)),
    },
    Route {
        event: MessageRecalled::TYPE_NAME,
        topic: MessageRecalled::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_recalled(f, r, e)),
    },
    Route {
        event: MessageMediaSettled::TYPE_NAME,
        topic: MessageMediaSettled::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_media_settled(f, r, e)),
    },
    Route {
        event: TransferOffered::TYPE_NAME,
        topic: TransferOffered::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_file_offer(f, r, e)),
    },
    Route {
        event: TransferStateChanged::TYPE_NAME,
        topic: TransferStateChanged::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_transfer_state(f, r, e)),
    },
    Route {
        event: SessionStarted::TYPE_NAME,
        topic: SessionStarted::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(kick_older_sessions(f, r, e)),
    },
    Route {
        event: SessionEnded::TYPE_NAME,
        topic: SessionEnded::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(close_ended_session(f, r, e)),
    },
    Route {
        event: PresenceChanged::TYPE_NAME,
        topic: PresenceChanged::TOPIC,
        lane: Lane::Lookup,
        deliver: |f, r, e| Box::pin(push_presence(f, r, e)),
    },
    Route {
        event: ProfileUpdated::TYPE_NAME,
        topic: ProfileUpdated::TOPIC,
        lane: Lane::Lookup,
        deliver: |f, r, e| Box::pin(push_profile(f, r, e)),
    },
    Route {
        event: FriendRequested::TYPE_NAME,
        topic: FriendRequested::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_friend_request(f, r, e)),
    },
    Route {
        event: FriendAccepted::TYPE_NAME,
        topic: FriendAccepted::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_friend_accepted(f, r, e)),
    },
    Route {
        event: PrivateThreadCreated::TYPE_NAME,
        topic: PrivateThreadCreated::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(push_private_thread(f, r, e)),
    },
    Route {
        event: GroupCreated::TYPE_NAME,
        topic: GroupCreated::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(group_joined(f, r, e)),
    },
    Route {
        event: GroupMembersAdded::TYPE_NAME,
        topic: GroupMembersAdded::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(group_joined(f, r, e)),
    },
    Route {
        event: GroupMemberRemoved::TYPE_NAME,
        topic: GroupMemberRemoved::TOPIC,
        lane: Lane::Inline,
        deliver: |f, r, e| Box::pin(group_left(f, r, e)),
    },
];

/// The fan-out's state: where connections are, and group members.
pub struct Fanout {
    hub: Arc<Hub>,
    journal: Arc<Journal>,
    profiles: Arc<Profiles>,
    relays: Arc<crate::transfers::Relays>,
    members: Members,
}

impl Fanout {
    pub fn new(
        hub: Arc<Hub>,
        journal: Arc<Journal>,
        profiles: Arc<Profiles>,
        relays: Arc<crate::transfers::Relays>,
    ) -> Fanout {
        Fanout {
            hub,
            journal,
            profiles,
            relays,
            members: Members::default(),
        }
    }

    /// Pushes `frame` to `recipients`, or, when none are named (a group), to
    /// every member as of `members_as_of` but `except`.
    async fn to_thread(
        &self,
        thread_id: ThreadId,
        except: Option<UserId>,
        recipients: &[UserId],
        members_as_of: Option<i64>,
        frame: &str,
    ) {
        if !recipients.is_empty() {
            self.hub.deliver_all(recipients.iter().copied(), frame);
        } else if let Some(members) = self
            .members
            .of(self, thread_id, members_as_of.unwrap_or(0))
            .await
        {
            let others = members.iter().copied().filter(|&u| Some(u) != except);
            self.hub.deliver_all(others, frame);
        }
    }

    /// Waits (bounded) until the projections reached `position` of `topic`.
    async fn projected(&self, topic: Topic, position: LogPosition) -> bool {
        let mut writes = Writes::default();
        writes.record(topic, position);
        match self.journal.settle(&mut writes, &[topic]).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "fanout: the read model is behind; pushing without it");
                false
            }
        }
    }
}

/// Group members by thread, loaded on first use, each as of a point of the
/// threads topic. A message says which point its sender was checked at
/// (`members_as_of`); older members are reloaded first, so someone removed
/// before a send is never pushed it, whatever order the topics are read in.
/// A membership change passing on the threads topic drops the group's entry
/// too, so that the next message does not wait for a reload.
#[derive(Default)]
struct Members {
    cache: Mutex<Cache>,
}

/// A group's members and the threads-topic offset they are as of.
type Known = (Arc<Vec<UserId>>, i64);

#[derive(Default)]
struct Cache {
    groups: HashMap<ThreadId, Known>,
    /// Member ids held in all `groups`.
    ids: usize,
}

impl Cache {
    fn get(&self, thread_id: &ThreadId) -> Option<&Known> {
        self.groups.get(thread_id)
    }

    fn remove(&mut self, thread_id: &ThreadId) {
        if let Some((members, _)) = self.groups.remove(thread_id) {
            self.ids -= members.len();
        }
    }

    fn clear(&mut self) {
        self.groups.clear();
        self.ids = 0;
    }

    fn insert(&mut self, thread_id: ThreadId, known: Known) {
        self.remove(&thread_id);
        if self.groups.len() >= CACHED_GROUPS || self.ids + known.0.len() > CACHED_IDS {
            self.clear();
        }
        self.ids += known.0.len();
        self.groups.insert(thread_id, known);
    }
}

/// Groups whose members are kept; past it the cache starts afresh.
const CACHED_GROUPS: usize = 4096;
/// Member ids kept in all (8 bytes each); past it the cache starts afresh.
const CACHED_IDS: usize = 1_000_000;

impl Members {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, thread_id: ThreadId) {
        self.cache().remove(&thread_id);
    }

    /// The members of `thread_id` as of at least `as_of`.
    async fn of(
        &self,
        fanout: &Fanout,
        thread_id: ThreadId,
        as_of: i64,
    ) -> Option<Arc<Vec<UserId>>> {
        if let Some((members, at)) = self.cache().get(&thread_id) {
            if *at >= as_of {
                return Some(members.clone());
            }
        }
        // When the read model is behind the send, the members loaded now are
        // used for this message but not kept: the next one loads again.
        let fresh = as_of <= 0
            || fanout
                .projected(
                    Topic::Threads,
                    LogPosition {
                        partition: 0,
                        offset: as_of - 1,
                    },
                )
                .await;
        let (members, at) = match fanout.journal.read().members_as_of(thread_id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(error = %e, %thread_id, "fanout cannot load a group's members");
                return None;
            }
        };
        let members = Arc::new(members);
        if fresh {
            self.cache().insert(thread_id, (members.clone(), at));
        }
        Some(members)
    }
}

/// A message goes to the recipients named in it, or, for a group, to every
/// member but the sender — except a system line, which the server wrote in
/// its actor's name: the actor's devices learn of it only from this push.
async fn push_message(f: &Fanout, record: &Record, envelope: &Envelope) {
    let Event::MessagePosted(m) = &envelope.event else {
        return;
    };
    let frame = Push::Message(logged_view(record.position(), m, envelope.meta.occurred_at)).frame();
    let except = (m.kind != MessageKind::System).then_some(m.sender_id);
    f.to_thread(m.thread_id, except, &m.recipients, m.members_as_of, &frame)
        .await;
}

/// A read receipt goes to the recipients named in it (none in big groups).
async fn push_read(f: &Fanout, _record: &Record, envelope: &Envelope) {
    if let Event::MessagesRead(r) = &envelope.event {
        let push = Push::Read {
            thread_id: r.thread_id,
            user_id: r.reader,
            up_to: r.up_to,
        };
        f.hub
            .deliver_all(r.recipients.iter().copied(), &push.frame());
    }
}

/// A recall goes where the message went.
async fn push_recalled(f: &Fanout, _record: &Record, envelope: &Envelope) {
    let Event::MessageRecalled(r) = &envelope.event else {
        return;
    };
    let frame = Push::Recalled {
        thread_id: r.thread_id,
        message_id: r.message_id,
        by: r.by,
    }
    .frame();
    f.to_thread(
        r.thread_id,
        Some(r.by),
        &r.recipients,
        r.members_as_of,
        &frame,
    )
    .await;
}

/// A media message's upload ended: both sides are told, sender included.
async fn push_media_settled(f: &Fanout, _record: &Record, envelope: &Envelope) {
    let Event::MessageMediaSettled(m) = &envelope.event else {
        return;
    };
    let frame = Push::MediaSettled {
        thread_id: m.thread_id,
        message_id: m.message_id,
        upload_id: m.upload_id,
        state: m.state,
    }
    .frame();
    f.to_thread(m.thread_id, None, &m.recipients, m.members_as_of, &frame)
        .await;
}

/// A file offer goes to its receiver.
async fn push_file_offer(f: &Fanout, _record: &Record, envelope: &Envelope) {
    let Event::TransferOffered(o) = &envelope.event else {
        return;
    };
    let offer = Push::FileOffer(imlog_protocol::TransferView {
        task_id: o.task_id,
        from: o.from,
        to: o.to,
        name: o.name.clone(),
        size: o.size,
        mode: o.mode,
        state: TransferState::Ready,
        reason: String::new(),
        relay_url: o.relay_url.clone(),
        upload_id: o.upload_id,
        offered_at: envelope.meta.occurred_at,
    });
    f.hub.deliver_all([o.to], &offer.frame());
}

/// A transfer's state goes to both parties; a final one also closes its
/// relay, if this gateway holds it (a cancel or an expiry elsewhere).
async fn push_transfer_state(f: &Fanout, _record: &Record, envelope: &Envelope) {
    let Event::TransferStateChanged(t) = &envelope.event else {
        return;
    };
    if t.state.is_final() {
        f.relays.close(t.task_id, t.state, &t.reason);
    }
    let push = Push::Transfer {
        task_id: t.task_id,
        state: t.state,
        reason: t.reason.clone(),
    };
    f.hub.deliver_all([t.from, t.to], &push.frame());
}

/// A new login anywhere kicks the user's older sessions held here.
async fn kick_older_sessions(f: &Fanout, record: &Record, envelope: &Envelope) {
    if let Event::SessionStarted(s) = &envelope.event {
        f.hub
            .session_started(s.user_id, s.session_id, record.offset);
    }
}

/// A logout anywhere closes that session's connections here.
async fn close_ended_session(f: &Fanout, _record: &Record, envelope: &Envelope) {
    if let Event::SessionEnded(s) = &envelope.event {
        f.hub.session_ended(s.user_id, s.session_id);
    }
}

/// The friends of `user` connected here.
async fn friends_here(f: &Fanout, user: UserId) -> Vec<UserId> {
    match f.journal.read().friend_ids(user).await {
        Ok(friends) => friends
            .into_iter()
            .filter(|&u| f.hub.holds_any([u]))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "fanout cannot read friends");
            vec![]
        }
    }
}

/// A presence change goes to the user's friends, with the user's presence
/// as a whole (online on some other gateway is still online).
async fn push_presence(f: &Fanout, record: &Record, envelope: &Envelope) {
    let Event::PresenceChanged(p) = &envelope.event else {
        return;
    };
    let friends = friends_here(f, p.user_id).await;
    if friends.is_empty() {
        return;
    }
    f.projected(Topic::Sessions, record.position()).await;
    let (online, last_seen) = match f.profiles.presence(&[p.user_id]).await {
        Ok(mut all) => all.remove(&p.user_id).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "fanout cannot read presence");
            return;
        }
    };
    let push = Push::Presence {
        user_id: p.user_id,
        online,
        last_seen,
    };
    f.hub.deliver_all(friends, &push.frame());
}

/// A profile change goes to the user's friends.
async fn push_profile(f: &Fanout, _record: &Record, envelope: &Envelope) {
    let Event::ProfileUpdated(p) = &envelope.event else {
        return;
    };
    let friends = friends_here(f, p.user_id).await;
    if friends.is_empty() {
        return;
    }
    let push = Push::ProfileUpdated {
        user_id: p.user_id,
        nick: p.nick.clone(),
        description: p.description.clone(),
        sex: p.sex,
        avatar: p.avatar.clone(),
    };
    f.hub.deliver_all(friends, &push.frame());
}

/// A friend request goes to the one asked.
async fn push_friend_request(f: &Fanout, _record: &Record, envelope: &Envelope) {
    if let Event::FriendRequested(r) = &envelope.event {
        let push = Push::FriendRequest {
            from: r.from,
            greeting: r.greeting.clone(),
        };
        f.hub.deliver(r.to, &push.frame());
    }
}

/// An acceptance goes to both (the acceptor's other devices learn it too).
async fn push_friend_accepted(f: &Fanout, _record: &Record, envelope: &Envelope) {
    if let Event::FriendAccepted(a) = &envelope.event {
        let frame = Push::FriendAccepted {
            from: a.from,
            to: a.to,
        }
        .frame();
        f.hub.deliver_all([a.from, a.to], &frame);
    }
}

/// A new private thread goes to both users, if this creation is the pair's
/// thread (of two racing creations, the projection keeps the first).
async fn push_private_thread(f: &Fanout, record: &Record, envelope: &Envelope) {
    let Event::PrivateThreadCreated(p) = &envelope.event else {
        return;
    };
    if !f.hub.holds_any([p.user_low, p.user_high]) {
        return;
    }
    let thread_id = ThreadId::from_position(record.position());
    f.projected(Topic::Threads, record.position()).await;
    match f
        .journal
        .read()
        .private_thread(p.user_low, p.user_high)
        .await
    {
        Ok(Some(kept)) if kept == thread_id => {
            let push = Push::Thread {
                thread_id,
                kind: ThreadKind::Private,
                name: None,
            };
            f.hub.deliver_all([p.user_low, p.user_high], &push.frame());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "fanout cannot read a private thread"),
    }
}

/// A group was created or members were added: the members it concerns get
/// a `thread` push once the projection applied the change.
async fn group_joined(f: &Fanout, record: &Record, envelope: &Envelope) {
    let (thread_id, name, named) = match &envelope.event {
        Event::GroupCreated(g) => (
            ThreadId::from_position(record.position()),
            Some(g.name.clone()),
            g.members
                .iter()
                .chain([&g.owner])
                .copied()
                .collect::<Vec<_>>(),
        ),
        Event::GroupMembersAdded(g) => (g.thread_id, None, g.members.clone()),
        _ => return,
    };
    f.members.changed(thread_id);
    // Nobody it names is here: nothing to wait for.
    if !f.hub.holds_any(named) {
        return;
    }
    f.projected(Topic::Threads, record.position()).await;
    let read = f.journal.read();
    let Ok(Some(change)) = read.group_change(record.offset).await else {
        return;
    };
    let mut joined = change.subjects;
    if let Event::GroupCreated(g) = &envelope.event {
        joined.push(g.owner);
    }
    if !f.hub.holds_any(joined.iter().copied()) {
        return;
    }
    let push = Push::Thread {
        thread_id,
        kind: ThreadKind::Group,
        name,
    };
    f.hub.deliver_all(joined, &push.frame());
}

async fn group_left(f: &Fanout, _record: &Record, envelope: &Envelope) {
    if let Event::GroupMemberRemoved(g) = &envelope.event {
        f.members.changed(g.thread_id);
    }
}

fn topics() -> Vec<Topic> {
    let topics: BTreeSet<Topic> = ROUTES.iter().map(|r| r.topic).collect();
    topics.into_iter().collect()
}

/// Events waiting for the lookup lane; past it, the reader waits for room.
const LOOKUPS_QUEUED: usize = 4096;

pub async fn run(fanout: Arc<Fanout>, shutdown: CancellationToken) {
    let (lookups, queued) = mpsc::channel(LOOKUPS_QUEUED);
    let lane = tokio::spawn(run_lookups(fanout.clone(), queued));
    read_and_route(&fanout, &lookups, &shutdown).await;
    // Shutting down: what is still queued would be recovered by sync.
    lane.abort();
}

/// The lookup lane: its routes one after the other, in log order.
async fn run_lookups(fanout: Arc<Fanout>, mut queued: mpsc::Receiver<(Record, Envelope, Deliver)>) {
    while let Some((record, envelope, deliver)) = queued.recv().await {
        deliver(&fanout, &record, &envelope).await;
    }
}

async fn read_and_route(
    fanout: &Fanout,
    lookups: &mpsc::Sender<(Record, Envelope, Deliver)>,
    shutdown: &CancellationToken,
) {
    let topics = topics();
    let log = fanout.journal.log().clone();
    while !shutdown.is_cancelled() {
        let mut reader = match read_from_end(log.as_ref(), &topics).await {
            Ok(reader) => reader,
            Err(e) => {
                tracing::warn!(error = %e, "fanout cannot open the log; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Members loaded before a gap in what we read may be stale.
        fanout
            .members
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = reader.next_batch(500, Duration::from_secs(1)) => batch,
            };
            match batch {
                Ok(records) => {
                    let routing = async {
                        for record in records {
                            route(fanout, lookups, record).await;
                        }
                    };
                    // A route may wait (the read model, a full lookup lane).
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = routing => {}
                    }
                }
                Err(e) => {
                    // Pushes missed while reopening are recovered by sync.
                    tracing::warn!(error = %e, "fanout read failed; reopening at the end");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                    }
                }
            }
        }
    }
}

async fn route(
    fanout: &Fanout,
    lookups: &mpsc::Sender<(Record, Envelope, Deliver)>,
    record: Record,
) {
    let Ok(envelope) = Envelope::decode(&record.payload) else {
        return;
    };
    let name = envelope.event.type_name();
    let Some(route) = ROUTES.iter().find(|r| r.event == name) else {
        return;
    };
    match route.lane {
        Lane::Inline => (route.deliver)(fanout, &record, &envelope).await,
        Lane::Lookup => {
            // Waits for room when the lane is a full queue behind.
            if lookups
                .send((record, envelope, route.deliver))
                .await
                .is_err()
            {
                tracing::error!(
                    "fanout: the lookup lane has stopped; presence and profile pushes are lost"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_a_known_event_once() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(imlog_events::TYPE_NAMES.contains(&r.event), "{}", r.event);
            assert!(seen.insert(r.event), "{} routed twice", r.event);
        }
        assert_eq!(
            topics(),
            vec![
                Topic::Users,
                Topic::Sessions,
                Topic::Threads,
                Topic::Messages,
                Topic::Social,
                Topic::Files
            ]
        );
    }
}
