//! The conformance suite: what every [`EventLog`] backend must do. The
//! integration tests run each function against the Postgres log and a real
//! Kafka-protocol broker.

use crate::{AppendRecord, LogReader, ReadFrom, Record, SharedLog};
use imlog_events::{partition_for_key, Topic};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens a log over the same storage and topics each time it is called (a
/// second call is a "restart").
pub type Opener = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = SharedLog> + Send>> + Send + Sync>;

const PATIENCE: Duration = Duration::from_secs(30);

/// Reads until `n` records arrived (or panics after a while).
pub async fn collect(reader: &mut dyn LogReader, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived",
            records.len()
        );
        records.extend(
            reader
                .next_batch(n - records.len(), Duration::from_millis(500))
                .await
                .expect("read"),
        );
    }
    records
}

fn from(topic: Topic, partition: i32, offset: i64) -> Vec<ReadFrom> {
    vec![ReadFrom {
        topic,
        partition,
        offset,
    }]
}

/// Offsets start at 0 and increase by one per record within a partition; a
/// key always maps to the partition the shared partitioner says.
pub async fn appends_are_numbered_per_partition(open: Opener) {
    let log = open().await;
    let p = partition_for_key(b"thread-1", Topic::Messages.partitions());
    for expected in 0..5 {
        let pos = log
            .append(Topic::Messages, "thread-1", b"x".to_vec())
            .await
            .expect("append");
        assert_eq!(pos.partition, p);
        assert_eq!(pos.offset, expected);
    }
    // Another partition has its own numbering.
    let other = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k.as_bytes(), Topic::Messages.partitions()) != p)
        .expect("some key maps elsewhere");
    let pos = log
        .append(Topic::Messages, &other, b"y".to_vec())
        .await
        .expect("append");
    assert_ne!(pos.partition, p);
    assert_eq!(pos.offset, 0);
}

/// A reader started at an offset returns exactly the records from there on,
/// in order, byte for byte.
pub async fn reads_back_in_order_from_any_offset(open: Opener) {
    let log = open().await;
    let mut partition = 0;
    for i in 0..20 {
        let pos = log
            .append(
                Topic::Users,
                &format!("key-{i}"),
                format!("payload-{i}").into_bytes(),
            )
            .await
            .expect("append");
        partition = pos.partition;
    }
    let mut reader = log
        .reader(from(Topic::Users, partition, 7))
        .await
        .expect("reader");
    let records = collect(reader.as_mut(), 13).await;
    for (i, r) in records.iter().enumerate() {
        let n = i + 7;
        assert_eq!(r.offset, n as i64);
        assert_eq!(r.topic, Topic::Users);
        assert_eq!(r.key, format!("key-{n}"));
        assert_eq!(r.payload, format!("payload-{n}").into_bytes());
    }
    let more = reader
        .next_batch(10, Duration::from_millis(300))
        .await
        .expect("read");
    assert!(more.is_empty(), "nothing beyond the end: {more:?}");
}

/// `end_offsets` is the next offset to be written, per partition.
pub async fn end_offsets_track_appends(open: Opener) {
    let log = open().await;
    assert_eq!(
        log.end_offsets(Topic::Sessions).await.expect("ends"),
        vec![0; Topic::Sessions.partitions() as usize]
    );
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            log.append(Topic::Sessions, "user-9", b"s".to_vec())
                .await
                .expect("append"),
        );
    }
    let last = last.unwrap();
    let ends = log.end_offsets(Topic::Sessions).await.expect("ends");
    assert_eq!(ends[last.partition as usize], 3);
    assert_eq!(ends.iter().sum::<i64>(), 3);
}

/// Many concurrent appenders to one partition while a reader tails it: the
/// reader sees every offset exactly once, in order, never one before a
/// smaller one became visible (the bigserial pitfall).
pub async fn concurrent_appenders_never_expose_a_gap(open: Opener) {
    const WRITERS: usize = 8;
    const EACH: usize = 60;
    let log = open().await;
    let partition = partition_for_key(b"hot", Topic::Messages.partitions());
    let mut reader = log
        .reader(from(Topic::Messages, partition, 0))
        .await
        .expect("reader");
    let tail = tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while seen.len() < WRITERS * EACH {
            assert!(Instant::now() < deadline, "tail saw only {}", seen.len());
            for r in reader
                .next_batch(100, Duration::from_millis(200))
                .await
                .expect("read")
            {
                assert_eq!(
                    r.offset,
                    seen.len() as i64,
                    "tail skipped or repeated an offset"
                );
                seen.push(r.payload);
            }
        }
        seen
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    log.append(Topic::Messages, "hot", format!("{w}/{i}").into_bytes())
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let mut seen = tail.await.expect("tail");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), WRITERS * EACH, "every record exactly once");
}

/// `append_all` keeps the given order within a partition.
pub async fn append_all_keeps_order(open: Opener) {
    let log = open().await;
    let records: Vec<AppendRecord> = (0..50)
        .map(|i| AppendRecord {
            topic: Topic::Messages,
            key: "ordered".into(),
            payload: format!("{i}").into_bytes(),
        })
        .collect();
    let positions: Vec<_> = log
        .append_all(records)
        .await
        .into_iter()
        .map(|r| r.expect("append"))
        .collect();
    for pair in positions.windows(2) {
        assert_eq!(pair[1].offset, pair[0].offset + 1);
    }
    let mut reader = log
        .reader(from(
            Topic::Messages,
            positions[0].partition,
            positions[0].offset,
        ))
        .await
        .expect("reader");
    let records = collect(reader.as_mut(), 50).await;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.payload, format!("{i}").into_bytes());
    }
}

/// After a restart (a new instance over the same storage) everything is
/// still there, and appends continue at the next offset.
pub async fn restart_resumes_where_it_was(open: Opener) {
    let first = open().await;
    let mut partition = 0;
    for i in 0..3 {
        partition = first
            .append(Topic::Threads, "pair", format!("{i}").into_bytes())
            .await
            .expect("append")
            .partition;
    }
    drop(first);
    let second = open().await;
    assert_eq!(
        second.end_offsets(Topic::Threads).await.expect("ends")[partition as usize],
        3
    );
    let mut reader = second
        .reader(from(Topic::Threads, partition, 0))
        .await
        .expect("reader");
    let records = collect(reader.as_mut(), 3).await;
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let pos = second
        .append(Topic::Threads, "pair", b"3".to_vec())
        .await
        .expect("append");
    assert_eq!(pos.offset, 3);
}

/// An idle reader waits (without returning early) and wakes promptly when a
/// record is appended; one reader can follow several topics.
pub async fn idle_reader_waits_then_wakes(open: Opener) {
    let log: SharedLog = open().await;
    let mut assignment = Vec::new();
    for topic in [Topic::Social, Topic::Files] {
        for partition in 0..topic.partitions() {
            assignment.push(ReadFrom {
                topic,
                partition,
                offset: 0,
            });
        }
    }
    let mut reader = log.reader(assignment).await.expect("reader");
    let started = Instant::now();
    let nothing = reader
        .next_batch(10, Duration::from_millis(400))
        .await
        .expect("read");
    assert!(nothing.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "returned early"
    );
    let writer = log.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer
            .append(Topic::Files, "upload-1", b"f".to_vec())
            .await
            .expect("append");
        writer
            .append(Topic::Social, "pair-1", b"s".to_vec())
            .await
            .expect("append");
    });
    let records = collect(reader.as_mut(), 2).await;
    let topics: std::collections::BTreeSet<Topic> = records.iter().map(|r| r.topic).collect();
    assert_eq!(topics.len(), 2, "records from both topics");
}

/// Two processes append to one partition in turn while a reader in each
/// tails it: both read every record once, in offset order. (The Postgres
/// log keeps a process's own appends in memory for its readers; the other
/// process's appends are gaps there, read from the table.)
pub async fn two_processes_appending_are_read_whole_by_either(open: Opener) {
    const N: usize = 60;
    let (a, b) = (open().await, open().await);
    let key = "thread-shared";
    let partition = partition_for_key(key.as_bytes(), Topic::Messages.partitions());
    let mut readers = Vec::new();
    for log in [&a, &b] {
        let mut reader = log
            .reader(from(Topic::Messages, partition, 0))
            .await
            .expect("reader");
        readers.push(tokio::spawn(async move {
            let mut records = Vec::new();
            // Small batches, so that reads fall between the appends.
            while records.len() < N {
                let more = collect(reader.as_mut(), 3.min(N - records.len())).await;
                records.extend(more);
            }
            records
        }));
    }
    for i in 0..N {
        // Runs of one to three records from each, so both see gaps.
        let log = if (i / 3 + i % 2) % 2 == 0 { &a } else { &b };
        log.append(Topic::Messages, key, format!("r{i}").into_bytes())
            .await
            .expect("append");
        if i % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for reader in readers {
        let records = reader.await.expect("reader");
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
        let payloads: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
        let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("r{i}").into_bytes()).collect();
        assert_eq!(payloads, expected);
    }
}

/// Readers of one process at different places in one partition — at its
/// end, far behind, in between, and one started later behind what was kept
/// — each read exactly the records from their offset on, once, in order,
/// while appends go on. (Both backends share what one reader fetched with
/// the others of the process, and serve a reader behind that from the log
/// itself; Kafka through one tail per topic.) A little over 4 MiB of
/// records, so the oldest are no longer kept when the last reader starts.
pub async fn readers_behind_and_at_the_end_read_the_same_records(open: Opener) {
    const BEFORE: usize = 40;
    const DURING: usize = 200;
    const TOTAL: usize = BEFORE + DURING;
    let log = open().await;
    let key = "thread-readers";
    let partition = partition_for_key(key.as_bytes(), Topic::Messages.partitions());
    let payload = |i: usize| {
        let mut p = format!("r{i}-").into_bytes();
        p.resize(20 << 10, b'x');
        p
    };
    for i in 0..BEFORE {
        log.append(Topic::Messages, key, payload(i))
            .await
            .expect("append");
    }
    let read = |log: SharedLog, offset: usize| {
        tokio::spawn(async move {
            let mut reader = log
                .reader(from(Topic::Messages, partition, offset as i64))
                .await
                .expect("reader");
            let mut records = Vec::new();
            while records.len() < TOTAL - offset {
                let more = collect(reader.as_mut(), 7.min(TOTAL - offset - records.len())).await;
                records.extend(more);
            }
            let beyond = reader
                .next_batch(10, Duration::from_millis(200))
                .await
                .expect("read");
            assert!(beyond.is_empty(), "nothing beyond the end: {beyond:?}");
            (offset, records)
        })
    };
    let mut readers = vec![read(log.clone(), BEFORE), read(log.clone(), 0)];
    for i in BEFORE..TOTAL {
        log.append(Topic::Messages, key, payload(i))
            .await
            .expect("append");
        if i == BEFORE + 20 {
            readers.push(read(log.clone(), 10));
        }
    }
    readers.push(read(log.clone(), 5));
    for reader in readers {
        let (offset, records) = reader.await.expect("reader");
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (offset as i64..TOTAL as i64).collect::<Vec<_>>(),
            "the reader from {offset}"
        );
        for r in &records {
            assert_eq!(r.payload, payload(r.offset as usize), "record {}", r.offset);
        }
    }
}

/// The same across every partition of a topic: readers of all partitions
/// — one from the end, three from the start (before the appends, while
/// they go on, and once the busiest partition's oldest records are no
/// longer kept) — while appends go to every partition (most to one, over
/// 4 MiB of it), each read every record of every partition from its offset
/// once, in order within each partition.
pub async fn readers_of_many_partitions_read_each_partition_whole(open: Opener) {
    const BEFORE: usize = 24;
    const DURING: usize = 480;
    const TOTAL: usize = BEFORE + DURING;
    let log = open().await;
    let partitions = Topic::Messages.partitions();
    // Keys for every partition; most appends go to the first one.
    let mut keys: Vec<Option<String>> = vec![None; partitions as usize];
    for k in 0.. {
        let key = format!("many-{k}");
        let p = partition_for_key(key.as_bytes(), partitions) as usize;
        keys[p].get_or_insert(key);
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    let keys: Vec<String> = keys.into_iter().map(|k| k.expect("a key")).collect();
    let key_of = |i: usize| {
        &keys[if i.is_multiple_of(3) {
            i % keys.len()
        } else {
            0
        }]
    };
    let payload = |i: usize| {
        let mut p = format!("m{i}-").into_bytes();
        p.resize(16 << 10, b'y');
        p
    };
    for i in 0..BEFORE {
        log.append(Topic::Messages, key_of(i), payload(i))
            .await
            .expect("append");
    }
    let read = |log: SharedLog, from_end: bool| {
        tokio::spawn(async move {
            let ends = log.end_offsets(Topic::Messages).await.expect("ends");
            let from: Vec<ReadFrom> = ends
                .iter()
                .enumerate()
                .map(|(p, &end)| ReadFrom {
                    topic: Topic::Messages,
                    partition: p as i32,
                    offset: if from_end { end } else { 0 },
                })
                .collect();
            let mut reader = log.reader(from.clone()).await.expect("reader");
            let want = if from_end { TOTAL - BEFORE } else { TOTAL };
            let mut records: Vec<Record> = Vec::new();
            // Small batches: fewer than one full share per partition.
            while records.len() < want {
                let more = collect(reader.as_mut(), 37.min(want - records.len())).await;
                records.extend(more);
            }
            (from, records)
        })
    };
    let mut readers = vec![read(log.clone(), true), read(log.clone(), false)];
    // Let both start before the appends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in BEFORE..TOTAL {
        log.append(Topic::Messages, key_of(i), payload(i))
            .await
            .expect("append");
        // One from the start while appends go on, one once the busiest
        // partition's oldest records are no longer kept.
        if i == BEFORE + 100 || i == TOTAL - 40 {
            readers.push(read(log.clone(), false));
        }
    }
    for reader in readers {
        let (from, records) = reader.await.expect("reader");
        for f in &from {
            let offsets: Vec<i64> = records
                .iter()
                .filter(|r| r.partition == f.partition)
                .map(|r| r.offset)
                .collect();
            let end = log.end_offsets(Topic::Messages).await.expect("ends")[f.partition as usize];
            assert_eq!(
                offsets,
                (f.offset..end).collect::<Vec<_>>(),
                "partition {} read from {}",
                f.partition,
                f.offset
            );
        }
    }
}

/// Every test of the suite, by name, for the backends' test files.
#[macro_export]
macro_rules! conformance_tests {
    ($opener:expr) => {
        $crate::conformance_tests!(@each $opener;
            appends_are_numbered_per_partition,
            reads_back_in_order_from_any_offset,
            end_offsets_track_appends,
            concurrent_appenders_never_expose_a_gap,
            append_all_keeps_order,
            restart_resumes_where_it_was,
            idle_reader_waits_then_wakes,
            two_processes_appending_are_read_whole_by_either,
            readers_behind_and_at_the_end_read_the_same_records,
            readers_of_many_partitions_read_each_partition_whole);
    };
    (@each $opener:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(open) = $opener.await {
                    $crate::conformance::$name(open).await
                }
            }
        )*
    };
}
