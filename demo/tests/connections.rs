//! Idle and slow clients cannot keep a fresh request out: past the connection cap the
//! longest-idle connection is closed, and a stalled request head is closed by the
//! head timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton_demo::conn_limit::{self, ConnLimit};
use common::{Server, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Half a request head, never finished.
const HALF_HEAD: &[u8] = b"GET /public/items HTTP/1.1\r\nhost: te";

async fn stall(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(HALF_HEAD).await.unwrap();
    s
}

/// Whether the server closed `s` within `within` (EOF or reset), having sent at most a
/// short error answer.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// A fresh request on a new connection, and how long its answer took.
async fn fresh(server: &Server) -> Duration {
    let t = Instant::now();
    let r = server.request("GET", "/public/items", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    t.elapsed()
}

#[tokio::test]
async fn past_the_cap_the_longest_idle_connection_is_closed_for_a_fresh_one() {
    let server = Server::with(|b| b, |state| state.connections = ConnLimit::new(4)).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall(server.addr).await);
        // Accepted in this order, so the first is the longest idle.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fresh(&server).await;
    assert!(
        closed_within(&mut stalled[0], PATIENCE).await,
        "the longest-idle connection was closed"
    );
    assert!(
        !closed_within(&mut stalled[3], Duration::from_millis(100)).await,
        "the newest stalled one is still open"
    );
    // The fresh request's connection made room, and the scrape's too unless the fresh
    // one had closed by then.
    let shed = server.metric("baton_connections_shed_total").await;
    assert!((1..=2).contains(&shed), "{shed}");
    assert!(server.state.connections.open() <= 4);
}

/// 2 000 connections that send half a head and stall; a fresh request is answered in
/// under 100 ms; the head timeout then closes every stalled one. Timed, hence ignored
/// outside CI's stress step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: 4 000 sockets and a timed assertion; run with --ignored"]
async fn two_thousand_stalled_heads_do_not_delay_a_fresh_request() {
    const STALLED: usize = 2000;
    let limit = conn_limit::raise_open_files_limit();
    assert!(
        limit.is_none_or(|n| n > 2 * STALLED as u64 + 512),
        "need more open files than {limit:?}"
    );
    let head_timeout = Duration::from_secs(3);
    let server = Server::with(
        |b| b,
        |state| state.limits.header_read_timeout = head_timeout,
    )
    .await;
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        stalled.push(stall(server.addr).await);
    }
    let opened = started.elapsed();
    // Let the server take in the last heads' bytes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.state.connections.open(), STALLED);
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        times.push(fresh(&server).await);
    }
    times.sort();
    let (median, worst) = (times[times.len() / 2], times[times.len() - 1]);
    println!(
        "{STALLED} stalled opened in {opened:?}; fresh request median {median:?}, worst {worst:?}"
    );
    assert!(worst < Duration::from_millis(100), "worst {worst:?}");
    // The head timeout closes them all: within it (counted from each one's first
    // bytes) plus a margin for a noisy machine.
    let deadline = started + head_timeout + Duration::from_secs(10);
    for s in &mut stalled {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(closed_within(s, left).await, "a stalled head still open");
    }
    let closed_after = started.elapsed();
    println!("all stalled closed {closed_after:?} after the first was opened");
    let deadline = Instant::now() + PATIENCE;
    while server.state.connections.open() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} open",
            server.state.connections.open()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metric("baton_connections_shed_total").await, 0);
}
