//! The chaos test's short form (the long one: `imlog-chaos`): two gateways,
//! two projectors, tansu and Postgres, each killed with SIGKILL at random
//! while clients send and retry; nothing acked is lost or duplicated.

use imlog_tests::chaos::{describe, run, Plan};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acked_is_lost_or_duplicated_while_components_are_killed() {
    if imlog_tests::kafka_brokers().is_none() {
        // The same tools as the Kafka tests: infra/test.sh.
        return;
    }
    let plan = Plan {
        users: 4,
        per_user: 250,
        pace: Duration::from_millis(150),
        kill_every: Duration::from_millis(1200),
        seed: std::env::var("IMLOG_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            }),
    };
    // A failure names its seed: IMLOG_CHAOS_SEED=… repeats the same kills.
    eprintln!("chaos: {}", describe(&plan));
    // A sender that never gets through must fail the test, not hang it.
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        run(plan, env!("CARGO_BIN_EXE_imlog-proc")),
    )
    .await
    .expect("the chaos run finished within 5 minutes");
    eprintln!("{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.seq_gaps, 0, "{report}");
    assert!(report.replay_equals_live, "{report}");
    assert!(report.kills.values().sum::<usize>() >= 5, "{report}");
    assert!(report.resent > 0, "{report}");
}
