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

use std::net::SocketAddr;
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
    let (listen, demo_user) = (args.listen, args.demo_user());
    // The plain-text passwords are hashed into the state: keep no copy while serving.
    match args.store.clone() {
        StoreArg::Memory => {
            let state = args.state(HashCost::DEFAULT);
            drop(args);
            run(state, listen, demo_user).await
        }
        StoreArg::Redis(url) => {
            let state = args.redis_state(&url, HashCost::DEFAULT).await;
            drop(args);
            run(state, listen, demo_user).await
        }
    }
}

async fn run<B: Backend + 'static>(
    state: Result<AppState<B>, FlagError>,
    listen: SocketAddr,
    demo_user: bool,
) -> ExitCode {
    let state = match state {
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
    let addr = listener.local_addr().map_or(listen, |a| a);
    println!("baton-demo listening on http://{addr}");
    if demo_user {
        let (email, password) = cli::DEMO_USER;
        println!("demo user: {email} / password: {password}");
    }
    match serve(listener, Arc::new(state), stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
