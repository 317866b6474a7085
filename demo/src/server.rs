//! Accepting connections, serving them with hyper, sweeping, and shutting down.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use baton::Backend;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::reply::Reply;
use crate::routes;

/// hyper's read buffer, which bounds a request head before the server sees it. It is
/// larger than [`Limits::max_header_bytes`](crate::Limits) so that most oversized
/// heads reach the server's own check and get its JSON 431; a head past this gets
/// hyper's bare 431.
const READ_BUFFER: usize = 64 * 1024;

/// Serves `listener` until `shutdown` completes, then stops accepting, lets every
/// in-flight request finish (up to [`Limits::shutdown_grace`](crate::Limits)), and
/// returns. Also sweeps expired sessions every `state.sweep_interval`, when the store
/// needs it (`state.sweep`).
pub async fn serve<B: Backend + 'static>(
    listener: TcpListener,
    state: Arc<AppState<B>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let sweeper = state
        .sweep
        .map(|sweep_once| tokio::spawn(sweep(Arc::clone(&state), sweep_once)));
    let shutdown = async {
        shutdown.await;
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
    };
    serve_with(listener, state, shutdown, |state, req| async move {
        routes::handle(&state, req).await
    })
    .await
}

/// [`serve`] with `handler` answering each request instead of [`handle`](crate::handle),
/// and no sweep: the connection settings, accept loop and graceful shutdown of the
/// server, for servers that wrap its routes (the load test's echoing server,
/// `src/bin/baton-load.rs`, does).
pub async fn serve_with<B, H, F>(
    listener: TcpListener,
    state: Arc<AppState<B>>,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> io::Result<()>
where
    B: Backend + 'static,
    H: Fn(Arc<AppState<B>>, Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout)
        .max_buf_size(READ_BUFFER)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Past the cap the longest-idle connection is closed to make room (conn_limit.rs).
        let Some(ticket) = state.connections.admit(&state.counters.connections_shed) else {
            continue;
        };
        // Small responses: send each at once instead of waiting for more to coalesce.
        let _ = stream.set_nodelay(true);
        let (state, handler, requests) = (Arc::clone(&state), handler.clone(), ticket.requests());
        let service = service_fn(move |mut req: Request<Incoming>| {
            // Sign-in's throttle keys on the client's address; the connection is busy
            // (never closed to make room) while the request lives.
            req.extensions_mut().insert(peer);
            req.extensions_mut().insert(requests.start());
            let answer = handler(Arc::clone(&state), req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    log::debug!("connection ended: {e}");
                },
                () = ticket.closed() => log::debug!("connection closed to make room"),
            }
        });
    }

    drop(listener);
    log::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => log::info!("all connections closed"),
        () = tokio::time::sleep(state.limits.shutdown_grace) => {
            log::warn!("shutdown grace period over; dropping remaining connections");
        }
    }
    Ok(())
}

async fn sweep<B: Backend>(state: Arc<AppState<B>>, sweep_once: fn(&B) -> usize) {
    let mut tick = tokio::time::interval(state.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let removed = sweep_once(&state.store);
        if removed > 0 {
            log::debug!("swept {removed} expired sessions");
        }
    }
}
