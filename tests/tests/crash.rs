//! Crashes: kill -9 the process that projects while messages are appended,
//! and kill -9 `imlog serve` itself; nothing may be lost or duplicated.

use imlog::app::Roles;
use imlog_tests::{
    fresh_settings, on_backends, open_log, settings_env, Backend, Client, MessageId, Proc, TestApp,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imlog-proc");

on_backends! {
    killing_the_projector_mid_stream_loses_and_duplicates_nothing => projector_kill9;
}

async fn projector_kill9(backend: Backend) {
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 10;
    let (s, _dir) = fresh_settings(backend).await;
    let (url, prefix) = (
        s.postgres.url.clone().expect("url").expose().to_owned(),
        s.log.topic_prefix.clone(),
    );
    let gateway_only = Roles {
        gateway: true,
        queries: true,
        projector: false,
    };
    let gw = TestApp::spawn_with(s.clone(), gateway_only).await;
    let env = settings_env(&s);
    let projector = Proc::spawn(BIN, &["projector", "--listen", "127.0.0.1:0"], &env).await;

    let (mut alice, _, _) = gw.user("alice").await;
    let (_bob, bob_id, _) = gw.user("bob").await;
    let thread = alice.open_private_thread(bob_id).await.expect("thread");

    let acked = Arc::new(AtomicUsize::new(0));
    let counter = acked.clone();
    let sender = tokio::spawn(async move {
        let mut ids = Vec::new();
        for b in 0..BATCHES {
            let texts: Vec<(String, String)> = (0..PER_BATCH)
                .map(|i| (format!("b{b}-{i}"), format!("message {b}/{i}")))
                .collect();
            let items: Vec<(&str, &str)> = texts
                .iter()
                .map(|(u, t)| (u.as_str(), t.as_str()))
                .collect();
            for answer in alice.send_texts(thread, &items).await.expect("send") {
                ids.push(answer.message_id.expect("every item acknowledged"));
            }
            counter.fetch_add(PER_BATCH, Ordering::SeqCst);
        }
        (alice, ids)
    });

    // Kill the projector mid-stream, with no chance to clean up.
    while acked.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    projector.kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let projector = Proc::spawn(BIN, &["projector", "--listen", "127.0.0.1:0"], &env).await;
    let (mut alice, acked_ids) = sender.await.expect("sender");
    assert_eq!(acked_ids.len(), BATCHES * PER_BATCH);

    // Every acknowledged message ends up projected exactly once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let synced = loop {
        let all = alice
            .sync_all_messages(thread, MessageId::default())
            .await
            .expect("sync");
        if all.len() >= acked_ids.len() || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let synced_ids: Vec<MessageId> = synced.iter().map(|m| m.message_id).collect();
    assert_eq!(
        synced_ids, acked_ids,
        "the projection holds exactly the acknowledged messages, in order"
    );
    let seqs: Vec<i64> = synced.iter().filter_map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=acked_ids.len() as i64).collect::<Vec<_>>());
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT unique_id) FROM imlog.messages",
            &[],
        )
        .await
        .expect("count");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1000, 1000));

    // A replay from offset 0 into a fresh schema yields the same rows.
    let log = open_log(backend, &url, &prefix).await;
    let differences =
        imlog_tests::replay_differences(&url, &log, "imlog_rebuilt", Duration::ZERO).await;
    assert!(differences.is_empty(), "replay differs: {differences:?}");

    assert!(projector.terminate().await.success());
    gw.stop().await;
}

/// A new user on a running `imlog serve`, logged in: its client, id and token.
async fn user_on(serve: &Proc, name: &str) -> (Client, imlog_tests::UserId, String) {
    let mut client = Client::connect(&serve.ws_url()).await.expect("connect");
    let id = client
        .register(name, "password-123")
        .await
        .expect("register");
    let token = client
        .login(name, "password-123")
        .await
        .expect("login")
        .token;
    (client, id, token)
}

/// The quick start's server: kill -9 it, start it again on the same data
/// directory, and everything sent before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_kill9_with_its_private_postgres() {
    let (_dir, data) = imlog_tests::serve_data_dir();
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let serve = Proc::spawn(BIN, &args, &[]).await;
    let (status, body) = imlog_tests::http_get(serve.addr, "/healthz", None).await;
    assert_eq!(status, 200, "{body}");

    let (mut alice, alice_id, token) = user_on(&serve, "alice").await;
    // `serve` on defaults: only friends chat, so Alice and Bob befriend.
    let (mut bob, bob_id, _) = user_on(&serve, "bob").await;
    let err = alice.open_private_thread(bob_id).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"), "strangers may not chat");
    alice
        .friend_apply(bob_id, "hi bob", "bob")
        .await
        .expect("apply");
    let befriended = bob.friend_accept(alice_id, "alice").await.expect("accept");
    let thread = befriended.thread_id.expect("the friendship's thread");
    assert_eq!(
        alice.open_private_thread(bob_id).await.expect("thread"),
        thread
    );
    let message_id = alice
        .send_text(thread, "before-crash", "still here?")
        .await
        .expect("send");
    serve.kill9().await;

    let serve = Proc::spawn(BIN, &args, &[]).await;
    let (status, _) = imlog_tests::http_get(serve.addr, "/healthz", None).await;
    assert_eq!(status, 200);
    let mut alice = Client::connect(&serve.ws_url()).await.expect("connect");
    alice
        .auth(&token)
        .await
        .expect("the session survived the crash");
    // The restarted projector may still be applying what the killed one had
    // not; the message appears as soon as it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = alice
            .sync_messages(thread, MessageId::default(), 10)
            .await
            .expect("sync");
        let ids: BTreeSet<MessageId> = page.items.iter().map(|m| m.message_id).collect();
        if ids.contains(&message_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message sent before kill -9 is lost"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A clean stop also stops the private Postgres.
    assert!(serve.terminate().await.success());
    assert!(
        !data.join("postgres/postmaster.pid").exists(),
        "private Postgres still running"
    );
}

/// Two projector processes: one applies, the other stands by; kill -9 the
/// active one and the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_projector_takes_over_when_the_active_one_is_killed() {
    let (s, _dir) = fresh_settings(Backend::Postgres).await;
    let env = settings_env(&s);
    let gw = TestApp::spawn_with(
        s.clone(),
        Roles {
            gateway: true,
            queries: true,
            projector: false,
        },
    )
    .await;
    let first = Proc::spawn(BIN, &["projector", "--listen", "127.0.0.1:0"], &env).await;
    let second = Proc::spawn(BIN, &["projector", "--listen", "127.0.0.1:0"], &env).await;

    let (mut alice, _bob, _, thread) = gw.alice_and_bob().await;
    let before = alice
        .send_text(thread, "before", "one")
        .await
        .expect("send");
    let (_, metrics_a) = imlog_tests::http_get(first.addr, "/metrics", None).await;
    let (_, metrics_b) = imlog_tests::http_get(second.addr, "/metrics", None).await;
    let active = |m: &serde_json::Value| {
        m.as_str()
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("imlog_projection_active{projection=\"messages\"} 1"))
    };
    assert!(
        active(&metrics_a) ^ active(&metrics_b),
        "exactly one projector applies messages"
    );
    let (survivor, victim) = if active(&metrics_a) {
        (second, first)
    } else {
        (first, second)
    };
    victim.kill9().await;

    let after = alice.send_text(thread, "after", "two").await.expect("send");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<MessageId> = alice
            .sync_all_messages(thread, MessageId::default())
            .await
            .expect("sync")
            .iter()
            .map(|m| m.message_id)
            .collect();
        if ids == vec![before, after] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never took over: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(survivor.terminate().await.success());
    gw.stop().await;
}

/// The operational commands as an operator runs them: `replay` and
/// `log copy` on the real command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_log_copy_work_from_the_command_line() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (mut alice, _bob, _, thread) = app.alice_and_bob().await;
    imlog_tests::send_numbered(&mut alice, thread, "cli", 5).await;
    let env = settings_env(&app.settings);
    let run = |args: &'static [&'static str], env: Vec<(String, String)>| async move {
        let out = tokio::process::Command::new(BIN)
            .args(args)
            .envs(env)
            .env("IMLOG_LOG_LEVEL", "warn")
            .output()
            .await
            .expect("running imlog");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "imlog {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = run(&["replay"], env.clone()).await;
    assert!(out.contains("equals the live one"), "{out}");
    let out = run(&["replay", "--export", "-"], env.clone()).await;
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = run(&["replay", "--swap"], env.clone()).await;
    assert!(out.contains("swapped"), "{out}");
    alice
        .sync_messages(thread, MessageId::default(), 10)
        .await
        .expect("still serving after the swap");

    if let Some(brokers) = imlog_tests::kafka_brokers() {
        let mut env = env;
        env.push(("IMLOG_LOG__KAFKA__BROKERS".into(), brokers));
        let out = run(
            &["log", "copy", "--from", "postgres", "--to", "kafka"],
            env.clone(),
        )
        .await;
        assert!(out.contains("copied"), "{out}");
        let out = run(&["log", "copy", "--from", "postgres", "--to", "kafka"], env).await;
        assert!(out.contains("copied 0 records"), "{out}");
    }
    app.stop().await;
}

/// kill -9 of the private Postgres under a running `imlog serve`: serve
/// starts it again (crash recovery from the WAL) and carries on, with
/// nothing that was acknowledged lost. The postmaster is serve's child
/// (serve adopts it), so the killed one is a zombie until serve reaps it, as
/// under a container's process 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarts_its_private_postgres_when_it_is_killed() {
    let (_dir, data) = imlog_tests::serve_data_dir();
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let serve = Proc::spawn(BIN, &args, &[]).await;
    let (mut alice, alice_id, token) = user_on(&serve, "alice").await;
    let (mut bob, bob_id, _) = user_on(&serve, "bob").await;
    alice
        .friend_apply(bob_id, "hi", "bob")
        .await
        .expect("apply");
    let thread = bob
        .friend_accept(alice_id, "alice")
        .await
        .expect("accept")
        .thread_id
        .expect("thread");
    let mut acked = Vec::new();
    for i in 0..20 {
        let id = alice
            .send_text(thread, &format!("before-{i}"), "before the crash")
            .await
            .expect("send");
        acked.push(id);
    }

    let pid_file = std::fs::read_to_string(data.join("postgres/postmaster.pid")).expect("pid file");
    let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    let killed_it = std::process::Command::new("kill")
        .args(["-9", &postmaster.to_string()])
        .status()
        .expect("kill");
    assert!(killed_it.success(), "kill -9 the postmaster");
    let killed = Instant::now();

    // Health comes back by itself.
    loop {
        let (status, _) = imlog_tests::http_get(serve.addr, "/healthz", None).await;
        if status == 200 && killed.elapsed() > Duration::from_millis(200) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "serve did not restart its Postgres within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("healthy again {:?} after kill -9", killed.elapsed());
    assert!(
        std::fs::read_to_string(data.join("postgres/postmaster.pid"))
            .expect("running again")
            .lines()
            .next()
            != Some(&postmaster.to_string()),
        "a new postmaster"
    );

    // The session, the messages acked before, and new writes all work.
    let mut alice = Client::connect(&serve.ws_url()).await.expect("connect");
    alice.auth(&token).await.expect("the session survived");
    let after = loop {
        match alice.send_text(thread, "after", "after the crash").await {
            Ok(id) => break id,
            Err(e) if killed.elapsed() < Duration::from_secs(30) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("writes do not work after the restart: {e}"),
        }
    };
    let page = alice
        .sync_messages(thread, MessageId::default(), 100)
        .await
        .expect("sync");
    let ids: BTreeSet<MessageId> = page.items.iter().map(|m| m.message_id).collect();
    for id in acked.iter().chain([&after]) {
        assert!(ids.contains(id), "acked message {id:?} lost");
    }
    assert!(serve.terminate().await.success());
}
