//! Reading a request's credentials from its headers: devise_token_auth's separate
//! `access-token`, `client` and `uid` headers, or the same values packed into
//! `Authorization: Bearer <base64 of JSON>`.
//!
//! [`extract`] is pure and total: it never panics and refuses oversized input before
//! decoding any of it, so a fuzz target may feed it anything.

use std::borrow::Cow;
use std::fmt;

use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use http::header::{HeaderMap, HeaderName, AUTHORIZATION};

/// The longest `access-token` or `client` value read. Real ones are 22 and 16
/// characters; anything much longer cannot be a credential.
pub const MAX_SECRET_LEN: usize = 64;
/// The longest `uid` value read: baton's own limit on a uid.
pub const MAX_UID_LEN: usize = baton::MAX_UID_LEN;
/// The longest `Authorization` value read. devise_token_auth's packed form of the
/// longest acceptable values, with its `token-type` and `expiry`, fits well within it.
pub const MAX_AUTHORIZATION_LEN: usize = 1024;

/// The credentials a request presented, borrowed from its headers where they came
/// from separate headers (the common case costs no allocation). The token is a
/// secret: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestCredentials<'h> {
    /// The `uid` value.
    pub uid: Cow<'h, str>,
    /// The `client` value.
    pub client: Cow<'h, str>,
    /// The `access-token` value. Secret.
    pub token: Cow<'h, str>,
}

impl fmt::Debug for RequestCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCredentials")
            .field("uid", &self.uid)
            .field("client", &self.client)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a request's credentials could not be read. The server answers each of these
/// with the same 401 as a rejected token; the variant is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// None of `access-token`, `client`, `uid` or `Authorization` is present.
    Missing,
    /// Some but not all of the three values are present.
    Incomplete {
        /// The first value missing.
        field: &'static str,
    },
    /// A value is longer than its limit.
    TooLong {
        /// The header or field.
        field: &'static str,
    },
    /// A value is not UTF-8, or the same header is sent twice with different values.
    Malformed {
        /// The header or field.
        field: &'static str,
    },
    /// `Authorization` is not `Bearer` followed by base64 of a JSON object of strings.
    BadAuthorization,
}

impl CredentialError {
    /// A short stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::Missing => "missing_credentials",
            CredentialError::Incomplete { .. }
            | CredentialError::TooLong { .. }
            | CredentialError::Malformed { .. }
            | CredentialError::BadAuthorization => "malformed_credentials",
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::Missing => f.write_str("no credentials"),
            CredentialError::Incomplete { field } => write!(f, "{field} is missing"),
            CredentialError::TooLong { field } => write!(f, "{field} is too long"),
            CredentialError::Malformed { field } => write!(f, "{field} is malformed"),
            CredentialError::BadAuthorization => {
                f.write_str("authorization is not bearer base64 of a json object")
            }
        }
    }
}

impl std::error::Error for CredentialError {}

/// The three headers, with their limits. Names are built once: looking a header up
/// by a string parses the string on every call.
const FIELDS: [(HeaderName, usize); 3] = [
    (HeaderName::from_static("access-token"), MAX_SECRET_LEN),
    (HeaderName::from_static("client"), MAX_SECRET_LEN),
    (HeaderName::from_static("uid"), MAX_UID_LEN),
];

/// Reads the credentials a request presents.
///
/// Each of `access-token`, `client` and `uid` comes from its own header when present,
/// and otherwise from the `Authorization: Bearer` JSON, as devise_token_auth reads them.
/// Header names are case-insensitive (`HeaderMap` folds them); `token-type` and
/// `expiry` are not needed and not read.
pub fn extract(headers: &HeaderMap) -> Result<RequestCredentials<'_>, CredentialError> {
    let mut found: [Option<Cow<'_, str>>; 3] = [None, None, None];
    for (slot, (name, max)) in found.iter_mut().zip(&FIELDS) {
        *slot = single_header(headers, name, *max)?.map(Cow::Borrowed);
    }
    if found.iter().any(Option::is_none) {
        match single_header(headers, &AUTHORIZATION, MAX_AUTHORIZATION_LEN)? {
            Some(auth) => {
                let packed = unpack_authorization(auth)?;
                for (slot, value) in found.iter_mut().zip(packed) {
                    if slot.is_none() {
                        *slot = value.map(Cow::Owned);
                    }
                }
            }
            None if found.iter().all(Option::is_none) => return Err(CredentialError::Missing),
            None => {}
        }
    }
    let [token, client, uid] = found;
    let missing = |field| CredentialError::Incomplete { field };
    Ok(RequestCredentials {
        token: token.ok_or(missing("access-token"))?,
        client: client.ok_or(missing("client"))?,
        uid: uid.ok_or(missing("uid"))?,
    })
}

/// The one value of header `name`, checked for length before anything else. Repeats of
/// one value are tolerated (proxies duplicate headers); different values are not, since
/// which one a client meant is unknowable.
fn single_header<'h>(
    headers: &'h HeaderMap,
    header: &HeaderName,
    max: usize,
) -> Result<Option<&'h str>, CredentialError> {
    let name = field_name(header);
    let mut values = headers.get_all(header).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    // Bounded: the server caps the number and size of headers before this runs.
    if values.any(|v| v != first) {
        return Err(CredentialError::Malformed { field: name });
    }
    let bytes = first.as_bytes();
    if bytes.len() > max {
        return Err(CredentialError::TooLong { field: name });
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| CredentialError::Malformed { field: name })?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(text))
}

/// The header's name as a `'static` label for errors.
fn field_name(header: &HeaderName) -> &'static str {
    match header.as_str() {
        "access-token" => "access-token",
        "client" => "client",
        "uid" => "uid",
        _ => "authorization",
    }
}

/// Decodes `Bearer <base64 of {"access-token": .., "client": .., "uid": ..}>` into the
/// three values, in `FIELDS` order. devise_token_auth writes standard base64 with
/// padding; the URL-safe alphabet and unpadded forms are accepted too.
fn unpack_authorization(value: &str) -> Result<[Option<String>; 3], CredentialError> {
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or(CredentialError::BadAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::BadAuthorization);
    }
    let encoded = rest.trim();
    let json = Base64::decode_vec(encoded)
        .or_else(|_| Base64Url::decode_vec(encoded))
        .or_else(|_| Base64Unpadded::decode_vec(encoded))
        .or_else(|_| Base64UrlUnpadded::decode_vec(encoded))
        .map_err(|_| CredentialError::BadAuthorization)?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| CredentialError::BadAuthorization)?;
    let object = parsed
        .as_object()
        .ok_or(CredentialError::BadAuthorization)?;
    let mut out: [Option<String>; 3] = [None, None, None];
    for (slot, (header, max)) in out.iter_mut().zip(&FIELDS) {
        let (name, max) = (field_name(header), *max);
        match object.get(name) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if s.len() > max => {
                return Err(CredentialError::TooLong { field: name })
            }
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                *slot = Some(s.trim().to_owned());
            }
            Some(serde_json::Value::String(_)) => {}
            Some(_) => return Err(CredentialError::BadAuthorization),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAA";
    const CLIENT: &str = "BBBBBBBBBBBBBBBB";

    fn bearer(json: &str) -> Vec<u8> {
        format!("Bearer {}", Base64::encode_string(json.as_bytes())).into_bytes()
    }

    #[test]
    fn reads_the_three_headers() {
        let h = headers(&[
            ("access-token", TOKEN.as_bytes()),
            ("client", CLIENT.as_bytes()),
            ("uid", b"a@example.com"),
        ]);
        let c = extract(&h).unwrap();
        assert_eq!(c.token, TOKEN);
        assert_eq!(c.client, CLIENT);
        assert_eq!(c.uid, "a@example.com");
        assert!(
            matches!(c.token, Cow::Borrowed(_)),
            "no copy of separate headers"
        );
    }

    #[test]
    fn reads_the_authorization_form_in_every_alphabet() {
        let json = format!(
            r#"{{"access-token":"{TOKEN}","token-type":"Bearer","client":"{CLIENT}","expiry":"1700000000","uid":"ü?>@example.com"}}"#
        );
        let encodings = [
            Base64::encode_string(json.as_bytes()),
            Base64Url::encode_string(json.as_bytes()),
            Base64UrlUnpadded::encode_string(json.as_bytes()),
        ];
        // The uid's bytes were chosen so that the two alphabets differ.
        assert_ne!(encodings[0], encodings[1]);
        for enc in encodings {
            let value = format!("bearer {enc}");
            let h = headers(&[("authorization", value.as_bytes())]);
            let c = extract(&h).unwrap();
            assert_eq!(
                (&*c.token, &*c.client, &*c.uid),
                (TOKEN, CLIENT, "ü?>@example.com")
            );
        }
    }

    #[test]
    fn separate_headers_win_over_authorization_field_by_field() {
        let json = format!(r#"{{"access-token":"{TOKEN}","client":"{CLIENT}","uid":"x@y"}}"#);
        let h = headers(&[("authorization", &bearer(&json)), ("uid", b"z@y")]);
        let c = extract(&h).unwrap();
        assert_eq!((&*c.token, &*c.uid), (TOKEN, "z@y"));
    }

    #[test]
    fn refuses_what_is_missing_long_or_malformed() {
        let long = vec![b'a'; MAX_SECRET_LEN + 1];
        let cases: Vec<(HeaderMap, CredentialError)> = vec![
            (headers(&[]), CredentialError::Missing),
            (
                headers(&[("access-token", b"x"), ("uid", b"u")]),
                CredentialError::Incomplete { field: "client" },
            ),
            (
                headers(&[("access-token", &long), ("client", b"c"), ("uid", b"u")]),
                CredentialError::TooLong {
                    field: "access-token",
                },
            ),
            (
                headers(&[
                    ("access-token", b"x"),
                    ("client", b"c"),
                    ("uid", b"\xff\xfe"),
                ]),
                CredentialError::Malformed { field: "uid" },
            ),
            (
                headers(&[
                    ("access-token", b"x"),
                    ("access-token", b"y"),
                    ("client", b"c"),
                    ("uid", b"u"),
                ]),
                CredentialError::Malformed {
                    field: "access-token",
                },
            ),
            (
                headers(&[("authorization", b"Basic Zm9vOmJhcg==")]),
                CredentialError::BadAuthorization,
            ),
            (
                headers(&[("authorization", b"Bearer !!!notbase64")]),
                CredentialError::BadAuthorization,
            ),
            (
                headers(&[("authorization", &bearer("{not json"))]),
                CredentialError::BadAuthorization,
            ),
            (
                headers(&[("authorization", &bearer(r#"["a"]"#))]),
                CredentialError::BadAuthorization,
            ),
            (
                headers(&[("authorization", &bearer(r#"{"uid": 7}"#))]),
                CredentialError::BadAuthorization,
            ),
            (
                headers(&[("authorization", &vec![b'B'; MAX_AUTHORIZATION_LEN + 1])]),
                CredentialError::TooLong {
                    field: "authorization",
                },
            ),
        ];
        for (h, want) in cases {
            assert_eq!(extract(&h), Err(want), "{h:?}");
        }
    }

    /// A stand-in for the fuzz target until it exists: random header maps, biased
    /// towards almost-valid input, must each get an answer and never a panic.
    #[test]
    fn any_input_gets_an_answer() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"AZaz09-_+/={}\":, \xff\x80\t";
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut h = HeaderMap::new();
            let bytes = |n: u64, next: &mut dyn FnMut() -> u64| -> Vec<u8> {
                let len = (next() % n) as usize;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            for name in ["access-token", "client", "uid"] {
                if next() % 3 != 0 {
                    if let Ok(v) = HeaderValue::from_bytes(&bytes(80, &mut next)) {
                        h.append(name, v);
                    }
                }
            }
            if next() % 2 == 0 {
                let json = bytes(200, &mut next);
                let packed = match next() % 3 {
                    0 => Base64::encode_string(&json),
                    1 => Base64Url::encode_string(&json),
                    _ => String::from_utf8_lossy(&json).into_owned(),
                };
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {packed}")) {
                    h.append(AUTHORIZATION, v);
                }
            }
            if let Ok(c) = extract(&h) {
                assert!(c.token.len() <= MAX_SECRET_LEN && c.client.len() <= MAX_SECRET_LEN);
                assert!(c.uid.len() <= MAX_UID_LEN && !c.uid.is_empty());
                accepted += 1;
            }
        }
        assert!(
            accepted > 0,
            "the generator never produced readable credentials"
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = RequestCredentials {
            uid: Cow::Borrowed("u"),
            client: Cow::Borrowed(CLIENT),
            token: Cow::Owned(TOKEN.to_owned()),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
