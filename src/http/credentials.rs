//! Reading a request's credentials from its headers: devise_token_auth's separate
//! `access-token`, `client` and `uid` headers, or the same values packed into
//! `Authorization: Bearer <base64 of JSON>`.
//!
//! [`read_credentials`] is pure and total: it never panics and refuses oversized input
//! before decoding any of it, so a fuzz target may feed it anything (`fuzz/`, target
//! `credentials`).

use std::borrow::Cow;
use std::fmt;

use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use super::names::{ACCESS_TOKEN, CLIENT, UID};

/// The longest `access-token` or `client` value read. Real ones are 22 and 16
/// characters; anything much longer cannot be a credential.
pub const MAX_SECRET_LEN: usize = 64;
/// The longest `uid` value read: baton's own limit on a uid.
pub const MAX_UID_LEN: usize = crate::MAX_UID_LEN;
/// The longest `Authorization` value read. devise_token_auth's packed form of the
/// longest acceptable values, with its `token-type` and `expiry`, fits well within it.
pub const MAX_AUTHORIZATION_LEN: usize = 1024;

/// The credentials a request presented, borrowed from its headers where they came
/// from separate headers (the common case costs no allocation). The token is a
/// secret: `Debug` redacts it.
///
/// Every value is trimmed, non-empty, within its limit, and can be written back as a
/// header value as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestCredentials<'h> {
    /// The `uid` value.
    pub uid: Cow<'h, str>,
    /// The `client` value.
    pub client: Cow<'h, str>,
    /// The `access-token` value. Secret.
    pub token: Cow<'h, str>,
    /// The `client` header, if the client id was read from it: an answer may repeat
    /// it as it is (sharing the request's buffer) instead of building a new value.
    pub(crate) client_header: Option<&'h HeaderValue>,
    /// The `uid` header, if the uid was read from it.
    pub(crate) uid_header: Option<&'h HeaderValue>,
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

/// One of the three credential headers: its name (built once: looking a header up by a
/// string parses the string on every call), its name as a `'static` label for errors,
/// and its length limit.
struct Field {
    header: http::HeaderName,
    label: &'static str,
    max: usize,
}

/// The three headers, in the order of [`read_credentials`]'s checks and of the packed form's fields.
const FIELDS: [Field; 3] = [
    Field {
        header: ACCESS_TOKEN,
        label: "access-token",
        max: MAX_SECRET_LEN,
    },
    Field {
        header: CLIENT,
        label: "client",
        max: MAX_SECRET_LEN,
    },
    Field {
        header: UID,
        label: "uid",
        max: MAX_UID_LEN,
    },
];

/// Reads the credentials a request presents.
///
/// Each of `access-token`, `client` and `uid` comes from its own header when present,
/// and otherwise from the `Authorization: Bearer` JSON, as devise_token_auth reads them.
/// Header names are case-insensitive (`HeaderMap` folds them); `token-type` and
/// `expiry` are not needed and not read.
///
/// One pass over the headers finds all three: cheaper than three lookups by name, each
/// of which hashes the name, and bounded since the server caps the number of headers.
pub fn read_credentials(headers: &HeaderMap) -> Result<RequestCredentials<'_>, CredentialError> {
    let mut sent: [Option<&HeaderValue>; 3] = [None; 3];
    let mut conflicting = [false; 3];
    for (name, value) in headers {
        let Some(i) = FIELDS.iter().position(|f| f.header == name) else {
            continue;
        };
        match sent[i] {
            None => sent[i] = Some(value),
            // Repeats of one value are tolerated (proxies duplicate headers); different
            // values are not, since which one a client meant is unknowable.
            Some(first) => conflicting[i] |= first != value,
        }
    }
    let mut found: [Option<Cow<'_, str>>; 3] = [None, None, None];
    for (i, field) in FIELDS.iter().enumerate() {
        if conflicting[i] {
            return Err(CredentialError::Malformed { field: field.label });
        }
        found[i] = match sent[i] {
            Some(value) => checked(value, field)?.map(Cow::Borrowed),
            None => None,
        };
        if found[i].is_none() {
            sent[i] = None;
        }
    }
    if found.iter().any(Option::is_none) {
        match authorization(headers)? {
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
        client_header: sent[1],
        uid_header: sent[2],
    })
}

/// A header's value checked for length before anything else, then as UTF-8, trimmed;
/// `None` if blank.
fn checked<'h>(value: &'h HeaderValue, field: &Field) -> Result<Option<&'h str>, CredentialError> {
    if value.len() > field.max {
        return Err(CredentialError::TooLong { field: field.label });
    }
    // Visible ASCII, as real tokens, client ids and most uids are, is checked in one
    // short loop, and its only blanks are spaces and tabs, which `trim_ascii` drops as
    // `trim` would without decoding characters; anything else goes through the full
    // UTF-8 check and `trim`.
    let text = match value.to_str() {
        Ok(text) => text.trim_ascii(),
        Err(_) => std::str::from_utf8(value.as_bytes())
            .map_err(|_| CredentialError::Malformed { field: field.label })?
            .trim(),
    };
    Ok((!text.is_empty()).then_some(text))
}

/// The one `Authorization` value, checked like the three (see [`read`]).
fn authorization(headers: &HeaderMap) -> Result<Option<&str>, CredentialError> {
    const FIELD: Field = Field {
        header: AUTHORIZATION,
        label: "authorization",
        max: MAX_AUTHORIZATION_LEN,
    };
    let mut values = headers.get_all(&FIELD.header).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    // Bounded: the server caps the number and size of headers before this runs.
    if values.any(|v| v != first) {
        return Err(CredentialError::Malformed { field: FIELD.label });
    }
    checked(first, &FIELD)
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
    for (slot, field) in out.iter_mut().zip(&FIELDS) {
        let (name, max) = (field.label, field.max);
        match object.get(name) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if s.len() > max => {
                return Err(CredentialError::TooLong { field: name })
            }
            // A value that could not be written back as a header (a control character)
            // is not one a session could have been issued for.
            Some(serde_json::Value::String(s)) if !header_safe(s.trim()) => {
                return Err(CredentialError::Malformed { field: name })
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

/// Whether `text` is a valid header value as it is: no control characters but tab.
fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
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
        let c = read_credentials(&h).unwrap();
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
            let c = read_credentials(&h).unwrap();
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
        let c = read_credentials(&h).unwrap();
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
                headers(&[(
                    "authorization",
                    &bearer(r#"{"access-token":"t","client":"c","uid":"a\nb"}"#),
                )]),
                CredentialError::Malformed { field: "uid" },
            ),
            (
                headers(&[("authorization", &vec![b'B'; MAX_AUTHORIZATION_LEN + 1])]),
                CredentialError::TooLong {
                    field: "authorization",
                },
            ),
        ];
        for (h, want) in cases {
            assert_eq!(read_credentials(&h), Err(want), "{h:?}");
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
            if let Ok(c) = read_credentials(&h) {
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

    /// The credential headers as `read_credentials` read them before it made one pass over
    /// all headers: three lookups by name, each value checked by `from_utf8` alone.
    /// The one pass must answer exactly the same.
    fn by_lookups(headers: &HeaderMap) -> Result<[Option<String>; 3], CredentialError> {
        let mut out: [Option<String>; 3] = [None, None, None];
        for (slot, field) in out.iter_mut().zip(&FIELDS) {
            let mut values = headers.get_all(&field.header).iter();
            let Some(first) = values.next() else {
                continue;
            };
            if values.any(|v| v != first) {
                return Err(CredentialError::Malformed { field: field.label });
            }
            if first.len() > field.max {
                return Err(CredentialError::TooLong { field: field.label });
            }
            let text = std::str::from_utf8(first.as_bytes())
                .map_err(|_| CredentialError::Malformed { field: field.label })?
                .trim();
            *slot = (!text.is_empty()).then(|| text.to_owned());
        }
        Ok(out)
    }

    #[test]
    fn one_pass_reads_what_three_lookups_read() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names = [
            "access-token",
            "client",
            "uid",
            "host",
            "token-type",
            "x-other",
        ];
        let values: [&[u8]; 9] = [
            b"AAAAAAAAAAAAAAAAAAAAAA",
            b"BBBBBBBBBBBBBBBB",
            b"a@example.com",
            b"  a@example.com ",
            b"\ta@example.com\t",
            b" ",
            b"",
            b"\xc3\xbc@example.com",
            b"\xff",
        ];
        let long = [b'a'; MAX_SECRET_LEN + 1];
        let (mut read_some, mut refused_some) = (false, false);
        for _ in 0..20_000 {
            let mut h = HeaderMap::new();
            for _ in 0..next(8) {
                let name = names[next(names.len() as u64) as usize];
                let value = match next(10) {
                    9 => &long[..],
                    i => values[i as usize],
                };
                h.append(name, HeaderValue::from_bytes(value).unwrap());
            }
            let want = by_lookups(&h);
            let got = read_credentials(&h);
            match (&want, &got) {
                (Err(w), Err(g)) => {
                    assert_eq!(w, g, "{h:?}");
                    refused_some = true;
                }
                (Ok(w), Ok(c)) => {
                    let got = [&c.token, &c.client, &c.uid].map(|v| Some(v.to_string()));
                    assert_eq!(w, &got, "{h:?}");
                    read_some = true;
                }
                // Every field absent or blank: the one pass then asks `Authorization`,
                // which these maps never carry.
                (Ok(w), Err(_)) => assert!(w.iter().any(Option::is_none), "{h:?}"),
                (Err(w), Ok(_)) => panic!("one pass read what lookups refused ({w}): {h:?}"),
            }
            if let Ok(p) = &got {
                // The headers kept for reuse are the very values read, untrimmed.
                assert_eq!(
                    p.client_header.map(HeaderValue::as_bytes),
                    h.get("client").map(HeaderValue::as_bytes)
                );
                assert_eq!(
                    p.uid_header.map(HeaderValue::as_bytes),
                    h.get("uid").map(HeaderValue::as_bytes)
                );
            }
        }
        assert!(read_some && refused_some);
    }

    #[test]
    fn keeps_a_header_for_reuse_only_where_the_value_came_from_it() {
        let json = format!(r#"{{"access-token":"{TOKEN}","client":"{CLIENT}","uid":"x@y"}}"#);
        let h = headers(&[
            ("authorization", &bearer(&json)),
            ("client", b"  "),
            ("uid", b"z@y"),
        ]);
        let p = read_credentials(&h).unwrap();
        assert_eq!(&*p.client, CLIENT);
        assert!(
            p.client_header.is_none(),
            "the blank header was not what was read"
        );
        assert_eq!(p.uid_header.map(HeaderValue::as_bytes), Some(&b"z@y"[..]));
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = RequestCredentials {
            uid: Cow::Borrowed("u"),
            client: Cow::Borrowed(CLIENT),
            token: Cow::Owned(TOKEN.to_owned()),
            client_header: None,
            uid_header: None,
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
