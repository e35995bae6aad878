//! `imlog-conns-bench`: memory per idle WebSocket connection of `imlog serve`
//! next to a bare tokio-tungstenite server with the same read buffer, both
//! measured in this run (the server process's RSS before and after).
//!
//!   cargo build --release -p imlog -p imlog-tests
//!   target/release/imlog-conns-bench [--connections N] [--imlog PATH]
//!
//! Needs `IMLOG_TEST_POSTGRES_URL` (a superuser URL, as infra/test.sh sets);
//! `imlog` is `target/release/imlog` beside this binary unless `--imlog`.
//! Connections: anonymous ones that sent a `ping`, then ones attached to a
//! session with `auth` (what logged-in users hold).

use futures::{SinkExt, StreamExt};
use imlog_tests::idle::per_connection;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The read buffer both servers use (imlog: `gateway/src/http.rs`).
const READ_BUFFER: usize = 1024;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The baseline: accept WebSockets and answer each text frame, nothing else.
async fn bare_server(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("listening");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(0);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() && ws.send(Message::text(r#"{"ok":true}"#)).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn spawn(program: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening") => break,
            Some(_) => {}
            None => panic!("{} exited before listening", program.display()),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port()
}

/// `n` idle connections to a fresh `imlog serve`: anonymous ones that sent a
/// ping, or ones attached to a session with `auth`.
async fn measure_imlog(
    imlog: &std::path::Path,
    admin: &str,
    n: usize,
    auth: bool,
) -> (f64, Option<Vec<Duration>>) {
    let db = format!("imlog_conns_{}_{auth}", std::process::id());
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("Postgres");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create database");
    let db_url = format!(
        "{}/{db}",
        admin.rsplit_once('/').expect("a database in the URL").0
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let env = [
        ("IMLOG_POSTGRES__URL", db_url),
        ("IMLOG_GATEWAY__LOGIN_TIMEOUT_SECS", "3600".to_owned()),
        ("IMLOG_GATEWAY__HEARTBEAT_TIMEOUT_SECS", "3600".to_owned()),
        ("IMLOG_GATEWAY__MAX_CONNECTIONS", (n + 10).to_string()),
        ("IMLOG_LOG_LEVEL", "warn".to_owned()),
        ("IMLOG_GATEWAY__STRANGERS_MAY_CHAT", "true".to_owned()),
    ];
    let listen = format!("127.0.0.1:{port}");
    let dir_arg = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut serve = spawn(
        imlog,
        &["serve", "--data-dir", &dir_arg, "--listen", &listen],
        &env,
    );
    let url = format!("ws://{listen}/ws");
    let frame = if auth {
        let mut user = imlog_tests::Client::connect(&url).await.expect("connect");
        user.register("idler", "password-123")
            .await
            .expect("register");
        let token = user
            .login("idler", "password-123")
            .await
            .expect("login")
            .token;
        format!(r#"{{"req":1,"op":"auth","token":"{token}"}}"#)
    } else {
        r#"{"req":1,"op":"ping"}"#.to_owned()
    };
    // Let the start settle (pools, projections) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = std::net::Ipv4Addr::new(127, 0, 0, if auth { 4 } else { 3 });
    let (per, open) = per_connection(&url, serve.id(), n, &frame, from).await;
    // Among the idle ones, a few active users still get their pushes fast.
    let latencies = if auth {
        Some(push_latencies(&url).await)
    } else {
        None
    };
    drop(open);
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = client.batch_execute(&format!("DROP DATABASE {db}")).await;
    (per, latencies)
}

/// Messages the active users send while the idle connections are held.
const ACTIVE_MESSAGES: usize = 500;

/// Alice sends to Bob every 10 ms; from just before each send to Bob's push.
async fn push_latencies(url: &str) -> Vec<Duration> {
    use imlog_protocol::Push;
    let mut alice = imlog_tests::Client::connect(url).await.expect("connect");
    alice
        .register("alice", "password-123")
        .await
        .expect("register");
    alice.login("alice", "password-123").await.expect("login");
    let mut bob = imlog_tests::Client::connect(url).await.expect("connect");
    let bob_id = bob.register("bob", "password-123").await.expect("register");
    bob.login("bob", "password-123").await.expect("login");
    let thread = alice.open_private_thread(bob_id).await.expect("thread");
    let receiver = tokio::spawn(async move {
        let mut arrived = vec![None; ACTIVE_MESSAGES];
        let mut seen = 0;
        while seen < ACTIVE_MESSAGES {
            match bob.next_push(Duration::from_secs(10)).await {
                Ok(Some(Push::Message(m))) => {
                    if let Ok(i) = m.body.parse::<usize>() {
                        if i < ACTIVE_MESSAGES && arrived[i].is_none() {
                            arrived[i] = Some(std::time::Instant::now());
                            seen += 1;
                        }
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        arrived
    });
    let mut sent = Vec::with_capacity(ACTIVE_MESSAGES);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..ACTIVE_MESSAGES {
        tick.tick().await;
        sent.push(std::time::Instant::now());
        alice
            .send_text(thread, &format!("m-{i}"), &i.to_string())
            .await
            .expect("send");
    }
    let arrived = receiver.await.expect("receiver");
    let mut latencies: Vec<Duration> = sent
        .iter()
        .zip(&arrived)
        .map(|(s, a)| a.map_or(Duration::MAX, |a| a.duration_since(*s)))
        .collect();
    latencies.sort();
    latencies
}

#[tokio::main]
async fn main() {
    if let Some(port) = arg("--bare-server") {
        bare_server(port.parse().expect("a port")).await;
        return;
    }
    let n: usize = arg("--connections").map_or(5_000, |v| v.parse().expect("a number"));
    let me = std::env::current_exe().expect("own path");
    let imlog = arg("--imlog")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| me.with_file_name("imlog"));
    let admin = std::env::var("IMLOG_TEST_POSTGRES_URL")
        .expect("IMLOG_TEST_POSTGRES_URL (a superuser URL; infra/test.sh's Postgres will do)");

    // The baseline, in a process of its own.
    let port = free_port();
    let mut bare = spawn(&me, &["--bare-server", &port.to_string()], &[]);
    let url = format!("ws://127.0.0.1:{port}/");
    let from = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let (baseline, open) = per_connection(&url, bare.id(), n, r#"{"op":"ping"}"#, from).await;
    drop(open);
    let _ = bare.kill();
    let _ = bare.wait();

    // imlog serve over a fresh database, once per kind of connection (freed
    // memory is not given back, so each kind gets a process of its own).
    let (anonymous, _) = measure_imlog(&imlog, &admin, n, false).await;
    let (authed, latencies) = measure_imlog(&imlog, &admin, n, true).await;
    let latencies = latencies.expect("measured with the logged-in connections");
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];

    println!("memory per idle WebSocket connection, {n} connections, server RSS growth:");
    println!("  bare tokio-tungstenite, {READ_BUFFER} B read buffer: {baseline:.2} KiB");
    println!(
        "  imlog, anonymous (sent a ping):       {anonymous:.2} KiB ({:.2}× the baseline)",
        anonymous / baseline
    );
    println!(
        "  imlog, logged in (auth):              {authed:.2} KiB ({:.2}× the baseline)",
        authed / baseline
    );
    println!(
        "  100,000 logged-in connections would hold ~{:.0} MiB",
        authed * 100_000.0 / 1024.0
    );
    println!(
        "pushes to an active user among them ({ACTIVE_MESSAGES} messages, one per 10 ms): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (send to push)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );
}
