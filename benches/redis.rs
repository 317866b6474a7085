//! `RedisStore` against the engine itself, and against the embedded store.
//!
//! Workload: every call presents its session's current token and rotates it (SPEC's
//! defaults), over 1 000 sessions, each owned by one caller; a caller keeps one call in
//! flight. For 1, 16 and 64 callers it measures, side by side and in turns:
//!
//! - `redis-benchmark` running `EVALSHA` of a trivial script (`return 1`, one key) with
//!   as many connections as callers: Redis's own limit for one script call per request;
//! - `RedisStore` with the callers as tokio tasks, over 1 connection and over 4;
//!
//! and for each run the server's script time per call (`INFO commandstats`), the
//! server's CPU per call (`INFO cpu`, every primary of a cluster) and the client's CPU
//! per call (`/proc/self/stat`: this process for `RedisStore`, the child for
//! `redis-benchmark`), so the cost splits into client and server. Then the embedded
//! store on the same workload, for the embedded ÷ Redis ratio.
//!
//! `bash .ci/redis.sh bench` starts a loopback Redis and runs it; by hand:
//! `BATON_REDIS_URL=redis://127.0.0.1:6390/0 cargo bench --features redis --bench redis`.
//! `BATON_REDIS_CLUSTER_URL=redis+cluster://h:p,...` adds the same table on a cluster
//! (`bash .ci/redis-cluster.sh bench` sets both). `BATON_BENCH_SECS` sets each run's
//! measuring time (default 3), `BATON_BENCH_ROUNDS` the turns (default 3); medians
//! are printed, with the range of the ratios.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use baton::{Authenticated, RedisStore, Store};

const SESSIONS: usize = 1000;
const CALLERS: [usize; 3] = [1, 16, 64];
const SECRET: &[u8; 32] = b"bench secret, 32 bytes long.....";
const TRIVIAL: &str = "return 1";

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn secs() -> Duration {
    Duration::from_secs_f64(env_f64("BATON_BENCH_SECS", 3.0))
}

fn uid(i: usize) -> String {
    format!("user{i}@example.com")
}

fn next_token(a: Authenticated<'_>) -> String {
    a.credentials().token().as_str().to_owned()
}

/// Whose CPU time [`cpu`] reads.
#[derive(Clone, Copy)]
enum Who {
    /// This process.
    Me,
    /// This process's waited-for children (`redis-benchmark`).
    Children,
}

/// CPU time (user + system) from `/proc/self/stat`, in clock ticks of 10 ms (Linux's
/// USER_HZ): a run of seconds makes that a fine enough grain.
fn cpu(who: Who) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14 to 17; `rest` starts at field 3.
    let ticks = match who {
        Who::Me => f[11] + f[12],
        Who::Children => f[13] + f[14],
    };
    Duration::from_millis(ticks * 10)
}

/// What one run measured.
#[derive(Clone, Copy, Default)]
struct Run {
    ops_per_sec: f64,
    client_cpu_us: f64,
    server_cpu_us: f64,
    script_us: f64,
}

/// The Redis servers a run talks to: one, or every primary of a cluster.
struct Servers {
    /// `host:port` of each primary.
    primaries: Vec<String>,
    cluster: bool,
}

impl Servers {
    fn of(url: &str) -> Servers {
        if let Some(rest) = url
            .strip_prefix("redis+cluster://")
            .or_else(|| url.strip_prefix("rediss+cluster://"))
        {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            let seed = rest.split(['/', ',']).next().unwrap().to_owned();
            let nodes = redis_cli(&seed, &["CLUSTER", "NODES"]);
            let primaries = nodes
                .lines()
                .filter(|l| l.contains("master") && !l.contains("fail"))
                .map(|l| {
                    let addr = l.split(' ').nth(1).unwrap();
                    addr.split('@').next().unwrap().to_owned()
                })
                .collect();
            Servers {
                primaries,
                cluster: true,
            }
        } else {
            let rest = url
                .strip_prefix("redis://")
                .expect("a redis:// or redis+cluster:// URL");
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            let addr = rest.split('/').next().unwrap().to_owned();
            Servers {
                primaries: vec![addr],
                cluster: false,
            }
        }
    }

    fn each(&self, args: &[&str]) -> Vec<String> {
        self.primaries.iter().map(|a| redis_cli(a, args)).collect()
    }

    fn reset(&self) {
        self.each(&["CONFIG", "RESETSTAT"]);
    }

    /// Seconds of CPU the primaries have used so far.
    fn cpu(&self) -> f64 {
        self.each(&["INFO", "cpu"])
            .iter()
            .map(|info| field(info, "used_cpu_user:") + field(info, "used_cpu_sys:"))
            .sum()
    }

    /// (calls, µs) of `EVALSHA` and `EVAL` since the last reset, over every primary.
    fn script_time(&self) -> (f64, f64) {
        let (mut calls, mut usec) = (0.0, 0.0);
        for info in self.each(&["INFO", "commandstats"]) {
            for line in info.lines() {
                if line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:") {
                    calls += field(line, "calls=");
                    usec += field(line, "usec=");
                }
            }
        }
        (calls, usec)
    }
}

fn field(text: &str, name: &str) -> f64 {
    let at = text.find(name).unwrap_or_else(|| panic!("{name} in INFO"));
    text[at + name.len()..]
        .split([',', '\r', '\n'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?} at {addr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Measures `work` (which returns the calls it made) against `servers`, with the
/// client CPU taken from `who`.
fn measured(servers: &Servers, who: Who, work: impl FnOnce() -> (u64, Duration)) -> Run {
    servers.reset();
    let (cpu0, server0) = (cpu(who), servers.cpu());
    let (calls, wall) = work();
    let (cpu1, server1) = (cpu(who), servers.cpu());
    let (script_calls, script_usec) = servers.script_time();
    let n = calls as f64;
    Run {
        ops_per_sec: n / wall.as_secs_f64(),
        client_cpu_us: (cpu1 - cpu0).as_secs_f64() * 1e6 / n,
        server_cpu_us: (server1 - server0) * 1e6 / n,
        script_us: script_usec / script_calls.max(1.0),
    }
}

/// `redis-benchmark` with `callers` connections, each sending `EVALSHA` of the
/// trivial script, for about `secs()`.
fn engine(servers: &Servers, callers: usize, rate_guess: f64) -> Run {
    let sha = servers.each(&["SCRIPT", "LOAD", TRIVIAL])[0]
        .trim()
        .to_owned();
    let (host, port) = servers.primaries[0].rsplit_once(':').unwrap();
    let n = ((rate_guess * secs().as_secs_f64()) as u64).max(1000);
    // A cluster routes by the key's slot: `{tag}` makes redis-benchmark spread the
    // calls over every primary, as baton's bucket hash tags do.
    let key = if servers.cluster {
        "bench:{tag}:__rand_int__"
    } else {
        "bench:__rand_int__"
    };
    measured(servers, Who::Children, || {
        let t0 = Instant::now();
        let mut cmd = Command::new("redis-benchmark");
        cmd.args(["-h", host, "-p", port, "-c", &callers.to_string()])
            .args(["-n", &n.to_string(), "-r", "100000", "--csv"]);
        if servers.cluster {
            cmd.arg("--cluster");
        }
        let out = cmd
            .args(["EVALSHA", &sha, "1", key])
            .output()
            .expect("redis-benchmark runs (apt-get install redis-tools)");
        let wall = t0.elapsed();
        assert!(
            out.status.success(),
            "redis-benchmark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (n, wall)
    })
}

/// `RedisStore` with `callers` tasks over `connections` connections.
fn on_redis(url: &str, servers: &Servers, callers: usize, connections: usize) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("bench-{}-{callers}-{connections}", std::process::id());
    let store = rt.block_on(async {
        RedisStore::builder(url)
            .secret(SECRET)
            .prefix(&prefix)
            .connections(connections)
            .connect()
            .await
            .expect("redis answers")
    });
    let store = Arc::new(store);
    let sessions: Vec<(String, String, String)> = rt.block_on(async {
        let mut sessions = Vec::with_capacity(SESSIONS);
        for i in 0..SESSIONS {
            let uid = uid(i);
            let c = store.issue(&uid).await.unwrap();
            let (client, token) = (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            );
            sessions.push((uid, client, token));
        }
        sessions
    });
    let run = measured(servers, Who::Me, || {
        rt.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let t0 = Instant::now();
            let tasks: Vec<_> = sessions
                .chunks(SESSIONS.div_ceil(callers))
                .map(|mine| {
                    let mut mine = mine.to_vec();
                    let (store, stop) = (store.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            for (uid, client, token) in mine.iter_mut() {
                                let a = store.authenticate(uid, client, token).await.unwrap();
                                *token = next_token(a);
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            tokio::time::sleep(secs()).await;
            stop.store(true, Ordering::Relaxed);
            let mut done = 0;
            for t in tasks {
                done += t.await.unwrap();
            }
            (done, t0.elapsed())
        })
    });
    rt.block_on(async {
        for i in 0..SESSIONS {
            store.revoke_user(&uid(i)).await.unwrap();
        }
    });
    run
}

/// Authenticate ops/s of the embedded store on `threads` threads.
fn embedded(threads: usize) -> f64 {
    let store = Arc::new(Store::new());
    let sessions: Vec<(String, String, String)> = (0..SESSIONS)
        .map(|i| {
            let uid = uid(i);
            let c = store.issue(&uid).unwrap();
            let (client, token) = (
                c.client().as_str().to_owned(),
                c.token().as_str().to_owned(),
            );
            (uid, client, token)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = sessions
        .chunks(SESSIONS.div_ceil(threads))
        .map(|mine| {
            let mut mine = mine.to_vec();
            let (store, stop, done, start) =
                (store.clone(), stop.clone(), done.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (uid, client, token) in mine.iter_mut() {
                        *token = next_token(store.authenticate(uid, client, token).unwrap());
                    }
                    n += mine.len() as u64;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(secs());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of each field over `runs`.
fn typical(runs: &[Run]) -> Run {
    let of = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    Run {
        ops_per_sec: of(|r| r.ops_per_sec),
        client_cpu_us: of(|r| r.client_cpu_us),
        server_cpu_us: of(|r| r.server_cpu_us),
        script_us: of(|r| r.script_us),
    }
}

/// The table for one deployment (a server or a cluster); returns the best
/// `RedisStore` rate seen.
fn deployment(name: &str, url: &str) -> f64 {
    let servers = Servers::of(url);
    let rounds = env_f64("BATON_BENCH_ROUNDS", 3.0).max(1.0) as usize;
    println!(
        "\n### {name} ({} primar{}), {rounds} rounds of {:?} per contender, medians\n",
        servers.primaries.len(),
        if servers.primaries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        secs()
    );
    println!(
        "| callers | contender | calls/s | ÷ redis-benchmark (range) | client CPU µs/call | server CPU µs/call | script µs/call |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut best = 0.0f64;
    for callers in CALLERS {
        let conns: &[usize] = if callers == 1 { &[1] } else { &[1, 4] };
        let mut engine_runs = Vec::new();
        let mut store_runs = vec![Vec::new(); conns.len()];
        let mut guess = 40_000.0;
        for _ in 0..rounds {
            let e = engine(&servers, callers, guess);
            guess = e.ops_per_sec;
            engine_runs.push(e);
            for (i, &c) in conns.iter().enumerate() {
                store_runs[i].push(on_redis(url, &servers, callers, c));
            }
        }
        let e = typical(&engine_runs);
        let row = |who: &str, r: &Run, ratio: &str| {
            println!(
                "| {callers} | {who} | {:.0} | {ratio} | {:.1} | {:.1} | {:.1} |",
                r.ops_per_sec, r.client_cpu_us, r.server_cpu_us, r.script_us
            );
        };
        row("redis-benchmark `EVALSHA` (return 1)", &e, "1.00");
        for (i, &c) in conns.iter().enumerate() {
            let runs = &store_runs[i];
            // Each round's ratio is against the same round's engine run.
            let ratios: Vec<f64> = runs
                .iter()
                .zip(&engine_runs)
                .map(|(s, e)| s.ops_per_sec / e.ops_per_sec)
                .collect();
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
            let r = typical(runs);
            best = best.max(r.ops_per_sec);
            let ratio = format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios));
            row(
                &format!(
                    "`RedisStore`, {c} connection{}",
                    if c == 1 { "" } else { "s" }
                ),
                &r,
                &ratio,
            );
        }
    }
    best
}

fn main() {
    let Ok(url) = std::env::var("BATON_REDIS_URL") else {
        eprintln!("redis bench skipped: set BATON_REDIS_URL (bash .ci/redis.sh bench does)");
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "workload: authenticate with the current token (every call rotates), {SESSIONS} sessions, {cores} cores"
    );
    let mut best = deployment("one server", &url);
    if let Ok(cluster) = std::env::var("BATON_REDIS_CLUSTER_URL") {
        best = best.max(deployment("Redis Cluster", &cluster));
    }
    let embedded = [(1, embedded(1)), (cores, embedded(cores))];
    println!("\n### embedded `Store` on the same workload\n");
    println!("| threads | calls/s | ÷ best `RedisStore` ({best:.0}/s) |");
    println!("|---:|---:|---:|");
    for (threads, rate) in embedded {
        println!("| {threads} | {rate:.0} | {:.0}× |", rate / best);
    }
}
