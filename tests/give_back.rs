//! Memory going back to the system while readers run: waves of sessions sign in
//! beside long-lived ones, expire together and are swept, so every sweep unmaps
//! emptied pages and discards the free system pages around the survivors, and the
//! next wave's sign-ins reuse what was discarded. Reader threads rotate every
//! survivor throughout: a survivor whose memory went back with its neighbours' would
//! answer wrongly (or crash the test), and the store's counts must stay exact.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use baton::model::Issued;
use baton::{ManualClock, Store};

const LIFESPAN: Duration = Duration::from_secs(3600);
const READERS: usize = 2;
const SURVIVORS_EACH: usize = 300;
const WAVE: usize = 6_000;
const WAVES: usize = 10;

#[test]
fn survivors_rotate_while_sweeps_give_their_neighbours_memory_back() {
    let clock = ManualClock::new(1_704_067_200_000);
    let store = Arc::new(
        Store::builder()
            .shards(4)
            .token_lifespan(LIFESPAN)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Full passes over each reader's survivors: the clock moves on only after every
    // reader rotated each of its survivors since the last move, so no survivor expires.
    let passes: Arc<Vec<AtomicUsize>> =
        Arc::new((0..READERS).map(|_| AtomicUsize::new(0)).collect());
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let mut mine: Vec<(String, Issued)> = (0..SURVIVORS_EACH)
                .map(|i| {
                    let uid = format!("kept{r}-{i:012}");
                    let issued = Issued::of(&store.issue(&uid).unwrap());
                    (uid, issued)
                })
                .collect();
            let (store, stop, passes) = (store.clone(), stop.clone(), passes.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (uid, Issued { client, token, .. }) in &mut mine {
                        match store.authenticate(uid, client, token) {
                            Ok(a) => *token = a.credentials().token().as_str().to_owned(),
                            Err(e) => panic!("survivor {uid} refused while others swept: {e}"),
                        }
                    }
                    passes[r].fetch_add(1, Ordering::AcqRel);
                }
                mine
            })
        })
        .collect();
    let survivors = READERS * SURVIVORS_EACH;
    let wait_for_a_pass = || {
        let seen: Vec<usize> = passes.iter().map(|p| p.load(Ordering::Acquire)).collect();
        while passes
            .iter()
            .zip(&seen)
            .any(|(p, &s)| p.load(Ordering::Acquire) < s + 2)
        {
            // A reader that panicked makes no more passes: fail, do not wait.
            assert!(
                !readers.iter().any(thread::JoinHandle::is_finished),
                "a reader stopped"
            );
            thread::yield_now();
        }
    };
    let mut most = 0;
    for wave in 0..WAVES {
        for i in 0..WAVE {
            store.issue(&format!("gone{wave:02}-{i:012}")).unwrap();
        }
        most = most.max(store.mapped_bytes());
        // Two moves of 0.6 lifespans: the wave (never rotated) expires, the
        // survivors (rotated after each move) do not.
        for _ in 0..2 {
            wait_for_a_pass();
            clock.advance(LIFESPAN.mul_f64(0.6));
        }
        assert_eq!(store.sweep(), WAVE, "wave {wave}: exactly the wave expired");
        assert_eq!(store.len(), survivors, "wave {wave}");
    }
    stop.store(true, Ordering::Relaxed);
    let kept: Vec<_> = readers
        .into_iter()
        .flat_map(|r| r.join().expect("a reader panicked"))
        .collect();
    for (uid, Issued { client, token, .. }) in &kept {
        assert!(
            store.authenticate(uid, client, token).is_ok(),
            "{uid} lost at the end"
        );
    }
    // A sweep frees what the epoch has released by its end; a reader descheduled
    // while pinned (two readers and this thread on a loaded machine) can hold some
    // of it past that. With the readers gone, one more sweep frees the rest.
    assert_eq!(store.sweep(), 0);
    // What is left mapped is a small part of a wave's worth (mostly tables: with
    // about 150 survivors a shard, a table of 4 096 slots is not due to shrink).
    let after = store.mapped_bytes();
    assert!(
        after * 3 < most,
        "{after} bytes mapped for {survivors} survivors, {most} with a wave in"
    );
}
