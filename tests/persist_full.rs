//! A full disk, for real: the file size limit (`RLIMIT_FSIZE`, what a quota or a full
//! filesystem looks like to a writer: `write` fails with EFBIG, SIGXFSZ ignored) is set
//! to the session file's size, so the first commit that must grow it fails. Sign-ins
//! then fail cleanly as `Unavailable` (the demo's 503), signed-in sessions keep
//! rotating in memory, and once the limit is lifted sign-ins work again; after a
//! restart every confirmed session is there. Its own test binary: the limit is per
//! process.
#![allow(unsafe_code)]

use std::time::Duration;

use baton::{Authenticated, BackendError, PersistOptions, PersistentStore, Secret, Store};

fn set_file_size_limit(bytes: Option<u64>) {
    // SAFETY: plain system calls on this process's own limits and signal disposition,
    // with valid pointers to locals; no memory is shared with them.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.unwrap_or(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[test]
fn a_full_disk_fails_sign_ins_cleanly_and_keeps_sessions_rotating() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        PersistOptions::new(dir.path(), Secret::new(vec![3u8; 32]).unwrap())
            .checkpoint_interval(Duration::from_millis(50))
    };
    let store = PersistentStore::open(Store::builder(), options()).unwrap();
    type Held = Vec<(String, String, String)>;
    let mut held: Held = Vec::new();
    let sign_in =
        |held: &mut Held, store: &PersistentStore, uid: String| -> Result<(), BackendError<_>> {
            let c = store.issue(&uid)?;
            let (client, token) = (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            );
            held.push((uid, client, token));
            Ok(())
        };
    for i in 0..50 {
        sign_in(&mut held, &store, format!("before-{i}@example.com")).unwrap();
    }
    store.checkpoint().unwrap();
    let size = std::fs::metadata(dir.path().join("sessions.redb"))
        .unwrap()
        .len();
    set_file_size_limit(Some(size));

    let mut failed = None;
    let mut refused_uids = Vec::new();
    for i in 0..200_000 {
        let uid = format!("while-full-{i}@example.com");
        match sign_in(&mut held, &store, uid.clone()) {
            Ok(()) => {}
            Err(e) => {
                failed = Some(e);
                refused_uids.push(uid);
                break;
            }
        }
    }
    let failed = failed.expect("a file that cannot grow must fill up");
    let BackendError::Unavailable(why) = &failed else {
        panic!("expected Unavailable, got {failed:?}");
    };
    assert!(
        why.detail().contains("session database"),
        "{}",
        why.detail()
    );
    let confirmed = held.len();
    // The failed sign-in was undone.
    assert_eq!(store.store().len(), confirmed);
    // Later attempts (the writer reopens the file each time) either confirm a durable
    // sign-in or fail the same clean way; failures are undone.
    let mut refused = 1;
    for i in 0..20 {
        let uid = format!("retry-{i}@example.com");
        match sign_in(&mut held, &store, uid.clone()) {
            Ok(()) => {}
            Err(BackendError::Unavailable(_)) => {
                refused += 1;
                refused_uids.push(uid);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(store.store().len(), held.len());
    eprintln!("{confirmed} sign-ins fit; then {refused} of 21 refused");
    // Signed-in clients keep working, in memory.
    for (uid, client, token) in held.iter_mut().step_by(7) {
        let r = store.authenticate(uid, client, token);
        assert!(matches!(r, Ok(Authenticated::Rotated(_))), "{r:?}");
        *token = r.unwrap().credentials().token().as_str().to_owned();
    }

    // Space is back: the writer reopens the file and sign-ins work again.
    set_file_size_limit(None);
    sign_in(&mut held, &store, "after@example.com".into()).unwrap();
    store.close().unwrap();

    let store = PersistentStore::open(Store::builder(), options()).unwrap();
    assert_eq!(store.store().len(), held.len());
    for (uid, client, token) in &held {
        let r = store.authenticate(uid, client, token);
        assert!(r.is_ok(), "{uid}: {r:?}");
    }
    // A refused sign-in never comes back.
    for uid in &refused_uids {
        assert!(store.sessions(uid).unwrap().is_empty(), "{uid}");
    }
}
