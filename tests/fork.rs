//! A forked child mints client ids its parent does not: the per-thread generators
//! reseed in a new process instead of repeating the parent's stream.
//!
//! Its own binary without the test harness, so the process forks while it has one
//! thread (the harness's threads could hold a lock the child would then wait on).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use baton::Store;

const IDS: usize = 4;

fn mint(store: &Store, who: &str) -> Vec<String> {
    (0..IDS)
        .map(|i| {
            let uid = format!("{who}{i}@example.com");
            let c = store.issue(&uid).unwrap();
            c.client().as_str().to_owned()
        })
        .collect()
}

#[allow(unsafe_code)]
fn main() {
    let store = Store::builder().build().unwrap();
    // The parent's generator exists and has drawn before the fork.
    mint(&store, "before");
    let (mut parent_end, mut child_end) = UnixStream::pair().unwrap();

    // SAFETY: the process has one thread, so the child inherits no lock held by
    // another thread; it only mints, writes to a socket and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ids = mint(&store, "child").join("\n");
        let ok = child_end.write_all(ids.as_bytes()).is_ok();
        // SAFETY: `_exit` ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(child_end);
    let mine = mint(&store, "parent");
    let mut theirs = String::new();
    parent_end.read_to_string(&mut theirs).unwrap();
    let mut status = 0;
    // SAFETY: waits for the child this process forked, writing into a local.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );

    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(theirs.len(), IDS, "the child's ids: {theirs:?}");
    for id in &theirs {
        assert!(
            !mine.iter().any(|m| m == id),
            "the child minted the parent's client id {id}"
        );
    }
    println!("fork: the child's {IDS} client ids differ from the parent's");
}
