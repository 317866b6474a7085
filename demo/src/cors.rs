//! CORS: which origins may read responses, and the preflight answer.

use std::sync::LazyLock;

use baton::http::{ALLOWED_HEADERS, CREDENTIAL_HEADERS};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};

const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// The five credential headers, which browsers hide from scripts unless exposed, and
/// the request headers a preflight allows: the library's lists (the workspace's one
/// table of names), joined once.
static EXPOSED: LazyLock<HeaderValue> = LazyLock::new(|| joined(&CREDENTIAL_HEADERS));
static ALLOWED: LazyLock<HeaderValue> = LazyLock::new(|| joined(&ALLOWED_HEADERS));

fn joined(names: &[HeaderName]) -> HeaderValue {
    let text: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
    // Header names are visible ASCII, so their join is a header value.
    HeaderValue::from_str(&text.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

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

    /// Adds the headers every response carries.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let allow = match self {
            Cors::Any => HeaderValue::from_static("*"),
            Cors::Only(list) => {
                headers.append(VARY, HeaderValue::from_static("origin"));
                // A foreign origin still gets a header, naming an allowed origin, so
                // its browser refuses the response rather than guessing.
                origin
                    .and_then(|o| list.iter().find(|a| *a == o))
                    .or(list.first())
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("null"))
            }
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED.clone());
    }

    /// Adds what a preflight answer carries besides [`apply`](Self::apply)'s headers.
    pub fn preflight(headers: &mut HeaderMap) {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED.clone());
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lists_are_the_librarys_joined() {
        assert_eq!(
            super::EXPOSED.to_str().unwrap(),
            "access-token, token-type, client, expiry, uid"
        );
        assert_eq!(
            super::ALLOWED.to_str().unwrap(),
            "access-token, token-type, client, expiry, uid, content-type, authorization, if-modified-since"
        );
    }
}
