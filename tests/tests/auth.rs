//! The authorisation matrix in one place, with stable codes: tokens (bad,
//! expired, kicked, logged out) on the WebSocket and over HTTP, and what a
//! non-member, a stranger or a plain member may not do. The group and recall
//! rules have their own tests in groups.rs and receipts.rs too.

use imlog::app::Roles;
use imlog_protocol::{GroupRole, MessageId, Request};
use imlog_tests::{fresh_settings, http_get, on_backends, Backend, TestApp, ThreadId};
use std::time::{Duration, Instant};

on_backends! {
    bad_expired_kicked_and_ended_tokens_are_refused_everywhere => tokens;
    outsiders_and_plain_members_get_stable_codes => outsiders;
}

/// Until `ok` holds (a kick or logout reaches the read model moments after
/// its reply), or 10 s.
async fn eventually(mut ok: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ok().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn refused(app: &TestApp, token: &str) -> bool {
    let mut c = app.client().await;
    let ws = matches!(c.auth(token).await, Err(e) if e.code() == Some("bad_token"));
    let (status, body) = http_get(app.app.addr(), "/v1/threads", Some(token)).await;
    ws && status == 401 && body["error"]["code"] == "bad_token"
}

async fn tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert!(refused(&app, "forged").await, "a made-up token");

    // Kicked by a newer login.
    let (_old, _, kicked) = app.user("alice").await;
    let mut newer = app.client().await;
    newer.login("alice", "password-123").await.expect("login");
    assert!(
        eventually(async || refused(&app, &kicked).await).await,
        "kicked"
    );

    // Ended by logout.
    newer.logout().await.expect("logout");
    let mut again = app.client().await;
    let ended = again
        .login("alice", "password-123")
        .await
        .expect("login")
        .token;
    again.logout().await.expect("logout");
    assert!(
        eventually(async || refused(&app, &ended).await).await,
        "logged out"
    );
    app.stop().await;

    // Expired: sessions that last no time at all.
    let (mut s, _dir) = fresh_settings(backend).await;
    s.gateway.session_ttl_hours = 0;
    let app = TestApp::spawn_with(s, Roles::ALL).await;
    let mut c = app.client().await;
    c.register("bob", "password-123").await.expect("register");
    let expired = c.login("bob", "password-123").await.expect("login").token;
    let (code, _, _) = c
        .wait_closed(Duration::from_secs(10))
        .await
        .expect("closed");
    assert_eq!(code, 4002, "the connection of an expired session closes");
    assert!(refused(&app, &expired).await, "expired");
    app.stop().await;
}

async fn outsiders(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, mut bob, bob_id, private) = app.alice_and_bob().await;
    let (mut eve, _, _) = app.user("eve").await;
    let message = alice
        .send_text(private, "a-1", "hello")
        .await
        .expect("send");
    let group = alice.create_group("g", &[bob_id]).await.expect("group");
    let code = |r: Result<(), imlog_client::ClientError>| r.err().and_then(|e| e.code());

    // A non-member: reads, posts, receipts, recalls, member lists.
    for thread in [private, group] {
        assert_eq!(
            eve.sync_messages(thread, MessageId::default(), 10)
                .await
                .unwrap_err()
                .code(),
            Some("forbidden")
        );
        assert_eq!(
            eve.send_text(thread, "e-1", "hi").await.unwrap_err().code(),
            Some("forbidden")
        );
        let read = Request::MarkRead {
            thread_id: thread,
            up_to: message,
        };
        assert_eq!(code(eve.command(read).await), Some("forbidden"));
        let recall = Request::Recall {
            thread_id: thread,
            message_id: message,
        };
        assert_eq!(code(eve.command(recall).await), Some("forbidden"));
        assert_eq!(
            eve.members(thread).await.unwrap_err().code(),
            Some("forbidden")
        );
    }
    // A thread that does not exist looks the same as one you are not in.
    assert_eq!(
        eve.sync_messages(ThreadId::new(999_999), MessageId::default(), 10)
            .await
            .unwrap_err()
            .code(),
        Some("forbidden")
    );
    // Someone else's message cannot be recalled.
    let recall = Request::Recall {
        thread_id: private,
        message_id: message,
    };
    assert_eq!(code(bob.command(recall).await), Some("forbidden"));
    // A plain member cannot change roles.
    let promote = Request::SetRole {
        thread_id: group,
        user_id: bob_id,
        role: GroupRole::Admin,
    };
    assert_eq!(code(bob.command(promote).await), Some("forbidden"));
    // Over HTTP, the same rule for reading.
    let (_, _, token) = app.user("mallory").await;
    let (status, body) = http_get(
        app.app.addr(),
        &format!("/v1/threads/{private}/messages"),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    app.stop().await;
}
