//! The `imlog` command line. `main.rs` calls [`main`]; the tests' copy of
//! the binary does too, so they kill and restart exactly this program.

use crate::app::{Application, Backbone, Roles};
use crate::config::{LogBackend, Settings};
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "imlog",
    version,
    about = "An instant-messaging backend event-sourced on a log"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// TOML settings file (default: ./imlog.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the private Postgres cluster and local objects live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// HTTP/WebSocket listen address.
    #[arg(long, global = true)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Every role in one process (the quick start).
    Serve,
    /// WebSocket chat sessions, commands, pushes, and the query API.
    Gateway,
    /// The projections that build the read model.
    Projector,
    /// The read-only HTTP query API (scale readers independently).
    Query,
    /// Rebuild the read model from offset 0 into a fresh schema; optionally
    /// swap it in, or export message history as JSON lines.
    Replay(ReplayArgs),
    /// Operations on the log itself.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// Make the rebuilt read model the live one (the old one is kept, renamed).
    #[arg(long)]
    swap: bool,
    /// Keep the rebuilt schema for inspection instead of dropping it (without --swap).
    #[arg(long)]
    keep: bool,
    /// Instead of rebuilding, write every message as a JSON line to FILE ('-': stdout).
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Copy the whole log from one backend to the other, offsets preserved.
    Copy {
        #[arg(long, value_enum)]
        from: Backend,
        #[arg(long, value_enum)]
        to: Backend,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Backend {
    Postgres,
    Kafka,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("IMLOG_LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("IMLOG_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Every connection is an open file: a gateway raises its soft limit to the
/// hard one (often 1,024 → far more), and says when even that is below what
/// `gateway.max_connections` allows.
fn raise_open_files_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut limit = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = hard,
                    "raised the open files limit to the hard limit"
                );
                limit = hard;
            }
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open files limit"),
        }
    }
    // Sockets to Postgres, the log and the store, files and listeners.
    let needed = max_connections as u64 + 256;
    if limit < needed {
        tracing::warn!(
            limit,
            max_connections,
            "the open files limit is below gateway.max_connections: connections past it will be refused; raise the hard limit (e.g. LimitNOFILE in systemd)"
        );
    }
}

/// Runs the command line; the process's exit code.
pub fn main() -> std::process::ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imlog: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imlog: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.common.config.as_deref()).context("reading settings")?;
    if let Some(dir) = cli.common.data_dir {
        settings.data_dir = dir;
    }
    if let Some(listen) = cli.common.listen {
        settings.listen = listen;
    }
    let roles = match cli.command {
        Command::Serve => Roles::ALL,
        Command::Gateway => Roles {
            gateway: true,
            queries: true,
            projector: false,
        },
        Command::Projector => Roles {
            gateway: false,
            queries: false,
            projector: true,
        },
        Command::Query => Roles {
            gateway: false,
            queries: true,
            projector: false,
        },
        Command::Replay(args) => return replay(&settings, args).await,
        Command::Log {
            command: LogCommand::Copy { from, to },
        } => return log_copy(settings, from, to).await,
    };
    if roles.gateway {
        raise_open_files_limit(settings.gateway.max_connections);
    }
    let app = Application::build(settings, roles).await?;
    println!(
        "imlog listening on http://{} (WebSocket: ws://{}/ws)",
        app.addr(),
        app.addr()
    );
    if roles.gateway {
        println!("open http://{} in a browser to chat", app.addr());
    }
    stop_signal().await;
    tracing::info!("stopping");
    app.stop().await;
    Ok(())
}

async fn replay(settings: &Settings, args: ReplayArgs) -> anyhow::Result<()> {
    use imlog_projections::{replay, LIVE_SCHEMA};
    let backbone = Backbone::open(settings, true).await?;
    let url = backbone.postgres_url.clone();
    let result = async {
        let pool = imlog_postgres::connect_pool(&url, 2, Some(LIVE_SCHEMA))?;
        if let Some(path) = args.export {
            let mut out: Box<dyn std::io::Write + Send> = if path.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::BufWriter::new(std::fs::File::create(&path)?))
            };
            let read = imlog_projections::ReadModel::new(pool.clone());
            let n = imlog_domain::messages::export_history(&read, &mut *out).await?;
            out.flush()?;
            eprintln!("exported {n} messages");
            return Ok(());
        }
        let stamp = format!(
            "{}_{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let rebuilt = format!("imlog_rebuild_{stamp}");
        let target = replay::rebuild(&url, &backbone.log, &rebuilt).await?;
        let records: i64 = target.values().sum();
        println!("rebuilt the read model into schema {rebuilt} from {records} log records");
        let client = pool.get().await?;
        let differences = replay::differences(&**client, LIVE_SCHEMA, &rebuilt).await?;
        if differences.is_empty() {
            println!("the rebuilt read model equals the live one");
        } else {
            println!("differences from the live read model (it may have moved on meanwhile):");
            differences.iter().for_each(|d| println!("  {d}"));
        }
        if args.swap {
            let retired = format!("imlog_retired_{stamp}");
            replay::swap(&url, LIVE_SCHEMA, &rebuilt, &retired).await?;
            println!(
                "swapped: {rebuilt} is now {LIVE_SCHEMA}; the old read model is kept as {retired}"
            );
        } else if args.keep {
            println!("kept {rebuilt} for inspection (DROP SCHEMA {rebuilt} CASCADE when done)");
        } else {
            client
                .batch_execute(&format!("DROP SCHEMA {rebuilt} CASCADE"))
                .await?;
            println!("dropped {rebuilt}");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    backbone.stop();
    result
}

async fn log_copy(settings: Settings, from: Backend, to: Backend) -> anyhow::Result<()> {
    anyhow::ensure!(from != to, "--from and --to must differ");
    let backend = |b: Backend| match b {
        Backend::Postgres => LogBackend::Postgres,
        Backend::Kafka => LogBackend::Kafka,
    };
    let mut source_settings = settings.clone();
    source_settings.log.backend = backend(from);
    let backbone = Backbone::open(&source_settings, true).await?;
    let result = async {
        let target = crate::app::open_log(&settings, backend(to), &backbone.postgres_url).await?;
        crate::logcopy::copy(&backbone.log, &target).await
    }
    .await;
    backbone.stop();
    let report = result?;
    println!(
        "copied {} records ({} were already on the target)",
        report.copied, report.already_there
    );
    Ok(())
}
