//! `imlog-bench`: throughput and latency of imlog next to the baseline of the
//! component underneath, both measured in this run on this machine.
//!
//!   cargo run --release -p imlog-tests --bin imlog-bench
//!
//! Postgres figures use a fresh private cluster (fsync on). Kafka figures need
//! `IMLOG_TEST_KAFKA_BROKERS` (infra/test.sh's broker, or any Kafka).

use imlog::app::{Application, Roles};
use imlog::config::{LogBackend, Secret, Settings};
use imlog_events::{Envelope, EventMeta, MessageKind, MessagePosted, ThreadId, Topic, UserId};
use imlog_log::{EventLog, KafkaLog, KafkaSettings, PgLog, SharedLog};
use imlog_tests::bench::{flush_dirty_pages, messages_topic, ms, pct, produce};
use imlog_tests::{Client, MessageId};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1024;

struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: f64,
}

/// The record the Kafka baselines produce: an event of about 1 KiB, as our
/// log's appends are.
fn payload() -> Vec<u8> {
    event(1, "x".repeat(PAYLOAD - 300))
}

fn event(thread: i64, body: String) -> Vec<u8> {
    let e = MessagePosted {
        thread_id: ThreadId::new(thread),
        sender_id: UserId::new(1),
        unique_id: uuid::Uuid::new_v4().to_string(),
        kind: MessageKind::Text,
        body,
        recipients: vec![UserId::new(2)],
        members_as_of: None,
        media: None,
    };
    Envelope::new(
        EventMeta::new(Some(UserId::new(1)), uuid::Uuid::new_v4()),
        e,
    )
    .encode()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

/// Baseline: multi-row INSERTs of 1 KiB rows, 500 per transaction.
async fn pg_insert_baseline(url: &str, rows: usize) -> f64 {
    let mut c = connect(url).await;
    c.batch_execute(
        "DROP TABLE IF EXISTS bench_rows;
         CREATE TABLE bench_rows (topic text, partition int, \"offset\" bigint, payload bytea,
                                  PRIMARY KEY (topic, partition, \"offset\"))",
    )
    .await
    .unwrap();
    let payload = vec![b'x'; PAYLOAD];
    let started = Instant::now();
    for chunk in 0..rows / 500 {
        let tx = c.transaction().await.unwrap();
        let offsets: Vec<i64> = (0..500).map(|i| (chunk * 500 + i) as i64).collect();
        let payloads: Vec<&[u8]> = (0..500).map(|_| payload.as_slice()).collect();
        tx.execute(
            "INSERT INTO bench_rows SELECT 'messages', 0, o, p FROM unnest($1::bigint[], $2::bytea[]) AS t(o, p)",
            &[&offsets, &payloads],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// Baseline: one row per BEGIN/INSERT/COMMIT, awaited.
async fn pg_commit_latency(url: &str, n: usize) -> Vec<Duration> {
    let mut c = connect(url).await;
    c.batch_execute("DROP TABLE IF EXISTS bench_one; CREATE TABLE bench_one (id bigint PRIMARY KEY, payload bytea)")
        .await
        .unwrap();
    let payload = vec![b'x'; PAYLOAD];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let started = Instant::now();
        let tx = c.transaction().await.unwrap();
        tx.execute("INSERT INTO bench_one VALUES ($1, $2)", &[&i, &payload])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// Our log: `n` appends of ~1 KiB events from `concurrency` tasks.
async fn log_throughput(log: SharedLog, n: usize, concurrency: usize) -> f64 {
    let body = "x".repeat(PAYLOAD - 300);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (log, body) = (log.clone(), body.clone());
            tokio::spawn(async move {
                for i in 0..n / concurrency {
                    let thread = ((t * 7 + i) % 64) as i64 + 1;
                    log.append(
                        Topic::Messages,
                        &thread.to_string(),
                        event(thread, body.clone()),
                    )
                    .await
                    .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (n / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64()
}

async fn log_latency(log: &dyn EventLog, n: usize) -> Vec<Duration> {
    let body = "x".repeat(PAYLOAD - 300);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        log.append(Topic::Messages, "1", event(1, body.clone()))
            .await
            .expect("append");
        samples.push(started.elapsed());
    }
    samples
}

/// Baseline for the pipeline: rdkafka producing `n` records of the same
/// size into a messages topic while a consumer of all its partitions reads
/// them back (fetching as imlog's readers do with `fetch_wait_ms`, or
/// librdkafka's default of 500 ms without); records per second from the
/// first send to the last read.
async fn kafka_pipeline_baseline(brokers: &str, n: usize, fetch_wait_ms: Option<u32>) -> f64 {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Offset, TopicPartitionList};
    let topic = messages_topic(brokers, "pipe").await;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.bench"))
        .set("enable.auto.commit", "false");
    if let Some(wait) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", wait.to_string());
    }
    let consumer: StreamConsumer = config.create().expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..Topic::Messages.partitions() {
        partitions
            .add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let reading = tokio::spawn(async move {
        let mut read = 0;
        // The producer's warm-up record comes first.
        while read < n + 1 {
            if consumer.recv().await.is_ok() {
                read += 1;
            }
        }
    });
    // From the first measured send (after the producer's set-up and
    // warm-up) to the last record read.
    let (_, started) = produce(brokers, &topic, &payload(), n, 20_000, 5).await;
    reading.await.expect("consumer");
    n as f64 / started.elapsed().as_secs_f64()
}

/// imlog on the Kafka log: 8 clients sending batches of 50, until the read
/// model (projected from the broker) has them all.
async fn kafka_sent_and_projected(url: &str, dir: &std::path::Path, brokers: &str) -> f64 {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    s.postgres.url = Some(Secret::from(url.to_owned()));
    s.log.backend = LogBackend::Kafka;
    s.log.kafka.brokers = brokers.to_owned();
    s.log.kafka.linger_ms = 5;
    s.log.kafka.idempotent = imlog_tests::kafka_idempotent();
    s.log.topic_prefix = format!("e2e{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    s.gateway.strangers_may_chat = true;
    let app = Application::build(s, Roles::ALL).await.expect("app");
    let ws = format!("ws://{}/ws", app.addr());
    let rate = throughput(&ws, "k", 50, 1250).await.1;
    app.stop().await;
    rate
}

/// 8 users, each in its own thread with one peer, each sending `per_client`
/// messages in requests of `per_request`: messages acknowledged per second and
/// messages sent and projected per second (until every sender's sync sees
/// all of its own).
async fn throughput(ws: &str, tag: &str, per_request: usize, per_client: usize) -> (f64, f64) {
    const CLIENTS: usize = 8;
    let batches = per_client / per_request;
    let mut peer = Client::connect(ws).await.unwrap();
    let peer_name = format!("{tag}peer");
    let peer_id = peer.register(&peer_name, "password-123").await.unwrap();
    let mut senders = Vec::new();
    for c in 0..CLIENTS {
        let name = format!("{tag}sender{c}");
        let mut me = Client::connect(ws).await.unwrap();
        me.register(&name, "password-123").await.unwrap();
        me.login(&name, "password-123").await.unwrap();
        let t = me.open_private_thread(peer_id).await.unwrap();
        senders.push((me, t));
    }
    let body = "y".repeat(200);
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, (mut me, t))| {
            let body = body.clone();
            tokio::spawn(async move {
                // The ids of the last two messages sent.
                let mut last = [MessageId::default(); 2];
                for b in 0..batches {
                    let ids: Vec<String> =
                        (0..per_request).map(|i| format!("{c}-{b}-{i}")).collect();
                    let items: Vec<(&str, &str)> =
                        ids.iter().map(|u| (u.as_str(), body.as_str())).collect();
                    for item in me.send_texts(t, &items).await.unwrap() {
                        last = [last[1], item.message_id.expect("sent")];
                    }
                }
                (me, t, last)
            })
        })
        .collect();
    let mut senders = Vec::new();
    for t in tasks {
        senders.push(t.await.unwrap());
    }
    let sent = (CLIENTS * batches * per_request) as f64;
    let acked = started.elapsed();
    // Projected: every sender's sync shows its last message (a thread is
    // projected in log order, so the ones before it are there too; checked
    // below, after the clock stopped).
    for (me, t, [before_last, last]) in senders.iter_mut() {
        loop {
            // An error under load only means asking again.
            let page = me.sync_messages(*t, *before_last, 1).await;
            if page.is_ok_and(|p| p.items.first().is_some_and(|m| m.message_id == *last)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let projected = started.elapsed();
    for (me, t, _) in senders.iter_mut() {
        let all = me
            .sync_all_messages(*t, MessageId::default())
            .await
            .unwrap();
        assert_eq!(all.len(), batches * per_request, "every message projected");
    }
    (sent / acked.as_secs_f64(), sent / projected.as_secs_f64())
}

async fn end_to_end(
    url: &str,
    dir: &std::path::Path,
    rows: &mut Vec<Row>,
    commit_p50: Duration,
    insert_rate: f64,
) {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    s.postgres.url = Some(Secret::from(url.to_owned()));
    s.log.backend = LogBackend::Postgres;
    s.gateway.strangers_may_chat = true;
    // Every bench user registers and logs in from 127.0.0.1.
    s.gateway.auth_burst = 1_000;
    let app = Application::build(s, Roles::ALL).await.expect("app");
    let ws = format!("ws://{}/ws", app.addr());
    let mut alice = Client::connect(&ws).await.unwrap();
    alice.register("alice", "password-123").await.unwrap();
    alice.login("alice", "password-123").await.unwrap();
    let mut bob = Client::connect(&ws).await.unwrap();
    let bob_id = bob.register("bob", "password-123").await.unwrap();
    let thread = alice.open_private_thread(bob_id).await.unwrap();

    let mut samples = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        alice
            .send_text(thread, &format!("lat-{i}"), "ping?")
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    let p50 = pct(&mut samples, 0.5);
    let p99 = pct(&mut samples, 0.99);
    rows.push(Row {
        what: "send one message over WebSocket until acked (durable), p50 / p99".into(),
        ours: format!("{} / {}", ms(p50), ms(p99)),
        baseline: format!("Postgres BEGIN+INSERT+COMMIT p50 {}", ms(commit_p50)),
        ratio: p50.as_secs_f64() / commit_p50.as_secs_f64(),
    });

    // Throughput: 8 users, each in its own thread, sending batches of 50.
    // Conduit's workload (docs/BENCHMARKS.md): 8 senders, one message per
    // request, each waiting for its answer.
    let (single, _) = throughput(&ws, "one", 1, 1250).await;
    rows.push(Row {
        what: "messages acked/s, 8 clients × one message per request (Postgres log)".into(),
        ours: format!("{single:.0} msg/s"),
        baseline: format!(
            "one client's BEGIN+INSERT+COMMIT in a row: {:.0} /s",
            1.0 / commit_p50.as_secs_f64()
        ),
        ratio: single * commit_p50.as_secs_f64(),
    });
    let (acked, projected) = throughput(&ws, "", 50, 5000).await;
    rows.push(Row {
        what: "messages acked/s, 8 clients × batches of 50 (Postgres log)".into(),
        ours: format!("{acked:.0} msg/s"),
        baseline: format!("Postgres multi-row INSERT {insert_rate:.0} rows/s"),
        ratio: acked / insert_rate,
    });
    rows.push(Row {
        what: "messages sent and projected/s (same run, until sync sees all)".into(),
        ours: format!("{projected:.0} msg/s"),
        baseline: format!("Postgres multi-row INSERT {insert_rate:.0} rows/s"),
        ratio: projected / insert_rate,
    });
    app.stop().await;
}

#[tokio::main]
async fn main() {
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
    let mut rows = Vec::new();
    flush_dirty_pages().await;

    // Warm the fresh cluster's WAL first (it is ~30% slower on its first load).
    pg_insert_baseline(&url, 20_000).await;
    let insert_rate = pg_insert_baseline(&url, 50_000).await;
    let mut commits = pg_commit_latency(&url, 500).await;
    let commit_p50 = pct(&mut commits, 0.5);
    let commit_p99 = pct(&mut commits, 0.99);

    let pg_log: SharedLog = Arc::new(PgLog::connect(&url, "bench.").await.expect("pg log"));
    pg_log.ensure_topics().await.unwrap();
    let rate = log_throughput(pg_log.clone(), 50_000, 256).await;
    rows.push(Row {
        what: "Postgres log: appends/s, 1 KiB events, 256 concurrent appenders".into(),
        ours: format!("{rate:.0} /s"),
        baseline: format!("multi-row INSERT, 500 rows/tx: {insert_rate:.0} rows/s"),
        ratio: rate / insert_rate,
    });
    let mut lat = log_latency(pg_log.as_ref(), 500).await;
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    rows.push(Row {
        what: "Postgres log: one append at a time, p50 / p99".into(),
        ours: format!("{} / {}", ms(p50), ms(p99)),
        baseline: format!(
            "BEGIN+INSERT+COMMIT {} / {}",
            ms(commit_p50),
            ms(commit_p99)
        ),
        ratio: p50.as_secs_f64() / commit_p50.as_secs_f64(),
    });
    drop(pg_log);

    if let Ok(brokers) = std::env::var("IMLOG_TEST_KAFKA_BROKERS") {
        let prefix = format!("bench{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let kafka: SharedLog = Arc::new(
            KafkaLog::connect(KafkaSettings {
                brokers: brokers.clone(),
                topic_prefix: prefix.clone(),
                replication_factor: 1,
                linger_ms: 5,
                idempotent: imlog_tests::kafka_idempotent(),
            })
            .expect("kafka"),
        );
        kafka.ensure_topics().await.expect("topics");
        let topic = format!("{prefix}messages");
        let (baseline, _) = produce(&brokers, &topic, &payload(), 30_000, 20_000, 5).await;
        let ours = log_throughput(kafka.clone(), 30_000, 2_000).await;
        rows.push(Row {
            what: "Kafka log (tansu): appends/s, 1 KiB, 2000 concurrent appenders".into(),
            ours: format!("{ours:.0} /s"),
            baseline: format!("rdkafka straight to the broker: {baseline:.0} msg/s"),
            ratio: ours / baseline,
        });
    } else {
        eprintln!("IMLOG_TEST_KAFKA_BROKERS not set: skipping the Kafka figures");
    }

    end_to_end(&url, dir.path(), &mut rows, commit_p50, insert_rate).await;
    if let Ok(brokers) = std::env::var("IMLOG_TEST_KAFKA_BROKERS") {
        // A database of its own: the read model of the Kafka run.
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        c.batch_execute("CREATE DATABASE bench_kafka")
            .await
            .expect("database");
        let raw =
            kafka_pipeline_baseline(&brokers, 10_000, Some(imlog_log::READER_FETCH_WAIT_MS)).await;
        let raw_default = kafka_pipeline_baseline(&brokers, 10_000, None).await;
        let ours =
            kafka_sent_and_projected(&cluster.url_for("bench_kafka"), dir.path(), &brokers).await;
        rows.push(Row {
            what: "Kafka log (tansu): messages sent and projected/s, 8 clients × batches of 50"
                .into(),
            ours: format!("{ours:.0} msg/s"),
            baseline: format!(
                "rdkafka produce → consume of the same records, consumer fetching as imlog's readers: {raw:.0} msg/s"
            ),
            ratio: ours / raw,
        });
        rows.push(Row {
            what: "the same, against librdkafka's default consumer".into(),
            ours: format!("{ours:.0} msg/s"),
            baseline: format!("produce → consume, fetch.wait.max.ms 500: {raw_default:.0} msg/s"),
            ratio: ours / raw_default,
        });
    }
    cluster.stop().expect("stopping Postgres");

    println!("| what | imlog | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} |",
            r.what, r.ours, r.baseline, r.ratio
        );
    }
}
