//! Every contender on every workload in one process, in alternating order, written to
//! `target/baton-bench/compare.json` (and a Markdown table beside it).
//!
//! ```text
//! cargo bench --bench compare -- --quick   # the whole grid in under two minutes
//! cargo bench --bench compare              # one second per cell, about ten minutes
//! ```
//!
//! Throughput is requests answered by all threads over the wall time from the barrier
//! that releases them to the last one stopping. Latency is sampled: one request in
//! `SAMPLE_EVERY` is timed into an HDR histogram. Memory per session is the net heap
//! growth of signing in 1 000 000 users with 20-byte uids, counted by this binary's
//! global allocator.

mod contenders;
mod harness;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use baton::SystemClock;
use hdrhistogram::Histogram;

use contenders::{Contender, Settings, NAMES};
use harness::{Board, Dist, Entry, Mix, Size, Worker, Workload, MAX_THREADS};

#[global_allocator]
static GLOBAL: baton_support::Counting = baton_support::Counting;

const BIG: usize = 1_000_000;
const THREADS: [usize; 3] = [1, 2, 4];

/// One contender signed in for one population, with what its clients remember.
struct Instance {
    c: Box<dyn Contender>,
    entries: Vec<Entry>,
}

struct Row {
    workload: String,
    threads: usize,
    contender: &'static str,
    /// The median over rounds, and the lowest and highest round.
    ops_per_sec: f64,
    ops_min: f64,
    ops_max: f64,
    /// The median over rounds of the workers' CPU time per request.
    cpu_ns_per_op: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    errors: u64,
}

/// Lets go of what the epoch collectors still hold, so a heap count sees live data.
fn settle_garbage() {
    for _ in 0..64 {
        crossbeam_epoch::pin().flush();
    }
}

fn populate(name: &str, uids: &[String], measure: bool) -> (Instance, Option<f64>) {
    let settings = Settings::default();
    settle_garbage();
    let before = baton_support::net_bytes();
    let mut c = contenders::build(name, &settings, SystemClock, uids.len());
    let creds = c.populate(uids);
    settle_garbage();
    let grown = baton_support::net_bytes() - before;
    // The credentials handed back are the clients' copy, not the store's.
    let handed_back = (creds.capacity() * std::mem::size_of::<contenders::Creds>()) as isize;
    let per_session = measure.then(|| (grown - handed_back) as f64 / uids.len() as f64);
    let entries = creds
        .iter()
        .enumerate()
        .map(|(i, cr)| Entry::new(i, cr))
        .collect();
    (Instance { c, entries }, per_session)
}

fn measure(
    inst: &mut Instance,
    w: &Workload,
    uids: &[String],
    keys: &[Vec<u32>],
    threads: usize,
    run_for: Duration,
    warm_ops: u64,
) -> Measured {
    let c = &*inst.c;
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    // The storm shares one session: each thread works on its own copy of what the
    // client knows and catches up through the board.
    let mut storm_copies: Vec<Vec<Entry>> = Vec::new();
    let board = (w.mix == Mix::Storm).then(|| Board::new(threads, inst.entries[0].current));
    let mut chunks: Vec<&mut [Entry]> = match (w.mix, w.size) {
        (Mix::Storm, _) => {
            storm_copies = vec![vec![inst.entries[0]]; threads];
            storm_copies.iter_mut().map(|v| v.as_mut_slice()).collect()
        }
        (_, Size::Hot) => inst.entries[..threads].chunks_mut(1).collect(),
        (_, Size::Sessions(n)) => inst.entries.chunks_mut(n.div_ceil(threads)).collect(),
    };
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .drain(..)
            .enumerate()
            .map(|(t, mine)| {
                let barrier = &barrier;
                let stop = &stop;
                let board = board.as_ref().map(|b| (b, t));
                let keys = keys.get(t).map_or(&[][..], |k| k.as_slice());
                s.spawn(move || {
                    let mut wk = Worker::new(c, w, uids, mine, keys, board);
                    wk.run(warm_ops);
                    wk.ops = 0;
                    wk.errors = 0;
                    wk.hist.reset();
                    barrier.wait();
                    let cpu = thread_cpu_ns();
                    wk.run_until(stop);
                    let end = Instant::now();
                    let cpu = thread_cpu_ns().saturating_sub(cpu);
                    (wk.ops, wk.errors, wk.hist.clone(), end, wk.seq, cpu)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
        let done: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect();
        (start, done)
    });
    let (start, done) = results;
    if w.mix == Mix::Storm {
        // Carry the newest token into the next run on this session.
        let newest = (0..threads).max_by_key(|&t| done[t].4).expect("one thread");
        inst.entries[0] = storm_copies[newest][0];
    }
    let end = done.iter().map(|d| d.3).max().expect("one thread");
    let ops: u64 = done.iter().map(|d| d.0).sum();
    let errors = done.iter().map(|d| d.1).sum();
    let mut hist = done[0].2.clone();
    for d in &done[1..] {
        hist.add(&d.2).expect("same bounds");
    }
    let secs = end.duration_since(start).as_secs_f64();
    let cpu: u64 = done.iter().map(|d| d.5).sum();
    Measured {
        ops_per_sec: ops as f64 / secs,
        cpu_ns_per_op: cpu as f64 / ops.max(1) as f64,
        hist,
        errors,
    }
}

struct Measured {
    ops_per_sec: f64,
    /// CPU time the workers spent per request: unlike wall-clock throughput, other
    /// processes on the machine do not inflate it.
    cpu_ns_per_op: f64,
    hist: Histogram<u64>,
    errors: u64,
}

/// This thread's time on a CPU so far, from the scheduler's own accounting; 0 where
/// `/proc` does not offer it.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        return profile(&args[i + 1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, run_for, warm_ops) = if quick {
        (1, Duration::from_millis(80), 2_000)
    } else {
        (3, Duration::from_millis(400), 20_000)
    };
    let load_before = load_average();
    let began = Instant::now();
    let workloads = harness::grid(&[1000, BIG]);

    // One instance per contender and population, all alive at once so the runs of a
    // cell can alternate between contenders.
    let mut populations: Vec<usize> = workloads.iter().map(|w| w.population()).collect();
    populations.sort_unstable();
    populations.dedup();
    let uid_sets: HashMap<usize, Vec<String>> =
        populations.iter().map(|&n| (n, harness::uids(n))).collect();
    let mut instances: HashMap<(usize, &'static str), Instance> = HashMap::new();
    let mut bytes_per_session: HashMap<&'static str, f64> = HashMap::new();
    for &n in &populations {
        for name in NAMES {
            let t = Instant::now();
            let (inst, bytes) = populate(name, &uid_sets[&n], n == BIG);
            if let Some(b) = bytes {
                bytes_per_session.insert(name, b);
                eprintln!(
                    "{name}: {b:.0} bytes per session, signed in {n} in {:.2?}",
                    t.elapsed()
                );
            }
            instances.insert((n, name), inst);
        }
    }

    let mut key_cache: HashMap<(usize, Dist, usize), Vec<Vec<u32>>> = HashMap::new();
    type Samples = (Vec<f64>, Option<Histogram<u64>>, u64, Vec<f64>);
    let mut samples: HashMap<(String, usize, &'static str), Samples> = HashMap::new();
    let mut cells: Vec<(String, usize)> = Vec::new();
    let mut cell = 0usize;
    for round in 0..rounds {
        for w in &workloads {
            let n = w.population();
            for &threads in &THREADS {
                let keys = key_cache
                    .entry((n, w.dist, threads))
                    .or_insert_with(|| match w.size {
                        Size::Sessions(n) if w.mix != Mix::Storm => {
                            let per = n.div_ceil(threads);
                            let len = if n >= BIG { 1 << 20 } else { 1 << 16 };
                            (0..threads)
                                .map(|t| {
                                    let mine = per.min(n - t * per);
                                    harness::keys(mine, w.dist, len, 0x9E37_79B9 + t as u64)
                                })
                                .collect()
                        }
                        _ => Vec::new(),
                    });
                if round == 0 {
                    cells.push((w.name(), threads));
                }
                // Alternate the order so no contender always runs first or last.
                let mut order: Vec<&'static str> = NAMES.to_vec();
                order.rotate_left(cell % NAMES.len());
                if cell % 2 == 1 {
                    order.reverse();
                }
                cell += 1;
                for name in order {
                    let inst = instances.get_mut(&(n, name)).expect("populated");
                    if !w.runs_on(&*inst.c) {
                        continue;
                    }
                    let Measured {
                        ops_per_sec,
                        cpu_ns_per_op,
                        hist,
                        errors,
                    } = measure(inst, w, &uid_sets[&n], keys, threads, run_for, warm_ops);
                    if errors > 0 {
                        eprintln!(
                            "warning: {name} gave {errors} unexpected answers on {}",
                            w.name()
                        );
                    }
                    let entry = samples.entry((w.name(), threads, name)).or_default();
                    entry.0.push(ops_per_sec);
                    match &mut entry.1 {
                        Some(h) => h.add(&hist).expect("same bounds"),
                        None => entry.1 = Some(hist),
                    }
                    entry.2 += errors;
                    entry.3.push(cpu_ns_per_op);
                }
                eprintln!(
                    "round {round}: {} x{threads} done at {:.1?}",
                    w.name(),
                    began.elapsed()
                );
            }
        }
    }
    let mut rows = Vec::new();
    for (w, threads) in &cells {
        for name in NAMES {
            let Some((mut ops, hist, errors, mut cpu)) =
                samples.remove(&(w.clone(), *threads, name))
            else {
                continue;
            };
            ops.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            let hist = hist.expect("one round at least");
            rows.push(Row {
                workload: w.clone(),
                threads: *threads,
                contender: name,
                ops_per_sec: ops[ops.len() / 2],
                ops_min: ops[0],
                ops_max: ops[ops.len() - 1],
                cpu_ns_per_op: cpu[cpu.len() / 2],
                p50_ns: hist.value_at_quantile(0.50),
                p99_ns: hist.value_at_quantile(0.99),
                p999_ns: hist.value_at_quantile(0.999),
                errors,
            });
        }
    }
    let machine = Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpu_model(),
        load_before,
        load_after: load_average(),
        rounds,
        run_for,
    };

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/baton-bench");
    std::fs::create_dir_all(&dir).expect("create target/baton-bench");
    std::fs::write(dir.join("compare.json"), json(&rows, &bytes_per_session)).expect("write json");
    std::fs::write(
        dir.join("compare.md"),
        markdown(&rows, &bytes_per_session, quick, &machine),
    )
    .expect("write markdown");
    eprintln!(
        "wrote {} rows to {} in {:.1?}",
        rows.len(),
        dir.join("compare.json").display(),
        began.elapsed()
    );
}

struct Machine {
    nproc: usize,
    cpu: String,
    load_before: String,
    load_after: String,
    rounds: usize,
    run_for: Duration,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1, 5 and 15 minute load averages: the machine is shared, so a reader can judge
/// how much of the noise is other work.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs one contender's rotate path on one thread for `n` requests, untimed, for
/// `valgrind --tool=callgrind`: the difference of two runs with different `n` is
/// the cost of `n` requests, free of setup.
fn profile(args: &[String]) {
    let name = args.first().map_or("baton", |s| s.as_str());
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let w = Workload {
        mix: Mix::Rotate,
        size: Size::Sessions(1000),
        dist: Dist::Uniform,
        churn: false,
    };
    let uids = harness::uids(1000);
    let name = NAMES
        .iter()
        .copied()
        .find(|x| *x == name)
        .expect("a contender name");
    let (mut inst, _) = populate(name, &uids, false);
    let keys = harness::keys(1000, Dist::Uniform, 1 << 16, 1);
    let mut wk = Worker::new(&*inst.c, &w, &uids, &mut inst.entries, &keys, None);
    wk.sample = false;
    wk.run(n);
    eprintln!("{name}: {n} requests, {} unexpected answers", wk.errors);
}

fn json(rows: &[Row], bytes: &HashMap<&'static str, f64>) -> String {
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let sep = if i + 1 == rows.len() { "" } else { "," };
        writeln!(
            out,
            "  {{\"workload\": \"{}\", \"threads\": {}, \"contender\": \"{}\", \"ops_per_sec\": {:.0}, \
             \"ops_per_sec_min\": {:.0}, \"ops_per_sec_max\": {:.0}, \"cpu_ns_per_op\": {:.0}, \"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"errors\": {}, \"bytes_per_session\": {:.1}}}{sep}",
            r.workload, r.threads, r.contender, r.ops_per_sec, r.ops_min, r.ops_max, r.cpu_ns_per_op, r.p50_ns, r.p99_ns, r.p999_ns, r.errors,
            bytes.get(r.contender).copied().unwrap_or(f64::NAN),
        )
        .expect("write to string");
    }
    out.push_str("]\n");
    out
}

fn mops(x: f64) -> String {
    format!("{:.2}", x / 1e6)
}

/// The table for BENCHMARKS.md: one line per workload and thread count, throughput of
/// each contender, and baton's ratio to the best of the others.
fn markdown(rows: &[Row], bytes: &HashMap<&'static str, f64>, quick: bool, m: &Machine) -> String {
    let mut out = String::new();
    let mode = if quick { " -- --quick" } else { "" };
    writeln!(
        out,
        "Made by `cargo bench --bench compare{mode}` on {} ({} cores); load average \
         before {} and after {}; {} round(s) of {:?} per cell, median shown.\n",
        m.cpu, m.nproc, m.load_before, m.load_after, m.rounds, m.run_for
    )
    .ok();
    writeln!(
        out,
        "### Throughput, million requests per second (higher is better)\n"
    )
    .ok();
    writeln!(
        out,
        "Last columns: baton's median over the best other full contender's (the floor \
         excluded), baton over the floor, and baton's spread over rounds \
         ((max - min) / median).\n"
    )
    .ok();
    write!(out, "| workload | threads |").ok();
    for n in NAMES {
        write!(out, " {n} |").ok();
    }
    writeln!(out, " baton / best other | baton / floor | baton spread |").ok();
    write!(out, "|---|---:|").ok();
    for _ in NAMES {
        write!(out, "---:|").ok();
    }
    writeln!(out, "---:|---:|---:|").ok();
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.workload.clone(), r.threads)) {
            keys.push((r.workload.clone(), r.threads));
        }
    }
    let find = |w: &str, t: usize, c: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.threads == t && r.contender == c)
    };
    for (w, t) in &keys {
        write!(out, "| {w} | {t} |").ok();
        for n in NAMES {
            match find(w, *t, n) {
                Some(r) => write!(out, " {} |", mops(r.ops_per_sec)).ok(),
                None => write!(out, " – |").ok(),
            };
        }
        let b = find(w, *t, "baton");
        let baton = b.map_or(0.0, |r| r.ops_per_sec);
        let spread = b.map_or(0.0, |r| (r.ops_max - r.ops_min) / r.ops_per_sec);
        let floor = find(w, *t, "floor").map_or("–".to_string(), |r| {
            format!("{:.2}", baton / r.ops_per_sec)
        });
        let best = NAMES
            .iter()
            .filter(|n| !matches!(**n, "baton" | "floor"))
            .filter_map(|n| find(w, *t, n))
            .map(|r| r.ops_per_sec)
            .fold(0.0f64, f64::max);
        writeln!(
            out,
            " {:.2} | {floor} | {:.0}% |",
            baton / best,
            spread * 100.0
        )
        .ok();
    }
    writeln!(
        out,
        "\n### Worker CPU time per request, ns (lower is better)\n\n\
         From the scheduler's per-thread accounting, so other processes on the machine \
         do not inflate it; waiting on a lock in the kernel is not counted, spinning is. \
         Last column: the best other full contender's over baton's (above 1: baton \
         cheaper).\n"
    )
    .ok();
    write!(out, "| workload | threads |").ok();
    for n in NAMES {
        write!(out, " {n} |").ok();
    }
    writeln!(out, " best other / baton |").ok();
    write!(out, "|---|---:|").ok();
    for _ in NAMES {
        write!(out, "---:|").ok();
    }
    writeln!(out, "---:|").ok();
    for (w, t) in &keys {
        write!(out, "| {w} | {t} |").ok();
        for n in NAMES {
            match find(w, *t, n) {
                Some(r) => write!(out, " {:.0} |", r.cpu_ns_per_op).ok(),
                None => write!(out, " – |").ok(),
            };
        }
        let baton = find(w, *t, "baton").map_or(f64::NAN, |r| r.cpu_ns_per_op);
        let best = NAMES
            .iter()
            .filter(|n| !matches!(**n, "baton" | "floor"))
            .filter_map(|n| find(w, *t, n))
            .map(|r| r.cpu_ns_per_op)
            .fold(f64::INFINITY, f64::min);
        writeln!(out, " {:.2} |", best / baton).ok();
    }
    writeln!(out, "\n### Latency p50 / p99 / p99.9, ns (4 threads)\n").ok();
    write!(out, "| workload |").ok();
    for n in NAMES {
        write!(out, " {n} |").ok();
    }
    writeln!(out).ok();
    write!(out, "|---|").ok();
    for _ in NAMES {
        write!(out, "---:|").ok();
    }
    writeln!(out).ok();
    for (w, t) in keys.iter().filter(|(_, t)| *t == MAX_THREADS) {
        write!(out, "| {w} |").ok();
        for n in NAMES {
            match find(w, *t, n) {
                Some(r) => write!(out, " {}/{}/{} |", r.p50_ns, r.p99_ns, r.p999_ns).ok(),
                None => write!(out, " – |").ok(),
            };
        }
        writeln!(out).ok();
    }
    writeln!(
        out,
        "\n### Heap bytes per session at 1 000 000 sessions (20-byte uids)\n"
    )
    .ok();
    write!(out, "|").ok();
    for n in NAMES {
        write!(out, " {n} |").ok();
    }
    writeln!(out).ok();
    write!(out, "|").ok();
    for _ in NAMES {
        write!(out, "---:|").ok();
    }
    writeln!(out).ok();
    write!(out, "|").ok();
    for n in NAMES {
        write!(out, " {:.0} |", bytes.get(n).copied().unwrap_or(f64::NAN)).ok();
    }
    writeln!(out).ok();
    out
}
