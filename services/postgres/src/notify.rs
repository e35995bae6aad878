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
    spawn_payload_listener(
        url,
        channel,
        Arc::new(move |_: Option<&str>| bump.send_modify(|v| *v += 1)),
    )
}

/// Calls `heard` for what a notification on `channel` said: `Some(payload)`
/// per notification, `None` after every (re)connect (anything may have been
/// missed meanwhile).
pub type Heard = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// As [`spawn_listener`], telling `heard` each notification's payload.
pub fn spawn_payload_listener(url: String, channel: &'static str, heard: Heard) -> JoinHandle<()> {
    let bump = heard;
    tokio::spawn(async move {
        loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, mut connection)) => {
                    let bump_on_notify = bump.clone();
                    let driver = tokio::spawn(async move {
                        while let Some(Ok(message)) =
                            std::future::poll_fn(|cx| connection.poll_message(cx)).await
                        {
                            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                                bump_on_notify(Some(n.payload()));
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {channel}")).await {
                        Ok(()) => bump(None),
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
