//! Operations: the query role's HTTP API, heartbeats, metrics, replay with a
//! swap, `log copy` between backends, the S3 object store, and the private
//! Postgres's WAL files.

use imlog::app::{Application, Roles};
use imlog::config::Secret;
use imlog_projections::replay;
use imlog_tests::{
    fresh_settings, http_get, kafka_brokers, open_log, replay_differences, send_numbered, Backend,
    Client, MessageId, TestApp,
};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_serves_sync_with_a_bearer_token() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (mut alice, _, token) = app.user("alice").await;
    let (_bob, bob_id, _) = app.user("bob").await;
    let thread = alice.open_private_thread(bob_id).await.expect("thread");
    let message_id = alice
        .send_text(thread, "q-1", "over http")
        .await
        .expect("send");
    alice
        .sync_messages(thread, MessageId::default(), 1)
        .await
        .expect("projected");

    // A separate query-only process over the same database.
    let query = TestApp::spawn_with(
        app.settings.clone(),
        Roles {
            gateway: false,
            queries: true,
            projector: false,
        },
    )
    .await;
    let addr = query.app.addr();
    let (status, body) = http_get(addr, "/v1/threads?after=0&limit=10", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["items"][0]["thread_id"], thread.get());
    let (status, body) = http_get(
        addr,
        &format!("/v1/threads/{thread}/messages?since=0"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["items"][0]["message_id"], message_id.get());

    let (status, body) = http_get(addr, "/v1/threads", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = http_get(addr, "/v1/threads", Some("forged")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("bad_token"))
    );
    let (status, _) = http_get(addr, "/v1/threads?limit=banana", Some(&token)).await;
    assert_eq!(status, 400);
    let (status, _) = http_get(addr, "/v1/threads/not-a-number/messages", Some(&token)).await;
    assert_eq!(status, 400);
    let (status, _) = http_get(addr, "/v1/threads/0/messages", Some(&token)).await;
    assert_eq!(status, 400);
    let (status, _) = http_get(addr, "/v1/threads?limit=banana", None).await;
    assert_eq!(status, 401, "authentication comes before validation");
    // The query role has no chat endpoint.
    let (status, _) = http_get(addr, "/ws", None).await;
    assert_eq!(status, 404);
    let (status, body) = http_get(addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        body.as_str().unwrap_or_default().contains("imlog_"),
        "metrics: {body}"
    );
    query.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_heartbeat_timeout() {
    let (mut s, _dir) = fresh_settings(Backend::Postgres).await;
    s.gateway.heartbeat_timeout_secs = 2;
    let app = TestApp::spawn_with(s, Roles::ALL).await;
    let (mut talker, _, _) = app.user("talker").await;
    let (mut silent, _, _) = app.user("silent").await;
    // The silent client's last frame: its timeout runs from when the gateway
    // read it, which is after this instant (measured from the login's
    // request instead, a slow login made the close look early).
    let started = Instant::now();
    silent.ping().await.expect("ping");
    // One client pings every 300 ms and stays; the other says nothing.
    let pinger = tokio::spawn(async move {
        for _ in 0..10 {
            talker
                .ping()
                .await
                .expect("a pinging client stays connected");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let (code, reason, _) = silent
        .wait_closed(Duration::from_secs(10))
        .await
        .expect("closed");
    assert_eq!(code, 4000, "closed with {code}: {reason:?}");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    pinger.await.expect("pinger");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_refuses_more_connections_with_503() {
    let (mut s, _dir) = fresh_settings(Backend::Postgres).await;
    s.gateway.max_connections = 2;
    let app = TestApp::spawn_with(s, Roles::ALL).await;
    let mut first = app.client().await;
    let _second = app.client().await;
    let refused = Client::connect(&app.ws_url)
        .await
        .err()
        .expect("a third connection is refused");
    assert!(refused.to_string().contains("503"), "{refused}");
    first.ping().await.expect("the others are unaffected");
    drop(first);
    // A closed connection frees its place.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(&app.ws_url).await.is_err() {
        assert!(Instant::now() < deadline, "the place was not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_an_equal_read_model_and_swaps_it_in() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (mut alice, _bob, _, thread) = app.alice_and_bob().await;
    send_numbered(&mut alice, thread, "replayed", 30).await;
    let url = app.postgres_url();
    let log = app.app.log();
    assert_eq!(
        replay_differences(&url, &log, "imlog_next", Duration::ZERO).await,
        Vec::<String>::new()
    );
    assert!(
        replay::rebuild(&url, &log, "imlog_next").await.is_err(),
        "a rebuild needs a fresh schema"
    );

    // Statements prepared before the swap must follow it: the projector's,
    // and a read's on a connection of its own.
    let read = imlog_projections::ReadModel::new(
        imlog_postgres::connect_pool(&url, 1, Some("imlog")).expect("pool"),
    );
    let exported = |read: imlog_projections::ReadModel| async move {
        let mut out = Vec::new();
        let n = imlog_domain::messages::export_history(&read, &mut out)
            .await
            .expect("export");
        (n, out)
    };
    assert_eq!(exported(read.clone()).await.0, 30);
    replay::swap(&url, "imlog", "imlog_next", "imlog_old")
        .await
        .expect("swap");
    let admin = imlog_postgres::connect_pool(&url, 1, None).expect("pool");
    admin
        .get()
        .await
        .expect("connect")
        .batch_execute("DELETE FROM imlog_old.messages")
        .await
        .expect("empty the retired messages");
    // The running application now reads and writes the swapped-in tables.
    let more = alice
        .send_text(thread, "after-swap", "still flowing")
        .await
        .expect("send");
    let all = alice
        .sync_all_messages(thread, MessageId::default())
        .await
        .expect("sync");
    assert_eq!(all.len(), 31);
    assert_eq!(all.last().unwrap().message_id, more);

    let (n, out) = exported(read).await;
    assert_eq!(n, 31);
    let first: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["body"], "replayed 0");
    app.stop().await;
}

/// `log copy` moves the whole log from Postgres to Kafka with every offset
/// preserved, so a read model rebuilt from Kafka equals the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_copy_to_kafka_preserves_positions_and_ids() {
    if kafka_brokers().is_none() {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let (mut alice, _bob, _, thread) = app.alice_and_bob().await;
    send_numbered(&mut alice, thread, "copied", 25).await;
    let url = app.postgres_url();
    let source = app.app.log();
    let target = open_log(Backend::Kafka, &url, &app.settings.log.topic_prefix).await;
    let report = imlog::logcopy::copy(&source, &target).await.expect("copy");
    assert!(report.copied > 25);
    // Again: nothing left to copy, and the copy is recognised as complete.
    let again = imlog::logcopy::copy(&source, &target)
        .await
        .expect("copy again");
    assert_eq!(again.copied, 0);

    let differences = replay_differences(&url, &target, "imlog_from_kafka", Duration::ZERO).await;
    assert!(differences.is_empty(), "{differences:?}");
    app.stop().await;
}

/// The gateway starts only with a working object store: against a real S3
/// server it writes, reads and deletes a probe; with wrong keys it refuses
/// to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_object_store_is_probed_at_start() {
    let Some(s3) = imlog_tests::s3_env() else {
        return;
    };
    let (mut s, _dir) = fresh_settings(Backend::Postgres).await;
    imlog_tests::use_s3(&mut s, &s3);
    let app = Application::build(s.clone(), Roles::ALL)
        .await
        .expect("starts against S3");
    let mut c = Client::connect(&format!("ws://{}/ws", app.addr()))
        .await
        .expect("connect");
    c.ping().await.expect("serving");
    app.stop().await;

    s.storage.s3.secret_access_key = Secret::from("wrong".to_owned());
    let err = match Application::build(s, Roles::ALL).await {
        Ok(_) => panic!("started with wrong S3 credentials"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("object store probe"), "{err}");
}

/// A record Postgres refuses (here a NUL in a body, which the gateway
/// rejects but an older or foreign writer might not) is skipped alone; the
/// projection keeps going. A record from a newer build is not skipped: the
/// projection waits for a projector that understands it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_skipped_and_future_records_wait() {
    use imlog_events::{Envelope, EventMeta, MessageKind, MessagePosted, Topic, UserId};
    let app = TestApp::spawn(Backend::Postgres).await;
    let (mut alice, mut bob, _, thread) = app.alice_and_bob().await;
    let log = app.app.log();
    let poison = Envelope::new(
        EventMeta::new(None, uuid::Uuid::now_v7()),
        MessagePosted {
            thread_id: thread,
            sender_id: UserId::new(1),
            unique_id: "poison".into(),
            kind: MessageKind::Text,
            body: "nul \0 inside".into(),
            recipients: vec![],
            members_as_of: None,
            media: None,
        },
    );
    log.append(Topic::Messages, &thread.to_string(), poison.encode())
        .await
        .expect("append");
    let after = alice
        .send_text(thread, "after-poison", "still flowing")
        .await
        .expect("send");
    let page = alice
        .sync_messages(thread, MessageId::default(), 10)
        .await
        .expect("sync");
    let ids: Vec<MessageId> = page.items.iter().map(|m| m.message_id).collect();
    assert_eq!(
        ids,
        vec![after],
        "the poison record is skipped, the next one applied"
    );

    let mut future: serde_json::Value = serde_json::from_slice(&poison.encode()).unwrap();
    future["schema_version"] = 99.into();
    future["data"]["body"] = "from the future".into();
    log.append(
        Topic::Messages,
        &thread.to_string(),
        future.to_string().into_bytes(),
    )
    .await
    .expect("append");
    let stuck = alice
        .send_text(thread, "after-future", "waits")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = bob
        .sync_messages(thread, MessageId::default(), 10)
        .await
        .expect("sync");
    let ids: Vec<MessageId> = page.items.iter().map(|m| m.message_id).collect();
    assert!(
        !ids.contains(&stuck),
        "nothing after a newer-build record is applied by this build"
    );
    app.stop().await;
}

/// The status line and headers (lower-cased names) of a GET, and its body.
async fn get_raw(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_serves_the_web_app_and_the_sdk() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let addr = app.app.addr();

    let (status, headers, body) = get_raw(addr, "/", "").await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(
        body.contains("/app/main.js"),
        "the page loads the app: {body}"
    );
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(headers.contains("x-content-type-options: nosniff"));

    // The app's modules and the SDK's, as JavaScript.
    for path in [
        "/app/main.js",
        "/app/chat.js",
        "/sdk/index.js",
        "/sdk/connection.js",
    ] {
        let (status, headers, body) = get_raw(addr, path, "").await;
        assert!(status.contains("200"), "{path}: {status}");
        assert!(headers.contains("javascript"), "{path}: {headers}");
        assert!(body.contains("import") || body.contains("export"), "{path}");
    }

    // Revalidation by ETag: an unchanged file is a 304 without a body.
    let (_, headers, _) = get_raw(addr, "/sdk/index.js", "").await;
    let etag = headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an etag")
        .to_owned();
    let (status, _, body) =
        get_raw(addr, "/sdk/index.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert!(status.contains("304"), "{status}");
    assert!(body.is_empty());

    // Nothing outside the embedded files, however the path is spelled.
    for path in [
        "/app/nope.js",
        "/app/../Cargo.toml",
        "/app/%2e%2e/%2e%2e/Cargo.toml",
        "/sdk/../../../README.md",
    ] {
        let (status, _, _) = get_raw(addr, path, "").await;
        assert!(status.contains("404"), "{path}: {status}");
    }
}

/// `replay --swap` while messages keep coming: no projector batch straddles
/// the swap (its rows in the retired schema, its offsets in the new one), so
/// once the projector catches up the live read model equals a fresh rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_swaps_under_load_and_the_read_model_stays_whole() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (mut alice, _bob, _, thread) = app.alice_and_bob().await;
    let url = app.postgres_url();
    let log = app.app.log();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let items: Vec<(String, String)> = (0..5)
                    .map(|i| (format!("load-{sent}-{i}"), format!("under load {sent}")))
                    .collect();
                let refs: Vec<(&str, &str)> = items
                    .iter()
                    .map(|(u, b)| (u.as_str(), b.as_str()))
                    .collect();
                alice.send_texts(thread, &refs).await.expect("send");
                sent += 1;
            }
            (alice, sent * 5)
        })
    };
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rebuilt = format!("imlog_swap{round}");
        replay::rebuild(&url, &log, &rebuilt)
            .await
            .expect("rebuild");
        replay::swap(&url, "imlog", &rebuilt, &format!("imlog_retired{round}"))
            .await
            .expect("swap");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut alice, sent) = load.await.expect("load");
    let all = alice
        .sync_all_messages(thread, MessageId::default())
        .await
        .expect("sync");
    assert_eq!(
        all.len(),
        sent,
        "every message sent is in the live read model"
    );

    // And the live read model equals one rebuilt now, table by table.
    let differences = replay_differences(&url, &log, "imlog_check", Duration::from_secs(20)).await;
    assert!(
        differences.is_empty(),
        "the live read model lost or kept extra rows across the swaps: {differences:?}"
    );
    eprintln!("{sent} messages sent across 4 swaps");
    app.stop().await;
}

/// The race itself, staged: a projector batch has written a message's rows
/// and waits before its offsets (a pausepoint) while `replay --swap` runs.
/// The swap must wait for it; before, the rows went to the retired schema,
/// the offsets to the new one, and the message was lost to the live model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_swap_waits_for_a_projector_batch_in_flight() {
    let (s, _dir) = fresh_settings(Backend::Postgres).await;
    let gateway_only = Roles {
        gateway: true,
        queries: true,
        projector: false,
    };
    let gw = TestApp::spawn_with(s.clone(), gateway_only).await;
    let mut env = imlog_tests::settings_env(&s);
    env.push((
        "IMLOG_PAUSEPOINT".into(),
        "projection.messages.before_offsets:2500".into(),
    ));
    let projector = imlog_tests::Proc::spawn(
        env!("CARGO_BIN_EXE_imlog-proc"),
        &["projector", "--listen", "127.0.0.1:0"],
        &env,
    )
    .await;
    let (mut alice, _bob, _, thread) = gw.alice_and_bob().await;
    alice
        .send_text(thread, "m0", "before the rebuild")
        .await
        .expect("send");
    alice
        .sync_messages(thread, MessageId::default(), 10)
        .await
        .expect("projected (after one paused batch)");

    // A rebuild that has everything so far: its offsets equal the live ones.
    let url = gw.postgres_url();
    replay::rebuild(&url, &gw.app.log(), "imlog_next")
        .await
        .expect("rebuild");
    // The next message's batch writes its rows, then waits 2.5 s.
    let m1 = alice
        .send_text(thread, "m1", "during the swap")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let swapping = Instant::now();
    replay::swap(&url, "imlog", "imlog_next", "imlog_old")
        .await
        .expect("swap");
    eprintln!("the swap took {:?}", swapping.elapsed());

    // The message is in the live read model (re-applied to the new schema).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = alice
            .sync_messages(thread, MessageId::default(), 10)
            .await
            .expect("sync");
        if page.items.iter().any(|m| m.message_id == m1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message projected during the swap is lost to the live read model"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(projector.terminate().await.success());
    gw.stop().await;
}

/// A new private Postgres has its WAL files before the first message is
/// sent (the commit that creates one waits tens of milliseconds, and every
/// other commit behind it), and is told to keep them (`min_wal_size`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_postgres_creates_its_wal_files_up_front() {
    let (_dir, data) = imlog_tests::serve_data_dir();
    std::fs::create_dir_all(&data).expect("data dir");
    let cluster = imlog_postgres::PrivateCluster::start(&data)
        .await
        .expect("Postgres");
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    // 256 MB of 16 MiB files; a new cluster has one.
    let ready: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
            &[],
        )
        .await
        .expect("pg_ls_waldir")
        .get(0);
    assert!(ready >= 16, "{ready} WAL files after the first start");
    let min_wal_size: String = client
        .query_one("SHOW min_wal_size", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(min_wal_size, "256MB");
    drop(client);
    cluster.stop().expect("stop");
}
