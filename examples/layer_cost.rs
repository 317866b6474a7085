//! A fixed number of rotating requests through `BatonLayer` over the embedded store,
//! or through the same steps written by hand (read the credentials, authenticate, build
//! and put the five headers), for counting instructions per request with callgrind
//! (see BENCHMARKS.md, "The tower layer"):
//!
//! ```sh
//! cargo build --release --example layer_cost --features tower
//! valgrind --tool=callgrind target/release/examples/layer_cost layer 20000
//! valgrind --tool=callgrind target/release/examples/layer_cost layer 120000
//! # the same with `glue` instead of `layer`; difference / 100 000 per request;
//! # a third argument `ext` gives every request an extension first, as axum's router does
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use baton::http::{read_credentials, AuthHeaders, BatonLayer, Session, ACCESS_TOKEN, CLIENT, UID};
use baton::Store;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

type Body = Full<Bytes>;

#[derive(Clone, Copy)]
struct Routed;

/// The handler both ways: a response with room for the headers.
fn respond(rotated: bool) -> Response<Body> {
    let mut r = Response::new(Body::from(Bytes::from_static(b"ok")));
    *r.headers_mut() = HeaderMap::with_capacity(8);
    r.headers_mut().insert(
        "x-rotated",
        HeaderValue::from_static(if rotated { "1" } else { "0" }),
    );
    r
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

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "layer".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    // `ext`: each request arrives with an extension already, as one routed by axum
    // does (its path and URI), so its extension map exists before the layer's insert.
    let routed = args.next().is_some_and(|a| a == "ext");
    let store = Arc::new(Store::new());
    let c = store.issue("cost@example.com").expect("a valid uid");
    let client = HeaderValue::from_str(c.client().as_str()).expect("ascii");
    let uid = HeaderValue::from_static("cost@example.com");
    let mut token = HeaderValue::from_str(c.token().as_str()).expect("ascii");
    let mut layered = BatonLayer::new(Arc::clone(&store)).layer(tower::service_fn(
        |req: Request<()>| async move {
            let rotated = req
                .extensions()
                .get::<Session>()
                .is_some_and(Session::rotated);
            Ok::<_, Infallible>(respond(rotated))
        },
    ));
    let mut rotations = 0u64;
    for _ in 0..n {
        let mut req = Request::new(());
        req.headers_mut().insert(ACCESS_TOKEN, token.clone());
        req.headers_mut().insert(CLIENT, client.clone());
        req.headers_mut().insert(UID, uid.clone());
        if routed {
            req.extensions_mut().insert(Routed);
        }
        let r = match mode.as_str() {
            "layer" => run(layered.call(req)).expect("infallible"),
            _ => {
                let sent = read_credentials(req.headers()).expect("readable");
                let answer = store
                    .authenticate(&sent.uid, &sent.client, &sent.token)
                    .expect("accepted");
                let headers =
                    AuthHeaders::for_request(answer.credentials(), &sent).expect("a header");
                let mut r = respond(answer.is_rotated());
                headers.apply(r.headers_mut());
                r
            }
        };
        rotations += u64::from(r.headers()["x-rotated"] == "1");
        token = r.headers()[ACCESS_TOKEN].clone();
    }
    assert_eq!(rotations, n, "every request rotated");
    println!("{mode}: {n} rotating requests");
}
