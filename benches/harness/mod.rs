//! The workloads and the worker loop shared by `compare` and the criterion bench.
//!
//! Workers keep valid tokens the way real clients do: in the rotate and mostly-batched
//! mixes each thread owns its sessions and remembers the latest token each one
//! received (and the one before, to batch with); in the storm every thread shares one
//! session, and a thread that fell two rotations behind catches up from the latest
//! token the others published.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::contenders::{Contender, Creds, Kind, CLIENT_LEN, TOKEN_LEN};

/// Every `CHURN_EVERY`-th request of a churn workload is a sign-out plus a sign-in.
pub const CHURN_EVERY: u64 = 32;
/// In the mostly-batched mix a client sends bursts of this many requests with one
/// token: the first rotates, the rest present the retired token and batch.
pub const BURST: u32 = 8;
/// One request in `SAMPLE_EVERY` is timed for the latency histogram.
pub const SAMPLE_EVERY: u64 = 16;
pub const MAX_THREADS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mix {
    /// Every request presents the current token and rotates.
    Rotate,
    /// Bursts of `BURST` requests: one rotates, the others batch with the previous token.
    Batched,
    /// All threads present one shared session's token at once.
    Storm,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Size {
    /// One session per thread, each hammered by its thread.
    Hot,
    Sessions(usize),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Dist {
    Uniform,
    /// Zipf with exponent 0.99 over each thread's sessions.
    Zipf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Workload {
    pub mix: Mix,
    pub size: Size,
    pub dist: Dist,
    pub churn: bool,
}

impl Workload {
    pub fn name(&self) -> String {
        let mix = match self.mix {
            Mix::Rotate => "rotate",
            Mix::Batched => "batched",
            Mix::Storm => return "storm/1-shared".into(),
        };
        let size = match self.size {
            Size::Hot => "hot".to_string(),
            Size::Sessions(n) => size_name(n),
        };
        let dist = match (self.size, self.dist) {
            (Size::Hot, _) => "",
            (_, Dist::Uniform) => "/uniform",
            (_, Dist::Zipf) => "/zipf",
        };
        let churn = if self.churn { "/churn" } else { "" };
        format!("{mix}/{size}{dist}{churn}")
    }

    /// The sessions to sign in before the workload runs.
    pub fn population(&self) -> usize {
        match (self.mix, self.size) {
            (Mix::Storm, _) => 1,
            (_, Size::Hot) => MAX_THREADS,
            (_, Size::Sessions(n)) => n,
        }
    }

    /// Whether `c` can run this workload (the floor only rotates prebuilt sessions).
    pub fn runs_on(&self, c: &dyn Contender) -> bool {
        c.is_complete() || (self.mix == Mix::Rotate && !self.churn)
    }
}

pub fn size_name(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// The grid: every mix over hot, 1 000 and `big` sessions, uniform and Zipf, with and
/// without churn, plus the storm.
pub fn grid(sizes: &[usize]) -> Vec<Workload> {
    let mut out = Vec::new();
    for mix in [Mix::Rotate, Mix::Batched] {
        for churn in [false, true] {
            out.push(Workload {
                mix,
                size: Size::Hot,
                dist: Dist::Uniform,
                churn,
            });
            for &n in sizes {
                for dist in [Dist::Uniform, Dist::Zipf] {
                    out.push(Workload {
                        mix,
                        size: Size::Sessions(n),
                        dist,
                        churn,
                    });
                }
            }
        }
    }
    out.push(Workload {
        mix: Mix::Storm,
        size: Size::Hot,
        dist: Dist::Uniform,
        churn: false,
    });
    out
}

/// `n` distinct uids of 20 bytes, shaped like e-mail addresses.
pub fn uids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:014}@x.com")).collect()
}

/// What a client remembers of one session.
#[derive(Clone, Copy)]
pub struct Entry {
    pub uid: u32,
    pub client: [u8; CLIENT_LEN],
    pub current: [u8; TOKEN_LEN],
    pub previous: [u8; TOKEN_LEN],
    pub sent: u32,
}

impl Entry {
    pub fn new(uid: usize, c: &Creds) -> Self {
        Entry {
            uid: uid as u32,
            client: c.client,
            current: c.token,
            previous: c.token,
            sent: 0,
        }
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("base64 is ascii")
}

/// A small fast generator for building key sequences (not for tokens).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The order in which one thread visits its `n` sessions: `len` indices, computed
/// before the clock starts so drawing them costs nothing timed.
pub fn keys(n: usize, dist: Dist, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = XorShift(seed | 1);
    match dist {
        Dist::Uniform => (0..len).map(|_| rng.below(n) as u32).collect(),
        Dist::Zipf => {
            let mut cdf = Vec::with_capacity(n);
            let mut sum = 0.0f64;
            for k in 1..=n {
                sum += 1.0 / (k as f64).powf(0.99);
                cdf.push(sum);
            }
            // Rank r is session r: the hot ones differ per thread and the store's
            // hashing scatters them anyway.
            (0..len)
                .map(|_| {
                    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * sum;
                    cdf.partition_point(|&c| c < u).min(n - 1) as u32
                })
                .collect()
        }
    }
}

/// The storm's shared knowledge: each thread publishes the newest token it has seen,
/// numbered, on its own cache line.
pub struct Board {
    slots: Vec<CachePadded<Mutex<Published>>>,
}

/// A token and its generation (the number of changes since sign-in).
type Published = (u64, [u8; TOKEN_LEN]);

impl Board {
    pub fn new(threads: usize, first: [u8; TOKEN_LEN]) -> Self {
        Board {
            slots: (0..threads)
                .map(|_| CachePadded::new(Mutex::new((0, first))))
                .collect(),
        }
    }

    fn publish(&self, me: usize, seq: u64, token: [u8; TOKEN_LEN]) {
        *self.slots[me]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (seq, token);
    }

    fn newest(&self) -> Published {
        self.slots
            .iter()
            .map(|s| *s.lock().unwrap_or_else(PoisonError::into_inner))
            .max_by_key(|(seq, _)| *seq)
            .expect("at least one thread")
    }
}

/// One worker's state for one workload.
pub struct Worker<'a> {
    pub c: &'a dyn Contender,
    pub mix: Mix,
    pub churn: bool,
    pub uids: &'a [String],
    pub mine: &'a mut [Entry],
    pub keys: &'a [u32],
    pub board: Option<(&'a Board, usize)>,
    /// The storm's token number (how many changes this thread has seen).
    pub seq: u64,
    pub pos: usize,
    pub ops: u64,
    /// Answers a correct contender never gives here (storm catch-ups excluded).
    pub errors: u64,
    pub hist: Histogram<u64>,
    /// Whether to time one request in `SAMPLE_EVERY` (criterion times the whole run).
    pub sample: bool,
    /// Picks the timed requests at random: a fixed stride would alias with periodic
    /// costs (a ChaCha refill every 16 tokens, a new keystream block every 4
    /// generations) and always time, or never time, the expensive request.
    sampler: XorShift,
}

impl<'a> Worker<'a> {
    pub fn new(
        c: &'a dyn Contender,
        w: &Workload,
        uids: &'a [String],
        mine: &'a mut [Entry],
        keys: &'a [u32],
        board: Option<(&'a Board, usize)>,
    ) -> Self {
        Worker {
            c,
            mix: w.mix,
            churn: w.churn,
            uids,
            mine,
            keys,
            board,
            seq: 0,
            pos: 0,
            ops: 0,
            errors: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds"),
            sample: true,
            sampler: XorShift(0x2545_F491_4F6C_DD1D),
        }
    }

    /// Runs `n` requests, timing one in `SAMPLE_EVERY`.
    #[inline]
    pub fn run(&mut self, n: u64) {
        for _ in 0..n {
            if self.sample && self.sampler.next().is_multiple_of(SAMPLE_EVERY) {
                let t = Instant::now();
                self.step();
                let ns = t.elapsed().as_nanos() as u64;
                let _ = self.hist.record(ns.max(1));
            } else {
                self.step();
            }
        }
    }

    /// Runs until `stop` is set, checking it every few requests.
    pub fn run_until(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.run(32);
        }
    }

    #[inline]
    fn next_entry(&mut self) -> usize {
        if self.mine.len() == 1 {
            return 0;
        }
        let k = self.keys[self.pos] as usize;
        self.pos = (self.pos + 1) % self.keys.len();
        k
    }

    #[inline]
    fn step(&mut self) {
        self.ops += 1;
        let i = self.next_entry();
        if self.churn && self.ops.is_multiple_of(CHURN_EVERY) {
            let e = &mut self.mine[i];
            let uid = &self.uids[e.uid as usize];
            if !self.c.revoke(uid, text(&e.client)) {
                self.errors += 1;
            }
            *e = Entry::new(e.uid as usize, &self.c.issue(uid));
            return;
        }
        let e = &mut self.mine[i];
        let uid = &self.uids[e.uid as usize];
        match self.mix {
            Mix::Rotate => match self.c.authenticate(uid, text(&e.client), text(&e.current)) {
                Ok(g) => {
                    e.previous = e.current;
                    e.current = g.token;
                }
                Err(_) => self.errors += 1,
            },
            Mix::Batched => {
                let with_previous = !e.sent.is_multiple_of(BURST);
                e.sent = e.sent.wrapping_add(1);
                let presented = if with_previous {
                    &e.previous
                } else {
                    &e.current
                };
                match self.c.authenticate(uid, text(&e.client), text(presented)) {
                    Ok(g) if g.kind == Kind::Rotated || g.token != e.current => {
                        e.previous = e.current;
                        e.current = g.token;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // The retired token outlived W between runs: rotate next.
                        e.sent = 0;
                        self.errors += u64::from(!with_previous);
                    }
                }
            }
            Mix::Storm => {
                let (board, me) = self.board.expect("a storm has a board");
                match self.c.authenticate(uid, text(&e.client), text(&e.current)) {
                    Ok(g) if g.token != e.current => {
                        self.seq += 1;
                        e.current = g.token;
                        board.publish(me, self.seq, g.token);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Two rotations went by since this thread last looked.
                        let (seq, token) = board.newest();
                        if seq > self.seq {
                            self.seq = seq;
                            e.current = token;
                        }
                    }
                }
            }
        }
    }
}
