//! Upgrading a read model: a deployment at an older migration gains the new
//! columns with the values a replay of its log would give.

use imlog_postgres::{connect_pool, migrate};

/// Migration 6 (thread list by join position) on a read model that already
/// has members added to groups after their creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_positions_of_existing_members_are_what_a_replay_gives() {
    let url = imlog_tests::fresh_database().await;
    let pool = connect_pool(&url, 1, None).expect("pool");
    let mut client = pool.get().await.expect("connect");
    let before: Vec<_> = imlog_projections::migrations()
        .into_iter()
        .filter(|m| m.version < 6)
        .collect();
    migrate(&mut client, "imlog", &before)
        .await
        .expect("up to 5");
    // A private thread (id 1) and a group (id 3, created at offset 2 with
    // users 10 and 11); user 12 added by the change at offset 6, user 13 by
    // the one at offset 8, then removed and added again at offset 9.
    client
        .batch_execute(
            "SET search_path TO imlog;
             INSERT INTO threads VALUES (1, 'private', now()), (3, 'group', now());
             INSERT INTO group_threads VALUES (3, 'g', 4);
             INSERT INTO thread_members (thread_id, user_id, role, joined_at) VALUES
               (1, 10, 'member', now()), (1, 11, 'member', now()),
               (3, 10, 'owner', now()), (3, 11, 'member', now()),
               (3, 12, 'member', now()), (3, 13, 'member', now());
             INSERT INTO group_changes VALUES
               (2, 3, 10, 'created', '{11}', 'g', now()),
               (6, 3, 10, 'added', '{12, 13}', NULL, now()),
               (8, 3, 10, 'removed', '{13}', NULL, now()),
               (9, 3, 10, 'added', '{13}', NULL, now());",
        )
        .await
        .expect("an older read model");
    migrate(&mut client, "imlog", &imlog_projections::migrations())
        .await
        .expect("migrate to the latest");
    let rows = client
        .query(
            "SELECT thread_id, user_id, joined_pos FROM imlog.thread_members ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("select");
    let positions: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        positions,
        vec![
            (1, 10, 1),
            (1, 11, 1),
            (3, 10, 3),
            (3, 11, 3),
            (3, 12, 7),
            (3, 13, 10)
        ]
    );
}
