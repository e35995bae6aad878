//! The log conformance suite against both backends: the Postgres log on a
//! real Postgres, and the Kafka backend on a real Kafka-protocol broker.

use imlog_log::conformance::Opener;
use imlog_tests::{fresh_database, open_log, topic_prefix, Backend};
use std::sync::Arc;

/// A fresh database and prefix; every call opens a new log instance over them.
async fn opener(backend: Backend) -> Option<Opener> {
    if !imlog_tests::available(backend) {
        return None;
    }
    let url = fresh_database().await;
    let prefix = topic_prefix();
    Some(Arc::new(move || {
        let (url, prefix) = (url.clone(), prefix.clone());
        Box::pin(async move { open_log(backend, &url, &prefix).await })
    }))
}

mod postgres_log {
    imlog_log::conformance_tests!(super::opener(imlog_tests::Backend::Postgres));
}

mod kafka_log {
    imlog_log::conformance_tests!(super::opener(imlog_tests::Backend::Kafka));
}
