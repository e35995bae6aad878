//! The chaos test: a deployment of separate processes — two gateways, two
//! projectors, a Kafka-protocol broker (tansu) and Postgres — with clients
//! sending at a steady rate and retrying exactly as docs/PROTOCOL.md tells
//! them to (same `unique_id`, `retry: true`), while components are killed
//! with SIGKILL at random moments and started again. At the end every acked
//! message must be in sync exactly once under its acked id, each thread's
//! `seq` gapless, and a replay of the log equal to the live read model.
//!
//! `imlog-chaos` runs the long form; `tests/tests/chaos.rs` a short one.

use crate::{free_tcp_port, restartable_tcp_port, Client, Proc};
use imlog_client::ClientError;
use imlog_protocol::{MessageId, ThreadId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Users, in pairs that share a private thread.
    pub users: usize,
    /// Messages each user sends, in batches of [`BATCH`].
    pub per_user: usize,
    /// Pause between one user's batches.
    pub pace: Duration,
    /// Mean time between kills.
    pub kill_every: Duration,
    pub seed: u64,
}

const BATCH: usize = 5;

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: usize,
    pub acked: usize,
    /// Acked messages sent again with `retry` on purpose (each must be
    /// answered with its first id).
    pub resent: usize,
    /// Acked, but not in sync under its id.
    pub lost: usize,
    /// A `unique_id` stored more than once.
    pub duplicated: usize,
    /// What the first lost ones were acked as, and what sync has instead.
    pub lost_examples: Vec<String>,
    /// A thread whose `seq` skips.
    pub seq_gaps: usize,
    /// Kills per component.
    pub kills: BTreeMap<&'static str, usize>,
    /// Per component: the longest time from a kill to the next acked send.
    pub longest_outage: BTreeMap<&'static str, Duration>,
    pub replay_equals_live: bool,
    pub took: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "messages sent {}, acked {} (and {} acked ones resent with retry), lost {}, duplicated {}, threads with seq gaps {}",
            self.sent, self.acked, self.resent, self.lost, self.duplicated, self.seq_gaps
        )?;
        for example in &self.lost_examples {
            writeln!(f, "  lost: {example}")?;
        }
        let total: usize = self.kills.values().sum();
        writeln!(f, "kills survived: {total} ({:?})", self.kills)?;
        for (component, outage) in &self.longest_outage {
            writeln!(
                f,
                "  longest unavailability after killing {component}: {:.2} s",
                outage.as_secs_f64()
            )?;
        }
        write!(
            f,
            "replay equals the live read model: {}; took {:.1} s",
            self.replay_equals_live,
            self.took.as_secs_f64()
        )
    }
}

/// xorshift64*, seeded: a run can be repeated.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One restartable process of the deployment.
struct Component {
    name: &'static str,
    start: Box<dyn Fn() -> futures::future::BoxFuture<'static, Running> + Send + Sync>,
    running: Option<Running>,
}

enum Running {
    Imlog(Proc),
    Tansu(tokio::process::Child),
    /// The private cluster: the supervisor in this process restarts it.
    Postgres(PathBuf),
}

impl Running {
    async fn kill9(self) {
        match self {
            Running::Imlog(p) => p.kill9().await,
            Running::Tansu(mut child) => {
                let _ = child.kill().await;
            }
            Running::Postgres(pid_file) => {
                let pid = std::fs::read_to_string(pid_file)
                    .ok()
                    .and_then(|f| f.lines().next().map(|l| l.trim().to_owned()));
                // Only a live postmaster: a pid left in the file by one that
                // died may belong to another process by now.
                let postmaster = pid.as_ref().is_some_and(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("postgres"))
                });
                if let (true, Some(pid)) = (postmaster, pid) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid])
                        .status();
                }
            }
        }
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {port} after 60 s");
}

fn start_tansu(dir: PathBuf, port: u16) -> futures::future::BoxFuture<'static, Running> {
    Box::pin(async move {
        let url = format!("tcp://127.0.0.1:{port}");
        let child =
            tokio::process::Command::new(std::env::var("TANSU").unwrap_or_else(|_| "tansu".into()))
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    "sqlite://tansu.db",
                    "--silent",
                ])
                .current_dir(&dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("tansu (on PATH, or TANSU=path; infra/lib.sh installs it)");
        wait_for_port(port).await;
        Running::Tansu(child)
    })
}

fn start_imlog(
    bin: Arc<str>,
    role: &'static str,
    port: u16,
    env: Vec<(String, String)>,
) -> futures::future::BoxFuture<'static, Running> {
    Box::pin(async move {
        let listen = format!("127.0.0.1:{port}");
        // Started while Postgres or the broker is down, it exits: try again.
        for _ in 0..120 {
            if let Some(proc) = Proc::try_spawn(&bin, &[role, "--listen", &listen], &env).await {
                return Running::Imlog(proc);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("imlog {role} did not start within a minute")
    })
}

/// A user's connection, made again whenever it breaks.
struct Session {
    gateways: Vec<String>,
    token: String,
    client: Option<Client>,
}

impl Session {
    async fn client(&mut self, rng: &mut Rng) -> &mut Client {
        while self.client.is_none() {
            let url = &self.gateways[rng.below(self.gateways.len() as u64) as usize];
            let attempt = async {
                let mut c = Client::connect(url).await.ok()?;
                c.auth(&self.token).await.ok()?;
                Some(c)
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Some(c)) => self.client = Some(c),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.client.as_mut().expect("connected")
    }
}

/// A client logged in as `name` at `url`, retrying for up to 30 s while the
/// components come back.
async fn verdict_client(url: &str, name: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut c = Client::connect(url).await.map_err(|e| e.to_string())?;
            c.login(name, "password-123")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(c)
        };
        let failure = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(c)) => return c,
            Ok(Err(e)) => e,
            Err(_) => "timed out".into(),
        };
        assert!(
            Instant::now() < deadline,
            "no gateway lets {name} log in: {failure}"
        );
        eprintln!("chaos: verdict login: {failure}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `plan.per_user` messages, each acked exactly once: a batch whose
/// reply is lost (the connection broke, the reply timed out, `unavailable`)
/// is sent again, whole, with `retry: true`.
async fn sender(mut session: Session, thread: ThreadId, user: usize, plan: Plan, acks: Arc<Acks>) {
    let mut rng = Rng(plan.seed ^ (user as u64 + 1).wrapping_mul(0x9e37_79b9));
    let mut next = 0;
    while next < plan.per_user {
        let items: Vec<(String, String)> = (next..(next + BATCH).min(plan.per_user))
            .map(|i| {
                (
                    format!("u{user}-{i}"),
                    format!("message {i} of user {user}"),
                )
            })
            .collect();
        let mut retry = false;
        let mut pending: Vec<(String, String)> = items.clone();
        while !pending.is_empty() {
            let refs: Vec<(&str, &str)> = pending
                .iter()
                .map(|(u, b)| (u.as_str(), b.as_str()))
                .collect();
            let client = session.client(&mut rng).await;
            let send = async {
                if retry {
                    client.resend_texts(thread, &refs).await
                } else {
                    client.send_texts(thread, &refs).await
                }
            };
            let reply = tokio::time::timeout(Duration::from_secs(40), send).await;
            retry = true;
            match reply {
                Ok(Ok(sent)) => {
                    let mut again = Vec::new();
                    for (item, (unique_id, body)) in sent.iter().zip(&pending) {
                        match item.message_id {
                            Some(id) => acks.record(thread, unique_id, id),
                            None => again.push((unique_id.clone(), body.clone())),
                        }
                    }
                    pending = again;
                    if !pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Ok(Err(ClientError::Server(_))) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                // The connection broke or the reply did not come: the
                // outcome is unknown, so resend on a new connection.
                Ok(Err(_)) | Err(_) => {
                    session.client = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Now and then the same batch again, as a client that lost the
        // reply would: it must be answered with the same ids.
        if rng.below(4) == 0 {
            let refs: Vec<(&str, &str)> = items
                .iter()
                .map(|(u, b)| (u.as_str(), b.as_str()))
                .collect();
            let client = session.client(&mut rng).await;
            let resend = client.resend_texts(thread, &refs);
            match tokio::time::timeout(Duration::from_secs(40), resend).await {
                Ok(Ok(sent)) => {
                    for (item, (unique_id, _)) in sent.iter().zip(&items) {
                        if let Some(id) = item.message_id {
                            acks.record(thread, unique_id, id);
                        }
                    }
                    acks.resent.fetch_add(items.len(), Ordering::Relaxed);
                }
                Ok(Err(ClientError::Server(_))) => {}
                Ok(Err(_)) | Err(_) => session.client = None,
            }
        }
        acks.sent.fetch_add(items.len(), Ordering::Relaxed);
        next += items.len();
        tokio::time::sleep(plan.pace).await;
    }
}

/// Every ack: which id each `unique_id` got, and when acks came.
struct Acks {
    started: Instant,
    ids: Mutex<HashMap<(ThreadId, String), MessageId>>,
    times: Mutex<Vec<Duration>>,
    sent: AtomicUsize,
    /// Acked messages sent again (with `retry`) on purpose.
    resent: AtomicUsize,
    conflicting: AtomicUsize,
}

impl Acks {
    fn record(&self, thread: ThreadId, unique_id: &str, id: MessageId) {
        self.times.lock().unwrap().push(self.started.elapsed());
        let mut ids = self.ids.lock().unwrap();
        if let Some(before) = ids.insert((thread, unique_id.to_owned()), id) {
            if before != id {
                // Acked twice under different ids: one of them sync never shows.
                self.conflicting.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the whole thing with `imlog` at `bin` (the command line: the
/// `imlog` or `imlog-proc` binary); panics only on a broken harness, not on
/// findings (those are in the report).
pub async fn run(plan: Plan, bin: &str) -> Report {
    let bin: Arc<str> = bin.into();
    let started = Instant::now();
    let mut rng = Rng(plan.seed | 1);
    let (_dir, data) = crate::serve_data_dir();
    std::fs::create_dir_all(&data).expect("data dir");

    // Postgres: a private cluster, restarted by its supervisor when killed.
    let cluster = Arc::new(
        imlog_postgres::PrivateCluster::start(&data)
            .await
            .expect("Postgres"),
    );
    let supervising = Arc::new(AtomicBool::new(true));
    let supervisor = {
        let (cluster, on) = (cluster.clone(), supervising.clone());
        tokio::spawn(async move {
            cluster
                .supervise(async move {
                    while on.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
                .await
        })
    };
    let url = cluster.url();

    let tansu_dir = data.join("tansu");
    std::fs::create_dir_all(&tansu_dir).expect("tansu dir");
    let tansu_port = restartable_tcp_port();
    let brokers = format!("127.0.0.1:{tansu_port}");
    let env: Vec<(String, String)> = vec![
        ("IMLOG_POSTGRES__URL".into(), url.clone()),
        ("IMLOG_LOG__BACKEND".into(), "kafka".into()),
        ("IMLOG_LOG__KAFKA__BROKERS".into(), brokers.clone()),
        ("IMLOG_LOG__KAFKA__LINGER_MS".into(), "1".into()),
        (
            "IMLOG_LOG__KAFKA__IDEMPOTENT".into(),
            crate::kafka_idempotent().to_string(),
        ),
        ("IMLOG_LOG__TOPIC_PREFIX".into(), "chaos.".into()),
        ("IMLOG_GATEWAY__STRANGERS_MAY_CHAT".into(), "true".into()),
        (
            "IMLOG_GATEWAY__AUTH_RATE_PER_MINUTE".into(),
            "1000000".into(),
        ),
        ("IMLOG_GATEWAY__AUTH_BURST".into(), "1000000".into()),
        (
            "IMLOG_DATA_DIR".into(),
            data.join("imlog").display().to_string(),
        ),
    ];
    let mut gateway_ports = [0u16; 2];
    for i in 0..2 {
        gateway_ports[i] = loop {
            let port = restartable_tcp_port();
            if port != tansu_port && !gateway_ports[..i].contains(&port) {
                break port;
            }
        };
    }
    let mut components: Vec<Component> = vec![
        Component {
            name: "postgres",
            start: Box::new({
                let pid = data.join("postgres/postmaster.pid");
                move || {
                    let pid = pid.clone();
                    Box::pin(async move { Running::Postgres(pid) })
                }
            }),
            running: None,
        },
        Component {
            name: "tansu",
            start: Box::new(move || start_tansu(tansu_dir.clone(), tansu_port)),
            running: None,
        },
    ];
    for (i, port) in gateway_ports.into_iter().enumerate() {
        let env = env.clone();
        let bin = bin.clone();
        components.push(Component {
            name: ["gateway-1", "gateway-2"][i],
            start: Box::new(move || start_imlog(bin.clone(), "gateway", port, env.clone())),
            running: None,
        });
    }
    for i in 0..2 {
        let env = env.clone();
        let bin = bin.clone();
        components.push(Component {
            name: ["projector-1", "projector-2"][i],
            start: Box::new(move || {
                start_imlog(bin.clone(), "projector", free_tcp_port(), env.clone())
            }),
            running: None,
        });
    }
    for c in &mut components {
        c.running = Some((c.start)().await);
    }
    let gateways: Vec<String> = gateway_ports
        .iter()
        .map(|p| format!("ws://127.0.0.1:{p}/ws"))
        .collect();

    // Users in pairs, each pair with its thread.
    let mut sessions = Vec::new();
    let mut threads = Vec::new();
    for pair in 0..plan.users / 2 {
        let mut ids = Vec::new();
        for side in 0..2 {
            let mut c = Client::connect(&gateways[0]).await.expect("connect");
            let name = format!("user{}", pair * 2 + side);
            let id = c.register(&name, "password-123").await.expect("register");
            let token = c.login(&name, "password-123").await.expect("login").token;
            ids.push((id, token, c));
        }
        let peer = ids[1].0;
        let thread = ids[0].2.open_private_thread(peer).await.expect("thread");
        for (_, token, _) in ids {
            threads.push(thread);
            sessions.push(Session {
                gateways: gateways.clone(),
                token,
                client: None,
            });
        }
    }

    let acks = Arc::new(Acks {
        started,
        ids: Mutex::default(),
        times: Mutex::default(),
        sent: AtomicUsize::new(0),
        resent: AtomicUsize::new(0),
        conflicting: AtomicUsize::new(0),
    });
    let senders: Vec<_> = sessions
        .into_iter()
        .zip(threads.iter().copied())
        .enumerate()
        .map(|(user, (session, thread))| {
            tokio::spawn(sender(session, thread, user, plan.clone(), acks.clone()))
        })
        .collect();

    // Kill something now and then until the senders are done.
    let mut report = Report::default();
    let mut kills: Vec<(&'static str, Duration)> = Vec::new();
    let total = plan.users * plan.per_user;
    let mut order: Vec<usize> = Vec::new();
    while acks.sent.load(Ordering::Relaxed) < total * 9 / 10 {
        let mean = plan.kill_every.as_millis() as u64;
        tokio::time::sleep(Duration::from_millis(mean / 2 + rng.below(mean))).await;
        // Every component in turn, in a new random order each round.
        if order.is_empty() {
            order = (0..components.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let victim = order.pop().expect("a component");
        let c = &mut components[victim];
        if let Some(running) = c.running.take() {
            kills.push((c.name, started.elapsed()));
            eprintln!(
                "chaos: {:>6.2} s kill -9 {}",
                started.elapsed().as_secs_f64(),
                c.name
            );
            *report.kills.entry(c.name).or_default() += 1;
            running.kill9().await;
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        c.running = Some((c.start)().await);
    }
    for s in senders {
        s.await.expect("a sender");
    }

    // The verdict, through a gateway, from the read model.
    report.sent = acks.sent.load(Ordering::Relaxed);
    report.resent = acks.resent.load(Ordering::Relaxed);
    let acked = acks.ids.lock().unwrap().clone();
    report.acked = acked.len();
    report.duplicated += acks.conflicting.load(Ordering::Relaxed);
    let mut unique_threads = threads.clone();
    unique_threads.dedup();
    let mut stored: HashMap<(ThreadId, String), Vec<MessageId>> = HashMap::new();
    for (i, &thread) in unique_threads.iter().enumerate() {
        // Read as the pair's first user, as soon as a gateway answers (the
        // last kill may have been a moment ago).
        let mut c = verdict_client(&gateways[0], &format!("user{}", i * 2)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let messages = loop {
            let all = c
                .sync_all_messages(thread, MessageId::default())
                .await
                .expect("sync");
            let expected = acked.keys().filter(|(t, _)| *t == thread).count();
            if all.len() >= expected || Instant::now() > deadline {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for (n, m) in messages.iter().enumerate() {
            if m.seq != Some(n as i64 + 1) {
                report.seq_gaps += 1;
                break;
            }
        }
        for m in messages {
            stored
                .entry((thread, m.unique_id.clone()))
                .or_default()
                .push(m.message_id);
        }
    }
    for (key, id) in &acked {
        match stored.get(key) {
            Some(ids) if ids.contains(id) => {}
            found => {
                report.lost += 1;
                if report.lost_examples.len() < 10 {
                    report.lost_examples.push(format!(
                        "{} in thread {:?}: acked as {:?}, stored as {:?}",
                        key.1, key.0, id, found
                    ));
                }
            }
        }
    }
    report.duplicated += stored.values().filter(|ids| ids.len() > 1).count();

    // Unavailability: from each kill to the next ack.
    let times = acks.times.lock().unwrap().clone();
    for (name, at) in kills {
        if let Some(next) = times.iter().filter(|t| **t >= at).min() {
            let outage = *next - at;
            let longest = report.longest_outage.entry(name).or_default();
            *longest = (*longest).max(outage);
        }
    }

    // A replay of the whole log equals the live read model.
    let log: imlog_log::SharedLog = Arc::new(
        imlog_log::KafkaLog::connect(imlog_log::KafkaSettings {
            brokers,
            topic_prefix: "chaos.".into(),
            replication_factor: 1,
            linger_ms: 1,
            idempotent: crate::kafka_idempotent(),
        })
        .expect("log"),
    );
    let differences =
        crate::replay_differences(&url, &log, "chaos_check", Duration::from_secs(30)).await;
    if !differences.is_empty() {
        eprintln!("replay differs from live: {differences:?}");
    }
    report.replay_equals_live = differences.is_empty();

    for c in &mut components {
        if let Some(running) = c.running.take() {
            match running {
                Running::Postgres(_) => {}
                other => other.kill9().await,
            }
        }
    }
    supervising.store(false, Ordering::Relaxed);
    let _ = supervisor.await;
    let _ = cluster.stop();
    report.took = started.elapsed();
    report
}

/// Where the data of a run lives (for the binary's messages).
pub fn describe(plan: &Plan) -> String {
    format!(
        "{} users in pairs, {} messages each in batches of {BATCH} every {:?}; a kill every ~{:?}; seed {}",
        plan.users, plan.per_user, plan.pace, plan.kill_every, plan.seed
    )
}
