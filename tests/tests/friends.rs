//! Friends end to end through the real protocol, on both log backends:
//! requests pushed and listed, acceptance opening one thread with its first
//! messages exactly once — also when two people accept or apply at once,
//! and when the process that completes acceptances is killed or re-runs.

use imlog::app::Roles;
use imlog::config::Settings;
use imlog_protocol::{FriendApplied, MessageView};
use imlog_tests::{
    fresh_settings, on_backends, push_matching, settings_env, Backend, Client, MessageId, Proc,
    Push, TestApp, ThreadId, UserId,
};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imlog-proc");
const WELCOME: &str = "We are friends now!";

on_backends! {
    a_request_is_pushed_listed_and_accepted_into_a_thread => request_and_accept;
    applying_to_each_other_or_accepting_twice_is_one_friendship => mutual_and_twice;
    acceptance_completes_once_when_its_process_is_killed_or_reruns => process_crash;
    acceptance_completes_once_when_killed_at_each_step_in_turn => killed_at_each_step;
}

/// Settings where only friends may chat (the default of `imlog serve`).
async fn friends_only(backend: Backend) -> (Settings, tempfile::TempDir) {
    let (mut s, dir) = fresh_settings(backend).await;
    s.gateway.strangers_may_chat = false;
    (s, dir)
}

/// A thread's messages once it holds at least `n` (the acceptance process
/// may still be writing them).
async fn messages_when(client: &mut Client, thread: ThreadId, n: usize) -> Vec<MessageView> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = client
            .sync_all_messages(thread, MessageId::default())
            .await
            .expect("sync");
        if all.len() >= n || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pair's thread as the friend list shows it, once it exists.
async fn thread_with(client: &mut Client, friend: UserId) -> ThreadId {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let friends = client.friends().await.expect("friends");
        let found = friends.items.iter().find(|f| f.user.user_id == friend);
        if let Some(thread) = found.and_then(|f| f.thread_id) {
            return thread;
        }
        assert!(Instant::now() < deadline, "no thread with {friend}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn request_and_accept(backend: Backend) {
    let (s, _dir) = friends_only(backend).await;
    let app = TestApp::spawn_with(s, Roles::ALL).await;
    let (mut alice, alice_id, _) = app.user("alice").await;
    let (mut bob, bob_id, _) = app.user("bob").await;

    // Strangers may not chat.
    let err = alice.open_private_thread(bob_id).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));

    let applied = alice
        .friend_apply(bob_id, "hi bob, it's alice", "bobby")
        .await
        .expect("apply");
    assert_eq!(applied, FriendApplied::Requested);
    // Bob is online: pushed at once.
    let push = push_matching(&mut bob, |p| matches!(p, Push::FriendRequest { .. })).await;
    assert_eq!(
        push,
        Push::FriendRequest {
            from: alice_id,
            greeting: "hi bob, it's alice".into()
        }
    );
    let incoming = bob.friend_requests(true).await.expect("incoming");
    assert_eq!(incoming.items.len(), 1);
    assert_eq!(incoming.items[0].from.name, "alice");
    assert_eq!(incoming.items[0].greeting, "hi bob, it's alice");
    let outgoing = alice.friend_requests(false).await.expect("outgoing");
    assert_eq!(outgoing.items[0].to.user_id, bob_id);
    let err = alice.friend_apply(alice_id, "", "").await.unwrap_err();
    assert_eq!(err.code(), Some("bad_request"));
    let err = bob
        .friend_accept(UserId::new(999_999), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));

    // Carol is offline when asked; she finds the request at her next login.
    let mut carol = app.client().await;
    let carol_id = carol.register("carol", "password-123").await.expect("reg");
    alice
        .friend_apply(carol_id, "", "")
        .await
        .expect("apply to carol");
    carol.login("carol", "password-123").await.expect("login");
    let incoming = carol.friend_requests(true).await.expect("incoming");
    assert_eq!(incoming.items[0].from.user_id, alice_id);
    carol.friend_reject(alice_id).await.expect("reject");
    assert!(carol
        .friend_requests(true)
        .await
        .expect("incoming")
        .items
        .is_empty());
    let err = carol.friend_accept(alice_id, "").await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "a rejected request is gone");

    // Bob accepts: one thread, the greeting then the system line, pushed to both.
    let befriended = bob.friend_accept(alice_id, "ally").await.expect("accept");
    assert_eq!(befriended.user_id, alice_id);
    let thread = befriended.thread_id.expect("the thread in the reply");
    for client in [&mut alice, &mut bob] {
        let accepted = push_matching(client, |p| matches!(p, Push::FriendAccepted { .. })).await;
        assert_eq!(
            accepted,
            Push::FriendAccepted {
                from: alice_id,
                to: bob_id
            }
        );
        let mut bodies = Vec::new();
        while bodies.len() < 2 {
            if let Push::Message(m) = push_matching(client, |p| matches!(p, Push::Message(_))).await
            {
                assert_eq!(m.thread_id, thread);
                bodies.push(m.body);
            }
        }
        assert_eq!(bodies, vec!["hi bob, it's alice", WELCOME]);
    }
    let messages = messages_when(&mut alice, thread, 2).await;
    let summary: Vec<(UserId, &str, Option<i64>)> = messages
        .iter()
        .map(|m| (m.sender_id, m.body.as_str(), m.seq))
        .collect();
    assert_eq!(
        summary,
        vec![
            (alice_id, "hi bob, it's alice", Some(1)),
            (bob_id, WELCOME, Some(2))
        ]
    );

    // Each side's list, with its own alias and the thread.
    let friends = alice.friends().await.expect("friends");
    assert_eq!(friends.items.len(), 1);
    assert_eq!(friends.items[0].user.user_id, bob_id);
    assert_eq!(friends.items[0].alias, "bobby");
    assert_eq!(friends.items[0].thread_id, Some(thread));
    let friends = bob.friends().await.expect("friends");
    assert_eq!(friends.items[0].alias, "ally");
    assert!(bob
        .friend_requests(true)
        .await
        .expect("in")
        .items
        .is_empty());

    // Friends chat; asking again is a conflict; accepting again is harmless.
    assert_eq!(
        alice.open_private_thread(bob_id).await.expect("open"),
        thread
    );
    alice
        .send_text(thread, "x-1", "hello friend")
        .await
        .expect("send");
    let err = alice.friend_apply(bob_id, "", "").await.unwrap_err();
    assert_eq!(err.code(), Some("conflict"));
    let again = bob.friend_accept(alice_id, "ally").await.expect("again");
    assert_eq!(again.thread_id, Some(thread));
    assert_eq!(messages_when(&mut bob, thread, 3).await.len(), 3);
    app.stop().await;
}

async fn mutual_and_twice(backend: Backend) {
    let (s, _dir) = friends_only(backend).await;
    let a = TestApp::spawn_with(s, Roles::ALL).await;
    let b = a.second_gateway().await;
    let (mut alice, alice_id, _) = a.user("alice").await;
    let (mut bob, bob_id, _) = a.user("bob").await;

    // Bob asks Alice while she has asked him: that is an acceptance.
    alice
        .friend_apply(bob_id, "alice here", "bob")
        .await
        .expect("apply");
    let applied = bob
        .friend_apply(alice_id, "bob here", "alice")
        .await
        .expect("apply back");
    let FriendApplied::Accepted { thread_id } = applied else {
        panic!("expected an acceptance, got {applied:?}")
    };
    let thread = thread_id.expect("thread");
    let messages = messages_when(&mut alice, thread, 2).await;
    let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["alice here", WELCOME]);

    // Dave and Erin, on different gateways, ask each other at the same
    // moment, then both accept at the same moment: one friendship, one
    // thread, one greeting and one system line.
    let (mut dave, dave_id, _) = a.user("dave").await;
    let (mut erin, erin_id, _) = b.user("erin").await;
    let (d, e) = tokio::join!(
        dave.friend_apply(erin_id, "dave here", ""),
        erin.friend_apply(dave_id, "erin here", "")
    );
    d.expect("dave applies");
    e.expect("erin applies");
    let (d, e) = tokio::join!(
        dave.friend_accept(erin_id, "erin"),
        erin.friend_accept(dave_id, "dave")
    );
    // Whoever comes second finds them friends already: harmless.
    d.expect("dave accepts");
    e.expect("erin accepts");
    let thread = thread_with(&mut dave, erin_id).await;
    assert_eq!(thread_with(&mut erin, dave_id).await, thread);
    let threads = dave.sync_threads(0, 100).await.expect("threads");
    assert_eq!(threads.items.len(), 1, "one thread for the pair");
    let messages = messages_when(&mut erin, thread, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = messages_when(&mut erin, thread, 2).await;
    assert_eq!(
        settled.len(),
        2,
        "greeting and system line once: {settled:?}"
    );
    assert_eq!(messages.last().map(|m| m.body.as_str()), Some(WELCOME));
    assert_eq!(dave.friends().await.expect("friends").items.len(), 1);
    assert_eq!(erin.friends().await.expect("friends").items.len(), 1);
    b.stop().await;
    a.stop().await;
}

/// The acceptance process runs in a separate `imlog projector` that is
/// killed with -9 while pairs accept; then, with every step already
/// appended, its offsets are reset so that it reacts to every acceptance a
/// second time (what a crash between its appends and its offset commit
/// does). Every pair still has one thread with exactly its two messages.
async fn process_crash(backend: Backend) {
    const PAIRS: usize = 8;
    let (s, _dir) = friends_only(backend).await;
    let url = s.postgres.url.clone().expect("url").expose().to_owned();
    let gateway_only = Roles {
        gateway: true,
        queries: true,
        projector: false,
    };
    let gw = TestApp::spawn_with(s.clone(), gateway_only).await;
    let env = settings_env(&s);
    let args = ["projector", "--listen", "127.0.0.1:0"];
    let projector = Proc::spawn(BIN, &args, &env).await;

    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let (mut asker, asker_id, _) = gw.user(&format!("asker{i}")).await;
        let (answerer, answerer_id, _) = gw.user(&format!("answerer{i}")).await;
        asker
            .friend_apply(answerer_id, &format!("hello {i}"), "")
            .await
            .expect("apply");
        pairs.push((asker, asker_id, answerer, answerer_id));
    }
    // Accept all at once and kill the projector while it works on them;
    // a new one starts at once (the replies wait for the projections).
    let accepting = pairs
        .iter_mut()
        .map(|(_, asker_id, answerer, _)| answerer.friend_accept(*asker_id, ""));
    let kill_and_restart = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        projector.kill9().await;
        Proc::spawn(BIN, &args, &env).await
    };
    let (results, projector) = tokio::join!(futures::future::join_all(accepting), kill_and_restart);
    for result in results {
        // The reply may come before the thread exists (then thread_id is
        // absent), never an error.
        result.expect("accepted");
    }
    let mut threads = Vec::new();
    for (asker, _, _, answerer_id) in pairs.iter_mut() {
        let thread = thread_with(asker, *answerer_id).await;
        assert_eq!(messages_when(asker, thread, 2).await.len(), 2);
        threads.push(thread);
    }

    // Every step is now appended; make the process react to all of it again.
    let _ = projector.terminate().await;
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let reset = db
        .execute(
            "UPDATE imlog_process.process_offsets SET next_offset = 0",
            &[],
        )
        .await
        .expect("reset");
    assert!(reset > 0, "the process stored offsets");
    let projector = Proc::spawn(BIN, &args, &env).await;
    // Wait until it has re-read the whole social topic.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM imlog_process.process_offsets",
                &[],
            )
            .await
            .expect("offsets");
        if row.get::<_, i64>(0) >= 2 * PAIRS as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the process did not re-run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, ((asker, asker_id, answerer, answerer_id), thread)) in
        pairs.iter_mut().zip(&threads).enumerate()
    {
        // A message after the re-issued steps: once it is projected, so is
        // everything before it in the thread's partition.
        asker
            .send_text(*thread, "after", "after")
            .await
            .expect("send");
        let messages = messages_when(asker, *thread, 3).await;
        let summary: Vec<(UserId, String, Option<i64>)> = messages
            .iter()
            .map(|m| (m.sender_id, m.body.clone(), m.seq))
            .collect();
        assert_eq!(
            summary,
            vec![
                (*asker_id, format!("hello {i}"), Some(1)),
                (*answerer_id, WELCOME.to_owned(), Some(2)),
                (*asker_id, "after".to_owned(), Some(3))
            ],
            "pair {i}"
        );
        let threads = answerer.sync_threads(0, 100).await.expect("threads");
        assert_eq!(threads.items.len(), 1, "pair {i} has one thread");
    }
    assert!(projector.terminate().await.success());
    gw.stop().await;
}

/// The process that completes acceptances dies (aborts at a failpoint) right
/// after each of its steps in turn; a fresh projector finishes the job:
/// exactly one friendship both ways, one thread, one greeting, one system
/// line.
async fn killed_at_each_step(backend: Backend) {
    let (s, _dir) = friends_only(backend).await;
    let gateway_only = Roles {
        gateway: true,
        queries: true,
        projector: false,
    };
    let gw = TestApp::spawn_with(s.clone(), gateway_only).await;
    let env = settings_env(&s);
    let args = ["projector", "--listen", "127.0.0.1:0"];
    for (i, step) in ["thread", "greeting", "welcome"].into_iter().enumerate() {
        let mut failing = env.clone();
        failing.push((
            "IMLOG_FAILPOINT".into(),
            format!("friend_acceptance.{step}"),
        ));
        let doomed = Proc::spawn(BIN, &args, &failing).await;
        let (mut asker, asker_id, _) = gw.user(&format!("asker{i}")).await;
        let (mut answerer, answerer_id, _) = gw.user(&format!("answerer{i}")).await;
        asker
            .friend_apply(answerer_id, &format!("hello {i}"), "")
            .await
            .expect("apply");
        // The acceptance is durable when acknowledged; its reply may wait
        // in vain for the dying projector (projection_lagging), never more.
        if let Err(e) = answerer.friend_accept(asker_id, "").await {
            assert_eq!(e.code(), Some("projection_lagging"), "{e}");
        }
        let status = doomed.wait_exit(Duration::from_secs(30)).await;
        assert!(!status.success(), "it died at the {step} step");
        let projector = Proc::spawn(BIN, &args, &env).await;
        let thread = thread_with(&mut asker, answerer_id).await;
        messages_when(&mut asker, thread, 2).await;
        // A later message: once projected, so is all before it.
        asker
            .send_text(thread, "after", "after")
            .await
            .expect("send");
        let messages = messages_when(&mut asker, thread, 3).await;
        let summary: Vec<(UserId, String)> = messages
            .iter()
            .map(|m| (m.sender_id, m.body.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (asker_id, format!("hello {i}")),
                (answerer_id, WELCOME.to_owned()),
                (asker_id, "after".to_owned())
            ],
            "killed after the {step} step"
        );
        let threads = answerer.sync_threads(0, 100).await.expect("threads");
        assert_eq!(threads.items.len(), 1, "one thread");
        assert_eq!(answerer.friends().await.expect("friends").items.len(), 1);
        assert_eq!(asker.friends().await.expect("friends").items.len(), 1);
        assert!(projector.terminate().await.success());
    }
    gw.stop().await;
}
