//! baton-demo: a devise_token_auth-compatible server over a baton store.
//!
//! Run it with `cargo run --release -p baton-demo` (add `-- --help` for the flags). It
//! listens on 127.0.0.1:3000 and, unless `--users-file PATH` or `--user EMAIL:PASSWORD`
//! is given, prints a demo user to sign in as (only on a loopback address):
//!
//! ```text
//! curl -si -X POST localhost:3000/auth/sign_in -H 'content-type: application/json' \
//!      -d '{"email":"demo@example.com","password":"demo-password"}'
//! ```
//!
//! then send the `access-token`, `client` and `uid` headers it answers to
//! `GET /api/me`, and the new ones each answer carries to the next request.
//! `/metrics` is on its own listener, 127.0.0.1:9464 by default (`--metrics-listen`).
//! Or open http://127.0.0.1:3000 in a browser: the demo's page does the same and shows
//! the tokens rotate, batch and get refused, with the counters read from that listener.
//! SIGINT or SIGTERM stop it after in-flight requests finish.
//!
//! Sessions live in the process by default (`--store memory`). To share them between
//! several servers, point each at one Redis with the same secret:
//!
//! ```text
//! openssl rand -hex 32 > secret
//! cargo run --release -p baton-demo -- --store redis://127.0.0.1:6379/0 \
//!      --redis-secret-file secret --listen 127.0.0.1:3001
//! ```
//!
//! or at a Redis Cluster through some of its nodes, over TLS with a private CA, each
//! write waiting for one replica:
//!
//! ```text
//! cargo run --release -p baton-demo -- \
//!      --store rediss+cluster://10.0.0.1:6379,10.0.0.2:6379 --redis-ca-file ca.pem \
//!      --redis-replicas 1 --redis-secret-file secret
//! ```
//!
//! Redis need not be up first: until it answers, the server answers 503 and logs why.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use baton::Backend;
use baton_demo::cli::{FlagError, StoreArg};
use baton_demo::conn_limit;
use baton_demo::users::HashCost;
use baton_demo::{cli, serve, AppState, Cli};
use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    init_log(args.verbose);
    // Each connection is a descriptor: let the connection cap, not a default soft
    // limit of 1024, decide how many clients the server holds.
    if conn_limit::raise_open_files_limit().is_none() {
        log::warn!("could not raise the open-files limit");
    }
    let listen = (args.listen, args.metrics_listen);
    // The plain-text passwords are hashed into the state: keep no copy while serving.
    match args.store.clone() {
        StoreArg::Memory if args.redis_ca_file.is_some() || args.redis_replicas > 0 => {
            let flag = if args.redis_ca_file.is_some() {
                "--redis-ca-file"
            } else {
                "--redis-replicas"
            };
            eprintln!("error: {flag} is for a redis --store, not --store memory");
            ExitCode::from(2)
        }
        StoreArg::Memory if args.data_dir.is_some() => {
            let dir = args.data_dir.clone().expect("checked");
            let state = args.persistent_state(&dir, HashCost::DEFAULT);
            drop(args);
            let store = state.as_ref().ok().map(|s| Arc::clone(&s.store));
            let code = run(state, listen).await;
            // The last reference: closing writes the final checkpoint. A task still
            // holding one drops it as the runtime ends, which checkpoints too.
            if let Some(Ok(store)) = store.map(Arc::try_unwrap) {
                match store.close() {
                    Ok(()) => println!("sessions saved in {}", dir.display()),
                    Err(e) => {
                        eprintln!("error: the final checkpoint failed: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        StoreArg::Redis(_) if args.data_dir.is_some() => {
            eprintln!("error: --data-dir is for the embedded store, not a redis --store");
            ExitCode::from(2)
        }
        StoreArg::Memory => {
            let state = args.state(HashCost::DEFAULT);
            drop(args);
            run(state, listen).await
        }
        StoreArg::Redis(url) => {
            let state = args.redis_state(&url, HashCost::DEFAULT).await;
            drop(args);
            run(state, listen).await
        }
    }
}

async fn run<B: Backend + 'static>(
    state: Result<AppState<B>, FlagError>,
    (listen, metrics_listen): (SocketAddr, SocketAddr),
) -> ExitCode {
    let mut state = match state {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen} (--listen): {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics_listener = match TcpListener::bind(metrics_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {metrics_listen} (--metrics-listen): {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = reachable(listener.local_addr().map_or(listen, |a| a));
    let metrics_addr = reachable(metrics_listener.local_addr().map_or(metrics_listen, |a| a));
    println!("baton-demo listening on http://{addr}");
    println!("metrics on http://{metrics_addr}/metrics");
    // The page (`GET /` on the API listener) reads the counters from the metrics
    // listener, which lets scripts of the API's origin read them.
    state.metrics_url = Some(format!("http://{metrics_addr}/metrics"));
    let demo_user = state.demo_user;
    let state = Arc::new(state);
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_origin = http::HeaderValue::from_str(&format!("http://{addr}"))
        .unwrap_or(http::HeaderValue::from_static("null"));
    let metrics = tokio::spawn(baton_demo::serve_metrics(
        metrics_listener,
        Arc::clone(&state),
        api_origin,
        async {
            let _ = metrics_stopped.await;
        },
    ));
    if demo_user {
        let (email, password) = cli::DEMO_USER;
        println!("demo user: {email} / password: {password}");
    }
    let served = serve(listener, state, stop_signal()).await;
    let _ = stop_metrics.send(());
    let _ = metrics.await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A listener's address as a browser on this machine reaches it: an unspecified one
/// (`0.0.0.0`, `[::]`) as the loopback of its family, so that the URLs printed and
/// given to the page, and the origin the metrics listener allows, are ones a browser
/// can use.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, SIGINT still stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Log lines to stderr: info and up, debug with `--verbose`. Nothing logged carries
/// a token or password.
fn init_log(verbose: bool) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.target().starts_with("baton")
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!("[{}] {}", r.level(), r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
    }
}
