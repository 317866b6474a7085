//! `GET /`: the demo's own page, over real HTTP. What the page does in a browser is
//! `demo/e2e/page.test.js`'s job; this checks the answer a browser gets.

mod common;

use std::time::Duration;

use base64ct::{Base64, Encoding};
use baton_demo::cli::DEMO_USER;
use common::{Resp, Server};
use sha2::{Digest, Sha256};

/// The text between `open` and the next `close`, after `open`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap_or_else(|| panic!("no {open:?}")) + open.len();
    let len = text[start..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close:?} after {open:?}"));
    &text[start..start + len]
}

fn settings(page: &str) -> serde_json::Value {
    let block = between(
        page,
        "<script type=\"application/json\" id=\"baton-config\">",
        "</script>",
    );
    serde_json::from_str(block).expect("the settings are JSON")
}

fn csp_hash(source: &str) -> String {
    format!(
        "'sha256-{}'",
        Base64::encode_string(&Sha256::digest(source))
    )
}

/// Where the test server's counters are: its metrics listener.
fn metrics_url(s: &Server) -> String {
    format!("http://{}/metrics", s.metrics_addr)
}

async fn page(s: &Server) -> Resp {
    s.request("GET", "/", &[("origin", "http://127.0.0.1:3000")], b"")
        .await
}

#[tokio::test]
async fn the_page_answers_200_html_with_cors_and_no_cache_and_rotates_nothing() {
    let s = Server::start().await;
    let r = page(&s).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    r.assert_cors();
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-token").is_none(), "{r:?}");
    let text = r.text();
    assert!(text.starts_with("<!doctype html>"), "{}", &text[..40]);
    assert!(text.contains("id=\"send-batch\""), "the page's controls");
    // No session was touched: the page asks for none.
    assert_eq!(s.metric("baton_sessions ").await, 0);
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"missing_credentials\"}")
            .await,
        0
    );
}

#[tokio::test]
async fn only_get_is_allowed() {
    let s = Server::start().await;
    let r = s.request("POST", "/", &[], b"x").await;
    assert_eq!(r.status, 405);
    // GET, and HEAD, which axum answers on every GET route (the head of the same answer).
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
    r.assert_cors();
}

#[tokio::test]
async fn the_page_carries_the_servers_batch_window_and_where_the_counters_are() {
    let s = Server::start().await;
    let defaults = settings(&page(&s).await.text());
    assert_eq!(defaults["batchWindowMs"], 5000);
    // The counters are on their own listener: the page is told its absolute URL.
    assert_eq!(defaults["metricsUrl"], metrics_url(&s));

    let s = Server::with(|b| b.batch_window(Duration::from_millis(1500)), |_| {}).await;
    assert_eq!(settings(&page(&s).await.text())["batchWindowMs"], 1500);
}

#[tokio::test]
async fn the_demo_user_is_prefilled_only_when_the_server_has_one() {
    let s = Server::start().await;
    let text = page(&s).await.text();
    assert_eq!(settings(&text)["demoUser"], false);
    assert!(!text.contains(DEMO_USER.0) && !text.contains(DEMO_USER.1));

    // A user who merely has the demo address (given by flag or file, with a password
    // of its own) is not the built-in demo user: nothing is prefilled.
    let s = Server::with(
        |b| b,
        |state| {
            state.users.add(DEMO_USER.0, "another password").unwrap();
        },
    )
    .await;
    let text = page(&s).await.text();
    assert_eq!(settings(&text)["demoUser"], false);
    assert!(!text.contains(&format!("value=\"{}\"", DEMO_USER.0)));
    assert!(!text.contains(DEMO_USER.1));

    // The server added the demo user itself (as `Cli` does on a loopback `--listen`).
    let s = Server::with(
        |b| b,
        |state| {
            state.users.add(DEMO_USER.0, DEMO_USER.1).unwrap();
            state.demo_user = true;
        },
    )
    .await;
    let text = page(&s).await.text();
    assert_eq!(settings(&text)["demoUser"], true);
    assert!(text.contains(&format!("value=\"{}\"", DEMO_USER.0)));
    assert!(text.contains(&format!("value=\"{}\"", DEMO_USER.1)));
}

#[tokio::test]
async fn the_page_references_nothing_outside_and_its_policy_runs_only_its_own_script() {
    let s = Server::start().await;
    let r = page(&s).await;
    let text = r.text();
    // The one absolute address is the counters', once, in the settings block.
    let metrics = metrics_url(&s);
    assert_eq!(text.matches(&metrics).count(), 1, "{metrics}");
    assert_eq!(settings(&text)["metricsUrl"], metrics);
    let lower = text.replace(&metrics, "").to_ascii_lowercase();
    // No other address of another host anywhere: not in src, href, url(), import or fetch.
    assert!(!lower.contains("http://") && !lower.contains("https://"));
    assert!(!lower.contains("//cdn") && !lower.contains("@import"));
    assert!(!lower.contains(" src="), "the page loads no file");
    for href in lower.split("href=\"").skip(1) {
        let target = &href[..href.find('"').unwrap()];
        assert!(target.starts_with("data:"), "href to {target:?}");
    }
    assert!(!lower.contains("url("), "the style loads no file");

    let csp = r.header("content-security-policy").expect("a policy");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(!csp.contains("unsafe") && !csp.contains('*'), "{csp}");
    // Its own origin, and the counters' listener, whose origin is not the page's.
    assert!(
        csp.contains(&format!("connect-src 'self' http://{};", s.metrics_addr)),
        "{csp}"
    );
    // The hashes are of the very script and style this answer carries, so a browser
    // runs them, and would run nothing injected beside them.
    let script = between(&text, "<script>", "</script>");
    let style = between(&text, "<style>", "</style>");
    assert!(script.contains("fetch("), "the page's own script");
    assert!(
        csp.contains(&format!("script-src {};", csp_hash(script))),
        "{csp}"
    );
    assert!(
        csp.contains(&format!("style-src {};", csp_hash(style))),
        "{csp}"
    );
}
