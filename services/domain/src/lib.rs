//! The rules of imlog, one service per feature (tuwunel's shape): route
//! handlers stay thin and call these; each service validates a command
//! against the read model, appends events through the [`Journal`], and
//! answers once the log confirmed them. Each has its own error enum; the
//! edges (WebSocket, HTTP) map them to wire codes — nothing here names one.
//!
//! - [`accounts`]: register, login, tokens, logout.
//! - [`threads`]: private threads, membership, thread list sync.
//! - [`profiles`]: profiles, user search, presence.
//! - [`gateways`]: gateway load and liveness, the least-loaded gateway.
//! - [`friends`]: requests, acceptance (a process), friend lists.
//! - [`groups`]: group threads, the permission table, system lines (a process).
//! - [`messages`]: posting, message sync, the wire view of a message.
//! - [`files`]: resumable uploads, their completion (a process), downloads.
//! - [`processes`]: process managers — multi-step commands driven by the log.

pub mod accounts;
pub mod credentials;
pub mod files;
pub mod friends;
pub mod gateways;
pub mod groups;
pub mod journal;
pub mod messages;
pub mod processes;
pub mod profiles;
pub mod threads;

pub use journal::{Journal, StoreError, Writes};

use std::sync::Arc;

/// A read-model page as the wire's page, each row made a view.
pub(crate) fn page<R, V>(
    rows: imlog_projections::Page<R>,
    view: impl FnMut(R) -> V,
) -> imlog_protocol::Page<V> {
    imlog_protocol::Page {
        items: rows.items.into_iter().map(view).collect(),
        load_more: rows.load_more,
        next_cursor: rows.next_cursor,
    }
}

/// Every domain service, built over one journal.
pub struct Domain {
    pub journal: Arc<Journal>,
    pub accounts: accounts::Accounts,
    pub threads: Arc<threads::Threads>,
    pub messages: messages::Messages,
    pub friends: friends::Friends,
    pub groups: groups::Groups,
    pub profiles: Arc<profiles::Profiles>,
    pub gateways: gateways::Gateways,
    pub files: files::Files,
    pub transfers: files::transfers::Transfers,
}

impl Domain {
    pub fn new(
        journal: Arc<Journal>,
        accounts: accounts::AccountsSettings,
        threads: threads::ThreadsSettings,
        messages: messages::MessagesSettings,
        gateways: gateways::Gateways,
        objects: imlog_objects::Objects,
        files: files::FilesSettings,
    ) -> Domain {
        let threads = Arc::new(threads::Threads::new(journal.clone(), threads));
        Domain {
            accounts: accounts::Accounts::new(journal.clone(), accounts),
            messages: messages::Messages::new(journal.clone(), threads.clone(), messages),
            friends: friends::Friends::new(journal.clone()),
            groups: groups::Groups::new(journal.clone()),
            profiles: Arc::new(profiles::Profiles::new(journal.clone(), gateways.clone())),
            gateways,
            files: files::Files::new(journal.clone(), objects, files),
            transfers: files::transfers::Transfers::new(journal.clone()),
            threads,
            journal,
        }
    }
}
