//! Linearizability on real threads: random concurrent calls from 3 or 4 threads on a
//! handful of sessions, each history checked against `baton::model::Model` by the
//! search in `lincheck`.
//!
//! The clock is moved only between rounds, while no call runs, so every call's "now"
//! is well defined. Workers spin between rounds instead of sleeping, so that a round's
//! calls start together and overlap.
//!
//! SPEC promises linearizability per session. `sessions(uid)` and `revoke_user(uid)`
//! span all of a user's sessions and are not one atomic step across them (a
//! `sessions` call during a sign-in at the cap can see the evicted session gone and the
//! new one not yet there), so they run in a last round of their own, where they check
//! the state the concurrent rounds left.

mod lincheck;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use baton::model::{Answer, Issued, Model};
use baton::{ManualClock, ReplayPolicy, Store};
use lincheck::{linearize, perform, Call, Event, Ret, Show};

const HISTORIES: usize = 4000;
/// Histories whose calls on one session overlap; on a loaded machine fewer do, so the
/// run goes on (up to `4 * HISTORIES`) until this many have.
const OVERLAPPING: usize = 100;
const WORKERS: usize = 4;
const ROUNDS: usize = 4;
const USERS: usize = 2;

/// xorshift64*: seeded, so a printed seed replays a history's plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    batch_window_ms: u64,
    min_rotation_interval_ms: u64,
    recovery_window_ms: u64,
    token_lifespan_ms: u64,
    max_clients_per_user: usize,
    replay_policy: ReplayPolicy,
    shards: usize,
}

impl Settings {
    fn random(rng: &mut Rng) -> Self {
        Settings {
            batch_window_ms: rng.pick(&[0, 1000, 5000]),
            min_rotation_interval_ms: rng.pick(&[0, 0, 1000]),
            recovery_window_ms: rng.pick(&[0, 0, 8000]),
            token_lifespan_ms: rng.pick(&[9000, 30_000]),
            max_clients_per_user: rng.pick(&[1, 2, 3]),
            replay_policy: rng.pick(&[ReplayPolicy::Reject, ReplayPolicy::RevokeSession]),
            shards: rng.pick(&[1, 2]),
        }
    }

    fn store(&self, clock: ManualClock) -> Store<ManualClock> {
        let ms = Duration::from_millis;
        Store::builder()
            .batch_window(ms(self.batch_window_ms))
            .min_rotation_interval(ms(self.min_rotation_interval_ms))
            .recovery_window(ms(self.recovery_window_ms))
            .token_lifespan(ms(self.token_lifespan_ms))
            .max_clients_per_user(self.max_clients_per_user)
            .replay_policy(self.replay_policy)
            .shards(self.shards)
            .clock(clock)
            .build()
            .expect("the settings are in range")
    }
}

fn uid(u: usize) -> String {
    format!("user{u}@example.com")
}

/// Which token a planned `authenticate` presents.
#[derive(Debug, Clone)]
enum Presents {
    /// This text.
    Token(String),
    /// The token this worker's last successful call on the session handed back,
    /// else this text: a client carrying on with what it was given.
    Latest(String),
}

#[derive(Debug, Clone)]
enum Step {
    Call(Call),
    Authenticate {
        uid: String,
        client: String,
        presents: Presents,
    },
}

/// What the planner knows after a round: every session it has heard of and the
/// tokens each has handed out, in order.
#[derive(Default)]
struct Known {
    /// (uid, client, tokens oldest first); ended sessions stay, so calls on them test
    /// the `UnknownSession` row.
    sessions: Vec<(String, String, Vec<String>)>,
}

impl Known {
    fn learn(&mut self, events: &[Event]) {
        for e in events {
            if let (Call::Issue { uid }, Ret::Issue(Ok(Issued { client, token, .. }))) =
                (&e.call, &e.ret)
            {
                self.sessions
                    .push((uid.clone(), client.clone(), vec![token.clone()]));
            }
        }
        // A rotation answers the token presented with its successor; chain them.
        let mut progress = true;
        while progress {
            progress = false;
            for e in events {
                let (Call::Authenticate { uid, client, token }, Ret::Authenticate(a)) =
                    (&e.call, &e.ret)
                else {
                    continue;
                };
                let Answer::Rotated { token: new, .. } = a else {
                    continue;
                };
                if let Some((_, _, tokens)) = self
                    .sessions
                    .iter_mut()
                    .find(|(u, c, _)| u == uid && c == client)
                {
                    if tokens.last() == Some(token) {
                        tokens.push(new.clone());
                        progress = true;
                    }
                }
            }
        }
    }

    fn plan(&self, rng: &mut Rng, stranger: &mut u64) -> Step {
        let user = uid(rng.below(USERS));
        let mine: Vec<&(String, String, Vec<String>)> =
            self.sessions.iter().filter(|(u, ..)| *u == user).collect();
        let roll = rng.below(100);
        if mine.is_empty() || roll < 12 {
            return Step::Call(Call::Issue { uid: user });
        }
        let (uid, client, tokens) = mine[rng.below(mine.len())].clone();
        match roll {
            12..=16 => Step::Call(Call::Revoke { uid, client }),
            _ => {
                let g = tokens.len() - 1;
                let presents = match rng.below(10) {
                    0..=3 => Presents::Latest(tokens[g].clone()),
                    4..=5 => Presents::Token(tokens[g].clone()),
                    6..=7 => Presents::Token(tokens[g.saturating_sub(1)].clone()),
                    8 => Presents::Token(tokens[g.saturating_sub(2 + rng.below(3))].clone()),
                    _ => {
                        *stranger += 1;
                        Presents::Token(format!("{stranger:0>27}"))
                    }
                };
                Step::Authenticate {
                    uid,
                    client,
                    presents,
                }
            }
        }
    }
}

/// Runs one worker's steps of a round.
fn run_steps(store: &Store<ManualClock>, thread: usize, steps: Vec<Step>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(steps.len());
    for step in steps {
        let call = match step {
            Step::Call(call) => call,
            Step::Authenticate {
                uid,
                client,
                presents,
            } => {
                let token = match presents {
                    Presents::Token(t) => t,
                    Presents::Latest(t) => out
                        .iter()
                        .rev()
                        .find_map(|e| match (&e.call, &e.ret) {
                            (
                                Call::Authenticate {
                                    uid: u, client: c, ..
                                },
                                Ret::Authenticate(
                                    Answer::Rotated { token, .. } | Answer::Batched { token, .. },
                                ),
                            ) if *u == uid && *c == client => Some(token.clone()),
                            _ => None,
                        })
                        .unwrap_or(t),
                };
                Call::Authenticate { uid, client, token }
            }
        };
        out.push(perform(store, thread, call));
    }
    out
}

/// One round's work, handed from the planner to the workers.
struct Round {
    store: Arc<Store<ManualClock>>,
    steps: Vec<Vec<Step>>,
}

/// Workers that stay alive across histories and start each round together.
struct Pool {
    round: Arc<Mutex<Option<Round>>>,
    results: Arc<Mutex<Vec<Event>>>,
    /// Bumped to start a round.
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Pool {
    fn new() -> Self {
        let round: Arc<Mutex<Option<Round>>> = Arc::new(Mutex::new(None));
        let results = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..WORKERS)
            .map(|me| {
                let (round, results, started, ready, finished, stop) = (
                    round.clone(),
                    results.clone(),
                    started.clone(),
                    ready.clone(),
                    finished.clone(),
                    stop.clone(),
                );
                thread::spawn(move || {
                    let mut seen = 0;
                    loop {
                        wait_until(|| {
                            started.load(Ordering::Acquire) != seen || stop.load(Ordering::Acquire)
                        });
                        if started.load(Ordering::Acquire) == seen {
                            return;
                        }
                        seen += 1;
                        let (store, steps) = {
                            let r = round.lock().unwrap();
                            let r = r.as_ref().expect("a round was posted");
                            (r.store.clone(), r.steps[me].clone())
                        };
                        // Each waits for all, so that they start at once.
                        ready.fetch_add(1, Ordering::AcqRel);
                        wait_until(|| ready.load(Ordering::Acquire) >= seen * WORKERS);
                        let events = run_steps(&store, me, steps);
                        results.lock().unwrap().extend(events);
                        finished.fetch_add(1, Ordering::AcqRel);
                    }
                })
            })
            .collect();
        Pool {
            round,
            results,
            started,
            finished,
            stop,
            handles,
        }
    }

    fn run(&self, store: &Arc<Store<ManualClock>>, steps: Vec<Vec<Step>>) -> Vec<Event> {
        *self.round.lock().unwrap() = Some(Round {
            store: store.clone(),
            steps,
        });
        let target = self.finished.load(Ordering::Acquire) + WORKERS;
        self.started.fetch_add(1, Ordering::AcqRel);
        wait_until(|| self.finished.load(Ordering::Acquire) >= target);
        std::mem::take(&mut *self.results.lock().unwrap())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.handles.drain(..) {
            h.join().expect("a worker panicked");
        }
    }
}

/// Busy-waits for `done`, checking it on every spin so that released workers start
/// within nanoseconds of each other; yields now and then so that on 2 cores the
/// spinning threads cannot starve the ones doing work.
fn wait_until(done: impl Fn() -> bool) {
    loop {
        for _ in 0..2000 {
            if done() {
                return;
            }
            std::hint::spin_loop();
        }
        thread::yield_now();
    }
}

/// Whether two calls on one session overlapped in time: the histories exercise the
/// races only if this happens.
fn overlapping_on_a_session(events: &[Event]) -> bool {
    let key = |e: &Event| match &e.call {
        Call::Authenticate { uid, client, .. } | Call::Revoke { uid, client } => {
            Some(format!("{uid}/{client}"))
        }
        _ => None,
    };
    events.iter().enumerate().any(|(i, a)| {
        events[i + 1..].iter().any(|b| {
            a.thread != b.thread
                && key(a).is_some()
                && key(a) == key(b)
                && a.invoked < b.returned
                && b.invoked < a.returned
        })
    })
}

#[test]
fn random_concurrent_histories_are_linearizable() {
    let seed = std::env::var("BATON_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_ba70_u64);
    let mut rng = Rng(seed | 1);
    let pool = Pool::new();
    let mut overlapped = 0;
    let mut calls = 0;
    let mut h = 0;
    while h < HISTORIES || (overlapped < OVERLAPPING && h < 4 * HISTORIES) {
        h += 1;
        let settings = Settings::random(&mut rng);
        let clock = ManualClock::default();
        let store = Arc::new(settings.store(clock.clone()));
        let initial = Model::of(&store);
        let threads = 3 + h % 2;
        let mut known = Known::default();
        let mut stranger = 0;
        let mut history: Vec<Event> = Vec::new();
        for _ in 0..ROUNDS {
            let steps: Vec<Vec<Step>> = (0..WORKERS)
                .map(|w| {
                    let n = if w < threads { 1 + rng.below(3) } else { 0 };
                    (0..n)
                        .map(|_| known.plan(&mut rng, &mut stranger))
                        .collect()
                })
                .collect();
            let events = pool.run(&store, steps);
            known.learn(&events);
            history.extend(events);
            clock.advance(Duration::from_millis(
                rng.pick(&[0, 0, 400, 1200, 4000, 9000]),
            ));
        }
        let mut audit: Vec<Step> = (0..USERS)
            .map(|u| Step::Call(Call::Sessions { uid: uid(u) }))
            .collect();
        if rng.below(4) == 0 {
            audit.push(Step::Call(Call::RevokeUser {
                uid: uid(rng.below(USERS)),
            }));
            audit.extend((0..USERS).map(|u| Step::Call(Call::Sessions { uid: uid(u) })));
        }
        let mut steps = vec![Vec::new(); WORKERS];
        steps[0] = audit;
        history.extend(pool.run(&store, steps));
        calls += history.len();
        if overlapping_on_a_session(&history) {
            overlapped += 1;
        }
        assert!(
            linearize(&initial, &history).is_some(),
            "history {h} (seed {seed}) is not linearizable with {settings:?}:\n{}",
            Show(&history)
        );
    }
    eprintln!("{h} histories, {calls} calls, {overlapped} with calls on one session overlapping");
    // Without overlap the histories are sequential and test nothing about races.
    assert!(
        overlapped > 0,
        "no history had concurrent calls on a session"
    );
}

/// The checker must reject what is not linearizable, and only because of real-time
/// order: the same answers with the calls overlapping are fine.
#[test]
fn the_checker_rejects_a_history_that_is_not_linearizable() {
    let store = Store::builder()
        .shards(1)
        .clock(ManualClock::default())
        .build()
        .unwrap();
    let model = Model::of(&store);
    let now = baton::Clock::now_ms(store.clock());
    // Real answers, made one at a time, then given invented instants.
    let uid = "a@example.com".to_owned();
    let e = |call: Call, invoked: u64, returned: u64| {
        let mut e = perform(&store, 0, call);
        (e.invoked, e.returned) = (invoked, returned);
        e
    };
    let issued = e(Call::Issue { uid: uid.clone() }, 0, 1);
    let Ret::Issue(Ok(Issued {
        client, token: t0, ..
    })) = issued.ret.clone()
    else {
        panic!("issue failed: {:?}", issued.ret);
    };
    let auth = |token: &str, invoked, returned| {
        e(
            Call::Authenticate {
                uid: uid.clone(),
                client: client.clone(),
                token: token.to_owned(),
            },
            invoked,
            returned,
        )
    };
    let first = auth(&t0, 2, 3);
    let Ret::Authenticate(Answer::Rotated { token: t1, .. }) = first.ret.clone() else {
        panic!("expected a rotation: {:?}", first.ret);
    };
    // T0 is T(g-1) now, inside the window: batched onto T1.
    let late = auth(&t0, 4, 5);
    assert!(matches!(
        late.ret,
        Ret::Authenticate(Answer::Batched { .. })
    ));
    let second = auth(&t1, 6, 7);
    assert!(matches!(
        second.ret,
        Ret::Authenticate(Answer::Rotated { .. })
    ));
    assert_eq!(now, baton::Clock::now_ms(store.clock()));

    // As it happened: linearizable.
    let sequential = vec![issued.clone(), first.clone(), late.clone(), second.clone()];
    assert_eq!(linearize(&model, &sequential), Some(vec![0, 1, 2, 3]));

    // The batched call invoked after the second rotation returned: T0 was then two
    // generations old, so `Batched` is wrong whichever order is tried.
    let mut after = late.clone();
    (after.invoked, after.returned) = (8, 9);
    let broken = vec![issued.clone(), first.clone(), second.clone(), after];
    assert_eq!(linearize(&model, &broken), None);

    // The same answers with the batched call overlapping the second rotation: it can
    // take effect first.
    let mut overlapping = late;
    (overlapping.invoked, overlapping.returned) = (6, 9);
    let fine = vec![issued, first, second, overlapping];
    assert_eq!(linearize(&model, &fine), Some(vec![0, 1, 3, 2]));
}
