//! Criterion benches of the contenders under contention: a modest grid (three
//! workloads, 1, 2 and 4 threads) so `cargo bench` stays short. `compare` runs the
//! whole grid; this gives criterion's statistics on the cells that matter most.
//!
//! Each benchmark keeps its worker threads for its whole run: `iter_custom` hands them
//! a request count through an atomic, releases them with a `Barrier`, and times until
//! the last one reaches the closing barrier. No thread is spawned inside the timing.

mod contenders;
mod harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use baton::SystemClock;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use contenders::{Contender, Settings, NAMES};
use harness::{Board, Dist, Entry, Mix, Size, Worker, Workload};

const SESSIONS: usize = 1000;

/// Workers parked between batches of requests.
struct Pool {
    start: Barrier,
    end: Barrier,
    requests: AtomicU64,
    quit: AtomicBool,
}

fn run_cell(
    c: &mut Criterion,
    w: &Workload,
    threads: usize,
    contender: &dyn Contender,
    entries: &mut [Entry],
    uids: &[String],
    keys: &[Vec<u32>],
) {
    let pool = Pool {
        start: Barrier::new(threads + 1),
        end: Barrier::new(threads + 1),
        requests: AtomicU64::new(0),
        quit: AtomicBool::new(false),
    };
    let board = (w.mix == Mix::Storm).then(|| Board::new(threads, entries[0].current));
    let mut storm_copies = vec![vec![entries[0]]; threads];
    let chunks: Vec<&mut [Entry]> = match (w.mix, w.size) {
        (Mix::Storm, _) => storm_copies.iter_mut().map(|v| v.as_mut_slice()).collect(),
        (_, Size::Hot) => entries[..threads].chunks_mut(1).collect(),
        (_, Size::Sessions(n)) => entries.chunks_mut(n.div_ceil(threads)).collect(),
    };
    std::thread::scope(|s| {
        for (t, mine) in chunks.into_iter().enumerate() {
            let pool = &pool;
            let board = board.as_ref().map(|b| (b, t));
            let keys = keys.get(t).map_or(&[][..], |k| k.as_slice());
            s.spawn(move || {
                let mut wk = Worker::new(contender, w, uids, mine, keys, board);
                wk.sample = false;
                loop {
                    pool.start.wait();
                    if pool.quit.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = pool.requests.load(Ordering::Relaxed);
                    wk.run(n.div_ceil(threads as u64));
                    pool.end.wait();
                }
            });
        }
        let mut group = c.benchmark_group(w.name());
        group
            .throughput(Throughput::Elements(1))
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        group.bench_function(BenchmarkId::new(contender.name(), threads), |b| {
            b.iter_custom(|requests| {
                pool.requests.store(requests, Ordering::Relaxed);
                pool.start.wait();
                let t = Instant::now();
                pool.end.wait();
                t.elapsed()
            })
        });
        group.finish();
        pool.quit.store(true, Ordering::Relaxed);
        pool.start.wait();
    });
}

fn contention(c: &mut Criterion) {
    let workloads = [
        Workload {
            mix: Mix::Rotate,
            size: Size::Sessions(SESSIONS),
            dist: Dist::Uniform,
            churn: false,
        },
        Workload {
            mix: Mix::Batched,
            size: Size::Sessions(SESSIONS),
            dist: Dist::Zipf,
            churn: false,
        },
        Workload {
            mix: Mix::Storm,
            size: Size::Hot,
            dist: Dist::Uniform,
            churn: false,
        },
    ];
    for w in &workloads {
        let uids = harness::uids(w.population());
        for threads in [1, 2, 4] {
            let keys: Vec<Vec<u32>> = match w.size {
                Size::Sessions(n) if w.mix != Mix::Storm => (0..threads)
                    .map(|t| {
                        let per = n.div_ceil(threads);
                        harness::keys(per.min(n - t * per), w.dist, 1 << 16, 7 + t as u64)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for name in NAMES {
                let mut contender =
                    contenders::build(name, &Settings::default(), SystemClock, uids.len());
                if !w.runs_on(&*contender) {
                    continue;
                }
                let creds = contender.populate(&uids);
                let mut entries: Vec<Entry> = creds
                    .iter()
                    .enumerate()
                    .map(|(i, cr)| Entry::new(i, cr))
                    .collect();
                run_cell(c, w, threads, &*contender, &mut entries, &uids, &keys);
            }
        }
    }
}

criterion_group!(benches, contention);
criterion_main!(benches);
