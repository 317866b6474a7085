//! The embedded store against the Redis backend on one workload: every request
//! presents its session's current token and rotates it (SPEC's defaults), over 1 000
//! sessions each owned by one worker. Prints ops/s and the embedded/Redis ratio.
//!
//! `bash .ci/redis.sh bench` starts a loopback Redis and runs it; by hand:
//! `BATON_REDIS_URL=redis://127.0.0.1:6390/0 cargo bench --features redis --bench redis`.
//! `BATON_BENCH_SECS` sets each contender's measuring time (default 3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use baton::{Authenticated, RedisStore, Store};

const SESSIONS: usize = 1000;
/// Requests in flight against Redis at once: a busy service's worth.
const IN_FLIGHT: usize = 64;
const SECRET: &[u8; 32] = b"bench secret, 32 bytes long.....";

fn secs() -> Duration {
    let s = std::env::var("BATON_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn uid(i: usize) -> String {
    format!("user{i}@example.com")
}

fn next_token(a: Authenticated<'_>) -> String {
    a.credentials().token().as_str().to_owned()
}

/// Authenticate ops/s of the embedded store on `threads` threads.
fn embedded(threads: usize) -> f64 {
    let store = Arc::new(Store::new());
    let sessions: Vec<(String, String, String)> = (0..SESSIONS)
        .map(|i| {
            let uid = uid(i);
            let c = store.issue(&uid).unwrap();
            let (client, token) = (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            );
            (uid, client, token)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = sessions
        .chunks(SESSIONS.div_ceil(threads))
        .map(|mine| {
            let mut mine = mine.to_vec();
            let (store, stop, done, start) =
                (store.clone(), stop.clone(), done.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (uid, client, token) in mine.iter_mut() {
                        *token = next_token(store.authenticate(uid, client, token).unwrap());
                    }
                    n += mine.len() as u64;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(secs());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

/// Authenticate ops/s of the Redis backend over `connections` connections, with
/// `IN_FLIGHT` tasks each owning a share of the sessions.
fn on_redis(url: &str, connections: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prefix = format!("bench-{}-{connections}", std::process::id());
        let store = Arc::new(
            RedisStore::builder(url)
                .secret(SECRET)
                .prefix(&prefix)
                .connections(connections)
                .connect()
                .await
                .expect("redis answers"),
        );
        let mut sessions = Vec::with_capacity(SESSIONS);
        for i in 0..SESSIONS {
            let uid = uid(i);
            let c = store.issue(&uid).await.unwrap();
            let (client, token) = (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            );
            sessions.push((uid, client, token));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let tasks: Vec<_> = sessions
            .chunks(SESSIONS.div_ceil(IN_FLIGHT))
            .map(|mine| {
                let mut mine = mine.to_vec();
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for (uid, client, token) in mine.iter_mut() {
                            *token =
                                next_token(store.authenticate(uid, client, token).await.unwrap());
                        }
                        n += mine.len() as u64;
                    }
                    n
                })
            })
            .collect();
        tokio::time::sleep(secs()).await;
        stop.store(true, Ordering::Relaxed);
        let mut done = 0;
        for t in tasks {
            done += t.await.unwrap();
        }
        let rate = done as f64 / t0.elapsed().as_secs_f64();
        for i in 0..SESSIONS {
            store.revoke_user(&uid(i)).await.unwrap();
        }
        rate
    })
}

fn main() {
    let Ok(url) = std::env::var("BATON_REDIS_URL") else {
        eprintln!("redis bench skipped: set BATON_REDIS_URL (bash .ci/redis.sh bench does)");
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("workload: authenticate with the current token (every call rotates), {SESSIONS} sessions, {:?} each, {cores} cores", secs());
    let mut rows = vec![
        ("embedded Store".to_owned(), 1, embedded(1)),
        ("embedded Store".to_owned(), cores, embedded(cores)),
    ];
    for conns in [1, 50] {
        rows.push((
            format!("RedisStore, {IN_FLIGHT} tasks"),
            conns,
            on_redis(&url, conns),
        ));
    }
    let embedded_best = rows[..2].iter().map(|r| r.2).fold(0.0, f64::max);
    println!("| contender | threads / connections | authenticate ops/s | embedded (best) ÷ this |");
    println!("|---|---:|---:|---:|");
    for (name, n, rate) in &rows {
        println!(
            "| {name} | {n} | {rate:.0} | {:.1}× |",
            embedded_best / rate
        );
    }
}
