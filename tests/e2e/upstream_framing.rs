//! What an origin sends is held to HTTP/1.1 framing: an answer whose framing is broken is a
//! 502 (or, once its head has gone on, a body that breaks off), its connection is not used
//! again, and the next request is answered. Interim `1xx` answers (`103 Early Hints`) are
//! skipped: the client gets, and the cache stores, the final answer alone.

use std::net::SocketAddr;

use accel_e2e::{Collected, TestProxy, body, within};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

/// The answer the raw origin gives to `path`: `/ok` is well framed, the others are not.
fn answer(path: &str) -> Vec<u8> {
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    let text = match path {
        "/ok" => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned(),
        "/both" => {
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                .to_owned()
        }
        "/differing" => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_owned(),
        "/invalid-length" => "HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok".to_owned(),
        "/fold" => "HTTP/1.1 200 OK\r\nx-folded: a\r\n  b\r\ncontent-length: 2\r\n\r\nok".to_owned(),
        "/long-head" => {
            format!("HTTP/1.1 200 OK\r\nx-long: {}\r\ncontent-length: 2\r\n\r\nok", "a".repeat(70_000))
        }
        "/unknown-coding" => "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok".to_owned(),
        "/bad-chunk" => format!("{chunked}2\r\nok\r\nzz\r\nmore\r\n0\r\n\r\n"),
        "/chunk-overrun" => format!("{chunked}2\r\nokXX\r\n0\r\n\r\n"),
        "/early-hints" => concat!(
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 2\r\n\r\nok",
        )
        .to_owned(),
        _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned(),
    };
    text.into_bytes()
}

/// An origin that speaks HTTP/1.1 by hand, answering each request on a connection with
/// [`answer`] for its path (keep-alive), until the proxy closes the connection.
async fn raw_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    if stream.write_all(&answer(&path)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn proxy() -> TestProxy {
    TestProxy::builder().upstream("api", &[raw_origin().await]).rules(RULES).start().await
}

#[tokio::test]
async fn an_answer_with_broken_framing_is_a_502_and_the_next_request_is_answered() {
    let proxy = proxy().await;
    for path in ["/both", "/differing", "/invalid-length", "/fold", "/long-head", "/unknown-coding"] {
        let response = proxy.get(path).await;
        assert_eq!(response.status, 502, "{path}: {}", response.text());
        let next = proxy.get("/ok").await;
        assert_eq!(next.status, 200, "after {path}");
        assert_eq!(next.text(), "ok", "after {path}");
    }
}

#[tokio::test]
async fn a_broken_chunk_breaks_the_body_off_and_the_next_request_is_answered() {
    let proxy = proxy().await;
    for path in ["/bad-chunk", "/chunk-overrun"] {
        let request = proxy.request(Method::GET, path).body(body::empty()).unwrap();
        // The broken chunk may come before the head has gone on: then the client gets no
        // answer at all; after it, a body that breaks off. Never a complete-looking answer.
        if let Ok(response) = within("an answer", proxy.client().request(request)).await {
            assert_eq!(response.status(), 200);
            let read = within("the body", Collected::from(response)).await;
            assert!(read.is_err(), "{path}: the client must see the body break off, got {read:?}");
        }
        let next = proxy.get("/ok").await;
        assert_eq!(next.status, 200, "after {path}");
        assert_eq!(next.text(), "ok", "after {path}");
    }
}

#[tokio::test]
async fn interim_answers_are_skipped_and_only_the_final_one_is_stored() {
    let rules = format!("{RULES}cache = {{}}\n");
    let proxy = TestProxy::builder().upstream("api", &[raw_origin().await]).rules(&rules).start().await;
    let first = proxy.get("/early-hints").await;
    assert_eq!((first.status.as_u16(), first.text().as_str()), (200, "ok"));
    assert_eq!(first.header("cache-status"), Some("accel; fwd=miss; fwd-status=200; stored"));
    // The 103's fields are not the final answer's.
    assert_eq!(first.header("link"), None);
    let second = proxy.get("/early-hints").await;
    assert_eq!((second.status.as_u16(), second.text().as_str()), (200, "ok"));
    assert!(second.header("cache-status").is_some_and(|s| s.starts_with("accel; hit")), "{second:?}");
    assert_eq!(second.header("link"), None);
}
