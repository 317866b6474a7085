//! Writing the five headers devise clients read their next credentials from.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL};

use super::credentials::RequestCredentials;
use super::names::{ACCESS_TOKEN, CLIENT, EXPIRY, TOKEN_TYPE, UID};
use crate::Credentials;

/// A session's next credentials as header values, made once and put on the response
/// whatever the handler answers.
#[derive(Clone)]
pub struct AuthHeaders {
    token: HeaderValue,
    client: HeaderValue,
    expiry: HeaderValue,
    uid: HeaderValue,
}

impl std::fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("client", &self.client)
            .field("uid", &self.uid)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl AuthHeaders {
    /// The headers for `c`; `None` only if the uid cannot be a header value (a control
    /// character), which no uid read by [`read_credentials`](super::read_credentials)
    /// has.
    pub fn new(c: &Credentials<'_>) -> Option<AuthHeaders> {
        AuthHeaders::reusing(c, None, None)
    }

    /// [`new`](Self::new), for an answer to the request `sent` came from: where the
    /// request sent the session's client id and uid as headers of their own, the answer
    /// repeats those values (sharing the request's buffer) instead of copying them.
    pub fn for_request(c: &Credentials<'_>, sent: &RequestCredentials<'_>) -> Option<AuthHeaders> {
        AuthHeaders::reusing(c, sent.client_header, sent.uid_header)
    }

    /// The values not repeated are copied into this thread's [`Scratch`] block: this runs
    /// on every request.
    pub(crate) fn reusing(
        c: &Credentials<'_>,
        client_header: Option<&HeaderValue>,
        uid_header: Option<&HeaderValue>,
    ) -> Option<AuthHeaders> {
        let reuse = |sent: Option<&HeaderValue>, value: &str| match sent {
            Some(sent) if sent.as_bytes() == value.as_bytes() => Some(sent.clone()),
            _ => {
                let [copy] = Scratch::copy([value.as_bytes()]);
                value_of(copy)
            }
        };
        let mut digits = [0u8; 20];
        // The two values made anew on every request, copied together.
        let [token, expiry] =
            Scratch::copy([c.token().as_bytes(), decimal(c.expiry(), &mut digits)]);
        let mut token = value_of(token)?;
        token.set_sensitive(true);
        Some(AuthHeaders {
            token,
            client: reuse(client_header, c.client().as_str())?,
            expiry: value_of(expiry)?,
            uid: reuse(uid_header, c.uid())?,
        })
    }

    /// The `uid` value, which is the session's uid exactly.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn uid(&self) -> &HeaderValue {
        &self.uid
    }

    /// Puts the five headers and `Cache-Control: no-store` on a response, replacing
    /// any of theirs it had.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(ACCESS_TOKEN, self.token);
        headers.insert(TOKEN_TYPE, HeaderValue::from_static("Bearer"));
        headers.insert(CLIENT, self.client);
        headers.insert(EXPIRY, self.expiry);
        headers.insert(UID, self.uid);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Header values built per request, copied into one block per thread rather than
/// each into an allocation of its own: the allocations (one per value, since every
/// value is freed separately) cost more than building the values. A block is shared
/// by the values cut from it and freed, or reused in place, once they are all gone,
/// which is as soon as hyper has written their response.
struct Scratch;

/// Bytes per block: a few hundred values' worth.
const SCRATCH_BLOCK: usize = 8 * 1024;

thread_local! {
    static SCRATCH: std::cell::Cell<BytesMut> = std::cell::Cell::new(BytesMut::new());
}

impl Scratch {
    /// `parts` copied one after another into this thread's block, and cut from it
    /// each as `Bytes` of its own.
    fn copy<const N: usize>(parts: [&[u8]; N]) -> [Bytes; N] {
        SCRATCH
            .try_with(|cell| {
                let mut block = cell.take();
                let len = parts.iter().map(|p| p.len()).sum();
                if block.capacity() < len {
                    block.reserve(SCRATCH_BLOCK.max(len));
                }
                for part in parts {
                    block.extend_from_slice(part);
                }
                let cut = parts.map(|part| block.split_to(part.len()).freeze());
                cell.set(block);
                cut
            })
            // The thread is exiting and its block is gone: an allocation each.
            .unwrap_or_else(|_| parts.map(Bytes::copy_from_slice))
    }
}

/// `bytes` as a header value; `None` if they cannot be one.
fn value_of(bytes: Bytes) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 1_797_150_707, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn scratch_values_keep_their_bytes_across_blocks() {
        let mut kept = Vec::new();
        for i in 0..4 * SCRATCH_BLOCK {
            let text = format!("value-{i}");
            let [copy] = Scratch::copy([text.as_bytes()]);
            let value = value_of(copy).unwrap();
            // Keep some alive, so that blocks are both reused in place and left behind.
            if i % 97 == 0 {
                kept.push((text, value));
            }
        }
        let long = vec![b'x'; 3 * SCRATCH_BLOCK];
        let [short, long_copy, empty] = Scratch::copy([b"ab", &long, b""]);
        assert_eq!(
            (&short[..], &long_copy[..], &empty[..]),
            (&b"ab"[..], &long[..], &b""[..])
        );
        for (text, value) in &kept {
            assert_eq!(value.as_bytes(), text.as_bytes());
        }
        let [bad] = Scratch::copy([b"no\nnewlines"]);
        assert!(value_of(bad).is_none());
    }

    fn on_response(headers: AuthHeaders) -> HeaderMap {
        let mut map = HeaderMap::new();
        headers.apply(&mut map);
        map
    }

    #[test]
    fn repeats_the_request_values_only_when_they_are_the_sessions() {
        let store = crate::Store::new();
        let c = store.issue("a@example.com").unwrap();
        let (client, uid) = (c.client().as_str(), c.uid());
        let sent_client = HeaderValue::from_str(client).unwrap();
        let sent_uid = HeaderValue::from_static("someone-else@example.com");
        let headers = AuthHeaders::reusing(&c, Some(&sent_client), Some(&sent_uid)).unwrap();
        assert!(!format!("{headers:?}").contains(c.token().as_str()));
        let map = on_response(headers);
        assert_eq!(map[&ACCESS_TOKEN], c.token().as_str());
        assert!(map[&ACCESS_TOKEN].is_sensitive());
        assert_eq!(map[&TOKEN_TYPE], "Bearer");
        assert_eq!(map[&CLIENT], client);
        // The same bytes: the request's value itself, not a copy.
        assert_eq!(
            map[&CLIENT].as_bytes().as_ptr(),
            sent_client.as_bytes().as_ptr()
        );
        assert_eq!(
            map[&UID], uid,
            "a uid other than the session's is not repeated"
        );
        assert_eq!(map[&EXPIRY], c.expiry().to_string().as_str());
        assert_eq!(map[&CACHE_CONTROL], "no-store");
        assert_eq!(on_response(AuthHeaders::new(&c).unwrap())[&UID], uid);
    }
}
