//! Helpers shared by the Redis suites (`tests/redis.rs`, `tests/redis_cluster.rs`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use baton::Authenticated;

/// A key prefix no other test (or earlier run) uses.
pub fn fresh_prefix(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The token an answer carries.
pub fn token_of(a: &Authenticated<'_>) -> String {
    a.credentials().token().as_str().to_owned()
}
