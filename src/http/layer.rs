//! The tower middleware: authenticates each request once, before the inner service,
//! and answers as SPEC §4's table says.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::credentials::{read_credentials, CredentialError};
use super::headers::AuthHeaders;
use super::session::{Handled, Session};
use crate::{AuthResult, Backend, BackendError, BoxFuture};

/// devise_token_auth's answer to a request its `authenticate_user!` refused.
const REFUSED: &str = r#"{"errors":["You need to sign in or sign up before continuing."]}"#;
/// The answer while the store cannot answer, in the same shape.
const UNAVAILABLE: &str =
    r#"{"errors":["The session store is unavailable. Please try again shortly."]}"#;

/// A tower [`Layer`] that puts baton in front of a service: see the [module
/// docs](super) for what it does per request. Clones share the backend and the
/// counters.
pub struct BatonLayer<B: ?Sized> {
    backend: Arc<B>,
    config: Config,
    counters: Arc<Counters>,
}

#[derive(Clone)]
struct Config {
    optional: bool,
    refused_status: StatusCode,
    refused: Bytes,
    unavailable: Bytes,
    retry_after: HeaderValue,
}

impl<B: Backend + ?Sized> BatonLayer<B> {
    /// A layer over `backend` that requires credentials on every request but `OPTIONS`.
    pub fn new(backend: Arc<B>) -> Self {
        BatonLayer {
            backend,
            config: Config {
                optional: false,
                refused_status: StatusCode::UNAUTHORIZED,
                refused: Bytes::from_static(REFUSED.as_bytes()),
                unavailable: Bytes::from_static(UNAVAILABLE.as_bytes()),
                retry_after: HeaderValue::from_static("1"),
            },
            counters: Arc::default(),
        }
    }

    /// Passes requests that carry no credentials at all to the inner service, with no
    /// [`Session`] in their extensions (sign-in pages, public resources). Unreadable or
    /// refused credentials still get the 401: a client that sent some meant them.
    pub fn optional(mut self) -> Self {
        self.config.optional = true;
        self
    }

    /// The body of the 401 (JSON; devise's `{"errors": [...]}` by default), for an
    /// endpoint whose clients expect another shape, such as devise's
    /// `{"success": false, "errors": [...]}` on `validate_token`.
    pub fn refusal_body(mut self, json: impl Into<Bytes>) -> Self {
        self.config.refused = json.into();
        self
    }

    /// The status of the refusal, if not 401: devise answers a sign-out that has no
    /// session to end with a 404. Still one answer for every reason. A status that is
    /// not a 4xx is ignored: a client's bad credential is never a success or a 5xx.
    pub fn refusal_status(mut self, status: StatusCode) -> Self {
        if status.is_client_error() {
            self.config.refused_status = status;
        }
        self
    }

    /// The body of the 503 sent while the store cannot answer (JSON; devise's
    /// `{"errors": [...]}` shape by default).
    pub fn unavailable_body(mut self, json: impl Into<Bytes>) -> Self {
        self.config.unavailable = json.into();
        self
    }

    /// The `Retry-After` of the 503 sent while the store is unavailable, in seconds
    /// (default 1).
    pub fn retry_after_secs(mut self, secs: u32) -> Self {
        self.config.retry_after = HeaderValue::from(secs);
        self
    }

    /// The backend the layer authenticates against.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// What the layer refused so far, by reason, summed over every service it built.
    pub fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }
}

impl<B: ?Sized> Clone for BatonLayer<B> {
    fn clone(&self) -> Self {
        BatonLayer {
            backend: Arc::clone(&self.backend),
            config: self.config.clone(),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<B: ?Sized> fmt::Debug for BatonLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatonLayer")
            .field("optional", &self.config.optional)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S, B: ?Sized> Layer<S> for BatonLayer<B> {
    type Service = BatonService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        BatonService {
            inner,
            shared: Arc::new(Shared {
                backend: Arc::clone(&self.backend),
                config: self.config.clone(),
                counters: Arc::clone(&self.counters),
            }),
        }
    }
}

/// What the layer refused, by reason (cumulative). The backend's own
/// [`Stats`](crate::Stats) break `refused` down by the store's reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Requests with no credentials, answered 401 (not counted in optional mode).
    pub missing: u64,
    /// Credentials that could not be read (incomplete, oversized, not UTF-8, a bad
    /// `Authorization`), answered 401 before any store call.
    pub unreadable: u64,
    /// Credentials the store refused, answered 401.
    pub refused: u64,
    /// Requests answered 503 because the store could not answer.
    pub unavailable: u64,
}

/// The layer's counters. Only refusals and outages write them, never an accepted
/// request, so one line per layer is no contention on the path that matters.
#[derive(Default)]
struct Counters {
    missing: AtomicU64,
    unreadable: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> LayerStats {
        // Relaxed: counters order nothing.
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LayerStats {
            missing: load(&self.missing),
            unreadable: load(&self.unreadable),
            refused: load(&self.refused),
            unavailable: load(&self.unavailable),
        }
    }
}

fn bump(counter: &AtomicU64) {
    // Relaxed: a count, ordering nothing.
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Shared<B: ?Sized> {
    backend: Arc<B>,
    config: Config,
    counters: Arc<Counters>,
}

/// A request the store accepted: the headers its answer gets and what the handler sees.
struct Accepted {
    headers: AuthHeaders,
    session: Session,
}

/// Why the inner service does not run.
enum Refusal {
    Unauthorized,
    Unavailable,
}

impl<B: ?Sized> Shared<B> {
    /// Turns the store's answer into what the layer does next; logs and counts a
    /// refusal by its reason, never with the credential.
    fn judge(
        &self,
        answer: AuthResult<'_>,
        client_header: Option<&HeaderValue>,
        uid_header: Option<&HeaderValue>,
    ) -> Result<Accepted, Refusal> {
        match answer {
            Ok(answer) => {
                let Some(headers) =
                    AuthHeaders::reusing(answer.credentials(), client_header, uid_header)
                else {
                    // Unreachable for uids read from headers; refused rather than sent broken.
                    bump(&self.counters.unreadable);
                    return Err(Refusal::Unauthorized);
                };
                let session = Session::accepted(&answer, &headers);
                Ok(Accepted { headers, session })
            }
            Err(BackendError::Refused(why)) => {
                bump(&self.counters.refused);
                tracing::debug!(target: "baton", reason = why.reason(), "credentials refused");
                Err(Refusal::Unauthorized)
            }
            // `Unavailable`, and whatever `BackendError` may add: none says the
            // credential is bad, so none is a 401 that would sign the client out.
            Err(e) => {
                bump(&self.counters.unavailable);
                tracing::warn!(target: "baton", error = %e, "session store unavailable");
                Err(Refusal::Unavailable)
            }
        }
    }

    fn unreadable(&self, e: CredentialError) -> Refusal {
        let counter = match e {
            CredentialError::Missing => &self.counters.missing,
            _ => &self.counters.unreadable,
        };
        bump(counter);
        tracing::debug!(target: "baton", reason = e.reason(), error = %e, "credentials unreadable");
        Refusal::Unauthorized
    }

    fn respond<T: From<Bytes>>(&self, refusal: Refusal) -> Response<T> {
        let (status, body) = match refusal {
            Refusal::Unauthorized => (self.config.refused_status, self.config.refused.clone()),
            Refusal::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                self.config.unavailable.clone(),
            ),
        };
        let mut r = Response::new(T::from(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(RETRY_AFTER, self.config.retry_after.clone());
        }
        r
    }
}

/// The middleware [`BatonLayer`] builds. Its error is the inner service's own; every
/// refusal is a response.
pub struct BatonService<S, B: ?Sized> {
    inner: S,
    shared: Arc<Shared<B>>,
}

impl<S: Clone, B: ?Sized> Clone for BatonService<S, B> {
    fn clone(&self) -> Self {
        BatonService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, B: ?Sized> fmt::Debug for BatonService<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatonService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// In a request's extensions when optional mode let it through without credentials,
/// so that an extractor can tell "no session" from "no layer".
#[derive(Clone, Copy, Debug)]
pub(crate) struct PassedWithoutSession;

impl<S, B, ReqBody, ResBody> Service<Request<ReqBody>> for BatonService<S, B>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    B: Backend + ?Sized + 'static,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Preflights are CORS's: untouched, no credentials asked, nothing rotated.
        if req.method() == Method::OPTIONS {
            return ResponseFuture::inner(self.inner.call(req), None);
        }
        let shared = &*self.shared;
        let sent = match read_credentials(req.headers()) {
            Ok(sent) => sent,
            Err(CredentialError::Missing) if shared.config.optional => {
                req.extensions_mut().insert(PassedWithoutSession);
                return ResponseFuture::inner(self.inner.call(req), None);
            }
            Err(e) => return ResponseFuture::answer(shared.respond(shared.unreadable(e))),
        };
        // The embedded store answers at once: no future, no box, no copy of the
        // credentials.
        if let Some(answer) = shared
            .backend
            .authenticate_now(&sent.uid, &sent.client, &sent.token)
        {
            let judged = shared.judge(answer, sent.client_header, sent.uid_header);
            return match judged {
                Ok(Accepted { headers, session }) => {
                    req.extensions_mut().insert(session);
                    ResponseFuture::inner(self.inner.call(req), Some(headers))
                }
                Err(refusal) => ResponseFuture::answer(shared.respond(refusal)),
            };
        }
        // A backend that must wait: its future borrows what it was given, so it gets
        // copies, and is boxed since its type cannot be named here.
        let (uid, client, token) = (
            sent.uid.clone().into_owned(),
            sent.client.clone().into_owned(),
            sent.token.clone().into_owned(),
        );
        let (client_header, uid_header) = (sent.client_header.cloned(), sent.uid_header.cloned());
        let shared = Arc::clone(&self.shared);
        let auth: BoxFuture<'static, Result<Accepted, Refusal>> = Box::pin(async move {
            let answer = shared.backend.authenticate(&uid, &client, &token).await;
            shared.judge(answer, client_header.as_ref(), uid_header.as_ref())
        });
        // The ready service goes with the request; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Authenticating {
                auth,
                waiting: Some((inner, req, self.shared.clone() as Arc<dyn Respond<ResBody>>)),
            },
        }
    }
}

pin_project! {
    /// [`BatonService`]'s future: a small state machine, boxed inside only while a
    /// backend that must wait is asked.
    pub struct ResponseFuture<F, S, ReqBody, ResBody> {
        #[pin]
        state: State<F, S, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, ReqBody, ResBody> {
        // The store is being asked; the inner service and the request wait.
        Authenticating {
            auth: BoxFuture<'static, Result<Accepted, Refusal>>,
            waiting: Option<(S, Request<ReqBody>, Arc<dyn Respond<ResBody>>)>,
        },
        // The inner service runs; `headers` go on its answer (none: leave it untouched).
        Inner {
            #[pin]
            future: F,
            headers: Option<AuthHeaders>,
        },
        // The layer's own answer.
        Answer {
            response: Option<Response<ResBody>>,
        },
    }
}

/// The one thing the waiting state needs of [`Shared`], without naming its backend.
trait Respond<T>: Send + Sync {
    fn respond(&self, refusal: Refusal) -> Response<T>;
}

impl<B: ?Sized + Send + Sync, T: From<Bytes>> Respond<T> for Shared<B> {
    fn respond(&self, refusal: Refusal) -> Response<T> {
        Shared::respond(self, refusal)
    }
}

impl<F, S, ReqBody, ResBody> ResponseFuture<F, S, ReqBody, ResBody> {
    fn inner(future: F, headers: Option<AuthHeaders>) -> Self {
        ResponseFuture {
            state: State::Inner { future, headers },
        }
    }

    fn answer(response: Response<ResBody>) -> Self {
        ResponseFuture {
            state: State::Answer {
                response: Some(response),
            },
        }
    }
}

impl<F, S, ReqBody, ResBody, E> Future for ResponseFuture<F, S, ReqBody, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    S: Service<Request<ReqBody>, Future = F, Response = Response<ResBody>, Error = E>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Authenticating { auth, waiting } => {
                    let judged = ready!(auth.as_mut().poll(cx));
                    let (mut inner, mut req, shared) = waiting
                        .take()
                        .expect("ResponseFuture polled after it completed");
                    match judged {
                        Ok(Accepted { headers, session }) => {
                            req.extensions_mut().insert(session);
                            let future = inner.call(req);
                            state.set(State::Inner {
                                future,
                                headers: Some(headers),
                            });
                        }
                        Err(refusal) => return Poll::Ready(Ok(shared.respond(refusal))),
                    }
                }
                StateProj::Inner { future, headers } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(headers) = headers.take() {
                        finish(&mut response, headers);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Answer { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after it completed");
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// The inner service's answer to an accepted request gets the session's next
/// credentials, whatever its status, unless the handler signed in or out.
fn finish<T>(response: &mut Response<T>, headers: AuthHeaders) {
    match response.extensions_mut().remove::<Handled>() {
        Some(Handled::SignedIn | Handled::SignedOut) => {}
        None => headers.apply(response.headers_mut()),
    }
}
