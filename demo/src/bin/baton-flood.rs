//! baton-flood: what a password-guessing flood does to the demo server's other clients.
//!
//! Run it with `cargo run --release -p baton-demo --bin baton-flood` (add `-- --help`;
//! server flags go after `--`, e.g. `-- --sign-in-address-burst 5`). For each phase it
//! starts a fresh server in-process on 127.0.0.1 (its own runtime: 2 workers and the
//! hashing pool, real Argon2 cost), signs one client in, and has it rotate on
//! `GET /api/items` over a keep-alive connection for `--seconds`, while N clients send
//! wrong passwords for that same account as fast as they are answered (keep-alive,
//! from `--sources` loopback addresses 127.0.1.x; the rotating client is 127.0.0.2).
//! Phase 0 has no flood: the baseline. With `--public` the clients send
//! `GET /public/items` instead (counted under "throttled"): the same traffic without
//! a sign-in in it.
//!
//! It reports the rotating client's p50/p99, and the guesses the server accepted (a
//! hash computed, answered 401) per minute against what the throttle allows the
//! flood's addresses together. Traffic goes to loopback only; every phase is bounded
//! in time and in guesses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_demo::users::HashCost;
use baton_demo::{serve, Cli as ServerCli};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[derive(Debug, Parser)]
#[command(
    name = "baton-flood",
    about = "Sign-in flood against baton-demo on loopback"
)]
struct Args {
    /// Concurrent guessing clients, one phase each (after a phase without).
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    clients: Vec<usize>,
    /// Loopback addresses the guessing clients spread over (1 to 250).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    sources: u8,
    /// Length of each phase, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Send `GET /public/items` instead of guesses: the same request volume with no
    /// sign-in in it, to tell what a flood costs as traffic alone.
    #[arg(long)]
    public: bool,
    /// Guesses at most per phase, all clients together.
    #[arg(long, default_value_t = 2_000_000)]
    max_guesses: u64,
    /// Flags for the server (after `--`), as baton-demo takes them.
    #[arg(last = true)]
    server: Vec<String>,
}

const EMAIL: &str = "flood@example.com";
const PASSWORD: &str = "the-real-password";

fn main() {
    let args = Args::parse();
    let phases = std::iter::once(0).chain(args.clients.iter().copied());
    println!(
        "{:>8} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>12} {:>12}",
        "guessers",
        "sources",
        "p50 ms",
        "p99 ms",
        "rotations",
        "guesses",
        "throttled",
        "busy",
        "accepted/min",
        "allowed/min"
    );
    let mut baseline_p99 = None;
    for clients in phases {
        let r = phase(&args, clients);
        let p99 = r.percentile(0.99);
        let base = *baseline_p99.get_or_insert(p99);
        let minutes = r.elapsed.as_secs_f64() / 60.0;
        println!(
            "{:>8} {:>7} {:>10.3} {:>10.3} {:>9} {:>9} {:>9} {:>8} {:>12.1} {:>12.1}{}",
            clients,
            if clients == 0 { 0 } else { args.sources },
            r.percentile(0.5),
            p99,
            r.latencies.len(),
            r.guesses,
            r.throttled,
            r.busy,
            r.accepted as f64 / minutes,
            r.allowed as f64 / minutes,
            if clients == 0 {
                String::new()
            } else {
                format!("   p99 {:.2}x baseline", p99 / base)
            }
        );
        if r.accepted > r.allowed {
            println!(
                "  accepted {} guesses, over the {} allowed",
                r.accepted, r.allowed
            );
        }
        if r.other > 0 {
            println!("  {} answers other than 401, 429 or 503", r.other);
        }
    }
}

struct Report {
    latencies: Vec<f64>,
    guesses: u64,
    accepted: u64,
    throttled: u64,
    busy: u64,
    other: u64,
    /// Guesses the throttle may let through in `elapsed`.
    allowed: u64,
    elapsed: Duration,
}

impl Report {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

#[derive(Default)]
struct Counts {
    guesses: AtomicU64,
    accepted: AtomicU64,
    throttled: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

fn phase(args: &Args, clients: usize) -> Report {
    let user = format!("{EMAIL}:{PASSWORD}");
    let cli = ServerCli::try_parse_from(
        ["baton-demo", "--user", &user]
            .into_iter()
            .map(str::to_owned)
            .chain(args.server.iter().cloned()),
    )
    .unwrap_or_else(|e| e.exit());
    let policy = cli.throttle_policy();
    let state = cli.state(HashCost::DEFAULT).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    // The server on its own runtime, as the binary runs it.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = server_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn(serve(listener, Arc::new(state), async {
        let _ = stopped.await;
    }));

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = client_rt.block_on(async {
        let counts = Arc::new(Counts::default());
        let running = Arc::new(AtomicBool::new(true));
        let mut rotating = Conn::open(loopback(0, 2), addr).await;
        let mut creds = rotating
            .sign_in(PASSWORD)
            .await
            .expect("the real user signs in");
        let flood: Vec<_> = (0..clients)
            .map(|i| {
                let from = loopback(1, 1 + (i % usize::from(args.sources)) as u8);
                let (counts, running, max) =
                    (Arc::clone(&counts), Arc::clone(&running), args.max_guesses);
                tokio::spawn(guess(from, addr, counts, running, max, args.public))
            })
            .collect();
        let length = Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut latencies = Vec::new();
        while started.elapsed() < length {
            let t = Instant::now();
            creds = rotating.rotate(&creds).await;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        }
        running.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed();
        for f in flood {
            let _ = f.await;
        }
        latencies.sort_by(f64::total_cmp);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Per address: the burst and one per refill, times the addresses used; per
        // account: the same for the one account; the throttle holds both.
        let secs = elapsed.as_secs_f64();
        let bound = |a: baton_demo::signin::Allowance, n: u64| {
            n * (u64::from(a.burst.get()) + (secs / a.refill.as_secs_f64()) as u64)
        };
        let sources = u64::from(args.sources).min(clients as u64);
        Report {
            latencies,
            guesses: c(&counts.guesses),
            accepted: c(&counts.accepted),
            throttled: c(&counts.throttled),
            busy: c(&counts.busy),
            other: c(&counts.other),
            allowed: bound(policy.per_address, sources).min(bound(policy.per_account, 1)),
            elapsed,
        }
    });
    let _ = stop.send(());
    let _ = server_rt.block_on(server);
    report
}

fn loopback(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, c, d))
}

/// Wrong passwords for the account, back to back, until told to stop.
async fn guess(
    from: IpAddr,
    to: SocketAddr,
    counts: Arc<Counts>,
    running: Arc<AtomicBool>,
    max: u64,
    public: bool,
) {
    let body = format!(r#"{{"email":"{EMAIL}","password":"not-it"}}"#);
    let req = if public {
        "GET /public/items HTTP/1.1\r\nhost: flood\r\n\r\n".to_owned()
    } else {
        format!(
            "POST /auth/sign_in HTTP/1.1\r\nhost: flood\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut conn = Conn::open(from, to).await;
    while running.load(Ordering::Relaxed) && counts.guesses.fetch_add(1, Ordering::Relaxed) < max {
        let counter = match conn.exchange(req.as_bytes()).await {
            Some(a) => match a.status {
                401 => &counts.accepted,
                // --public: answered, and no guess.
                200 => &counts.throttled,
                429 => &counts.throttled,
                503 => &counts.busy,
                _ => &counts.other,
            },
            None => {
                // Closed by the server: count it and come back on a new connection.
                conn = Conn::open(from, to).await;
                &counts.other
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The headers a rotating client sends back.
struct Creds {
    token: String,
    client: String,
    uid: String,
}

impl Conn {
    async fn open(from: IpAddr, to: SocketAddr) -> Conn {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("cannot bind {from} (Linux routes 127/8 to lo): {e}"));
        let stream = socket.connect(to).await.expect("the server accepts");
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    async fn sign_in(&mut self, password: &str) -> Option<Creds> {
        let body = format!(r#"{{"email":"{EMAIL}","password":"{password}"}}"#);
        let req = format!(
            "POST /auth/sign_in HTTP/1.1\r\nhost: flood\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let a = self.exchange(req.as_bytes()).await?;
        (a.status == 200).then(|| Creds::of(&a))?
    }

    async fn rotate(&mut self, c: &Creds) -> Creds {
        let req = format!(
            "GET /api/items HTTP/1.1\r\nhost: flood\r\naccess-token: {}\r\nclient: {}\r\nuid: {}\r\n\r\n",
            c.token, c.client, c.uid
        );
        let a = self.exchange(req.as_bytes()).await.expect("an answer");
        assert_eq!(a.status, 200, "the rotating client was refused");
        Creds::of(&a).expect("the answer carries credentials")
    }

    /// Sends `req` and reads one answer, `None` if the connection closed.
    async fn exchange(&mut self, req: &[u8]) -> Option<Answer> {
        self.stream.write_all(req).await.ok()?;
        loop {
            if let Some((answer, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(answer);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Creds {
    fn of(a: &Answer) -> Option<Creds> {
        Some(Creds {
            token: a.header("access-token")?.to_owned(),
            client: a.header("client")?.to_owned(),
            uid: a.header("uid")?.to_owned(),
        })
    }
}

/// One whole answer at the start of `buf` and its length, or `None` if more is needed.
fn parse(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    (buf.len() >= end + length).then_some((Answer { status, headers }, end + length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_once_whole() {
        let raw =
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 6\r\ncontent-length: 2\r\n\r\n{}";
        assert!(parse(&raw[..raw.len() - 1]).is_none());
        let (a, used) = parse(raw).unwrap();
        assert_eq!((a.status, used), (429, raw.len()));
        assert_eq!(a.header("retry-after"), Some("6"));
    }
}
