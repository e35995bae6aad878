//! Several instances, as operators run them: two `imlog gateway` processes
//! and a separate `imlog projector` on one log and one Postgres, users
//! spread over the gateways. Friends, group fan-out, presence and kicks all
//! cross gateways; `GET /v1/gateway` sees both.

use imlog_tests::{
    fresh_settings, http_get, on_backends, push_matching, settings_env, Backend, Client, Proc,
    Push, UserId,
};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_imlog-proc");
const PUSH_WAIT: Duration = Duration::from_secs(20);

on_backends! {
    two_gateways_and_a_projector_serve_users_spread_over_them => spread;
}

async fn user(url: &str, name: &str) -> (Client, UserId) {
    let mut c = Client::connect(url).await.expect("connect");
    let id = c.register(name, "password-123").await.expect("register");
    c.login(name, "password-123").await.expect("login");
    (c, id)
}

async fn spread(backend: Backend) {
    let (s, _dir) = fresh_settings(backend).await;
    let mut env = settings_env(&s);
    // Only friends chat, as on a default deployment.
    env.retain(|(k, _)| k != "IMLOG_GATEWAY__STRANGERS_MAY_CHAT");
    let gateway_env = |name: &str| {
        let mut env = env.clone();
        env.push(("IMLOG_GATEWAY__ID".into(), name.into()));
        env.push((
            "IMLOG_GATEWAY__PUBLIC_URL".into(),
            format!("ws://{name}.example/ws"),
        ));
        env
    };
    let listen = ["--listen", "127.0.0.1:0"];
    let projector = Proc::spawn(BIN, &["projector", listen[0], listen[1]], &env).await;
    let gw1 = Proc::spawn(BIN, &["gateway", listen[0], listen[1]], &gateway_env("gw1")).await;
    let gw2 = Proc::spawn(BIN, &["gateway", listen[0], listen[1]], &gateway_env("gw2")).await;
    let (url1, url2) = (gw1.ws_url(), gw2.ws_url());

    let (mut alice, alice_id) = user(&url1, "alice").await;
    let (mut bob, bob_id) = user(&url2, "bob").await;
    let (mut carol, carol_id) = user(&url1, "carol").await;

    // Friends across gateways: the request and the acceptance's first
    // messages reach the other gateway.
    alice
        .friend_apply(bob_id, "hi from gw1", "bob")
        .await
        .expect("apply");
    push_matching(&mut bob, |p| matches!(p, Push::FriendRequest { .. })).await;
    let thread = bob
        .friend_accept(alice_id, "alice")
        .await
        .expect("accept")
        .thread_id
        .expect("thread");
    let greeting = push_matching(
        &mut alice,
        |p| matches!(p, Push::Message(m) if m.body == "hi from gw1"),
    )
    .await;
    assert!(matches!(greeting, Push::Message(m) if m.thread_id == thread));
    alice
        .send_text(thread, "x-1", "across")
        .await
        .expect("send");
    push_matching(
        &mut bob,
        |p| matches!(p, Push::Message(m) if m.body == "across"),
    )
    .await;

    // A group spanning both gateways: one send, members pushed on each.
    let group = carol
        .create_group("spread", &[alice_id, bob_id])
        .await
        .expect("group");
    bob.send_text(group, "g-1", "to everyone")
        .await
        .expect("send");
    for member in [&mut alice, &mut carol] {
        push_matching(
            member,
            |p| matches!(p, Push::Message(m) if m.body == "to everyone"),
        )
        .await;
    }

    // Both gateways are in the choice; each answers the same.
    let (_, body1) = http_get(gw1.addr, "/v1/gateway", None).await;
    let (_, body2) = http_get(gw2.addr, "/v1/gateway", None).await;
    assert_eq!(body1["data"]["ws_url"], body2["data"]["ws_url"]);
    // gw1 holds two users, gw2 one: new logins go to gw2.
    assert_eq!(body1["data"]["ws_url"], "ws://gw2.example/ws", "{body1}");

    // Presence across gateways: Bob (gw2) logs out; Alice (gw1) is told.
    bob.logout().await.expect("logout");
    let push = push_matching(&mut alice, |p| matches!(p, Push::Presence { .. })).await;
    assert!(matches!(push, Push::Presence { user_id, online: false, .. } if user_id == bob_id));

    // A login on gw2 kicks Carol's session on gw1.
    let mut carol2 = Client::connect(&url2).await.expect("connect");
    carol2.login("carol", "password-123").await.expect("login");
    let (code, _, _) = carol.wait_closed(PUSH_WAIT).await.expect("kicked");
    assert_eq!(code, 4001);
    let _ = carol_id;

    assert!(gw2.terminate().await.success());
    assert!(gw1.terminate().await.success());
    assert!(projector.terminate().await.success());
}
