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
//! hook lets through only panics raised in redb's own code (located there, or raised
//! by the standard library for it), and aborts on any other.
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
            let in_redb = info.location().is_some_and(|l| is_redb(l.file())) || raised_in_redb();
            if !in_redb {
                fuzzer(info);
            }
        }));
    });
}

fn is_redb(file: &str) -> bool {
    file.contains("/redb-") || file.contains("/redb/")
}

/// Whether the code that panicked is redb's: a panic raised by the standard library on
/// redb's behalf (an arithmetic overflow in `u64::pow`, an `unwrap` without
/// `track_caller`) is located in the library, so the first frame past the panic
/// machinery and the standard library decides.
fn raised_in_redb() -> bool {
    // The `Debug` form lists every frame (`Display` stops at the short-backtrace
    // markers), each as `file: "..."` where the file is known.
    let trace = format!("{:?}", std::backtrace::Backtrace::force_capture());
    let files = trace
        .split("file: \"")
        .skip(1)
        .filter_map(|f| f.split('"').next());
    let library = |f: &str| f.contains("/rustlib/src/rust/library/") || f.starts_with("/rustc/");
    let mut past_panic = false;
    for file in files {
        if file.ends_with("/src/panicking.rs") {
            past_panic = true;
        } else if past_panic && !library(file) {
            return is_redb(file);
        }
    }
    false
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
