//! A private Postgres cluster under imlog's data directory, built from the
//! Postgres binaries on the machine. Postgres refuses to run as root, so when
//! imlog runs as root the cluster runs as the `postgres` system user.
//!
//! The cluster listens on 127.0.0.1 (for other tools) and on a Unix socket
//! in its own directory (which only the cluster's user, and root, can
//! enter), with a password generated at `initdb` and stored beside it (mode
//! 0600). imlog connects through the socket: a round trip over it costs
//! Postgres and imlog less than one over TCP loopback, and every
//! acknowledged message makes several. A directory whose path cannot hold a
//! socket, a filesystem that refuses one, or a cluster an older imlog
//! started leaves TCP only.
//!
//! The owner keeps 256 MB of WAL files ready (`min_wal_size`; made at
//! start when fewer exist), so that a burst of commits does not wait while
//! Postgres creates them.

use crate::PgError;
use rand::RngCore;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SUPERUSER: &str = "imlog";
/// How often the owner checks that its cluster's postmaster is alive.
const SUPERVISE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const DATABASE: &str = "imlog";
/// The WAL the cluster keeps ready (`min_wal_size`), and which its owner
/// creates up front: see [`PrivateCluster::prepare_wal`].
const READY_WAL_MB: i64 = 256;
/// `prepare_wal` leaves a disk with less free than this alone: Postgres
/// restarts itself when it cannot create a WAL file.
const PREPARE_WAL_FREE_MB: u64 = 4 * READY_WAL_MB as u64;
/// How long `prepare_wal` may hold up a start (a slow disk).
const PREPARE_WAL_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

pub struct PrivateCluster {
    cluster_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// The directory of the cluster's Unix socket, if it listens on one.
    socket_dir: Option<PathBuf>,
    password: String,
    run_as: Option<(u32, u32)>,
    /// `data_dir/imlog.lock`, locked by the process that owns the cluster
    /// for as long as it runs.
    _lock: std::fs::File,
    /// This process holds the lock: it started (or took over) the cluster,
    /// and only it stops it.
    owner: bool,
}

/// The WAL files in `pg_wal`, used and ready.
async fn wal_files(client: &tokio_postgres::Client) -> Result<i64, PgError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

impl PrivateCluster {
    /// Initialises the cluster under `data_dir/postgres` if it does not exist,
    /// starts it (or adopts it if a previous imlog left it running), and makes
    /// sure the `imlog` database exists. The data dir must not be in use by
    /// another imlog process (`imlog serve` owns its cluster; a second one on
    /// the same dir is refused).
    pub async fn start(data_dir: &Path) -> Result<Self, PgError> {
        Self::open(data_dir, false).await
    }

    /// Like [`start`](Self::start), but when another imlog process owns the
    /// cluster (a running `imlog serve`), uses it without owning it: it is
    /// never stopped from here. For `replay`, `log copy` and tests.
    pub async fn start_shared(data_dir: &Path) -> Result<Self, PgError> {
        Self::open(data_dir, true).await
    }

    async fn open(data_dir: &Path, shared: bool) -> Result<Self, PgError> {
        let data_dir = std::fs::canonicalize(data_dir)
            .map_err(io(format!("data dir {}", data_dir.display())))?;
        let lock_path = data_dir.join("imlog.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        let owner = match lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io(format!("locking {}", lock_path.display()))(e))
            }
        };
        if !owner && !shared {
            return Err(PgError::InUse {
                dir: data_dir.display().to_string(),
            });
        }
        let bin_dir = find_binaries()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(PgError::NoPostgresUser)?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let cluster_dir = data_dir.join("postgres");
        let password_file = data_dir.join("postgres.password");
        let mut cluster = PrivateCluster {
            cluster_dir,
            bin_dir,
            port: 0,
            socket_dir: None,
            password: String::new(),
            run_as,
            _lock: lock,
            owner,
        };
        if !owner {
            // The owner makes and starts the cluster: wait for it.
            match cluster.wait_for_owner(&password_file).await {
                Ok(port) => {
                    cluster.port = port;
                    cluster.socket_dir = cluster.running_socket_dir();
                    cluster.create_database().await?;
                    return Ok(cluster);
                }
                // It went away: carry on as the owner.
                Err(_) if cluster.owner => {}
                Err(e) => return Err(e),
            }
        }
        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            cluster.init(&password_file)?;
        }
        cluster.password = std::fs::read_to_string(&password_file)
            .map_err(io(format!("reading {}", password_file.display())))?
            .trim()
            .to_owned();
        cluster.port = match cluster.running_port() {
            Some(port) => {
                tracing::info!(port, dir = %cluster.cluster_dir.display(), "adopting running private Postgres");
                port
            }
            None => {
                let port = free_port().map_err(io("choosing a port for Postgres"))?;
                let socket = socket_dir_option(&cluster.cluster_dir).is_some();
                if !socket {
                    tracing::info!(dir = %cluster.cluster_dir.display(),
                        "the cluster's directory cannot hold a Unix socket (its path is too long, or has characters other than letters, digits and /._-): imlog reaches Postgres over TCP");
                }
                match cluster.launch(port, socket) {
                    // A filesystem that refuses socket files, say.
                    Err(e) if socket => {
                        tracing::warn!(error = %e, "the private Postgres did not start with a Unix socket in its directory; starting it on TCP only");
                        cluster.launch(port, false)?
                    }
                    started => started?,
                }
            }
        };
        // As the running postmaster says: one started by an older imlog
        // listens on TCP only.
        cluster.socket_dir = cluster.running_socket_dir();
        if let Err(e) = cluster.create_database().await {
            // Owned here, so stopped here: a failed start leaves none running.
            let _ = cluster.stop();
            return Err(e);
        }
        match tokio::time::timeout(PREPARE_WAL_WITHIN, cluster.prepare_wal()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not create the private Postgres's WAL files up front; it creates them as it needs them"),
            Err(_) => tracing::warn!("creating the private Postgres's WAL files up front took over 30 s; going on without the rest"),
        }
        Ok(cluster)
    }

    /// URL of the `imlog` database in this cluster.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// URL of another database in this cluster (tests create one each):
    /// through its Unix socket if it has one, else TCP on 127.0.0.1.
    pub fn url_for(&self, database: &str) -> String {
        cluster_url(
            self.socket_dir.as_deref(),
            &self.password,
            self.port,
            database,
        )
    }

    /// Waits (up to two minutes) until the owning process has the cluster
    /// running and ready; its port. Nothing is removed or started from
    /// here — unless the owner goes away meanwhile, when this process takes
    /// the lock and so becomes the owner.
    async fn wait_for_owner(&mut self, password_file: &Path) -> Result<u16, PgError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Ok(password) = std::fs::read_to_string(password_file) {
                if let Some((port, true)) = self.running(false) {
                    self.password = password.trim().to_owned();
                    return Ok(port);
                }
            }
            if self._lock.try_lock().is_ok() {
                self.owner = true;
                return Err(PgError::Command {
                    what: "waiting for the imlog process that owns the cluster".into(),
                    detail: "it went away; this process owns the cluster now".into(),
                });
            }
            if std::time::Instant::now() > deadline {
                return Err(PgError::Command {
                    what: "waiting for the imlog process that owns the cluster".into(),
                    detail: "its Postgres was not ready within 120 s".into(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Whether this process owns the cluster (and so stops it).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Keeps the cluster running for as long as `stop` has not resolved:
    /// when its postmaster dies (killed, crashed), it is started again on
    /// the same port — Postgres recovers from its WAL, so nothing committed
    /// is lost — and the pools reconnect by themselves. Only the owner
    /// supervises; for anyone else this returns at once.
    pub async fn supervise(&self, stop: impl std::future::Future<Output = ()>) {
        if !self.owner {
            return;
        }
        tokio::pin!(stop);
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
            }
            if self.running(true).is_some() {
                if let Some(since) = down_since.take() {
                    tracing::warn!(down = ?since.elapsed(), port = self.port,
                        "private Postgres restarted after its postmaster died");
                }
                continue;
            }
            let since = *down_since.get_or_insert_with(std::time::Instant::now);
            tracing::error!(dir = %self.cluster_dir.display(), down = ?since.elapsed(),
                "private Postgres is not running; starting it again");
            // Blocking (pg_ctl waits for recovery), and its old backends may
            // still be exiting: a failure is retried on the next round.
            // As it ran: the pools' URL names its socket, or TCP.
            let relaunch = || self.launch(self.port, self.socket_dir.is_some());
            let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread;
            let relaunched = if multi_thread {
                tokio::task::block_in_place(relaunch)
            } else {
                relaunch()
            };
            if let Err(e) = relaunched {
                tracing::error!(error = %e, "restarting the private Postgres failed; retrying");
            }
        }
    }

    /// Stops the cluster (fast shutdown: clients are disconnected, data is
    /// safe) — if this process owns it; another's is left running.
    pub fn stop(&self) -> Result<(), PgError> {
        if !self.owner {
            tracing::info!(dir = %self.cluster_dir.display(),
                "leaving the private Postgres to the imlog process that owns it");
            return Ok(());
        }
        // Read before its file goes, to reap the postmaster after.
        let postmaster = PostmasterPid::read(&self.cluster_dir);
        self.run(
            "pg_ctl stop",
            self.command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(&self.cluster_dir)
                .args(["-m", "fast", "-w", "-t", "60"]),
        )?;
        // Ours to reap (see `launch`); it exits just after its pid file goes.
        if let Some(PostmasterPid { pid, started, .. }) = postmaster {
            for _ in 0..100 {
                if !is_our_child(pid) || exited(pid, started) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Creates the cluster. The password file is written first and initdb
    /// works in a scratch directory renamed into place only when complete,
    /// so a crash at any point leaves either no cluster (the next start
    /// retries) or a whole one with its password.
    fn init(&self, password_file: &Path) -> Result<(), PgError> {
        tracing::info!(dir = %self.cluster_dir.display(), "initialising private Postgres cluster");
        if let Some((uid, gid)) = self.run_as {
            reachable_by(uid, gid, &self.cluster_dir)?;
        }
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        let password = hex::encode(secret);
        write_private(password_file, &password).map_err(io("writing the password file"))?;

        let scratch = self.cluster_dir.with_extension("initializing");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(io("creating the cluster directory"))?;
        // initdb reads the password from a file the cluster's owner can read;
        // it sits beside the cluster directory only while initdb runs.
        let initdb_pwfile = self.cluster_dir.with_extension("initdb-pw");
        write_private(&initdb_pwfile, &password).map_err(io("writing the initdb password file"))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&scratch, Some(uid), Some(gid)).map_err(io("chown cluster directory"))?;
            chown(&initdb_pwfile, Some(uid), Some(gid))
                .map_err(io("chown initdb password file"))?;
        }
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod cluster directory"))?;
        let result = self.run(
            "initdb",
            self.command("initdb")
                .arg("-D")
                .arg(&scratch)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
                .args(["--auth-host=scram-sha-256", "--auth-local=scram-sha-256"])
                .arg(format!("--pwfile={}", initdb_pwfile.display())),
        );
        let _ = std::fs::remove_file(&initdb_pwfile);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        let _ = std::fs::remove_dir(&self.cluster_dir); // an empty leftover, if any
        std::fs::rename(&scratch, &self.cluster_dir)
            .map_err(io("moving the new cluster into place"))
    }

    /// The port of a postmaster already running on this cluster, if any (left
    /// behind by an imlog that was killed), with whether it is ready for
    /// connections. As the owner (`remove_stale`), a `postmaster.pid` whose
    /// process id now belongs to another process (ids are reused, e.g. after
    /// a container restart) is removed, so that the cluster can start; a
    /// process that might be the postmaster is never treated so.
    fn running(&self, remove_stale: bool) -> Option<(u16, bool)> {
        let PostmasterPid {
            pid,
            started,
            port,
            ready,
            ..
        } = PostmasterPid::read(&self.cluster_dir)?;
        // Signal 0 only checks that the process exists: an exited
        // postmaster that is our child stays a zombie until reaped.
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive || exited(pid, started) {
            return None;
        }
        if !remove_stale || !surely_another_process(pid, started, &self.cluster_dir) {
            return Some((port, ready));
        }
        let pid_path = self.cluster_dir.join("postmaster.pid");
        tracing::warn!(pid, file = %pid_path.display(),
            "postmaster.pid names a process that is not this cluster's Postgres; removing the stale file");
        let _ = std::fs::remove_file(&pid_path);
        None
    }

    fn running_port(&self) -> Option<u16> {
        self.running(true).map(|(port, _)| port)
    }

    /// The running postmaster's Unix socket directory, if it announced
    /// (in `postmaster.pid`) the one `launch` gives it.
    fn running_socket_dir(&self) -> Option<PathBuf> {
        let announced = PostmasterPid::read(&self.cluster_dir)?.socket_dir;
        let ours = socket_dir_option(&self.cluster_dir)?;
        (announced == ours).then(|| PathBuf::from(ours))
    }

    /// Starts the postmaster on `port`, and with `socket` on a Unix socket
    /// in the cluster's directory too.
    fn launch(&self, port: u16, socket: bool) -> Result<u16, PgError> {
        let log = self.cluster_dir.join("imlog-postgres.log");
        let sockets = match socket {
            true => socket_dir_option(&self.cluster_dir).unwrap_or_default(),
            false => String::new(),
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{sockets}' \
             -c min_wal_size={READY_WAL_MB}MB"
        );
        // pg_ctl leaves the postmaster behind as an orphan. This process
        // adopts it (a subreaper while pg_ctl runs, no longer, so that the
        // postmaster's own children go to init when it dies), and so reaps
        // it once it has died (`exited`, when the supervisor or `stop` next
        // looks): as under a container's process 1, where it would
        // otherwise stay a zombie that looks alive and is never started
        // again.
        let adopting = nix::sys::prctl::get_child_subreaper() == Ok(false)
            && nix::sys::prctl::set_child_subreaper(true).is_ok();
        let launched = self.run(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(&self.cluster_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "-o", &options]),
        );
        if adopting {
            let _ = nix::sys::prctl::set_child_subreaper(false);
        }
        launched?;
        tracing::info!(port, dir = %self.cluster_dir.display(), "private Postgres started");
        Ok(port)
    }

    async fn create_database(&self) -> Result<(), PgError> {
        let (client, connection) =
            tokio_postgres::connect(&self.url_for("postgres"), tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .await?
            .is_some();
        if !exists {
            // Another process may create it at the same moment: fine.
            match client
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await
            {
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                other => other?,
            }
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    /// Makes sure `READY_WAL_MB` of WAL files exist, and that Postgres keeps
    /// them (`min_wal_size`: `launch` passes it, and a running cluster that
    /// an older imlog started gets it in `postgresql.auto.conf`).
    ///
    /// Postgres otherwise creates a WAL file when it first needs it: the
    /// commit that crosses into it writes the whole file (16 MiB of zeros)
    /// and fsyncs it holding the WAL write lock, and every other commit
    /// waits behind it (20–50 ms on the machine of docs/BENCHMARKS.md). On a
    /// new cluster that happens every 16 MiB of WAL, and after a quiet spell
    /// again for the next burst. Each `pg_switch_wal` makes Postgres move on
    /// to a new file; the checkpoint then renames the used ones into future
    /// files.
    async fn prepare_wal(&self) -> Result<(), PgError> {
        let (client, connection) =
            tokio_postgres::connect(&self.url_for("postgres"), tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let kept: String = client
            .query_one("SELECT current_setting('min_wal_size')", &[])
            .await?
            .get(0);
        if kept != format!("{READY_WAL_MB}MB") {
            // Not in one message: ALTER SYSTEM refuses to run in a
            // transaction block, and a multi-statement query is one.
            client
                .batch_execute(&format!(
                    "ALTER SYSTEM SET min_wal_size = '{READY_WAL_MB}MB'"
                ))
                .await?;
            client.batch_execute("SELECT pg_reload_conf()").await?;
        }
        let segment: i64 = client
            .query_one(
                "SELECT pg_size_bytes(current_setting('wal_segment_size'))",
                &[],
            )
            .await?
            .get(0);
        let wanted = (READY_WAL_MB * 1024 * 1024 / segment.max(1)).clamp(1, 256);
        let mut switched = false;
        // A switch into a file that already exists creates none: bounded.
        for _ in 0..2 * wanted {
            if wal_files(&client).await? >= wanted {
                break;
            }
            let free = nix::sys::statvfs::statvfs(&self.cluster_dir)
                .map(|fs| fs.blocks_available() * fs.fragment_size() / (1024 * 1024));
            if free.is_ok_and(|mb| mb < PREPARE_WAL_FREE_MB) {
                tracing::warn!(
                    free_mb = free.ok(),
                    "little disk left: not creating the private Postgres's WAL files up front"
                );
                break;
            }
            // A switch needs WAL since the last one; the message is that WAL.
            client
                .batch_execute(
                    "SELECT pg_logical_emit_message(false, 'imlog', 'preparing WAL files');
                     SELECT pg_switch_wal()",
                )
                .await?;
            switched = true;
        }
        if switched {
            client.batch_execute("CHECKPOINT").await?;
            let files = wal_files(&client).await?;
            tracing::info!(files, "private Postgres: WAL files created up front");
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir("/");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<(), PgError> {
        let output = cmd.output().map_err(io(format!("running {what}")))?;
        if output.status.success() {
            Ok(())
        } else {
            let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if detail.is_empty() {
                detail = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            }
            if self.run_as.is_some() && detail.contains("ermission denied") {
                detail.push_str(
                    " (the cluster runs as the `postgres` user: every parent directory of the data dir must be searchable by it)",
                );
            }
            Err(PgError::Command {
                what: what.to_owned(),
                detail,
            })
        }
    }
}

/// `dir` as the value of `unix_socket_directories`, if a socket can live
/// there: its path must fit a socket address (108 bytes with the socket's
/// name, `.s.PGSQL.<port>`) and pass through `pg_ctl`'s command line as is.
/// Otherwise the cluster listens on TCP only.
fn socket_dir_option(dir: &Path) -> Option<String> {
    let dir = dir.to_str()?;
    let plain = dir
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    (plain && dir.len() + "/.s.PGSQL.65535".len() < 108).then(|| dir.to_owned())
}

/// A cluster's URL: through the socket in `socket_dir` (a path
/// `socket_dir_option` accepted, so `/` is the only character to encode),
/// else TCP on 127.0.0.1.
fn cluster_url(socket_dir: Option<&Path>, password: &str, port: u16, database: &str) -> String {
    let host = match socket_dir {
        Some(dir) => dir.display().to_string().replace('/', "%2F"),
        None => "127.0.0.1".to_owned(),
    };
    format!("postgres://{SUPERUSER}:{password}@{host}:{port}/{database}")
}

/// Writes a file only its owner can read, from the moment it exists.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// What a postmaster wrote of itself in its cluster's `postmaster.pid`.
struct PostmasterPid {
    pid: i32,
    /// When it started, in Unix time.
    started: i64,
    port: u16,
    /// Its first Unix socket directory; empty if it has none.
    socket_dir: String,
    /// It accepts connections (its status line says so).
    ready: bool,
}

impl PostmasterPid {
    fn read(cluster_dir: &Path) -> Option<PostmasterPid> {
        let file = std::fs::read_to_string(cluster_dir.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = file.lines().map(str::trim).collect();
        Some(PostmasterPid {
            pid: lines.first()?.parse().ok()?,
            started: lines.get(2)?.parse().ok()?,
            port: lines.get(3)?.parse().ok()?,
            socket_dir: lines.get(4).copied().unwrap_or_default().to_owned(),
            ready: lines.get(7).is_some_and(|status| *status == "ready"),
        })
    }
}

/// Whether process `pid` is certainly not the postmaster of the cluster in
/// `dir` that wrote a pid file saying it started at `started` (Unix time):
/// its working directory (a postmaster works in its data dir) is another
/// one, and it is no Postgres at all or started at another time. Anything
/// unreadable (another user's process, no /proc) counts as "might be it".
fn surely_another_process(pid: i32, started: i64, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(cwd), Ok(ours)) = (
        std::fs::metadata(format!("/proc/{pid}/cwd")),
        std::fs::metadata(dir),
    ) else {
        return false;
    };
    if (cwd.dev(), cwd.ino()) == (ours.dev(), ours.ino()) {
        return false;
    }
    let postgres = std::fs::read(format!("/proc/{pid}/cmdline")).map(|raw| {
        let program = raw.split(|&b| b == 0).next().unwrap_or_default();
        let program = String::from_utf8_lossy(program);
        program.ends_with("postgres") || program.ends_with("postmaster")
    });
    match postgres {
        Ok(false) => true,
        Ok(true) => proc_stat(pid)
            .and_then(|stat| stat.started())
            .is_some_and(|at| (at - started).abs() > 2),
        Err(_) => false,
    }
}

/// Whether `pid`, a postmaster that started at `started` (Unix time, from
/// `postmaster.pid`), has exited but is not reaped (a zombie, which signal
/// 0 still finds); reaped here if it is our child. A zombie that started at
/// another time is some other process that reused the pid: left alone.
fn exited(pid: i32, started: i64) -> bool {
    let Some(stat) = proc_stat(pid).filter(|stat| stat.zombie) else {
        return false;
    };
    if stat.started().is_some_and(|at| (at - started).abs() <= 2) {
        let flags = nix::sys::wait::WaitPidFlag::WNOHANG;
        // Not our child (ECHILD): its parent reaps it.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(flags));
    }
    true
}

/// Whether `pid` is a child of this process (from /proc: its parent).
fn is_our_child(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|stat| stat.parent == std::process::id())
}

/// What /proc/<pid>/stat says of a process.
struct ProcStat {
    /// Exited, not reaped yet.
    zombie: bool,
    parent: u32,
    /// When it started, in clock ticks since boot.
    start_ticks: Option<i64>,
}

impl ProcStat {
    /// When it started, in Unix time (if the boot time can be read).
    fn started(&self) -> Option<i64> {
        let boot: i64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        Some(boot + self.start_ticks? / hz)
    }
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields resume after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ProcStat {
        zombie: *fields.first()? == "Z",
        parent: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19).and_then(|t| t.parse().ok()),
    })
}

/// Checks that the user the cluster runs as can enter every directory above
/// `dir` (as root, a data dir under `/root`, mode 0700, is the usual trap).
/// Supplementary groups are not considered.
fn reachable_by(uid: u32, gid: u32, dir: &Path) -> Result<(), PgError> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let can_enter = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            return Err(PgError::Unreachable {
                dir: ancestor.display().to_string(),
                mode: mode & 0o777,
            });
        }
    }
    Ok(())
}

/// A directory holding `initdb` and `pg_ctl`: `IMLOG_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or the directory of `pg_ctl` on PATH.
fn find_binaries() -> Result<PathBuf, PgError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("IMLOG_PG_BIN").map(PathBuf::from) {
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(PgError::NoBinaries)
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .filter_map(|dir| std::fs::canonicalize(dir.join("pg_ctl")).ok())
        .filter_map(|pg_ctl| pg_ctl.parent().map(Path::to_path_buf))
        .find(|dir| has_tools(dir))
        .ok_or(PgError::NoBinaries)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::{cluster_url, socket_dir_option};
    use std::path::Path;
    use tokio_postgres::config::Host;

    #[test]
    fn a_socket_lives_in_the_cluster_directory_when_its_path_allows() {
        assert_eq!(
            socket_dir_option(Path::new("/var/lib/imlog/postgres")).as_deref(),
            Some("/var/lib/imlog/postgres")
        );
        // 92 bytes and the socket's name, `/.s.PGSQL.65535`, fill a socket
        // address (108 bytes with the closing zero); one more would not fit.
        let longest = format!("/{}", "d".repeat(91));
        assert_eq!(
            socket_dir_option(Path::new(&longest)),
            Some(longest.clone())
        );
        let too_long = format!("/{}", "d".repeat(92));
        assert_eq!(socket_dir_option(Path::new(&too_long)), None);
        // Would not pass through pg_ctl's command line unchanged.
        assert_eq!(socket_dir_option(Path::new("/srv/my data/postgres")), None);
        assert_eq!(socket_dir_option(Path::new("/srv/it's/postgres")), None);
    }

    #[test]
    fn a_cluster_url_names_its_socket_or_tcp() {
        let url = cluster_url(Some(Path::new("/srv/imlog/postgres")), "pw", 5433, "chat");
        let config: tokio_postgres::Config = url.parse().expect("a URL tokio-postgres reads");
        assert_eq!(
            config.get_hosts(),
            [Host::Unix("/srv/imlog/postgres".into())]
        );
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_dbname(), Some("chat"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));

        let config: tokio_postgres::Config = cluster_url(None, "pw", 5433, "chat").parse().unwrap();
        assert_eq!(config.get_hosts(), [Host::Tcp("127.0.0.1".into())]);
    }
}
