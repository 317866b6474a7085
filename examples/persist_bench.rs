//! The durable store's numbers for BENCHMARKS.md. Each mode prints one table:
//!
//! ```text
//! cargo run --release --features persist --example persist_bench -- rotate
//! cargo run --release --features persist --example persist_bench -- pause [SESSIONS]
//! cargo run --release --features persist --example persist_bench -- signins
//! cargo run --release --features persist --example persist_bench -- restore [SESSIONS]
//! cargo run --release --features persist --example persist_bench -- seeds DIR
//! ```
//!
//! - `rotate`: rotations per second on one thread, the bare store against the durable
//!   one (checkpointing every 100 ms meanwhile), order rotated every round, beside a
//!   second bare store (the A/A control).
//! - `pause`: authenticate latency (p50/p99/p99.9/max) while a checkpoint writes every
//!   session (all rotated), against the same with no checkpoint, and against a control
//!   with equally heavy unrelated work (a thread rewriting a 256 MiB buffer).
//! - `signins`: sign-ins per second with 1 and 32 concurrent signers (group commit).
//! - `restore`: file size and open (restore) time at SESSIONS sessions (1 000 000).
//! - `seeds`: writes the fuzz target's seed files into DIR.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::{PersistOptions, PersistentStore, Secret, Store};
use hdrhistogram::Histogram;

fn secret() -> Secret {
    Secret::new(b"benchmark secret, thirty-two b!!".to_vec()).unwrap()
}

fn open(dir: &std::path::Path, every: Duration) -> PersistentStore {
    PersistentStore::open(
        Store::builder(),
        PersistOptions::new(dir, secret()).checkpoint_interval(every),
    )
    .unwrap()
}

type Held = Vec<(String, String, String)>;

fn sign_in_all(n: usize, issue: impl Fn(&str) -> (String, String)) -> Held {
    (0..n)
        .map(|i| {
            let uid = format!("user-{i:07}@example.com");
            let (client, token) = issue(&uid);
            (uid, client, token)
        })
        .collect()
}

/// Rotations per second over `held`, round robin, for `for_` long.
fn rotate_rate(
    held: &mut Held,
    for_: Duration,
    auth: impl Fn(&str, &str, &str) -> Option<String>,
) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        for (uid, client, token) in held.iter_mut().take(1000) {
            *token = auth(uid, client, token).expect("rotates");
            n += 1;
        }
        let len = held.len();
        held.rotate_left(1000.min(len));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rotate(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let idle_dir = tempfile::tempdir().unwrap();
    let bare = Store::new();
    // A second bare store: the A/A control, what two identical stores differ by here.
    let bare2 = Store::new();
    // The default interval, and one so long that only the hot path differs.
    let durable = open(dir.path(), Duration::from_secs(1));
    let idle = open(idle_dir.path(), Duration::from_secs(3600));
    let n = 10_000;
    let take = |c: baton::Credentials<'_>| (c.client().as_str().into(), c.token().as_str().into());
    let mut held = [
        sign_in_all(n, |u| take(bare.issue(u).unwrap())),
        sign_in_all(n, |u| take(bare2.issue(u).unwrap())),
        sign_in_all(n, |u| take(durable.issue(u).unwrap())),
        sign_in_all(n, |u| take(idle.issue(u).unwrap())),
    ];
    let next = |r: Result<baton::Authenticated<'_>, baton::Rejection>| {
        r.ok().map(|r| r.credentials().token().as_str().to_owned())
    };
    let mut rate = vec![[0f64; 4]; rounds];
    for (round, r) in rate.iter_mut().enumerate() {
        let d = Duration::from_millis(700);
        // Each round starts with a different store, so no store always runs first.
        for k in 0..4 {
            let which = (round + k) % 4;
            let h = &mut held[which];
            r[which] = match which {
                0 => rotate_rate(h, d, |u, c, t| next(bare.authenticate(u, c, t))),
                1 => rotate_rate(h, d, |u, c, t| next(bare2.authenticate(u, c, t))),
                2 => rotate_rate(h, d, |u, c, t| next(durable.authenticate(u, c, t))),
                _ => rotate_rate(h, d, |u, c, t| next(idle.authenticate(u, c, t))),
            };
        }
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::MAX, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        format!("{lo:.2}..{hi:.2}")
    };
    println!("rotate, 1 thread, {n} sessions, {rounds} rounds of 0.7 s per store, order rotated");
    println!("| store | rotations/s (median) | ratio to bare: median | range |");
    println!("|---|---|---|---|");
    let rows = [
        "bare",
        "bare again (A/A control: a second bare store)",
        "durable, checkpoint every 1 s (all 10 000 dirty each time)",
        "durable, 1 h interval (checkpoints only when cued)",
    ];
    for (which, name) in rows.iter().enumerate() {
        let mut v: Vec<f64> = rate.iter().map(|r| r[which]).collect();
        let ratio: Vec<f64> = rate.iter().map(|r| r[which] / r[0]).collect();
        if which == 0 {
            println!("| {name} | {:.0} | 1 | |", median(&mut v));
        } else {
            println!(
                "| {name} | {:.0} | {:.3} | {} |",
                median(&mut v),
                median(&mut ratio.clone()),
                spread(&ratio)
            );
        }
    }
}

fn pause(sessions: usize) {
    let dir = tempfile::tempdir().unwrap();
    // An hour: only the explicit checkpoint below writes.
    let s = Arc::new(open(dir.path(), Duration::from_secs(3600)));
    let t = Instant::now();
    let mut held = sign_in_all_fast(&s, sessions);
    eprintln!("{sessions} sign-ins in {:?}", t.elapsed());
    let measure = |held: &mut Held, s: &PersistentStore, stop: &AtomicBool| {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        let mut i = 0;
        let len = held.len();
        while !stop.load(Ordering::Relaxed) {
            let (uid, client, token) = &mut held[i % len];
            let t = Instant::now();
            let r = s.authenticate(uid, client, token);
            h.record(t.elapsed().as_nanos() as u64).unwrap();
            *token = r.unwrap().credentials().token().as_str().to_owned();
            i += 1;
        }
        h
    };
    let row = |name: &str, h: &Histogram<u64>| {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len()
        );
    };
    println!("authenticate latency (ns), 1 thread, {sessions} sessions, while the other core:");
    println!("| other core | p50 | p99 | p99.9 | max | samples |");
    println!("|---|---|---|---|---|---|");
    for round in 0..2 {
        // Every session rotated since the last checkpoint: one pass rotates them all.
        for (uid, client, token) in held.iter_mut() {
            *token = s
                .authenticate(uid, client, token)
                .unwrap()
                .credentials()
                .token()
                .as_str()
                .to_owned();
        }
        let stop = AtomicBool::new(false);
        let (h, took) = std::thread::scope(|sc| {
            let w = sc.spawn(|| {
                let t = Instant::now();
                s.checkpoint().unwrap();
                let took = t.elapsed();
                stop.store(true, Ordering::Relaxed);
                took
            });
            let h = measure(&mut held, &s, &stop);
            (h, w.join().unwrap())
        });
        row(
            &format!("checkpoint of {sessions} dirty sessions ({took:.2?}), run {round}"),
            &h,
        );
        // The same time with nothing else running.
        let stop = AtomicBool::new(false);
        let h = std::thread::scope(|sc| {
            sc.spawn(|| {
                std::thread::sleep(took);
                stop.store(true, Ordering::Relaxed);
            });
            measure(&mut held, &s, &stop)
        });
        row(&format!("idle, run {round}"), &h);
        // Control: equally long, memory-heavy unrelated work.
        let stop = AtomicBool::new(false);
        let h = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut buf = vec![0u64; 32 << 20];
                let t = Instant::now();
                let mut x = 1u64;
                while t.elapsed() < took {
                    for v in buf.iter_mut().step_by(8) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        *v ^= x;
                    }
                }
                std::hint::black_box(&buf);
                stop.store(true, Ordering::Relaxed);
            });
            measure(&mut held, &s, &stop)
        });
        row(&format!("control: rewriting 256 MiB, run {round}"), &h);
    }
}

fn sign_in_all_fast(s: &PersistentStore, n: usize) -> Held {
    // 64 signers: group commit makes a million sign-ins take seconds, not an hour.
    let per = n.div_ceil(64);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64)
            .map(|t| {
                sc.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| {
                            let uid = format!("user-{i:07}@example.com");
                            let c = s.issue(&uid).unwrap();
                            let (client, token) = (
                                c.client().as_str().to_owned(),
                                c.token().as_str().to_owned(),
                            );
                            (uid, client, token)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn signins() {
    println!("sign-ins per second (each durable before it returns)");
    println!("| signers | sign-ins/s | per sign-in |");
    println!("|---|---|---|");
    for signers in [1usize, 32] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), Duration::from_secs(1));
        let for_ = Duration::from_secs(3);
        let total: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..signers)
                .map(|t| {
                    let s = &s;
                    sc.spawn(move || {
                        let start = Instant::now();
                        let mut n = 0;
                        while start.elapsed() < for_ {
                            s.issue(&format!("signer-{t}-{n}@example.com")).unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let rate = total as f64 / for_.as_secs_f64();
        println!(
            "| {signers} | {rate:.0} | {:.2} ms |",
            1000.0 / rate * signers as f64
        );
    }
}

fn restore(sessions: usize) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_secs(3600));
    let t = Instant::now();
    let mut held = sign_in_all_fast(&s, sessions);
    let signing = t.elapsed();
    // Half of them rotated, as a live service's would be.
    for (uid, client, token) in held.iter_mut().step_by(2) {
        *token = s
            .authenticate(uid, client, token)
            .unwrap()
            .credentials()
            .token()
            .as_str()
            .to_owned();
    }
    s.checkpoint().unwrap();
    let path = dir.path().join("sessions.redb");
    let open_size = std::fs::metadata(&path).unwrap().len();
    // close(): the final checkpoint (nothing left to write here), then compaction.
    let t = Instant::now();
    s.close().unwrap();
    let closing = t.elapsed();
    let size = std::fs::metadata(&path).unwrap().len();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let s = open(dir.path(), Duration::from_secs(3600));
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(s.store().len(), sessions);
        s.crash();
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("| sessions | file size | bytes per session | restore (median of 3) | sign-in of all (64 signers) |");
    println!("|---|---|---|---|---|");
    println!(
        "| {sessions} | {:.1} MiB | {:.0} | {:.2} s | {:.1} s |",
        mib(size),
        size as f64 / sessions as f64,
        median(&mut times),
        signing.as_secs_f64()
    );
    println!(
        "while open: {:.1} MiB, {:.0} B per session; close() (compacts) took {:.2} s",
        mib(open_size),
        open_size as f64 / sessions as f64,
        closing.as_secs_f64()
    );
}

fn seeds(out: &std::path::Path) {
    std::fs::create_dir_all(out).unwrap();
    for (name, n) in [("empty", 0usize), ("three", 3), ("forty", 40)] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), Duration::from_secs(3600));
        let held = sign_in_all(n, |u| {
            let c = s.issue(u).unwrap();
            (c.client().as_str().into(), c.token().as_str().into())
        });
        if let Some((u, c, t)) = held.first() {
            s.authenticate(u, c, t).unwrap();
            s.revoke(&held[n - 1].0, &held[n - 1].1).unwrap();
        }
        s.close().unwrap();
        let path = dir.path().join("sessions.redb");
        // Compacted, so seeds stay small for the fuzzer.
        redb::Database::open(&path)
            .unwrap()
            .compact(redb::CompactionMode::Balanced)
            .unwrap();
        std::fs::copy(&path, out.join(name)).unwrap();
    }
}

/// N rotations over 1 000 sessions, for callgrind: `hot bare N` or `hot durable N`.
fn hot(which: &str, rotations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bare = Store::new();
    let durable = open(dir.path(), Duration::from_secs(3600));
    let take = |c: baton::Credentials<'_>| (c.client().as_str().into(), c.token().as_str().into());
    let mut held = match which {
        "bare" => sign_in_all(1000, |u| take(bare.issue(u).unwrap())),
        _ => sign_in_all(1000, |u| take(durable.issue(u).unwrap())),
    };
    for i in 0..rotations {
        let (uid, client, token) = &mut held[i % 1000];
        let next = match which {
            "bare" => bare.authenticate(uid, client, token),
            _ => durable.authenticate(uid, client, token),
        };
        let next = next.unwrap();
        token.clear();
        token.push_str(next.credentials().token().as_str());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| args.get(i).map_or(1_000_000, |s| s.parse().unwrap());
    match args.first().map(String::as_str) {
        Some("rotate") => rotate(args.get(1).map_or(12, |s| s.parse().unwrap())),
        Some("pause") => pause(n(1)),
        Some("signins") => signins(),
        Some("restore") => restore(n(1)),
        Some("hot") => hot(&args[1], n(2)),
        Some("seeds") => seeds(std::path::Path::new(&args[1])),
        _ => {
            eprintln!("usage: persist_bench rotate [ROUNDS] | pause [N] | signins | restore [N] | seeds DIR")
        }
    }
}
