use baton::{Authenticated, ManualClock, Rejection, Store};
use std::time::Duration;

#[test]
fn issue_rotate_batch_replay() {
    let clock = ManualClock::default();
    let store = Store::builder().clock(clock.clone()).build().unwrap();
    let c0 = store.issue("alice@example.com").unwrap();
    let client = c0.client().as_str().to_owned();
    let t0 = c0.token().as_str().to_owned();
    let r1 = store
        .authenticate("alice@example.com", &client, &t0)
        .unwrap();
    let Authenticated::Rotated(c1) = r1 else {
        panic!("{r1:?}")
    };
    assert_ne!(c1.token().as_str(), t0);
    let r2 = store
        .authenticate("alice@example.com", &client, &t0)
        .unwrap();
    assert_eq!(r2, Authenticated::Batched(c1));
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        store.authenticate("alice@example.com", &client, &t0),
        Err(Rejection::Replayed)
    );
    assert_eq!(
        store.authenticate("alice@example.com", &client, "garbage"),
        Err(Rejection::InvalidToken)
    );
    assert_eq!(store.revoke("alice@example.com", &client), Ok(true));
    assert_eq!(
        store.authenticate("alice@example.com", &client, c1.token().as_str()),
        Err(Rejection::UnknownSession)
    );
}
