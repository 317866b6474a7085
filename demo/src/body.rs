//! Reading a request body within the limits, and the sign-in form in its two encodings.

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};

use crate::app::Limits;

/// Why a body could not be read: the status to answer and a message for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError {
    /// 400, 408 or 413.
    pub status: StatusCode,
    /// Says what was wrong, without echoing the body.
    pub message: &'static str,
}

const TOO_LARGE: BodyError = BodyError {
    status: StatusCode::PAYLOAD_TOO_LARGE,
    message: "request body is too large",
};

/// Reads the whole body, refusing one that is declared or turns out too large, or that
/// does not arrive within the body read timeout (a slow client cannot hold a task).
pub async fn read<B>(headers: &HeaderMap, body: B, limits: &Limits) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(TOO_LARGE);
    }
    let collect = Limited::new(body, limits.max_body_bytes).collect();
    match tokio::time::timeout(limits.body_read_timeout, collect).await {
        Err(_) => Err(BodyError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: "request body was not received in time",
        }),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(TOO_LARGE),
        Ok(Err(_)) => Err(BodyError {
            status: StatusCode::BAD_REQUEST,
            message: "request body could not be read",
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The two fields of a sign-in. Either may be absent; the password is secret.
#[derive(Default, PartialEq, Eq)]
pub struct SignIn {
    /// The `email` field.
    pub email: Option<String>,
    /// The `password` field.
    pub password: Option<String>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("email", &self.email)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Parses a sign-in body as JSON or as a form, by its `Content-Type`; without one,
/// a body opening with `{` is JSON. `Err` means unreadable: not that encoding at all.
pub fn parse_sign_in(headers: &HeaderMap, body: &[u8]) -> Result<SignIn, &'static str> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_json = if content_type.is_empty() {
        body.trim_ascii_start().starts_with(b"{")
    } else if content_type.starts_with("application/json") || content_type.contains("+json") {
        true
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        false
    } else {
        return Err("content type must be json or form-encoded");
    };
    if is_json {
        parse_json(body)
    } else {
        parse_form(body)
    }
}

fn parse_json(body: &[u8]) -> Result<SignIn, &'static str> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "request body is not valid json")?;
    let object = value
        .as_object()
        .ok_or("request body is not a json object")?;
    let field = |name: &str| -> Result<Option<String>, &'static str> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err("email and password must be strings"),
        }
    };
    Ok(SignIn {
        email: field("email")?,
        password: field("password")?,
    })
}

fn parse_form(body: &[u8]) -> Result<SignIn, &'static str> {
    let mut out = SignIn::default();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = percent_decode(name)?;
        let slot = match name.as_str() {
            "email" => &mut out.email,
            "password" => &mut out.password,
            _ => continue,
        };
        *slot = Some(percent_decode(value)?);
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` decoding, strict: a bad escape or bytes that
/// are not UTF-8 make the body unreadable rather than silently altered.
fn percent_decode(input: &[u8]) -> Result<String, &'static str> {
    const BAD: &str = "request body is not valid form encoding";
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter().copied();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hi = bytes.next().and_then(hex).ok_or(BAD)?;
                let lo = bytes.next().and_then(hex).ok_or(BAD)?;
                hi << 4 | lo
            }
            other => other,
        });
    }
    String::from_utf8(out).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn typed(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if !ct.is_empty() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        h
    }

    #[test]
    fn reads_both_encodings() {
        let want = SignIn {
            email: Some("a+b@example.com".into()),
            password: Some("p w&=".into()),
        };
        let json = br#"{"email":"a+b@example.com","password":"p w&="}"#;
        let form = b"email=a%2Bb%40example.com&password=p+w%26%3D&remember=1";
        assert_eq!(parse_sign_in(&typed("application/json"), json), Ok(want));
        assert_eq!(
            parse_sign_in(&typed("application/json; charset=UTF-8"), json).map(|s| s.email),
            Ok(Some("a+b@example.com".into()))
        );
        let form_ct = "application/x-www-form-urlencoded; charset=UTF-8";
        assert_eq!(
            parse_sign_in(&typed(form_ct), form).map(|s| s.password),
            Ok(Some("p w&=".into()))
        );
        assert!(parse_sign_in(&typed(""), json).is_ok_and(|s| s.email.is_some()));
        assert!(parse_sign_in(&typed(""), form).is_ok_and(|s| s.email.is_some()));
    }

    #[test]
    fn refuses_unreadable_bodies() {
        let form = typed("application/x-www-form-urlencoded");
        let json = typed("application/json");
        assert!(parse_sign_in(&json, b"{\"email\":").is_err());
        assert!(parse_sign_in(&json, b"[1]").is_err());
        assert!(parse_sign_in(&json, br#"{"email":1}"#).is_err());
        assert!(parse_sign_in(&json, b"\xff").is_err());
        assert!(parse_sign_in(&form, b"email=%zz").is_err());
        assert!(parse_sign_in(&form, b"email=%4").is_err());
        assert!(parse_sign_in(&form, b"email=%ff").is_err());
        assert!(parse_sign_in(&typed("text/plain"), b"email=a").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let s = SignIn {
            email: Some("a".into()),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
