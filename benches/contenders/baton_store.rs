//! baton itself, through its public API.

use baton::{Authenticated, Clock, Rejection, Store};

use super::{Answer, Contender, Creds, Granted, Kind, Reason, Settings, CLIENT_LEN, TOKEN_LEN};

pub struct Baton<C: Clock> {
    store: Store<C>,
}

impl<C: Clock> Baton<C> {
    pub fn new(settings: &Settings, clock: C) -> Self {
        Baton {
            store: settings.builder(clock).build().expect("settings in range"),
        }
    }
}

fn text<const N: usize>(s: &str) -> [u8; N] {
    s.as_bytes().try_into().expect("fixed-length text")
}

impl<C: Clock> Contender for Baton<C> {
    fn name(&self) -> &'static str {
        "baton"
    }

    fn issue(&self, uid: &str) -> Creds {
        let c = self.store.issue(uid).expect("benchmark uids are valid");
        Creds {
            client: text::<CLIENT_LEN>(c.client().as_str()),
            token: text::<TOKEN_LEN>(c.token().as_str()),
        }
    }

    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        match self.store.authenticate(uid, client, token) {
            Ok(a) => {
                let c = a.credentials();
                Ok(Granted {
                    kind: match a {
                        Authenticated::Rotated(_) => Kind::Rotated,
                        Authenticated::Batched(_) => Kind::Batched,
                    },
                    token: *c.token().as_bytes(),
                    expiry: c.expiry(),
                })
            }
            Err(r) => Err(match r {
                Rejection::UnknownSession => Reason::UnknownSession,
                Rejection::Expired => Reason::Expired,
                Rejection::Replayed => Reason::Replayed,
                Rejection::InvalidToken => Reason::InvalidToken,
                _ => Reason::BadInput,
            }),
        }
    }

    fn revoke(&self, uid: &str, client: &str) -> bool {
        self.store.revoke(uid, client).unwrap_or(false)
    }
}
