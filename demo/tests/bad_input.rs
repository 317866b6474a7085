//! Hostile and broken requests: each gets a 4xx (with the JSON error shape where the
//! server, not hyper, answers), never a 5xx, and leaves other sessions alone.

mod common;

use std::time::Duration;

use base64ct::{Base64, Encoding};
use common::{Resp, Server, EMAIL, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `attack` against a server with a signed-in session, then checks that the
/// session still works and nothing crashed.
async fn survives(attack: impl AsyncFnOnce(&Server) -> Resp, want: u16, json: bool) {
    let s = Server::with(
        |b| b,
        |st| {
            st.limits.max_header_bytes = 4096;
            st.limits.max_body_bytes = 1024;
        },
    )
    .await;
    let c = s.sign_in(EMAIL).await;
    let r = attack(&s).await;
    assert_eq!(r.status, want, "{r:?}");
    if json {
        r.assert_refused(want);
    }
    let after = s.get("/api/me", &c).await;
    assert_eq!(after.status, 200, "{after:?}");
}

#[tokio::test]
async fn oversized_headers_get_a_json_431() {
    survives(
        async |s| {
            let big = "x".repeat(8 * 1024);
            s.request("GET", "/api/me", &[("x-filler", &big)], b"")
                .await
        },
        431,
        true,
    )
    .await;
}

#[tokio::test]
async fn headers_past_hypers_buffer_get_a_bare_431() {
    survives(
        async |s| {
            let big = "x".repeat(100 * 1024);
            s.request("GET", "/api/me", &[("x-filler", &big)], b"")
                .await
        },
        431,
        false,
    )
    .await;
}

#[tokio::test]
async fn an_oversized_credential_header_is_a_plain_401() {
    survives(
        async |s| {
            let big = "A".repeat(500);
            s.request(
                "GET",
                "/api/me",
                &[("access-token", &big), ("client", &big), ("uid", EMAIL)],
                b"",
            )
            .await
        },
        401,
        true,
    )
    .await;
}

#[tokio::test]
async fn an_oversized_body_gets_413_declared_or_not() {
    survives(
        async |s| {
            let body = vec![b'a'; 4096];
            s.request(
                "POST",
                "/auth/sign_in",
                &[("content-type", "application/json")],
                &body,
            )
            .await
        },
        413,
        true,
    )
    .await;
    survives(
        async |s| {
            // Chunked, so the size is only known once the body has been read.
            let mut raw = b"POST /auth/sign_in HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\
                content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
            for _ in 0..4 {
                raw.extend_from_slice(b"200\r\n");
                raw.extend_from_slice(&[b' '; 512]);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            s.send(&raw).await
        },
        413,
        true,
    )
    .await;
}

#[tokio::test]
async fn non_utf8_header_bytes_are_refused_not_crashed_on() {
    for (name, value) in [
        (&b"uid"[..], &b"ann\xff@example.com"[..]),
        (b"access-token", b"\xc3\x28\xa0\xa1"),
        (b"authorization", b"Bearer \xfe\xff"),
    ] {
        survives(
            async |s| {
                let mut raw = b"GET /api/me HTTP/1.1\r\nhost: t\r\nconnection: close\r\nclient: AAAAAAAAAAAAAAAA\r\n".to_vec();
                raw.extend_from_slice(name);
                raw.extend_from_slice(b": ");
                raw.extend_from_slice(value);
                raw.extend_from_slice(b"\r\n\r\n");
                s.send(&raw).await
            },
            401,
            true,
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let not_object = format!("Bearer {}", Base64::encode_string(b"[1,2]"));
    let not_json = format!("Bearer {}", Base64::encode_string(b"{\"uid\":"));
    for value in [
        "Bearer",
        "Bearer !!!",
        "Bearer QUJD=QUJD",
        "Basic YTpi",
        not_object.as_str(),
        not_json.as_str(),
    ] {
        survives(
            async |s| {
                s.request("GET", "/api/me", &[("authorization", value)], b"")
                    .await
            },
            401,
            true,
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_sign_in_bodies_are_400() {
    for (ct, body) in [
        ("application/json", &b"{{{{"[..]),
        ("application/json", b"null"),
        ("application/json", br#"{"email":["a"],"password":"x"}"#),
        (
            "application/x-www-form-urlencoded",
            b"email=%E0%A4%A&password=x",
        ),
        ("application/x-www-form-urlencoded", b"email=%C3%28"),
    ] {
        survives(
            async |s| {
                s.request("POST", "/auth/sign_in", &[("content-type", ct)], body)
                    .await
            },
            400,
            true,
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_404_and_405() {
    survives(
        async |s| s.request("GET", "/nope", &[], b"").await,
        404,
        true,
    )
    .await;
    survives(
        async |s| s.request("GET", "/auth/sign_in", &[], b"").await,
        405,
        true,
    )
    .await;
    survives(
        async |s| s.request("PUT", "/api/me", &[], b"").await,
        405,
        true,
    )
    .await;
    survives(
        async |s| s.request("BREW", "/public/items", &[], b"").await,
        405,
        true,
    )
    .await;
    // The counters are served on their own listener only.
    survives(
        async |s| s.request("GET", "/metrics", &[], b"").await,
        404,
        true,
    )
    .await;
    survives(
        async |s| s.send(b"NOT HTTP AT ALL\r\n\r\n").await,
        400,
        false,
    )
    .await;
}

#[tokio::test]
async fn a_client_that_stalls_mid_headers_is_cut_off() {
    let s = Server::with(
        |b| b,
        |st| st.limits.header_read_timeout = Duration::from_millis(200),
    )
    .await;
    let c = s.sign_in(EMAIL).await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /api/me HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .await
        .unwrap();
    // The server must close the connection by itself; the bound only keeps a broken
    // server from hanging the test.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    assert_eq!(s.get("/api/me", &c).await.status, 200);
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    let s = Server::with(
        |b| b,
        |st| st.limits.body_read_timeout = Duration::from_millis(200),
    )
    .await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(
        b"POST /auth/sign_in HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\"",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, slow.read_to_end(&mut buf))
        .await
        .expect("the server answered a stalled body")
        .unwrap();
    Resp::parse(&buf).assert_refused(408);
}
