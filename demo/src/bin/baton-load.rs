//! baton-load: how much per-request token rotation costs the demo server.
//!
//! Run it with `cargo run --release -p baton-demo --bin baton-load` (add `-- --help`).
//! It starts the server in-process on 127.0.0.1 (its own runtime and threads), then
//! drives it over keep-alive connections on loopback, taking turns at three phases:
//!
//! - `GET /public/items`: no credentials (the baseline);
//! - `GET /api/items`: the same answer behind authentication, each connection one
//!   signed-in client that presents the token of the previous answer, so every
//!   request rotates;
//! - between the two, the same requests as the rotating phase sent to a second
//!   server on the same runtime, which runs the same routes for `/public/items` and
//!   echoes the credentials back: the rotating phase's bytes, both ways, without its
//!   authentication work.
//!
//! It reports requests/s, latency percentiles and CPU per request of each, and the
//! ratios. Traffic goes to loopback only; every phase is bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::Store;
use baton_demo::signin::{SignInGuard, ThrottlePolicy};
use baton_demo::users::{HashCost, Users};
use baton_demo::{serve, AppState};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(name = "baton-load", about = "Load test of baton-demo on loopback")]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Length of each measured phase, in seconds.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Rounds of the three phases, each round starting with the next one; figures are
    /// summed over rounds, and the median of the rounds' ratios is reported too, since
    /// other processes on a shared machine come and go between phases.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Send the credential headers in the baseline phase too (the server ignores them
    /// there), to separate the cost of parsing them from the cost of acting on them.
    #[arg(long)]
    baseline_with_headers: bool,
    /// Length of the unmeasured warm-up of each phase, in milliseconds (0 when
    /// profiling, so that a profile holds the measured phase alone).
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Run only one phase, for profiling (the warm-up still runs every phase).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Server worker threads.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Load generator worker threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

/// The phases, for `--only`, in the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// `GET /public/items`, no credentials.
    Base,
    /// The echoing server: the rotating phase's bytes without its work.
    Bytes,
    /// `GET /api/items`, rotating.
    Auth,
}

const PASSWORD: &str = "load-test-password";

fn main() {
    let args = Args::parse();
    let (servers, _server) = start_servers(&args);
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    load.block_on(run(servers, &args));
}

/// Where the two servers listen.
struct Servers {
    /// The server, as `baton-demo` runs it.
    real: SocketAddr,
    /// The same routes and connection settings, answering `/public/items` with the
    /// request's own credentials echoed back, so that its answers carry the same
    /// headers as a rotating answer (see [`echo_credentials`]).
    echo: SocketAddr,
}

/// The servers on their own runtime, as the binary would run it, but with cheap
/// password hashing: sign-ins happen before measuring and are not what is measured.
fn start_servers(args: &Args) -> (Servers, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("server")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut users = Users::new(HashCost::FAST);
    for i in 0..args.connections {
        users
            .add(&format!("load{i}@example.com"), PASSWORD)
            .expect("distinct users");
    }
    let mut state = AppState::new(Store::new(), users);
    // Every connection signs in from 127.0.0.1 once, before measuring: an address
    // allowance of one sign-in per connection, so that the throttle (10 by default)
    // lets them all in and nothing else changes.
    let burst = u32::try_from(args.connections)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .unwrap_or(std::num::NonZeroU32::MIN);
    let mut policy = ThrottlePolicy::default();
    policy.per_address.burst = policy.per_address.burst.max(burst);
    state.sign_in.guard = SignInGuard::new(policy);
    let state = Arc::new(state);
    let bind = || {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        (listener, addr)
    };
    let (listener, real) = bind();
    rt.spawn(serve(listener, Arc::clone(&state), std::future::pending()));
    let (listener, echo) = bind();
    rt.spawn(echo_credentials(listener, state));
    (Servers { real, echo }, rt)
}

/// Serves every request with the real routes and connection settings
/// (`baton_demo::serve_with` around `baton_demo::app`), then puts on the answer
/// the six headers a rotating answer carries: `access-token`, `client` and `uid` as
/// the request sent them, `token-type`, an `expiry` of the same length, and
/// `Cache-Control`. Nothing is authenticated: the difference between this and the
/// real server is the authentication work alone, and the difference between this and
/// the unauthenticated phase the protocol's bytes alone.
async fn echo_credentials(listener: TcpListener, state: Arc<AppState>) {
    use baton_demo::{ACCESS_TOKEN, CLIENT, EXPIRY, TOKEN_TYPE, UID};
    use http::header::{HeaderValue, CACHE_CONTROL};
    let echo = |app: baton_demo::App, req: http::Request<hyper::body::Incoming>| async move {
        let echoed = [ACCESS_TOKEN, CLIENT, UID].map(|name| {
            let value = req.headers().get(&name).cloned();
            (name, value)
        });
        // Answered as the real server answers (`baton_demo::call`).
        let mut reply = baton_demo::call(app, req).await;
        let headers = reply.headers_mut();
        for (name, value) in echoed {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
        headers.insert(TOKEN_TYPE, HeaderValue::from_static("Bearer"));
        headers.insert(EXPIRY, HeaderValue::from_static("1700000000"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        reply
    };
    let app = baton_demo::app(Arc::clone(&state));
    let served = baton_demo::serve_with(listener, &state, app, std::future::pending(), echo).await;
    if let Err(e) = served {
        eprintln!("baton-load: the echoing server stopped: {e}");
    }
}

#[derive(Default)]
struct Phase {
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// The server's threads: their CPU time, which other processes on the machine
    /// do not inflate the way they inflate wall-clock throughput.
    server: Sched,
    /// The load generator's threads, which share the cores with the server.
    load: Sched,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }

    fn cpu_us_per_request(&self, threads: Sched) -> f64 {
        threads.cpu.as_secs_f64() * 1e6 / self.requests as f64
    }

    fn runs_per_request(&self, threads: Sched) -> f64 {
        threads.runs as f64 / self.requests as f64
    }

    fn absorb(&mut self, other: Phase) {
        self.server.add(other.server);
        self.load.add(other.load);
        self.requests += other.requests;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }
}

async fn run(servers: Servers, args: &Args) {
    let mut conns = Vec::new();
    for i in 0..args.connections {
        conns.push(Conn::sign_in(servers.real, &format!("load{i}@example.com")).await);
    }
    // The same clients, with their own connections to the echoing server.
    let mut echo_conns = Vec::new();
    for c in &conns {
        echo_conns.push(c.same_client_on(servers.echo).await);
    }
    let secs = Duration::from_secs(args.seconds);
    let base_mode = if args.baseline_with_headers {
        Mode::BaselineWithHeaders
    } else {
        Mode::Baseline
    };
    let modes = [base_mode, Mode::SameBytes, Mode::Rotating];
    let only = args.only.map(|o| o as usize);
    // A short unmeasured warm-up of every path.
    for mode in modes {
        let set = connections_for(mode, &mut conns, &mut echo_conns);
        *set = phase(
            std::mem::take(set),
            mode,
            Duration::from_millis(args.warmup_ms),
        )
        .await
        .0;
    }
    let mut totals = modes.map(|_| Phase::default());
    let mut round_rps = Vec::new();
    for round in 0..args.rounds {
        // Each round starts with the next phase, so that whatever the machine does
        // over time (other processes, CPU frequency) weighs on every phase alike.
        let mut rps = [f64::NAN; 3];
        for k in 0..modes.len() {
            let i = (round + k) % modes.len();
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let set = connections_for(modes[i], &mut conns, &mut echo_conns);
            let (c, p) = phase(std::mem::take(set), modes[i], secs).await;
            *set = c;
            rps[i] = p.rps();
            totals[i].absorb(p);
        }
        round_rps.push(rps);
    }
    println!(
        "baton-load: {} connections, {} round(s) of {} s per phase, server {} threads, load {} threads, 127.0.0.1",
        args.connections, args.rounds, args.seconds, args.server_threads, args.client_threads
    );
    println!("| endpoint | requests | requests/s | p50 ms | p99 ms | CPU µs/request: server | load generator | runs/request: server | load generator |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let names = [
        if args.baseline_with_headers {
            "GET /public/items (no auth; credential headers sent, ignored)"
        } else {
            "GET /public/items (no auth)"
        },
        "GET /public/items, the rotating phase's bytes both ways (no auth, credentials echoed)",
        "GET /api/items (auth, rotating)",
    ];
    for (name, p) in names.iter().zip(&mut totals) {
        let (p50, p99) = (p.percentile(0.50), p.percentile(0.99));
        println!(
            "| {name} | {} | {:.0} | {p50:.3} | {p99:.3} | {:.2} | {:.2} | {:.3} | {:.3} |",
            p.requests,
            p.rps(),
            p.cpu_us_per_request(p.server),
            p.cpu_us_per_request(p.load),
            p.runs_per_request(p.server),
            p.runs_per_request(p.load),
        );
    }
    let short = ["unauthenticated", "same bytes", "rotating"];
    for (i, j) in [(2, 0), (1, 0), (2, 1)] {
        let (of, over) = (&totals[i], &totals[j]);
        let mut ratios: Vec<f64> = round_rps.iter().map(|r| r[i] / r[j]).collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{} / {} throughput: {:.1}% overall, {:.1}% median of {} rounds ({:.1}-{:.1}%); server CPU per request, {} / {}: {:.1}%",
            short[i],
            short[j],
            100.0 * of.rps() / over.rps(),
            100.0 * median,
            ratios.len(),
            100.0 * ratios.first().copied().unwrap_or(f64::NAN),
            100.0 * ratios.last().copied().unwrap_or(f64::NAN),
            short[j],
            short[i],
            100.0 * over.cpu_us_per_request(over.server) / of.cpu_us_per_request(of.server),
        );
    }
}

/// The connections a phase runs on: the echoing server's for [`Mode::SameBytes`],
/// the real server's otherwise.
fn connections_for<'c>(
    mode: Mode,
    real: &'c mut Vec<Conn>,
    echo: &'c mut Vec<Conn>,
) -> &'c mut Vec<Conn> {
    if mode == Mode::SameBytes {
        echo
    } else {
        real
    }
}

/// What a phase requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `GET /public/items` without credentials.
    Baseline,
    /// `GET /public/items` with the credential headers, which it ignores.
    BaselineWithHeaders,
    /// `GET /public/items` with the credential headers, on the echoing server, which
    /// answers with the six headers a rotating answer carries but does no
    /// authentication work: what the protocol's bytes alone cost.
    SameBytes,
    /// `GET /api/items` with the credentials of the previous answer.
    Rotating,
}

/// Every connection requests for `length`; returns the connections for the next phase.
async fn phase(conns: Vec<Conn>, mode: Mode, length: Duration) -> (Vec<Conn>, Phase) {
    let before = (Sched::of_threads("server"), Sched::of_threads("load"));
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(64 * 1024);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    c.request(mode).await;
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                (c, lat)
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut latencies_us = Vec::new();
    for t in tasks {
        let (c, lat) = t.await.expect("a load task");
        latencies_us.extend(lat);
        out.push(c);
    }
    let phase = Phase {
        requests: latencies_us.len() as u64,
        elapsed: start.elapsed(),
        latencies_us,
        server: Sched::of_threads("server").since(before.0),
        load: Sched::of_threads("load").since(before.1),
    };
    (out, phase)
}

/// What the kernel's scheduler counted so far for this process's threads named
/// `name` (`server`: the server runtime's workers; `load`: the load generator's).
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    /// CPU time they used.
    cpu: Duration,
    /// Times they were put on a CPU: a thread that parks for lack of work and is
    /// woken again counts once more each time.
    runs: u64,
}

impl Sched {
    /// Reads `/proc/self/task/*/schedstat`; zero where it cannot be read.
    fn of_threads(name: &str) -> Sched {
        let mut total = Sched::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return total;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let named = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name);
            let Some(stat) = named
                .then(|| std::fs::read_to_string(path.join("schedstat")).ok())
                .flatten()
            else {
                continue;
            };
            // Fields: time on a CPU (ns), time waiting for one (ns), timeslices run.
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            total.cpu += Duration::from_nanos(fields.next().unwrap_or(0));
            total.runs += fields.nth(1).unwrap_or(0);
        }
        total
    }

    fn since(self, before: Sched) -> Sched {
        Sched {
            cpu: self.cpu.saturating_sub(before.cpu),
            runs: self.runs.saturating_sub(before.runs),
        }
    }

    fn add(&mut self, other: Sched) {
        self.cpu += other.cpu;
        self.runs += other.runs;
    }
}

/// One keep-alive connection, signed in as one client.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` holding the last response, dropped before the next request.
    consumed: usize,
    req: Vec<u8>,
    uid: String,
    client: String,
    /// The token to present next, as the last answer carried it.
    token: Vec<u8>,
}

impl Conn {
    async fn sign_in(addr: SocketAddr, email: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = Conn {
            stream,
            buf: Vec::with_capacity(4096),
            consumed: 0,
            req: Vec::with_capacity(512),
            uid: email.to_owned(),
            client: String::new(),
            token: Vec::new(),
        };
        let body = format!("email={}&password={PASSWORD}", email.replace('@', "%40"));
        let req = format!(
            "POST /auth/sign_in HTTP/1.1\r\nhost: l\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let end = c.exchange(req.as_bytes()).await.len;
        let head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200 "), "sign-in failed: {head}");
        c.client = header(&head, baton_demo::CLIENT.as_str())
            .expect("client header")
            .to_owned();
        c.token = header(&head, baton_demo::ACCESS_TOKEN.as_str())
            .expect("token")
            .into();
        c
    }

    /// The same signed-in client, over a new connection to `addr`.
    async fn same_client_on(&self, addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
            consumed: 0,
            req: Vec::with_capacity(512),
            uid: self.uid.clone(),
            client: self.client.clone(),
            token: self.token.clone(),
        }
    }

    async fn request(&mut self, mode: Mode) {
        let mut req = std::mem::take(&mut self.req);
        req.clear();
        if mode != Mode::Baseline {
            req.extend_from_slice(if mode == Mode::Rotating {
                b"GET /api/items HTTP/1.1\r\nhost: l\r\naccess-token: "
            } else {
                b"GET /public/items HTTP/1.1\r\nhost: l\r\naccess-token: "
            });
            req.extend_from_slice(&self.token);
            req.extend_from_slice(b"\r\ntoken-type: Bearer\r\nclient: ");
            req.extend_from_slice(self.client.as_bytes());
            req.extend_from_slice(b"\r\nuid: ");
            req.extend_from_slice(self.uid.as_bytes());
            req.extend_from_slice(b"\r\n\r\n");
        } else {
            req.extend_from_slice(b"GET /public/items HTTP/1.1\r\nhost: l\r\n\r\n");
        }
        let head = self.exchange(&req).await;
        self.req = req;
        assert!(
            self.buf.starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(&self.buf[..head.len])
        );
        // The echoing server answers with the token sent; reading it back costs the
        // load generator what a rotating answer costs it.
        if matches!(mode, Mode::Rotating | Mode::SameBytes) {
            let token = head.token.expect("a token");
            self.token.clear();
            self.token.extend_from_slice(&self.buf[token]);
        }
    }

    /// Writes a request and reads one response (head and content-length body) into
    /// the front of `buf`; returns what its head says. The previous response is
    /// dropped from `buf` first.
    async fn exchange(&mut self, req: &[u8]) -> Head {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        self.stream.write_all(req).await.expect("write");
        loop {
            if let Some(head) = Head::parse(&self.buf) {
                while self.buf.len() < head.len + head.content_length {
                    self.fill().await;
                }
                self.consumed = head.len + head.content_length;
                return head;
            }
            self.fill().await;
        }
    }

    /// Reads what has arrived into `buf`'s spare room: no zeroed chunk to copy from,
    /// which cost this loop more instructions than anything else it does.
    async fn fill(&mut self) {
        self.buf.reserve(4096);
        let n = self.stream.read_buf(&mut self.buf).await.expect("read");
        assert!(n > 0, "server closed the connection");
    }
}

/// What the load test reads from a response head.
struct Head {
    /// Bytes up to and including the blank line that ends the head.
    len: usize,
    /// The body's length (hyper always sends `content-length` for these answers).
    content_length: usize,
    /// Where in the head the `access-token` value is.
    token: Option<std::ops::Range<usize>>,
}

impl Head {
    /// Reads a head in one pass over its lines, as hyper writes them (`name: value`,
    /// names in lower case); `None` until the whole head has arrived. The lines are
    /// found with `memchr`: a loop comparing byte by byte, or a search per header
    /// wanted, costs more than the server's work for a header.
    fn parse(buf: &[u8]) -> Option<Head> {
        let (mut content_length, mut token) = (0, None);
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            let line = &buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Some(Head {
                    len: end + 1,
                    content_length,
                    token,
                });
            }
            if let Some(value) = line.strip_prefix(b"content-length: ") {
                content_length = value
                    .iter()
                    .try_fold(0usize, |n, &d| {
                        d.is_ascii_digit()
                            .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))?
                    })
                    .expect("a content-length");
            } else if line.starts_with(b"access-token: ") {
                token = Some(start + b"access-token: ".len()..start + line.len());
            }
            start = end + 1;
        }
        None
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers of the response `conn` read last, as (name, value length), sorted,
    /// and its body.
    fn shape(conn: &Conn) -> (Vec<(String, usize)>, Vec<u8>) {
        let response = &conn.buf[..conn.consumed];
        let head = Head::parse(response).expect("a whole response");
        let text = String::from_utf8_lossy(&response[..head.len]).into_owned();
        let mut headers: Vec<(String, usize)> = text
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_owned(), value.len()))
            .collect();
        headers.sort();
        (headers, response[head.len..].to_vec())
    }

    #[test]
    fn the_echoing_server_answers_with_the_rotating_answers_bytes() {
        let args = Args::parse_from(["baton-load", "--connections", "1"]);
        let (servers, server_rt) = start_servers(&args);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut real = Conn::sign_in(servers.real, "load0@example.com").await;
            let mut echo = real.same_client_on(servers.echo).await;
            real.request(Mode::Rotating).await;
            let sent = real.token.clone();
            let echo_sent = echo.token.clone();
            echo.request(Mode::SameBytes).await;
            assert_eq!(
                echo.token, echo_sent,
                "the echo answers with the token it was sent"
            );
            assert_ne!(real.token, b"", "the rotating answer carries a token");
            let (real_headers, real_body) = shape(&real);
            let (echo_headers, echo_body) = shape(&echo);
            assert_eq!(echo_headers, real_headers);
            assert_eq!(echo_body, real_body);
            // The echo answered with the token it was sent, not a successor (checked
            // above), so it authenticated nothing; the real server still accepts the
            // token it handed out, and rotates again.
            real.request(Mode::Rotating).await;
            assert_ne!(real.token, sent);
        });
        drop(server_rt);
    }

    #[test]
    fn a_head_is_read_once_it_is_whole() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-token: abc_-\r\nclient: c\r\ncontent-length: 12\r\ndate: x\r\n\r\n{\"data\": []}";
        let end = response.len() - 12;
        for cut in 0..end {
            assert!(Head::parse(&response[..cut]).is_none(), "{cut}");
        }
        let head = Head::parse(response).expect("a whole head");
        assert_eq!((head.len, head.content_length), (end, 12));
        assert_eq!(&response[head.token.expect("a token")], b"abc_-");
        let bare = Head::parse(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!((bare.content_length, bare.token), (0, None));
    }
}
