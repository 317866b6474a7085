//! Sign-in under attack: the 429 and 503 answers, their shapes, headers and counters;
//! the throttle runs before any hash; the real user gets in during a flood from
//! another address; unknown accounts are throttled exactly like known ones.
//!
//! Clients pick their source address in 127.0.0.0/8 (Linux routes all of it to
//! loopback), so one test can be several client addresses.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use baton_demo::conn_limit::ConnLimit;
use baton_demo::signin::{Allowance, Gate, HashPool, SignInGuard, ThrottlePolicy, THROTTLED};
use common::{Resp, Server, EMAIL, PASSWORD, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

fn policy(address: (u32, u64), account: (u32, u64)) -> ThrottlePolicy {
    let a = |(burst, secs): (u32, u64)| Allowance {
        burst: NonZeroU32::new(burst).unwrap(),
        refill: Duration::from_secs(secs),
    };
    ThrottlePolicy {
        per_address: a(address),
        per_account: a(account),
        max_keys: 10_000,
    }
}

/// A server whose 429s are not held back, unless `hold` says.
async fn server(policy: ThrottlePolicy, pool: HashPool) -> Server {
    held(policy, pool, Duration::ZERO, 10_000).await
}

async fn held(policy: ThrottlePolicy, pool: HashPool, hold: Duration, conns: usize) -> Server {
    Server::with(
        |b| b,
        |state| {
            state.sign_in = Gate {
                guard: SignInGuard::new(policy),
                pool,
                hold,
            };
            state.connections = ConnLimit::new(conns);
        },
    )
    .await
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// One sign-in on a new connection from `from`.
async fn sign_in_from(to: SocketAddr, from: IpAddr, email: &str, password: &str) -> Resp {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let raw = common::build(
        "POST",
        "/auth/sign_in",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    let exchange = async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let mut s = socket.connect(to).await.unwrap();
        s.write_all(&raw).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        Resp::parse(&buf)
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the server answered in time")
}

fn assert_retry_after(r: &Resp, at_least: u64, at_most: u64) {
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric retry-after in {r:?}"));
    assert!((at_least..=at_most).contains(&secs), "retry-after {secs}");
}

#[tokio::test]
async fn past_the_address_allowance_a_sign_in_gets_429_in_devise_shape() {
    let s = server(policy((2, 30), (100, 1)), HashPool::new(1, 4)).await;
    let to = s.addr;
    let r = sign_in_from(to, loopback(1), EMAIL, "wrong").await;
    assert_eq!(r.status, 401);
    let r = sign_in_from(to, loopback(1), EMAIL, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Even the right password is refused now: the answer says nothing about it.
    let r = sign_in_from(to, loopback(1), EMAIL, PASSWORD).await;
    r.assert_refused(429);
    assert_eq!(
        r.json(),
        serde_json::json!({ "success": false, "errors": [THROTTLED] })
    );
    assert_retry_after(&r, 1, 30);
    assert!(r.header("client").is_none() && r.header("uid").is_none());
    assert_eq!(
        s.metric("baton_sign_in_throttled_total{scope=\"address\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("baton_sign_in_throttled_total{scope=\"account\"}")
            .await,
        0
    );
    // Throttled sign-ins are not counted as wrong passwords: no hash was computed.
    assert_eq!(s.metric("baton_sign_in_failures_total").await, 1);
    // Another address is not affected.
    let r = sign_in_from(to, loopback(2), EMAIL, PASSWORD).await;
    assert_eq!(r.status, 200);
}

/// Holds the pool's only worker until the returned sender sends (or 20 s pass).
async fn occupy(pool: &HashPool) -> mpsc::Sender<()> {
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let (started, on_start) = tokio::sync::oneshot::channel();
    let p = pool.clone();
    tokio::spawn(async move {
        p.run(move || {
            let _ = started.send(());
            let _ = gate.lock().map(|g| g.recv_timeout(PATIENCE));
        })
        .await
    });
    on_start.await.unwrap();
    release
}

#[tokio::test]
async fn a_full_hashing_queue_gets_a_fast_503_and_throttling_comes_first() {
    let pool = HashPool::new(1, 0);
    let s = server(policy((1, 30), (100, 1)), pool.clone()).await;
    let release = occupy(&pool).await;
    let r = sign_in_from(s.addr, loopback(3), EMAIL, PASSWORD).await;
    r.assert_refused(503);
    assert_eq!(
        r.json(),
        serde_json::json!({ "success": false, "errors": [baton_demo::signin::BUSY] })
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(s.metric("baton_sign_in_busy_total").await, 1);
    // The next attempt from that address is past its allowance: 429, not 503, so
    // the throttle answered before anything asked the pool.
    let r = sign_in_from(s.addr, loopback(3), EMAIL, PASSWORD).await;
    r.assert_refused(429);
    assert_eq!(s.metric("baton_sign_in_busy_total").await, 1);
    release.send(()).unwrap();
    // Once the worker is free, sign-in works again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Each try from a new address, whose one attempt a 503 would otherwise spend.
    for n in 50.. {
        let r = sign_in_from(s.addr, loopback(n), EMAIL, PASSWORD).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body run against every backend: the owner signs in, from their own address,
/// while eight clients guess the same account's password from another, and the
/// guesses that reached a hash are the address's allowance, no more.
async fn owner_gets_in_during_a_flood<B: baton::Backend + 'static>(s: &Server<B>) {
    let to = s.addr;
    let flood = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    statuses.push(sign_in_from(to, loopback(10), EMAIL, "guess").await.status);
                }
                statuses
            })
        })
        .collect::<Vec<_>>();
    // The owner signs in while the guesses are under way, several times.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        let r = sign_in_from(to, loopback(11), EMAIL, PASSWORD).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut statuses = Vec::new();
    for f in flood {
        statuses.extend(f.await.unwrap());
    }
    let guessed = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(guessed + throttled, 320, "only 401 or 429: {statuses:?}");
    // The address's burst, plus at most one refill in the test's few seconds.
    let burst = ThrottlePolicy::default().per_address.burst.get() as usize;
    assert!(
        (burst..=burst + 1).contains(&guessed),
        "{guessed} guesses got through"
    );
}

/// The default throttle and a small pool, 429s not held back (the test would take
/// 40 s), on `state`.
fn flood_gate<B: baton::Backend>(state: &mut baton_demo::AppState<B>) {
    state.sign_in = Gate {
        guard: SignInGuard::new(ThrottlePolicy::default()),
        pool: HashPool::new(1, 16),
        hold: Duration::ZERO,
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_user_gets_in_while_a_flood_runs_from_another_address() {
    let s = Server::with(|b| b, flood_gate).await;
    owner_gets_in_during_a_flood(&s).await;
}

/// The same over Redis, when `BATON_REDIS_URL` is set (`.ci/redis.sh` sets it);
/// otherwise it says it is skipped and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_the_real_user_gets_in_while_a_flood_runs() {
    let Ok(url) = std::env::var("BATON_REDIS_URL") else {
        println!("skipped: BATON_REDIS_URL is not set (run .ci/redis.sh)");
        return;
    };
    let prefix = format!("demo-signin-{}", std::process::id());
    let store = baton::RedisStore::builder(&url)
        .settings(baton::Store::builder().token_lifespan(Duration::from_secs(60)))
        .secret(b"demo test secret, 32 bytes long.")
        .prefix(&prefix)
        .connect()
        .await
        .expect("redis answers");
    let mut state = baton_demo::AppState::with_backend(store, common::users());
    flood_gate(&mut state);
    let s = Server::serving(state, baton::ManualClock::default()).await;
    owner_gets_in_during_a_flood(&s).await;
}

#[tokio::test]
async fn unknown_accounts_are_throttled_exactly_like_known_ones() {
    let s = server(policy((100, 1), (3, 60)), HashPool::new(1, 4)).await;
    let mut answers = Vec::new();
    for (i, email) in [EMAIL, "nobody@example.com"].into_iter().enumerate() {
        let base = 20 + 10 * i as u8;
        // Each attempt from its own address: only the account's allowance applies.
        let mut statuses = Vec::new();
        for n in 0..4 {
            statuses.push(sign_in_from(s.addr, loopback(base + n), email, "wrong").await);
        }
        assert_eq!(
            statuses.iter().map(|r| r.status).collect::<Vec<_>>(),
            [401, 401, 401, 429],
            "{email}"
        );
        answers.push(statuses.pop().unwrap());
    }
    let [known, unknown] = &answers[..] else {
        unreachable!()
    };
    assert_eq!(known.body, unknown.body);
    assert_eq!(known.header("retry-after"), unknown.header("retry-after"));
    assert_retry_after(known, 1, 60);
    assert_eq!(
        s.metric("baton_sign_in_throttled_total{scope=\"account\"}")
            .await,
        2
    );
}

#[tokio::test]
async fn a_throttled_answer_is_held_back_and_its_connection_may_make_room() {
    let hold = Duration::from_millis(400);
    // Two connections at most: a held guess and one more.
    let s = held(policy((1, 30), (100, 1)), HashPool::new(1, 4), hold, 2).await;
    let to = s.addr;
    assert_eq!(
        sign_in_from(to, loopback(40), EMAIL, "wrong").await.status,
        401
    );
    let t = std::time::Instant::now();
    let r = sign_in_from(to, loopback(40), EMAIL, "wrong").await;
    r.assert_refused(429);
    let waited = t.elapsed();
    assert!(waited >= hold, "answered after {waited:?}");
    assert_retry_after(&r, 29, 30);
    // A held guess does not keep its connection from being closed for a fresh client:
    // two guesses held, then a third client comes.
    let guesses = [
        tokio::spawn(sign_in_from_raw(to, loopback(40))),
        tokio::spawn(sign_in_from_raw(to, loopback(40))),
    ];
    tokio::time::sleep(hold / 4).await;
    let r = sign_in_from(to, loopback(41), EMAIL, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answered: Vec<bool> = futures_join(guesses).await;
    assert!(
        answered.contains(&false),
        "one held guess was closed: {answered:?}"
    );
    assert!(s.metric("baton_connections_shed_total").await >= 1);
}

/// A wrong guess from `from`; whether an answer came before the connection closed.
async fn sign_in_from_raw(to: SocketAddr, from: IpAddr) -> bool {
    let body = serde_json::json!({ "email": EMAIL, "password": "wrong" }).to_string();
    let raw = common::build(
        "POST",
        "/auth/sign_in",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(&raw).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await;
    !buf.is_empty()
}

async fn futures_join<T: Send + 'static>(handles: [tokio::task::JoinHandle<T>; 2]) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
