//! Defects an operator found by trying (the robustness issue's items 3, 7
//! and 8), each shown fixed black-box: a connection that never logs in
//! gives its slot back, a logout's token is dead when the reply comes, and
//! a stranger's retried send is refused at once.

use imlog::app::Roles;
use imlog_tests::{fresh_settings, http_get, Backend, TestApp};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_logs_in_is_closed() {
    let (mut s, _dir) = fresh_settings(Backend::Postgres).await;
    s.gateway.login_timeout_secs = 2;
    let app = TestApp::spawn_with(s, Roles::ALL).await;
    let connected = Instant::now();
    let mut idle = app.client().await;
    let (mut user, _, _) = app.user("alice").await;
    // Pings keep the heartbeat happy, but they are not a login.
    let closed = loop {
        match idle.ping().await {
            Ok(()) => {}
            Err(imlog_client::ClientError::Closed { code, .. }) => break code,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(
            connected.elapsed() < Duration::from_secs(10),
            "still open after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(closed, 4003);
    assert!(connected.elapsed() >= Duration::from_secs(2));
    // A logged-in connection is not affected.
    user.ping().await.expect("logged in, still open");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_reply_comes_once_its_token_is_dead() {
    let app = TestApp::spawn(Backend::Postgres).await;
    for round in 0..5 {
        let mut c = app.client().await;
        if round == 0 {
            c.register("alice", "password-123").await.expect("register");
        }
        let token = c.login("alice", "password-123").await.expect("login").token;
        c.logout().await.expect("logout");
        let (status, body) = http_get(app.app.addr(), "/v1/threads", Some(&token)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("bad_token")),
            "round {round}: the token still worked after the logout reply"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_retry_is_refused_at_once() {
    let (s, _dir) = fresh_settings(Backend::Postgres).await;
    let gateway_only = Roles {
        gateway: true,
        queries: true,
        projector: false,
    };
    let gw = TestApp::spawn_with(s.clone(), gateway_only).await;
    let projector = TestApp::spawn_with(
        s.clone(),
        Roles {
            gateway: false,
            queries: false,
            projector: true,
        },
    )
    .await;
    let (mut alice, _bob, _, thread) = gw.alice_and_bob().await;
    let (mut eve, _, _) = gw.user("eve").await;
    // With no projector, what is appended to the thread stays unprojected:
    // a member's retry would wait for it.
    projector.stop().await;
    alice.send_text(thread, "a-1", "hello").await.expect("send");
    let started = Instant::now();
    let err = eve
        .resend_texts(thread, &[("e-1", "let me in")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        started.elapsed()
    );
    gw.stop().await;
}
