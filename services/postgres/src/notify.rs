//! LISTEN on a channel from a dedicated connection and count notifications,
//! so tasks can wait for "something changed" without polling.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Keeps a connection LISTENing on `channel` (reconnecting after failures)
/// and bumps `bump` on every notification and after every (re)connect, since
/// notifications sent while disconnected are lost.
pub fn spawn_listener(
    url: String,
    channel: &'static str,
    bump: Arc<watch::Sender<u64>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, mut connection)) => {
                    let bump_on_notify = bump.clone();
                    let driver = tokio::spawn(async move {
                        while let Some(Ok(message)) =
                            std::future::poll_fn(|cx| connection.poll_message(cx)).await
                        {
                            if matches!(message, tokio_postgres::AsyncMessage::Notification(_)) {
                                bump_on_notify.send_modify(|v| *v += 1);
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {channel}")).await {
                        Ok(()) => bump.send_modify(|v| *v += 1),
                        Err(e) => tracing::warn!(channel, error = %e, "LISTEN failed"),
                    }
                    let _ = driver.await;
                    drop(client);
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "cannot connect to LISTEN; waiters fall back to polling")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
