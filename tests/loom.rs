//! Loom models of the store's races, run by `.ci/loom.sh`.
//!
//! Each model is tiny (two or three threads, one shard, one user) and explores every
//! interleaving up to `LOOM_MAX_PREEMPTIONS`. Each has a twin that injects a
//! deliberate bug through `baton::faults` and must panic: a model that cannot fail
//! proves nothing.
//!
//! Sessions carry a loom witness (see `src/sync.rs`): loom reports a session read
//! that does not happen before the session is freed, and a session never freed.
#![cfg(loom)]

mod lincheck;

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use baton::faults::{self, Fault};
use baton::model::{Answer, Issued, Model};
use baton::{ManualClock, Rejection, Store};
use lincheck::{linearize, perform, Call, Event, Ret, Show};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

const T0: u64 = 1_704_067_200_000;
const UID: &str = "u@example.com";
const LIFESPAN_MS: u64 = 10_000;

fn store(cap: usize) -> Arc<Store<ManualClock>> {
    Arc::new(
        Store::builder()
            .shards(1)
            .token_lifespan(Duration::from_millis(LIFESPAN_MS))
            .max_clients_per_user(cap)
            .clock(ManualClock::new(T0))
            .build()
            .expect("in range"),
    )
}

// A panic must not escape a loom execution: loom would then drop the execution's
// objects (the epoch collector, the sessions) outside it, where touching loom state
// panics again and aborts the whole test binary. So every model thread catches its
// own panic, the first message is kept, and `explore` panics with it once loom is
// done. Loom runs all threads of a model as coroutines on the test's thread, so
// these thread-locals are per model.
std::thread_local! {
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Set while a model with an injected fault runs: its expected panics are not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, keeping the message of a panic instead of unwinding.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    if let Err(p) = &out {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a non-string panic".to_owned());
        FAILURE.with(|f| {
            f.borrow_mut().get_or_insert(msg);
        });
    }
    out.ok()
}

/// A model thread whose panic is kept, not unwound out of the execution.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Joined<T> {
    Joined(thread::spawn(move || guarded(f)))
}

struct Joined<T>(thread::JoinHandle<Option<T>>);

impl<T> Joined<T> {
    fn join(self) -> T {
        match self.0.join().expect("model threads catch their panics") {
            Some(t) => t,
            None => panic!("a model thread failed"),
        }
    }
}

/// Runs `model` under loom with `fault` injected, and reports how many executions
/// loom explored and how long that took.
fn explore(name: &str, fault: Option<Fault>, model: impl Fn() + Sync + Send + 'static) {
    explore_with(name, fault, loom::model::Builder::new(), model);
}

fn explore_with(
    name: &str,
    fault: Option<Fault>,
    builder: loom::model::Builder,
    model: impl Fn() + Sync + Send + 'static,
) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    faults::inject(fault);
    QUIET.with(|q| q.set(fault.is_some()));
    FAILURE.with(|f| f.borrow_mut().take());
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let start = Instant::now();
    // Loom's own checks after an execution (leaks) panic out of `check`; a failure
    // kept from inside the execution came first and names the cause better.
    let checked = panic::catch_unwind(AssertUnwindSafe(|| {
        builder.check(move || {
            counted.fetch_add(1, StdOrdering::Relaxed);
            guarded(&model);
        })
    }));
    let failure = FAILURE.with(|f| f.borrow_mut().take());
    if let (Err(p), None) = (checked, &failure) {
        QUIET.with(|q| q.set(false));
        faults::inject(None);
        panic::resume_unwind(p);
    }
    faults::inject(None);
    QUIET.with(|q| q.set(false));
    eprintln!(
        "loom {name}: {} executions in {:.2?}{}",
        runs.load(StdOrdering::Relaxed),
        start.elapsed(),
        if failure.is_some() { ", failed" } else { "" }
    );
    if let Some(msg) = failure {
        panic!("{msg}");
    }
}

/// Issues a session in the model's main thread; returns (client, token).
fn issue(store: &Store<ManualClock>) -> (String, String) {
    let c = store.issue(UID).expect("valid uid");
    (
        c.client().as_str().to_owned(),
        c.token().as_str().to_owned(),
    )
}

fn authenticate(store: &Store<ManualClock>, client: &str, token: &str) -> Answer {
    Answer::of(&store.authenticate(UID, client, token))
}

fn token_of(a: &Answer) -> Option<&str> {
    match a {
        Answer::Rotated { token, .. } | Answer::Batched { token, .. } => Some(token),
        Answer::Rejected(_) => None,
    }
}

fn generation(store: &Store<ManualClock>, client: &str) -> Option<u64> {
    store
        .sessions(UID)
        .expect("valid uid")
        .iter()
        .find(|s| s.client.as_str() == client)
        .map(|s| s.generation)
}

/// Checks the concurrent calls of one execution (after `setup`, which ran alone)
/// against the sequential model.
fn assert_linearizable(store: &Store<ManualClock>, setup: &[Event], calls: &[Event]) {
    let mut model = Model::of(store);
    for e in setup {
        lincheck::apply(&mut model, e).expect("the setup runs alone");
    }
    assert!(
        linearize(&model, calls).is_some(),
        "not linearizable:\n{}",
        Show(calls)
    );
}

fn spawn_call(store: &Arc<Store<ManualClock>>, thread_no: usize, call: Call) -> Joined<Event> {
    let store = store.clone();
    spawn(move || perform(&store, thread_no, call))
}

fn auth_call(client: &str, token: &str) -> Call {
    Call::Authenticate {
        uid: UID.to_owned(),
        client: client.to_owned(),
        token: token.to_owned(),
    }
}

fn issued(e: &Event) -> (String, String) {
    match &e.ret {
        Ret::Issue(Ok(Issued { client, token, .. })) => (client.clone(), token.clone()),
        other => panic!("issue failed: {other:?}"),
    }
}

// 1. Concurrent `authenticate` with the same current token.

fn one_rotation_per_batch() {
    let store = store(10);
    let setup = vec![perform(&store, 0, Call::Issue { uid: UID.into() })];
    let (client, t0) = issued(&setup[0]);
    let calls: Vec<Event> = (1..=2)
        .map(|n| spawn_call(&store, n, auth_call(&client, &t0)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(Joined::join)
        .collect();
    let answers: Vec<&Answer> = calls
        .iter()
        .map(|e| match &e.ret {
            Ret::Authenticate(a) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    let rotated = answers
        .iter()
        .filter(|a| matches!(a, Answer::Rotated { .. }))
        .count();
    assert_eq!(rotated, 1, "one rotation per batch: {answers:?}");
    let tokens: Vec<Option<&str>> = answers.iter().map(|a| token_of(a)).collect();
    assert!(
        tokens.iter().all(|t| t.is_some() && *t == tokens[0]),
        "every answer carries the one new token: {answers:?}"
    );
    assert_eq!(generation(&store, &client), Some(1));
    assert_linearizable(&store, &setup, &calls);
}

#[test]
fn model_1_one_rotation_per_batch() {
    explore("1 one rotation per batch", None, one_rotation_per_batch);
}

#[test]
#[should_panic(expected = "one rotation per batch")]
fn model_1_fails_with_a_split_cas() {
    explore(
        "1 with a split cas",
        Some(Fault::SplitCas),
        one_rotation_per_batch,
    );
}

// 2. `authenticate` with the previous token racing a rotation.

fn previous_token_racing_a_rotation() {
    let store = store(10);
    let mut setup = vec![perform(&store, 0, Call::Issue { uid: UID.into() })];
    let (client, t0) = issued(&setup[0]);
    setup.push(perform(&store, 0, auth_call(&client, &t0)));
    let Ret::Authenticate(Answer::Rotated { token: t1, expiry }) = setup[1].ret.clone() else {
        panic!("setup: {:?}", setup[1].ret);
    };
    // T1 is current and rotates; T0 is T(g-1) inside the window until then, and two
    // generations old after.
    let rotate = spawn_call(&store, 1, auth_call(&client, &t1));
    let previous = spawn_call(&store, 2, auth_call(&client, &t0));
    let calls = vec![rotate.join(), previous.join()];
    let Ret::Authenticate(Answer::Rotated { .. }) = &calls[0].ret else {
        panic!("the current token must rotate: {:?}", calls[0].ret);
    };
    match &calls[1].ret {
        Ret::Authenticate(Answer::Batched { token, expiry: e }) => assert!(
            *token == t1 && *e == expiry,
            "before the rotation T0 converges on T1: {:?}",
            calls[1].ret
        ),
        Ret::Authenticate(Answer::Rejected(Rejection::Replayed)) => {}
        other => panic!("T0 is batched onto T1 or replayed, never {other:?}"),
    }
    assert_eq!(generation(&store, &client), Some(2));
    assert_linearizable(&store, &setup, &calls);
}

#[test]
fn model_2_previous_token_racing_a_rotation() {
    explore(
        "2 previous token racing a rotation",
        None,
        previous_token_racing_a_rotation,
    );
}

#[test]
#[should_panic(expected = "before the rotation T0 converges on T1")]
fn model_2_fails_with_a_torn_snapshot() {
    explore(
        "2 with a torn snapshot",
        Some(Fault::TornSnapshot),
        previous_token_racing_a_rotation,
    );
}

// 3. `revoke` / `revoke_user` racing `authenticate`.

/// The revoke has two defences, each enough alone for the black-box property: it
/// marks the session dead and unlinks it. No single injected bug breaks "nothing
/// succeeds after the revoke returned", so the failing twin races two requests of a
/// batch with the revoke and catches a split CAS by the linearizability check.
///
/// `batch` lists, per authenticating thread, how many calls it makes.
fn revoke_racing_authenticate(whole_user: bool, batch: &'static [usize]) {
    let store = store(10);
    let setup = vec![perform(&store, 0, Call::Issue { uid: UID.into() })];
    let (client, t0) = issued(&setup[0]);
    let revoked = Arc::new(AtomicBool::new(false));
    let revoke = {
        let (store, revoked) = (store.clone(), revoked.clone());
        let call = if whole_user {
            Call::RevokeUser { uid: UID.into() }
        } else {
            Call::Revoke {
                uid: UID.into(),
                client: client.clone(),
            }
        };
        spawn(move || {
            let e = perform(&store, 0, call);
            // SeqCst: a client that reads true called after the revoke returned.
            revoked.store(true, Ordering::SeqCst);
            e
        })
    };
    // Requests of one batch, each calling again with what it was given; the main
    // thread is the first, so that it races the others from its first step. A call
    // that starts after the revoke returned must fail.
    let shared = (store.clone(), client.clone(), t0.clone(), revoked);
    let client_calls = move |n: usize, calls: usize| {
        let (store, client, t0, revoked) = shared.clone();
        move || {
            let mut out: Vec<(bool, Event)> = Vec::new();
            let mut token = t0;
            for _ in 0..calls {
                let after = revoked.load(Ordering::SeqCst);
                let e = perform(&store, n, auth_call(&client, &token));
                if let Ret::Authenticate(a) = &e.ret {
                    token = token_of(a).map_or(token, str::to_owned);
                }
                out.push((after, e));
            }
            out
        }
    };
    let others: Vec<_> = (1..batch.len())
        .map(|n| spawn(client_calls(n + 1, batch[n])))
        .collect();
    let mut results = vec![client_calls(1, batch[0])()];
    results.extend(others.into_iter().map(Joined::join));
    let revoke = revoke.join();
    match &revoke.ret {
        Ret::Revoke(Ok(true)) | Ret::RevokeUser(Ok(1)) => {}
        other => panic!("the session was live until the revoke: {other:?}"),
    }
    let mut calls = vec![revoke];
    for (after, e) in results.into_iter().flatten() {
        if after {
            assert!(
                matches!(e.ret, Ret::Authenticate(Answer::Rejected(_))),
                "succeeded after the revoke returned: {e:?}"
            );
        }
        calls.push(e);
    }
    assert_eq!(
        store.authenticate(UID, &client, &t0),
        Err(Rejection::UnknownSession)
    );
    assert!(store.is_empty());
    assert_linearizable(&store, &setup, &calls);
}

#[test]
fn model_3_revoke_racing_authenticate() {
    explore("3 revoke racing authenticate", None, || {
        revoke_racing_authenticate(false, &[2])
    });
}

#[test]
fn model_3_revoke_user_racing_authenticate() {
    explore("3 revoke_user racing authenticate", None, || {
        revoke_racing_authenticate(true, &[2])
    });
}

#[test]
#[should_panic(expected = "not linearizable")]
fn model_3_fails_with_a_split_cas() {
    // Three threads are too many at two preemptions; the bug needs only one.
    let mut one_preemption = loom::model::Builder::new();
    one_preemption.preemption_bound = Some(1);
    explore_with(
        "3 with a split cas",
        Some(Fault::SplitCas),
        one_preemption,
        || revoke_racing_authenticate(false, &[1, 1]),
    );
}

// 4. `issue` at the client cap racing `authenticate` of the session it evicts.

fn eviction_racing_authenticate() {
    let store = store(2);
    let setup = vec![
        perform(&store, 0, Call::Issue { uid: UID.into() }),
        perform(&store, 0, Call::Issue { uid: UID.into() }),
    ];
    let (first, t0) = issued(&setup[0]);
    let (second, _) = issued(&setup[1]);
    // Both expire at once; ties go to the older, `first`. A rotation of `first`
    // pushes its expiry past `second`'s, which then goes instead.
    store.clock().advance(Duration::from_millis(1));
    let auth = spawn_call(&store, 1, auth_call(&first, &t0));
    let sign_in = perform(&store, 0, Call::Issue { uid: UID.into() });
    let auth = auth.join();
    let (third, _) = issued(&sign_in);
    let live: Vec<String> = store
        .sessions(UID)
        .unwrap()
        .iter()
        .map(|s| s.client.as_str().to_owned())
        .collect();
    match &auth.ret {
        Ret::Authenticate(Answer::Rotated { .. }) => assert_eq!(
            live,
            [first.clone(), third.clone()],
            "a rotated session outlives the unrotated one"
        ),
        Ret::Authenticate(Answer::Rejected(Rejection::UnknownSession)) => assert_eq!(
            live,
            [second.clone(), third.clone()],
            "an evicted session is gone"
        ),
        other => panic!("rotated, or evicted first: {other:?}"),
    }
    assert_eq!(store.len(), 2);
    assert_linearizable(&store, &setup, &[auth, sign_in]);
}

#[test]
fn model_4_eviction_racing_authenticate() {
    explore(
        "4 eviction racing authenticate",
        None,
        eviction_racing_authenticate,
    );
}

#[test]
#[should_panic]
fn model_4_fails_with_a_split_cas() {
    explore(
        "4 with a split cas",
        Some(Fault::SplitCas),
        eviction_racing_authenticate,
    );
}

// 5. Index insert and remove racing lookups, with reclamation.

fn index_churn_racing_lookups() {
    let store = store(8);
    let (client, t0) = issue(&store);
    let (doomed, _) = issue(&store);
    let (other, t_other) = issue(&store);
    // The reader walks the probe chain past `client` and `doomed` to reach `other`; the writer
    // removes `doomed` (a tombstone, the session retired) and signs in once more,
    // which rebuilds the table (the old one retired) since sessions plus tombstones
    // would pass half of 8 slots.
    let writer = {
        let (store, doomed) = (store.clone(), doomed.clone());
        spawn(move || (store.revoke(UID, &doomed), issue(&store)))
    };
    let answer = authenticate(&store, &other, &t_other);
    let (revoked, (fresh, t_fresh)) = writer.join();
    assert_eq!(revoked, Ok(true));
    let other_answer = authenticate(&store, &client, &t0);
    assert!(matches!(answer, Answer::Rotated { .. }), "{answer:?}");
    assert!(
        matches!(other_answer, Answer::Rotated { .. }),
        "{other_answer:?}"
    );
    assert!(matches!(
        authenticate(&store, &fresh, &t_fresh),
        Answer::Rotated { .. }
    ));
    assert_eq!(
        authenticate(&store, &doomed, &t0),
        Answer::Rejected(Rejection::UnknownSession)
    );
    assert_eq!(store.len(), 3);
}

#[test]
fn model_5_index_churn_racing_lookups() {
    explore(
        "5 index churn racing lookups",
        None,
        index_churn_racing_lookups,
    );
}

#[test]
#[should_panic(expected = "Causality violation")]
fn model_5_fails_when_an_unlinked_session_is_freed_at_once() {
    explore(
        "5 with early free",
        Some(Fault::EarlyFree),
        index_churn_racing_lookups,
    );
}

// 6. Expiry sweep racing rotation.

fn sweep_racing_rotation() {
    let store = store(10);
    let (client, t0) = issue(&store);
    // One millisecond before expiry: a rotation now still succeeds; the sweeper moves
    // the clock onto the expiry before it sweeps.
    store.clock().set(T0 + LIFESPAN_MS - 1);
    let auth = {
        let (store, client, t0) = (store.clone(), client.clone(), t0.clone());
        spawn(move || authenticate(&store, &client, &t0))
    };
    store.clock().set(T0 + LIFESPAN_MS);
    let swept = store.sweep();
    let answer = auth.join();
    let held = store.len();
    match answer {
        // Rotated first: the sweep saw the new expiry and kept the session.
        Answer::Rotated { .. } => assert_eq!(
            (swept, held),
            (0, 1),
            "sweep racing rotation: a rotated session survives the sweep"
        ),
        // Swept first.
        Answer::Rejected(Rejection::UnknownSession) => assert_eq!(
            (swept, held),
            (1, 0),
            "sweep racing rotation: the sweep removed it"
        ),
        // The rotation read the moved clock: it found the session expired and removed
        // it, leaving the sweep nothing to count.
        Answer::Rejected(Rejection::Expired) => assert_eq!(
            (swept, held),
            (0, 0),
            "sweep racing rotation: the expiry is counted once"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn model_6_sweep_racing_rotation() {
    explore("6 sweep racing rotation", None, sweep_racing_rotation);
}

#[test]
#[should_panic(expected = "sweep racing rotation")]
fn model_6_fails_with_a_split_cas() {
    explore(
        "6 with a split cas",
        Some(Fault::SplitCas),
        sweep_racing_rotation,
    );
}

// 7. A migration (the table growing in steps) racing a lookup.

/// Four sessions fill the first table (8 slots) to half; a fifth sign-in starts a
/// migration: it names the table `old`, publishes a fresh one, inserts there, and its
/// writer step moves the four across and retires the old table. A reader racing all
/// of that must find its session, live, whatever it loaded. The failing twin publishes
/// the new table before naming the old one: a reader can then load the new table,
/// find no old one, and miss a session not yet moved.
fn migration_racing_lookup() {
    let store = store(8);
    let (client, t0) = issue(&store);
    let others: Vec<(String, String)> = (0..3).map(|_| issue(&store)).collect();
    let writer = {
        let store = store.clone();
        spawn(move || issue(&store))
    };
    let answer = authenticate(&store, &client, &t0);
    let (fresh, t_fresh) = writer.join();
    assert!(
        matches!(answer, Answer::Rotated { .. }),
        "a lookup racing a migration finds its session: {answer:?}"
    );
    for (c, t) in others.iter().chain([(fresh, t_fresh)].iter()) {
        assert!(
            matches!(authenticate(&store, c, t), Answer::Rotated { .. }),
            "every session survives the migration"
        );
    }
    assert_eq!(store.len(), 5);
}

/// The migration's writer call is long (it moves every slot, retires the old table and
/// hands its seal to the epoch), so executions have more steps than loom's default.
fn long_executions() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.max_branches = 20_000;
    b
}

#[test]
fn model_7_migration_racing_lookup() {
    explore_with(
        "7 migration racing lookup",
        None,
        long_executions(),
        migration_racing_lookup,
    );
}

#[test]
#[should_panic(expected = "a lookup racing a migration finds its session")]
fn model_7_fails_when_the_new_table_is_published_first() {
    explore_with(
        "7 with the new table published first",
        Some(Fault::TableBeforeOld),
        long_executions(),
        migration_racing_lookup,
    );
}
