//! baton-load: how much per-request token rotation costs the demo server.
//!
//! Run it with `cargo run --release -p baton-demo --bin baton-load` (add `-- --help`).
//! It starts the server in-process on 127.0.0.1 (its own runtime and threads), then
//! drives it over keep-alive connections on loopback, alternating two phases:
//!
//! - `GET /public/items`: no credentials (the baseline);
//! - `GET /api/items`: the same answer behind authentication, each connection one
//!   signed-in client that presents the token of the previous answer, so every
//!   request rotates.
//!
//! It reports requests/s and latency percentiles of each, and the ratio. Traffic goes
//! to loopback only; every phase is bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::Store;
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
    /// Rounds of the two phases, alternating their order; figures are summed over
    /// rounds, and the median of the rounds' ratios is reported too, since other
    /// processes on a shared machine come and go between phases.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Send the credential headers in the baseline phase too (the server ignores them
    /// there), to separate the cost of parsing them from the cost of acting on them.
    #[arg(long)]
    baseline_with_headers: bool,
    /// Run only one phase, for profiling: `base` or `auth`.
    #[arg(long)]
    only: Option<String>,
    /// Server worker threads.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Load generator worker threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

const PASSWORD: &str = "load-test-password";

fn main() {
    let args = Args::parse();
    let (addr, _server) = start_server(&args);
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    load.block_on(run(addr, &args));
}

/// The server on its own runtime, as the binary would run it, but with cheap password
/// hashing: sign-ins happen before measuring and are not what is measured.
fn start_server(args: &Args) -> (SocketAddr, tokio::runtime::Runtime) {
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
    let state = Arc::new(AppState::new(Store::new(), users));
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound");
    rt.spawn(serve(listener, state, std::future::pending()));
    (addr, rt)
}

struct Phase {
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// CPU time the server's threads used, which other processes on the machine
    /// do not inflate the way they inflate wall-clock throughput.
    server_cpu: Duration,
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

    fn server_cpu_us_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests as f64
    }

    fn absorb(&mut self, other: Phase) {
        self.server_cpu += other.server_cpu;
        self.requests += other.requests;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }
}

async fn run(addr: SocketAddr, args: &Args) {
    let mut conns = Vec::new();
    for i in 0..args.connections {
        conns.push(Conn::sign_in(addr, &format!("load{i}@example.com")).await);
    }
    let secs = Duration::from_secs(args.seconds);
    // A short unmeasured warm-up of both paths.
    let base_mode = if args.baseline_with_headers {
        Mode::BaselineWithHeaders
    } else {
        Mode::Baseline
    };
    conns = phase(conns, base_mode, Duration::from_millis(500)).await.0;
    conns = phase(conns, Mode::Rotating, Duration::from_millis(500))
        .await
        .0;
    let empty = || Phase {
        requests: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        server_cpu: Duration::ZERO,
    };
    let (mut base, mut auth) = (empty(), empty());
    let mut ratios = Vec::new();
    let (run_base, run_auth) = match args.only.as_deref() {
        Some("base") => (true, false),
        Some("auth") => (false, true),
        _ => (true, true),
    };
    for round in 0..args.rounds {
        // Odd rounds run the phases in the other order, so that whatever the machine
        // does over time (other processes, CPU frequency) weighs on both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut rps = [f64::NAN; 2];
        for authenticated in order {
            if (authenticated && !run_auth) || (!authenticated && !run_base) {
                continue;
            }
            let mode = if authenticated {
                Mode::Rotating
            } else {
                base_mode
            };
            let (c, p) = phase(conns, mode, secs).await;
            rps[usize::from(authenticated)] = p.rps();
            if authenticated {
                auth.absorb(p)
            } else {
                base.absorb(p)
            }
            conns = c;
        }
        ratios.push(rps[1] / rps[0]);
    }
    ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "baton-load: {} connections, {} round(s) of {} s per phase, server {} threads, load {} threads, 127.0.0.1",
        args.connections, args.rounds, args.seconds, args.server_threads, args.client_threads
    );
    println!("| endpoint | requests | requests/s | p50 ms | p99 ms | server CPU µs/request |");
    println!("|---|---:|---:|---:|---:|---:|");
    let base_name = if args.baseline_with_headers {
        "GET /public/items (no auth; credential headers sent, ignored)"
    } else {
        "GET /public/items (no auth)"
    };
    for (name, p) in [
        (base_name, &mut base),
        ("GET /api/items (auth, rotating)", &mut auth),
    ] {
        let (p50, p99) = (p.percentile(0.50), p.percentile(0.99));
        println!(
            "| {name} | {} | {:.0} | {p50:.3} | {p99:.3} | {:.2} |",
            p.requests,
            p.rps(),
            p.server_cpu_us_per_request(),
        );
    }
    println!(
        "rotating / unauthenticated throughput: {:.1}% overall, {:.1}% median of {} rounds",
        100.0 * auth.rps() / base.rps(),
        100.0 * median_ratio,
        ratios.len()
    );
    println!(
        "unauthenticated / rotating server CPU per request: {:.1}%",
        100.0 * base.server_cpu_us_per_request() / auth.server_cpu_us_per_request()
    );
}

/// Every connection requests for `length`; returns the connections for the next phase.
/// What a phase requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `GET /public/items` without credentials.
    Baseline,
    /// `GET /public/items` with the credential headers, which it ignores.
    BaselineWithHeaders,
    /// `GET /api/items` with the credentials of the previous answer.
    Rotating,
}

async fn phase(conns: Vec<Conn>, mode: Mode, length: Duration) -> (Vec<Conn>, Phase) {
    let cpu_before = server_cpu();
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
        server_cpu: server_cpu().saturating_sub(cpu_before),
    };
    (out, phase)
}

/// CPU time so far of this process's threads named `server` (the server runtime's
/// workers), from the kernel's per-thread scheduler statistics, in nanoseconds.
fn server_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let is_server =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "server");
        if is_server {
            ns += std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
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
    token: String,
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
            token: String::new(),
        };
        let body = format!("email={}&password={PASSWORD}", email.replace('@', "%40"));
        let req = format!(
            "POST /auth/sign_in HTTP/1.1\r\nhost: l\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let end = c.exchange(req.as_bytes()).await;
        let head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200 "), "sign-in failed: {head}");
        c.client = header(&head, "client").expect("client header").to_owned();
        c.token = header(&head, "access-token").expect("token").to_owned();
        c
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
            req.extend_from_slice(self.token.as_bytes());
            req.extend_from_slice(b"\r\ntoken-type: Bearer\r\nclient: ");
            req.extend_from_slice(self.client.as_bytes());
            req.extend_from_slice(b"\r\nuid: ");
            req.extend_from_slice(self.uid.as_bytes());
            req.extend_from_slice(b"\r\n\r\n");
        } else {
            req.extend_from_slice(b"GET /public/items HTTP/1.1\r\nhost: l\r\n\r\n");
        }
        let head_len = self.exchange(&req).await;
        self.req = req;
        let head = &self.buf[..head_len];
        assert!(
            head.starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(head)
        );
        if mode == Mode::Rotating {
            let token = header_bytes(head, b"\r\naccess-token: ").expect("a token");
            self.token.clear();
            self.token
                .push_str(std::str::from_utf8(token).expect("ascii token"));
        }
    }

    /// Writes a request and reads one response (head and content-length body) into
    /// the front of `buf`; returns the length of the head. The previous response is
    /// dropped from `buf` first.
    async fn exchange(&mut self, req: &[u8]) -> usize {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        self.stream.write_all(req).await.expect("write");
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let len = header_bytes(&self.buf[..end + 2], b"\r\ncontent-length: ")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.fill().await;
                }
                self.consumed = end + 4 + len;
                return end;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The first position of `needle` in `hay`. Jumps between occurrences of its first
/// byte: comparing a window at every position costs more than the server's work.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(p) = hay.get(from..)?.iter().position(|&b| b == first) {
        let at = from + p;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The value after `prefix` (`\r\n` + lower-case name + `: `, as hyper writes it),
/// up to the end of its line.
fn header_bytes<'h>(head: &'h [u8], prefix: &[u8]) -> Option<&'h [u8]> {
    let start = find(head, prefix)? + prefix.len();
    let len = find(&head[start..], b"\r\n").unwrap_or(head.len() - start);
    Some(&head[start..start + len])
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}
