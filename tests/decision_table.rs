//! Every row of SPEC's decision table, through the public API, on a hand-driven clock.

use std::time::Duration;

use baton::{Authenticated, Credentials, InputError, ManualClock, Rejection, ReplayPolicy, Store};

const UID: &str = "alice@example.com";
const SEC: Duration = Duration::from_secs(1);

fn store(b: impl FnOnce(baton::Builder) -> baton::Builder) -> (Store<ManualClock>, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = b(Store::builder()).clock(clock.clone()).build().unwrap();
    (store, clock)
}

fn owned(c: &Credentials<'_>) -> (String, String, u64) {
    (
        c.client().as_str().to_owned(),
        c.token().as_str().to_owned(),
        c.expiry(),
    )
}

fn auth(
    store: &Store<ManualClock>,
    client: &str,
    token: &str,
) -> Result<(bool, String, u64), Rejection> {
    store.authenticate(UID, client, token).map(|a| {
        (
            a.is_rotated(),
            a.credentials().token().as_str().to_owned(),
            a.credentials().expiry(),
        )
    })
}

#[test]
fn unknown_session_never_issued_revoked_or_evicted() {
    let (store, _) = store(|b| b.max_clients_per_user(1));
    let (client, token, _) = owned(&store.issue(UID).unwrap());
    assert_eq!(
        auth(&store, "AAAAAAAAAAAAAAAA", &token),
        Err(Rejection::UnknownSession)
    );
    assert_eq!(
        store.authenticate("bob@example.com", &client, &token),
        Err(Rejection::UnknownSession)
    );
    // Evicted by the next sign-in (cap 1).
    let (client2, token2, _) = owned(&store.issue(UID).unwrap());
    assert_eq!(
        auth(&store, &client, &token),
        Err(Rejection::UnknownSession)
    );
    assert_eq!(store.revoke(UID, &client2), Ok(true));
    assert_eq!(
        auth(&store, &client2, &token2),
        Err(Rejection::UnknownSession)
    );
    // The table's first row holds whatever the token is.
    assert_eq!(
        auth(&store, &client2, "garbage"),
        Err(Rejection::UnknownSession)
    );
    let s = store.stats();
    assert_eq!(
        (s.evicted, s.revoked, s.unknown_session, s.live),
        (1, 1, 5, 0)
    );
}

#[test]
fn expired_is_answered_once_and_removes_the_session() {
    let (store, clock) = store(|b| b.token_lifespan(100 * SEC));
    let (client, token, expiry) = owned(&store.issue(UID).unwrap());
    assert_eq!(expiry, 1_700_000_000 + 100);
    clock.advance(100 * SEC - Duration::from_millis(1));
    assert!(
        auth(&store, &client, &token).is_ok(),
        "one millisecond before expiry"
    );
    let (client, token, _) = owned(&store.issue(UID).unwrap());
    clock.advance(100 * SEC);
    // Any token, even garbage: the session is past its expiry.
    assert_eq!(auth(&store, &client, "garbage"), Err(Rejection::Expired));
    assert_eq!(
        auth(&store, &client, &token),
        Err(Rejection::UnknownSession)
    );
    assert_eq!(store.stats().expired, 1);
}

#[test]
fn current_token_batches_with_rotation_off() {
    let (store, clock) = store(|b| b.rotation(false));
    let (client, token, expiry) = owned(&store.issue(UID).unwrap());
    for _ in 0..3 {
        clock.advance(10 * SEC);
        assert_eq!(
            auth(&store, &client, &token),
            Ok((false, token.clone(), expiry))
        );
    }
}

#[test]
fn current_token_batches_inside_min_rotation_interval_then_rotates() {
    let (store, clock) = store(|b| b.min_rotation_interval(5 * SEC));
    let (client, t0, e0) = owned(&store.issue(UID).unwrap());
    clock.advance(5 * SEC - Duration::from_millis(1));
    assert_eq!(auth(&store, &client, &t0), Ok((false, t0.clone(), e0)));
    clock.advance(Duration::from_millis(1));
    let (rotated, t1, e1) = auth(&store, &client, &t0).unwrap();
    assert!(rotated);
    assert_ne!(t1, t0);
    assert_eq!(e1, e0 + 5, "expiry moves with the rotation");
}

#[test]
fn current_token_rotates_and_expiry_follows_rotation_capped_by_max_age() {
    let (store, clock) = store(|b| b.token_lifespan(100 * SEC).max_age(Some(150 * SEC)));
    let (client, mut token, mut expiry) = owned(&store.issue(UID).unwrap());
    let mut seen = vec![token.clone()];
    for step in 1..=4u64 {
        clock.advance(30 * SEC);
        let (rotated, next, e) = auth(&store, &client, &token).unwrap();
        assert!(rotated);
        assert!(!seen.contains(&next), "a rotation mints a new token");
        assert!(e >= expiry, "expiry never goes down");
        assert_eq!(
            e,
            (1_700_000_000 + 30 * step + 100).min(1_700_000_000 + 150)
        );
        seen.push(next.clone());
        (token, expiry) = (next, e);
    }
    assert_eq!(store.sessions(UID).unwrap()[0].generation, 4);
}

#[test]
fn expiry_header_is_rounded_down() {
    let clock = ManualClock::new(1_700_000_000_999);
    let store = Store::builder()
        .token_lifespan(10 * SEC)
        .clock(clock)
        .build()
        .unwrap();
    assert_eq!(store.issue(UID).unwrap().expiry(), 1_700_000_010);
}

#[test]
fn previous_token_batches_onto_the_successor_inside_the_window() {
    let (store, clock) = store(|b| b.batch_window(5 * SEC));
    let (client, t0, _) = owned(&store.issue(UID).unwrap());
    let (_, t1, e1) = auth(&store, &client, &t0).unwrap();
    clock.advance(5 * SEC - Duration::from_millis(1));
    assert_eq!(auth(&store, &client, &t0), Ok((false, t1.clone(), e1)));
    clock.advance(Duration::from_millis(1));
    assert_eq!(auth(&store, &client, &t0), Err(Rejection::Replayed));
    assert!(
        auth(&store, &client, &t1).unwrap().0,
        "the session lives on under Reject"
    );
}

#[test]
fn previous_token_recovers_a_lost_response_until_the_successor_is_used() {
    let (store, clock) = store(|b| b.recovery_window(60 * SEC));
    let (client, t0, _) = owned(&store.issue(UID).unwrap());
    let (_, t1, e1) = auth(&store, &client, &t0).unwrap();
    clock.advance(30 * SEC);
    // The response carrying t1 was lost: t0 still works, and hands t1 again.
    assert_eq!(auth(&store, &client, &t0), Ok((false, t1.clone(), e1)));
    assert_eq!(auth(&store, &client, &t0), Ok((false, t1.clone(), e1)));
    clock.advance(30 * SEC);
    assert_eq!(
        auth(&store, &client, &t0),
        Err(Rejection::Replayed),
        "not past the recovery window"
    );

    let (client, t0, _) = owned(&store.issue(UID).unwrap());
    let (_, t1, _) = auth(&store, &client, &t0).unwrap();
    clock.advance(10 * SEC);
    // t1 is presented (and rotates): t0 is two generations old now, a replay, while
    // t1 recovers onto t2 as long as t2 is unused.
    let (_, t2, e2) = auth(&store, &client, &t1).unwrap();
    clock.advance(10 * SEC);
    assert_eq!(
        auth(&store, &client, &t0),
        Err(Rejection::Replayed),
        "older generation"
    );
    assert_eq!(auth(&store, &client, &t1), Ok((false, t2.clone(), e2)));
    assert!(auth(&store, &client, &t2).unwrap().0);
}

#[test]
fn presenting_the_current_token_without_rotating_ends_recovery() {
    let (store, clock) = store(|b| b.recovery_window(60 * SEC).min_rotation_interval(20 * SEC));
    let (client, t0, _) = owned(&store.issue(UID).unwrap());
    clock.advance(20 * SEC);
    let (_, t1, e1) = auth(&store, &client, &t0).unwrap();
    clock.advance(10 * SEC);
    assert_eq!(
        auth(&store, &client, &t0).unwrap().1,
        t1,
        "successor unused: recovered"
    );
    // Inside the min rotation interval t1 batches (no rotation, same expiry)...
    assert_eq!(auth(&store, &client, &t1), Ok((false, t1.clone(), e1)));
    assert_eq!(
        auth(&store, &client, &t0),
        Err(Rejection::Replayed),
        "...and having been presented, it ends t0's recovery"
    );
}

/// A session rotated 1 000 times, and its tokens handed out along the way.
fn rotated_1000_times(store: &Store<ManualClock>, clock: &ManualClock) -> (String, Vec<String>) {
    let (client, t0, _) = owned(&store.issue(UID).unwrap());
    let mut tokens = vec![t0];
    for _ in 0..1_000 {
        let (rotated, next, _) = auth(store, &client, tokens.last().unwrap()).unwrap();
        assert!(rotated);
        tokens.push(next);
    }
    // Past the batch window: the previous token is a replay too.
    clock.advance(6 * SEC);
    (client, tokens)
}

#[test]
fn older_genuine_tokens_of_any_age_are_replays() {
    let (store, clock) = store(|b| b);
    let (client, tokens) = rotated_1000_times(&store, &clock);
    let g = tokens.len() - 1;
    for age in [1, 2, 9, 10, 11, 500, 999, 1_000] {
        assert_eq!(
            auth(&store, &client, &tokens[g - age]),
            Err(Rejection::Replayed),
            "{age} generations old"
        );
    }
    // Reject only: the session lives on, its current token unchanged.
    assert!(auth(&store, &client, &tokens[g]).unwrap().0);
    assert_eq!(store.stats().revoked, 0);
}

#[test]
fn older_genuine_tokens_of_any_age_revoke_under_revoke_session() {
    for age in [1, 9, 10, 1_000] {
        let (store, clock) = store(|b| b.replay_policy(ReplayPolicy::RevokeSession));
        let (client, tokens) = rotated_1000_times(&store, &clock);
        let g = tokens.len() - 1;
        assert_eq!(
            auth(&store, &client, &tokens[g - age]),
            Err(Rejection::Replayed),
            "{age} generations old"
        );
        assert_eq!(
            auth(&store, &client, &tokens[g]),
            Err(Rejection::UnknownSession),
            "revoked by a token {age} generations old"
        );
        assert_eq!(store.stats().revoked, 1);
    }
}

#[test]
fn a_tokens_generation_rewritten_is_an_invalid_token() {
    let (store, clock) = store(|b| b.replay_policy(ReplayPolicy::RevokeSession));
    let (client, tokens) = rotated_1000_times(&store, &clock);
    let g = tokens.len() - 1;
    // The generation is the last 4 bytes, little-endian: characters 22.. hold its
    // low bits. Each rewrite names another generation (older, or ahead) with the
    // secret bytes of the current one, so no session's chain holds it.
    for at in [22usize, 23, 25] {
        let mut forged = tokens[g].clone().into_bytes();
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            auth(&store, &client, &forged),
            Err(Rejection::InvalidToken),
            "{forged}"
        );
    }
    assert!(auth(&store, &client, &tokens[g]).unwrap().0, "not revoked");
}

#[test]
fn anything_else_is_an_invalid_token_and_changes_nothing() {
    let (store, _) = store(|b| b);
    let (client, t0, e0) = owned(&store.issue(UID).unwrap());
    let other = store.issue(UID).unwrap().token().as_str().to_owned();
    let mut flipped = t0.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [
        "",
        "short",
        other.as_str(),
        flipped.as_str(),
        &"A".repeat(1 << 20),
        "ééééééééééé",
        "AAAAAAAAAAAAAAAAAAAAA=",
        "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ] {
        assert_eq!(
            auth(&store, &client, bad),
            Err(Rejection::InvalidToken),
            "{:.30?}",
            bad
        );
    }
    assert_eq!(store.sessions(UID).unwrap()[0].generation, 0);
    let (rotated, _, e) = auth(&store, &client, &t0).unwrap();
    assert!(rotated && e >= e0);
}

#[test]
fn bad_input_is_an_error_value_and_touches_nothing() {
    let (store, _) = store(|b| b);
    let (client, token, _) = owned(&store.issue(UID).unwrap());
    let long = "u".repeat(256);
    assert_eq!(store.issue("").unwrap_err(), InputError::EmptyUid);
    assert_eq!(
        store.issue(&long).unwrap_err(),
        InputError::UidTooLong { len: 256 }
    );
    assert!(store.issue(&"u".repeat(255)).is_ok());
    assert_eq!(
        store.authenticate("", &client, &token),
        Err(Rejection::BadInput(InputError::EmptyUid))
    );
    for bad_client in [
        "",
        "short",
        "AAAAAAAAAAAAAAA=",
        "ÄAAAAAAAAAAAAAA",
        &"A".repeat(100_000),
    ] {
        assert_eq!(
            store.authenticate(UID, bad_client, &token),
            Err(Rejection::BadInput(InputError::MalformedClient))
        );
        assert_eq!(
            store.revoke(UID, bad_client),
            Err(InputError::MalformedClient)
        );
    }
    assert_eq!(store.revoke_user(""), Err(InputError::EmptyUid));
    assert_eq!(
        store.sessions(&long).unwrap_err(),
        InputError::UidTooLong { len: 256 }
    );
    // The reason is said once: by `Display`, or by the `source()` it names.
    let bad = Rejection::BadInput(InputError::EmptyUid);
    assert_eq!(bad.to_string(), "bad input");
    assert_eq!(
        std::error::Error::source(&bad).map(|e| e.to_string()),
        Some("uid is empty".to_owned())
    );
    // Nothing above touched the session.
    assert!(matches!(
        store.authenticate(UID, &client, &token),
        Ok(Authenticated::Rotated(_))
    ));
}

#[test]
fn sign_in_at_the_cap_evicts_the_session_that_expires_first() {
    let (store, clock) = store(|b| b.max_clients_per_user(3));
    let a = owned(&store.issue(UID).unwrap());
    clock.advance(SEC);
    let b = owned(&store.issue(UID).unwrap());
    clock.advance(SEC);
    let c = owned(&store.issue(UID).unwrap());
    clock.advance(SEC);
    // Rotating `a` pushes its expiry past b's and c's: b now expires first.
    assert!(auth(&store, &a.0, &a.1).unwrap().0);
    let d = owned(&store.issue(UID).unwrap());
    let live: Vec<String> = store
        .sessions(UID)
        .unwrap()
        .iter()
        .map(|s| s.client.as_str().to_owned())
        .collect();
    assert_eq!(live, vec![a.0.clone(), c.0.clone(), d.0.clone()]);
    assert_eq!(auth(&store, &b.0, &b.1), Err(Rejection::UnknownSession));
    // Expired sessions do not count against the cap.
    clock.advance(15 * 86_400 * SEC);
    for _ in 0..3 {
        store.issue(UID).unwrap();
    }
    assert_eq!(store.stats().evicted, 1);
    assert_eq!(store.sessions(UID).unwrap().len(), 3);
}

#[test]
fn revoke_user_ends_every_session_and_counts_the_live_ones() {
    let (store, _) = store(|b| b);
    let tokens: Vec<_> = (0..4).map(|_| owned(&store.issue(UID).unwrap())).collect();
    let bob = owned(&store.issue("bob@example.com").unwrap());
    assert_eq!(store.revoke_user(UID), Ok(4));
    assert_eq!(store.revoke_user(UID), Ok(0));
    for (client, token, _) in &tokens {
        assert_eq!(auth(&store, client, token), Err(Rejection::UnknownSession));
    }
    assert!(store
        .authenticate("bob@example.com", &bob.0, &bob.1)
        .is_ok());
    assert_eq!(store.len(), 1);
}

#[test]
fn sweep_reclaims_expired_sessions() {
    let (store, clock) = store(|b| b.token_lifespan(10 * SEC));
    for i in 0..100 {
        store.issue(&format!("u{i}")).unwrap();
    }
    clock.advance(10 * SEC);
    assert_eq!(store.len(), 100, "expired sessions are held until swept");
    assert_eq!(store.sweep(), 100);
    assert_eq!(store.len(), 0);
    assert_eq!(store.stats().swept, 100);
}

#[test]
fn errors_are_send_sync_static() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<Rejection>();
    check::<InputError>();
    check::<baton::ConfigError>();
}

#[test]
fn debug_output_never_shows_a_token() {
    let (store, _) = store(|b| b);
    let c = store.issue(UID).unwrap();
    let token = c.token().as_str().to_owned();
    let shown = format!(
        "{c:?} {:?} {store:?}",
        store.authenticate(UID, c.client().as_str(), &token)
    );
    assert!(!shown.contains(&token), "{shown}");
    assert!(shown.contains("<redacted>"));
}
