//! The demo server on Redis Cluster and TLS, and started before its Redis.
//!
//! - `BATON_REDIS_CLUSTER_URL` (`redis+cluster://H1:P1,...`): two servers on the
//!   cluster agree on every rotation and sign-out, for users on every shard.
//! - The binary started with a Redis URL where nothing listens answers 503 and says so
//!   in its log, then serves once a `redis-server` (started here on the port
//!   `BATON_REDIS_LATE_PORT`, default 6397) is up, with no restart. Needs
//!   `redis-server` on the PATH.
//! - `BATON_REDIS_CLUSTER_URL` again: `--redis-replicas 1` serves (each primary has a
//!   replica), `--redis-replicas 2` answers every write 503 with no token.
//! - `BATON_REDIS_TLS_URL` with `BATON_REDIS_TLS_WRONG_CA` (and `BATON_REDIS_TLS_CA`):
//!   the binary started with the wrong CA exits at once naming the certificate
//!   problem; with the right one it serves.
//!
//! `.ci/redis-cluster.sh` starts the cluster and the TLS server and sets the variables.
//! Without its variable (or program) each test says it is skipped and passes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::{ManualClock, RedisStore, Store};
use baton_demo::signin::{Allowance, Gate, SignInGuard, ThrottlePolicy};
use baton_demo::users::{HashCost, Users};
use baton_demo::AppState;
use common::{Creds, Resp, Server, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "demo cluster secret, 32 bytes ok";
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Users signed in on the cluster: with 1024 buckets over three primaries, the
/// chance that one primary holds none of 40 users is about 3 (2/3)^40, 2e-7.
const USERS: usize = 40;
const PASSWORD: &str = "cluster password";

fn env(test: &str, vars: &[&str]) -> Option<Vec<String>> {
    let values: Option<Vec<String>> = vars.iter().map(|v| std::env::var(v).ok()).collect();
    if values.is_none() {
        println!(
            "{test}: skipped, {} not set (run .ci/redis-cluster.sh)",
            vars.join(" and ")
        );
    }
    values
}

fn email(i: usize) -> String {
    format!("user{i}@example.com")
}

/// A demo server over its own cluster client, knowing [`USERS`] users, with a sign-in
/// throttle that lets them all sign in from one address.
async fn cluster_server(url: &str, prefix: &str) -> Server<RedisStore> {
    let store = RedisStore::builder(url)
        .settings(
            Store::builder()
                .batch_window(BATCH_WINDOW)
                // Short, so that Redis drops what the tests leave behind.
                .token_lifespan(Duration::from_secs(60)),
        )
        .secret(SECRET.as_bytes())
        .prefix(prefix)
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the cluster answers");
    let mut users = Users::new(HashCost::FAST);
    for i in 0..USERS {
        users.add(&email(i), PASSWORD).unwrap();
    }
    let mut state = AppState::with_backend(store, users);
    let plenty = Allowance {
        burst: std::num::NonZeroU32::new(10 * USERS as u32).unwrap(),
        refill: Duration::from_millis(1),
    };
    state.sign_in = Gate {
        guard: SignInGuard::new(ThrottlePolicy {
            per_address: plenty,
            per_account: plenty,
            ..ThrottlePolicy::default()
        }),
        ..Gate::default()
    };
    Server::serving(state, ManualClock::default()).await
}

async fn sign_in<B: baton::Backend + 'static>(s: &Server<B>, email: &str) -> Resp {
    let body = serde_json::json!({ "email": email, "password": PASSWORD }).to_string();
    s.request(
        "POST",
        "/auth/sign_in",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
}

async fn sign_out<B: baton::Backend + 'static>(s: &Server<B>, c: &Creds) -> Resp {
    s.request("DELETE", "/auth/sign_out", &c.headers(), b"")
        .await
}

/// `redis-cli` against one node, its output; panics if it fails.
fn redis_cli(node: &str, args: &[&str]) -> String {
    let (host, port) = node.rsplit_once(':').expect("HOST:PORT");
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs (it created the cluster)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster's primaries (`HOST:PORT`), asked of the first seed node in `url`.
fn primaries(url: &str) -> Vec<String> {
    let hosts = url.split_once("://").map_or(url, |(_, h)| h);
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
    let seed = hosts.split([',', '/']).next().expect("a seed node");
    redis_cli(seed, &["cluster", "nodes"])
        .lines()
        .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master")))
        .filter_map(|l| l.split(' ').nth(1))
        .map(|a| a.split('@').next().unwrap_or(a).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_a_cluster_agree_on_every_rotation_and_sign_out() {
    let test = "two_servers_on_a_cluster_agree_on_every_rotation_and_sign_out";
    let Some(vars) = env(test, &["BATON_REDIS_CLUSTER_URL"]) else {
        return;
    };
    let url = &vars[0];
    let prefix = common::fresh_prefix("cluster");
    let a = cluster_server(url, &prefix).await;
    let b = cluster_server(url, &prefix).await;

    // Half sign in through A, half through B: each server sees the other's.
    let mut c0 = Vec::new();
    for i in 0..USERS {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = sign_in(s, &email(i)).await;
        assert_eq!(r.status, 200, "sign-in {i}: {}", r.text());
        c0.push(r.assert_authenticated());
    }
    assert_eq!(
        b.metric("baton_sessions ").await,
        USERS as u64,
        "B counts every sign-in, from every primary"
    );
    assert_eq!(a.metric("baton_sessions ").await, USERS as u64);
    // Every primary holds some of them: the scripts ran on every shard.
    let primaries = primaries(url);
    assert!(primaries.len() >= 2, "a cluster: {primaries:?}");
    for node in &primaries {
        let keys = redis_cli(node, &["--scan", "--pattern", &format!("{prefix}:*")]);
        assert!(
            keys.lines().any(|k| k.ends_with(":i")),
            "no user's keys on primary {node}: {keys:?}"
        );
    }

    let mut c1 = Vec::new();
    for (i, c) in c0.iter().enumerate() {
        let r = a.get("/api/me", c).await;
        assert_eq!(r.status, 200, "user {i} on A: {}", r.text());
        let next = r.assert_authenticated();
        assert_ne!(next.token, c.token, "A rotated user {i}");
        assert_eq!(next.client, c.client);
        c1.push(next);
    }
    // A precondition, not a timing assertion: every retired token's batch window is
    // over, so it is a replay everywhere.
    tokio::time::sleep(BATCH_WINDOW * 3).await;
    let mut c2 = Vec::new();
    for (i, (old, c)) in c0.iter().zip(&c1).enumerate() {
        let r = b.get("/api/me", old).await;
        assert_eq!(r.status, 401, "user {i}: B took A's retired token: {r:?}");
        r.assert_refused(401);
        let r = b.get("/api/me", c).await;
        assert_eq!(r.status, 200, "user {i} on B: {}", r.text());
        let next = r.assert_authenticated();
        assert_ne!(next.token, c.token, "B rotated A's successor for user {i}");
        c2.push(next);
    }
    tokio::time::sleep(BATCH_WINDOW * 3).await;
    for (i, (old, c)) in c1.iter().zip(&c2).enumerate() {
        let r = a.get("/api/me", old).await;
        assert_eq!(r.status, 401, "user {i}: A took B's retired token: {r:?}");
        // Signed out through one, the session is gone through the other.
        let (by, other) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        let r = sign_out(by, c).await;
        assert_eq!(r.status, 200, "sign-out {i}: {}", r.text());
        assert!(r.header("access-token").is_none(), "{r:?}");
        other.get("/api/me", c).await.assert_refused(401);
        sign_out(other, c).await.assert_refused(404);
    }
    assert_eq!(a.metric("baton_sessions ").await, 0);
    assert_eq!(b.metric("baton_sessions ").await, 0);
    assert_eq!(a.metric("baton_store_up ").await, 1);
}

/// The demo binary, killed and reaped when dropped, with its stderr collected.
struct Demo {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the binary on free loopback ports and waits until it listens.
    fn start(args: &[&str]) -> Demo {
        let child = Command::new(env!("CARGO_BIN_EXE_baton-demo"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env("BATON_REDIS_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // Owned by the guard from here on: a panic below kills and reaps it.
        let mut demo = Demo {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: Arc::new(Mutex::new(String::new())),
        };
        let mut err = BufReader::new(demo.child.stderr.take().unwrap());
        let collected = Arc::clone(&demo.stderr);
        std::thread::spawn(move || loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            collected.lock().unwrap().push_str(&line);
        });
        let mut out = BufReader::new(demo.child.stdout.take().unwrap());
        let mut printed = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = demo.child.wait();
                // The reader thread has everything once the pipe is closed.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "exited ({status:?}) before listening: {printed}{}",
                    demo.log()
                );
            }
            printed.push_str(&line);
            if let Some(addr) = line.trim().strip_prefix("baton-demo listening on http://") {
                demo.addr = addr.parse().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut out, &mut std::io::sink());
                });
                return demo;
            }
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to [`PATIENCE`] for the log to hold `needle`.
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never logged:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let raw = common::build(method, path, headers, body);
        let exchange = async {
            let mut s = TcpStream::connect(self.addr).await.unwrap();
            s.write_all(&raw).await.unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            Resp::parse(&buf)
        };
        tokio::time::timeout(PATIENCE, exchange)
            .await
            .expect("the server answered in time")
    }

    async fn sign_in(&self, email: &str, password: &str) -> Resp {
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        self.request(
            "POST",
            "/auth/sign_in",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of our own, stopped and reaped when dropped.
struct RedisServer(Child);

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        RedisServer(child)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The environment variable naming the port of the Redis the start-up test starts
/// late, so that CI and a run by hand on one machine do not collide.
const LATE_PORT_ENV: &str = "BATON_REDIS_LATE_PORT";
const LATE_PORT_DEFAULT: u16 = 6397;

/// The port for the late Redis: [`LATE_PORT_ENV`] or [`LATE_PORT_DEFAULT`]. Panics if
/// the variable is not a port or something already listens there (the test needs a
/// port where nothing answers until it starts its own server).
fn late_port() -> u16 {
    let port = match std::env::var(LATE_PORT_ENV) {
        Ok(v) => v
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .unwrap_or_else(|| panic!("{LATE_PORT_ENV}={v:?} is not a port")),
        Err(_) => LATE_PORT_DEFAULT,
    };
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something already listens on 127.0.0.1:{port}: set {LATE_PORT_ENV} to a free port"
    );
    port
}

/// 503 in devise's error shape, with Retry-After and no credential headers.
fn assert_unavailable(what: &str, r: &Resp) {
    assert_eq!(r.status, 503, "{what}: {r:?}");
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{what}: no Retry-After on {r:?}"
    );
    assert!(
        r.json()["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{what}: {}",
        r.text()
    );
    for h in ["access-token", "client", "uid", "expiry"] {
        assert!(r.header(h).is_none(), "{what}: {h} on {r:?}");
    }
}

/// Credentials of the shape the store issues (so that the store, not the codec,
/// decides), for a session no Redis has: minted by an embedded store.
fn well_formed_creds(uid: &str) -> Creds {
    let store = Store::builder().build().unwrap();
    let s = store.issue(uid).unwrap();
    Creds {
        token: s.token().as_str().to_owned(),
        client: s.client().as_str().to_owned(),
        uid: uid.to_owned(),
        expiry: s.expiry(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_redis_it_answers_503_then_serves_once_redis_is_up() {
    let test = "started_before_redis_it_answers_503_then_serves_once_redis_is_up";
    if !on_path("redis-server") {
        println!("{test}: skipped, redis-server is not on the PATH");
        return;
    }
    let port = late_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let prefix = common::fresh_prefix("late");
    let user = "late@example.com";
    let demo = Demo::start(&[
        "--store",
        &url,
        "--redis-prefix",
        &prefix,
        "--redis-timeout-ms",
        "300",
        "--user",
        &format!("{user}:{PASSWORD}"),
    ]);
    demo.wait_for_log(&format!(
        "redis at redis://127.0.0.1:{port}/0 not reachable yet: answering 503 until it answers"
    ))
    .await;
    assert!(!demo.log().contains(SECRET), "{}", demo.log());

    let started = Instant::now();
    let r = demo.sign_in(user, PASSWORD).await;
    assert_unavailable("sign-in before redis", &r);
    let creds = well_formed_creds(user);
    let r = demo.request("GET", "/api/me", &creds.headers(), b"").await;
    assert_unavailable("GET /api/me before redis", &r);
    let r = demo
        .request("GET", "/auth/validate_token", &creds.headers(), b"")
        .await;
    assert_unavailable("validate_token before redis", &r);
    println!("three 503s in {:?}", started.elapsed());
    assert!(!demo.log().contains("redis answers"), "{}", demo.log());

    let _redis = RedisServer::start(port);
    demo.wait_for_log(&format!("redis answers at redis://127.0.0.1:{port}/0"))
        .await;
    // The same process, no restart: sign-in works, and so does the token it gave.
    let deadline = Instant::now() + PATIENCE;
    let r = loop {
        let r = demo.sign_in(user, PASSWORD).await;
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 200, "sign-in once redis is up: {r:?}");
    let c0 = r.assert_authenticated();
    let r = demo.request("GET", "/api/me", &c0.headers(), b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    let c1 = r.assert_authenticated();
    assert_ne!(c1.token, c0.token, "rotated");
    let r = demo
        .request("DELETE", "/auth/sign_out", &c1.headers(), b"")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!demo.log().contains(&c0.token), "{}", demo.log());
}

/// Whether the binary exited successfully (`None`: it still ran after `within` and
/// was killed), and what it printed.
fn exits_within(mut cmd: Command, within: Duration) -> (Option<bool>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut text);
    let _ = child.stderr.take().unwrap().read_to_string(&mut text);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_certificate_the_ca_file_does_not_vouch_for_stops_the_start() {
    let test = "a_tls_certificate_the_ca_file_does_not_vouch_for_stops_the_start";
    let Some(vars) = env(test, &["BATON_REDIS_TLS_URL", "BATON_REDIS_TLS_WRONG_CA"]) else {
        return;
    };
    let (url, wrong_ca) = (&vars[0], &vars[1]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton-demo"));
    cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        // The default --redis-timeout-ms (1 s), as an operator runs it: a refusal
        // must be told from an outage within it.
        .args(["--store", url, "--redis-ca-file", wrong_ca])
        .env("BATON_REDIS_SECRET", SECRET);
    let started = Instant::now();
    // Bounded, not a performance check: a start-up that retried would run forever.
    let (status, text) = exits_within(cmd, PATIENCE);
    let Some(ok) = status else {
        panic!("still running after {PATIENCE:?}: it took a refusal for an outage:\n{text}");
    };
    println!("exited in {:?}: {text}", started.elapsed());
    assert!(!ok, "started with the wrong CA: {text}");
    assert!(text.contains("--redis-ca-file"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(!text.contains("listening"), "{text}");
    assert!(
        !text.contains("not reachable yet"),
        "a refusal is not an outage: {text}"
    );
    assert!(!text.contains(SECRET), "{text}");

    // The control: the same server with its own CA serves.
    let Ok(ca) = std::env::var("BATON_REDIS_TLS_CA") else {
        println!("{test}: BATON_REDIS_TLS_CA not set, the right CA is not tried");
        return;
    };
    let demo = Demo::start(&[
        "--store",
        url,
        "--redis-ca-file",
        &ca,
        "--redis-prefix",
        &common::fresh_prefix("tls"),
        "--user",
        &format!("tls@example.com:{PASSWORD}"),
    ]);
    let r = demo.sign_in("tls@example.com", PASSWORD).await;
    assert_eq!(r.status, 200, "over TLS with the right CA: {r:?}");
    let c = r.assert_authenticated();
    let r = demo
        .request("DELETE", "/auth/sign_out", &c.headers(), b"")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!demo.log().contains("not reachable"), "{}", demo.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replicas_waits_for_the_replicas_and_answers_503_when_too_few_ack() {
    let test = "redis_replicas_waits_for_the_replicas_and_answers_503_when_too_few_ack";
    let Some(vars) = env(test, &["BATON_REDIS_CLUSTER_URL"]) else {
        return;
    };
    let url = &vars[0];
    let prefix = common::fresh_prefix("replicas");
    let user = "replicas@example.com";
    let login = format!("{user}:{PASSWORD}");
    // Every primary of the test cluster has one replica: one acknowledges every write.
    let one = Demo::start(&[
        "--store",
        url,
        "--redis-replicas",
        "1",
        "--redis-prefix",
        &prefix,
        "--user",
        &login,
    ]);
    let r = one.sign_in(user, PASSWORD).await;
    assert_eq!(r.status, 200, "sign-in acknowledged by a replica: {r:?}");
    let c0 = r.assert_authenticated();
    let r = one.request("GET", "/api/me", &c0.headers(), b"").await;
    assert_eq!(r.status, 200, "rotation acknowledged by a replica: {r:?}");
    let c1 = r.assert_authenticated();
    assert_ne!(c1.token, c0.token, "rotated");

    // Two replicas never acknowledge: every write answers 503 and hands out no token.
    let two = Demo::start(&[
        "--store",
        url,
        "--redis-replicas",
        "2",
        "--redis-timeout-ms",
        "300",
        "--redis-prefix",
        &prefix,
        "--user",
        &login,
    ]);
    let r = two.sign_in(user, PASSWORD).await;
    assert_unavailable("sign-in without enough replicas", &r);
    let r = two.request("GET", "/api/me", &c1.headers(), b"").await;
    assert_unavailable("rotation without enough replicas", &r);
    // The client kept c1, and c1 still works (as the current token, or within the
    // batch window should the unacknowledged rotation stand).
    let r = one.request("GET", "/api/me", &c1.headers(), b"").await;
    assert_eq!(r.status, 200, "the token kept after a 503: {r:?}");
    let c2 = r.assert_authenticated();
    let r = one
        .request("DELETE", "/auth/sign_out", &c2.headers(), b"")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    for log in [one.log(), two.log()] {
        assert!(!log.contains(SECRET) && !log.contains(&c0.token), "{log}");
    }
}
