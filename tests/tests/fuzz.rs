//! Fuzzing the client protocol: a million generated and mutated frames
//! through the frame parser, and mutated frames of every op through live
//! connections — no panic, no hung connection, every frame answered.
//!
//! `IMLOG_FUZZ_FRAMES` (default 1,000,000) sets the parser's count,
//! `IMLOG_FUZZ_LIVE_FRAMES` (default 12,000) the live one's, and
//! `IMLOG_FUZZ_SEED` the seed (printed, so a failure can be replayed).

use imlog_client::ClientError;
use imlog_tests::{Backend, Client, TestApp};
use serde_json::{json, Value};
use std::time::Instant;

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    let seed = env_or(
        "IMLOG_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    ) | 1;
    eprintln!("IMLOG_FUZZ_SEED={seed}");
    seed
}

/// Ids the requests refer to: real ones where the test has them.
struct Ids {
    users: Vec<i64>,
    threads: Vec<i64>,
    message: i64,
}

/// One valid request of every op (docs/PROTOCOL.md).
fn corpus(ids: &Ids) -> Vec<Value> {
    let user = ids.users[1];
    let thread = ids.threads[0];
    let group = ids.threads[ids.threads.len() - 1];
    let upload = "5b0c7a9e-2f5d-4f1e-9a53-0c8e1f2a3b4c";
    vec![
        json!({"op": "register", "name": "fuzzer", "password": "password-123"}),
        json!({"op": "login", "name": "fuzzer", "password": "password-123", "device": "fuzz"}),
        json!({"op": "auth", "token": "00".repeat(32)}),
        json!({"op": "ping"}),
        json!({"op": "logout"}),
        json!({"op": "open_private_thread", "user_id": user}),
        json!({"op": "send_messages", "thread_id": thread, "items": [
            {"unique_id": "f-1", "body": "hello"},
            {"unique_id": "f-2", "kind": "image", "upload_id": upload, "body": "", "preview": "data:image/png;base64,iVBORw0KGgo="}
        ]}),
        json!({"op": "send_messages", "thread_id": thread, "retry": true, "items": [{"unique_id": "f-1", "body": "hello"}]}),
        json!({"op": "sync_threads", "after": 0, "limit": 100}),
        json!({"op": "sync_messages", "thread_id": thread, "since": 0, "limit": 20}),
        json!({"op": "sync_messages", "thread_id": thread, "before": ids.message, "limit": 20}),
        json!({"op": "mark_read", "thread_id": thread, "up_to": ids.message}),
        json!({"op": "recall", "thread_id": thread, "message_id": ids.message}),
        json!({"op": "read_receipts", "thread_id": thread, "after": 0, "limit": 100}),
        json!({"op": "update_profile", "nick": "Fuzz", "description": "d", "sex": "other", "avatar": ""}),
        json!({"op": "profile", "user_id": user}),
        json!({"op": "search_users", "query": "al", "after": 0, "limit": 20}),
        json!({"op": "friend_apply", "user_id": user, "greeting": "hi", "alias": "b"}),
        json!({"op": "friend_accept", "user_id": user, "alias": "a"}),
        json!({"op": "friend_reject", "user_id": user}),
        json!({"op": "friend_requests", "direction": "incoming", "after": 0, "limit": 100}),
        json!({"op": "friends", "after": 0, "limit": 100}),
        json!({"op": "create_group", "name": "fuzzers", "members": [user]}),
        json!({"op": "members", "thread_id": group, "after": 0, "limit": 100}),
        json!({"op": "add_members", "thread_id": group, "members": [user]}),
        json!({"op": "remove_member", "thread_id": group, "user_id": user}),
        json!({"op": "leave_group", "thread_id": group}),
        json!({"op": "rename_group", "thread_id": group, "name": "renamed"}),
        json!({"op": "mute_member", "thread_id": group, "user_id": user, "until": "2030-01-01T00:00:00Z"}),
        json!({"op": "mute_member", "thread_id": group, "user_id": user, "until": null}),
        json!({"op": "set_role", "thread_id": group, "user_id": user, "role": "admin"}),
        json!({"op": "transfer_ownership", "thread_id": group, "user_id": user}),
        json!({"op": "offer_file", "user_id": user, "mode": "online", "name": "f.txt", "size": 10}),
        json!({"op": "offer_file", "user_id": user, "mode": "offline", "upload_id": upload}),
        json!({"op": "refuse_file", "task_id": upload}),
        json!({"op": "cancel_file", "task_id": upload}),
        json!({"op": "offline_files"}),
        json!({"op": "ack_offline_file", "task_id": upload}),
    ]
}

/// A value of a random kind, often a hostile one.
fn hostile(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(i64::MAX),
        5 => json!(u64::MAX),
        6 => json!(1e308),
        7 => json!(-0.5),
        8 => json!(""),
        9 => json!("x".repeat(rng.below(70_000))),
        10 => json!("\u{0}\u{1}\u{7f}\u{202e}\u{fffd}😀"),
        11 => json!([]),
        12 => json!({}),
        13 => {
            // Deeply nested arrays.
            let depth = 1 + rng.below(300);
            serde_json::from_str(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
                .unwrap_or(Value::Null)
        }
        14 => json!("99999999999999999999999999"),
        _ => json!(rng.next() as i64),
    }
}

/// Mutates a value in place: a field retyped, removed or added, somewhere.
fn mutate_value(rng: &mut Rng, value: &mut Value, depth: usize) {
    match value {
        Value::Object(map) if !map.is_empty() && depth < 4 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            match rng.below(6) {
                0 => {
                    map.remove(key);
                }
                1 => {
                    map.insert(format!("unknown{}", rng.below(10)), hostile(rng));
                }
                2 | 3 => {
                    if let Some(inner) = map.get_mut(key) {
                        mutate_value(rng, inner, depth + 1);
                    }
                }
                _ => {
                    map.insert(key.clone(), hostile(rng));
                }
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 4 => {
            let i = rng.below(items.len());
            match rng.below(4) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    let n = rng.below(150);
                    items.extend(std::iter::repeat_n(copy, n));
                }
                _ => mutate_value(rng, &mut items[i], depth + 1),
            }
        }
        other => *other = hostile(rng),
    }
}

/// A frame: a mutated request, or text mangled below the JSON level.
fn frame(rng: &mut Rng, corpus: &[Value], live: bool) -> String {
    let mut request = corpus[rng.below(corpus.len())].clone();
    if let Value::Object(map) = &mut request {
        map.insert("req".into(), json!(rng.below(1_000_000)));
    }
    for _ in 0..1 + rng.below(3) {
        mutate_value(rng, &mut request, 0);
    }
    if rng.chance(12) {
        if let Value::Object(map) = &mut request {
            let ops = ["", "PING", "nope", "send_message", "ping\u{0}", "__proto__"];
            map.insert("op".into(), json!(ops[rng.below(ops.len())]));
        }
    }
    let mut text = request.to_string();
    match rng.below(if live { 14 } else { 8 }) {
        0 => {
            let cut = rng.below(text.len().max(1));
            text = text.chars().take(cut).collect();
        }
        1 => {
            let at = rng.below(text.len().max(1));
            let junk = ["\"", "{", "}", ",", "\\", "\u{0}", "]", ":"][rng.below(8)];
            let at = (0..=at)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.insert_str(at, junk);
        }
        2 => text = format!("[{text}]"),
        3 => {
            // Duplicate keys: the last one wins in serde_json.
            if let Some(rest) = text.strip_prefix('{') {
                text = format!("{{\"op\":\"ping\",{rest}");
            }
        }
        _ => {}
    }
    text
}

/// Parsing only matters when the text is a reply frame we can read.
fn well_formed_reply(reply: &Value) -> bool {
    reply.get("req").is_some()
        && match reply.get("ok") {
            Some(Value::Bool(true)) => reply.get("data").is_some(),
            Some(Value::Bool(false)) => reply
                .pointer("/error/code")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty()),
            _ => false,
        }
}

#[test]
fn the_frame_parser_survives_a_million_mutated_frames() {
    let frames = env_or("IMLOG_FUZZ_FRAMES", 1_000_000);
    let mut rng = Rng(seed());
    let ids = Ids {
        users: vec![1, 2, 3],
        threads: vec![4, 5],
        message: 6,
    };
    let corpus = corpus(&ids);
    let started = Instant::now();
    let (mut parsed, mut refused) = (0u64, 0u64);
    for i in 0..frames {
        let text = frame(&mut rng, &corpus, false);
        let outcome = std::panic::catch_unwind(|| imlog_protocol::parse(&text));
        match outcome {
            Ok((_, Ok(_))) => parsed += 1,
            Ok((_, Err(_))) => refused += 1,
            Err(_) => panic!("frame {i} panicked the parser: {text:?}"),
        }
    }
    eprintln!(
        "{frames} frames in {:?}: {parsed} parsed into requests, {refused} refused",
        started.elapsed()
    );
    // Both kinds, or the mutations are not exercising anything.
    assert!(parsed > frames / 100 && refused > frames / 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_op_survives_mutated_frames_on_live_connections() {
    let frames = env_or("IMLOG_FUZZ_LIVE_FRAMES", 12_000);
    let mut rng = Rng(seed());
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol"] {
        users.push(app.user(name).await);
    }
    let (alice, bob, carol) = (users[0].1, users[1].1, users[2].1);
    let thread = users[0].0.open_private_thread(bob).await.expect("thread");
    let message = users[0]
        .0
        .send_text(thread, "seed", "a message to point at")
        .await
        .expect("send");
    let group = users[0]
        .0
        .create_group("fuzz", &[bob, carol])
        .await
        .expect("group");
    let ids = Ids {
        users: vec![alice.get(), bob.get(), carol.get()],
        threads: vec![thread.get(), group.get()],
        message: message.get(),
    };
    // Live: no register/login/logout — each would cost a password hash or
    // a new session; the parser test covers their frames.
    let corpus: Vec<Value> = corpus(&ids)
        .into_iter()
        .filter(|r| !matches!(r["op"].as_str(), Some("register" | "login" | "logout")))
        .collect();

    let started = Instant::now();
    let mut answered = 0u64;
    let mut reconnects = 0u64;
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..frames {
        let who = (i % 3) as usize;
        let text = frame(&mut rng, &corpus, true);
        let (client, _, token) = &mut users[who];
        match client.request_raw(text.clone()).await {
            Ok(reply) => {
                assert!(
                    well_formed_reply(&reply),
                    "frame {i}: a malformed reply {reply} to {text:.300}"
                );
                let code = reply
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("ok");
                *codes.entry(code.to_owned()).or_default() += 1;
                answered += 1;
            }
            Err(ClientError::Timeout) => panic!("frame {i} hung its connection: {text:.300}"),
            // A frame may end its connection only as the protocol says:
            // too large (1009).
            Err(ClientError::Closed { code, reason }) => {
                assert_eq!(
                    code, 1009,
                    "frame {i} closed the connection ({code} {reason}): {text:.300}"
                );
                reconnects += 1;
                let mut again = Client::connect(&app.ws_url).await.expect("reconnect");
                again.auth(token).await.expect("auth again");
                *client = again;
            }
            // Over 1 MiB the server ends the connection; a client still
            // writing its frame may see a reset instead of the 1009
            // (docs/PROTOCOL.md, Transport).
            Err(ClientError::Transport(reason)) if text.len() > 1024 * 1024 => {
                eprintln!(
                    "frame {i} ({} bytes) ended its connection: {reason}",
                    text.len()
                );
                reconnects += 1;
                let mut again = Client::connect(&app.ws_url).await.expect("reconnect");
                again.auth(token).await.expect("auth again");
                *client = again;
            }
            Err(e) => panic!("frame {i} ({} bytes): {e} after {text:.300}", text.len()),
        }
    }
    eprintln!(
        "{frames} live frames in {:?}: {answered} answered, {reconnects} reconnects; outcomes {codes:?}",
        started.elapsed()
    );
    // Still serving, and every op was reached with something valid.
    for (client, _, _) in &mut users {
        client.ping().await.expect("still answering");
    }
    assert!(
        codes.get("ok").copied().unwrap_or(0) > frames / 50,
        "{codes:?}"
    );
    app.stop().await;
}
