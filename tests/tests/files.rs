//! Files: resumable uploads into a real object store (the local filesystem
//! and a real S3 server, s3s-fs), through the HTTP endpoints, on both log
//! backends; ranged downloads, authorisation on every request, expiry.

use bytes::Bytes;
use imlog::config::{Settings, StorageBackend};
use imlog_client::{sha256_hex, FilesClient};
use imlog_protocol::{
    ContentType, DeclareUpload, ErrorCode, FileName, Sha256Hex, UploadId, UploadKind,
    UploadStateView,
};
use imlog_tests::{fresh_settings, s3_env, settings_env, use_s3, Backend, Proc, S3Env, TestApp};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_imlog-proc");
const MIB: usize = 1024 * 1024;
/// 5 + 5 + 1 MiB: three chunks at the smallest chunk size.
const SIZE: usize = 11 * MIB;

fn data(len: usize, seed: u32) -> Bytes {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn declaration(name: &str, bytes: &[u8]) -> DeclareUpload {
    DeclareUpload {
        name: FileName::parse(name).unwrap(),
        size: bytes.len() as u64,
        content_type: ContentType::parse("image/png").unwrap(),
        sha256: Sha256Hex::parse(sha256_hex(bytes)).unwrap(),
        kind: UploadKind::Image,
    }
}

fn chunk(bytes: &Bytes, index: usize) -> Bytes {
    let start = index * 5 * MIB;
    bytes.slice(start..(start + 5 * MIB).min(bytes.len()))
}

#[derive(Clone)]
enum Store {
    Local,
    S3(S3Env),
}

impl Store {
    fn s3() -> Option<Store> {
        s3_env().map(Store::S3)
    }
}

/// Fresh settings over `store` with the smallest chunks, the local store
/// in the data directory.
async fn settings_on(store: &Store, backend: Backend) -> (Settings, tempfile::TempDir) {
    let (mut s, dir) = fresh_settings(backend).await;
    s.files.chunk_bytes = 1; // raised to S3's 5 MiB minimum
    match store {
        Store::Local => {
            s.storage.backend = StorageBackend::Local;
            s.storage.local_dir = Some(dir.path().join("objects"));
        }
        Store::S3(s3) => use_s3(&mut s, s3),
    }
    (s, dir)
}

async fn files_client(app: &TestApp, name: &str) -> FilesClient {
    let (_, _, token) = app.user(name).await;
    FilesClient::new(&app.http_url, &token)
}

fn code(e: imlog_client::ClientError) -> ErrorCode {
    e.error_code()
        .unwrap_or_else(|| panic!("not a server error: {e}"))
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The multipart upload id the declaration recorded (S3 only).
async fn multipart_id(app: &TestApp, upload_id: UploadId) -> String {
    let (db, conn) = tokio_postgres::connect(&app.postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = db
        .query_one(
            "SELECT multipart_id FROM imlog.uploads WHERE upload_id = $1",
            &[&upload_id.get()],
        )
        .await
        .unwrap();
    row.get::<_, Option<String>>(0)
        .expect("a multipart id on S3")
}

/// The parts s3s-fs holds of a multipart upload, with their sizes.
fn s3_parts(s3: &S3Env, multipart_id: &str) -> Vec<(String, u64)> {
    let dir = s3
        .dir
        .as_ref()
        .expect("IMLOG_TEST_S3_DIR names the s3s-fs directory");
    let prefix = format!(".upload_id-{multipart_id}.part-");
    let mut parts: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let part = name.strip_prefix(&prefix)?.to_owned();
            Some((part, e.metadata().ok()?.len()))
        })
        .collect();
    parts.sort();
    parts
}

/// The server is killed (-9) with two of three chunks stored, out of order;
/// after a restart the progress query lists exactly those, the client sends
/// only the missing one, and the download is the file, whole and by range.
async fn resume_after_kill9(store: Store, backend: Backend) {
    let (s, dir) = settings_on(&store, backend).await;
    let env = settings_env(&s);
    let data_dir = dir.path().join("data");
    let args = [
        "serve",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let serve = Proc::spawn(BIN, &args, &env).await;
    let mut c = imlog_client::Client::connect(&serve.ws_url())
        .await
        .unwrap();
    c.register("alice", "password-123").await.unwrap();
    let token = c.login("alice", "password-123").await.unwrap().token;
    let files = FilesClient::new(&format!("http://{}", serve.addr), &token);

    let bytes = data(SIZE, 1);
    let upload = files
        .declare(&declaration("photo.png", &bytes))
        .await
        .unwrap();
    assert_eq!(upload.chunk_size, 5 * MIB as u64, "S3's minimum part size");
    assert_eq!(upload.chunks, 3);
    let id = upload.upload_id;
    files
        .put_chunk_sha256(id, 2, chunk(&bytes, 2))
        .await
        .unwrap();
    files.put_chunk(id, 0, chunk(&bytes, 0)).await.unwrap();
    serve.kill9().await;

    let serve = Proc::spawn(BIN, &args, &env).await;
    let files = FilesClient::new(&format!("http://{}", serve.addr), &token);
    let progress = files.progress(id).await.expect("progress after the crash");
    assert_eq!(progress.state, UploadStateView::Uploading);
    assert_eq!(
        progress.acked,
        vec![0, 2],
        "what was acked before the crash"
    );
    assert_eq!(progress.acked_bytes, (5 * MIB + MIB) as u64);
    files.send_missing(&progress, &bytes, 4).await.unwrap();
    let done = files.wait_ended(id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state, UploadStateView::Completed, "{:?}", done.failure);

    let whole = files.download(id, None).await.unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(sha256_hex(&whole.body), sha256_hex(&bytes));
    assert_eq!(whole.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
    assert_eq!(whole.etag, Some(format!("\"{}\"", sha256_hex(&bytes))));
    let part = files
        .download(id, Some("bytes=5242000-5243999"))
        .await
        .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(
        part.content_range.as_deref(),
        Some(format!("bytes 5242000-5243999/{SIZE}").as_str())
    );
    assert_eq!(part.body, bytes.slice(5_242_000..5_244_000));
    let tail = files.download(id, Some("bytes=-100")).await.unwrap();
    assert_eq!(tail.body, bytes.slice(SIZE - 100..));
    serve.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_uploads_on_the_local_store() {
    resume_after_kill9(Store::Local, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_uploads_on_s3() {
    if let Some(store) = Store::s3() {
        resume_after_kill9(store, Backend::Postgres).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_uploads_on_kafka() {
    if imlog_tests::available(Backend::Kafka) {
        resume_after_kill9(Store::Local, Backend::Kafka).await;
    }
}

/// A chunk whose bytes do not match its digest, of the wrong size, past
/// the end, or from someone else is refused and nothing is stored; a
/// repeated chunk is acknowledged again; two uploads at once complete.
async fn bad_chunks_are_refused(store: Store) {
    let (s, dir) = settings_on(&store, Backend::Postgres).await;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let alice = files_client(&app, "alice").await;
    let mallory = files_client(&app, "mallory").await;
    let bytes = data(SIZE, 2);
    let upload = alice.declare(&declaration("a.png", &bytes)).await.unwrap();
    let id = upload.upload_id;

    let corrupted = {
        let mut v = chunk(&bytes, 0).to_vec();
        v[12345] ^= 1;
        Bytes::from(v)
    };
    let claimed = imlog_protocol::ChunkChecksum::Sha256(sha256_hex(&chunk(&bytes, 0)));
    let e = alice
        .put_chunk_claiming(id, 0, corrupted.clone(), &claimed)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::BadChecksum);
    let claimed = imlog_protocol::ChunkChecksum::Crc32c(0x1234_5678);
    let e = alice
        .put_chunk_claiming(id, 0, corrupted, &claimed)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::BadChecksum, "CRC-32C too");
    let short = chunk(&bytes, 0).slice(..MIB);
    let e = alice.put_chunk(id, 0, short).await.unwrap_err();
    assert_eq!(
        code(e),
        ErrorCode::BadRequest,
        "a part under 5 MiB that is not the last"
    );
    let e = alice.put_chunk(id, 3, chunk(&bytes, 2)).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::BadRequest, "no chunk 3");
    let e = mallory
        .put_chunk(id, 0, chunk(&bytes, 0))
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
    let e = mallory.progress(id).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
    let e = FilesClient::new(&app.http_url, "not-a-token")
        .progress(id)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::BadToken);
    let e = alice.progress(UploadId::random()).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::NotFound);
    let progress = alice.progress(id).await.unwrap();
    assert!(
        progress.acked.is_empty(),
        "nothing was stored: {:?}",
        progress.acked
    );
    match &store {
        Store::Local => {
            // Only the upload's staging file, made at declaration, with
            // nothing written into it (sparse: no blocks).
            use std::os::unix::fs::MetadataExt;
            let objects = dir.path().join("objects");
            let stored = files_under(&objects);
            assert_eq!(stored.len(), 1, "{stored:?}");
            assert!(stored[0].starts_with("staging"), "{stored:?}");
            let blocks = std::fs::metadata(objects.join(&stored[0]))
                .unwrap()
                .blocks();
            assert_eq!(blocks, 0, "refused chunks were written");
        }
        Store::S3(s3) => {
            let parts = s3_parts(s3, &multipart_id(&app, id).await);
            assert!(parts.is_empty(), "refused chunks reached S3: {parts:?}");
        }
    }

    // Two uploads at once, windows of chunks in flight, one chunk twice.
    let other = data(7 * MIB, 3);
    let second = alice.declare(&declaration("b.png", &other)).await.unwrap();
    alice.put_chunk(id, 1, chunk(&bytes, 1)).await.unwrap();
    let again = alice.put_chunk(id, 1, chunk(&bytes, 1)).await.unwrap();
    assert_eq!(again.index, 1);
    if let Store::S3(s3) = &store {
        // Every part S3 holds is a whole chunk, or the last.
        alice.put_chunk(id, 2, chunk(&bytes, 2)).await.unwrap();
        let parts = s3_parts(s3, &multipart_id(&app, id).await);
        let sizes: Vec<u64> = parts.iter().map(|(_, size)| *size).collect();
        assert_eq!(sizes, vec![5 * MIB as u64, MIB as u64], "{parts:?}");
    }
    let first = alice.progress(id).await.unwrap();
    let (a, b) = tokio::join!(
        alice.send_missing(&first, &bytes, 3),
        alice.send_missing(&second, &other, 3)
    );
    a.unwrap();
    b.unwrap();
    for (upload_id, bytes) in [(id, &bytes), (second.upload_id, &other)] {
        let done = alice
            .wait_ended(upload_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(done.state, UploadStateView::Completed, "{:?}", done.failure);
        assert_eq!(done.acked, vec![0, 1, 2][..done.chunks as usize].to_vec());
        let got = alice.download(upload_id, None).await.unwrap();
        assert_eq!(sha256_hex(&got.body), sha256_hex(bytes));
    }
    let e = alice.put_chunk(id, 0, chunk(&bytes, 0)).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Conflict, "the upload has ended");
    if let Store::Local = store {
        let staged = files_under(&dir.path().join("objects/staging"));
        assert!(
            staged.is_empty(),
            "staged chunks outlived completion: {staged:?}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunks_are_refused_on_the_local_store() {
    bad_chunks_are_refused(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunks_are_refused_on_s3() {
    if let Some(store) = Store::s3() {
        bad_chunks_are_refused(store).await;
    }
}

/// Bytes that do not hash to the declared digest fail the upload with a
/// reason, and no object is left; a name full of `..` is only a name.
async fn whole_file_checks(store: Store) {
    let (s, dir) = settings_on(&store, Backend::Postgres).await;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let alice = files_client(&app, "alice").await;

    let bytes = data(6 * MIB, 4);
    let mut lying = declaration("lie.png", &bytes);
    lying.sha256 = Sha256Hex::parse(sha256_hex(b"something else")).unwrap();
    let upload = alice.declare(&lying).await.unwrap();
    alice.send_missing(&upload, &bytes, 2).await.unwrap();
    let failed = alice
        .wait_ended(upload.upload_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(failed.state, UploadStateView::Failed);
    let reason = failed.failure.unwrap_or_default();
    assert!(reason.starts_with("checksum_mismatch"), "{reason}");
    assert!(
        reason.contains(&sha256_hex(&bytes)),
        "says what was found: {reason}"
    );
    let e = alice.download(upload.upload_id, None).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Conflict);

    let evil = "../../etc/passwd";
    let upload = alice
        .upload(&declaration(evil, &bytes), bytes.clone(), 2)
        .await
        .unwrap();
    assert_eq!(upload.state, UploadStateView::Completed);
    assert_eq!(upload.name, evil, "the name is kept, to be shown");
    if let Store::Local = store {
        let objects = dir.path().join("objects");
        let stored = files_under(&objects);
        assert_eq!(stored.len(), 1, "one object, the good upload: {stored:?}");
        let path = stored[0].to_string_lossy().into_owned();
        let (namespace, name) = path.split_once('/').unwrap();
        assert_eq!(namespace, "uploads");
        assert!(
            name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}"
        );
        assert!(!objects.join(evil).exists() && !objects.join("../etc").exists());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_files_are_verified_on_the_local_store() {
    whole_file_checks(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_files_are_verified_on_s3() {
    if let Some(store) = Store::s3() {
        whole_file_checks(store).await;
    }
}

/// Only those allowed read a file, checked on every request: a stranger is
/// refused every range, not just the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_download_any_range() {
    let (s, _dir) = settings_on(&Store::Local, Backend::Postgres).await;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let alice = files_client(&app, "alice").await;
    let bob = files_client(&app, "bob").await;
    let bytes = data(MIB, 5);
    let upload = alice
        .upload(&declaration("secret.png", &bytes), bytes.clone(), 1)
        .await
        .unwrap();
    let id = upload.upload_id;
    for range in [
        None,
        Some("bytes=0-"),
        Some("bytes=1000-2000"),
        Some("bytes=-10"),
    ] {
        let e = bob.download(id, range).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::Forbidden, "{range:?}");
    }
    let e = alice
        .download(id, Some(&format!("bytes={}-", MIB)))
        .await
        .unwrap();
    assert_eq!(e.status, 416);
    assert_eq!(e.content_range, Some(format!("bytes */{MIB}")));
    let mine = alice.download(id, Some("bytes=10-19")).await.unwrap();
    assert_eq!((mine.status, mine.body.clone()), (206, bytes.slice(10..20)));
    app.stop().await;
}

/// An upload nobody finishes expires: it is recorded as failed and the
/// chunks it had stored are deleted from the store.
async fn abandoned_uploads_expire(store: Store) {
    let (mut s, dir) = settings_on(&store, Backend::Postgres).await;
    s.files.expire_after_secs = 1;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let alice = files_client(&app, "alice").await;
    let bytes = data(SIZE, 6);
    let upload = alice
        .declare(&declaration("gone.png", &bytes))
        .await
        .unwrap();
    let id = upload.upload_id;
    alice.put_chunk(id, 0, chunk(&bytes, 0)).await.unwrap();
    alice.put_chunk(id, 2, chunk(&bytes, 2)).await.unwrap();
    let ended = alice.wait_ended(id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(ended.state, UploadStateView::Failed);
    assert!(ended.failure.unwrap_or_default().starts_with("expired"));
    let e = alice.put_chunk(id, 1, chunk(&bytes, 1)).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Conflict);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = match &store {
            Store::Local => files_under(&dir.path().join("objects")).len(),
            Store::S3(s3) => s3_parts(s3, &multipart_id(&app, id).await).len(),
        };
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} parts left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_on_the_local_store() {
    abandoned_uploads_expire(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_on_s3() {
    if let Some(store) = Store::s3() {
        abandoned_uploads_expire(store).await;
    }
}

/// The largest file and the bytes in flight per user are limited; a
/// cancelled upload frees its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_limit_file_size_and_bytes_in_flight() {
    let (mut s, _dir) = settings_on(&Store::Local, Backend::Postgres).await;
    s.files.max_file_bytes = 8 * MIB as u64;
    s.files.max_bytes_in_flight = 10 * MIB as u64;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let alice = files_client(&app, "alice").await;
    let e = alice
        .declare(&declaration("big", &data(9 * MIB, 7)))
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::QuotaExceeded);
    let six = data(6 * MIB, 8);
    let first = alice.declare(&declaration("one", &six)).await.unwrap();
    let e = alice.declare(&declaration("two", &six)).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::QuotaExceeded);
    alice.cancel(first.upload_id).await.unwrap();
    let cancelled = alice.progress(first.upload_id).await.unwrap();
    assert_eq!(cancelled.state, UploadStateView::Failed);
    alice
        .declare(&declaration("two", &six))
        .await
        .expect("room again");
    app.stop().await;
}

const PREVIEW: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// Posts one media message showing `upload_id`; returns its id.
async fn send_media(
    client: &mut imlog_tests::Client,
    thread: imlog_tests::ThreadId,
    unique_id: &str,
    upload_id: UploadId,
) -> Result<imlog_tests::MessageId, imlog_protocol::WireError> {
    let sent: imlog_protocol::Sent = client
        .call(&imlog_protocol::Request::SendMessages {
            thread_id: thread,
            items: vec![imlog_protocol::OutgoingItem::media(
                unique_id,
                UploadKind::Image,
                upload_id,
                "look",
                Some(PREVIEW.to_owned()),
            )],
            retry: false,
        })
        .await
        .map_err(|e| match e {
            imlog_client::ClientError::Server(w) => w,
            other => panic!("{other}"),
        })?;
    let item = sent.items.into_iter().next().unwrap();
    match (item.message_id, item.error) {
        (Some(id), None) => Ok(id),
        (_, Some(e)) => Err(e),
        _ => panic!("neither id nor error"),
    }
}

/// The media settlements pushed to `client` within `wait`.
async fn settlements(
    client: &mut imlog_tests::Client,
    wait: Duration,
) -> Vec<(imlog_tests::MessageId, imlog_protocol::MediaState)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match client.next_push(left).await.expect("push") {
            Some(imlog_tests::Push::MediaSettled {
                message_id, state, ..
            }) => seen.push((message_id, state)),
            Some(_) => {}
            None => break,
        }
    }
    seen
}

/// An image message goes out before its bytes: both sides see it
/// "uploading" with its preview, then are pushed "uploaded" once; members
/// may download it, others not; one posted after the upload is "uploaded"
/// at once; a recall takes the members' access away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_messages_turn_uploaded_and_reach_both_sides() {
    use imlog_protocol::MediaState;
    let (s, _dir) = settings_on(&Store::Local, Backend::Postgres).await;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let (mut alice, _, alice_token) = app.user("alice").await;
    let (mut bob, bob_id, bob_token) = app.user("bob").await;
    let (_, _, carol_token) = app.user("carol").await;
    let thread = alice.open_private_thread(bob_id).await.unwrap();
    let alice_files = FilesClient::new(&app.http_url, &alice_token);
    let bob_files = FilesClient::new(&app.http_url, &bob_token);
    let carol_files = FilesClient::new(&app.http_url, &carol_token);

    let bytes = data(6 * MIB, 9);
    let upload = alice_files
        .declare(&declaration("cat.png", &bytes))
        .await
        .unwrap();
    let id = upload.upload_id;
    let message_id = send_media(&mut alice, thread, "m-1", id).await.unwrap();
    let pushed =
        imlog_tests::push_matching(&mut bob, |p| matches!(p, imlog_tests::Push::Message(_))).await;
    let imlog_tests::Push::Message(view) = pushed else {
        unreachable!()
    };
    let media = view.media.expect("a media message");
    assert_eq!(
        (view.message_id, view.kind),
        (message_id, imlog_protocol::MessageKind::Image)
    );
    assert_eq!(
        (media.state, media.preview.as_str(), media.size),
        (MediaState::Uploading, PREVIEW, bytes.len() as u64)
    );
    assert_eq!(media.sha256, sha256_hex(&bytes));
    let e = bob_files.download(id, None).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Conflict, "not uploaded yet");

    alice_files.send_missing(&upload, &bytes, 2).await.unwrap();
    let at_alice = settlements(&mut alice, Duration::from_secs(5)).await;
    let at_bob = settlements(&mut bob, Duration::from_secs(1)).await;
    assert_eq!(
        at_alice,
        vec![(message_id, MediaState::Uploaded)],
        "the sender, once"
    );
    assert_eq!(
        at_bob,
        vec![(message_id, MediaState::Uploaded)],
        "the receiver, once"
    );
    let got = bob_files.download(id, Some("bytes=0-99")).await.unwrap();
    assert_eq!((got.status, got.body.clone()), (206, bytes.slice(..100)));
    let e = carol_files.download(id, None).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
    let synced = bob
        .sync_all_messages(thread, imlog_tests::MessageId::default())
        .await
        .unwrap();
    let stored = synced.iter().find(|m| m.message_id == message_id).unwrap();
    assert_eq!(
        stored.media.as_ref().map(|m| m.state),
        Some(MediaState::Uploaded)
    );

    // Uploaded first, posted after: "uploaded" at once, nothing to settle.
    let second = alice_files
        .upload(&declaration("dog.png", &bytes), bytes.clone(), 2)
        .await
        .unwrap();
    let later = send_media(&mut alice, thread, "m-2", second.upload_id)
        .await
        .unwrap();
    let pushed = imlog_tests::push_matching(
        &mut bob,
        |p| matches!(p, imlog_tests::Push::Message(m) if m.message_id == later),
    )
    .await;
    let imlog_tests::Push::Message(view) = pushed else {
        unreachable!()
    };
    assert_eq!(view.media.map(|m| m.state), Some(MediaState::Uploaded));
    assert!(settlements(&mut bob, Duration::from_millis(500))
        .await
        .is_empty());
    bob_files
        .download(second.upload_id, None)
        .await
        .expect("a member reads it");
    alice
        .call::<serde_json::Value>(&imlog_protocol::Request::Recall {
            thread_id: thread,
            message_id: later,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match bob_files.download(second.upload_id, None).await {
            Err(e) if e.error_code() == Some(ErrorCode::Forbidden) => break,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the recall did not take access away"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refused items: someone else's upload, the wrong kind, a bad preview.
    let (mut carol, _, _) = app.user("carol2").await;
    let carol_thread = carol.open_private_thread(bob_id).await.unwrap();
    let e = send_media(&mut carol, carol_thread, "x", id)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let file = alice_files
        .declare(&DeclareUpload {
            kind: UploadKind::File,
            ..declaration("f.bin", &bytes)
        })
        .await
        .unwrap();
    let e = send_media(&mut alice, thread, "y", file.upload_id)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
    let r = alice
        .request_raw(&format!(
            r#"{{"req":9,"op":"send_messages","thread_id":{},"items":[{{"unique_id":"z","kind":"image","upload_id":"{id}","preview":"javascript:alert(1)"}}]}}"#,
            thread.get()
        ))
        .await
        .unwrap();
    assert_eq!(r["data"]["items"][0]["error"]["code"], "bad_request", "{r}");
    app.stop().await;
}

/// An avatar goes through the upload path: only a completed image of your
/// own; then friends are pushed the profile and anyone may read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatars_are_uploads_anyone_may_read() {
    use imlog_protocol::{AvatarRef, ProfileView, Request};
    let (s, _dir) = settings_on(&Store::Local, Backend::Postgres).await;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let (mut alice, alice_id, alice_token) = app.user("alice").await;
    let (mut bob, bob_id, _) = app.user("bob").await;
    let (_, _, carol_token) = app.user("carol").await;
    alice.friend_apply(bob_id, "", "").await.unwrap();
    bob.friend_accept(alice_id, "").await.unwrap();
    let alice_files = FilesClient::new(&app.http_url, &alice_token);
    let carol_files = FilesClient::new(&app.http_url, &carol_token);
    let bytes = data(200_000, 10);
    let upload = alice_files
        .upload(&declaration("me.png", &bytes), bytes.clone(), 1)
        .await
        .unwrap();
    let e = carol_files
        .download(upload.upload_id, None)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden, "not yet an avatar");
    let set = |avatar: &str| Request::UpdateProfile {
        nick: None,
        description: None,
        sex: None,
        avatar: Some(AvatarRef::parse(avatar).unwrap()),
    };
    let e = bob
        .call::<ProfileView>(&set(&upload.upload_id.to_string()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"), "someone else's upload");
    let profile: ProfileView = alice
        .call(&set(&upload.upload_id.to_string()))
        .await
        .unwrap();
    assert_eq!(profile.avatar, Some(upload.upload_id.to_string()));
    let pushed = imlog_tests::push_matching(&mut bob, |p| {
        matches!(p, imlog_tests::Push::ProfileUpdated { .. })
    })
    .await;
    let imlog_tests::Push::ProfileUpdated { avatar, .. } = pushed else {
        unreachable!()
    };
    assert_eq!(avatar, Some(upload.upload_id.to_string()));
    let got = carol_files.download(upload.upload_id, None).await.unwrap();
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
    let r = alice
        .request_raw(r#"{"req":3,"op":"update_profile","avatar":"uploads/../../x"}"#)
        .await
        .unwrap();
    assert_eq!(r["error"]["code"], "bad_request");
    app.stop().await;
}

/// The "uploaded" push reaches both sides exactly once when the process
/// that completes uploads is killed right after completing (before the
/// message is updated), and again when it is killed right after updating
/// the message (before recording that it did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploaded_push_is_exactly_once_across_crashes() {
    use imlog_protocol::MediaState;
    let (s, _dir) = settings_on(&Store::Local, Backend::Postgres).await;
    let gateway_only = imlog::app::Roles {
        gateway: true,
        queries: true,
        projector: false,
    };
    let gw = TestApp::spawn_with(s.clone(), gateway_only).await;
    let env = settings_env(&s);
    let with_failpoint = |point: &str| {
        let mut env = env.clone();
        env.push(("IMLOG_FAILPOINT".into(), point.into()));
        env
    };
    let args = ["projector", "--listen", "127.0.0.1:0"];
    let setup = Proc::spawn(BIN, &args, &env).await;
    let (mut alice, _, alice_token) = gw.user("alice").await;
    let (mut bob, bob_id, _) = gw.user("bob").await;
    let thread = alice.open_private_thread(bob_id).await.unwrap();
    let files = FilesClient::new(&gw.http_url, &alice_token);
    setup.kill9().await;

    for (round, point) in ["upload_completion.ended", "media_delivery.settled"]
        .iter()
        .enumerate()
    {
        let projector = Proc::spawn(BIN, &args, &with_failpoint(point)).await;
        let bytes = data(6 * MIB, 20 + round as u32);
        let upload = files.declare(&declaration("p.png", &bytes)).await.unwrap();
        let message_id = send_media(
            &mut alice,
            thread,
            &format!("crash-{round}"),
            upload.upload_id,
        )
        .await
        .unwrap();
        files.send_missing(&upload, &bytes, 2).await.unwrap();
        projector.wait_exit(Duration::from_secs(60)).await;
        let projector = Proc::spawn(BIN, &args, &env).await;
        let done = files
            .wait_ended(upload.upload_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(done.state, UploadStateView::Completed);
        let at_alice = settlements(&mut alice, Duration::from_secs(8)).await;
        let at_bob = settlements(&mut bob, Duration::from_secs(1)).await;
        let want = vec![(message_id, MediaState::Uploaded)];
        assert_eq!(at_alice, want, "{point}: the sender, exactly once");
        assert_eq!(at_bob, want, "{point}: the receiver, exactly once");
        projector.kill9().await;
    }
    gw.stop().await;
}
