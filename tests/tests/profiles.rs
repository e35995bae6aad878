//! Profiles, user search, presence and the least-loaded gateway, through
//! the real protocol on both log backends; a gateway killed with -9 drops
//! out of the gateway choice within seconds.

use imlog::app::Roles;
use imlog_protocol::{Description, Nick, ProfileView, Request, SearchQuery, Sex};
use imlog_tests::{
    fresh_settings, http_get, on_backends, settings_env, Backend, Client, Proc, Push, TestApp,
    UserId,
};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imlog-proc");
const PUSH_WAIT: Duration = Duration::from_secs(15);

on_backends! {
    profiles_are_updated_read_searched_and_pushed_to_friends => profiles;
    friends_see_presence_across_login_logout_timeout_and_kick => presence;
    new_logins_go_to_the_least_loaded_live_gateway => least_loaded;
    a_killed_gateways_users_go_offline_for_their_friends => killed_gateway_presence;
}

/// Waits for a push `want` accepts, pinging meanwhile so that a short
/// heartbeat timeout does not close this client.
async fn push_pinging(client: &mut Client, want: impl Fn(&Push) -> bool) -> Push {
    let deadline = Instant::now() + PUSH_WAIT + PUSH_WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no matching push within {PUSH_WAIT:?}"
        );
        if let Some(p) = client
            .next_push(Duration::from_millis(300))
            .await
            .expect("push")
        {
            if want(&p) {
                return p;
            }
        }
        client.ping().await.expect("ping");
    }
}

async fn profile(client: &mut Client, user: UserId) -> ProfileView {
    client
        .call(&Request::Profile { user_id: user })
        .await
        .expect("profile")
}

/// Alice and Bob as friends (each with a connection).
async fn friends(app: &TestApp) -> (Client, UserId, Client, UserId) {
    let (mut alice, alice_id, _) = app.user("alice").await;
    let (mut bob, bob_id, _) = app.user("bob").await;
    alice.friend_apply(bob_id, "", "").await.expect("apply");
    bob.friend_accept(alice_id, "").await.expect("accept");
    (alice, alice_id, bob, bob_id)
}

async fn profiles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, alice_id, mut bob, _) = friends(&app).await;
    let (mut alan, alan_id, _) = app.user("alan").await;

    let updated: ProfileView = alice
        .call(&Request::UpdateProfile {
            nick: Some(Nick::parse("Ali").unwrap()),
            description: Some(Description::parse("hikes on sundays").unwrap()),
            sex: Some(Sex::Female),
            avatar: None,
        })
        .await
        .expect("update");
    assert_eq!(updated.nick, "Ali");
    assert_eq!(updated.avatar, None, "avatars: tests/files.rs");
    // Her friend is pushed the new profile; a stranger is not.
    let push = push_pinging(&mut bob, |p| matches!(p, Push::ProfileUpdated { .. })).await;
    let Push::ProfileUpdated { user_id, nick, .. } = push else {
        unreachable!()
    };
    assert_eq!((user_id, nick.as_str()), (alice_id, "Ali"));
    assert!(alan
        .next_push(Duration::from_millis(500))
        .await
        .expect("push")
        .is_none_or(|p| !matches!(p, Push::ProfileUpdated { .. })));

    // Anyone reads it; fields left out keep their value.
    let seen = profile(&mut alan, alice_id).await;
    assert_eq!(
        (
            seen.name.as_str(),
            seen.nick.as_str(),
            seen.sex,
            seen.online
        ),
        ("alice", "Ali", Sex::Female, true)
    );
    let again: ProfileView = alice
        .call(&Request::UpdateProfile {
            nick: None,
            description: Some(Description::parse("").unwrap()),
            sex: None,
            avatar: Some(imlog_protocol::AvatarRef::parse("").unwrap()),
        })
        .await
        .expect("update");
    assert_eq!(
        (
            again.nick.as_str(),
            again.description.as_str(),
            again.avatar
        ),
        ("Ali", "", None)
    );

    // Search by name prefix (paged) and by exact id.
    let search = |query: &str, limit| Request::SearchUsers {
        query: SearchQuery::parse(query).unwrap(),
        after: UserId::default(),
        limit: Some(imlog_protocol::PageSize::try_from(limit).unwrap()),
    };
    let page: imlog_protocol::Page<ProfileView> =
        alan.call(&search("AL", 1)).await.expect("search");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].user_id, alice_id);
    assert!(page.load_more);
    let page: imlog_protocol::Page<ProfileView> =
        alan.call(&search("al", 10)).await.expect("search");
    let names: Vec<&str> = page.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["alice", "alan"]);
    let page: imlog_protocol::Page<ProfileView> = alan
        .call(&search(&alan_id.get().to_string(), 10))
        .await
        .expect("search");
    assert_eq!(page.items[0].name, "alan");
    let page: imlog_protocol::Page<ProfileView> =
        alan.call(&search("zz", 10)).await.expect("search");
    assert!(page.items.is_empty());

    let err = alan
        .call::<ProfileView>(&Request::Profile {
            user_id: UserId::new(999_999),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));
    let r = alan
        .request_raw(r#"{"req":1,"op":"search_users","query":""}"#)
        .await
        .expect("reply");
    assert_eq!(r["error"]["code"], "bad_request");
    let r = alan
        .request_raw(r#"{"req":2,"op":"update_profile","avatar":"../../etc/passwd"}"#)
        .await
        .expect("reply");
    assert_eq!(r["error"]["code"], "bad_request");
    app.stop().await;
}

async fn presence(backend: Backend) {
    let (mut s, _dir) = fresh_settings(backend).await;
    s.gateway.heartbeat_timeout_secs = 2;
    let app = TestApp::spawn_with(s, Roles::ALL).await;
    let (alice, alice_id, mut bob, _) = friends(&app).await;
    let offline = |p: &Push| matches!(p, Push::Presence { online: false, .. });
    let online = |p: &Push| matches!(p, Push::Presence { online: true, .. });

    // Logout: offline, with a last-seen time.
    let mut alice = alice;
    alice.logout().await.expect("logout");
    let push = push_pinging(&mut bob, offline).await;
    let Push::Presence {
        user_id, last_seen, ..
    } = push
    else {
        unreachable!()
    };
    assert_eq!(user_id, alice_id);
    assert!(last_seen.is_some());
    assert!(!profile(&mut bob, alice_id).await.online);

    // Login: online.
    let mut alice = app.client().await;
    alice.login("alice", "password-123").await.expect("login");
    push_pinging(&mut bob, online).await;
    assert!(profile(&mut bob, alice_id).await.online);

    // A new login kicks the old connection, but Alice stays online.
    let mut phone = app.client().await;
    phone.login("alice", "password-123").await.expect("login");
    let (code, _, _) = alice.wait_closed(PUSH_WAIT).await.expect("kicked");
    assert_eq!(code, 4001);
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.ping().await.expect("ping");
    assert!(profile(&mut bob, alice_id).await.online);

    // Silence past the heartbeat timeout: offline.
    let push = push_pinging(&mut bob, offline).await;
    assert!(matches!(push, Push::Presence { user_id, .. } if user_id == alice_id));
    drop(phone);
    app.stop().await;
}

async fn least_loaded(backend: Backend) {
    let (mut s, _dir) = fresh_settings(backend).await;
    s.gateway.public_url = Some("ws://gateway-a.example/ws".into());
    let a = TestApp::spawn_with(s.clone(), Roles::ALL).await;
    let gateway = |at| async move {
        let (status, body) = http_get(at, "/v1/gateway", None).await;
        assert_eq!(status, 200, "{body}");
        body["data"]["ws_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let a_addr = a.app.addr();
    // Its first heartbeat follows its start.
    let started = Instant::now();
    while http_get(a_addr, "/v1/gateway", None).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gateway(a_addr).await, "ws://gateway-a.example/ws");

    // A second gateway, a process of its own, with no connections: new
    // logins go there.
    let mut env = settings_env(&s);
    env.push((
        "IMLOG_GATEWAY__PUBLIC_URL".into(),
        "ws://gateway-b.example/ws".into(),
    ));
    let b = Proc::spawn(BIN, &["gateway", "--listen", "127.0.0.1:0"], &env).await;
    let (_held, _, _) = a.user("holder").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway(a_addr).await != "ws://gateway-b.example/ws" {
        assert!(
            Instant::now() < deadline,
            "the idle gateway was never chosen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every gateway answers the same.
    assert_eq!(gateway(b.addr).await, "ws://gateway-b.example/ws");

    // Killed: it drops out within seconds.
    b.kill9().await;
    let killed = Instant::now();
    while gateway(a_addr).await != "ws://gateway-a.example/ws" {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "a dead gateway is still chosen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("a killed gateway dropped out after {:?}", killed.elapsed());
    a.stop().await;
}

/// Alice is connected to a gateway process that is killed with -9: it never
/// says goodbye, so the live gateway ends her presence once it has been
/// silent for `presence_reap_secs`, and Bob, her friend, is told.
async fn killed_gateway_presence(backend: Backend) {
    let (mut s, _dir) = fresh_settings(backend).await;
    s.gateway.presence_reap_secs = 10;
    let a = TestApp::spawn_with(s.clone(), Roles::ALL).await;
    let b = Proc::spawn(
        BIN,
        &["gateway", "--listen", "127.0.0.1:0"],
        &settings_env(&s),
    )
    .await;
    let (mut bob, bob_id, _) = a.user("bob").await;
    let mut alice = Client::connect(&b.ws_url()).await.expect("connect");
    let alice_id = alice
        .register("alice", "password-123")
        .await
        .expect("register");
    alice.login("alice", "password-123").await.expect("login");
    alice.friend_apply(bob_id, "", "").await.expect("apply");
    bob.friend_accept(alice_id, "").await.expect("accept");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !profile(&mut bob, alice_id).await.online {
        assert!(Instant::now() < deadline, "alice never showed online");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    b.kill9().await;
    let killed = Instant::now();
    let push = push_pinging(&mut bob, |p| {
        matches!(p, Push::Presence { online: false, .. })
    })
    .await;
    assert!(matches!(push, Push::Presence { user_id, .. } if user_id == alice_id));
    eprintln!("offline pushed {:?} after the kill", killed.elapsed());
    assert!(!profile(&mut bob, alice_id).await.online);
    drop(alice);
    a.stop().await;
}
