//! CORS: which origins may read responses (`--allowed-origins`), and the small service
//! that applies SPEC §3's rules around the app: it answers preflights and puts the
//! allowed origin and the exposed headers on every other answer.
//!
//! Written here rather than taken from tower-http's `CorsLayer`, which did the same for
//! this server at a cost the rotating request could not afford (BENCHMARKS.md, "The
//! axum demo's cost per request, shrunk": about 5k instructions a request against
//! 0.9k here): it builds a `HeaderMap` per request and merges it
//! into the answer's, and clones its whole configuration with the service each time.
//! Here the answer's headers are fixed values made once, and the service's clone is an
//! `Arc`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    VARY,
};
use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

/// Which origins may read the server's responses.
#[derive(Debug, Clone, Default)]
pub enum Cors {
    /// Every origin (`*`): credentials travel in headers, not cookies, so a page of
    /// another origin gains nothing it did not already hold.
    #[default]
    Any,
    /// Only these origins, each exactly as a browser writes its `Origin` header.
    Only(Vec<HeaderValue>),
}

impl Cors {
    /// Parses `--allowed-origins`: `*`, or origins separated by commas.
    pub fn parse(list: &str) -> Result<Cors, String> {
        let origins: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() || origins.contains(&"*") {
            return Ok(Cors::Any);
        }
        origins
            .into_iter()
            .map(|o| {
                if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                    return Err(format!(
                        "{o:?} is not an origin such as https://app.example"
                    ));
                }
                HeaderValue::from_str(o).map_err(|_| format!("{o:?} is not a header value"))
            })
            .collect::<Result<_, _>>()
            .map(Cors::Only)
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`: `*` for any
    /// origin; a listed origin itself; nothing for another (its browser then refuses
    /// the answer), or for a request with no `Origin`.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::Only(list) => origin.and_then(|o| list.iter().find(|a| *a == o)).cloned(),
        }
    }
}

/// What a [`CorsService`] answers: which origins may read, what is exposed to them,
/// and what preflights allow.
#[derive(Debug)]
pub struct CorsRules {
    origins: Cors,
    /// `Access-Control-Expose-Headers` on actual answers (Fetch reads it there only).
    expose: Option<HeaderValue>,
    /// The preflight's allowed methods, allowed headers and max age, if any.
    preflight: Vec<(HeaderName, HeaderValue)>,
}

/// `names` as one header value, comma-separated.
fn list<T: AsRef<str>>(names: &[T]) -> HeaderValue {
    let joined = names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",");
    // Header names and method names are tokens, so their list is a valid value.
    HeaderValue::from_str(&joined).unwrap_or(HeaderValue::from_static(""))
}

impl CorsRules {
    /// The rules of SPEC §3 for `origins`: `exposed` (the credential headers' names,
    /// listed) on every actual answer; preflights allow `methods` and `headers`,
    /// cached for `max_age`.
    pub fn new(
        origins: Cors,
        methods: &[Method],
        headers: &[HeaderName],
        exposed: HeaderValue,
        max_age: Duration,
    ) -> CorsRules {
        CorsRules {
            origins,
            expose: Some(exposed),
            preflight: vec![
                (ACCESS_CONTROL_ALLOW_METHODS, list(methods)),
                (ACCESS_CONTROL_ALLOW_HEADERS, list(headers)),
                (ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age.as_secs())),
            ],
        }
    }

    /// Only `origin` may read answers; nothing is exposed and preflights allow nothing
    /// beyond a simple request (the metrics listener's rules).
    pub fn only(origin: HeaderValue) -> CorsRules {
        CorsRules {
            origins: Cors::Only(vec![origin]),
            expose: None,
            preflight: Vec::new(),
        }
    }

    /// Whether answers depend on the request's origin, so caches must keep them apart.
    fn varies(&self) -> bool {
        matches!(self.origins, Cors::Only(_))
    }
}

/// Puts the headers every answer carries on `headers`: the allowed origin, and, when
/// the answer depends on the origin (`vary`), `Vary: origin` with the preflight's
/// request headers. Replaces any of the handler's own of those names but `Vary`.
fn apply(allow: Option<HeaderValue>, vary: bool, headers: &mut HeaderMap) {
    if let Some(allow) = allow {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    }
    if vary {
        headers.append(
            VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
    }
}

/// [`CorsRules`] around a service. Every `OPTIONS` request is a preflight, answered
/// here with an empty 200 and never passed on (so never authenticated or rotated);
/// every other answer of the inner service, errors included, gets the allowed origin
/// and the exposed headers. Clones share the rules.
#[derive(Debug)]
pub struct CorsService<S> {
    inner: S,
    rules: Arc<CorsRules>,
}

impl<S: Clone> Clone for CorsService<S> {
    fn clone(&self) -> Self {
        CorsService {
            inner: self.inner.clone(),
            rules: Arc::clone(&self.rules),
        }
    }
}

impl<S> CorsService<S> {
    /// `inner` under `rules`.
    pub fn new(inner: S, rules: CorsRules) -> Self {
        CorsService {
            inner,
            rules: Arc::new(rules),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CorsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = CorsFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let rules = &self.rules;
        let allow = rules.origins.allow(req.headers().get(ORIGIN));
        if req.method() == Method::OPTIONS {
            let mut response = Response::new(ResBody::default());
            let headers = response.headers_mut();
            apply(allow, rules.varies(), headers);
            for (name, value) in &rules.preflight {
                headers.insert(name, value.clone());
            }
            return CorsFuture {
                state: State::Preflight {
                    response: Some(response),
                },
            };
        }
        CorsFuture {
            state: State::Call {
                future: self.inner.call(req),
                allow,
                expose: rules.expose.clone(),
                vary: rules.varies(),
            },
        }
    }
}

pin_project! {
    /// [`CorsService`]'s future: the inner service's, whose answer gets the headers,
    /// or the preflight's answer.
    pub struct CorsFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Call {
            #[pin]
            future: F,
            allow: Option<HeaderValue>,
            expose: Option<HeaderValue>,
            vary: bool,
        },
        Preflight {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B, E> Future for CorsFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Call {
                future,
                allow,
                expose,
                vary,
            } => {
                let mut response = ready!(future.poll(cx))?;
                let headers = response.headers_mut();
                apply(allow.take(), *vary, headers);
                if let Some(expose) = expose.take() {
                    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose);
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Preflight { response } => Poll::Ready(Ok(response
                .take()
                .expect("CorsFuture polled after it completed"))),
        }
    }
}
