//! What the benchmark binaries share: their command lines, percentiles, and
//! rdkafka baselines against the broker imlog's Kafka log uses.

use imlog_events::{partition_for_key, Topic};
use imlog_log::{EventLog, KafkaLog, KafkaSettings};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

/// Writes every dirty page out and waits (`sync`), so that a figure which
/// waits for fsync — every durable append — is not the writeback of what ran
/// before the bench (building it leaves hundreds of MB dirty; on this
/// machine's virtual disk a WAL flush queued behind them took 100 ms).
pub async fn flush_dirty_pages() {
    let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
}

/// A bench's `--name number` pairs. `--help` prints `usage` and exits; a
/// flag `usage` does not name, or one without a number, prints what is
/// wrong and the usage, and exits 2.
pub fn numeric_flags(argv: &[String], usage: &str) -> Vec<(String, u64)> {
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        std::process::exit(0);
    }
    argv.chunks(2)
        .map(|pair| {
            if !pair[0].starts_with("--") || !usage.contains(&format!("{} ", pair[0])) {
                bad_flag(&format!("unknown flag {}", pair[0]), usage);
            }
            match pair.get(1).map(|v| v.parse::<u64>()) {
                Some(Ok(n)) => (pair[0].clone(), n),
                _ => bad_flag(&format!("{} wants a number", pair[0]), usage),
            }
        })
        .collect()
}

/// Prints `problem` and the usage; exits 2.
pub fn bad_flag(problem: &str, usage: &str) -> ! {
    eprintln!("{problem}\n\n{usage}");
    std::process::exit(2)
}

/// The `p` quantile of `samples` (0 when there are none).
pub fn pct(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A fresh messages topic (made the way imlog makes its own: same
/// partitions); its name.
pub async fn messages_topic(brokers: &str, tag: &str) -> String {
    let prefix = format!("{tag}{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let log = KafkaLog::connect(KafkaSettings {
        brokers: brokers.to_owned(),
        topic_prefix: prefix.clone(),
        replication_factor: 1,
        linger_ms: 5,
        idempotent: crate::kafka_idempotent(),
    })
    .expect("kafka");
    log.ensure_topics().await.expect("topics");
    format!("{prefix}messages")
}

/// Baseline: rdkafka producing `n` copies of `payload` straight to `topic`
/// (`acks=all`, idempotent or never retrying as imlog's producer is on
/// this broker: [`crate::kafka_idempotent`]), keyed over 64 threads,
/// with up to `in_flight` unacknowledged, after one warm-up record; records
/// per second, and when the measured sends started.
pub async fn produce(
    brokers: &str,
    topic: &str,
    payload: &[u8],
    n: usize,
    in_flight: usize,
    linger_ms: u32,
) -> (f64, Instant) {
    let producer: FutureProducer = imlog_log::producer_config(&KafkaSettings {
        brokers: brokers.to_owned(),
        topic_prefix: String::new(),
        replication_factor: 1,
        linger_ms,
        idempotent: crate::kafka_idempotent(),
    })
    .create()
    .expect("producer");
    // Warm up (metadata, connections, idempotent producer id) as imlog's
    // producer already is, then measure.
    let warm = FutureRecord::to(topic)
        .partition(0)
        .key("warm")
        .payload(payload);
    producer
        .send(warm, Duration::from_secs(30))
        .await
        .expect("warm-up delivery");
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let key = ((i % 64) + 1).to_string();
        let partition = partition_for_key(key.as_bytes(), Topic::Messages.partitions());
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(payload);
        pending.push_back(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() >= in_flight {
            if let Some(delivery) = pending.pop_front() {
                delivery.await.expect("delivery").expect("delivered");
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("delivered");
    }
    (n as f64 / started.elapsed().as_secs_f64(), started)
}
