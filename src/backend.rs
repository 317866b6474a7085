//! One interface over every place sessions can live: the embedded [`Store`] (the
//! default) and, with the `redis` feature, [`RedisStore`](crate::RedisStore), which
//! runs the same decision table inside Redis so that several nodes share sessions.
//!
//! The methods are `async` so that a networked backend can wait for its server; the
//! embedded store answers before the future is first polled. Code written against
//! [`Backend`] (an HTTP layer, say) is generic over it, and a binary picks one at start:
//!
//! ```
//! use baton::{Backend, BackendError, Rejection};
//!
//! async fn check<B: Backend>(store: &B, uid: &str, client: &str, token: &str) -> u16 {
//!     match store.authenticate(uid, client, token).await {
//!         Ok(_next) => 200,                            // send `_next`'s five headers
//!         Err(BackendError::Refused(_why)) => 401,     // log `_why.reason()`
//!         Err(BackendError::Unavailable(_)) => 503,    // the client keeps its token
//!         Err(_) => 503,
//!     }
//! }
//! ```

use std::fmt;
use std::future::{ready, Future};

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
    // Only for the optional backends; the embedded store is never unavailable.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(detail: impl Into<String>) -> Self {
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
            BackendError::Refused(e) => Some(e),
            BackendError::Unavailable(u) => Some(u),
        }
    }
}

impl<E> From<Unavailable> for BackendError<E> {
    fn from(u: Unavailable) -> Self {
        BackendError::Unavailable(u)
    }
}

/// The operations of SPEC §2, with the same answers on every backend.
///
/// Results borrow only the caller's `uid`, never the store. Every future is `Send`, so
/// it can run on a multi-threaded runtime. See each method's namesake on [`Store`] for
/// what it answers.
pub trait Backend: Send + Sync {
    /// Signs `uid` in on a new device ([`Store::issue`]).
    fn issue<'a>(
        &'a self,
        uid: &'a str,
    ) -> impl Future<Output = Result<Credentials<'a>, BackendError<InputError>>> + Send + 'a;

    /// Checks a credential and rotates as the decision table says
    /// ([`Store::authenticate`]).
    fn authenticate<'a>(
        &'a self,
        uid: &'a str,
        client: &'a str,
        token: &'a str,
    ) -> impl Future<Output = Result<Authenticated<'a>, BackendError<Rejection>>> + Send + 'a;

    /// Ends one session; whether it was live ([`Store::revoke`]).
    fn revoke<'a>(
        &'a self,
        uid: &'a str,
        client: &'a str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send + 'a;

    /// Ends every session of `uid`; how many were live ([`Store::revoke_user`]).
    fn revoke_user<'a>(
        &'a self,
        uid: &'a str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send + 'a;

    /// The live sessions of `uid`, in sign-in order ([`Store::sessions`]).
    fn sessions<'a>(
        &'a self,
        uid: &'a str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send + 'a;

    /// Sessions held, all users. The embedded store sums its counters ([`Store::len`]:
    /// expired sessions count until swept); Redis walks every user and counts only
    /// live ones, so keep it to admin pages and slow metrics.
    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send + '_;

    /// This process's counters of answers given. On a shared backend each node counts
    /// only its own calls, and [`Stats::live`] is 0 there: use [`live`](Self::live).
    fn stats(&self) -> Stats;

    /// The decision table's settings.
    fn policy(&self) -> &Policy;

    /// The most live sessions one user may hold.
    fn max_clients_per_user(&self) -> usize;
}

impl<C: Clock> Backend for Store<C> {
    fn issue<'a>(
        &'a self,
        uid: &'a str,
    ) -> impl Future<Output = Result<Credentials<'a>, BackendError<InputError>>> + Send + 'a {
        ready(Store::issue(self, uid).map_err(BackendError::Refused))
    }

    fn authenticate<'a>(
        &'a self,
        uid: &'a str,
        client: &'a str,
        token: &'a str,
    ) -> impl Future<Output = Result<Authenticated<'a>, BackendError<Rejection>>> + Send + 'a {
        ready(Store::authenticate(self, uid, client, token).map_err(BackendError::Refused))
    }

    fn revoke<'a>(
        &'a self,
        uid: &'a str,
        client: &'a str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send + 'a {
        ready(Store::revoke(self, uid, client).map_err(BackendError::Refused))
    }

    fn revoke_user<'a>(
        &'a self,
        uid: &'a str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send + 'a {
        ready(Store::revoke_user(self, uid).map_err(BackendError::Refused))
    }

    fn sessions<'a>(
        &'a self,
        uid: &'a str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send + 'a {
        ready(Store::sessions(self, uid).map_err(BackendError::Refused))
    }

    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send + '_ {
        ready(Ok(self.len() as u64))
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
    fn unavailable_says_what_happened() {
        let e: BackendError<Rejection> = Unavailable::new("timed out after 500ms").into();
        assert_eq!(
            e.to_string(),
            "session store unavailable: timed out after 500ms"
        );
    }
}
