//! The durable store (feature `persist`), black box: what survives a clean restart and
//! a crash (the writer stopped with nothing more written, as a SIGKILL leaves the
//! file; `persist_crash.rs` does it with real SIGKILLs), the lag bound, and every kind
//! of bad file, each a clear error.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use baton::decision::Policy;
use baton::model::Answer;
use baton::{
    Authenticated, BackendError, Builder, ManualClock, PersistError, PersistOptions,
    PersistentStore, Rejection, Secret, Store, MAX_AHEAD,
};

const T0: u64 = 1_700_000_000_000;

fn secret(b: u8) -> Secret {
    Secret::new(vec![b; 32]).unwrap()
}

fn builder(clock: &Arc<ManualClock>) -> Builder<Arc<ManualClock>> {
    Store::builder()
        .clock(clock.clone())
        .max_clients_per_user(2)
        .shards(4)
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> PersistentStore<Arc<ManualClock>> {
    PersistentStore::open(
        builder(clock),
        PersistOptions::new(dir, secret(1)).checkpoint_interval(Duration::from_secs(3600)),
    )
    .unwrap()
}

fn open_err(dir: &std::path::Path, s: Secret) -> PersistError {
    PersistentStore::open(Store::builder(), PersistOptions::new(dir, s)).unwrap_err()
}

fn token_of(r: &Result<Authenticated<'_>, Rejection>) -> String {
    r.as_ref()
        .unwrap()
        .credentials()
        .token()
        .as_str()
        .to_owned()
}

/// A held session: uid, client, the tokens it received in order.
struct Held {
    uid: String,
    client: String,
    tokens: Vec<String>,
}

fn sign_in(s: &PersistentStore<Arc<ManualClock>>, uid: &str) -> Held {
    let c = s.issue(uid).unwrap();
    Held {
        uid: uid.into(),
        client: c.client().as_str().into(),
        tokens: vec![c.token().as_str().into()],
    }
}

fn rotate(s: &PersistentStore<Arc<ManualClock>>, h: &mut Held, clock: &ManualClock) {
    clock.advance(Duration::from_millis(7));
    let last = h.tokens.last().unwrap().clone();
    let r = s.authenticate(&h.uid, &h.client, &last);
    assert!(matches!(r, Ok(Authenticated::Rotated(_))), "{r:?}");
    h.tokens.push(token_of(&r));
}

#[test]
fn a_clean_restart_answers_every_token_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    let mut held: Vec<Held> = (0..6)
        .map(|i| sign_in(&s, &format!("u{}@x", i / 2)))
        .collect();
    for (i, h) in held.iter_mut().enumerate() {
        for _ in 0..(i * 3) {
            rotate(&s, h, &clock);
        }
    }
    assert!(s.revoke(&held[5].uid, &held[5].client).unwrap());
    let probes = |s: &PersistentStore<Arc<ManualClock>>, held: &[Held]| -> Vec<Answer> {
        let mut out = Vec::new();
        for h in held {
            // Only answers that change nothing: older, previous, garbage, sessions.
            for t in h.tokens.iter().rev().skip(1) {
                out.push(Answer::of(&s.authenticate(&h.uid, &h.client, t)));
            }
            out.push(Answer::of(&s.authenticate(
                &h.uid,
                &h.client,
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )));
            if h.tokens.len() == 1 {
                out.push(Answer::Rotated {
                    token: String::new(),
                    expiry: 0,
                });
            }
        }
        out
    };
    let users: Vec<String> = (0..3).map(|i| format!("u{i}@x")).collect();
    let before = probes(&s, &held);
    let sessions_before: Vec<_> = users.iter().map(|u| s.sessions(u).unwrap()).collect();
    s.close().unwrap();

    let s = open(dir.path(), &clock);
    assert_eq!(probes(&s, &held), before);
    let sessions_after: Vec<_> = users.iter().map(|u| s.sessions(u).unwrap()).collect();
    assert_eq!(sessions_after, sessions_before);
    assert_eq!(s.store().len(), 5);
    for h in &mut held[..5] {
        rotate(&s, h, &clock);
    }
    assert_eq!(
        s.authenticate(
            &held[5].uid,
            &held[5].client,
            held[5].tokens.last().unwrap()
        )
        .unwrap_err(),
        Rejection::UnknownSession
    );
    // New sessions never reuse a restored session's stream: their tokens are new.
    let fresh = sign_in(&s, "u9@x");
    for h in &held {
        assert!(!h.tokens.contains(&fresh.tokens[0]));
    }
}

#[test]
fn after_a_crash_sign_ins_and_sign_outs_are_kept_and_rotations_continue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    let mut a = sign_in(&s, "a@x");
    let b = sign_in(&s, "b@x");
    s.checkpoint().unwrap();
    for _ in 0..40 {
        rotate(&s, &mut a, &clock);
    }
    let c = sign_in(&s, "c@x");
    assert!(s.revoke(&b.uid, &b.client).unwrap());
    // Eviction: the cap is 2, so the third sign-in of d ends the first.
    let d1 = sign_in(&s, "d@x");
    clock.advance(Duration::from_millis(1));
    let _d2 = sign_in(&s, "d@x");
    clock.advance(Duration::from_millis(1));
    let _d3 = sign_in(&s, "d@x");
    s.crash();

    let s = open(dir.path(), &clock);
    // The checkpoint had a at generation 0; its client holds T(40).
    assert_eq!(s.sessions("a@x").unwrap()[0].generation, 0);
    let r = s.authenticate(&a.uid, &a.client, a.tokens.last().unwrap());
    assert!(matches!(r, Ok(Authenticated::Rotated(_))), "{r:?}");
    assert_eq!(s.sessions("a@x").unwrap()[0].generation, 41);
    a.tokens.push(token_of(&r));
    // A token the client had already retired before the crash stays a replay.
    assert_eq!(
        s.authenticate(&a.uid, &a.client, &a.tokens[30])
            .unwrap_err(),
        Rejection::Replayed
    );
    assert!(s.authenticate(&c.uid, &c.client, &c.tokens[0]).is_ok());
    for (h, why) in [(&b, "signed out"), (&d1, "evicted")] {
        assert_eq!(
            s.authenticate(&h.uid, &h.client, &h.tokens[0]).unwrap_err(),
            Rejection::UnknownSession,
            "{why}"
        );
    }
    assert_eq!(s.sessions("d@x").unwrap().len(), 2);
}

#[test]
fn a_session_running_ahead_is_checkpointed_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    let mut a = sign_in(&s, "a@x");
    let n = baton::CHECKPOINT_AHEAD as usize + 10;
    for _ in 0..n {
        rotate(&s, &mut a, &clock);
    }
    // The interval is an hour: only the "ahead" cue can write it. Give the writer time.
    std::thread::sleep(Duration::from_millis(500));
    s.crash();
    let s = open(dir.path(), &clock);
    let g = s.sessions("a@x").unwrap()[0].generation;
    assert!(
        g >= baton::CHECKPOINT_AHEAD && g <= n as u64,
        "restored at {g}"
    );
    assert!(s
        .authenticate(&a.uid, &a.client, a.tokens.last().unwrap())
        .is_ok());
}

#[test]
fn a_client_rotating_past_the_bound_is_kept_within_it_by_early_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    let mut a = sign_in(&s, "a@x");
    // More rotations than a restored session could catch up with, paced so the
    // writer (cued at each multiple of CHECKPOINT_AHEAD) keeps up; the interval is
    // an hour, so only the cue writes.
    for i in 0..(MAX_AHEAD as usize + 200) {
        rotate(&s, &mut a, &clock);
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    s.crash();
    let s = open(dir.path(), &clock);
    let g = s.sessions("a@x").unwrap()[0].generation;
    let last = a.tokens.len() as u64 - 1;
    assert!(
        last - g <= baton::CHECKPOINT_AHEAD + 64,
        "restored at {g} of {last}"
    );
    // A token from before the checkpoint is a replay; the client's last one works.
    assert_eq!(
        s.authenticate(&a.uid, &a.client, &a.tokens[g as usize - 2])
            .unwrap_err(),
        Rejection::Replayed
    );
    assert!(s
        .authenticate(&a.uid, &a.client, a.tokens.last().unwrap())
        .is_ok());
}

#[test]
fn files_are_owner_only_and_hold_no_secret_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(&data, &clock);
    let held: Vec<Held> = (0..20).map(|i| sign_in(&s, &format!("u{i}@x"))).collect();
    s.close().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let file = data.join("sessions.redb");
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        find(b"u7@x"),
        "the check itself must be able to see records"
    );
    assert!(!find(&[1u8; 32]), "the secret is in the file");
    for h in &held {
        let raw = base64ct_decode(&h.tokens[0]);
        assert!(!find(&raw[..16]), "a token's secret bytes are in the file");
    }
}

fn base64ct_decode(t: &str) -> Vec<u8> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::decode_vec(t).unwrap()
}

#[test]
fn a_wrong_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    open(dir.path(), &clock).close().unwrap();
    assert!(matches!(
        open_err(dir.path(), secret(2)),
        PersistError::WrongKey
    ));
    // And the right one still opens it.
    open(dir.path(), &clock).close().unwrap();
}

#[test]
fn a_second_store_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    assert!(matches!(
        open_err(dir.path(), secret(1)),
        PersistError::InUse
    ));
    drop(s);
}

#[test]
fn foreign_empty_and_newer_files_are_refused() {
    let file_of = |d: &tempfile::TempDir| d.path().join("sessions.redb");
    // Another redb database.
    let d = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(file_of(&d)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, u64>::new("other"))
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(
        open_err(d.path(), secret(1)),
        PersistError::Foreign
    ));
    // An emptied file.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(file_of(&d), b"").unwrap();
    assert!(matches!(
        open_err(d.path(), secret(1)),
        PersistError::Foreign
    ));
    // Not a database at all.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(file_of(&d), vec![0x5a; 10_000]).unwrap();
    let e = open_err(d.path(), secret(1));
    assert!(
        matches!(e, PersistError::Corrupt(_) | PersistError::Database(_)),
        "{e:?}"
    );
    // A newer format of ours.
    let d = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    open(d.path(), &clock).close().unwrap();
    {
        let db = redb::Database::create(file_of(&d)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
            .unwrap()
            .insert("format", 2u32.to_le_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let e = open_err(d.path(), secret(1));
    assert!(matches!(e, PersistError::NewerVersion(2)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "session file format 2 is newer than this baton reads (1)"
    );
}

#[test]
fn a_bad_record_refuses_the_whole_file() {
    let d = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(d.path(), &clock);
    for i in 0..10 {
        sign_in(&s, &format!("u{i}@x"));
    }
    s.close().unwrap();
    let path = d.path().join("sessions.redb");
    let sessions = redb::TableDefinition::<u64, &[u8]>::new("sessions");
    for bad in [vec![1u8; 3], {
        // A dead state word.
        let mut r = vec![0u8; 8 + 8 + 12];
        r[7] = 0x80;
        r.extend_from_slice(b"x@y");
        r
    }] {
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(sessions)
                .unwrap()
                .insert(u64::MAX, bad.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let e = open_err(d.path(), secret(1));
        assert!(matches!(e, PersistError::Corrupt(_)), "{e:?}");
    }
}

#[test]
fn truncated_and_bit_flipped_files_are_errors_never_panics() {
    let d = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(d.path(), &clock);
    for i in 0..300 {
        sign_in(&s, &format!("user-{i}@example.com"));
    }
    s.close().unwrap();
    let path = d.path().join("sessions.redb");
    let good = std::fs::read(&path).unwrap();
    let mut refused = 0;
    let cuts = [1, 100, 512, 4096, good.len() / 2, good.len() - 1];
    for &cut in &cuts {
        std::fs::write(&path, &good[..cut]).unwrap();
        match PersistentStore::open(builder(&clock), PersistOptions::new(d.path(), secret(1))) {
            Err(_) => refused += 1,
            // redb may repair a file cut in its unused tail: then it must be whole.
            Ok(s) => assert_eq!(s.store().len(), 300),
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of {} cuts refused",
        cuts.len()
    );
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..40 {
        let mut bytes = good.clone();
        for _ in 0..8 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng as usize) % bytes.len();
            bytes[i] ^= 1 << (rng >> 61);
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(s) =
            PersistentStore::open(builder(&clock), PersistOptions::new(d.path(), secret(1)))
        {
            // A flip the loader cannot tell (say, inside a uid) loads every session.
            assert_eq!(s.store().len(), 300);
            s.crash();
        }
    }
}

/// From the persist_load fuzz target: a header whose primary slot claims a root page
/// of order 31 (`4096 << 31` bytes) made redb 3 allocate 8 TiB and abort the process.
/// redb 4.2 and later refuse such a page. Whichever commit slot and root field is
/// damaged, the file is refused as corrupt or opens with every session (a slot that
/// is not the primary is not read); the primary's root, at least, is refused.
#[test]
fn a_root_page_larger_than_the_file_is_an_error_not_an_abort() {
    let d = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(d.path(), &clock);
    sign_in(&s, "root@example.com");
    s.close().unwrap();
    let path = d.path().join("sessions.redb");
    let good = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for at in [64 + 8, 64 + 40, 192 + 8, 192 + 40] {
        let mut bytes = good.clone();
        // Mark the root present and give its page number the largest order.
        bytes[at - 8 + 1] = 1;
        bytes[at - 8 + 2] = 1;
        bytes[at + 7] |= 0b1111_1000;
        std::fs::write(&path, &bytes).unwrap();
        match PersistentStore::open(builder(&clock), PersistOptions::new(d.path(), secret(1))) {
            Err(PersistError::Corrupt(_)) => refused += 1,
            Ok(s) => {
                assert_eq!(s.store().len(), 1, "at {at}: opened without its session");
                s.crash();
            }
            Err(e) => panic!("at {at}: {e:?}"),
        }
    }
    assert!(refused >= 1, "no damaged root was refused");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(open(d.path(), &clock).store().len(), 1);
}

#[test]
fn concurrent_sign_ins_are_all_durable() {
    let d = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = Arc::new(open(d.path(), &clock));
    let held: Vec<(String, String, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|t| {
                let s = &s;
                sc.spawn(move || {
                    (0..20)
                        .map(|i| {
                            let uid = format!("t{t}-{i}@x");
                            let c = s.issue(&uid).unwrap();
                            let (client, token) = (
                                c.client().as_str().to_owned(),
                                c.token().as_str().to_owned(),
                            );
                            (uid, client, token)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    Arc::into_inner(s).unwrap().crash();
    let s = open(d.path(), &clock);
    assert_eq!(s.store().len(), held.len());
    for (uid, client, token) in &held {
        assert!(s.authenticate(uid, client, token).is_ok());
    }
}

#[test]
fn bad_input_is_refused_before_any_write() {
    let d = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(d.path(), &clock);
    assert!(matches!(s.issue(""), Err(BackendError::Refused(_))));
    assert!(matches!(
        s.revoke("a@x", "not a client"),
        Err(BackendError::Refused(_))
    ));
    assert_eq!(s.revoke_user("nobody@x").unwrap(), 0);
    let _ = Policy::clone(s.store().policy());
}

#[test]
fn a_signed_out_sessions_stream_is_never_reused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let one_shard = || {
        PersistentStore::open(
            Store::builder().clock(clock.clone()).shards(1),
            PersistOptions::new(dir.path(), secret(1)),
        )
        .unwrap()
    };
    let s = one_shard();
    let gone = sign_in(&s, "a@x");
    assert!(s.revoke(&gone.uid, &gone.client).unwrap());
    s.crash();
    // The file holds no session now, but the stream was handed out: a new session
    // must not get it (its T(0) would be the signed-out session's).
    let s = one_shard();
    let fresh = sign_in(&s, "a@x");
    assert_ne!(fresh.tokens[0], gone.tokens[0]);
}

#[test]
fn close_compacts_the_file_and_keeps_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    // One commit per sign-in: each leaves free pages behind in redb's file.
    let mut held: Vec<Held> = (0..2_000)
        .map(|i| sign_in(&s, &format!("c{i}@x")))
        .collect();
    for h in held.iter_mut().step_by(3) {
        rotate(&s, h, &clock);
    }
    s.checkpoint().unwrap();
    let path = dir.path().join("sessions.redb");
    let before = std::fs::metadata(&path).unwrap().len();
    s.close().unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after < before,
        "close left the file at {after} of {before} bytes"
    );
    let s = open(dir.path(), &clock);
    assert_eq!(s.store().len(), held.len());
    for h in held.iter_mut() {
        rotate(&s, h, &clock);
    }
}
