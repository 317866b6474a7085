//! The Redis backend on a real Redis Cluster, over TLS and behind a password (issue 16):
//! users on every shard, a primary killed (failover), a primary that hangs
//! (`DEBUG SLEEP`) and one that is paused (`SIGSTOP`, a partition of one node), each
//! briefly (no failover) and for longer than the node timeout (a failover); a TLS
//! certificate that does and does not chain to the CA given; a wrong or missing
//! password, and a password changed under a connected store; a store built lazily
//! before its Redis exists. Faults answer `Unavailable` (503) within a bound, never a
//! refusal (401), and the same store recovers by itself.
//!
//! Needs the rig `.ci/redis-cluster.sh` starts (`bash .ci/redis-cluster.sh` runs these):
//! `BATON_REDIS_CLUSTER_URL`, `BATON_REDIS_CLUSTER_PORTS` and `BATON_REDIS_CLUSTER_DIR`
//! (each node's `PORT/redis.conf` and `PORT/redis.pid`: the fault tests kill, pause and
//! restart nodes by them); `BATON_REDIS_TLS_URL`, `BATON_REDIS_TLS_CA`,
//! `BATON_REDIS_TLS_WRONG_CA`; `BATON_REDIS_PASSWORD_URL` and `BATON_REDIS_PASSWORD`;
//! `BATON_REDIS_LAZY_PORT` (a free port: the lazy test starts its own `redis-server`
//! there, `BATON_REDIS_SERVER` or `PATH`'s). Without them each test says it is skipped
//! and passes. The tests run one at a time whatever `--test-threads` (they share the
//! rig, and the fault tests take nodes down); each fault test waits for a healthy
//! cluster before and after.
//!
//! By hand, on ports a CI run does not use:
//! `BATON_CLUSTER_PORT=7200 BATON_REDIS_TLS_PORT=6495 BATON_REDIS_PASSWORD_PORT=6496
//! BATON_REDIS_LAZY_PORT=6497 bash .ci/redis-cluster.sh run cargo test --release
//! --features redis --test redis_cluster -- --test-threads 1`

mod redis_common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::{BackendError, ManualClock, RedisBuildError, RedisStore, Rejection, Store};

use redis_common::{fresh_prefix, runtime, token_of};

const SECRET: &[u8; 32] = b"cluster secret, 32 bytes long...";
/// The store's timeout in the fault tests.
const TIMEOUT: Duration = Duration::from_millis(500);
/// The longest one call may take in a fault test: the script's timeout, then `WAIT`'s
/// (the timeout and 200 ms), and generous slack for a loaded machine. A hang detector,
/// not a performance bound.
const BOUND: Duration = Duration::from_millis(2 * 500 + 200 + 2000);
/// The longest a failover, a restart or a recovery may take (node timeout 1 s).
const RECOVERY: Duration = Duration::from_secs(40);

/// The tests that take nodes down, or change the password server, run one at a time
/// (so does the rest of this file: they share the rig), whatever `--test-threads`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Skips the test (passing) unless every variable named is set.
macro_rules! needs {
    ($($var:literal),+) => {
        $(
            if std::env::var_os($var).is_none() {
                eprintln!(concat!("skipped: ", $var, " is not set (bash .ci/redis-cluster.sh runs these)"));
                return;
            }
        )+
    };
}

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run .ci/redis-cluster.sh"))
}

/// The cluster the rig started: its nodes, asked one at a time over plain connections.
struct Cluster {
    ports: Vec<u16>,
    dir: PathBuf,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct Node {
    port: u16,
    primary: bool,
    /// Flagged `fail` or `fail?` by the node asked.
    failing: bool,
    /// Has slots (a primary serving some of the keyspace).
    serving: bool,
}

impl Cluster {
    fn from_env() -> Self {
        let ports = env("BATON_REDIS_CLUSTER_PORTS")
            .split(',')
            .map(|p| p.parse().expect("BATON_REDIS_CLUSTER_PORTS: a port list"))
            .collect();
        Cluster {
            ports,
            dir: env("BATON_REDIS_CLUSTER_DIR").into(),
        }
    }

    fn admin(port: u16) -> redis::RedisResult<redis::Connection> {
        let con = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
            .get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(con)
    }

    fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        cmd.query(&mut Self::admin(port)?)
    }

    /// `CLUSTER NODES` as `port` sees it.
    fn nodes_seen_by(port: u16) -> redis::RedisResult<Vec<Node>> {
        let text: String = Self::query(port, redis::cmd("CLUSTER").arg("NODES"))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let addr = f.get(1)?;
                let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let flags = f.get(2)?;
                Some(Node {
                    port,
                    primary: flags.split(',').any(|x| x == "master"),
                    failing: flags.split(',').any(|x| x == "fail" || x == "fail?"),
                    serving: f.len() > 8,
                })
            })
            .collect())
    }

    /// The primaries serving slots, as the first node that answers sees them.
    fn primaries(&self) -> Vec<u16> {
        for &p in &self.ports {
            if let Ok(nodes) = Self::nodes_seen_by(p) {
                let mut ps: Vec<u16> = nodes
                    .iter()
                    .filter(|n| n.primary && n.serving && !n.failing)
                    .map(|n| n.port)
                    .collect();
                ps.sort_unstable();
                return ps;
            }
        }
        panic!("no cluster node answers");
    }

    /// Every node answers `cluster_state:ok`, sees three serving primaries and three
    /// replicas and nothing failing, and every replica's link to its primary is up.
    fn healthy(&self) -> bool {
        self.ports.iter().all(|&p| {
            let ok = Self::query::<String>(p, redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|i| i.contains("cluster_state:ok"));
            let nodes = Self::nodes_seen_by(p).unwrap_or_default();
            let replication =
                Self::query::<String>(p, redis::cmd("INFO").arg("replication")).unwrap_or_default();
            let in_sync = replication.contains("role:master")
                || replication.contains("master_link_status:up");
            ok && in_sync
                && nodes.len() == 6
                && nodes.iter().all(|n| !n.failing)
                && nodes.iter().filter(|n| n.primary && n.serving).count() == 3
                && nodes.iter().filter(|n| !n.primary).count() == 3
        })
    }

    fn wait_healthy(&self) {
        let start = Instant::now();
        while !self.healthy() {
            assert!(
                start.elapsed() < RECOVERY,
                "the cluster is not healthy after {RECOVERY:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of the node on `port`, from its pid file, if that process is still a
    /// redis-server on that port (a killed node's pid may be anyone's now).
    fn pid(&self, port: u16) -> Option<String> {
        let file = self.dir.join(port.to_string()).join("redis.pid");
        let pid = std::fs::read_to_string(file).ok()?.trim().to_owned();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("redis-server") && cmdline.contains(&format!(":{port}"))).then_some(pid)
    }

    fn signal(&self, port: u16, sig: &str) {
        let pid = self
            .pid(port)
            .unwrap_or_else(|| panic!("node {port} is not running"));
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig} node {port}");
    }

    fn answers(port: u16) -> bool {
        Self::query::<String>(port, &redis::cmd("PING")).is_ok()
    }

    /// Kills the node at once (no shutdown: as a crash), and waits until it is gone.
    fn kill(&self, port: u16) {
        self.signal(port, "-KILL");
        let start = Instant::now();
        while Self::answers(port) {
            assert!(start.elapsed() < RECOVERY, "node {port} still answers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a killed node again from its config and `nodes.conf`: it rejoins the
    /// cluster (as a replica if its replica took over meanwhile).
    fn restart(&self, port: u16) {
        let conf = self.dir.join(port.to_string()).join("redis.conf");
        let bin = std::env::var("BATON_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let ok = Command::new(bin)
            .arg(&conf)
            .stdout(Stdio::null())
            .status()
            .expect("redis-server runs");
        assert!(ok.success(), "node {port} restarts");
        let start = Instant::now();
        while !Self::answers(port) {
            assert!(start.elapsed() < RECOVERY, "node {port} does not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Which primary holds each of `clients`' session keys under `prefix`.
    fn shard_of(&self, prefix: &str, clients: &[String]) -> HashMap<String, u16> {
        let mut at = HashMap::new();
        for port in self.primaries() {
            let keys: Vec<String> =
                Self::query(port, redis::cmd("KEYS").arg(format!("{prefix}:*:s:*")))
                    .expect("KEYS on a primary");
            for key in keys {
                if let Some((_, client)) = key.rsplit_once(":s:") {
                    at.insert(client.to_owned(), port);
                }
            }
        }
        for c in clients {
            assert!(at.contains_key(c), "no primary holds session {c}");
        }
        at
    }
}

/// Puts a node right if a fault test ends early: resumes a paused node, restarts a
/// killed one.
struct Mend<'a> {
    cluster: &'a Cluster,
    port: u16,
}

impl Drop for Mend<'_> {
    fn drop(&mut self) {
        match self.cluster.pid(self.port) {
            Some(pid) => {
                let _ = Command::new("kill").args(["-CONT", &pid]).status();
            }
            None => self.cluster.restart(self.port),
        }
    }
}

fn cluster_store(prefix: &str) -> baton::RedisBuilder {
    RedisStore::builder(&env("BATON_REDIS_CLUSTER_URL"))
        .secret(SECRET)
        .prefix(prefix)
        .timeout(Duration::from_secs(5))
}

/// Sign in `n` users (one session each) and rotate each once; returns (uid, client,
/// current token).
async fn sign_in(s: &RedisStore, what: &str, n: usize) -> Vec<(String, String, String)> {
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let uid = format!("{what}-{i}@example.com");
        let c = s.issue(&uid).await.expect("sign-in");
        let client = c.client().as_str().to_owned();
        let a = s
            .authenticate(&uid, &client, c.token().as_str())
            .await
            .expect("the first token is current");
        assert!(a.is_rotated());
        let token = token_of(&a);
        users.push((uid, client, token));
    }
    users
}

#[test]
fn the_cluster_serves_users_on_every_shard() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    let cluster = Cluster::from_env();
    cluster.wait_healthy();
    let rt = runtime();
    let prefix = fresh_prefix("shards");
    let clock = ManualClock::default();
    let s = rt
        .block_on(
            cluster_store(&prefix)
                .clock(Arc::new(clock.clone()))
                .ttl_grace(Duration::from_secs(600))
                .connect(),
        )
        .expect("the cluster answers");
    rt.block_on(async {
        assert_eq!(s.ping().await, Ok(()));
        assert_eq!(s.live().await, Ok(0));
    });
    let mut users = rt.block_on(sign_in(&s, "shard", 200));
    // Every primary holds some of them.
    let clients: Vec<String> = users.iter().map(|u| u.1.clone()).collect();
    let at = cluster.shard_of(&prefix, &clients);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    for p in &primaries {
        let here = at.values().filter(|&&q| q == *p).count();
        assert!(here >= 20, "primary {p} holds {here} of 200 users");
    }
    // A user's keys all hash to one slot: the index, every session and the live set.
    let one = &users[0];
    let port = at[&one.1];
    let keys: Vec<String> = Cluster::query(port, redis::cmd("KEYS").arg(format!("{prefix}:*")))
        .expect("KEYS on a primary");
    let session = keys
        .iter()
        .find(|k| k.ends_with(&one.1))
        .expect("its session");
    let tag = &session[..session.find('}').expect("a hash tag") + 1];
    let slot = |k: &str| -> i64 {
        Cluster::query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(k)).expect("KEYSLOT")
    };
    let same_tag: Vec<&String> = keys.iter().filter(|k| k.starts_with(tag)).collect();
    assert!(
        same_tag.iter().any(|k| k.ends_with(":live")),
        "{same_tag:?}"
    );
    assert!(same_tag.iter().any(|k| k.ends_with(":i")), "{same_tag:?}");
    for k in &same_tag {
        assert_eq!(slot(k), slot(session), "{k}");
    }

    rt.block_on(async {
        assert_eq!(s.live().await, Ok(200));
        // Every user rotates again, after the batch window, on whichever shard; past
        // the window the token each retired is a replay everywhere.
        clock.advance(Duration::from_secs(10));
        let mut retired = Vec::with_capacity(users.len());
        for (uid, client, token) in &mut users {
            let a = s.authenticate(uid, client, token).await.expect("rotates");
            assert!(a.is_rotated(), "{uid}");
            retired.push(std::mem::replace(token, token_of(&a)));
        }
        clock.advance(Duration::from_secs(10));
        for ((uid, client, _), old) in users.iter().zip(&retired) {
            assert_eq!(
                s.authenticate(uid, client, old).await,
                Err(BackendError::Refused(Rejection::Replayed)),
                "{uid}"
            );
            assert_eq!(s.sessions(uid).await.expect("sessions")[0].generation, 2);
        }
        let (uid, client, token) = &users[0];
        let second = s.issue(uid).await.expect("a second device");
        assert_eq!(s.sessions(uid).await.expect("sessions").len(), 2);
        assert_eq!(s.live().await, Ok(201));
        assert_eq!(s.revoke_user(uid).await, Ok(2));
        assert_eq!(
            s.authenticate(uid, client, token).await,
            Err(BackendError::Refused(Rejection::UnknownSession))
        );
        assert_eq!(
            s.authenticate(uid, second.client().as_str(), second.token().as_str())
                .await,
            Err(BackendError::Refused(Rejection::UnknownSession))
        );
        assert_eq!(s.sessions(uid).await, Ok(Vec::new()));
        // One sign-out per shard, and live() sums every primary's count.
        let mut out = 0;
        for p in &primaries {
            let (uid, client, _) = users[1..]
                .iter()
                .find(|u| at[&u.1] == *p)
                .expect("a user on every primary");
            assert_eq!(s.revoke(uid, client).await, Ok(true));
            assert_eq!(s.revoke(uid, client).await, Ok(false));
            out += 1;
        }
        assert_eq!(s.live().await, Ok(199 - out));
        for (uid, _, _) in &users {
            s.revoke_user(uid).await.expect("revoke_user");
        }
        assert_eq!(s.live().await, Ok(0));
    });
}

/// What one call of a fault test answered, and how long it took.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    Unavailable(String),
}

/// One round: every user authenticates at once with its current token. An answer
/// is a success (the token it carries becomes current) or `Unavailable`; a refusal,
/// or a call longer than [`BOUND`], fails the test.
async fn round(
    s: &Arc<RedisStore>,
    users: &mut [(String, String, String)],
    on_victim: &[bool],
) -> Vec<Outcome> {
    let tasks: Vec<_> = users
        .iter()
        .zip(on_victim)
        .map(|((uid, client, token), &v)| {
            let (s, uid, client, token) = (s.clone(), uid.clone(), client.clone(), token.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let r = s.authenticate(&uid, &client, &token).await;
                let took = start.elapsed();
                assert!(took < BOUND, "{uid}: {took:?} for {r:?}");
                match r {
                    Ok(a) => (Outcome::Ok, Some(token_of(&a))),
                    Err(BackendError::Unavailable(e)) => {
                        (Outcome::Unavailable(format!("{e} after {took:?}")), None)
                    }
                    Err(e) => panic!(
                        "{uid} (on the faulty shard: {v}): refused during a fault after {took:?}: {e:?}"
                    ),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(users.len());
    for (t, user) in tasks.into_iter().zip(users.iter_mut()) {
        let (o, token) = t.await.expect("a call panicked");
        if let Some(token) = token {
            user.2 = token;
        }
        outcomes.push(o);
    }
    outcomes
}

/// A fault on one primary: users elsewhere keep being answered, the primary's users
/// answer success or `Unavailable` (never a refusal), within [`BOUND`] each. `during`
/// starts the fault and returns whether it is over (`recover` is called once it is,
/// then rounds go on until everyone succeeds). Afterwards every token the rounds
/// handed out is the one that works, and the sessions signed out before stay out.
fn one_primary_fails(
    what: &str,
    replicas: usize,
    start_fault: impl FnOnce(&Cluster, u16),
    fault_over: impl Fn(&Cluster, u16, Instant) -> bool,
    end_fault: impl FnOnce(&Cluster, u16),
) -> u16 {
    let cluster = Cluster::from_env();
    cluster.wait_healthy();
    let rt = runtime();
    let prefix = fresh_prefix(what);
    let s = Arc::new(
        rt.block_on(
            RedisStore::builder(&env("BATON_REDIS_CLUSTER_URL"))
                .secret(SECRET)
                .prefix(&prefix)
                .replicas(replicas)
                .connections(2)
                .timeout(TIMEOUT)
                // Long enough that a retried rotation whose answer was lost is batched.
                .settings(Store::builder().batch_window(Duration::from_secs(60)))
                .connect(),
        )
        .expect("the cluster answers"),
    );
    let mut users = rt.block_on(sign_in(&s, what, 45));
    let clients: Vec<String> = users.iter().map(|u| u.1.clone()).collect();
    let at = cluster.shard_of(&prefix, &clients);
    let victim = cluster.primaries()[0];
    // Two users on each shard sign out; the rest go on.
    let mut signed_out = Vec::new();
    for p in cluster.primaries() {
        for _ in 0..2 {
            let i = users
                .iter()
                .position(|u| at[&u.1] == p)
                .expect("users on every shard");
            let u = users.remove(i);
            assert_eq!(rt.block_on(s.revoke(&u.0, &u.1)), Ok(true));
            signed_out.push(u);
        }
    }
    let on_victim: Vec<bool> = users.iter().map(|u| at[&u.1] == victim).collect();
    let victims = on_victim.iter().filter(|&&v| v).count();
    assert!(victims >= 3, "{victims} users on {victim}");

    let check = |outcomes: &[Outcome], phase: &str| -> usize {
        let mut unavailable = 0;
        for (o, &v) in outcomes.iter().zip(&on_victim) {
            if let Outcome::Unavailable(e) = o {
                assert!(
                    v,
                    "{phase}: a user on a healthy shard was not answered: {e}"
                );
                unavailable += 1;
            }
        }
        unavailable
    };
    let mend = Mend {
        cluster: &cluster,
        port: victim,
    };
    rt.block_on(async {
        // Before: everyone is answered.
        let o = round(&s, &mut users, &on_victim).await;
        assert_eq!(check(&o, "before"), 0);
        start_fault(&cluster, victim);
        let began = Instant::now();
        let mut saw_unavailable = 0;
        let mut rounds = 0;
        while !fault_over(&cluster, victim, began) {
            let o = round(&s, &mut users, &on_victim).await;
            saw_unavailable += check(&o, "during");
            rounds += 1;
            assert!(began.elapsed() < RECOVERY, "the fault did not end");
        }
        assert!(
            saw_unavailable > 0,
            "the fault was felt: {rounds} rounds, none unavailable"
        );
        end_fault(&cluster, victim);
        // After: the same store answers everyone again, without being rebuilt.
        let recovering = Instant::now();
        loop {
            let o = round(&s, &mut users, &on_victim).await;
            if check(&o, "after") == 0 {
                break;
            }
            assert!(
                recovering.elapsed() < RECOVERY,
                "users on {victim} still unavailable after {RECOVERY:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    drop(mend);
    cluster.wait_healthy();
    rt.block_on(async {
        // Every token a round handed out is current: presenting it answers (batched,
        // within the window); the sign-outs stand.
        let o = round(&s, &mut users, &on_victim).await;
        assert_eq!(check(&o, "healthy"), 0);
        for (uid, client, token) in &signed_out {
            assert_eq!(
                s.authenticate(uid, client, token).await,
                Err(BackendError::Refused(Rejection::UnknownSession)),
                "{uid} signed out before the fault"
            );
        }
        assert_eq!(s.live().await, Ok(users.len() as u64));
    });
    victim
}

/// Kill -9 a primary mid-run, with every write acknowledged by a replica: users on
/// the other shards keep being answered; the dead shard's users answer `Unavailable`
/// until the replica is promoted and (the promoted primary having no replica left
/// to acknowledge writes) the old primary is back as its replica; then the same
/// store serves them, and nothing confirmed before the kill is lost.
#[test]
fn a_killed_primary_fails_over_and_nothing_confirmed_is_lost() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    one_primary_fails(
        "kill",
        1,
        |c, p| c.kill(p),
        // Over once the replica has taken the slots and the old primary is back.
        |c, p, began| {
            let promoted = !c.primaries().contains(&p) && c.primaries().len() == 3;
            if promoted && !Cluster::answers(p) {
                eprintln!("promoted after {:?}", began.elapsed());
                c.restart(p);
            }
            promoted && Cluster::answers(p)
        },
        |_, _| {},
    );
}

/// Runs `fault` on a thread of its own: the fault is over once it returns.
struct Timed(std::sync::Mutex<Option<std::thread::JoinHandle<()>>>);

impl Timed {
    fn new() -> Self {
        Timed(std::sync::Mutex::new(None))
    }

    fn start(&self, fault: impl FnOnce() + Send + 'static) {
        *self.0.lock().unwrap() = Some(std::thread::spawn(fault));
        // Let it begin.
        std::thread::sleep(Duration::from_millis(50));
    }

    fn over(&self) -> bool {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|t| t.is_finished())
    }

    fn join(&self) {
        let t = self.0.lock().unwrap().take().expect("started");
        t.join().expect("the fault's thread");
    }
}

/// `DEBUG SLEEP` on `port` from a connection of its own.
fn debug_sleep(port: u16, seconds: f64) {
    let mut con = Cluster::admin(port).expect("the primary answers");
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r: String = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(seconds)
        .query(&mut con)
        .expect("DEBUG SLEEP (enable-debug-command local)");
    assert_eq!(r, "OK");
}

/// A primary that hangs for less than the node timeout (`DEBUG SLEEP 0.6`; the
/// cluster does not fail it over): its users answer `Unavailable` within the bound
/// while it hangs, the others are answered throughout, afterwards everyone is.
#[test]
fn a_briefly_hung_primary_answers_unavailable_then_recovers() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    let fault = Timed::new();
    let victim = one_primary_fails(
        "brief-hang",
        1,
        |_, p| fault.start(move || debug_sleep(p, 0.6)),
        |_, _, _| fault.over(),
        |_, _| fault.join(),
    );
    let cluster = Cluster::from_env();
    assert!(
        cluster.primaries().contains(&victim),
        "the cluster failed {victim} over: the hang was too long for this machine"
    );
}

/// A primary paused for less than the node timeout (`SIGSTOP`, 0.6 s, `SIGCONT`: a
/// short partition): as for a hang.
#[test]
fn a_briefly_paused_primary_answers_unavailable_then_recovers() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    let fault = Timed::new();
    let victim = one_primary_fails(
        "brief-pause",
        1,
        |c, p| {
            let pid = c.pid(p).expect("the primary runs");
            fault.start(move || {
                let kill = |sig: &str| {
                    let ok = Command::new("kill").args([sig, &pid]).status();
                    assert!(ok.expect("kill runs").success(), "kill {sig}");
                };
                kill("-STOP");
                std::thread::sleep(Duration::from_millis(600));
                kill("-CONT");
            })
        },
        |_, _, _| fault.over(),
        |_, _| fault.join(),
    );
    let cluster = Cluster::from_env();
    assert!(
        cluster.primaries().contains(&victim),
        "the cluster failed {victim} over: the pause was too long for this machine"
    );
}

/// `DEBUG SLEEP 3` on a primary, longer than the node timeout: the cluster fails it
/// over meanwhile, and the old primary, on waking, runs the calls queued while it
/// slept before it learns it was demoted, then becomes a replica and loses them.
/// Its users answer `Unavailable` within the bound, the others are answered
/// throughout, and afterwards everyone is, with no confirmed answer lost.
#[test]
fn a_hung_primary_answers_unavailable_then_recovers() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    let fault = Timed::new();
    one_primary_fails(
        "hang",
        1,
        |_, p| fault.start(move || debug_sleep(p, 3.0)),
        |_, _, _| fault.over(),
        |_, _| fault.join(),
    );
}

/// A partition of one primary (`SIGSTOP` for 4 s: the cluster fails it over): its
/// users answer `Unavailable` within the bound, the others are answered throughout;
/// after `SIGCONT` the node rejoins as a replica and everyone is answered.
#[test]
fn a_paused_primary_answers_unavailable_then_recovers() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    one_primary_fails(
        "pause",
        1,
        |c, p| c.signal(p, "-STOP"),
        |_, _, began| began.elapsed() > Duration::from_secs(4),
        |c, p| c.signal(p, "-CONT"),
    );
}

fn tls_store(url: &str, ca: Option<&str>) -> baton::RedisBuilder {
    let b = RedisStore::builder(url)
        .secret(SECRET)
        .prefix(&fresh_prefix("tls"))
        .timeout(Duration::from_secs(5));
    match ca {
        Some(ca) => b.ca_file(ca),
        None => b,
    }
}

/// A round trip on a store: sign-in, a rotation, the rotated token current.
async fn round_trip(s: &RedisStore) {
    let uid = "round.trip@example.com";
    let c = s.issue(uid).await.expect("sign-in");
    let a = s
        .authenticate(uid, c.client().as_str(), c.token().as_str())
        .await
        .expect("authenticate");
    assert!(a.is_rotated());
    assert_eq!(s.sessions(uid).await.expect("sessions")[0].generation, 1);
    assert_eq!(s.revoke_user(uid).await, Ok(1));
}

#[test]
fn tls_with_the_right_ca_works_and_a_mismatch_is_rejected() {
    needs!(
        "BATON_REDIS_TLS_URL",
        "BATON_REDIS_TLS_CA",
        "BATON_REDIS_TLS_WRONG_CA"
    );
    let _serial = serial();
    let rt = runtime();
    let url = env("BATON_REDIS_TLS_URL");
    let (ca, wrong) = (env("BATON_REDIS_TLS_CA"), env("BATON_REDIS_TLS_WRONG_CA"));
    rt.block_on(async {
        let s = tls_store(&url, Some(&ca))
            .connect()
            .await
            .expect("TLS with the CA");
        round_trip(&s).await;
        // The certificate names 127.0.0.1 too (an IP SAN).
        let by_ip = url.replace("localhost", "127.0.0.1");
        assert_ne!(by_ip, url);
        let s = tls_store(&by_ip, Some(&ca)).connect().await.expect("by IP");
        round_trip(&s).await;
        // Another CA, or the system's roots: refused at once, never downgraded.
        for ca in [Some(wrong.as_str()), None] {
            let started = Instant::now();
            let r = tls_store(&url, ca).connect().await;
            assert!(
                matches!(r, Err(RedisBuildError::Rejected(_))),
                "{ca:?}: {:?}",
                r.err()
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        // A CA file that is no certificate is named as such.
        let r = tls_store(&url, Some("/dev/null")).connect().await;
        assert!(matches!(r, Err(RedisBuildError::Tls(_))), "{:?}", r.err());
    });
}

fn password_store(url: &str) -> baton::RedisBuilder {
    RedisStore::builder(url)
        .secret(SECRET)
        .prefix(&fresh_prefix("pw"))
        .connections(2)
        .timeout(TIMEOUT)
}

/// `redis://127.0.0.1:PORT/0` with `:password@` put in.
fn with_password(url: &str, password: &str) -> String {
    url.replacen("redis://", &format!("redis://:{password}@"), 1)
}

#[test]
fn a_wrong_password_is_rejected_and_the_right_one_works() {
    needs!("BATON_REDIS_PASSWORD_URL", "BATON_REDIS_PASSWORD");
    let _serial = serial();
    let rt = runtime();
    let url = env("BATON_REDIS_PASSWORD_URL");
    let password = env("BATON_REDIS_PASSWORD");
    rt.block_on(async {
        // A timeout longer than the client's retry (it answers in about 1.5 s; see
        // the next test).
        let r = password_store(&with_password(&url, "wrong"))
            .timeout(Duration::from_secs(5))
            .connect()
            .await;
        assert!(
            matches!(r, Err(RedisBuildError::Rejected(_))),
            "{:?}",
            r.err()
        );
        let s = password_store(&with_password(&url, &password))
            .connect()
            .await
            .expect("the right password");
        round_trip(&s).await;
    });
}

/// The same at the default timeout (1 s), and at the fault tests' 500 ms.
#[test]
fn a_wrong_password_is_rejected_within_the_default_timeout() {
    needs!("BATON_REDIS_PASSWORD_URL", "BATON_REDIS_PASSWORD");
    let _serial = serial();
    let rt = runtime();
    let url = with_password(&env("BATON_REDIS_PASSWORD_URL"), "wrong");
    for timeout in [Duration::from_secs(1), TIMEOUT] {
        let r = rt.block_on(password_store(&url).timeout(timeout).connect());
        assert!(
            matches!(r, Err(RedisBuildError::Rejected(_))),
            "at {timeout:?}: {:?}",
            r.err()
        );
    }
}

#[test]
fn no_password_where_one_is_required_is_rejected() {
    needs!("BATON_REDIS_PASSWORD_URL", "BATON_REDIS_PASSWORD");
    let _serial = serial();
    let rt = runtime();
    let r = rt.block_on(password_store(&env("BATON_REDIS_PASSWORD_URL")).connect());
    assert!(
        matches!(r, Err(RedisBuildError::Rejected(_))),
        "{:?}",
        r.err()
    );
}

/// A connected store whose password stops working (`CONFIG SET requirepass` and its
/// connections cut) answers `Unavailable`, never a refusal, and recovers by itself
/// once the password is set back.
#[test]
fn a_password_changed_under_a_store_is_unavailable_then_recovers() {
    needs!("BATON_REDIS_PASSWORD_URL", "BATON_REDIS_PASSWORD");
    let _serial = serial();
    let rt = runtime();
    let url = with_password(
        &env("BATON_REDIS_PASSWORD_URL"),
        &env("BATON_REDIS_PASSWORD"),
    );
    let s = rt
        .block_on(password_store(&url).connect())
        .expect("the right password");
    let uid = "password.change@example.com";
    let c = rt.block_on(s.issue(uid)).expect("sign-in");
    let client = c.client().as_str().to_owned();
    let mut token = c.token().as_str().to_owned();
    let mut admin = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("an admin connection");
    let set_password = |admin: &mut redis::Connection, p: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(p)
            .query(admin)
            .expect("CONFIG SET requirepass");
    };
    set_password(&mut admin, "changed-under-the-store");
    // Cut every other client: the store must reconnect, with the old password.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .expect("CLIENT KILL");
    let restore = env("BATON_REDIS_PASSWORD");
    rt.block_on(async {
        for _ in 0..4 {
            let started = Instant::now();
            let r = s.authenticate(uid, &client, &token).await;
            assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
            assert!(
                matches!(r, Err(BackendError::Unavailable(_))),
                "with a stale password: {r:?}"
            );
            assert!(s
                .issue(uid)
                .await
                .is_err_and(|e| matches!(e, BackendError::Unavailable(_))));
        }
    });
    set_password(&mut admin, &restore);
    rt.block_on(async {
        let started = Instant::now();
        loop {
            match s.authenticate(uid, &client, &token).await {
                Ok(a) => {
                    token = token_of(&a);
                    break;
                }
                Err(BackendError::Unavailable(_)) => {
                    assert!(
                        started.elapsed() < RECOVERY,
                        "the store did not recover once the password was set back"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("refused: {e:?}"),
            }
        }
        // The session outlived the outage.
        assert!(s.authenticate(uid, &client, &token).await.is_ok());
        assert_eq!(s.revoke_user(uid).await, Ok(1));
    });
}

/// A redis-server of this test's own, killed when dropped.
struct OwnServer(Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A store built lazily where nothing listens yet: `Unavailable` within the bound,
/// then, once a server starts there, the same store serves.
#[test]
fn a_lazy_store_serves_once_redis_starts() {
    needs!("BATON_REDIS_LAZY_PORT");
    let _serial = serial();
    let port: u16 = env("BATON_REDIS_LAZY_PORT").parse().expect("a port");
    let url = format!("redis://127.0.0.1:{port}/0");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port} already"
    );
    let rt = runtime();
    let s = {
        let _in_runtime = rt.enter();
        RedisStore::builder(&url)
            .secret(SECRET)
            .prefix(&fresh_prefix("lazy"))
            .timeout(TIMEOUT)
            .connect_lazily()
            .expect("no network touched")
    };
    let uid = "lazy@example.com";
    rt.block_on(async {
        for _ in 0..3 {
            let started = Instant::now();
            let r = s.issue(uid).await;
            assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
            assert!(
                matches!(r, Err(BackendError::Unavailable(_))),
                "before redis: {r:?}"
            );
            let started = Instant::now();
            assert!(s.ping().await.is_err());
            assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
        }
    });
    let bin = std::env::var("BATON_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let _server = OwnServer(
        Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (set BATON_REDIS_SERVER?)"),
    );
    rt.block_on(async {
        let started = Instant::now();
        while s.ping().await.is_err() {
            assert!(
                started.elapsed() < RECOVERY,
                "the lazy store never connected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        round_trip(&s).await;
    });
}

/// Any one node, primary or replica, is seed enough: the client finds the rest.
#[test]
fn any_seed_node_is_enough() {
    needs!(
        "BATON_REDIS_CLUSTER_URL",
        "BATON_REDIS_CLUSTER_PORTS",
        "BATON_REDIS_CLUSTER_DIR"
    );
    let _serial = serial();
    let cluster = Cluster::from_env();
    cluster.wait_healthy();
    let rt = runtime();
    for &port in &cluster.ports {
        let s = rt
            .block_on(
                RedisStore::builder(&format!("redis+cluster://127.0.0.1:{port}"))
                    .secret(SECRET)
                    .prefix(&fresh_prefix("seed"))
                    .connect(),
            )
            .unwrap_or_else(|e| panic!("seed {port}: {e}"));
        rt.block_on(round_trip(&s));
    }
}
