//! Arbitrary header sets into `baton::http::read_credentials`, the function the tower
//! layer (and the demo server on it) reads every request's credentials with: the five devise_token_auth headers
//! in any case and any number, and `Authorization: Bearer` with base64 of arbitrary
//! JSON in every alphabet, or of arbitrary bytes.
//!
//! Run: `cargo +nightly fuzz run credentials` (from `fuzz/`; see the README).
//!
//! Beyond "never panics", it checks that whatever is read is trimmed, non-empty, within
//! its limit, writable back as a header value and came from the request; that three plain headers are always enough;
//! and that oversized input is refused early: a counting allocator bounds what one
//! call allocates, whatever the size of the headers, so a huge value that was decoded
//! or copied before its length was checked fails the run.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::Arbitrary;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use baton::http::{
    read_credentials, CredentialError, RequestCredentials, MAX_AUTHORIZATION_LEN, MAX_SECRET_LEN,
    MAX_UID_LEN,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; the bookkeeping is one atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, per the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The most one `read_credentials` may allocate, in total bytes requested. The largest input it
/// may decode is `MAX_AUTHORIZATION_LEN` of base64 (768 bytes of JSON); its parse tree,
/// even nested to serde_json's depth limit, stays far below this. A `Huge` header is
/// larger than the bound, so copying or decoding one exceeds it.
const ALLOCATION_BOUND: usize = 256 * 1024;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    AccessToken,
    TokenType,
    Client,
    Expiry,
    Uid,
    Authorization,
    Other,
}

impl Name {
    fn text(self) -> &'static str {
        match self {
            Name::AccessToken => "access-token",
            Name::TokenType => "token-type",
            Name::Client => "client",
            Name::Expiry => "expiry",
            Name::Uid => "uid",
            Name::Authorization => "authorization",
            Name::Other => "x-request-id",
        }
    }

    fn limit(self) -> Option<usize> {
        match self {
            Name::AccessToken | Name::Client => Some(MAX_SECRET_LEN),
            Name::Uid => Some(MAX_UID_LEN),
            Name::Authorization => Some(MAX_AUTHORIZATION_LEN),
            _ => None,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Alphabet {
    Standard,
    StandardUnpadded,
    UrlSafe,
    UrlSafeUnpadded,
}

#[derive(Arbitrary, Debug)]
enum Json {
    String(String),
    Null,
    Number(i64),
    Bool(bool),
    Array(Vec<String>),
    Object(Vec<(String, String)>),
}

impl Json {
    fn value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Json::String(s) => Value::String(s.clone()),
            Json::Null => Value::Null,
            Json::Number(n) => Value::from(*n),
            Json::Bool(b) => Value::Bool(*b),
            Json::Array(v) => Value::from(v.clone()),
            Json::Object(kv) => Value::Object(
                kv.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// A JSON object: devise's keys (`access-token`, `client`, `uid`, `token-type`,
    /// `expiry`) chosen by `Name`, plus keys of the fuzzer's.
    Object(Vec<(Name, Json)>, Vec<(String, Json)>),
    /// Any JSON text, or none.
    Text(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Value {
    /// The bytes as they are (invalid header bytes drop the header, as hyper would).
    Raw(Vec<u8>),
    /// `<scheme><separator><base64 of body>`, optionally cut short.
    Bearer {
        scheme: u8,
        separator: u8,
        alphabet: Alphabet,
        body: Body,
        cut: Option<u16>,
    },
    /// `len` bytes of `fill`: around and over the limits.
    Long { fill: u8, len: u16 },
    /// A value far over every limit: `kib` KiB (at least 300) of `fill`. One per
    /// request; later ones are 2 KiB, since copying megabytes per run only slows the
    /// search down.
    Huge { fill: u8, kib: u8 },
}

#[derive(Arbitrary, Debug)]
struct Header {
    name: Name,
    /// Bit `i` set: the name's `i`-th character upper-cased (names are case-insensitive).
    case: u16,
    value: Value,
}

#[derive(Arbitrary, Debug)]
struct Request {
    headers: Vec<Header>,
}

/// What the harness knows of the request it built.
#[derive(Default)]
struct Sent {
    map: HeaderMap,
    /// Every string that may legitimately come back: header values and JSON strings.
    strings: Vec<String>,
    /// An `Authorization` whose content the harness did not build (a raw or cut value
    /// can decode to anything).
    opaque_authorization: bool,
    oversized: Vec<Name>,
    huge: bool,
}

fn encode(alphabet: &Alphabet, bytes: &[u8]) -> String {
    match alphabet {
        Alphabet::Standard => STANDARD.encode(bytes),
        Alphabet::StandardUnpadded => STANDARD_NO_PAD.encode(bytes),
        Alphabet::UrlSafe => URL_SAFE.encode(bytes),
        Alphabet::UrlSafeUnpadded => URL_SAFE_NO_PAD.encode(bytes),
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.trim().to_owned()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

fn build(request: &Request) -> Sent {
    let mut sent = Sent::default();
    for h in request.headers.iter().take(16) {
        let name: String = h
            .name
            .text()
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i < 16 && h.case & (1 << i) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let bytes = match &h.value {
            Value::Raw(b) => {
                if h.name == Name::Authorization {
                    sent.opaque_authorization = true;
                }
                b.clone()
            }
            Value::Bearer {
                scheme,
                separator,
                alphabet,
                body,
                cut,
            } => {
                let json = match body {
                    Body::Object(devise, extra) => {
                        let mut o = serde_json::Map::new();
                        for (k, v) in devise {
                            o.insert(k.text().to_owned(), v.value());
                        }
                        for (k, v) in extra {
                            o.insert(k.clone(), v.value());
                        }
                        let o = serde_json::Value::Object(o);
                        collect_strings(&o, &mut sent.strings);
                        serde_json::to_vec(&o).expect("a JSON value serialises")
                    }
                    Body::Text(t) => {
                        if h.name == Name::Authorization {
                            sent.opaque_authorization = true;
                        }
                        t.clone()
                    }
                };
                let scheme =
                    ["Bearer", "bearer", "BEARER", "Basic", "Token", ""][usize::from(*scheme) % 6];
                let separator = [" ", "  ", "\t", "", " \t "][usize::from(*separator) % 5];
                let mut v = format!("{scheme}{separator}{}", encode(alphabet, &json)).into_bytes();
                if let Some(cut) = cut {
                    if h.name == Name::Authorization {
                        sent.opaque_authorization = true;
                    }
                    v.truncate(usize::from(*cut));
                }
                v
            }
            Value::Long { fill, len } => vec![*fill; usize::from(*len % 4096)],
            Value::Huge { fill, kib } if !sent.huge => {
                sent.huge = true;
                vec![*fill; (300 + usize::from(*kib)) * 1024]
            }
            Value::Huge { fill, .. } => vec![*fill; 2048],
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&bytes),
        ) else {
            continue;
        };
        if h.name.limit().is_some_and(|max| bytes.len() > max) {
            sent.oversized.push(h.name);
        }
        if let Ok(s) = std::str::from_utf8(&bytes) {
            sent.strings.push(s.trim().to_owned());
        }
        sent.map.append(name, value);
    }
    sent
}

/// The one non-blank value of `name` when it is sent once (or repeated verbatim),
/// fits its limit and is UTF-8: what a plain devise client sends.
fn plain(map: &HeaderMap, name: Name) -> Option<String> {
    let mut values = map.get_all(name.text()).iter();
    let first = values.next()?;
    if values.any(|v| v != first) || name.limit().is_some_and(|m| first.len() > m) {
        return None;
    }
    let text = std::str::from_utf8(first.as_bytes()).ok()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn check(sent: &Sent, got: &Result<RequestCredentials<'_>, CredentialError>) {
    let three = [Name::AccessToken, Name::Client, Name::Uid];
    if let Ok(c) = got {
        for (value, name) in [
            (&c.token, three[0]),
            (&c.client, three[1]),
            (&c.uid, three[2]),
        ] {
            let field = name.text();
            assert!(!value.is_empty(), "{field} read as empty");
            assert_eq!(value.trim(), value, "{field} read untrimmed");
            let max = name.limit().expect("the three have limits");
            assert!(value.len() <= max, "{field} read at {} bytes", value.len());
            assert!(
                HeaderValue::from_bytes(value.as_bytes()).is_ok(),
                "{field} read as a value no answer could repeat: {value:?}"
            );
            if !sent.opaque_authorization {
                assert!(
                    sent.strings.iter().any(|s| s == value),
                    "{field} read as a value the request never sent: {value:?}"
                );
            }
        }
    }
    if let [Some(token), Some(client), Some(uid)] = three.map(|n| plain(&sent.map, n)) {
        let got = got
            .as_ref()
            .unwrap_or_else(|e| panic!("three plain headers refused: {e}"));
        assert_eq!(
            (&*got.token, &*got.client, &*got.uid),
            (token.as_str(), client.as_str(), uid.as_str())
        );
    }
    let all_plain = three.iter().all(|&n| plain(&sent.map, n).is_some());
    for name in &sent.oversized {
        // `Authorization` is read only when a plain header is missing.
        if three.contains(name) || !all_plain {
            assert!(got.is_err(), "an oversized {} was accepted", name.text());
        }
    }
}

fuzz_target!(|request: Request| {
    let sent = build(&request);
    let before = ALLOCATED.load(Ordering::Relaxed);
    let got = read_credentials(&sent.map);
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    assert!(
        allocated <= ALLOCATION_BOUND,
        "read_credentials allocated {allocated} bytes (huge header: {})",
        sent.huge
    );
    check(&sent, &got);
    match &got {
        // The error's text and label are what the server logs and counts.
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.reason().is_empty());
        }
        Ok(c) => assert_eq!(
            format!("{c:?}"),
            format!(
                "RequestCredentials {{ uid: {:?}, client: {:?}, token: \"<redacted>\" }}",
                c.uid, c.client
            ),
            "Debug must redact the token"
        ),
    }
});
