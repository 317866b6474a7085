//! Tail latencies of the store at scale (issue 18): sign-in while filling, authenticate
//! during a mass sweep, resident memory per session. A measurement, not a test.
//!
//!   cargo run --release --example tails -- fill 10000000     sign-in p50..max, RSS
//!   cargo run --release --example tails -- sweep 1000000     authenticate during sweep()
//!   cargo run --release --example tails -- expired 1000000   resident set after it, alone
//!   cargo run --release --example tails -- fresh 15000       what its survivors need
//!
//! `sweep` runs `expired` and `fresh` as child processes and prints their ratio, the
//! issue's "resident set after the mass expiry within 2x of what the survivors need":
//! its own resident set also holds its controls' and histograms' memory.
//!
//! Every mode runs a busy-loop thread beside the work that records its own worst gap
//! between two clock reads: the machine's stall floor in the same run (the machine is
//! shared, and a pause the loop sees too is not the store's).
//!
//! Uses only the public API, so the same file measures an older version of the crate.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use baton::{ManualClock, Store};
use hdrhistogram::Histogram;

const T0: u64 = 1_704_067_200_000;
const SHARDS: usize = 64;
const LIFESPAN: Duration = Duration::from_secs(3600);

fn store() -> Store<ManualClock> {
    Store::builder()
        .shards(SHARDS)
        .token_lifespan(LIFESPAN)
        .clock(ManualClock::new(T0))
        .build()
        .expect("in range")
}

/// A 20-byte uid.
fn uid(i: usize) -> String {
    format!("user{i:016}")
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// This thread's CPU time: a call's cost without the time the machine took the core
/// away (the figure that load does not move; page faults and frees are in it).
fn cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Gives the allocator's free pages back to the system (glibc), to tell memory the
/// store still holds from memory the allocator keeps.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().max(1) as u64
}

fn show(name: &str, h: &Histogram<u64>) {
    println!(
        "{name}: n {} p50 {} ns p99 {} ns p99.9 {} ns p99.99 {} ns max {} ns, {} over 1 ms",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.value_at_quantile(0.9999),
        h.max(),
        h.count_between(1_000_000, h.high()),
    );
}

/// A thread that reads the clock in a loop until stopped; returns its worst gap.
fn busy_loop(stop: Arc<AtomicBool>) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            worst = worst.max(now - last);
            last = now;
        }
        worst
    })
}

fn fill(n: usize) {
    let base = rss_bytes();
    let store = store();
    let stop = Arc::new(AtomicBool::new(false));
    let looper = busy_loop(stop.clone());
    let mut h = hist();
    let mut cpu = hist();
    let mut worst_at = 0;
    let uids: Vec<String> = (0..n).map(uid).collect();
    let names = rss_bytes();
    for (i, u) in uids.iter().enumerate() {
        let c = cpu_ns();
        let t = Instant::now();
        black_box(store.issue(u).expect("valid uid"));
        let d = ns(t.elapsed());
        cpu.record((cpu_ns() - c).max(1)).expect("in range");
        if d > h.max() {
            worst_at = i;
        }
        h.record(d).expect("in range");
    }
    stop.store(true, Ordering::Relaxed);
    let gap = looper.join().expect("busy loop");
    let held = rss_bytes() - names;
    show(&format!("fill 0 -> {n} sign-in, wall"), &h);
    show(&format!("fill 0 -> {n} sign-in, thread CPU"), &cpu);
    println!("worst sign-in at session {worst_at}");
    println!("busy-loop worst gap {} ns", ns(gap));
    println!(
        "resident: {} B per live session (rss {} MB, {} MB before the store, uids {} MB)",
        held / n as u64,
        rss_bytes() >> 20,
        base >> 20,
        (names - base) >> 20,
    );
    drop(uids);
}

/// Histogram of the survivors' `authenticate` calls (each rotates) while `work` runs on
/// this thread. The survivors' tokens are carried from run to run, so every run
/// measures the same path; a call that does not rotate panics the bench.
fn authenticate_during(
    store: &Arc<Store<ManualClock>>,
    creds: &mut Vec<(String, String, String)>,
    work: impl FnOnce(),
) -> Histogram<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(2));
    let reader = {
        let (store, stop, ready) = (store.clone(), stop.clone(), ready.clone());
        let mut creds = std::mem::take(creds);
        thread::spawn(move || {
            let mut h = hist();
            ready.wait();
            'calls: loop {
                for (u, c, tok) in creds.iter_mut() {
                    if stop.load(Ordering::Relaxed) {
                        break 'calls;
                    }
                    let t = Instant::now();
                    let a = store.authenticate(u, c, tok);
                    h.record(ns(t.elapsed())).expect("in range");
                    match a {
                        Ok(a) if a.is_rotated() => {
                            *tok = a.credentials().token().as_str().to_owned()
                        }
                        other => panic!("a survivor did not rotate: {other:?}"),
                    }
                }
            }
            (h, creds)
        })
    };
    ready.wait();
    work();
    stop.store(true, Ordering::Relaxed);
    let (h, back) = reader.join().expect("reader");
    *creds = back;
    h
}

/// Sessions signed in after the `n` that expire, and live through the sweep.
const SWEEP_SURVIVORS: usize = 5_000;
/// Sign-ins measured after the sweep.
const SIGN_INS_AFTER: usize = 10_000;

fn sweep(n: usize) {
    const SURVIVORS: usize = SWEEP_SURVIVORS;
    let base = rss_bytes();
    let store = Arc::new(store());
    for i in 0..n {
        store.issue(&uid(i)).expect("valid uid");
    }
    store.clock().advance(LIFESPAN / 2);
    let survivors: Vec<(String, String, String)> = (n..n + SURVIVORS)
        .map(|i| {
            let u = uid(i);
            let c = store.issue(&u).expect("valid uid");
            let (client, token) = (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            );
            (u, client, token)
        })
        .collect();
    let full = rss_bytes();
    // The first n expire; the survivors have half their lifespan left.
    store.clock().advance(LIFESPAN / 2 + Duration::from_secs(1));

    // The controls run first, on the same tables (the expired sessions still in
    // them), for a fixed time each: "without the sweep" is this store before it.
    let mut creds = survivors;
    const CONTROL: Duration = Duration::from_millis(300);
    let idle = authenticate_during(&store, &mut creds, || thread::sleep(CONTROL));
    // As long a burst of unrelated allocation work, on the other core.
    let busy = authenticate_during(&store, &mut creds, || {
        let t = Instant::now();
        let mut keep: Vec<Box<[u64; 8]>> = Vec::new();
        while t.elapsed() < CONTROL {
            for i in 0..1024u64 {
                keep.push(Box::new([i; 8]));
            }
            if keep.len() > 1 << 16 {
                keep.clear();
            }
        }
        black_box(keep);
    });
    // Whether the sweep grows the heap: its free bytes before and after.
    let heap_before = heap("before the sweep");
    let mut took = Duration::ZERO;
    let mut swept = 0;
    let during = authenticate_during(&store, &mut creds, || {
        let t = Instant::now();
        swept = store.sweep();
        took = t.elapsed();
    });
    // For comparison only: the same, after the sweep (small tables, 5 000 sessions).
    let after_idle = authenticate_during(&store, &mut creds, || thread::sleep(CONTROL));
    // Sign-ins right after the mass expiry, beside the busy loop.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = busy_loop(stop.clone());
    let mut after = hist();
    let mut after_cpu = hist();
    for i in 0..SIGN_INS_AFTER {
        let c = cpu_ns();
        let t = Instant::now();
        black_box(store.issue(&uid(n + SURVIVORS + i)).expect("valid uid"));
        after.record(ns(t.elapsed())).expect("in range");
        after_cpu.record((cpu_ns() - c).max(1)).expect("in range");
    }
    stop.store(true, Ordering::Relaxed);
    let gap = looper.join().expect("busy loop");
    let survived = store.len();

    println!("sweep of {n} expired sessions: removed {swept} in {took:.2?}");
    show("authenticate during sweep", &during);
    show("authenticate idle control (before the sweep)", &idle);
    show(
        "authenticate unrelated-work control (before the sweep)",
        &busy,
    );
    show("authenticate idle, after the sweep", &after_idle);
    println!(
        "p99.9 during sweep / idle: {:.2}, / unrelated work: {:.2}",
        during.value_at_quantile(0.999) as f64 / idle.value_at_quantile(0.999) as f64,
        during.value_at_quantile(0.999) as f64 / busy.value_at_quantile(0.999) as f64,
    );
    show("sign-in after the mass expiry, wall", &after);
    show("sign-in after the mass expiry, thread CPU", &after_cpu);
    println!("busy-loop worst gap (beside those sign-ins) {} ns", ns(gap));
    let now = rss_bytes();
    println!(
        "resident: full {} MB, after expiry {} MB ({} live), before the store {} MB",
        full >> 20,
        now >> 20,
        survived,
        base >> 20
    );
    println!(
        "resident above the start per survivor: {} B",
        now.saturating_sub(base) / survived.max(1) as u64
    );
    println!("{heap_before}");
    println!("{}", heap("after the sign-ins that follow it"));
    println!(
        "mapped by the store (pages and tables): {} KiB ({} B per survivor)",
        store.mapped_bytes() >> 10,
        store.mapped_bytes() / survived.max(1)
    );
    trim();
    let trimmed = rss_bytes();
    println!(
        "after malloc_trim: {} MB, {} B per survivor above the start",
        trimmed >> 20,
        trimmed.saturating_sub(base) / survived.max(1) as u64
    );
    // The target's figures, each in a process of its own: this one's resident set
    // also holds the controls' and histograms' memory and code paged in since the
    // start, which neither store owns.
    let expired = child(&["expired", &n.to_string()]);
    let fresh = child(&["fresh", &survived.to_string()]);
    println!(
        "apart: after the mass expiry {} KB above the start ({} live), a fresh store of \
         as many {} KB; after expiry / fresh: {:.2}",
        expired >> 10,
        survived,
        fresh >> 10,
        expired as f64 / fresh.max(1) as f64
    );
}

/// Runs this binary with `args` and reads the resident bytes it prints.
fn child(args: &[&str]) -> u64 {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .expect("runs itself");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("tails {args:?} printed {text:?}"))
}

/// `tails expired N`: the sweep's memory story alone: `n` sessions and 5 000 later
/// ones, the first `n` expire and are swept, 10 000 sign in. Prints the resident
/// bytes above the start, and the live sessions.
fn expired(n: usize) {
    let base = rss_bytes();
    let store = store();
    for i in 0..n {
        store.issue(&uid(i)).expect("valid uid");
    }
    store.clock().advance(LIFESPAN / 2);
    for i in n..n + SWEEP_SURVIVORS {
        store.issue(&uid(i)).expect("valid uid");
    }
    store.clock().advance(LIFESPAN / 2 + Duration::from_secs(1));
    store.sweep();
    for i in 0..SIGN_INS_AFTER {
        store
            .issue(&uid(n + SWEEP_SURVIVORS + i))
            .expect("valid uid");
    }
    println!("{} {}", rss_bytes().saturating_sub(base), store.len());
}

/// `tails fresh N`: what `n` survivors need: as many sessions signed in to a fresh
/// store (and a sweep that finds nothing, so both processes ran the same code).
fn fresh(n: usize) {
    let base = rss_bytes();
    let store = store();
    for i in 0..n {
        store.issue(&uid(i)).expect("valid uid");
    }
    store.sweep();
    println!("{} {}", rss_bytes().saturating_sub(base), store.len());
}

/// What glibc's heap holds: in use, and free but kept (the part `malloc_trim` gives
/// back, where it can).
fn heap(when: &str) -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: no preconditions; returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        format!(
            "glibc heap {when}: {} KB in use, {} KB free, {} KB in its own mappings",
            m.uordblks >> 10,
            m.fordblks >> 10,
            m.hblkhd >> 10
        )
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        format!("glibc heap {when}: not glibc")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |default: usize| args.get(1).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("fill") => fill(n(10_000_000)),
        Some("sweep") => sweep(n(1_000_000)),
        Some("expired") => expired(n(1_000_000)),
        Some("fresh") => fresh(n(15_000)),
        _ => eprintln!(
            "usage: tails fill [N] | tails sweep [N] | tails expired [N] | tails fresh [N]"
        ),
    }
}
