//! Arbitrary bytes as a session file: `PersistentStore::open` must answer an error or
//! a store, never panic, and a store it opens must work: a sign-in on it is durable and
//! its token authenticates.
//!
//! Run: `cargo +nightly fuzz run persist_load` (from `fuzz/`; see the README). The
//! seeds in `corpus/persist_load` are real session files (empty, a few sessions, a
//! damaged one), so mutations start from the format rather than from nothing.
//!
//! The store catches a panic inside redb (which is not hardened against hostile files)
//! and refuses the file; libFuzzer's hook would abort on it first, so this target's
//! hook lets through only panics located in redb's own source, and aborts on any other.
#![no_main]

use std::sync::Once;

use baton::{PersistOptions, PersistentStore, Secret, Store};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8; 32] = b"fuzz secret of thirty-two bytes!";

fn hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_redb = info
                .location()
                .is_some_and(|l| l.file().contains("/redb-") || l.file().contains("/redb/"));
            if !in_redb {
                fuzzer(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    hook();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sessions.redb"), data).unwrap();
    let options = PersistOptions::new(dir.path(), Secret::new(SECRET.to_vec()).unwrap());
    let Ok(store) = PersistentStore::open(Store::builder(), options) else {
        return;
    };
    let before = store.store().len();
    if let Ok(c) = store.issue("fuzz@example.com") {
        let (client, token) = (
            c.client().as_str().to_owned(),
            c.token().as_str().to_owned(),
        );
        assert!(store
            .authenticate("fuzz@example.com", &client, &token)
            .is_ok());
        assert!(store.store().len() > before);
    }
    store.crash();
});
