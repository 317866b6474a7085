//! SPEC §3, row by row, over real HTTP against a store on a hand-moved clock.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use base64ct::{Base64, Base64Url, Encoding};
use baton::ReplayPolicy;
use common::{Creds, Server, EMAIL, PASSWORD};

#[tokio::test]
async fn sign_in_with_json_answers_the_user_and_five_headers() {
    let s = Server::start().await;
    let body = serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string();
    let r = s
        .request(
            "POST",
            "/auth/sign_in",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.assert_authenticated();
    r.assert_cors();
    assert_eq!(c.uid, EMAIL);
    let data = &r.json()["data"];
    assert_eq!(data["email"], EMAIL);
    assert_eq!(data["uid"], EMAIL);
    assert_eq!(data["provider"], "email");
    assert!(data["id"].is_u64());
    assert_eq!(
        c.expiry,
        (baton::Clock::now_ms(&s.clock) + 14 * 86_400_000) / 1000
    );
}

#[tokio::test]
async fn sign_in_with_a_form_works_like_json() {
    let s = Server::start().await;
    let r = s
        .request(
            "POST",
            "/auth/sign_in",
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )],
            b"email=ann%40example.com&password=correct+horse",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.assert_authenticated();
    assert_eq!(r.json()["data"]["email"], EMAIL);
}

#[tokio::test]
async fn wrong_sign_ins_are_401_and_unreadable_ones_400() {
    let s = Server::start().await;
    let json = [("content-type", "application/json")];
    for body in [
        r#"{"email":"ann@example.com","password":"wrong"}"#,
        r#"{"email":"nobody@example.com","password":"correct horse"}"#,
        r#"{"email":"ann@example.com"}"#,
    ] {
        let r = s
            .request("POST", "/auth/sign_in", &json, body.as_bytes())
            .await;
        r.assert_refused(401);
        assert_eq!(r.json()["success"], false);
    }
    assert_eq!(s.metric("baton_sign_in_failures_total").await, 3);
    for (ct, body) in [
        ("application/json", &b"{\"email\": "[..]),
        ("application/json", b"\xff\xfe"),
        ("application/x-www-form-urlencoded", b"email=%zz&password=x"),
        ("text/plain", b"email=ann"),
    ] {
        let r = s
            .request("POST", "/auth/sign_in", &[("content-type", ct)], body)
            .await;
        r.assert_refused(400);
        assert_eq!(r.json()["success"], false);
    }
    assert_eq!(s.metric("baton_sessions ").await, 0);
}

#[tokio::test]
async fn each_request_rotates_and_the_retired_token_is_replayed_after_the_window() {
    let s = Server::start().await;
    let c0 = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_millis(1));
    let r = s.get("/api/me", &c0).await;
    assert_eq!(r.status, 200);
    let c1 = r.assert_authenticated();
    assert_ne!(c1.token, c0.token);
    assert_eq!(c1.client, c0.client);
    assert_eq!(r.json()["data"]["email"], EMAIL);

    // Inside the batch window the retired token converges on its successor.
    let r = s.get("/api/items", &c0).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.assert_authenticated().token, c1.token);
    assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(3));

    s.clock.advance(Duration::from_secs(5));
    let r = s.get("/api/me", &c0).await;
    r.assert_refused(401);
    assert_eq!(
        r.json(),
        serde_json::json!({ "errors": ["You need to sign in or sign up before continuing."] })
    );
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"replayed\"}")
            .await,
        1
    );
    // Under the rejecting policy the session lives on.
    assert_eq!(s.get("/api/me", &c1).await.status, 200);
    assert_eq!(s.metric("baton_rotations_total").await, 2);
    assert_eq!(s.metric("baton_batched_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_batch_shares_one_new_token() {
    let s = Server::start().await;
    let c0 = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_millis(1));
    let raw = common::build("GET", "/api/items", &c0.headers(), b"");
    let answers = futures_join(&s, &raw, 8).await;
    let tokens: HashSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{r:?}");
            r.assert_authenticated().token
        })
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(!tokens.contains(&c0.token));
    assert_eq!(s.metric("baton_rotations_total").await, 1);
    assert_eq!(s.metric("baton_batched_total").await, 7);
}

async fn futures_join(s: &Server, raw: &[u8], n: usize) -> Vec<common::Resp> {
    // All connections are open and their requests written before any is answered
    // only by chance; what is asserted holds for any interleaving.
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = s.addr;
        let raw = raw.to_vec();
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&raw).await.unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            common::Resp::parse(&buf)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(common::PATIENCE, t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn validate_token_answers_success_and_data_or_401() {
    let s = Server::start().await;
    let c = s.sign_in(EMAIL).await;
    let r = s.get("/auth/validate_token", &c).await;
    assert_eq!(r.status, 200);
    r.assert_authenticated();
    r.assert_cors();
    let body = r.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["uid"], EMAIL);

    let wrong = Creds {
        token: "A".repeat(22),
        ..c.clone()
    };
    let r = s.get("/auth/validate_token", &wrong).await;
    r.assert_refused(401);
    assert_eq!(r.json()["success"], false);
    let r = s.request("GET", "/auth/validate_token", &[], b"").await;
    r.assert_refused(401);
}

#[tokio::test]
async fn every_rejection_reason_gets_the_same_401() {
    let s = Server::with(|b| b, |_| {}).await;
    let c = s.sign_in(EMAIL).await;
    let bodies: Vec<(u16, String)> = {
        let mut out = Vec::new();
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("access-token", "x"), ("uid", EMAIL)],
            vec![
                ("access-token", &c.token),
                ("client", "AAAAAAAAAAAAAAAA"),
                ("uid", EMAIL),
            ],
            vec![
                ("access-token", "not-a-token"),
                ("client", &c.client),
                ("uid", EMAIL),
            ],
            vec![
                ("access-token", &c.token),
                ("client", "short"),
                ("uid", EMAIL),
            ],
        ];
        for h in cases {
            let r = s.request("GET", "/api/me", &h, b"").await;
            r.assert_refused(401);
            out.push((r.status, r.text()));
        }
        out
    };
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"missing_credentials\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"malformed_credentials\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"unknown_session\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"invalid_token\"}")
            .await,
        1
    );
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"bad_input\"}")
            .await,
        1
    );
    // None of those touched the session.
    assert_eq!(s.get("/api/me", &c).await.status, 200);
}

#[tokio::test]
async fn headers_are_case_insensitive_and_token_type_optional() {
    let s = Server::start().await;
    let c = s.sign_in(EMAIL).await;
    let r = s
        .request(
            "GET",
            "/api/me",
            &[
                ("Access-Token", &c.token),
                ("CLIENT", &c.client),
                ("Uid", &c.uid),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.assert_authenticated();
}

/// The answer repeats the request's own `client` and `uid` values when they are the
/// session's; padded ones must still come back as the session's.
#[tokio::test]
async fn padded_credentials_are_answered_with_the_sessions_own_values() {
    let s = Server::start().await;
    let c = s.sign_in(EMAIL).await;
    let r = s
        .request(
            "GET",
            "/api/me",
            &[
                ("access-token", &c.token),
                ("client", &format!("\t{}  ", c.client)),
                ("uid", &format!(" {}\t", c.uid)),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let next = r.assert_authenticated();
    assert_eq!((&next.client, &next.uid), (&c.client, &c.uid));
    assert_ne!(next.token, c.token);
}

#[tokio::test]
async fn the_authorization_bearer_form_is_accepted_in_both_alphabets() {
    let s = Server::start().await;
    let mut c = s.sign_in(EMAIL).await;
    for url_safe in [false, true] {
        let json = serde_json::json!({
            "access-token": c.token, "token-type": "Bearer", "client": c.client,
            "expiry": c.expiry.to_string(), "uid": c.uid,
        })
        .to_string();
        let packed = if url_safe {
            Base64Url::encode_string(json.as_bytes())
        } else {
            Base64::encode_string(json.as_bytes())
        };
        s.clock.advance(Duration::from_millis(1));
        let r = s
            .request(
                "GET",
                "/api/me",
                &[("authorization", &format!("Bearer {packed}"))],
                b"",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        c = r.assert_authenticated();
    }
}

#[tokio::test]
async fn sign_out_revokes_without_token_headers_and_then_404s() {
    let s = Server::start().await;
    let c = s.sign_in(EMAIL).await;
    let other = s.sign_in(EMAIL).await;
    let r = s
        .request("DELETE", "/auth/sign_out", &c.headers(), b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "success": true }));
    assert!(r.header("access-token").is_none());
    r.assert_cors();
    s.get("/api/me", &c).await.assert_refused(401);
    let again = s
        .request("DELETE", "/auth/sign_out", &c.headers(), b"")
        .await;
    again.assert_refused(404);
    assert_eq!(again.json()["success"], false);
    s.request("DELETE", "/auth/sign_out", &[], b"")
        .await
        .assert_refused(404);
    // The user's other device is untouched.
    assert_eq!(s.get("/api/me", &other).await.status, 200);
    assert_eq!(
        s.metric("baton_sessions_ended_total{how=\"revoked\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn signing_in_past_the_client_cap_evicts_the_session_expiring_first() {
    let s = Server::with(|b| b.max_clients_per_user(2), |_| {}).await;
    let first = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_secs(1));
    let second = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_secs(1));
    let bob = s.sign_in("bob@example.com").await;
    let third = s.sign_in(EMAIL).await;
    s.get("/api/me", &first).await.assert_refused(401);
    assert_eq!(s.get("/api/me", &second).await.status, 200);
    assert_eq!(s.get("/api/me", &third).await.status, 200);
    assert_eq!(s.get("/api/me", &bob).await.status, 200);
    assert_eq!(
        s.metric("baton_sessions_ended_total{how=\"evicted\"}")
            .await,
        1
    );
    assert_eq!(s.metric("baton_sessions ").await, 3);
}

#[tokio::test]
async fn an_expired_session_is_refused_and_removed() {
    let s = Server::with(|b| b.token_lifespan(Duration::from_secs(60)), |_| {}).await;
    let c = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_secs(30));
    let r = s.get("/api/me", &c).await;
    assert_eq!(r.status, 200);
    let c1 = r.assert_authenticated();
    assert!(c1.expiry > c.expiry, "a rotation extends the expiry");
    s.clock.advance(Duration::from_secs(60));
    s.get("/api/me", &c1).await.assert_refused(401);
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"expired\"}").await,
        1
    );
    assert_eq!(s.metric("baton_sessions ").await, 0);
}

#[tokio::test]
async fn the_periodic_sweep_reclaims_sessions_nobody_presents_again() {
    let s = Server::with(
        |b| b.token_lifespan(Duration::from_secs(60)),
        |st| st.sweep_interval = Duration::from_millis(5),
    )
    .await;
    s.sign_in(EMAIL).await;
    s.sign_in("bob@example.com").await;
    assert_eq!(s.metric("baton_sessions ").await, 2);
    s.clock.advance(Duration::from_secs(61));
    // Waits for the sweeper to run; bounded, and asserts only that it did.
    let swept = tokio::time::timeout(common::PATIENCE, async {
        loop {
            let n = s.metric("baton_sessions_ended_total{how=\"swept\"}").await;
            if n == 2 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(swept, Ok(2));
    assert_eq!(s.metric("baton_sessions ").await, 0);
}

#[tokio::test]
async fn the_revoking_replay_policy_ends_the_session() {
    let s = Server::with(|b| b.replay_policy(ReplayPolicy::RevokeSession), |_| {}).await;
    let c0 = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_millis(1));
    let c1 = s.get("/api/me", &c0).await.assert_authenticated();
    s.clock.advance(Duration::from_secs(6));
    s.get("/api/me", &c0).await.assert_refused(401);
    s.get("/api/me", &c1).await.assert_refused(401);
    assert_eq!(
        s.metric("baton_rejections_total{reason=\"unknown_session\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn inside_the_minimum_rotation_interval_the_same_token_comes_back() {
    let s = Server::with(|b| b.min_rotation_interval(Duration::from_secs(5)), |_| {}).await;
    let c0 = s.sign_in(EMAIL).await;
    let r = s.get("/api/me", &c0).await;
    assert_eq!(r.status, 200);
    // A batched answer repeats the current token, never a blank one.
    assert_eq!(r.assert_authenticated().token, c0.token);
    s.clock.advance(Duration::from_secs(5));
    assert_ne!(
        s.get("/api/me", &c0).await.assert_authenticated().token,
        c0.token
    );
}

#[tokio::test]
async fn the_recovery_window_honours_a_lost_response() {
    let s = Server::with(|b| b.recovery_window(Duration::from_secs(60)), |_| {}).await;
    let c0 = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_millis(1));
    let lost = s.get("/api/me", &c0).await.assert_authenticated();
    s.clock.advance(Duration::from_secs(30));
    let r = s.get("/api/me", &c0).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.assert_authenticated().token, lost.token);
}

#[tokio::test]
async fn an_api_error_after_authentication_still_carries_the_next_credentials() {
    let s = Server::start().await;
    let c0 = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_millis(1));
    let r = s.get("/api/items/99", &c0).await;
    assert_eq!(r.status, 404);
    let c1 = r.assert_authenticated();
    assert_ne!(c1.token, c0.token);
    let r = s.get("/api/items/2", &c1).await;
    assert_eq!(r.json()["data"]["name"], "relay shoes");
}

#[tokio::test]
async fn preflights_answer_cors_without_authenticating_or_rotating() {
    let s = Server::start().await;
    let c = s.sign_in(EMAIL).await;
    for path in ["/api/me", "/auth/sign_in", "/anything"] {
        let r = s
            .request(
                "OPTIONS",
                path,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "access-token,client,uid"),
                ],
                b"",
            )
            .await;
        assert!(r.status == 204 || r.status == 200, "{r:?}");
        // `Access-Control-Expose-Headers` means nothing on a preflight (Fetch reads it
        // from the actual response), so tower-http's CORS sends it only there.
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let methods = r.header("access-control-allow-methods").unwrap();
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allowed = r.header("access-control-allow-headers").unwrap();
        for h in [
            "access-token",
            "token-type",
            "client",
            "expiry",
            "uid",
            "content-type",
            "authorization",
            "if-modified-since",
        ] {
            assert!(allowed.contains(h), "{allowed}");
        }
        assert!(r.header("access-token").is_none());
    }
    assert_eq!(s.metric("baton_rotations_total").await, 0);
    assert_eq!(s.get("/api/me", &c).await.status, 200);
}

#[tokio::test]
async fn allowed_origins_echo_a_listed_origin_only() {
    let s = Server::with(
        |b| b,
        |st| {
            st.cors = baton_demo::cors::Cors::parse("https://a.example, https://b.example").unwrap()
        },
    )
    .await;
    let r = s
        .request(
            "GET",
            "/public/items",
            &[("origin", "https://b.example")],
            b"",
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    let r = s
        .request(
            "GET",
            "/public/items",
            &[("origin", "https://evil.example")],
            b"",
        )
        .await;
    // A foreign origin is named nowhere (tower-http's CORS sends no allow-origin), so
    // its browser refuses the response; caches keep answers per origin.
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        r.header("vary").is_some_and(|v| v.contains("origin")),
        "{r:?}"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let s = Server::start().await;
    let c = s.sign_in(EMAIL).await;
    s.clock.advance(Duration::from_millis(1));
    s.get("/api/me", &c).await;
    s.get("/api/me", &c).await;
    // On its own listener only; readable by the API listener's own origin's scripts.
    assert_eq!(s.request("GET", "/metrics", &[], b"").await.status, 404);
    let api_origin = format!("http://{}", s.addr);
    let r = s.metrics(&[("origin", &api_origin)]).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(api_origin.as_str())
    );
    let foreign = s.metrics(&[("origin", "https://evil.example")]).await;
    assert_ne!(
        foreign.header("access-control-allow-origin"),
        Some("https://evil.example")
    );
    let text = r.text();
    for family in [
        "baton_sessions",
        "baton_rotations_total",
        "baton_batched_total",
        "baton_rejections_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{text}");
    }
    assert_eq!(s.metric("baton_sessions ").await, 1);
    assert_eq!(s.metric("baton_rotations_total").await, 1);
    assert_eq!(s.metric("baton_batched_total").await, 1);
}
