//! `GET /`: the demo's own page, which shows rotation, batching, replay and sign-out
//! live against the same API (SPEC §3), for a newcomer who has a browser and no curl.
//!
//! The page is one self-contained HTML answer: its markup, style and script are ours
//! (`src/page/`), embedded at compile time, and it loads nothing. It talks to the API of
//! the origin that served it, with the devise headers, and reads the counters from
//! [`PageConfig::metrics_url`], which may be another origin (SPEC §3 moves `/metrics` to a
//! listener of its own that answers CORS for the API's origin). [`index`] fills in the
//! server's settings; [`headers`] are the answer's headers, among them a
//! Content-Security-Policy under which only that one script runs (named by its hash) and
//! the page may connect only to its own origin and the counters'.
//!
//! # How the page tells a rotation from a batched answer
//! Every member of a batch gets the same answer: the five headers carry the session's
//! successor whether that request rotated or batched, and which request won the
//! rotation is not on the wire (the protocol gives no client a reason to care). A
//! demo-only header saying so would change the protocol, so the page counts what the
//! headers prove instead:
//! - an answer carrying the token the request presented, or one the page had already
//!   seen before the batch, is **batched** (no token was minted for it);
//! - each token first seen in this batch's answers was minted once, by one rotation; an
//!   answer that alone carries it **rotated**;
//! - when several answers carry the same new token, one of them rotated and the rest
//!   batched onto it: the page labels them **shared** and counts, for the batch,
//!   `rotations` = new tokens and `batched` = accepted answers − rotations;
//! - a 401 is **refused** (its reason is not on the wire either, by design).
//!
//! When the counters are readable, the page also scrapes them just before and just
//! after each batch and shows how far they moved, the server's own count of the same
//! events (it includes any other client's traffic in that moment, and says so).
//!
//! # Serving it
//! ```
//! use baton_demo::page::{self, PageConfig};
//!
//! let config = PageConfig {
//!     metrics_url: Some("/metrics"),
//!     batch_window_ms: 5000,
//!     demo_user: Some(("demo@example.com", "demo-password")),
//! };
//! let (body, headers) = (page::index(&config), page::headers(&config));
//! assert!(body.starts_with("<!doctype html>"));
//! assert_eq!(headers["content-type"], "text/html; charset=utf-8");
//! ```
//! The answer also carries the CORS headers every answer does. With the counters on a
//! listener of their own, `metrics_url` is its absolute URL (`http://127.0.0.1:9464/metrics`)
//! and that listener must answer `Access-Control-Allow-Origin` for the API's origin; the
//! policy then lets the page connect there.
//!
//! Tokens are shown by their first six characters and never logged to the console; a
//! token's colour is derived from those six characters alone, so it shows no more of
//! the secret than the text beside it.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use base64ct::{Base64, Encoding};
use http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use sha2::{Digest, Sha256};

const TEMPLATE: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// The page's `Content-Type`.
pub const PAGE_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The page's `Cache-Control`: a browser may keep it but asks again each time, since it
/// carries the server's settings (its batch window, its demo user), which a restart with
/// other flags changes.
pub const PAGE_CACHE_CONTROL: &str = "no-cache";

/// What the page needs to know of the server that serves it.
#[derive(Clone, Copy)]
pub struct PageConfig<'a> {
    /// Where the page reads the counters (Prometheus text); None: the page says they are off.
    /// A path is on the page's own origin; an absolute `http(s)` URL may be another one.
    pub metrics_url: Option<&'a str>,
    /// The server's batch window, so the replay button waits it out.
    pub batch_window_ms: u64,
    /// The built-in demo user to prefill, if the server has one.
    pub demo_user: Option<(&'a str, &'a str)>,
}

impl fmt::Debug for PageConfig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageConfig")
            .field("metrics_url", &self.metrics_url)
            .field("batch_window_ms", &self.batch_window_ms)
            .field(
                "demo_user",
                &self.demo_user.map(|(email, _)| (email, "<redacted>")),
            )
            .finish()
    }
}

/// The full HTML of the page, with `config`'s values escaped for where they land: HTML
/// attributes for the prefilled sign-in form, a JSON data block (which the policy of
/// [`headers`] does not run) for the rest.
pub fn index(config: &PageConfig<'_>) -> String {
    let (email, password) = config.demo_user.unwrap_or(("", ""));
    let settings = serde_json::json!({
        "metricsUrl": config.metrics_url,
        "batchWindowMs": config.batch_window_ms,
        "demoUser": config.demo_user.is_some(),
    });
    render(TEMPLATE, |name| match name {
        "style" => Some(Cow::Borrowed(STYLE)),
        "script" => Some(Cow::Borrowed(SCRIPT)),
        "config" => Some(Cow::Owned(json_in_html(&settings.to_string()))),
        "email" => Some(escape_html(email)),
        "password" => Some(escape_html(password)),
        _ => None,
    })
}

/// The headers the page's answer carries besides the ones every answer does (CORS).
pub fn headers(config: &PageConfig<'_>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(5);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(PAGE_CONTENT_TYPE));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE_CONTROL));
    // The policy is built of checked characters only (see `origin_of`), so this holds;
    // the fallback still refuses every connection rather than sending no policy.
    let csp = HeaderValue::from_str(&content_security_policy(config))
        .unwrap_or(HeaderValue::from_static("default-src 'none'"));
    h.insert(CONTENT_SECURITY_POLICY, csp);
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h
}

/// The page's Content-Security-Policy: nothing is allowed but its own inline style and
/// script (by hash, so no injected markup can run), a blank icon, and connections to
/// its own origin and to the counters' origin.
pub fn content_security_policy(config: &PageConfig<'_>) -> String {
    static HASHES: LazyLock<(String, String)> =
        LazyLock::new(|| (sha256_source(SCRIPT), sha256_source(STYLE)));
    let (script, style) = &*HASHES;
    let mut connect = String::from("'self'");
    if let Some(origin) = config.metrics_url.and_then(origin_of) {
        connect.push(' ');
        connect.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; img-src data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

fn sha256_source(text: &str) -> String {
    format!("'sha256-{}'", Base64::encode_string(&Sha256::digest(text)))
}

/// The origin (`scheme://host[:port]`) of an absolute http(s) URL; `None` for a path on
/// the page's own origin, and for anything that is not plainly an origin (it then stays
/// out of the policy, and the page says the counters are unavailable).
fn origin_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let plain = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then(|| &url[..url.len() - rest.len() + end])
}

/// Fills `{{name}}` slots in one pass over the template, so a value that itself
/// contains `{{...}}` stays text. A slot `value` does not know is left as it is.
fn render<'v>(template: &str, value: impl Fn(&str) -> Option<Cow<'v, str>>) -> String {
    let mut out = String::with_capacity(template.len() + STYLE.len() + SCRIPT.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match value(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + len + 4]),
        }
        rest = &rest[start + len + 4..];
    }
    out.push_str(rest);
    out
}

/// Text for an HTML attribute value or element content.
fn escape_html(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON made safe inside a `<script>` element: no `<`, so no `</script>` or `<!--` can
/// end or bend the element, and no `>`, `&` or line separators that some parsers trip
/// on. The escapes are JSON's own, so `JSON.parse` reads the same value.
fn json_in_html(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: PageConfig<'static> = PageConfig {
        metrics_url: Some("/metrics"),
        batch_window_ms: 5000,
        demo_user: Some(("demo@example.com", "demo-password")),
    };

    /// The JSON data block the script reads its settings from.
    fn settings(html: &str) -> serde_json::Value {
        let open = "<script type=\"application/json\" id=\"baton-config\">";
        let start = html.find(open).expect("a config block") + open.len();
        let len = html[start..].find("</script>").expect("the block ends");
        serde_json::from_str(&html[start..start + len]).expect("the block is JSON")
    }

    #[test]
    fn every_slot_is_filled_and_the_settings_reach_the_script() {
        let html = index(&DEFAULTS);
        assert!(!html.contains("{{"), "an unfilled slot");
        assert!(html.contains(SCRIPT) && html.contains(STYLE));
        assert!(html.contains("value=\"demo@example.com\""));
        assert!(html.contains("value=\"demo-password\""));
        assert_eq!(
            settings(&html),
            serde_json::json!({"metricsUrl": "/metrics", "batchWindowMs": 5000, "demoUser": true})
        );

        let none = index(&PageConfig {
            metrics_url: None,
            batch_window_ms: 1500,
            demo_user: None,
        });
        assert!(!none.contains("demo@example.com"));
        assert_eq!(
            settings(&none),
            serde_json::json!({"metricsUrl": null, "batchWindowMs": 1500, "demoUser": false})
        );
    }

    #[test]
    fn values_are_escaped_for_html_and_for_the_script_element() {
        let nasty = "\"><script>alert(1)</script>{{script}}&'";
        let html = index(&PageConfig {
            metrics_url: Some("/m</script><script>alert(2)</script>\u{2028}"),
            batch_window_ms: 1,
            demo_user: Some((nasty, nasty)),
        });
        assert!(
            !html.contains("alert(1)</script>"),
            "attribute broken out of"
        );
        assert!(
            !html.contains("</script><script>alert(2)"),
            "script block ended"
        );
        assert_eq!(html.matches("<script").count(), 2, "only our two elements");
        // Filled once: a slot inside a value stays text, the script is not repeated.
        assert_eq!(html.matches(SCRIPT).count(), 1);
        assert!(html.contains(
            "value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;{{script}}&amp;&#39;\""
        ));
        assert_eq!(
            settings(&html)["metricsUrl"],
            "/m</script><script>alert(2)</script>\u{2028}"
        );
    }

    #[test]
    fn the_assets_cannot_end_their_own_elements_or_fetch_from_elsewhere() {
        for (name, text) in [("page.js", SCRIPT), ("page.css", STYLE)] {
            let lower = text.to_ascii_lowercase();
            for bad in [
                "</script", "</style", "<!--", "http://", "https://", "@import",
            ] {
                assert!(!lower.contains(bad), "{name} contains {bad:?}");
            }
        }
        // Nothing in the script writes to the console, where tokens would be logged.
        assert!(!SCRIPT.contains("console."));
        let lower = TEMPLATE.to_ascii_lowercase();
        for bad in ["http://", "https://", " src=", "<link rel=\"stylesheet\""] {
            assert!(!lower.contains(bad), "index.html contains {bad:?}");
        }
    }

    #[test]
    fn the_policy_names_the_inline_assets_by_hash_and_the_counters_origin() {
        let csp = content_security_policy(&DEFAULTS);
        assert!(csp.contains(&format!("script-src {};", sha256_source(SCRIPT))));
        assert!(csp.contains(&format!("style-src {};", sha256_source(STYLE))));
        assert!(csp.contains("connect-src 'self';"));
        assert!(!csp.contains("unsafe"), "{csp}");

        let elsewhere = PageConfig {
            metrics_url: Some("http://127.0.0.1:9100/metrics?x=1"),
            ..DEFAULTS
        };
        assert!(content_security_policy(&elsewhere)
            .contains("connect-src 'self' http://127.0.0.1:9100;"));
        let h = headers(&elsewhere);
        assert_eq!(h[CONTENT_TYPE], PAGE_CONTENT_TYPE);
        assert_eq!(h[CACHE_CONTROL], PAGE_CACHE_CONTROL);
        assert_eq!(
            h[CONTENT_SECURITY_POLICY].to_str().unwrap(),
            content_security_policy(&elsewhere)
        );
    }

    #[test]
    fn only_plain_origins_enter_the_policy() {
        assert_eq!(origin_of("https://[::1]:9100"), Some("https://[::1]:9100"));
        assert_eq!(
            origin_of("http://metrics.local:80/x#y"),
            Some("http://metrics.local:80")
        );
        for not in [
            "/metrics",
            "metrics",
            "http://",
            "http://a b/",
            "http://a;script-src *",
            "http://a'/",
            "javascript:alert(1)",
            "ftp://a/",
        ] {
            assert_eq!(origin_of(not), None, "{not}");
            let csp = content_security_policy(&PageConfig {
                metrics_url: Some(not),
                ..DEFAULTS
            });
            assert!(csp.contains("connect-src 'self';"), "{not}: {csp}");
        }
    }

    #[test]
    fn debug_keeps_the_password_out() {
        let shown = format!("{DEFAULTS:?}");
        assert!(shown.contains("demo@example.com"), "{shown}");
        assert!(!shown.contains("demo-password"), "{shown}");
    }

    #[test]
    fn render_leaves_unknown_and_unclosed_slots_as_text() {
        let out = render("a{{x}}b{{y}}c{{open", |n| {
            (n == "x").then_some(Cow::Borrowed("X"))
        });
        assert_eq!(out, "aXb{{y}}c{{open");
    }
}
