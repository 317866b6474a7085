//! Graceful shutdown: a request in flight when the server is told to stop still gets
//! its answer, and the server then returns.

mod common;

use common::{Resp, Server, EMAIL, PASSWORD, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn an_in_flight_request_finishes_after_stop() {
    let mut s = Server::start().await;
    let body = serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string();
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /auth/sign_in HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    // hyper sends 100 Continue only once the handler reads the body: from here on the
    // request is in flight, with no guessing about timing.
    let mut interim = [0u8; 25];
    tokio::time::timeout(PATIENCE, c.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");

    let stopped = s.stop();
    c.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, c.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = Resp::parse(&buf);
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_authenticated();
    tokio::time::timeout(PATIENCE, stopped)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err(), "still accepting");
}
