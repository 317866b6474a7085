//! Real threads on the real store: batches, revocation races, token uniqueness.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use baton::{Authenticated, Rejection, Store};

const THREADS: usize = 8;

/// Eight threads present one current token at once, round after round: exactly one
/// rotates, and every answer carries the same new token.
fn batch_rounds(rounds: usize) {
    let store = Arc::new(Store::new());
    let first = store.issue("batch@example.com").unwrap();
    let client = first.client().as_str().to_owned();
    let token = Arc::new(std::sync::Mutex::new(first.token().as_str().to_owned()));
    let barrier = Arc::new(Barrier::new(THREADS));
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, client, token, barrier, results) = (
                store.clone(),
                client.clone(),
                token.clone(),
                barrier.clone(),
                results.clone(),
            );
            thread::spawn(move || {
                for round in 0..rounds {
                    barrier.wait();
                    let presented = token.lock().unwrap().clone();
                    let answer = store.authenticate("batch@example.com", &client, &presented);
                    let owned = answer
                        .map(|a| (a.is_rotated(), a.credentials().token().as_str().to_owned()));
                    results.lock().unwrap().push((round, presented, owned));
                    // Everyone has answered before the new token is published.
                    if barrier.wait().is_leader() {
                        let rs = results.lock().unwrap();
                        let next = rs
                            .iter()
                            .find(|r| r.0 == round)
                            .and_then(|r| r.2.clone().ok())
                            .unwrap()
                            .1;
                        *token.lock().unwrap() = next;
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let results = results.lock().unwrap();
    let mut minted = HashSet::new();
    for round in 0..rounds {
        let answers: Vec<_> = results.iter().filter(|r| r.0 == round).collect();
        assert_eq!(answers.len(), THREADS);
        assert!(
            answers.iter().all(|r| r.1 == answers[0].1),
            "one token presented per round"
        );
        let ok: Vec<_> = answers
            .iter()
            .map(|r| r.2.clone().expect("every batch member succeeds"))
            .collect();
        assert_eq!(
            ok.iter().filter(|(rotated, _)| *rotated).count(),
            1,
            "round {round}: {ok:?}"
        );
        assert!(
            ok.iter().all(|(_, t)| *t == ok[0].1),
            "round {round}: one successor for all"
        );
        assert_ne!(ok[0].1, answers[0].1, "the successor is new");
        assert!(minted.insert(ok[0].1.clone()), "successor minted twice");
    }
    let info = &store.sessions("batch@example.com").unwrap()[0];
    assert_eq!(info.generation, rounds as u64, "one rotation per round");
}

#[test]
fn a_batch_rotates_once_and_converges() {
    batch_rounds(200);
}

#[test]
#[ignore = "stress: run with --release -- --ignored"]
fn a_batch_rotates_once_and_converges_stress() {
    batch_rounds(20_000);
}

/// Revocation racing authentication: once `revoke` has returned, nothing succeeds.
fn revoke_races(sessions: usize) {
    let store = Arc::new(Store::new());
    for i in 0..sessions {
        let uid = format!("u{i}@example.com");
        let c = store.issue(&uid).unwrap();
        let (client, token) = (
            c.client().as_str().to_owned(),
            c.token().as_str().to_owned(),
        );
        let revoked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(3));
        let hammer: Vec<_> = (0..2)
            .map(|_| {
                let (store, uid, client, token, revoked, barrier) = (
                    store.clone(),
                    uid.clone(),
                    client.clone(),
                    token.clone(),
                    revoked.clone(),
                    barrier.clone(),
                );
                thread::spawn(move || {
                    barrier.wait();
                    let mut presented = token;
                    for _ in 0..200 {
                        // Read the flag before calling: if revoke had returned by then, this
                        // call started after it and must fail.
                        let after = revoked.load(std::sync::atomic::Ordering::SeqCst);
                        match store.authenticate(&uid, &client, &presented) {
                            Ok(a) => {
                                assert!(!after, "authenticate succeeded after revoke returned");
                                presented = a.credentials().token().as_str().to_owned();
                            }
                            Err(e) => {
                                // The other hammer may have rotated past this thread's token.
                                assert!(
                                    matches!(
                                        e,
                                        Rejection::UnknownSession
                                            | Rejection::Replayed
                                            | Rejection::InvalidToken
                                    ),
                                    "{e}"
                                );
                            }
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        thread::yield_now();
        assert_eq!(store.revoke(&uid, &client), Ok(true));
        revoked.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in hammer {
            h.join().unwrap();
        }
        assert_eq!(
            store.authenticate(&uid, &client, &token),
            Err(Rejection::UnknownSession)
        );
    }
    assert_eq!(store.len(), 0);
}

#[test]
fn nothing_succeeds_after_revoke_returns() {
    revoke_races(50);
}

#[test]
#[ignore = "stress: run with --release -- --ignored"]
fn nothing_succeeds_after_revoke_returns_stress() {
    revoke_races(3_000);
}

/// A million tokens, issued and rotated on several threads: none repeats.
#[test]
#[ignore = "stress: run with --release -- --ignored"]
fn a_million_tokens_never_repeat() {
    let store = Arc::new(Store::builder().max_clients_per_user(1).build().unwrap());
    let per_thread = 250_000;
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut tokens = Vec::with_capacity(per_thread);
                for i in 0..per_thread / 2 {
                    let uid = format!("t{t}-{}", i % 1000);
                    let c = store.issue(&uid).unwrap();
                    tokens.push(c.token().as_str().to_owned());
                    let next = store
                        .authenticate(&uid, c.client().as_str(), c.token().as_str())
                        .unwrap();
                    assert!(next.is_rotated());
                    tokens.push(next.credentials().token().as_str().to_owned());
                }
                tokens
            })
        })
        .collect();
    let mut all = HashSet::new();
    for w in workers {
        for t in w.join().unwrap() {
            assert!(all.insert(t), "a token was minted twice");
        }
    }
    assert_eq!(all.len(), 1_000_000);
    assert_eq!(
        store.len(),
        4 * 1000,
        "the client cap of 1 evicted the rest"
    );
}

/// Sign-ins, sign-outs and lookups on many threads at once, with table rebuilds: every
/// session a thread still holds keeps answering, none it revoked does.
#[test]
fn churn_keeps_every_other_session_intact() {
    let store = Arc::new(Store::builder().shards(2).build().unwrap());
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut held: Vec<(String, String, String)> = Vec::new();
                for i in 0..3000 {
                    let uid = format!("churn{t}-{}", i % 97);
                    match i % 3 {
                        0 | 1 => {
                            let c = store.issue(&uid).unwrap();
                            let (client, token) = (
                                c.client().as_str().to_owned(),
                                c.token().as_str().to_owned(),
                            );
                            held.push((uid, client, token));
                        }
                        _ => {
                            if let Some((uid, client, token)) = held.pop() {
                                // False only if the client cap evicted it meanwhile.
                                store.revoke(&uid, &client).unwrap();
                                assert_eq!(
                                    store.authenticate(&uid, &client, &token),
                                    Err(Rejection::UnknownSession)
                                );
                            }
                        }
                    }
                    if let Some((uid, client, token)) = held.first_mut() {
                        match store.authenticate(uid, client, token) {
                            Ok(Authenticated::Rotated(c)) => *token = c.token().as_str().to_owned(),
                            // Evicted by the client cap (10 per uid) is the only way out.
                            Err(Rejection::UnknownSession) => {
                                held.remove(0);
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    // Every session not revoked is either still live or was evicted by the cap.
    let mut live = 0;
    for (uid, client, token) in &held {
        match store.authenticate(uid, client, token) {
            Ok(_) => live += 1,
            Err(Rejection::UnknownSession) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(live > 0);
    assert_eq!(
        store.len(),
        live,
        "the store holds exactly the sessions still answering"
    );
}

/// Counters are striped by thread: summed, they count every answer from every thread
/// exactly once, whichever stripes the threads landed on.
#[test]
fn stats_count_every_answer_from_every_thread() {
    const PER_THREAD: usize = 2_000;
    // More threads than a small machine's stripes, so some share one.
    const WORKERS: usize = 3 * THREADS;
    let store = Arc::new(Store::new());
    let shared = store.issue("shared@example.com").unwrap();
    let shared_client = shared.client().as_str().to_owned();
    let shared_token = shared.token().as_str().to_owned();
    let barrier = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let (shared_client, shared_token) = (shared_client.clone(), shared_token.clone());
            thread::spawn(move || {
                let uid = format!("worker{t}@example.com");
                let mine = store.issue(&uid).unwrap();
                let client = mine.client().as_str().to_owned();
                let mut token = mine.token().as_str().to_owned();
                barrier.wait();
                let (mut rotated, mut batched, mut rejected) = (0u64, 0u64, 0u64);
                for i in 0..PER_THREAD {
                    let a = store.authenticate(&uid, &client, &token).unwrap();
                    assert!(a.is_rotated());
                    rotated += 1;
                    token = a.credentials().token().as_str().to_owned();
                    // Every tenth request also presents the shared session's first
                    // token: rotated once, then batched or replayed.
                    if i % 10 == 0 {
                        match store.authenticate(
                            "shared@example.com",
                            &shared_client,
                            &shared_token,
                        ) {
                            Ok(a) if a.is_rotated() => rotated += 1,
                            Ok(_) => batched += 1,
                            Err(_) => rejected += 1,
                        }
                    }
                }
                (rotated, batched, rejected)
            })
        })
        .collect();
    let (mut rotated, mut batched, mut rejected) = (0, 0, 0);
    for w in workers {
        let (r, b, x) = w.join().unwrap();
        rotated += r;
        batched += b;
        rejected += x;
    }
    let stats = store.stats();
    assert_eq!(stats.issued, WORKERS as u64 + 1);
    assert_eq!(stats.rotated, rotated);
    assert_eq!(stats.batched, batched);
    assert_eq!(stats.rejected(), rejected);
    assert_eq!(stats.live, WORKERS as u64 + 1);
    assert_eq!(store.len(), WORKERS + 1);
}
