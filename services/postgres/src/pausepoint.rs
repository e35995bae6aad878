//! A test hook: with `IMLOG_PAUSEPOINT=<name>:<ms>` in its environment, work
//! that reaches the point called `name` waits that long first — how the
//! tests open a race window on purpose (a retry racing a late append, a
//! swap racing a projector batch). Unset, it costs a comparison.

/// Waits at the point called `name` if the environment asks for it.
pub async fn pausepoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| {
        let raw = std::env::var("IMLOG_PAUSEPOINT").ok()?;
        let (point, ms) = raw.split_once(':')?;
        Some((point.to_owned(), ms.parse().ok()?))
    });
    if let Some((point, ms)) = point {
        if point == name {
            tracing::warn!(pausepoint = name, ms, "pausepoint reached; waiting");
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
        }
    }
}
