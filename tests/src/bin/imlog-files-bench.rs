//! `imlog-files-bench`: uploads and downloads through imlog's files
//! endpoints, each next to the same bytes written or read straight through
//! `object_store` (or the filesystem) in the same run.
//!
//!   cargo run --release -p imlog-tests --bin imlog-files-bench -- \
//!       [--mib 1024] [--window 8] [--runs 3] [--chunk-mib 8] [--latency-mib 256]
//!       [--latency-window 16] [--s3-only] [--unsigned-payload]
//!
//! For the local store (always) and the S3 server named by
//! `IMLOG_TEST_S3_*` (when set), prints MB/s of: a windowed upload
//! (declare → every chunk acked → completed and verified; after a warm-up,
//! the median of `--runs`, alternating with the baseline), a stop-and-wait
//! upload (window 1, as the original), four uploads at once, and a ranged
//! download (8 MiB ranges, 4 in flight); the baselines are an fsync'd file
//! write (local) or a raw `object_store` multipart upload with 8 MiB parts,
//! 4 in flight (S3), and ranged reads straight from the store. Then, over a
//! delaying proxy (each 64 KiB segment held 5 ms per direction, one segment
//! in flight per connection — a small TCP window over a 10 ms round trip),
//! windowed against stop-and-wait on the local store.

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use imlog::app::{Application, Roles};
use imlog::config::{LogBackend, Secret, Settings, StorageBackend};
use imlog_client::{sha256_hex, FilesClient};
use imlog_protocol::{ContentType, DeclareUpload, FileName, Sha256Hex, UploadKind};
use imlog_tests::bench::{bad_flag, numeric_flags};
use imlog_tests::Client;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const PART: usize = 8 * MIB;

const USAGE: &str =
    "imlog-files-bench [--mib 1024] [--window 8] [--runs 3] [--chunk-mib 8] [--latency-mib 256]
                  [--latency-window 16] [--s3-only] [--unsigned-payload]
  --mib             size of the file uploaded and downloaded
  --window          chunks in flight in a windowed upload
  --runs            measured runs of the main upload and its baseline (medians)
  --chunk-mib       the server's chunk size (files.chunk_bytes)
  --latency-mib, --latency-window   the upload over the delaying proxy (at most --mib)
  --s3-only         only the S3 rows (IMLOG_TEST_S3_* name the server)
  --unsigned-payload  imlog and a second baseline send S3 parts unsigned";

struct Args {
    mib: usize,
    /// The server's chunk size (`files.chunk_bytes`), MiB.
    chunk_mib: usize,
    /// Only the S3 rows.
    s3_only: bool,
    /// Measured runs of the main upload and its baseline (medians).
    runs: usize,
    /// imlog (and a second baseline) send S3 parts unsigned.
    unsigned: bool,
    window: usize,
    latency_mib: usize,
    latency_window: usize,
}

fn args() -> Args {
    let mut a = Args {
        mib: 1024,
        chunk_mib: 8,
        s3_only: false,
        unsigned: false,
        runs: 3,
        window: 8,
        latency_mib: 256,
        latency_window: 16,
    };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|a| a == "--s3-only") {
        argv.remove(i);
        a.s3_only = true;
    }
    if let Some(i) = argv.iter().position(|a| a == "--unsigned-payload") {
        argv.remove(i);
        a.unsigned = true;
    }
    for (flag, value) in numeric_flags(&argv, USAGE) {
        let value = value as usize;
        match flag.as_str() {
            "--mib" => a.mib = value,
            "--chunk-mib" => a.chunk_mib = value,
            "--runs" => a.runs = value.max(1),
            "--window" => a.window = value,
            "--latency-mib" => a.latency_mib = value,
            "--latency-window" => a.latency_window = value,
            other => bad_flag(&format!("unknown flag {other}"), USAGE),
        }
    }
    if a.mib == 0 || a.chunk_mib == 0 || a.window == 0 || a.latency_window == 0 {
        bad_flag(
            "--mib, --chunk-mib, --window, --latency-window: at least 1",
            USAGE,
        );
    }
    if a.latency_mib > a.mib {
        bad_flag("--latency-mib: at most --mib", USAGE);
    }
    a
}

fn random(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v.into()
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn declaration(name: &str, data: &Bytes, sha: &str) -> DeclareUpload {
    DeclareUpload {
        name: FileName::parse(name).unwrap(),
        size: data.len() as u64,
        content_type: ContentType::parse("application/octet-stream").unwrap(),
        sha256: Sha256Hex::parse(sha).unwrap(),
        kind: UploadKind::File,
    }
}

/// Declare → all chunks (`window` in flight) → completed: MB/s.
async fn upload(files: &FilesClient, data: &Bytes, sha: &str, window: usize) -> f64 {
    let started = Instant::now();
    let upload = files
        .declare(&declaration("bench.bin", data, sha))
        .await
        .expect("declare");
    files
        .send_missing(&upload, data, window)
        .await
        .expect("chunks");
    let sent = started.elapsed();
    let done = files
        .wait_ended(upload.upload_id, Duration::from_secs(600))
        .await
        .expect("completion");
    eprintln!(
        "  window {window}: chunks acked after {:.2} s, completed after {:.2} s",
        sent.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        done.state,
        imlog_protocol::UploadStateView::Completed,
        "{:?}",
        done.failure
    );
    mbps(data.len(), started.elapsed())
}

/// Several uploads of `data` at once: aggregate MB/s.
async fn uploads_at_once(
    files: &FilesClient,
    data: &Bytes,
    sha: &str,
    n: usize,
    window: usize,
) -> f64 {
    let declared = declaration("bench.bin", data, sha);
    let started = Instant::now();
    let mut all: FuturesUnordered<_> = (0..n)
        .map(|_| files.upload(&declared, data.clone(), window))
        .collect();
    while let Some(done) = all.next().await {
        done.expect("upload");
    }
    mbps(data.len() * n, started.elapsed())
}

/// A completed upload read back in 8 MiB ranges, 4 in flight: MB/s.
async fn download(files: &FilesClient, upload_id: imlog_protocol::UploadId, size: usize) -> f64 {
    let started = Instant::now();
    let ranges: Vec<String> = (0..size)
        .step_by(PART)
        .map(|start| format!("bytes={start}-{}", (start + PART).min(size) - 1))
        .collect();
    let mut read = 0usize;
    let mut gets = futures::stream::iter(ranges.iter().map(|r| files.download(upload_id, Some(r))))
        .buffer_unordered(4);
    while let Some(got) = gets.next().await {
        read += got.expect("range").body.len();
    }
    assert_eq!(read, size);
    mbps(size, started.elapsed())
}

/// Baseline: the bytes as one fsync'd file in `dir`.
fn fsynced_write(dir: &std::path::Path, data: &[u8]) -> f64 {
    let path = dir.join("baseline.bin");
    let started = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    let took = started.elapsed();
    std::fs::remove_file(path).unwrap();
    mbps(data.len(), took)
}

/// Baseline: a raw object_store multipart upload, 8 MiB parts, 4 in flight.
async fn raw_multipart(store: &Arc<dyn ObjectStore>, data: &Bytes) -> f64 {
    let path = object_store::path::Path::from(format!("bench/{}", uuid::Uuid::new_v4().simple()));
    let started = Instant::now();
    let mut upload = store.put_multipart(&path).await.expect("multipart");
    let mut parts = FuturesUnordered::new();
    for start in (0..data.len()).step_by(PART) {
        if parts.len() >= 4 {
            let part: object_store::Result<()> = parts.next().await.unwrap();
            part.expect("part");
        }
        let part = data.slice(start..(start + PART).min(data.len()));
        parts.push(upload.put_part(PutPayload::from_bytes(part)));
    }
    while let Some(part) = parts.next().await {
        let part: object_store::Result<()> = part;
        part.expect("part");
    }
    upload.complete().await.expect("complete");
    let took = started.elapsed();
    store.delete(&path).await.expect("delete");
    mbps(data.len(), took)
}

/// Baseline: ranged reads straight from the store, 8 MiB, 4 in flight.
async fn raw_ranged_reads(store: &Arc<dyn ObjectStore>, data: &Bytes) -> f64 {
    let path = object_store::path::Path::from(format!("bench/{}", uuid::Uuid::new_v4().simple()));
    let mut w = object_store::WriteMultipart::new_with_chunk_size(
        store.put_multipart(&path).await.unwrap(),
        PART,
    );
    w.write(data);
    w.finish().await.expect("write");
    let started = Instant::now();
    let ranges: Vec<std::ops::Range<u64>> = (0..data.len())
        .step_by(PART)
        .map(|s| s as u64..((s + PART).min(data.len())) as u64)
        .collect();
    let mut read = 0usize;
    let mut gets = futures::stream::iter(ranges.into_iter().map(|r| store.get_range(&path, r)))
        .buffer_unordered(4);
    while let Some(got) = gets.next().await {
        read += got.expect("range").len();
    }
    let took = started.elapsed();
    assert_eq!(read, data.len());
    store.delete(&path).await.expect("delete");
    mbps(data.len(), took)
}

/// A TCP proxy to `target` that holds each segment (up to 64 KiB) 5 ms in
/// each direction, one segment at a time per connection; its address.
async fn delaying_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw));
            tokio::spawn(pump(sr, cw));
        }
    });
    addr
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

struct Store {
    name: &'static str,
    settings: Box<dyn Fn(&mut Settings)>,
    /// The same store, for the baselines.
    raw: Arc<dyn ObjectStore>,
}

async fn token(addr: std::net::SocketAddr) -> String {
    let mut c = Client::connect(&format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    c.register("bencher", "password-123")
        .await
        .expect("register");
    c.login("bencher", "password-123")
        .await
        .expect("login")
        .token
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    eprintln!(
        "starting a private Postgres (fsync on) in {}",
        dir.path().display()
    );
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    std::fs::set_permissions(&pg_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cluster = imlog_postgres::PrivateCluster::start(&pg_dir)
        .await
        .expect("private Postgres");
    let data = random(a.mib * MIB);
    let sha = sha256_hex(&data);
    let local_dir = dir.path().join("objects");
    std::fs::create_dir_all(&local_dir).unwrap();
    let mut stores = vec![Store {
        name: "local filesystem",
        settings: Box::new({
            let local_dir = local_dir.clone();
            move |s: &mut Settings| {
                s.storage.backend = StorageBackend::Local;
                s.storage.local_dir = Some(local_dir.clone());
            }
        }),
        raw: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&local_dir).unwrap()),
    }];
    if let Some(s3) = imlog_tests::s3_env() {
        let unsigned = a.unsigned;
        let raw = object_store::aws::AmazonS3Builder::new()
            .with_unsigned_payload(unsigned)
            .with_endpoint(&s3.endpoint)
            .with_bucket_name(&s3.bucket)
            .with_region("us-east-1")
            .with_access_key_id(&s3.access_key)
            .with_secret_access_key(&s3.secret_key)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("s3");
        stores.push(Store {
            name: "S3 (s3s-fs)",
            settings: Box::new(move |s: &mut Settings| imlog_tests::use_s3(s, &s3)),
            raw: Arc::new(raw),
        });
    }
    println!("| store | what | imlog | baseline, same run | ratio |");
    println!("|---|---|---|---|---|");
    if a.s3_only {
        stores.retain(|s| !s.name.starts_with("local"));
    }
    for (i, store) in stores.iter().enumerate() {
        let db = format!("files_{i}");
        {
            let (c, conn) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
        }
        let mut s = Settings {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        s.postgres.url = Some(Secret::from(cluster.url_for(&db)));
        s.log.backend = LogBackend::Postgres;
        s.files.max_bytes_in_flight = 64 << 30;
        s.files.chunk_bytes = (a.chunk_mib * MIB) as u64;
        s.storage.s3.unsigned_payload = a.unsigned;
        (store.settings)(&mut s);
        let app = Application::build(s, Roles::ALL).await.expect("imlog");
        let files = FilesClient::new(&format!("http://{}", app.addr()), &token(app.addr()).await);

        let local = store.name.starts_with("local");
        let baseline_name = match (local, a.unsigned) {
            (true, _) => "fsync'd file write",
            (false, false) => "object_store multipart, 8 MiB × 4",
            (false, true) => "object_store multipart, 8 MiB × 4, unsigned",
        };
        let baseline_once = || async {
            if local {
                fsynced_write(dir.path(), &data)
            } else {
                raw_multipart(&store.raw, &data).await
            }
        };
        // Warm both up (a fresh cluster and store are slow at first), then
        // take the median of `runs`, alternating, as BASELINES.md does.
        baseline_once().await;
        upload(&files, &data, &sha, a.window).await;
        let (mut baselines, mut windows) = (Vec::new(), Vec::new());
        for _ in 0..a.runs {
            baselines.push(baseline_once().await);
            windows.push(upload(&files, &data, &sha, a.window).await);
        }
        let baseline = median(&mut baselines);
        eprintln!(
            "  baseline runs {baselines:.0?} MB/s, window {} runs {windows:.0?} MB/s",
            a.window
        );
        let row = |what: &str, ours: f64, base_name: &str, base: f64| {
            println!(
                "| {} | {what} | {ours:.0} MB/s | {base_name}: {base:.0} MB/s | {:.2} |",
                store.name,
                ours / base
            );
        };
        let windowed = median(&mut windows);
        row(
            &format!(
                "{} MiB upload, window {} (median of {})",
                a.mib, a.window, a.runs
            ),
            windowed,
            baseline_name,
            baseline,
        );
        let stop_and_wait = upload(&files, &data, &sha, 1).await;
        row(
            &format!("{} MiB upload, window 1 (stop-and-wait)", a.mib),
            stop_and_wait,
            baseline_name,
            baseline,
        );
        let quarter = data.slice(..data.len() / 4);
        let quarter_sha = sha256_hex(&quarter);
        let parallel =
            uploads_at_once(&files, &quarter, &quarter_sha, 4, a.window.div_ceil(2)).await;
        row(
            &format!("4 uploads of {} MiB at once", a.mib / 4),
            parallel,
            baseline_name,
            baseline,
        );
        let done = files
            .upload(
                &declaration("read.bin", &data, &sha),
                data.clone(),
                a.window,
            )
            .await
            .unwrap();
        let ours = download(&files, done.upload_id, data.len()).await;
        let raw = raw_ranged_reads(&store.raw, &data).await;
        row(
            "ranged download, 8 MiB × 4 in flight",
            ours,
            "ranged reads from the store",
            raw,
        );

        if store.name.starts_with("local") {
            let proxy = delaying_proxy(app.addr()).await;
            let slow = files.with_base(&format!("http://{proxy}"));
            let small = data.slice(..a.latency_mib * MIB);
            let small_sha = sha256_hex(&small);
            let windowed = upload(&slow, &small, &small_sha, a.latency_window).await;
            let stop_and_wait = upload(&slow, &small, &small_sha, 1).await;
            println!(
                "| {} | {} MiB upload over +5 ms per direction, window {} vs 1 | {windowed:.0} MB/s | stop-and-wait: {stop_and_wait:.0} MB/s | {:.1}× |",
                store.name,
                a.latency_mib,
                a.latency_window,
                windowed / stop_and_wait
            );
        }
        app.stop().await;
        // What the uploads left in the store (the local one goes with the
        // temporary directory).
        let (c, conn) = tokio_postgres::connect(&cluster.url_for(&db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for row in c
            .query("SELECT object_key FROM imlog.uploads", &[])
            .await
            .unwrap()
        {
            let key: String = row.get(0);
            let _ = store.raw.delete(&object_store::path::Path::from(key)).await;
        }
    }
    cluster.stop().expect("stopping Postgres");
}
