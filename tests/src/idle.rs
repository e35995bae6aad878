//! Idle WebSocket connections and what they cost a server: shared by the
//! CI test of the per-connection memory (`tests/robustness.rs`) and
//! `imlog-conns-bench`.

use futures::{SinkExt, StreamExt};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A process's resident memory, from `/proc` (Linux), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Opens `n` connections to `url` (`ws://ip:port/…`) that each send `frame`
/// and read its reply (which must be `"ok":true`), and leaves them idle; the
/// growth of the server's (`pid`) RSS per connection, in KiB, a moment later.
/// They connect `from` the given loopback address: one address's ~28,000
/// ephemeral ports would not outlast an earlier batch's TIME_WAIT sockets.
pub async fn per_connection(
    url: &str,
    pid: u32,
    n: usize,
    frame: &str,
    from: Ipv4Addr,
) -> (f64, Vec<Socket>) {
    let before = rss_bytes(pid);
    let server: SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("ws://ip:port/…");
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((from, 0).into()).expect("bind");
        let stream = socket.connect(server).await.expect("connect");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("upgrade");
        ws.send(Message::text(frame)).await.expect("send");
        let reply = ws.next().await.expect("a reply").expect("a frame");
        assert!(
            reply.to_text().unwrap_or("").contains("\"ok\":true"),
            "{reply}"
        );
        open.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_bytes(pid).saturating_sub(before);
    (grown as f64 / n as f64 / 1024.0, open)
}
