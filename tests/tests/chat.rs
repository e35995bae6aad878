//! The chat path end to end through the real WebSocket protocol, on both log
//! backends with a real Postgres.

use imlog_protocol::ErrorCode;
use imlog_tests::{on_backends, Backend, MessageId, Push, TestApp, UserId};
use serde_json::json;
use std::time::Duration;

const PUSH_WAIT: Duration = Duration::from_secs(15);
const START: MessageId = MessageId::new(0);

on_backends! {
    thin_path_register_login_thread_send_push_sync => thin_path;
    bad_input_gets_stable_codes_and_connection_survives => bad_input;
    a_retried_unique_id_is_one_message => retried_unique_id;
    a_new_login_on_another_instance_kicks_the_old_session => relogin_kicks;
    racing_private_thread_creation_yields_one_thread => racing_thread_creation;
    sync_pages_by_cursor_without_skipping => cursor_paging;
    a_retry_before_projection_gets_the_first_id => retry_before_projection;
    a_retry_racing_a_late_first_copy_is_answered_with_the_kept_ids => late_first_copy;
}

async fn thin_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, alice_id, _) = app.user("alice").await;
    let (mut bob, bob_id, _) = app.user("bob").await;
    assert_ne!(alice_id, bob_id);

    let thread = alice
        .open_private_thread(bob_id)
        .await
        .expect("open thread");
    let message_id = alice
        .send_text(thread, "u-1", "hello, bob")
        .await
        .expect("send");
    assert!(message_id.get() > 0);

    // Bob is online: told of the new thread and pushed the message with the
    // acknowledged id (they come from different topics: in either order).
    let mut thread_pushed = false;
    let mut message = None;
    while !thread_pushed || message.is_none() {
        let push = bob
            .next_push(PUSH_WAIT)
            .await
            .expect("push")
            .expect("a push arrived");
        match push {
            Push::Thread {
                thread_id,
                kind: imlog_protocol::ThreadKind::Private,
                name: None,
            } if thread_id == thread => thread_pushed = true,
            Push::Message(m) => message = Some(m),
            other => panic!("unexpected push {other:?}"),
        }
    }
    let pushed = message.expect("a message push");
    assert_eq!(pushed.message_id, message_id);
    assert_eq!(pushed.body, "hello, bob");
    assert_eq!(pushed.sender_id, alice_id);
    assert_eq!(pushed.thread_id, thread);

    // Both sync the history by cursor; the sender sees its write at once.
    for client in [&mut alice, &mut bob] {
        let page = client.sync_messages(thread, START, 20).await.expect("sync");
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].message_id, message_id);
        assert_eq!(page.items[0].seq, Some(1));
        assert!(!page.load_more);
        assert_eq!(page.next_cursor, message_id.get());
        let after = client
            .sync_messages(thread, message_id, 20)
            .await
            .expect("sync");
        assert!(after.items.is_empty());
    }

    // Bob's thread list (a new device starts from 0) has the thread with Alice.
    let threads = bob.sync_threads(0, 100).await.expect("threads");
    assert_eq!(threads.items.len(), 1);
    assert_eq!(threads.items[0].thread_id, thread);
    assert_eq!(
        threads.items[0].peer.as_ref().map(|p| p.name.as_str()),
        Some("alice")
    );

    // Opening the thread again finds the same one.
    assert_eq!(
        bob.open_private_thread(alice_id).await.expect("reopen"),
        thread
    );
    app.stop().await;
}

async fn bad_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut c = app.client().await;
    let code = |reply: &serde_json::Value| reply["error"]["code"].as_str().unwrap_or("").to_owned();

    let r = c.request_raw("this is not json").await.expect("reply");
    assert_eq!(code(&r), "bad_json");
    let r = c
        .request_raw(r#"{"req":1,"op":"teleport"}"#)
        .await
        .expect("reply");
    assert_eq!(code(&r), "unknown_op");
    assert_eq!(r["req"], json!(1));
    let r = c.request_raw(r#"{"req":2}"#).await.expect("reply");
    assert_eq!(code(&r), "bad_request");
    let r = c
        .request_raw(r#"{"req":3,"op":"register","name":"carol"}"#)
        .await
        .expect("reply");
    assert_eq!(code(&r), "bad_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("password"));
    let r = c
        .request_raw(r#"{"req":4,"op":"register","name":42,"password":"12345678"}"#)
        .await
        .expect("reply");
    assert_eq!(code(&r), "bad_request");
    let r = c
        .request_raw(format!(
            r#"{{"req":5,"op":"ping","pad":"{}"}}"#,
            "x".repeat(100_000)
        ))
        .await
        .expect("reply");
    assert_eq!(code(&r), "payload_too_large");
    let r = c.request_binary(vec![0, 1, 2, 3]).await.expect("reply");
    assert_eq!(code(&r), "bad_request");
    let r = c
        .request_raw(r#"{"req":6,"op":"sync_threads"}"#)
        .await
        .expect("reply");
    assert_eq!(code(&r), "unauthenticated");
    let r = c
        .request_raw(r#"{"req":7,"op":"auth","token":"forged"}"#)
        .await
        .expect("reply");
    assert_eq!(code(&r), "bad_token");
    let r = c
        .request_raw(r#"{"req":8,"op":"login","name":"nobody","password":"whatever1"}"#)
        .await
        .expect("reply");
    assert_eq!(code(&r), "bad_credentials");
    // After all that, the connection still works.
    c.ping().await.expect("still usable");

    let (mut alice, _, _) = app.user("alice").await;
    let (_bob, bob_id, _) = app.user("bob").await;
    let (mut eve, _, _) = app.user("eve").await;
    let thread = alice.open_private_thread(bob_id).await.expect("thread");
    // Not a member: refused, nothing written.
    let err = eve.send_text(thread, "e-1", "let me in").await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let err = eve.sync_messages(thread, START, 10).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let err = alice
        .open_private_thread(UserId::new(999_999))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));
    // One item too long: that item refused, the other sent.
    let long = "y".repeat(1025);
    let items = alice
        .send_texts(thread, &[("ok-1", "fine"), ("long-1", &long)])
        .await
        .expect("send");
    assert!(items[0].message_id.is_some());
    assert_eq!(
        items[1].error.as_ref().map(|e| e.code),
        Some(ErrorCode::TooLong)
    );
    let page = alice.sync_messages(thread, START, 10).await.expect("sync");
    assert_eq!(page.items.len(), 1, "only the valid item was posted");
    // Registering a taken name.
    let err = app
        .client()
        .await
        .register("ALICE", "password-123")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("name_taken"));
    app.stop().await;
}

async fn retried_unique_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, _, _) = app.user("alice").await;
    let (_bob, bob_id, _) = app.user("bob").await;
    let thread = alice.open_private_thread(bob_id).await.expect("thread");
    let first = alice.send_text(thread, "same", "once").await.expect("send");
    // The client lost the reply and sends again after syncing.
    alice.sync_messages(thread, START, 10).await.expect("sync");
    let again = alice
        .send_text(thread, "same", "once")
        .await
        .expect("resend");
    assert_eq!(first, again);
    let page = alice.sync_messages(thread, START, 10).await.expect("sync");
    assert_eq!(page.items.len(), 1);
    // A unique_id repeated inside one batch is one message too.
    let items = alice
        .send_texts(thread, &[("twice", "a"), ("twice", "a"), ("other", "b")])
        .await
        .expect("send");
    assert_eq!(items[0].message_id, items[1].message_id);
    assert_ne!(items[0].message_id, items[2].message_id);
    assert_eq!(
        alice
            .sync_all_messages(thread, START)
            .await
            .expect("sync")
            .len(),
        3
    );
    app.stop().await;
}

async fn relogin_kicks(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    // A second gateway instance over the same log and database.
    let b = a.second_gateway().await;
    let (mut first, _, old_token) = a.user("alice").await;
    let mut second = b.client().await;
    second
        .login("alice", "password-123")
        .await
        .expect("second login");

    let (code, _reason, pushes) = first
        .wait_closed(PUSH_WAIT)
        .await
        .expect("the old session is closed");
    assert_eq!(code, 4001);
    assert!(
        pushes.iter().any(|p| matches!(p, Push::Kicked { .. })),
        "told why: {pushes:?}"
    );
    // The old token is dead, the new session works.
    second.ping().await.expect("new session alive");
    // The old token stops working once the projection has applied the new
    // login (moments after the kick, which travels by the log tail).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        let mut third = a.client().await;
        match third.auth(&old_token).await {
            Err(e) if e.code() == Some("bad_token") => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused);
    b.stop().await;
    a.stop().await;
}

async fn racing_thread_creation(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = a.second_gateway().await;
    let (mut alice, alice_id, _) = a.user("alice").await;
    let mut bob = b.client().await;
    let bob_id = bob.register("bob", "password-123").await.expect("register");
    bob.login("bob", "password-123").await.expect("login");
    let (ta, tb) = tokio::join!(
        alice.open_private_thread(bob_id),
        bob.open_private_thread(alice_id)
    );
    assert_eq!(
        ta.expect("alice opens"),
        tb.expect("bob opens"),
        "one thread per pair"
    );
    let threads = alice.sync_threads(0, 100).await.expect("threads");
    assert_eq!(threads.items.len(), 1);
    b.stop().await;
    a.stop().await;
}

async fn cursor_paging(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, _, _) = app.user("alice").await;
    let (mut bob, bob_id, _) = app.user("bob").await;
    let thread = alice.open_private_thread(bob_id).await.expect("thread");
    let texts: Vec<(String, String)> = (0..45)
        .map(|i| (format!("m-{i}"), format!("text {i}")))
        .collect();
    let items: Vec<(&str, &str)> = texts
        .iter()
        .map(|(u, b)| (u.as_str(), b.as_str()))
        .collect();
    let answers = alice.send_texts(thread, &items).await.expect("send batch");
    let ids: Vec<MessageId> = answers.iter().map(|a| a.message_id.expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase in batch order"
    );

    // Bob pages 10 at a time; wait until the projection has them all.
    let mut all = Vec::new();
    for _ in 0..100 {
        all = bob.sync_all_messages(thread, START).await.expect("sync");
        if all.len() == 45 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut since = START;
    let mut paged = Vec::new();
    loop {
        let page = bob.sync_messages(thread, since, 10).await.expect("page");
        paged.extend(page.items.iter().map(|m| m.message_id));
        since = MessageId::new(page.next_cursor);
        if !page.load_more {
            break;
        }
    }
    assert_eq!(paged, ids);
    let seqs: Vec<i64> = all.iter().filter_map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=45).collect::<Vec<_>>(), "gapless per-thread seq");
    app.stop().await;
}

/// A frame beyond the transport's hard limit ends the connection (with a
/// 1009 close frame when the peer can still read it: a client still writing
/// the rest of its frame may see a reset instead); the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_hard_limit_ends_only_that_connection() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut c = app.client().await;
    let huge = format!(
        r#"{{"req":1,"op":"ping","pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    match c.request_raw(huge).await {
        Err(imlog_client::ClientError::Closed { code, .. }) => assert_eq!(code, 1009),
        Err(imlog_client::ClientError::Transport(_)) => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
    assert!(c.ping().await.is_err(), "that connection is gone");
    let mut other = app.client().await;
    other.ping().await.expect("the server is fine");
    app.stop().await;
}

/// Whatever a client sends, parsing answers; it never panics.
#[test]
fn arbitrary_frames_never_panic_the_parser() {
    use imlog_protocol::parse;
    let valid = [
        r#"{"req":1,"op":"send_messages","thread_id":5,"items":[{"unique_id":"a","body":"hi"}]}"#,
        r#"{"req":"x","op":"register","name":"alice","password":"12345678"}"#,
        r#"{"req":2,"op":"sync_messages","thread_id":1,"since":0,"limit":5}"#,
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000 {
        let mut bytes = valid[round % valid.len()].as_bytes().to_vec();
        for _ in 0..(next() % 6) {
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b"{}[]\":,0-e\\"[(next() % 11) as usize]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse(&text);
    }
}

async fn retry_before_projection(backend: Backend) {
    let (s, _dir) = imlog_tests::fresh_settings(backend).await;
    let only = |gateway: bool| imlog::app::Roles {
        gateway,
        queries: gateway,
        projector: !gateway,
    };
    let gw = TestApp::spawn_with(s.clone(), only(true)).await;
    let projector = TestApp::spawn_with(s.clone(), only(false)).await;
    let (mut alice, _bob, _, thread) = gw.alice_and_bob().await;
    alice
        .sync_messages(thread, START, 1)
        .await
        .expect("projected so far");

    // The first send is appended but, with no projector running, not
    // projected; it is answered all the same, on either log (an append is
    // in the log once: nothing to wait for). Its reply is "lost" and the
    // client resends.
    projector.stop().await;
    let first = alice
        .send_text(thread, "lost-reply", "hello")
        .await
        .expect("a send is answered without a projector");
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        TestApp::spawn_with(s, only(false)).await
    });
    let again = alice
        .resend_texts(thread, &[("lost-reply", "hello")])
        .await
        .expect("resend");
    assert_eq!(
        again[0].message_id,
        Some(first),
        "the retry is answered with the first id"
    );
    let synced = alice.sync_all_messages(thread, START).await.expect("sync");
    assert_eq!(
        synced
            .iter()
            .find(|m| m.unique_id == "lost-reply")
            .map(|m| m.message_id),
        again[0].message_id,
        "the retry's id is the one sync shows"
    );
    let projector = restart.await.expect("projector");
    assert_eq!(
        alice
            .sync_all_messages(thread, START)
            .await
            .expect("sync")
            .len(),
        1
    );
    projector.stop().await;
    gw.stop().await;
}

/// The robustness issue's item 12: a gateway dies with a batch's append in
/// flight, the client resends it with `retry` on another gateway, and the
/// broker takes the first copy only after the retry looked for it. The
/// projection keeps the first copy; the retry's reply must name it too.
/// Staged: the retry waits just before appending (a pausepoint) while the
/// first copy reaches the log.
async fn late_first_copy(backend: Backend) {
    use imlog_events::{messages_key, Envelope, EventMeta, MessageKind, MessagePosted, Topic};
    let app = TestApp::spawn(backend).await;
    let (mut alice, alice_id, token) = app.user("alice").await;
    let (_bob, bob_id, _) = app.user("bob").await;
    let thread = alice.open_private_thread(bob_id).await.expect("thread");

    let log = imlog_tests::open_log(
        backend,
        app.app.postgres_url(),
        &app.settings.log.topic_prefix,
    )
    .await;
    // A second gateway whose sends wait 3 s just before appending.
    let mut env = imlog_tests::settings_env(&app.settings);
    env.push((
        "IMLOG_PAUSEPOINT".into(),
        "messages.before_append:3000".into(),
    ));
    let gateway = imlog_tests::Proc::spawn(
        env!("CARGO_BIN_EXE_imlog-proc"),
        &["gateway", "--listen", "127.0.0.1:0"],
        &env,
    )
    .await;
    let mut retrying = imlog_tests::Client::connect(&gateway.ws_url())
        .await
        .expect("connect");
    retrying.auth(&token).await.expect("auth");
    let items: Vec<(String, String)> = (0..5)
        .map(|i| (format!("late-{i}"), format!("body {i}")))
        .collect();
    let resend = {
        let items = items.clone();
        tokio::spawn(async move {
            let refs: Vec<(&str, &str)> = items
                .iter()
                .map(|(u, b)| (u.as_str(), b.as_str()))
                .collect();
            retrying.resend_texts(thread, &refs).await
        })
    };

    // While the retry waits, the first copy lands: as the dead gateway's
    // in-flight append would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = Vec::new();
    for (unique_id, body) in &items {
        let envelope = Envelope::new(
            EventMeta::new(Some(alice_id), uuid::Uuid::now_v7()),
            MessagePosted {
                thread_id: thread,
                sender_id: alice_id,
                unique_id: unique_id.clone(),
                kind: MessageKind::Text,
                body: body.clone(),
                recipients: vec![bob_id],
                members_as_of: None,
                media: None,
            },
        );
        let position = log
            .append(Topic::Messages, &messages_key(thread), envelope.encode())
            .await
            .expect("append the first copy");
        first.push(MessageId::from_position(position));
    }

    let reply = resend.await.expect("task").expect("resend");
    let acked: Vec<MessageId> = reply
        .iter()
        .map(|item| item.message_id.expect("an id"))
        .collect();
    let synced = alice.sync_all_messages(thread, START).await.expect("sync");
    let ours: Vec<(String, MessageId)> = synced
        .iter()
        .filter(|m| m.unique_id.starts_with("late-"))
        .map(|m| (m.unique_id.clone(), m.message_id))
        .collect();
    let expected: Vec<(String, MessageId)> = items
        .iter()
        .map(|(u, _)| u.clone())
        .zip(acked.iter().copied())
        .collect();
    assert_eq!(ours, expected, "each once, under the acked id");
    // The race happened as staged: the first copy landed first and is the
    // one kept (else this test showed nothing).
    assert_eq!(acked, first, "the read model kept the first copy");
    assert!(gateway.terminate().await.success());
    app.stop().await;
}
