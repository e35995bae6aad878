//! TeamTalk-style file transfer: online (relayed by the gateway, nothing
//! stored) in both orders of joining, refused, cancelled mid-way, a
//! receiver that disconnects, a wrong role, stale tasks; offline (through
//! the resumable upload path) across a server restart, and expiry.

use imlog_client::{sha256_hex, FilesClient, RelayClient, RelayFrame};
use imlog_protocol::{
    ContentType, DeclareUpload, ErrorCode, FileName, Request, Sha256Hex, TaskId, TransferMode,
    TransferState, TransferView, UploadKind,
};
use imlog_tests::{fresh_settings, settings_env, Backend, Client, Proc, Push, TestApp, UserId};
use serde_json::Value;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_imlog-proc");
const WAIT: Duration = Duration::from_secs(15);
const BLOCK: u64 = 256 * 1024;

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

struct Pair {
    alice: Client,
    alice_token: String,
    bob: Client,
    bob_id: UserId,
    bob_token: String,
}

/// Alice and Bob, friends.
async fn friends(app: &TestApp) -> Pair {
    let (mut alice, alice_id, alice_token) = app.user("alice").await;
    let (mut bob, bob_id, bob_token) = app.user("bob").await;
    alice.friend_apply(bob_id, "", "").await.unwrap();
    bob.friend_accept(alice_id, "").await.unwrap();
    Pair {
        alice,
        alice_token,
        bob,
        bob_id,
        bob_token,
    }
}

async fn offer_online(alice: &mut Client, to: UserId, size: u64) -> TransferView {
    alice
        .call(&Request::OfferFile {
            user_id: to,
            mode: TransferMode::Online,
            name: Some(FileName::parse("notes.txt").unwrap()),
            size: Some(size),
            upload_id: None,
        })
        .await
        .expect("offer")
}

/// The next `transfer` push for `task` on a chat connection.
async fn transfer_push(client: &mut Client, task: TaskId) -> (TransferState, String) {
    let push = imlog_tests::push_matching(
        client,
        |p| matches!(p, Push::Transfer { task_id, .. } if *task_id == task),
    )
    .await;
    let Push::Transfer { state, reason, .. } = push else {
        unreachable!()
    };
    (state, reason)
}

/// Pushes for `task` until a final state; returns the states seen.
async fn states_until_final(client: &mut Client, task: TaskId) -> Vec<TransferState> {
    let mut seen = Vec::new();
    loop {
        let (state, _) = transfer_push(client, task).await;
        seen.push(state);
        if state.is_final() {
            return seen;
        }
    }
}

async fn joined(relay: &mut RelayClient) -> Value {
    relay
        .next_event(WAIT)
        .await
        .expect("the relay answers a join")
}

/// The receiver pulls the whole file (up to 4 pulls outstanding) while the
/// sender answers each pull; returns the bytes received.
async fn relay_whole(sender: &mut RelayClient, receiver: &mut RelayClient, data: &[u8]) -> Vec<u8> {
    let size = data.len() as u64;
    let mut next_pull = 0u64;
    let mut outstanding = 0;
    let mut received = Vec::with_capacity(data.len());
    while (received.len() as u64) < size {
        while outstanding < 4 && next_pull < size {
            let n = BLOCK.min(size - next_pull);
            receiver.pull(next_pull, n).await.unwrap();
            next_pull += n;
            outstanding += 1;
        }
        // The sender answers the pulls it is passed.
        loop {
            match sender.next(WAIT).await.unwrap() {
                RelayFrame::Event(e) if e["event"] == "pull" => {
                    let offset = e["offset"].as_u64().unwrap() as usize;
                    let n = e["size"].as_u64().unwrap() as usize;
                    sender
                        .send_block(data[offset..offset + n].to_vec())
                        .await
                        .unwrap();
                    break;
                }
                RelayFrame::Event(_) => {}
                other => panic!("sender got {other:?}"),
            }
        }
        loop {
            match receiver.next(WAIT).await.unwrap() {
                RelayFrame::Block(block) => {
                    received.extend_from_slice(&block);
                    outstanding -= 1;
                    break;
                }
                RelayFrame::Event(e) if e["event"] == "state" => {}
                other => panic!("receiver got {other:?}"),
            }
        }
    }
    received
}

async fn online_in_both_orders(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut p = friends(&app).await;
    for sender_first in [true, false] {
        let data = file(3 * 1024 * 1024 + 17);
        let offer = offer_online(&mut p.alice, p.bob_id, data.len() as u64).await;
        let pushed =
            imlog_tests::push_matching(&mut p.bob, |p| matches!(p, Push::FileOffer(_))).await;
        let Push::FileOffer(seen) = pushed else {
            unreachable!()
        };
        assert_eq!(
            (seen.task_id, seen.name.as_str(), seen.size),
            (offer.task_id, "notes.txt", data.len() as u64)
        );
        let url = offer
            .relay_url
            .clone()
            .expect("an online offer says where to connect");
        let (mut sender, mut receiver) = if sender_first {
            let mut s = RelayClient::join(&url, &p.alice_token, "sender")
                .await
                .unwrap();
            assert_eq!(joined(&mut s).await["state"], "waiting_receiver");
            let r = RelayClient::join(&url, &p.bob_token, "receiver")
                .await
                .unwrap();
            (s, r)
        } else {
            let mut r = RelayClient::join(&url, &p.bob_token, "receiver")
                .await
                .unwrap();
            assert_eq!(joined(&mut r).await["state"], "waiting_sender");
            let s = RelayClient::join(&url, &p.alice_token, "sender")
                .await
                .unwrap();
            (s, r)
        };
        sender.wait_state("waiting_transfer", WAIT).await.unwrap();
        receiver.wait_state("waiting_transfer", WAIT).await.unwrap();
        let got = relay_whole(&mut sender, &mut receiver, &data).await;
        assert_eq!(sha256_hex(&got), sha256_hex(&data));
        receiver
            .send(serde_json::json!({"op": "done"}))
            .await
            .unwrap();
        sender.wait_state("done", WAIT).await.unwrap();
        let first = if sender_first {
            TransferState::WaitingReceiver
        } else {
            TransferState::WaitingSender
        };
        let expected = vec![
            first,
            TransferState::WaitingTransfer,
            TransferState::Transferring,
            TransferState::Done,
        ];
        assert_eq!(
            states_until_final(&mut p.alice, offer.task_id).await,
            expected
        );
        assert_eq!(
            states_until_final(&mut p.bob, offer.task_id).await,
            expected
        );
        // Ended: nobody joins again.
        let mut late = RelayClient::join(&url, &p.bob_token, "receiver")
            .await
            .unwrap();
        assert_eq!(joined(&mut late).await["error"]["code"], "conflict");
    }
    app.stop().await;
}

imlog_tests::on_backends! {
    an_online_transfer_is_relayed_in_either_order_of_joining => online_in_both_orders;
}

/// Refused (by op, and on the relay), cancelled mid-way, the receiver
/// gone, the wrong role or user, too many pulls, a stale task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_transfers_end_every_other_way() {
    let (mut s, _dir) = fresh_settings(Backend::Postgres).await;
    s.files.transfer_timeout_secs = 2;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let mut p = friends(&app).await;
    let (mut carol, _, carol_token) = app.user("carol").await;
    let size = 2 * 1024 * 1024;

    // Refused before anyone joined.
    let offer = offer_online(&mut p.alice, p.bob_id, size).await;
    let e = carol
        .call::<Value>(&Request::RefuseFile {
            task_id: offer.task_id,
        })
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::Forbidden), "not a party");
    let e = p
        .alice
        .call::<Value>(&Request::RefuseFile {
            task_id: offer.task_id,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.error_code(),
        Some(ErrorCode::Forbidden),
        "only the receiver refuses"
    );
    p.bob
        .call::<Value>(&Request::RefuseFile {
            task_id: offer.task_id,
        })
        .await
        .unwrap();
    assert_eq!(
        transfer_push(&mut p.alice, offer.task_id).await.0,
        TransferState::Refused
    );
    let url = offer.relay_url.unwrap();
    let mut late = RelayClient::join(&url, &p.alice_token, "sender")
        .await
        .unwrap();
    assert_eq!(joined(&mut late).await["error"]["code"], "conflict");

    // Wrong role, wrong user.
    let offer = offer_online(&mut p.alice, p.bob_id, size).await;
    let url = offer.relay_url.clone().unwrap();
    for (token, role) in [
        (&p.bob_token, "sender"),
        (&p.alice_token, "receiver"),
        (&carol_token, "receiver"),
    ] {
        let mut wrong = RelayClient::join(&url, token, role).await.unwrap();
        assert_eq!(
            joined(&mut wrong).await["error"]["code"],
            "forbidden",
            "{role}"
        );
    }
    let mut bad = RelayClient::join(&url, "not-a-token", "receiver")
        .await
        .unwrap();
    assert_eq!(joined(&mut bad).await["error"]["code"], "bad_token");

    // Refused on the relay; then a sender that joins is told it ended.
    let mut receiver = RelayClient::join(&url, &p.bob_token, "receiver")
        .await
        .unwrap();
    assert_eq!(joined(&mut receiver).await["state"], "waiting_sender");
    receiver
        .send(serde_json::json!({"op": "refuse"}))
        .await
        .unwrap();
    receiver.wait_state("refused", WAIT).await.unwrap();
    assert_eq!(
        transfer_push(&mut p.alice, offer.task_id).await.0,
        TransferState::WaitingSender
    );
    assert_eq!(
        transfer_push(&mut p.alice, offer.task_id).await.0,
        TransferState::Refused
    );

    // Cancelled by the sender mid-way: the receiver is told and closed.
    let data = file(size as usize);
    let offer = offer_online(&mut p.alice, p.bob_id, size).await;
    let url = offer.relay_url.clone().unwrap();
    let mut sender = RelayClient::join(&url, &p.alice_token, "sender")
        .await
        .unwrap();
    let mut receiver = RelayClient::join(&url, &p.bob_token, "receiver")
        .await
        .unwrap();
    receiver.wait_state("waiting_transfer", WAIT).await.unwrap();
    receiver.pull(0, BLOCK).await.unwrap();
    sender.wait_state("transferring", WAIT).await.unwrap();
    let pull = sender.next_event(WAIT).await.unwrap();
    assert_eq!(
        (pull["event"].as_str(), pull["offset"].as_u64()),
        (Some("pull"), Some(0))
    );
    sender
        .send_block(data[..BLOCK as usize].to_vec())
        .await
        .unwrap();
    // Bounded: four more pulls are allowed outstanding, not five.
    for i in 1..=5u64 {
        receiver.pull(i * BLOCK, BLOCK).await.unwrap();
    }
    let mut blocks = 0;
    let mut refused = false;
    while blocks < 1 || !refused {
        match receiver.next(WAIT).await.unwrap() {
            RelayFrame::Block(b) => {
                assert_eq!(b, data[..BLOCK as usize]);
                blocks += 1;
            }
            RelayFrame::Event(e) if e["event"] == "error" => {
                assert_eq!(e["error"]["code"], "conflict", "{e}");
                refused = true;
            }
            RelayFrame::Event(_) => {}
            other => panic!("{other:?}"),
        }
    }
    sender
        .send(serde_json::json!({"op": "cancel"}))
        .await
        .unwrap();
    let ended = receiver.wait_state("cancelled", WAIT).await.unwrap();
    assert_eq!(ended["reason"], "the sender cancelled");
    assert!(matches!(
        receiver.next(WAIT).await.unwrap(),
        RelayFrame::Closed(_)
    ));
    assert_eq!(
        states_until_final(&mut p.bob, offer.task_id).await.last(),
        Some(&TransferState::Cancelled)
    );

    // The receiver disconnects: the sender is told.
    let offer = offer_online(&mut p.alice, p.bob_id, size).await;
    let url = offer.relay_url.clone().unwrap();
    let mut sender = RelayClient::join(&url, &p.alice_token, "sender")
        .await
        .unwrap();
    let receiver = RelayClient::join(&url, &p.bob_token, "receiver")
        .await
        .unwrap();
    sender.wait_state("waiting_transfer", WAIT).await.unwrap();
    receiver.close().await;
    let ended = sender.wait_state("cancelled", WAIT).await.unwrap();
    assert_eq!(ended["reason"], "the receiver left");

    // The receiver leaves with blocks queued for it: the sender is told.
    let offer = offer_online(&mut p.alice, p.bob_id, 4 * 1024 * 1024).await;
    let url = offer.relay_url.clone().unwrap();
    let mut sender = RelayClient::join(&url, &p.alice_token, "sender")
        .await
        .unwrap();
    let mut receiver = RelayClient::join(&url, &p.bob_token, "receiver")
        .await
        .unwrap();
    receiver.wait_state("waiting_transfer", WAIT).await.unwrap();
    let mib = 1024 * 1024;
    for i in 0..4u64 {
        receiver.pull(i * mib, mib).await.unwrap();
    }
    let mut answered = 0;
    while answered < 4 {
        if let RelayFrame::Event(e) = sender.next(WAIT).await.unwrap() {
            if e["event"] == "pull" {
                sender.send_block(vec![7u8; mib as usize]).await.unwrap();
                answered += 1;
            }
        }
    }
    receiver.close().await;
    let ended = sender.wait_state("cancelled", WAIT).await.unwrap();
    assert_eq!(ended["reason"], "the receiver left");

    // Cancelled by op on the chat connection while both are on the relay:
    // the relay closes both.
    let offer = offer_online(&mut p.alice, p.bob_id, size).await;
    let url = offer.relay_url.clone().unwrap();
    let mut sender = RelayClient::join(&url, &p.alice_token, "sender")
        .await
        .unwrap();
    let mut receiver = RelayClient::join(&url, &p.bob_token, "receiver")
        .await
        .unwrap();
    receiver.wait_state("waiting_transfer", WAIT).await.unwrap();
    p.alice
        .call::<Value>(&Request::CancelFile {
            task_id: offer.task_id,
        })
        .await
        .unwrap();
    let ended = receiver.wait_state("cancelled", WAIT).await.unwrap();
    assert_eq!(ended["reason"], "the sender cancelled");
    assert!(matches!(
        receiver.next(WAIT).await.unwrap(),
        RelayFrame::Closed(_)
    ));
    sender.wait_state("cancelled", WAIT).await.unwrap();
    let states = states_until_final(&mut p.bob, offer.task_id).await;
    assert_eq!(states.last(), Some(&TransferState::Cancelled));
    assert!(
        p.bob
            .next_push(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none_or(
                |push| !matches!(push, Push::Transfer { task_id, .. } if task_id == offer.task_id)
            ),
        "nothing after the final state"
    );

    // Nobody joins: the task times out.
    let offer = offer_online(&mut p.alice, p.bob_id, size).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (state, reason) = transfer_push(&mut p.bob, offer.task_id).await;
        if state == TransferState::Error {
            assert!(reason.contains("timed out"), "{reason}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    // Only friends are offered files.
    let e = carol
        .call::<TransferView>(&Request::OfferFile {
            user_id: p.bob_id,
            mode: TransferMode::Online,
            name: Some(FileName::parse("x").unwrap()),
            size: Some(1),
            upload_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::Forbidden));
    app.stop().await;
}

/// Offline: Alice uploads through the resumable path and offers it; the
/// server restarts (kill -9); Bob lists it at login, downloads it,
/// acknowledges it, and it is gone from his list and his reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_file_survives_a_restart_and_goes_once_fetched() {
    let (s, dir) = fresh_settings(Backend::Postgres).await;
    let mut s = s;
    s.storage.local_dir = Some(dir.path().join("objects"));
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
    let mut alice = Client::connect(&serve.ws_url()).await.unwrap();
    let alice_id = alice.register("alice", "password-123").await.unwrap();
    let alice_token = alice.login("alice", "password-123").await.unwrap().token;
    let mut bob = Client::connect(&serve.ws_url()).await.unwrap();
    let bob_id = bob.register("bob", "password-123").await.unwrap();
    let bob_token = bob.login("bob", "password-123").await.unwrap().token;
    alice.friend_apply(bob_id, "", "").await.unwrap();
    bob.friend_accept(alice_id, "").await.unwrap();

    let bytes = bytes::Bytes::from(file(6 * 1024 * 1024 + 5));
    let files = FilesClient::new(&format!("http://{}", serve.addr), &alice_token);
    let declared = DeclareUpload {
        name: FileName::parse("thesis.pdf").unwrap(),
        size: bytes.len() as u64,
        content_type: ContentType::parse("application/pdf").unwrap(),
        sha256: Sha256Hex::parse(sha256_hex(&bytes)).unwrap(),
        kind: UploadKind::File,
    };
    let upload = files.upload(&declared, bytes.clone(), 2).await.unwrap();
    let offer: TransferView = alice
        .call(&Request::OfferFile {
            user_id: bob_id,
            mode: TransferMode::Offline,
            name: None,
            size: None,
            upload_id: Some(upload.upload_id),
        })
        .await
        .unwrap();
    assert_eq!(
        (offer.name.as_str(), offer.size),
        ("thesis.pdf", bytes.len() as u64)
    );
    serve.kill9().await;

    let serve = Proc::spawn(BIN, &args, &env).await;
    let mut bob = Client::connect(&serve.ws_url()).await.unwrap();
    bob.auth(&bob_token).await.unwrap();
    let pending: Vec<TransferView> = bob.call(&Request::OfflineFiles {}).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].task_id, pending[0].upload_id),
        (offer.task_id, Some(upload.upload_id))
    );
    let bob_files = FilesClient::new(&format!("http://{}", serve.addr), &bob_token);
    let got = bob_files.download(upload.upload_id, None).await.unwrap();
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
    bob.call::<Value>(&Request::AckOfflineFile {
        task_id: offer.task_id,
    })
    .await
    .unwrap();
    let pending: Vec<TransferView> = bob.call(&Request::OfflineFiles {}).await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    let e = bob_files
        .download(upload.upload_id, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.error_code(),
        Some(ErrorCode::Forbidden),
        "the record went"
    );
    serve.kill9().await;
}

/// An offline file nobody fetches expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfetched_offline_files_expire() {
    let (mut s, _dir) = fresh_settings(Backend::Postgres).await;
    s.files.offline_expire_secs = 1;
    let app = TestApp::spawn_with(s, imlog::app::Roles::ALL).await;
    let mut p = friends(&app).await;
    let bytes = bytes::Bytes::from(file(1000));
    let files = FilesClient::new(&app.http_url, &p.alice_token);
    let declared = DeclareUpload {
        name: FileName::parse("a.txt").unwrap(),
        size: bytes.len() as u64,
        content_type: ContentType::parse("text/plain").unwrap(),
        sha256: Sha256Hex::parse(sha256_hex(&bytes)).unwrap(),
        kind: UploadKind::File,
    };
    let upload = files.upload(&declared, bytes, 1).await.unwrap();
    let offer: TransferView = p
        .alice
        .call(&Request::OfferFile {
            user_id: p.bob_id,
            mode: TransferMode::Offline,
            name: None,
            size: None,
            upload_id: Some(upload.upload_id),
        })
        .await
        .unwrap();
    let (state, reason) = transfer_push(&mut p.bob, offer.task_id).await;
    assert_eq!(state, TransferState::Error);
    assert!(reason.starts_with("expired"), "{reason}");
    let pending: Vec<TransferView> = p.bob.call(&Request::OfflineFiles {}).await.unwrap();
    assert!(pending.is_empty());
    app.stop().await;
}
