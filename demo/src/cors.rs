//! CORS: which origins may read responses (`--allowed-origins`). tower-http's
//! `CorsLayer` answers preflights and puts the headers on every answer, configured
//! from this and from baton's header name lists (`routes::app`).

use http::header::HeaderValue;

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
}
