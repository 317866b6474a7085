//! One interface over every place sessions can live: the embedded [`Store`] (the
//! default) and, with the `redis` feature, [`RedisStore`](crate::RedisStore), which
//! runs the same decision table inside Redis so that several nodes share sessions.
//!
//! The methods are `async` so that a networked backend can wait for its server; the
//! embedded store answers before the future is first polled, and says so through
//! [`Backend::authenticate_now`] and [`Backend::revoke_now`], which let a caller such as
//! the HTTP layer skip building a future at all. Code written against [`Backend`] is
//! generic over it; a binary that picks its backend at start can hold an
//! `Arc<dyn DynBackend>` instead, which is a [`Backend`] too, and compile its server once:
//!
//! ```
//! use std::sync::Arc;
//! use baton::{Backend, BackendError, DynBackend, Store};
//!
//! async fn check<B: Backend + ?Sized>(store: &B, uid: &str, client: &str, token: &str) -> u16 {
//!     match store.authenticate(uid, client, token).await {
//!         Ok(_next) => 200,                            // send `_next`'s five headers
//!         Err(BackendError::Refused(_why)) => 401,     // log `_why.reason()`
//!         Err(BackendError::Unavailable(_)) => 503,    // the client keeps its token
//!         Err(_) => 503,
//!     }
//! }
//!
//! let picked: Arc<dyn DynBackend> = Arc::new(Store::new()); // or a RedisStore
//! let _ = check(&*picked, "a@example.com", "client", "token"); // one `check` for both
//! ```
//!
//! Results borrow only the `uid` they were asked about (the [`Credentials`] repeat it);
//! the client id and token are only read, so a caller may drop them once the future is
//! done.

use std::fmt;
use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;

use crate::clock::Clock;
use crate::credentials::{Authenticated, Credentials, SessionInfo};
use crate::decision::Policy;
use crate::error::{InputError, Rejection};
use crate::stats::Stats;
use crate::store::Store;

/// The backend could not answer: its server is unreachable, too slow or restarting.
///
/// Nothing can be said about the credential, so this is not a rejection: answer it as
/// a temporary failure (HTTP 503), never as a 401 that would make clients drop their
/// tokens. An operation that timed out may still have taken effect on the server; a
/// rotation lost that way is what the batch and recovery windows absorb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    detail: String,
}

impl Unavailable {
    /// An outage described by `detail` (for logs: never put a token in it). For
    /// backends outside this crate, and tests of code that handles outages.
    pub fn new(detail: impl Into<String>) -> Self {
        Unavailable {
            detail: detail.into(),
        }
    }

    /// What went wrong, for logs. Never contains a token.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session store unavailable: {}", self.detail)
    }
}

impl std::error::Error for Unavailable {}

/// Why a [`Backend`] call did not succeed: the store answered and refused (`E` is the
/// embedded store's own error for that call), or it could not answer at all.
///
/// It only wraps, so it is transparent: `Display` and `source()` are the wrapped
/// error's own, and an error-chain printer says each cause once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError<E> {
    /// The store's answer: the same one the embedded store gives for the same state.
    Refused(E),
    /// No answer; see [`Unavailable`].
    Unavailable(Unavailable),
}

impl<E: fmt::Display> fmt::Display for BackendError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Refused(e) => e.fmt(f),
            BackendError::Unavailable(u) => u.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BackendError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::Refused(e) => e.source(),
            BackendError::Unavailable(u) => u.source(),
        }
    }
}

impl<E> From<Unavailable> for BackendError<E> {
    fn from(u: Unavailable) -> Self {
        BackendError::Unavailable(u)
    }
}

/// What [`Backend::authenticate`] answers.
pub type AuthResult<'u> = Result<Authenticated<'u>, BackendError<Rejection>>;

/// The operations of SPEC §2, with the same answers on every backend.
///
/// Results borrow only the caller's `uid`, never the store, the client id or the
/// token. Every future is `Send`, so it can run on a multi-threaded runtime. See each
/// method's namesake on [`Store`] for what it answers. Implemented for `Arc<B>` and for
/// `dyn DynBackend`, so a layer can share one backend and a binary can pick one at start.
pub trait Backend: Send + Sync {
    /// Signs `uid` in on a new device ([`Store::issue`]).
    fn issue<'u>(
        &self,
        uid: &'u str,
    ) -> impl Future<Output = Result<Credentials<'u>, BackendError<InputError>>> + Send;

    /// Checks a credential and rotates as the decision table says
    /// ([`Store::authenticate`]).
    fn authenticate<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> impl Future<Output = AuthResult<'u>> + Send;

    /// [`authenticate`](Self::authenticate)'s answer if the backend has it without
    /// waiting, and then the very same answer and state change; `None` (the default)
    /// if the caller must await `authenticate` instead, which has then not run.
    fn authenticate_now<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>> {
        let _ = (uid, client, token);
        None
    }

    /// Ends one session; whether it was live ([`Store::revoke`]).
    fn revoke(
        &self,
        uid: &str,
        client: &str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send;

    /// [`revoke`](Self::revoke) without waiting, as
    /// [`authenticate_now`](Self::authenticate_now) is to `authenticate`.
    fn revoke_now(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>> {
        let _ = (uid, client);
        None
    }

    /// Ends every session of `uid`; how many were live ([`Store::revoke_user`]).
    fn revoke_user(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send;

    /// The live sessions of `uid`, in sign-in order ([`Store::sessions`]).
    fn sessions(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send;

    /// Sessions held, all users. The embedded store sums its counters ([`Store::len`]:
    /// expired sessions count until swept); Redis counts live ones exactly, from sets
    /// its scripts keep (one small script per bucket, no walk over the users).
    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send;

    /// Reclaims expired sessions now; how many ([`Store::sweep`]). Call it every few
    /// seconds or minutes. A backend that expires sessions by itself (Redis keys carry
    /// their TTL) does nothing and answers 0.
    fn sweep(&self) -> usize;

    /// This process's counters of answers given. On a shared backend each node counts
    /// only its own calls, and [`Stats::live`] is 0 there: use [`live`](Self::live).
    fn stats(&self) -> Stats;

    /// The decision table's settings.
    fn policy(&self) -> &Policy;

    /// The most live sessions one user may hold.
    fn max_clients_per_user(&self) -> usize;
}

/// A boxed future, as [`DynBackend`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Backend`] as an object-safe trait, implemented for every `Backend`: hold an
/// `Arc<dyn DynBackend>` (itself a [`Backend`]) to choose the backend at run time.
///
/// What it costs: one indirect call per operation, and a boxed future only where the
/// backend must wait. The embedded store answers through
/// [`authenticate_now`](Backend::authenticate_now) and boxes nothing. Call it through
/// [`Backend`]; the methods here carry a `_dyn` suffix so that both traits can be in
/// scope without ambiguity.
pub trait DynBackend: Send + Sync {
    /// [`Backend::issue`].
    fn issue_dyn<'a, 'u: 'a>(
        &'a self,
        uid: &'u str,
    ) -> BoxFuture<'a, Result<Credentials<'u>, BackendError<InputError>>>;
    /// [`Backend::authenticate`].
    fn authenticate_dyn<'a, 'u: 'a>(
        &'a self,
        uid: &'u str,
        client: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, AuthResult<'u>>;
    /// [`Backend::authenticate_now`].
    fn authenticate_now_dyn<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>>;
    /// [`Backend::revoke`].
    fn revoke_dyn<'a>(
        &'a self,
        uid: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<bool, BackendError<InputError>>>;
    /// [`Backend::revoke_now`].
    fn revoke_now_dyn(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>>;
    /// [`Backend::revoke_user`].
    fn revoke_user_dyn<'a>(
        &'a self,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<usize, BackendError<InputError>>>;
    /// [`Backend::sessions`].
    fn sessions_dyn<'a>(
        &'a self,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, BackendError<InputError>>>;
    /// [`Backend::live`].
    fn live_dyn(&self) -> BoxFuture<'_, Result<u64, Unavailable>>;
    /// [`Backend::sweep`].
    fn sweep_dyn(&self) -> usize;
    /// [`Backend::stats`].
    fn stats_dyn(&self) -> Stats;
    /// [`Backend::policy`].
    fn policy_dyn(&self) -> &Policy;
    /// [`Backend::max_clients_per_user`].
    fn max_clients_per_user_dyn(&self) -> usize;
}

impl<B: Backend> DynBackend for B {
    fn issue_dyn<'a, 'u: 'a>(
        &'a self,
        uid: &'u str,
    ) -> BoxFuture<'a, Result<Credentials<'u>, BackendError<InputError>>> {
        Box::pin(self.issue(uid))
    }
    fn authenticate_dyn<'a, 'u: 'a>(
        &'a self,
        uid: &'u str,
        client: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, AuthResult<'u>> {
        Box::pin(self.authenticate(uid, client, token))
    }
    fn authenticate_now_dyn<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>> {
        self.authenticate_now(uid, client, token)
    }
    fn revoke_dyn<'a>(
        &'a self,
        uid: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<bool, BackendError<InputError>>> {
        Box::pin(self.revoke(uid, client))
    }
    fn revoke_now_dyn(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>> {
        self.revoke_now(uid, client)
    }
    fn revoke_user_dyn<'a>(
        &'a self,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<usize, BackendError<InputError>>> {
        Box::pin(self.revoke_user(uid))
    }
    fn sessions_dyn<'a>(
        &'a self,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, BackendError<InputError>>> {
        Box::pin(self.sessions(uid))
    }
    fn live_dyn(&self) -> BoxFuture<'_, Result<u64, Unavailable>> {
        Box::pin(self.live())
    }
    fn sweep_dyn(&self) -> usize {
        self.sweep()
    }
    fn stats_dyn(&self) -> Stats {
        self.stats()
    }
    fn policy_dyn(&self) -> &Policy {
        self.policy()
    }
    fn max_clients_per_user_dyn(&self) -> usize {
        self.max_clients_per_user()
    }
}

// For every lifetime of the object, so that `dyn DynBackend + '_` borrowed from an
// `Arc` is a backend too. Each future is an `async fn` around the boxed one: its type
// may name the caller's lifetimes one by one, where the box's cannot.
impl<'d> Backend for dyn DynBackend + 'd {
    async fn issue<'u>(&self, uid: &'u str) -> Result<Credentials<'u>, BackendError<InputError>> {
        self.issue_dyn(uid).await
    }
    async fn authenticate<'u>(&self, uid: &'u str, client: &str, token: &str) -> AuthResult<'u> {
        self.authenticate_dyn(uid, client, token).await
    }
    fn authenticate_now<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>> {
        self.authenticate_now_dyn(uid, client, token)
    }
    async fn revoke(&self, uid: &str, client: &str) -> Result<bool, BackendError<InputError>> {
        self.revoke_dyn(uid, client).await
    }
    fn revoke_now(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>> {
        self.revoke_now_dyn(uid, client)
    }
    async fn revoke_user(&self, uid: &str) -> Result<usize, BackendError<InputError>> {
        self.revoke_user_dyn(uid).await
    }
    async fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, BackendError<InputError>> {
        self.sessions_dyn(uid).await
    }
    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send {
        self.live_dyn()
    }
    fn sweep(&self) -> usize {
        self.sweep_dyn()
    }
    fn stats(&self) -> Stats {
        self.stats_dyn()
    }
    fn policy(&self) -> &Policy {
        self.policy_dyn()
    }
    fn max_clients_per_user(&self) -> usize {
        self.max_clients_per_user_dyn()
    }
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn issue<'u>(
        &self,
        uid: &'u str,
    ) -> impl Future<Output = Result<Credentials<'u>, BackendError<InputError>>> + Send {
        (**self).issue(uid)
    }
    fn authenticate<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> impl Future<Output = AuthResult<'u>> + Send {
        (**self).authenticate(uid, client, token)
    }
    fn authenticate_now<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>> {
        (**self).authenticate_now(uid, client, token)
    }
    fn revoke(
        &self,
        uid: &str,
        client: &str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send {
        (**self).revoke(uid, client)
    }
    fn revoke_now(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>> {
        (**self).revoke_now(uid, client)
    }
    fn revoke_user(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send {
        (**self).revoke_user(uid)
    }
    fn sessions(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send {
        (**self).sessions(uid)
    }
    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send {
        (**self).live()
    }
    fn sweep(&self) -> usize {
        (**self).sweep()
    }
    fn stats(&self) -> Stats {
        (**self).stats()
    }
    fn policy(&self) -> &Policy {
        (**self).policy()
    }
    fn max_clients_per_user(&self) -> usize {
        (**self).max_clients_per_user()
    }
}

impl<C: Clock> Backend for Store<C> {
    fn issue<'u>(
        &self,
        uid: &'u str,
    ) -> impl Future<Output = Result<Credentials<'u>, BackendError<InputError>>> + Send {
        ready(Store::issue(self, uid).map_err(BackendError::Refused))
    }

    fn authenticate<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> impl Future<Output = AuthResult<'u>> + Send {
        ready(Store::authenticate(self, uid, client, token).map_err(BackendError::Refused))
    }

    #[inline]
    fn authenticate_now<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>> {
        Some(Store::authenticate(self, uid, client, token).map_err(BackendError::Refused))
    }

    fn revoke(
        &self,
        uid: &str,
        client: &str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send {
        ready(Store::revoke(self, uid, client).map_err(BackendError::Refused))
    }

    fn revoke_now(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>> {
        Some(Store::revoke(self, uid, client).map_err(BackendError::Refused))
    }

    fn revoke_user(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send {
        ready(Store::revoke_user(self, uid).map_err(BackendError::Refused))
    }

    fn sessions(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send {
        ready(Store::sessions(self, uid).map_err(BackendError::Refused))
    }

    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send {
        ready(Ok(self.len() as u64))
    }

    fn sweep(&self) -> usize {
        Store::sweep(self)
    }

    fn stats(&self) -> Stats {
        Store::stats(self)
    }

    fn policy(&self) -> &Policy {
        Store::policy(self)
    }

    fn max_clients_per_user(&self) -> usize {
        Store::max_clients_per_user(self)
    }
}

/// The durable store: sign-ins and sign-outs wait for their commit (a few
/// milliseconds of fsync, on the calling thread); authentication answers at once.
#[cfg(feature = "persist")]
impl<C: Clock + 'static> Backend for crate::persist::PersistentStore<C> {
    fn issue<'u>(
        &self,
        uid: &'u str,
    ) -> impl Future<Output = Result<Credentials<'u>, BackendError<InputError>>> + Send {
        ready(crate::persist::PersistentStore::issue(self, uid))
    }

    fn authenticate<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> impl Future<Output = AuthResult<'u>> + Send {
        ready(
            self.authenticate(uid, client, token)
                .map_err(BackendError::Refused),
        )
    }

    #[inline]
    fn authenticate_now<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> Option<AuthResult<'u>> {
        Some(
            self.authenticate(uid, client, token)
                .map_err(BackendError::Refused),
        )
    }

    fn revoke(
        &self,
        uid: &str,
        client: &str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send {
        ready(crate::persist::PersistentStore::revoke(self, uid, client))
    }

    fn revoke_now(
        &self,
        uid: &str,
        client: &str,
    ) -> Option<Result<bool, BackendError<InputError>>> {
        Some(crate::persist::PersistentStore::revoke(self, uid, client))
    }

    fn revoke_user(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send {
        ready(crate::persist::PersistentStore::revoke_user(self, uid))
    }

    fn sessions(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send {
        ready(self.store().sessions(uid).map_err(BackendError::Refused))
    }

    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send {
        ready(Ok(self.store().len() as u64))
    }

    fn sweep(&self) -> usize {
        self.store().sweep()
    }

    fn stats(&self) -> Stats {
        self.store().stats()
    }

    fn policy(&self) -> &Policy {
        self.store().policy()
    }

    fn max_clients_per_user(&self) -> usize {
        self.store().max_clients_per_user()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn now<F: Future>(f: F) -> F::Output {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        // The embedded store's futures are ready on the first poll.
        let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the embedded store made a caller wait"),
        }
    }

    #[test]
    fn errors_are_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Unavailable>();
        check::<BackendError<Rejection>>();
        check::<BackendError<InputError>>();
    }

    #[test]
    fn the_embedded_store_answers_through_the_trait_as_it_does_directly() {
        async fn session<B: Backend>(b: &B) -> Result<(), BackendError<Rejection>> {
            let c = b.issue("a@example.com").await.expect("valid uid");
            let client = c.client().as_str().to_owned();
            let t0 = c.token().as_str().to_owned();
            let next = b.authenticate("a@example.com", &client, &t0).await?;
            assert!(next.is_rotated());
            assert_eq!(
                b.authenticate("a@example.com", &client, "nope").await,
                Err(BackendError::Refused(Rejection::InvalidToken))
            );
            assert_eq!(b.sessions("a@example.com").await.map(|s| s.len()), Ok(1));
            assert_eq!(b.live().await, Ok(1));
            assert_eq!(b.revoke("a@example.com", &client).await, Ok(true));
            assert_eq!(
                b.revoke_user("").await,
                Err(BackendError::Refused(InputError::EmptyUid))
            );
            Ok(())
        }
        let store = Store::builder()
            .clock(ManualClock::default())
            .build()
            .unwrap();
        now(session(&store)).unwrap();
        assert_eq!(Backend::stats(&store).rotated, 1);
    }

    #[test]
    fn through_arc_and_dyn_the_store_answers_at_once() {
        let store: Arc<dyn DynBackend> = Arc::new(Store::new());
        let c = now(store.issue("b@example.com")).unwrap();
        let (client, token) = (
            c.client().as_str().to_owned(),
            c.token().as_str().to_owned(),
        );
        let next = store
            .authenticate_now("b@example.com", &client, &token)
            .expect("the embedded store answers without waiting")
            .unwrap();
        assert!(next.is_rotated());
        // The answer outlives the client and token it was asked with.
        drop((client, token));
        assert_eq!(next.credentials().uid(), "b@example.com");
        let shared = Arc::new(store);
        assert_eq!(now(shared.live()), Ok(1));
        assert_eq!(
            shared.revoke_now("b@example.com", next.credentials().client().as_str()),
            Some(Ok(true))
        );
        assert_eq!(shared.sweep(), 0);
    }

    #[test]
    fn each_cause_is_reported_once() {
        use std::error::Error;
        let e = BackendError::Refused(Rejection::BadInput(InputError::EmptyUid));
        let mut chain = vec![e.to_string()];
        let mut at = e.source();
        while let Some(cause) = at {
            chain.push(cause.to_string());
            at = cause.source();
        }
        assert_eq!(chain, ["bad input", "uid is empty"]);
    }

    #[test]
    fn unavailable_says_what_happened() {
        let e: BackendError<Rejection> = Unavailable::new("timed out after 500ms").into();
        assert_eq!(
            e.to_string(),
            "session store unavailable: timed out after 500ms"
        );
    }
}
