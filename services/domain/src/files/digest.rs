//! The whole-file digest, hashed as chunks arrive, so that completing an
//! upload need not read it back: chunks are fed in index order, the ones
//! that arrive early (a window is out of order) wait in memory, bounded.
//! Hashing runs on the blocking pool, one upload's chunks in turn, so it
//! never holds up the async workers or other uploads.
//!
//! It is only a shortcut — a restart, chunks spread over several gateways,
//! a chunk stored twice or a window too wide for the bound leave the digest
//! unknown, and then completion reads the object to verify it.

use bytes::Bytes;
use imlog_events::UploadId;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Early chunks held for one upload at most.
const MAX_WAITING_CHUNKS: usize = 32;
/// Early bytes held for all uploads at most.
const MAX_WAITING_BYTES: usize = 512 * 1024 * 1024;
/// An upload not fed for this long is forgotten.
const IDLE: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Digests {
    uploads: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Running>>>>,
    waiting_bytes: Arc<AtomicUsize>,
}

struct Running {
    /// `None` once finished or given up.
    hasher: Option<Sha256>,
    next: u32,
    waiting: BTreeMap<u32, Bytes>,
    fed_at: Instant,
    /// The count of early bytes of all uploads, which this one's are in.
    waiting_bytes: Arc<AtomicUsize>,
}

impl Running {
    fn give_up(&mut self) {
        self.release_waiting();
        self.hasher = None;
    }

    fn release_waiting(&mut self) {
        let held: usize = self.waiting.values().map(Bytes::len).sum();
        self.waiting_bytes.fetch_sub(held, Ordering::Relaxed);
        self.waiting.clear();
    }
}

impl Drop for Running {
    /// However it is forgotten, its early bytes leave the count.
    fn drop(&mut self) {
        self.release_waiting();
    }
}

impl Digests {
    /// Feeds chunk `index` of an upload of `chunks` chunks, just stored.
    /// `fresh`: no chunk of it was acknowledged before (a digest can only
    /// start then). Returns the whole digest when the last chunk goes in.
    pub async fn feed(
        &self,
        upload: UploadId,
        chunks: u32,
        index: u32,
        bytes: &Bytes,
        fresh: bool,
    ) -> Option<String> {
        let entry = {
            let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
            uploads.retain(|_, r| r.try_lock().map_or(true, |r| r.fed_at.elapsed() < IDLE));
            match uploads.get(&upload) {
                Some(entry) => entry.clone(),
                None if fresh => uploads
                    .entry(upload)
                    .or_insert_with(|| {
                        Arc::new(tokio::sync::Mutex::new(Running {
                            hasher: Some(Sha256::new()),
                            next: 0,
                            waiting: BTreeMap::new(),
                            fed_at: Instant::now(),
                            waiting_bytes: self.waiting_bytes.clone(),
                        }))
                    })
                    .clone(),
                None => return None,
            }
        };
        let mut running = entry.lock().await;
        running.fed_at = Instant::now();
        if index < running.next || running.waiting.contains_key(&index) {
            // Stored again: the store now holds the later bytes, which the
            // digest did not see. Give up; completion reads the object.
            running.give_up();
            return None;
        }
        running.hasher.as_ref()?;
        if index > running.next {
            let held = self.waiting_bytes.load(Ordering::Relaxed);
            if running.waiting.len() >= MAX_WAITING_CHUNKS || held + bytes.len() > MAX_WAITING_BYTES
            {
                running.give_up();
            } else {
                self.waiting_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
                running.waiting.insert(index, bytes.clone());
            }
            return None;
        }
        // This chunk and the early ones that follow it, in order.
        let mut batch = vec![bytes.clone()];
        let mut next = running.next + 1;
        while let Some(early) = running.waiting.remove(&next) {
            self.waiting_bytes.fetch_sub(early.len(), Ordering::Relaxed);
            batch.push(early);
            next += 1;
        }
        let mut hasher = running.hasher.take()?;
        let hashed = tokio::task::spawn_blocking(move || {
            for bytes in &batch {
                hasher.update(bytes);
            }
            hasher
        })
        .await;
        let Ok(hasher) = hashed else {
            running.give_up();
            return None;
        };
        running.next = next;
        if next == chunks {
            return Some(hex::encode(hasher.finalize()));
        }
        running.hasher = Some(hasher);
        None
    }

    /// The upload's digest was recorded (or it ended): forget it.
    pub fn forget(&self, upload: UploadId) {
        let removed = {
            let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
            uploads.remove(&upload)
        };
        if let Some(entry) = removed {
            if let Ok(mut running) = entry.try_lock() {
                running.give_up();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_in_any_order_give_the_whole_digest() {
        let chunks: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let whole = hex::encode(Sha256::digest(chunks.concat()));
        let digests = Digests::default();
        let id = UploadId::random();
        let mut found = None;
        for (n, &i) in [2u32, 0, 4, 1, 3].iter().enumerate() {
            found = digests
                .feed(id, 5, i, &chunks[i as usize], n == 0)
                .await
                .or(found);
        }
        assert_eq!(found, Some(whole));
        // A chunk stored twice: what the store holds was not all hashed.
        let again = UploadId::random();
        let mut found = None;
        for (n, &i) in [0u32, 1, 1, 2, 3, 4].iter().enumerate() {
            found = digests
                .feed(again, 5, i, &chunks[i as usize], n == 0)
                .await
                .or(found);
        }
        assert_eq!(found, None);
        // An upload whose first chunks were acknowledged elsewhere has none.
        let other = UploadId::random();
        for i in 1..5u32 {
            assert_eq!(
                digests.feed(other, 5, i, &chunks[i as usize], false).await,
                None
            );
        }
        digests.forget(id);
        digests.forget(again);
        assert_eq!(digests.waiting_bytes.load(Ordering::Relaxed), 0);
    }
}
