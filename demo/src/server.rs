//! Accepting connections, serving them with hyper, sweeping, and shutting down.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::response::Response;
use baton::Backend;
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use tower::{Service, ServiceExt};

use crate::app::AppState;
use crate::conn_limit::Requests;
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
    let app = routes::app(Arc::clone(&state));
    let too_large = routes::head_too_large(&state.cors);
    let max_head = state.limits.max_header_bytes;
    serve_with(listener, &state, app, shutdown, move |app, req| {
        let app = if routes::head_size(&req) > max_head {
            too_large.clone()
        } else {
            app
        };
        call(app, req)
    })
    .await
}

/// `app`'s answer to `req`, as [`serve`] answers each request (public for servers
/// that wrap the routes, so that they answer the same way). The router and the CORS
/// around it are always ready, so readiness is asked once with a no-op waker and the
/// request handed over at once, sparing each request `oneshot`'s state machine (and a
/// move of the request into it); a service that was not ready would still be waited
/// for.
pub async fn call<S>(mut app: S, req: Request<Incoming>) -> Response
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    let ready = app.poll_ready(&mut Context::from_waker(Waker::noop()));
    let answer = match ready {
        Poll::Ready(Ok(())) => app.call(req).await,
        Poll::Pending => app.oneshot(req).await,
        Poll::Ready(Err(never)) => match never {},
    };
    answer.unwrap_or_else(|never| match never {})
}

/// Serves `/metrics` ([`metrics_app`](crate::metrics_app)) on its own `listener`, never
/// the API's: per-reason counters would tell a client what the uniform 401 hides.
/// `api_origin` (`http://` and the API listener's address) is the one origin whose
/// scripts may read it.
pub async fn serve_metrics<B: Backend + 'static>(
    listener: TcpListener,
    state: Arc<AppState<B>>,
    api_origin: HeaderValue,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = routes::metrics_app(Arc::clone(&state), api_origin);
    serve_with(listener, &state, app, shutdown, call).await
}

/// [`serve`] with `handler` answering each request with `app` (a clone per request: an
/// [`App`](crate::routes::App)'s is a few `Arc`s'), and no sweep: the connection
/// settings of `state.limits`, the accept loop under `state.connections` (every
/// listener of one process shares that cap, as they share its open-files limit), each
/// request's peer address and in-flight mark, and graceful shutdown, for servers that
/// wrap its routes (the load test's echoing server, `src/bin/baton-load.rs`, does).
pub async fn serve_with<B: Backend, A, H, F>(
    listener: TcpListener,
    state: &AppState<B>,
    app: A,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> io::Result<()>
where
    A: Clone + Send + 'static,
    H: Fn(A, Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let limits = &state.limits;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
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
        let (app, handler, requests) = (app.clone(), handler.clone(), ticket.requests());
        let service = service_fn(move |mut req: Request<Incoming>| {
            // The connection is busy (never closed to make room) until the answer is
            // made; a handler that only waits can say so through `Requests::idle`.
            let in_flight = requests.start();
            // Sign-in's throttle keys on the client's address; one extension for both,
            // since each is a boxed entry in the request's map.
            req.extensions_mut().insert(Connection {
                peer,
                requests: requests.clone(),
            });
            let answer = handler(app.clone(), req);
            async move {
                let answer = answer.await;
                drop(in_flight);
                Ok::<_, Infallible>(answer)
            }
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
        () = tokio::time::sleep(limits.shutdown_grace) => {
            log::warn!("shutdown grace period over; dropping remaining connections");
        }
    }
    Ok(())
}

/// What the accept loop tells each request about its connection, in the request's
/// extensions: the client's address (sign-in's throttle keys on it) and the
/// connection's [`Requests`], through which a handler that only waits lets the
/// connection count as idle.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    pub(crate) requests: Requests,
}

async fn sweep<B: Backend>(state: Arc<AppState<B>>, sweep_once: fn(&B) -> usize) {
    // The first sweep one interval after start, not at once: a store just built holds
    // nothing expired, and a sweep that ran whenever the task was first scheduled
    // would race what the first requests do with a hand-moved clock.
    let period = state.sweep_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let removed = sweep_once(&state.store);
        if removed > 0 {
            log::debug!("swept {removed} expired sessions");
        }
    }
}
