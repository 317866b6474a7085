//! Sign-ins, sign-outs and table rebuilds racing lookups, small enough for Miri:
//! `cargo +nightly miri test --test reclamation` checks every access to a removed
//! session or retired table for use-after-free and data races.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use baton::{ManualClock, Rejection, Store};

/// A thread that rotates the reader's session `rounds` times (each must succeed,
/// whatever the writer does meanwhile), with `probe_other` also looking up a session
/// that does not exist; returns the session's client and last token.
fn spawn_reader(
    store: &Arc<Store<ManualClock>>,
    first: &baton::Credentials<'_>,
    rounds: usize,
    probe_other: bool,
) -> thread::JoinHandle<(String, String)> {
    let store = store.clone();
    let client = first.client().as_str().to_owned();
    let mut token = first.token().as_str().to_owned();
    thread::spawn(move || {
        for _ in 0..rounds {
            match store.authenticate("reader@example.com", &client, &token) {
                Ok(a) => token = a.credentials().token().as_str().to_owned(),
                Err(e) => panic!("the reader's session must survive every writer step: {e}"),
            }
            if probe_other {
                let _ = store.authenticate("w@example.com", "AAAAAAAAAAAAAAAA", &token);
            }
        }
        (client, token)
    })
}

#[test]
fn lookups_survive_concurrent_removal_and_rebuilds() {
    let clock = ManualClock::default();
    let store = Arc::new(
        Store::builder()
            .shards(1)
            .max_clients_per_user(2)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let first = store.issue("reader@example.com").unwrap();
    let reader = spawn_reader(&store, &first, 20, true);
    // The writer fills the one shard past its first table (8 slots), evicts at the
    // cap, revokes, and lets sessions expire: every removal retires a session and
    // every growth retires a table while the reader probes.
    for i in 0..12 {
        let uid = format!("w{}@example.com", i % 4);
        let c = store.issue(&uid).unwrap();
        if i % 3 == 0 {
            assert_eq!(store.revoke(&uid, c.client().as_str()), Ok(true));
        }
    }
    reader.join().unwrap();
    // Seven writer sessions survive (the cap evicted one, revokes ended four), plus the reader's.
    assert_eq!(store.len(), 8);
    clock.advance(Duration::from_secs(20 * 86_400));
    assert_eq!(store.sweep(), 8);
    assert!(matches!(
        store.authenticate("reader@example.com", first.client().as_str(), "x"),
        Err(Rejection::UnknownSession | Rejection::Expired)
    ));
    assert_eq!(store.len(), 0);
}

/// The index grows in steps (two tables while it migrates), shrinks when most of it
/// is gone, and frees what it removed from the writers' side, all while a reader
/// keeps rotating its own session: the reader must find it at every step, and Miri
/// checks every access to a moved, removed or freed slot, session and table.
#[test]
fn lookups_survive_migrations_both_ways() {
    let store = Arc::new(
        Store::builder()
            .shards(1)
            .clock(ManualClock::default())
            .build()
            .unwrap(),
    );
    let first = store.issue("reader@example.com").unwrap();
    let reader = spawn_reader(&store, &first, 30, false);
    // 40 more uids: the table grows 8 -> 32 -> 128 slots, each time in steps.
    let mut held = Vec::new();
    for i in 0..40 {
        let uid = format!("w{i}@example.com");
        let client = store.issue(&uid).unwrap().client().as_str().to_owned();
        held.push((uid, client));
    }
    // Then nearly all go: live drops under a 32nd of the table, which shrinks.
    for (uid, client) in &held[..39] {
        assert_eq!(store.revoke(uid, client), Ok(true));
    }
    let (client, token) = reader.join().unwrap();
    assert_eq!(store.len(), 2);
    let (uid, last) = &held[39];
    assert_eq!(store.sessions(uid).unwrap().len(), 1);
    assert_eq!(store.sessions(uid).unwrap()[0].client.as_str(), last);
    assert!(store
        .authenticate("reader@example.com", &client, &token)
        .is_ok());
    for (uid, _) in &held[..39] {
        assert!(store.sessions(uid).unwrap().is_empty());
    }
}
