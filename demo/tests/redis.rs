//! The demo server over Redis: two servers on one Redis share sessions, and a Redis
//! that stops answering gets 503 (never 401) until it is back, without a restart.
//!
//! Needs `BATON_REDIS_URL` (`.ci/redis.sh` starts a server and sets it); without it
//! each test says it is skipped and passes. Every test uses its own key prefix.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton::{ManualClock, RedisStore, Store};
use baton_demo::AppState;
use common::{Creds, Resp, Server, EMAIL, PASSWORD};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

const SECRET: &[u8; 32] = b"demo test secret, 32 bytes long.";
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// How long a request may take while Redis is gone: the store's timeout (500 ms)
/// plus slack for a loaded machine. Past it, the server is taken to hang.
const BOUNDED: Duration = Duration::from_secs(5);

fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("BATON_REDIS_URL").ok();
    if url.is_none() {
        println!("{test}: skipped, BATON_REDIS_URL is not set (run .ci/redis.sh)");
    }
    url
}

/// A demo server over its own connections to the Redis at `url`.
async fn server(url: &str, prefix: &str, timeout: Duration) -> Server<RedisStore> {
    let store = RedisStore::builder(url)
        .settings(
            Store::builder()
                .batch_window(BATCH_WINDOW)
                // Short, so that Redis drops what the tests leave behind.
                .token_lifespan(Duration::from_secs(60)),
        )
        .secret(SECRET)
        .prefix(prefix)
        .timeout(timeout)
        .connect()
        .await
        .expect("redis answers");
    let state = AppState::with_backend(store, common::users());
    assert!(state.sweep.is_none(), "redis expires sessions by itself");
    Server::serving(state, ManualClock::default()).await
}

async fn sign_out<B: baton::Backend + 'static>(s: &Server<B>, c: &Creds) -> Resp {
    s.request("DELETE", "/auth/sign_out", &c.headers(), b"")
        .await
}

async fn sign_in_request<B: baton::Backend + 'static>(s: &Server<B>) -> Resp {
    let body = serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string();
    s.request(
        "POST",
        "/auth/sign_in",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_share_rotations_and_sign_outs() {
    let Some(url) = redis_url("two_servers_on_one_redis_share_rotations_and_sign_outs") else {
        return;
    };
    let prefix = common::fresh_prefix("share");
    let timeout = Duration::from_secs(5);
    let a = server(&url, &prefix, timeout).await;
    let b = server(&url, &prefix, timeout).await;

    let c0 = a.sign_in(EMAIL).await;
    assert_eq!(b.metric("baton_sessions ").await, 1, "B counts A's sign-in");
    let r = a.get("/api/me", &c0).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c1 = r.assert_authenticated();
    assert_ne!(c1.token, c0.token, "A rotated");
    assert_eq!(c1.client, c0.client);

    // A precondition, not a timing assertion: the retired token's batch window is
    // over, so it is a replay everywhere.
    tokio::time::sleep(BATCH_WINDOW * 3).await;
    b.get("/api/me", &c0).await.assert_refused(401);

    let r = b.get("/api/me", &c1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c2 = r.assert_authenticated();
    assert_ne!(c2.token, c1.token, "B rotated A's successor");
    tokio::time::sleep(BATCH_WINDOW * 3).await;
    a.get("/api/me", &c1).await.assert_refused(401);

    let r = sign_out(&b, &c2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("access-token").is_none(), "{r:?}");
    a.get("/api/me", &c2).await.assert_refused(401);
    a.get("/auth/validate_token", &c2).await.assert_refused(401);
    sign_out(&a, &c2).await.assert_refused(404);
    assert_eq!(a.metric("baton_sessions ").await, 0);
    assert_eq!(a.metric("baton_store_up ").await, 1);
}

/// A TCP forwarder to Redis that can be taken down (nothing listens on its port, and
/// every connection through it is closed) and brought back on the same port.
struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = Proxy {
            addr: listener.local_addr().unwrap(),
            target,
            running: None,
        };
        p.run(listener);
        p
    }

    fn run(&mut self, listener: TcpListener) {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let target = self.target;
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                        .await;
                            }
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
            drop(listener);
            // Aborts every forwarding task and waits until their sockets are closed.
            conns.shutdown().await;
        });
        self.running = Some((stop, task));
    }

    /// Returns once nothing listens on the port and every connection is closed.
    async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("running");
        let _ = stop.send(());
        task.await.unwrap();
    }

    async fn resume(&mut self) {
        // tokio sets SO_REUSEADDR, so the port is free again at once.
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.run(listener);
    }
}

/// `HOST:PORT` and `/DB` of a `redis://HOST:PORT/DB` URL without credentials.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("redis://")
        .expect("BATON_REDIS_URL is redis://HOST:PORT/DB");
    let (host, db) = rest.split_once('/').unwrap_or((rest, "0"));
    let addr = host.parse().expect("BATON_REDIS_URL's host is an IP:PORT");
    (addr, db.to_owned())
}

/// `request` answered within [`BOUNDED`].
async fn bounded(what: &str, request: impl std::future::Future<Output = Resp>) -> Resp {
    let started = Instant::now();
    let r = tokio::time::timeout(BOUNDED, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {BOUNDED:?}"));
    println!("{what}: {} in {:?}", r.status, started.elapsed());
    r
}

/// 503 in devise's error shape, with no credential headers: never a 401.
fn assert_unavailable(what: &str, r: &Resp) {
    assert_eq!(r.status, 503, "{what}: {r:?}");
    assert_eq!(r.json()["success"], false, "{what}: {}", r.text());
    assert!(
        r.json()["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{what}: {}",
        r.text()
    );
    for h in ["access-token", "client", "uid", "expiry"] {
        assert!(r.header(h).is_none(), "{what}: {h} on {r:?}");
    }
    r.assert_cors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_answers_503_within_bounded_time_and_recovers() {
    let Some(url) = redis_url("redis_gone_answers_503_within_bounded_time_and_recovers") else {
        return;
    };
    let (target, db) = split_url(&url);
    let mut proxy = Proxy::start(target).await;
    let via_proxy = format!("redis://{}/{db}", proxy.addr);
    let s = server(
        &via_proxy,
        &common::fresh_prefix("gone"),
        Duration::from_millis(500),
    )
    .await;
    let c0 = s.sign_in(EMAIL).await;

    proxy.stop().await;
    let r = bounded("sign-in", sign_in_request(&s)).await;
    assert_unavailable("sign-in", &r);
    let r = bounded("GET /api/me", s.get("/api/me", &c0)).await;
    assert_unavailable("GET /api/me", &r);
    let r = bounded("validate_token", s.get("/auth/validate_token", &c0)).await;
    assert_unavailable("validate_token", &r);
    let r = bounded("sign-out", sign_out(&s, &c0)).await;
    assert_unavailable("sign-out", &r);
    let r = bounded("metrics", s.metrics(&[])).await;
    assert_eq!(r.status, 200, "a scrape still answers: {r:?}");
    assert!(r.text().contains("\nbaton_store_up 0\n"), "{}", r.text());
    assert!(!r.text().contains("\nbaton_sessions "), "{}", r.text());
    assert!(s.metric("baton_store_unavailable_total ").await >= 5);

    // Back: the same server answers again with no restart, and the credentials the
    // client kept through the outage still work.
    proxy.resume().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = bounded("GET /api/me after", s.get("/api/me", &c0)).await;
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 200, "recovered: {r:?}");
    let c1 = r.assert_authenticated();
    let r = sign_out(&s, &c1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.metric("baton_store_up ").await, 1);
}
