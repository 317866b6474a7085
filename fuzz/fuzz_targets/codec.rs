//! Arbitrary text into every decoder the store exposes: `Token::parse`,
//! `ClientId::parse`, and `issue`/`authenticate`/`revoke`/`revoke_user`/`sessions` with
//! arbitrary uid, client and token strings. Nothing may panic; whatever decodes must
//! re-encode to the very same text; and the independent `base64` crate decides which
//! texts ought to decode at all.
//!
//! Run: `cargo +nightly fuzz run codec` (from `fuzz/`; see the README).
//!
//! The input is text lines, so the seeds are readable: line 1 is a uid, line 2 a client
//! id, line 3 a token. A line `$` stands for the value of the session the harness
//! issued first, and `$` followed by more bytes for that value with the bytes appended,
//! so the fuzzer reaches the known-session rows without guessing a random token.
#![no_main]

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use baton::{Authenticated, ClientId, InputError, ManualClock, Rejection, Store, Token};
use baton::{CLIENT_ID_LEN, MAX_UID_LEN, TOKEN_LEN};
use libfuzzer_sys::fuzz_target;

const ISSUED_UID: &str = "alice@example.com";

/// `Token::parse` and `ClientId::parse` against the oracle, and their round trips.
fn check_decoders(text: &str) {
    let oracle = URL_SAFE_NO_PAD.decode(text).ok();
    let canonical = |n: usize| oracle.as_ref().is_some_and(|b| b.len() == n);

    match Token::parse(text) {
        Ok(t) => {
            assert_eq!(t.as_str(), text, "a token that re-encodes differently");
            assert!(
                canonical(20),
                "accepted {text:?}, not 20 bytes of url-safe base64"
            );
            assert_eq!(Token::parse(t.as_str()), Ok(t));
            let shown = format!("{t:?}");
            assert!(!shown.contains(text), "Debug shows the token: {shown}");
        }
        Err(e) => {
            assert_eq!(e, InputError::MalformedToken);
            assert!(!canonical(20), "refused the canonical token {text:?}");
        }
    }
    assert_eq!(
        Token::parse(text).is_ok(),
        text.len() == TOKEN_LEN && canonical(20)
    );

    match ClientId::parse(text) {
        Ok(c) => {
            assert_eq!(c.as_str(), text, "a client id that re-encodes differently");
            assert_eq!(c.to_string(), text);
            assert!(
                canonical(12),
                "accepted {text:?}, not 12 bytes of url-safe base64"
            );
            assert_eq!(ClientId::parse(c.as_str()), Ok(c));
        }
        Err(e) => {
            assert_eq!(e, InputError::MalformedClient);
            assert!(!canonical(12), "refused the canonical client id {text:?}");
        }
    }
    assert_eq!(
        ClientId::parse(text).is_ok(),
        text.len() == CLIENT_ID_LEN && canonical(12)
    );
}

fn uid_error(uid: &str) -> Option<InputError> {
    match uid.len() {
        0 => Some(InputError::EmptyUid),
        len if len > MAX_UID_LEN => Some(InputError::UidTooLong { len }),
        _ => None,
    }
}

/// What the store must say about `(uid, client)` before it looks at any token.
fn input_error(uid: &str, client: &str) -> Option<InputError> {
    uid_error(uid).or_else(|| ClientId::parse(client).err())
}

/// Replaces a leading `$` by `known`.
fn resolve(field: &str, known: &str) -> String {
    match field.strip_prefix('$') {
        Some(rest) => format!("{known}{rest}"),
        None => field.to_owned(),
    }
}

fn check_credentials(uid: &str, token: &Token, client: &ClientId) {
    assert_eq!(Token::parse(token.as_str()), Ok(*token));
    assert_eq!(ClientId::parse(client.as_str()), Ok(*client));
    assert!(!uid.is_empty());
}

fn check_store(fields: &[String]) {
    let field = |i: usize| fields.get(i).map_or("", String::as_str);
    let store = Store::builder()
        .shards(2)
        .clock(ManualClock::default())
        .build()
        .expect("in range");
    let first = store.issue(ISSUED_UID).expect("a valid uid");
    let known_client = first.client().as_str().to_owned();
    let known_token = first.token().as_str().to_owned();
    check_credentials(first.uid(), first.token(), first.client());

    let uid = resolve(field(0), ISSUED_UID);
    let client = resolve(field(1), &known_client);
    let token = resolve(field(2), &known_token);
    let is_known = uid == ISSUED_UID && client == known_client;

    let answer = store.authenticate(&uid, &client, &token);
    match (input_error(&uid, &client), &answer) {
        (Some(e), _) => assert_eq!(answer, Err(Rejection::BadInput(e))),
        (None, _) if !is_known => assert_eq!(answer, Err(Rejection::UnknownSession)),
        (None, Ok(Authenticated::Rotated(c))) => {
            assert_eq!(token, known_token, "rotated on a token never issued");
            assert_eq!((c.uid(), c.client().as_str()), (&*uid, &*client));
            check_credentials(c.uid(), c.token(), c.client());
            // The retired token, presented again at once, batches onto its successor.
            let again = store.authenticate(&uid, &client, &token);
            assert_eq!(again, Ok(Authenticated::Batched(*c)));
        }
        (None, _) => {
            assert_ne!(
                token, known_token,
                "the issued token was refused: {answer:?}"
            );
            assert_eq!(answer, Err(Rejection::InvalidToken));
        }
    }

    // Sign-out with the same strings: the same validation, then says whether it existed.
    let revoked = store.revoke(&uid, &client);
    match input_error(&uid, &client) {
        Some(e) => assert_eq!(revoked, Err(e)),
        None => assert_eq!(revoked, Ok(is_known)),
    }
    if is_known {
        let after = store.authenticate(&uid, &client, &token);
        assert_eq!(after, Err(Rejection::UnknownSession));
    }

    // Any valid uid signs in, and its credentials decode to what they say.
    let held_before = if uid == ISSUED_UID && !is_known { 1 } else { 0 };
    match (uid_error(&uid), store.issue(&uid)) {
        (Some(e), got) => assert_eq!(got.err(), Some(e)),
        (None, Ok(c)) => {
            assert_eq!(c.uid(), uid);
            check_credentials(c.uid(), c.token(), c.client());
            let listed = store.sessions(&uid).expect("a valid uid");
            assert_eq!(listed.len(), held_before + 1);
            assert!(listed.iter().any(|s| s.client == *c.client()));
        }
        (None, Err(e)) => panic!("refused the valid uid {uid:?}: {e}"),
    }
    match uid_error(&uid) {
        Some(e) => {
            assert_eq!(store.sessions(&uid), Err(e));
            assert_eq!(store.revoke_user(&uid), Err(e));
        }
        None => assert_eq!(store.revoke_user(&uid), Ok(held_before + 1)),
    }

    // Expiry through the same path, with the same strings.
    store.clock().advance(Duration::from_secs(15 * 86_400));
    let late = store.authenticate(&uid, &client, &token);
    if let Some(e) = input_error(&uid, &client) {
        assert_eq!(late, Err(Rejection::BadInput(e)));
    } else {
        assert!(late.is_err(), "{late:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = String::from_utf8_lossy(data);
    check_decoders(&whole);
    let fields: Vec<String> = data
        .split(|&b| b == b'\n')
        .take(3)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    for f in &fields {
        check_decoders(f);
    }
    check_store(&fields);
});
