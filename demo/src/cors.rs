//! CORS: which origins may read responses, and the preflight answer.

use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};

/// The five credential headers, which browsers hide from scripts unless exposed.
pub const EXPOSED: &str = "access-token, token-type, client, expiry, uid";
const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOWED_HEADERS: &str =
    "access-token, token-type, client, expiry, uid, content-type, authorization, if-modified-since";

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
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }

    /// Adds what a preflight answer carries besides [`apply`](Self::apply)'s headers.
    pub fn preflight(headers: &mut HeaderMap) {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}
