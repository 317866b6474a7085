//! Allocation accounting with a counting global allocator: `authenticate` allocates
//! nothing on any path, and a live session costs at most 160 bytes including the index.

use std::time::Duration;

use baton::model::Issued;
use baton::{ManualClock, ReplayPolicy, Store};

#[global_allocator]
static GLOBAL: baton_support::Counting = baton_support::Counting;

/// The byte counter is process-wide: tests that read it run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lets the epoch collector free what removals and table growth retired.
fn flush_epochs() {
    for _ in 0..1000 {
        crossbeam_epoch::pin().flush();
    }
}

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = baton_support::allocations();
    f();
    baton_support::allocations() - before
}

#[test]
fn authenticate_never_allocates() {
    let _serial = serial();
    let clock = ManualClock::default();
    let store = Store::builder()
        .clock(clock.clone())
        .recovery_window(Duration::from_secs(60))
        .replay_policy(ReplayPolicy::RevokeSession)
        .build()
        .unwrap();
    let uid = "alloc@example.com";
    let issued: Vec<(String, String)> = (0..5)
        .map(|_| {
            let c = store.issue(uid).unwrap();
            (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            )
        })
        .collect();
    let huge = "A".repeat(100_000);
    // Warm-up: the thread's first epoch pin registers it with the collector.
    let _ = store.authenticate(uid, &issued[4].0, "x");

    let mut token = issued[0].1.clone();
    let mut previous = String::with_capacity(baton::TOKEN_LEN);
    let mut next = [0u8; baton::TOKEN_LEN];
    let n = allocations_in(|| {
        for _ in 0..20_000 {
            // Rotate, then batch with the retired token, then garbage of every shape.
            let a = store.authenticate(uid, &issued[0].0, &token).unwrap();
            assert!(a.is_rotated());
            next.copy_from_slice(a.credentials().token().as_str().as_bytes());
            // The token just retired batches onto its successor.
            let b = store.authenticate(uid, &issued[0].0, &token).unwrap();
            assert!(!b.is_rotated());
            let _ = store.authenticate(uid, &issued[0].0, "not a token");
            let _ = store.authenticate(uid, &issued[0].0, &huge);
            let _ = store.authenticate(uid, "AAAAAAAAAAAAAAAA", &token);
            let _ = store.authenticate("", &issued[0].0, &token);
            previous.clear();
            previous.push_str(&token);
            token.clear();
            token.push_str(std::str::from_utf8(&next).unwrap());
        }
        // Expiry and the revoking replay policy end sessions: still no allocation.
        clock.advance(Duration::from_secs(61));
        let _ = store.authenticate(uid, &issued[0].0, &previous);
        clock.advance(Duration::from_secs(15 * 86_400));
        let _ = store.authenticate(uid, &issued[2].0, &issued[2].1);
    });
    assert_eq!(n, 0, "authenticate allocated {n} times");
    let stats = store.stats();
    assert_eq!(stats.rotated, 20_000);
    assert_eq!(
        (stats.expired, stats.replayed, stats.revoked),
        (1, 1, 1),
        "{stats:?}"
    );
}

/// Memory per live session at one million sessions of 20-byte uids, one session each:
/// bytes requested from the allocator (the index) plus the pages the sessions live
/// in, which the store maps itself (`Store::mapped_bytes`).
#[test]
fn a_session_costs_at_most_160_bytes() {
    let _serial = serial();
    const N: usize = 1_000_000;
    let uids: Vec<String> = (0..N).map(|i| format!("user{i:011}@x.io")).collect();
    assert_eq!(uids[0].len(), 20);
    let before = baton_support::net_bytes();
    let rss_before = rss_bytes();
    let store = Store::new();
    for uid in &uids {
        store.issue(uid).unwrap();
    }
    flush_epochs();
    let per_session =
        (baton_support::net_bytes() - before + store.mapped_bytes() as isize) as f64 / N as f64;
    let rss = rss_bytes()
        .zip(rss_before)
        .map(|(a, b)| (a - b) as f64 / N as f64);
    println!(
        "bytes per live session at {N}: {per_session:.1} requested and mapped, {rss:.1?} resident"
    );
    assert_eq!(store.len(), N);
    assert!(per_session <= 160.0, "{per_session:.1} bytes per session");
}

/// Sign-in and sign-out churn at a steady number of sessions: memory stays flat
/// (removed sessions and replaced tables come back; tombstones do not pile up).
#[test]
fn churn_does_not_grow_memory() {
    let _serial = serial();
    const USERS: usize = 2000;
    let store = Store::builder().shards(4).build().unwrap();
    let uids: Vec<String> = (0..USERS)
        .map(|i| format!("churn{i}@example.com"))
        .collect();
    let mut clients: Vec<String> = uids
        .iter()
        .map(|u| store.issue(u).unwrap().client().as_str().to_owned())
        .collect();
    let mut churn = |rounds: usize| {
        for _ in 0..rounds {
            for (uid, client) in uids.iter().zip(clients.iter_mut()) {
                let fresh = store.issue(uid).unwrap().client().as_str().to_owned();
                assert_eq!(store.revoke(uid, client), Ok(true));
                *client = fresh;
            }
        }
    };
    churn(5);
    flush_epochs();
    let steady = baton_support::net_bytes() + store.mapped_bytes() as isize;
    churn(50);
    flush_epochs();
    let after = baton_support::net_bytes() + store.mapped_bytes() as isize;
    assert_eq!(store.len(), USERS);
    // 100 000 sign-ins and sign-outs later: within 64 bytes per session of where it was.
    let growth = after - steady;
    assert!(
        growth < (USERS as isize) * 64,
        "grew {growth} bytes over {USERS} sessions"
    );
}

/// The system's page size, where known.
fn page_size() -> Option<usize> {
    #[cfg(unix)]
    {
        // SAFETY: no preconditions.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Resident memory of this process, from /proc (Linux only).
fn rss_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A mass expiry gives its memory back: after a sweep removes 100 000 expired sessions,
/// the memory the store maps (pages and tables) is within 2x of what a fresh store of
/// as many sessions maps, and every survivor still rotates.
#[test]
fn a_mass_expiry_gives_its_pages_back() {
    let _serial = serial();
    const N: usize = 100_000;
    const LIFESPAN: Duration = Duration::from_secs(3600);
    let clock = ManualClock::new(1_704_067_200_000);
    let store = Store::builder()
        .shards(4)
        .token_lifespan(LIFESPAN)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..N {
        store.issue(&format!("gone{i:016}")).unwrap();
    }
    clock.advance(LIFESPAN / 2);
    let survivors: Vec<(String, Issued)> = (0..1000)
        .map(|i| {
            let uid = format!("kept{i:016}");
            let issued = Issued::of(&store.issue(&uid).unwrap());
            (uid, issued)
        })
        .collect();
    let full = store.mapped_bytes();
    clock.advance(LIFESPAN / 2 + Duration::from_secs(1));
    assert_eq!(store.sweep(), N);
    let after = store.mapped_bytes();
    assert!(full >= N * 48, "{full} bytes mapped for {N} sessions");
    let fresh = Store::builder().shards(4).build().unwrap();
    for i in 0..survivors.len() {
        fresh.issue(&format!("anew{i:016}")).unwrap();
    }
    let need = fresh.mapped_bytes();
    println!("mapped: full {full}, after the expiry {after}, a fresh store {need}");
    // Where free system pages inside a page cannot be given back (not Linux, or
    // pages other than 4 KiB), only whole pages go: a far weaker bound.
    let discards = cfg!(target_os = "linux") && page_size() == Some(4096);
    if discards {
        assert!(
            after <= 2 * need,
            "{after} bytes mapped after the expiry, a fresh store of 1000 maps {need}"
        );
    } else {
        assert!(after * 20 < full, "{after} bytes mapped of {full}");
    }
    for (uid, Issued { client, token, .. }) in &survivors {
        assert!(store.authenticate(uid, client, token).is_ok(), "{uid} lost");
    }
    assert_eq!(store.len(), 1000);
}
