//! What the tower layer allocates per request, with a counting global allocator: over
//! the embedded store, nothing but the session's slot in the request's extensions and
//! the room the response's headers need (its token and expiry values come from a
//! per-thread block, amortised to nothing); no boxed future.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

use baton::http::{BatonLayer, Session, ACCESS_TOKEN, CLIENT, UID};
use baton::{AuthResult, Backend, Store};

#[global_allocator]
static GLOBAL: baton_support::Counting = baton_support::Counting;

use baton_support::allocations;

/// The embedded store, made to answer like a backend that must wait: the layer then
/// takes its boxed path.
struct Waits(Store);

impl Backend for Waits {
    async fn issue<'u>(
        &self,
        uid: &'u str,
    ) -> Result<baton::Credentials<'u>, baton::BackendError<baton::InputError>> {
        self.0.issue(uid).map_err(baton::BackendError::Refused)
    }
    async fn authenticate<'u>(&self, uid: &'u str, client: &str, token: &str) -> AuthResult<'u> {
        Backend::authenticate(&self.0, uid, client, token).await
    }
    async fn revoke(
        &self,
        u: &str,
        c: &str,
    ) -> Result<bool, baton::BackendError<baton::InputError>> {
        Backend::revoke(&self.0, u, c).await
    }
    async fn revoke_user(&self, u: &str) -> Result<usize, baton::BackendError<baton::InputError>> {
        Backend::revoke_user(&self.0, u).await
    }
    async fn sessions(
        &self,
        u: &str,
    ) -> Result<Vec<baton::SessionInfo>, baton::BackendError<baton::InputError>> {
        Backend::sessions(&self.0, u).await
    }
    async fn live(&self) -> Result<u64, baton::Unavailable> {
        Backend::live(&self.0).await
    }
    fn sweep(&self) -> usize {
        self.0.sweep()
    }
    fn stats(&self) -> baton::Stats {
        self.0.stats()
    }
    fn policy(&self) -> &baton::decision::Policy {
        self.0.policy()
    }
    fn max_clients_per_user(&self) -> usize {
        self.0.max_clients_per_user()
    }
}

type Body = Full<Bytes>;

/// The handler: a response with room for the headers, reading the session.
fn handler(req: Request<()>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    let mut r = Response::new(Body::from(Bytes::from_static(b"ok")));
    let rotated = req.extensions().get::<Session>().map(Session::rotated);
    *r.headers_mut() = HeaderMap::with_capacity(8);
    r.headers_mut().insert(
        "x-rotated",
        http::HeaderValue::from_static(match rotated {
            Some(true) => "1",
            _ => "0",
        }),
    );
    std::future::ready(Ok(r))
}

fn run<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Allocations per request over `rounds` rotating requests through `service`, after
/// warming up (the header block, the store's first shard growth).
fn per_request<S>(service: &mut S, store: &Store, rounds: u64) -> f64
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible>,
{
    let c = store.issue("alloc@example.com").unwrap();
    let mut held = (
        http::HeaderValue::from_str(c.client().as_str()).unwrap(),
        http::HeaderValue::from_str(c.token().as_str()).unwrap(),
    );
    let uid = http::HeaderValue::from_static("alloc@example.com");
    let mut counted = 0;
    for round in 0..rounds + 500 {
        // The request is the client's, built before counting starts.
        let mut req = Request::new(());
        req.headers_mut().reserve(4);
        req.headers_mut().insert(ACCESS_TOKEN, held.1.clone());
        req.headers_mut().insert(CLIENT, held.0.clone());
        req.headers_mut().insert(UID, uid.clone());
        let before = allocations();
        let r = run(service.call(req)).unwrap();
        let after = allocations();
        assert_eq!(r.headers()["x-rotated"], "1");
        held.1 = r.headers()[ACCESS_TOKEN].clone();
        drop(r);
        if round >= 500 {
            counted += after - before;
        }
    }
    counted as f64 / rounds as f64
}

#[test]
fn over_the_store_the_layer_allocates_only_the_extension_slot_and_never_boxes() {
    const ROUNDS: u64 = 5_000;
    let mut bare = tower::service_fn(handler);
    // Without the layer: the handler's own cost.
    let baseline = {
        let mut n = 0;
        for _ in 0..ROUNDS {
            let req = Request::new(());
            let before = allocations();
            let _ = run(bare.call(req));
            n += allocations() - before;
        }
        n as f64 / ROUNDS as f64
    };

    let store = Arc::new(Store::new());
    let mut direct = BatonLayer::new(Arc::clone(&store)).layer(tower::service_fn(handler));
    let layered = per_request(&mut direct, &store, ROUNDS);

    let waits = Arc::new(Waits(Store::new()));
    let mut boxed = BatonLayer::new(Arc::clone(&waits)).layer(tower::service_fn(handler));
    let through_box = per_request(&mut boxed, &waits.0, ROUNDS);

    println!("allocations per request: handler {baseline:.2}, layer over Store {layered:.2}, over a waiting backend {through_box:.2}");
    // The extensions map (its box and its table) and the session's box: three.
    assert!(
        layered <= baseline + 3.1,
        "{layered:.2} against {baseline:.2}"
    );
    // The waiting path boxes its future and copies the three credentials.
    assert!(
        through_box >= layered + 1.0,
        "{through_box:.2} against {layered:.2}"
    );
}
