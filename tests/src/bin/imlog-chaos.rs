//! `imlog-chaos`: the chaos test's long form (see `imlog_tests::chaos`).
//!
//!   cargo build -p imlog-tests --bins && target/debug/imlog-chaos [--users N] [--per-user N] [--kill-every-ms N] [--seed N]
//!
//! Needs tansu on PATH (infra/lib.sh installs it into ~/.cache/imlog/tools/bin)
//! and the Postgres server binaries (as `imlog serve` does).

use imlog_tests::chaos::{describe, run, Plan};
use std::time::Duration;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let plan = Plan {
        users: arg("--users", 8) as usize,
        per_user: arg("--per-user", 1250) as usize,
        pace: Duration::from_millis(arg("--pace-ms", 100)),
        kill_every: Duration::from_millis(arg("--kill-every-ms", 2500)),
        seed: arg("--seed", std::process::id() as u64),
    };
    println!("chaos: {}", describe(&plan));
    let bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("imlog-proc");
    let report = run(plan, bin.to_str().expect("a UTF-8 path")).await;
    println!("{report}");
    let ok = report.lost == 0
        && report.duplicated == 0
        && report.seq_gaps == 0
        && report.replay_equals_live;
    std::process::exit(if ok { 0 } else { 1 });
}
