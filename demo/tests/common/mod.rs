//! A server on port 0 over a store on a hand-moved clock (or over any backend), and a
//! raw HTTP/1.1 client that can send anything, including what no well-behaved client
//! would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton::{Backend, ManualClock, Store};
use baton_demo::users::{HashCost, Users};
use baton_demo::{serve, serve_metrics, AppState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const EMAIL: &str = "ann@example.com";
pub const PASSWORD: &str = "correct horse";

/// Guards against a hung server turning into a hung test run: generous, never a
/// performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Server<B: Backend + 'static = Store<ManualClock>> {
    pub addr: SocketAddr,
    /// The metrics listener's address (`--metrics-listen`), never the API's.
    pub metrics_addr: SocketAddr,
    /// The store's clock; moving it does nothing on a backend with its own clock.
    pub clock: ManualClock,
    pub state: Arc<AppState<B>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::with(|b| b, |_| {}).await
    }

    /// A server whose store is `configure(builder)` and whose state `adjust` may change.
    pub async fn with(
        configure: impl FnOnce(baton::Builder<ManualClock>) -> baton::Builder<ManualClock>,
        adjust: impl FnOnce(&mut AppState<Store<ManualClock>>),
    ) -> Server {
        let clock = ManualClock::default();
        let store = configure(Store::builder().clock(clock.clone()))
            .build()
            .expect("test store settings are valid");
        let mut state = AppState::new(store, users());
        adjust(&mut state);
        Server::serving(state, clock).await
    }
}

/// The users every test server knows: ann and bob.
pub fn users() -> Users {
    let mut users = Users::new(HashCost::FAST);
    users.add(EMAIL, PASSWORD).unwrap();
    users.add("bob@example.com", "bob's password").unwrap();
    users
}

impl<B: Backend + 'static> Server<B> {
    /// Serves `state` on port 0 until dropped.
    /// The page (`GET /`) is told the metrics listener's URL, as the binary tells it.
    pub async fn serving(mut state: AppState<B>, clock: ManualClock) -> Server<B> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        state.metrics_url = Some(format!("http://{metrics_addr}/metrics"));
        let state = Arc::new(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = stopped.await;
        }));
        let origin = http::HeaderValue::from_str(&format!("http://{addr}")).unwrap();
        // Stops with the runtime at the end of the test.
        tokio::spawn(serve_metrics(
            metrics,
            Arc::clone(&state),
            origin,
            std::future::pending(),
        ));
        Server {
            addr,
            metrics_addr,
            clock,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks the server to stop; the returned handle completes when it has.
    pub fn stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.take().expect("stopped once")
    }

    pub async fn send(&self, raw: &[u8]) -> Resp {
        tokio::time::timeout(PATIENCE, exchange(self.addr, raw))
            .await
            .expect("the server answered in time")
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        self.send(&build(method, path, headers, body)).await
    }

    pub async fn get(&self, path: &str, creds: &Creds) -> Resp {
        self.request("GET", path, &creds.headers(), b"").await
    }

    pub async fn sign_in(&self, email: &str) -> Creds {
        let password = if email == EMAIL {
            PASSWORD
        } else {
            "bob's password"
        };
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        let r = self
            .request(
                "POST",
                "/auth/sign_in",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.creds().expect("sign-in answers credentials")
    }

    /// A request to the metrics listener.
    pub async fn metrics(&self, headers: &[(&str, &str)]) -> Resp {
        let raw = build("GET", "/metrics", headers, b"");
        tokio::time::timeout(PATIENCE, exchange(self.metrics_addr, &raw))
            .await
            .expect("the metrics listener answered in time")
    }

    pub async fn metric(&self, line_prefix: &str) -> u64 {
        let r = self.metrics(&[]).await;
        assert_eq!(r.status, 200);
        let text = r.text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(line_prefix)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no {line_prefix:?} in\n{text}"))
    }
}

impl<B: Backend + 'static> Drop for Server<B> {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One request on a new connection, which the server closes after answering.
pub fn build(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything (an oversized body);
    // a failed write is then expected and the answer is still there to read.
    let _ = s.write_all(raw).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    Resp::parse(&buf)
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn parse(buf: &[u8]) -> Resp {
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            body: buf[split + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn creds(&self) -> Option<Creds> {
        Some(Creds {
            token: self.header("access-token")?.to_owned(),
            client: self.header("client")?.to_owned(),
            uid: self.header("uid")?.to_owned(),
            expiry: self.header("expiry")?.parse().ok()?,
        })
    }

    /// The five headers, all non-empty, and `no-store`.
    pub fn assert_authenticated(&self) -> Creds {
        for name in ["access-token", "token-type", "client", "expiry", "uid"] {
            assert!(
                self.header(name).is_some_and(|v| !v.is_empty()),
                "{name} missing or blank in {self:?}"
            );
        }
        assert_eq!(self.header("token-type"), Some("Bearer"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        self.creds().unwrap()
    }

    /// The JSON error shape, and none of the credential headers.
    pub fn assert_refused(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        let errors = &self.json()["errors"];
        assert!(
            errors
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.iter().all(|m| m.is_string())),
            "{}",
            self.text()
        );
        assert!(self.header("access-token").is_none(), "{self:?}");
        self.assert_cors();
    }

    pub fn assert_cors(&self) {
        assert!(
            self.header("access-control-allow-origin").is_some(),
            "{self:?}"
        );
        // The list, however the CORS layer separates it.
        let exposed: Vec<&str> = self
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .collect();
        assert_eq!(
            exposed,
            ["access-token", "token-type", "client", "expiry", "uid"],
            "{self:?}"
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub token: String,
    pub client: String,
    pub uid: String,
    pub expiry: u64,
}

impl Creds {
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("access-token", self.token.as_str()),
            ("token-type", "Bearer"),
            ("client", self.client.as_str()),
            ("uid", self.uid.as_str()),
        ]
    }
}

/// A Redis key prefix no other test (or earlier run) uses.
pub fn fresh_prefix(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "demo-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
