//! Read receipts, unread counts, recall and scrollback through the real
//! protocol, on both log backends.

use imlog_protocol::{MessageId, Request};
use imlog_tests::{fresh_settings, on_backends, push_matching, Backend, Push, TestApp};
use std::time::{Duration, Instant};

on_backends! {
    read_markers_give_unread_counts_receipts_and_pushes => receipts;
    a_recalled_message_is_gone_everywhere_but_the_log => recall;
    a_new_device_lists_threads_and_scrolls_back_through_history => scrollback;
}

async fn receipts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, mut bob, bob_id, thread) = app.alice_and_bob().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice
                .send_text(thread, &format!("r-{i}"), &format!("m{i}"))
                .await
                .expect("send"),
        );
    }
    // Bob has 5 unread, the last being m4; Alice (who wrote them) none.
    let deadline = Instant::now() + Duration::from_secs(15);
    let bobs = loop {
        let page = bob.sync_threads(0, 100).await.expect("threads");
        if page.items[0].unread == 5 || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(bobs.items[0].unread, 5);
    let last = bobs.items[0].last_message.as_ref().expect("last message");
    assert_eq!((last.body.as_str(), last.message_id), ("m4", ids[4]));
    let alices = alice.sync_threads(0, 100).await.expect("threads");
    assert_eq!(alices.items[0].unread, 0);

    // Bob reads up to m2: Alice is pushed the receipt.
    bob.command(Request::MarkRead {
        thread_id: thread,
        up_to: ids[2],
    })
    .await
    .expect("mark read");
    let push = push_matching(&mut alice, |p| matches!(p, Push::Read { .. })).await;
    assert_eq!(
        push,
        Push::Read {
            thread_id: thread,
            user_id: bob_id,
            up_to: ids[2]
        }
    );
    let page = bob.sync_threads(0, 100).await.expect("threads");
    assert_eq!(page.items[0].unread, 2);
    // Markers never move back.
    bob.command(Request::MarkRead {
        thread_id: thread,
        up_to: ids[0],
    })
    .await
    .expect("mark read");
    let page = bob.sync_threads(0, 100).await.expect("threads");
    assert_eq!(page.items[0].unread, 2);
    let receipts: imlog_protocol::Page<imlog_protocol::ReceiptView> = bob
        .call(&Request::ReadReceipts {
            thread_id: thread,
            after: Default::default(),
            limit: None,
        })
        .await
        .expect("receipts");
    let markers: Vec<(i64, MessageId)> = receipts
        .items
        .iter()
        .map(|r| (r.user_id.get(), r.up_to))
        .collect();
    assert_eq!(markers, vec![(1, ids[4]), (bob_id.get(), ids[2])]);
    // Posting reads the thread up to your own message.
    bob.send_text(thread, "b-1", "reply").await.expect("send");
    let page = bob.sync_threads(0, 100).await.expect("threads");
    assert_eq!(page.items[0].unread, 0);

    let (mut eve, _, _) = app.user("eve").await;
    let err = eve
        .command(Request::MarkRead {
            thread_id: thread,
            up_to: ids[0],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    app.stop().await;
}

async fn recall(backend: Backend) {
    let (mut s, _dir) = fresh_settings(backend).await;
    s.gateway.recall_window_secs = 2;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let (mut alice, mut bob, _, thread) = app.alice_and_bob().await;
    let kept = alice
        .send_text(thread, "k-1", "keep me")
        .await
        .expect("send");
    let gone = alice
        .send_text(thread, "g-1", "oops, wrong chat")
        .await
        .expect("send");

    // Only the sender may recall.
    let err = bob
        .command(Request::Recall {
            thread_id: thread,
            message_id: gone,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let (mut eve, _, _) = app.user("eve").await;
    let err = eve
        .command(Request::Recall {
            thread_id: thread,
            message_id: gone,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let err = alice
        .command(Request::Recall {
            thread_id: thread,
            message_id: MessageId::new(gone.get() + 1024 * 1000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));

    alice
        .command(Request::Recall {
            thread_id: thread,
            message_id: gone,
        })
        .await
        .expect("recall");
    let push = push_matching(&mut bob, |p| matches!(p, Push::Recalled { .. })).await;
    assert_eq!(
        push,
        Push::Recalled {
            thread_id: thread,
            message_id: gone,
            by: imlog_protocol::UserId::new(1)
        }
    );
    // Recalling again is harmless.
    alice
        .command(Request::Recall {
            thread_id: thread,
            message_id: gone,
        })
        .await
        .expect("again");
    let deadline = Instant::now() + Duration::from_secs(15);
    let messages = loop {
        let all = bob
            .sync_all_messages(thread, MessageId::default())
            .await
            .expect("sync");
        if all.iter().any(|m| m.recalled) || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shown: Vec<(MessageId, &str, bool)> = messages
        .iter()
        .map(|m| (m.message_id, m.body.as_str(), m.recalled))
        .collect();
    assert_eq!(shown, vec![(kept, "keep me", false), (gone, "", true)]);

    // The history export has no body for it either.
    let url = app.postgres_url();
    let read = imlog_projections::ReadModel::new(
        imlog_postgres::connect_pool(&url, 1, Some("imlog")).expect("pool"),
    );
    let mut out = Vec::new();
    imlog_domain::messages::export_history(&read, &mut out)
        .await
        .expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(!text.contains("wrong chat"), "{text}");
    assert!(text.contains("\"recalled\":true"), "{text}");

    // After the window, too late.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let err = alice
        .command(Request::Recall {
            thread_id: thread,
            message_id: kept,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("too_late"));
    app.stop().await;
}

async fn scrollback(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, _bob, _, thread) = app.alice_and_bob().await;
    let texts: Vec<(String, String)> = (0..45)
        .map(|i| (format!("s-{i}"), format!("text {i}")))
        .collect();
    let items: Vec<(&str, &str)> = texts
        .iter()
        .map(|(u, b)| (u.as_str(), b.as_str()))
        .collect();
    let ids: Vec<MessageId> = alice
        .send_texts(thread, &items)
        .await
        .expect("send")
        .iter()
        .map(|a| a.message_id.expect("id"))
        .collect();

    // A new device: log in, list threads from 0, then scroll back from the
    // last message a page at a time.
    let mut device = app.client().await;
    device.login("bob", "password-123").await.expect("login");
    let deadline = Instant::now() + Duration::from_secs(15);
    let threads = loop {
        let page = device.sync_threads(0, 100).await.expect("threads");
        let done = page.items[0].last_message.as_ref().map(|m| m.message_id) == Some(ids[44]);
        if done || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(threads.items.len(), 1);
    assert_eq!(threads.items[0].unread, 45);
    let last = threads.items[0].last_message.clone().expect("last");
    let mut seen = vec![last.message_id];
    let mut before = last.message_id;
    loop {
        let page = device
            .messages_before(thread, before, 10)
            .await
            .expect("page");
        assert!(page
            .items
            .windows(2)
            .all(|w| w[0].message_id < w[1].message_id));
        let mut older: Vec<MessageId> = page.items.iter().map(|m| m.message_id).collect();
        older.extend(seen);
        seen = older;
        if !page.load_more {
            break;
        }
        before = MessageId::new(page.next_cursor);
    }
    assert_eq!(seen, ids, "scrollback pages through every message once");
    let err = device
        .messages_before(thread, MessageId::new(0), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, imlog_client::ClientError::Server(_)), "{err}");
    app.stop().await;
}
