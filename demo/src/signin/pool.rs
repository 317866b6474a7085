//! The hashing pool: password work off the async runtime, with a bounded queue.
//!
//! An Argon2 check takes tens of milliseconds of one core. Run on a runtime worker it
//! stalls every request queued behind it; run without a bound, a flood of sign-ins
//! queues without end. So each check runs on tokio's blocking threads, at most
//! `workers` at a time, and at most `queue` more wait for a worker; past that a
//! sign-in is refused at once ([`Busy`], a 503) instead of waiting.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::users::{User, Users};

/// The pool was full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the password hashing queue is full")
    }
}

impl std::error::Error for Busy {}

/// Runs password checks on at most `workers` threads with at most `queue` waiting.
#[derive(Debug, Clone)]
pub struct HashPool {
    /// Held while hashing.
    workers: Arc<Semaphore>,
    /// Held from admission to the end of the hash: `workers + queue` places.
    places: Arc<Semaphore>,
    sizes: (usize, usize),
}

impl HashPool {
    /// `workers` at least 1 (0 is taken as 1); `queue` may be 0 (no waiting at all).
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        HashPool {
            workers: Arc::new(Semaphore::new(workers)),
            places: Arc::new(Semaphore::new(workers.saturating_add(queue))),
            sizes: (workers, queue),
        }
    }

    /// One worker fewer than the cores, so that hashing never takes every core from the
    /// runtime serving requests; at least one.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    }

    /// `(workers, queue)`.
    pub fn sizes(&self) -> (usize, usize) {
        self.sizes
    }

    /// Runs `work` on a blocking thread once a worker is free, or refuses at once if
    /// `workers + queue` are already taken. Dropping the future while it waits gives
    /// its place back; once `work` has started, its place is held until it ends, since
    /// the core stays busy whether or not anyone waits for the answer.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let place = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        // The semaphores are never closed, so acquiring fails only if they were.
        let worker = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        tokio::task::spawn_blocking(move || {
            let answer = work();
            drop((worker, place));
            answer
        })
        .await
        // A panic in `work` (Argon2 does not panic) or a runtime shutting down: either
        // way there is no answer, and "try again" is the honest one.
        .map_err(|_| Busy)
    }

    /// The user if `password` is theirs, checked on the pool. Costs one hash whether or
    /// not the address exists ([`Users::verify`]).
    pub async fn verify(
        &self,
        users: &Users,
        email: String,
        password: String,
    ) -> Result<Option<User>, Busy> {
        let users = users.clone();
        self.run(move || users.verify(&email, &password).cloned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::users::HashCost;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once_and_places_come_back() {
        let pool = HashPool::new(1, 1);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let blocked = |gate: Arc<std::sync::Mutex<mpsc::Receiver<()>>>| {
            move || {
                let _ = gate.lock().map(|g| g.recv_timeout(Duration::from_secs(20)));
                7
            }
        };
        let running = tokio::spawn({
            let (pool, gate) = (pool.clone(), Arc::clone(&gate));
            async move { pool.run(blocked(gate)).await }
        });
        let waiting = tokio::spawn({
            let (pool, gate) = (pool.clone(), Arc::clone(&gate));
            async move { pool.run(blocked(gate)).await }
        });
        // Both places taken (one hashing, one queued): the third is refused, fast.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while pool.places.available_permits() > 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.run(|| 1).await, Err(Busy));
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(7));
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert_eq!(pool.places.available_permits(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn verifies_off_the_runtime_thread() {
        let mut users = Users::new(HashCost::FAST);
        users.add("a@example.com", "pw").unwrap();
        let pool = HashPool::new(1, 0);
        let here = std::thread::current().id();
        let there = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(here, there);
        let ok = pool
            .verify(&users, "a@example.com".into(), "pw".into())
            .await;
        assert_eq!(ok.unwrap().map(|u| u.id), Some(1));
        let wrong = pool
            .verify(&users, "a@example.com".into(), "pW".into())
            .await;
        assert!(wrong.unwrap().is_none());
        let unknown = pool.verify(&users, "b@example.com".into(), "pw".into());
        assert!(unknown.await.unwrap().is_none());
    }
}
