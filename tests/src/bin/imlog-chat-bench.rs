//! `imlog-chat-bench`: chat load at OpenIM's published test profile, scaled
//! to this machine — many online WebSocket clients (most idle), private
//! traffic at a target rate and a 200-member group — on each log backend,
//! next to the baseline of the component underneath measured in the same
//! run.
//!
//!   cargo run --release -p imlog-tests --bin imlog-chat-bench -- \
//!       [--clients 1000] [--rate 2000] [--group-rate 150] [--seconds 30] [--warmup 2]
//!
//! Prints send→ack and send→push (delivery) p50/p99/max, the sustained
//! message rate and group pushes/s, of the `--seconds` after a `--warmup`
//! whose figures are not counted (the same load, while caches fill). The Kafka rows need
//! `IMLOG_TEST_KAFKA_BROKERS`. Users and sessions are written straight to
//! the log (argon2 for a thousand logins would only measure hashing);
//! every client then resumes its session with `auth`, as an app does.

use imlog::app::{Application, Roles};
use imlog::config::{LogBackend, Secret, Settings};
use imlog_domain::credentials::{new_token, token_digest};
use imlog_events::{Envelope, EventMeta, SessionId, SessionStarted, UserRegistered};
use imlog_log::{AppendRecord, SharedLog};
use imlog_protocol::{Push, ThreadId, UserId};
use imlog_tests::bench::{
    bad_flag, flush_dirty_pages, messages_topic, ms, numeric_flags, pct, produce,
};
use imlog_tests::Client;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Load {
    clients: usize,
    rate: usize,
    group_rate: usize,
    seconds: u64,
    warmup: u64,
}

const GROUP_MEMBERS: usize = 200;

const USAGE: &str = "imlog-chat-bench [--clients 1000] [--rate 2000] [--group-rate 150] [--seconds 30] [--warmup 2]
  --clients     online WebSocket clients (at least 700: 250 senders, 250 receivers, a 200-member group)
  --rate        private messages/s, from 250 senders
  --group-rate  messages/s to the 200-member group
  --seconds     how long the counted load runs (at most 3600)
  --warmup      seconds of the same load before, not counted (at most 3600)
The Kafka rows run when IMLOG_TEST_KAFKA_BROKERS names a broker.";

fn args() -> Load {
    let mut load = Load {
        clients: 1000,
        rate: 2000,
        // 150 group messages/s to 199 members: 29,850 pushes/s offered.
        group_rate: 150,
        // A p99 over 60,000 deliveries: over 20,000 (10 s), one fsync stall
        // of the virtual disk (30–100 ms, a few a minute here) decided it.
        seconds: 30,
        warmup: 2,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for (flag, value) in numeric_flags(&argv, USAGE) {
        match flag.as_str() {
            "--clients" => load.clients = value as usize,
            "--rate" => load.rate = value as usize,
            "--group-rate" => load.group_rate = value as usize,
            "--seconds" => load.seconds = value,
            "--warmup" => load.warmup = value,
            other => bad_flag(&format!("unknown flag {other}"), USAGE),
        }
    }
    if load.clients < 2 * 250 + GROUP_MEMBERS {
        bad_flag("--clients: at least 700", USAGE);
    }
    if load.rate == 0 || load.group_rate == 0 {
        bad_flag("--rate and --group-rate: at least 1", USAGE);
    }
    if load.seconds > 3600 || load.warmup > 3600 {
        bad_flag("--seconds and --warmup: at most 3600", USAGE);
    }
    load
}

fn record(event: impl Into<imlog_events::Event>) -> AppendRecord {
    let e = Envelope::new(EventMeta::new(None, uuid::Uuid::now_v7()), event);
    AppendRecord {
        topic: e.event.topic(),
        key: e.event.key(),
        payload: e.encode(),
    }
}

/// `n` users with live sessions, written to the log; their tokens.
async fn seed(log: &SharedLog, n: usize) -> Vec<(UserId, String)> {
    let users: Vec<AppendRecord> = (0..n)
        .map(|i| {
            record(UserRegistered {
                name: format!("user{i}"),
                password_hash: "seeded".into(),
            })
        })
        .collect();
    let ids: Vec<UserId> = log
        .append_all(users)
        .await
        .into_iter()
        .map(|r| UserId::from_position(r.expect("append")))
        .collect();
    let tokens: Vec<String> = (0..n).map(|_| new_token()).collect();
    let sessions = ids
        .iter()
        .zip(&tokens)
        .map(|(&user_id, token)| {
            record(SessionStarted {
                user_id,
                session_id: SessionId::random(),
                token_sha256: token_digest(token),
                gateway_id: "bench".into(),
                device: "bench".into(),
                expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
            })
        })
        .collect();
    for r in log.append_all(sessions).await {
        r.expect("append");
    }
    ids.into_iter().zip(tokens).collect()
}

struct Figures {
    ack: Vec<Duration>,
    delivery: Vec<Duration>,
    group_delivery: Vec<Duration>,
    sent: u64,
    group_pushes: u64,
    seconds: f64,
}

async fn run(backend: LogBackend, url: &str, dir: &std::path::Path, load: &Load) -> Figures {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    s.postgres.url = Some(Secret::from(url.to_owned()));
    s.postgres.pool_size = 32;
    s.log.backend = backend;
    s.log.topic_prefix = format!("chat{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    if backend == LogBackend::Kafka {
        s.log.kafka.brokers = std::env::var("IMLOG_TEST_KAFKA_BROKERS").expect("brokers");
        s.log.kafka.linger_ms = 1;
        s.log.kafka.idempotent = imlog_tests::kafka_idempotent();
    }
    s.gateway.strangers_may_chat = true;
    s.gateway.heartbeat_timeout_secs = 600;
    let app = Application::build(s, Roles::ALL).await.expect("app");
    let ws = format!("ws://{}/ws", app.addr());
    let users = seed(&app.log(), load.clients).await;

    // Everyone online: resume the seeded sessions.
    let mut clients = Vec::with_capacity(users.len());
    for (i, (_, token)) in users.iter().enumerate() {
        let mut c = Client::connect(&ws).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = c.auth(token).await {
            assert!(Instant::now() < deadline, "user {i} cannot auth: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        clients.push(c);
    }
    eprintln!("{} clients online", clients.len());

    // 250 private pairs (senders 0..250, receivers 250..500) and a group
    // (owner 500, members 501..700).
    let mut threads = Vec::new();
    for i in 0..250 {
        let peer = users[250 + i].0;
        threads.push(clients[i].open_private_thread(peer).await.expect("thread"));
    }
    let members: Vec<UserId> = users[501..500 + GROUP_MEMBERS]
        .iter()
        .map(|u| u.0)
        .collect();
    let group = clients[500]
        .create_group("bench", &members)
        .await
        .expect("group");

    flush_dirty_pages().await;
    let epoch = Instant::now();
    // Sends before this (µs since `epoch`) warm up and are not counted.
    let counted_from = Duration::from_secs(load.warmup).as_micros() as u64;
    let running = Arc::new(AtomicBool::new(true));
    let delivery = Arc::new(Mutex::new(Vec::new()));
    let group_delivery = Arc::new(Mutex::new(Vec::new()));
    let group_pushes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();

    // Receivers: every client that is not sending reads its pushes.
    let mut rest = clients.split_off(250);
    let mut group_owner = rest.remove(250);
    let senders = clients;
    for mut c in rest {
        let (running, delivery, group_delivery, group_pushes) = (
            running.clone(),
            delivery.clone(),
            group_delivery.clone(),
            group_pushes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let Ok(Some(Push::Message(m))) = c.next_push(Duration::from_millis(200)).await
                else {
                    continue;
                };
                let Some(sent) = m
                    .body
                    .strip_prefix("t=")
                    .and_then(|t| t.parse::<u64>().ok())
                    .filter(|&sent| sent >= counted_from)
                else {
                    continue;
                };
                let latency = epoch.elapsed().saturating_sub(Duration::from_micros(sent));
                if m.thread_id == group {
                    group_pushes.fetch_add(1, Ordering::Relaxed);
                    group_delivery.lock().unwrap().push(latency);
                } else {
                    delivery.lock().unwrap().push(latency);
                }
            }
        }));
    }

    // Senders: each at rate / 250 messages per second, one per request.
    let per_sender = Duration::from_secs_f64(250.0 / load.rate as f64);
    let counting = Instant::now() + Duration::from_secs(load.warmup);
    let until = counting + Duration::from_secs(load.seconds);
    let start = tokio::time::Instant::now();
    let mut sending = Vec::new();
    for (i, (mut c, thread)) in senders.into_iter().zip(threads).enumerate() {
        // Senders are spread evenly over the interval, so that the load is a
        // steady stream rather than 250 sends at the same instant.
        let phase = per_sender.mul_f64(i as f64 / 250.0);
        sending.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut tick = tokio::time::interval_at(start + phase, per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while Instant::now() < until {
                tick.tick().await;
                let body = format!("t={}", epoch.elapsed().as_micros());
                let started = Instant::now();
                if c.send_text(thread, &format!("m{n}"), &body).await.is_ok() && started >= counting
                {
                    acks.push(started.elapsed());
                }
                n += 1;
            }
            acks
        }));
    }
    let group_sender = {
        let every = Duration::from_secs_f64(1.0 / load.group_rate as f64);
        let group: ThreadId = group;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while Instant::now() < until {
                tick.tick().await;
                let body = format!("t={}", epoch.elapsed().as_micros());
                let _ = group_owner.send_text(group, &format!("g{n}"), &body).await;
                n += 1;
            }
        })
    };
    let mut ack = Vec::new();
    for s in sending {
        ack.extend(s.await.expect("sender"));
    }
    group_sender.await.expect("group sender");
    let seconds = counting.elapsed().as_secs_f64();
    // Let the last pushes arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    app.stop().await;
    let delivery = std::mem::take(&mut *delivery.lock().unwrap());
    let group_delivery = std::mem::take(&mut *group_delivery.lock().unwrap());
    Figures {
        sent: ack.len() as u64,
        ack,
        delivery,
        group_delivery,
        group_pushes: group_pushes.load(Ordering::Relaxed),
        seconds,
    }
}

/// Baseline: rdkafka producing 1 KiB records straight to the broker, to a
/// messages topic of the same shape as ours.
async fn kafka_baseline(brokers: &str, n: usize) -> f64 {
    let topic = messages_topic(brokers, "chatbase").await;
    produce(brokers, &topic, &[b'x'; 1024], n, 5_000, 1).await.0
}

async fn commit_p50(url: &str) -> Duration {
    let (mut c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c.batch_execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let mut samples = Vec::new();
    for i in 0..300i64 {
        let started = Instant::now();
        let tx = c.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO bench_commit VALUES ($1) ON CONFLICT DO NOTHING",
            &[&i],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        samples.push(started.elapsed());
    }
    pct(&mut samples, 0.5)
}

fn report(name: &str, f: &mut Figures, load: &Load, baseline: &str) {
    let rate = f.sent as f64 / f.seconds;
    println!(
        "| {name}: send→ack p50 / p99 / max | {} / {} / {} | {baseline} |",
        ms(pct(&mut f.ack, 0.5)),
        ms(pct(&mut f.ack, 0.99)),
        ms(pct(&mut f.ack, 1.0)),
    );
    println!(
        "| {name}: send→push (delivery), private, p50 / p99 / max | {} / {} / {} | {} pushes |",
        ms(pct(&mut f.delivery, 0.5)),
        ms(pct(&mut f.delivery, 0.99)),
        ms(pct(&mut f.delivery, 1.0)),
        f.delivery.len()
    );
    println!(
        "| {name}: send→push, {GROUP_MEMBERS}-member group, p50 / p99 / max | {} / {} / {} | {:.0} group pushes/s |",
        ms(pct(&mut f.group_delivery, 0.5)),
        ms(pct(&mut f.group_delivery, 0.99)),
        ms(pct(&mut f.group_delivery, 1.0)),
        f.group_pushes as f64 / f.seconds
    );
    println!(
        "| {name}: sustained private messages/s (target {}) | {rate:.0} msg/s | {} clients online |",
        load.rate, load.clients
    );
}

#[tokio::main]
async fn main() {
    let load = args();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    eprintln!(
        "starting a private Postgres (fsync on) in {}",
        dir.path().display()
    );
    let cluster = imlog_postgres::PrivateCluster::start(dir.path())
        .await
        .expect("private Postgres");
    let url = cluster.url();
    let commit = commit_p50(&url).await;
    // A database of its own for each run: the read model and its offsets.
    let fresh = |name: &'static str| {
        let (admin, cluster) = (url.clone(), &cluster);
        async move {
            let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            cluster.url_for(name)
        }
    };
    println!("| what | imlog | baseline / context (same run) |");
    println!("|---|---|---|");
    let mut pg = run(
        LogBackend::Postgres,
        &fresh("chat_pg").await,
        dir.path(),
        &load,
    )
    .await;
    report(
        "Postgres log",
        &mut pg,
        &load,
        &format!("Postgres BEGIN+INSERT+COMMIT p50 {}", ms(commit)),
    );
    if let Ok(brokers) = std::env::var("IMLOG_TEST_KAFKA_BROKERS") {
        let raw = kafka_baseline(&brokers, 30_000).await;
        let mut kafka = run(
            LogBackend::Kafka,
            &fresh("chat_kafka").await,
            dir.path(),
            &load,
        )
        .await;
        let ours = kafka.sent as f64 / kafka.seconds;
        report(
            "Kafka log (tansu)",
            &mut kafka,
            &load,
            &format!(
                "rdkafka produce straight to the broker {raw:.0} msg/s (sustained here {ours:.0} msg/s = {:.3} of it)",
                ours / raw
            ),
        );
    } else {
        eprintln!("IMLOG_TEST_KAFKA_BROKERS not set: skipping the Kafka run");
    }
    cluster.stop().expect("stopping Postgres");
}
