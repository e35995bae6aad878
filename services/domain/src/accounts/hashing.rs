//! Password hashing on a fixed set of threads, one per core. Each argon2id
//! hash works in ~19 MiB, which each thread keeps and reuses
//! (`credentials.rs`): run on the runtime's many blocking threads, the
//! process grew by hundreds of megabytes over a thousand logins; here the
//! memory is bounded by the cores.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct HashingPool {
    jobs: mpsc::Sender<Job>,
    /// One per thread: a job waits here, not in the threads' queue.
    slots: Semaphore,
}

/// Why a job did not run.
pub(crate) enum HashingError {
    /// No thread was free within the wait.
    Busy,
    /// The job panicked, or the pool is gone.
    Failed,
}

impl HashingPool {
    pub(crate) fn new(threads: usize) -> HashingPool {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("imlog-hashing-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take a job, not to run it.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        HashingPool {
            jobs,
            slots: Semaphore::new(threads),
        }
    }

    /// Runs `work` on a hashing thread, waiting at most `wait` for one.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        wait: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let _slot = tokio::time::timeout(wait, self.slots.acquire())
            .await
            .map_err(|_| HashingError::Busy)?
            .map_err(|_| HashingError::Failed)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            if let Ok(out) = out {
                let _ = done.send(out);
            }
        });
        self.jobs.send(job).map_err(|_| HashingError::Failed)?;
        result.await.map_err(|_| HashingError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pools_threads_and_panics_are_failures() {
        let pool = HashingPool::new(2);
        let name = pool
            .run(Duration::from_secs(1), || {
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .ok()
            .flatten();
        assert!(name.is_some_and(|n| n.starts_with("imlog-hashing-")));
        let panicked = pool.run(Duration::from_secs(1), || panic!("boom")).await;
        assert!(matches!(panicked, Err(HashingError::Failed)));
        // The thread that panicked is still there.
        for _ in 0..4 {
            assert!(pool.run(Duration::from_secs(1), || 1).await.is_ok());
        }
    }
}
