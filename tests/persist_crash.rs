//! The durable store under SIGKILL: a child process (this test binary, re-run in child
//! mode) signs in, rotates, signs out and evicts in a loop, reporting each outcome on
//! its stdout as soon as the store confirmed it; the parent kills it at a random moment,
//! reopens the file, and checks every session the child confirmed: signed-in ones
//! work with the last token the child received, signed-out and evicted ones stay out.
//! 120 rounds.
//!
//! The child announces each step that can end a session ("o" before a sign-out, "i"
//! before a sign-in that may evict) so a kill between the store's confirmation and the
//! report leaves the parent unsure rather than wrong. A kill between a rotation and its
//! report leaves the parent with the previous token, which the batch window (60 s here)
//! still accepts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton::{Builder, PersistOptions, PersistentStore, Rejection, Secret, Store, SystemClock};

const ROUNDS: usize = 120;
const CHILD: &str = "BATON_CRASH_CHILD_DIR";

fn builder() -> Builder<SystemClock> {
    Store::builder()
        .batch_window(Duration::from_secs(60))
        .max_clients_per_user(2)
        .shards(4)
}

fn options(dir: &str) -> PersistOptions {
    PersistOptions::new(
        dir,
        Secret::new(b"crash test secret, 32 bytes long".to_vec()).unwrap(),
    )
    .checkpoint_interval(Duration::from_millis(20))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn say(line: String) {
    // One write per line: a kill never leaves half a line but as the last one.
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

/// The child: runs until killed.
#[test]
fn child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let round: u64 = std::env::var("BATON_CRASH_ROUND").unwrap().parse().unwrap();
    let mut store = PersistentStore::open(builder(), options(&dir)).unwrap();
    let mut rng = Rng(round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // (uid, client, token) of the sessions this child holds.
    let mut held: Vec<(String, String, String)> = Vec::new();
    // After libtest's own "test child ... ", on a line of its own.
    say("\nBATON-READY\n".into());
    loop {
        match rng.below(10) {
            0..=2 => {
                let uid = format!("r{round}-u{}@x", rng.below(4));
                say(format!("i {uid}\n"));
                let c = store.issue(&uid).unwrap();
                let client = c.client().as_str().to_owned();
                let mut line = format!("I {uid} {client} {}\n", c.token().as_str());
                let live: Vec<String> = store
                    .sessions(&uid)
                    .unwrap()
                    .iter()
                    .map(|s| s.client.as_str().to_owned())
                    .collect();
                held.retain(|(u, cl, _)| {
                    let kept = *u != uid || live.contains(cl);
                    if !kept {
                        line.push_str(&format!("E {u} {cl}\n"));
                    }
                    kept
                });
                line.push_str(&format!("e {uid}\n"));
                held.push((uid, client, String::new()));
                let t = line
                    .lines()
                    .next()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .to_owned();
                held.last_mut().unwrap().2 = t;
                say(line);
            }
            3 if !held.is_empty() => {
                let i = rng.below(held.len() as u64) as usize;
                let (uid, client, _) = held.swap_remove(i);
                say(format!("o {uid} {client}\n"));
                assert!(store.revoke(&uid, &client).unwrap());
                say(format!("O {uid} {client}\n"));
            }
            // A clean restart now and then, so that some kills land in `close`: its
            // final checkpoint or the compaction after it.
            9 if rng.below(4) == 0 => {
                store.close().unwrap();
                store = PersistentStore::open(builder(), options(&dir)).unwrap();
            }
            _ if !held.is_empty() => {
                let i = rng.below(held.len() as u64) as usize;
                // Bursts of rotations, some past CHECKPOINT_AHEAD.
                let n = if rng.below(20) == 0 {
                    300
                } else {
                    1 + rng.below(5)
                };
                for _ in 0..n {
                    let (uid, client, token) = &mut held[i];
                    let r = store.authenticate(uid, client, token).unwrap();
                    *token = r.credentials().token().as_str().to_owned();
                    say(format!("R {uid} {client} {token}\n"));
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Live(String),
    Out,
    /// A sign-out or eviction may or may not have happened; the last token if not.
    Unsure(String),
}

#[test]
fn sigkill_at_random_moments_loses_nothing_confirmed() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let exe = std::env::current_exe().unwrap();
    let mut sessions: HashMap<(String, String), Status> = HashMap::new();
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1);
    let started = Instant::now();
    let (mut live_checked, mut out_checked) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(CHILD, &dir_s)
            .env("BATON_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // Wait for the child's store to be open, then let it run a random while.
        let mut line = String::new();
        while line != "BATON-READY\n" {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "round {round}: the child did not start");
        }
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            stdout.read_to_string(&mut all).unwrap();
            all
        });
        std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        child.kill().unwrap();
        child.wait().unwrap();
        let report = reader.join().unwrap();
        let complete = match report.rfind('\n') {
            Some(i) => &report[..=i],
            None => "",
        };
        for line in complete.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let key = |f: &[&str]| (f[1].to_owned(), f[2].to_owned());
            match f[0] {
                "i" => {
                    for ((u, _), st) in sessions.iter_mut() {
                        if u == f[1] {
                            if let Status::Live(t) = st {
                                *st = Status::Unsure(t.clone());
                            }
                        }
                    }
                }
                "I" => {
                    sessions.insert(key(&f), Status::Live(f[3].to_owned()));
                }
                "E" => {
                    sessions.insert(key(&f), Status::Out);
                }
                "e" => {
                    for ((u, _), st) in sessions.iter_mut() {
                        if u == f[1] {
                            if let Status::Unsure(t) = st {
                                *st = Status::Live(t.clone());
                            }
                        }
                    }
                }
                "R" => {
                    sessions.insert(key(&f), Status::Live(f[3].to_owned()));
                }
                "o" => {
                    let st = sessions.get_mut(&key(&f)).unwrap();
                    if let Status::Live(t) = st {
                        *st = Status::Unsure(t.clone());
                    }
                }
                "O" => {
                    sessions.insert(key(&f), Status::Out);
                }
                other => panic!("round {round}: unknown report {other:?}"),
            }
        }
        // Restart and check every confirmed session.
        let store = PersistentStore::open(builder(), options(&dir_s))
            .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
        for ((uid, client), st) in sessions.iter_mut() {
            let token = match st {
                Status::Live(t) | Status::Unsure(t) => t.clone(),
                Status::Out => {
                    // Any well-formed token: a session that is out answers Unknown.
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()
                }
            };
            let r = store.authenticate(uid, client, &token);
            match (&*st, r) {
                (Status::Live(_) | Status::Unsure(_), Ok(next)) => {
                    live_checked += 1;
                    *st = Status::Live(next.credentials().token().as_str().to_owned());
                }
                (Status::Out | Status::Unsure(_), Err(Rejection::UnknownSession)) => {
                    out_checked += 1;
                    *st = Status::Out;
                }
                (st, r) => panic!("round {round}: {uid} {client} was {st:?}, answered {r:?}"),
            }
        }
        store.close().unwrap();
    }
    eprintln!(
        "{ROUNDS} kills in {:?}: {live_checked} live and {out_checked} ended sessions checked",
        started.elapsed()
    );
    assert!(live_checked > ROUNDS && out_checked > ROUNDS / 2);
}
