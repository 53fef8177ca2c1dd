//! Upgrades: a WebSocket client and server talk through a route that tunnels `websocket`;
//! a route that does not strips the upgrade headers; a quiet tunnel closes after its idle
//! timeout; the tunnels are counted.

use std::net::SocketAddr;

use accel_e2e::{TestProxy, eventually_async, within};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const RULES: &str = r#"
[[route]]
name = "ws"
upstream = "api"
match = { path_prefix = "/ws" }
upgrades = ["websocket"]

[[route]]
name = "quiet"
upstream = "api"
match = { path_prefix = "/quiet" }
upgrades = ["websocket"]
upgrade_idle_timeout = "200ms"

[[route]]
name = "plain"
upstream = "api"
"#;

/// A WebSocket origin that echoes every text and binary message.
async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn proxy(origin: SocketAddr) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin]).rules(RULES).start().await
}

fn ws_url(proxy: &TestProxy, path: &str) -> String {
    format!("ws://{}{path}", proxy.addr())
}

#[tokio::test]
async fn websocket_messages_echo_through_a_route_that_tunnels_them() {
    let proxy = proxy(echo_origin().await).await;
    let (mut ws, response) =
        within("the handshake", tokio_tungstenite::connect_async(ws_url(&proxy, "/ws/chat"))).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"].to_str().unwrap().to_ascii_lowercase(), "websocket");

    for i in 0..5 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echoed = within("the echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let large = vec![7u8; 200_000];
    ws.send(Message::binary(large.clone())).await.unwrap();
    let echoed = within("the large echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &large[..]);

    assert_eq!(proxy.metric(r#"accel_upgrades_total{route="ws",result="switched"}"#).await, 1.0);
    assert_eq!(proxy.metric(r#"accel_tunnels_open{route="ws"}"#).await, 1.0);

    ws.close(None).await.unwrap();
    // The close handshake completes through the tunnel, then the server ends the stream.
    while let Some(Ok(_)) = within("the close", ws.next()).await {}
    drop(ws);
    eventually_async("the tunnel closed", || async {
        proxy.metric(r#"accel_tunnels_open{route="ws"}"#).await == 0.0
    })
    .await;
    let up = proxy.metric(r#"accel_tunnel_bytes_total{route="ws",direction="upstream"}"#).await;
    let down = proxy.metric(r#"accel_tunnel_bytes_total{route="ws",direction="downstream"}"#).await;
    assert!(up > 200_000.0 && down > 200_000.0, "up {up}, down {down}");

    // Plain requests on the same proxy are unaffected.
    assert_ne!(proxy.get("/plain").await.status, 101);
}

/// An origin that reports each request head it reads and answers `200` (it never switches).
async fn recording_origin() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&buf).to_ascii_lowercase());
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, received)
}

/// The answer to a WebSocket handshake on `path` that does not switch.
async fn not_switched(proxy: &TestProxy, path: &str) -> http::Response<Option<Vec<u8>>> {
    match within("the handshake", tokio_tungstenite::connect_async(ws_url(proxy, path))).await {
        Err(WsError::Http(response)) => response,
        other => panic!("the handshake should fail with the origin's answer: {other:?}"),
    }
}

#[tokio::test]
async fn a_route_without_upgrades_strips_the_upgrade_headers() {
    let (origin, mut heads) = recording_origin().await;
    let proxy = proxy(origin).await;
    assert_eq!(not_switched(&proxy, "/plain").await.status(), 200);
    let head = within("the origin's request", heads.recv()).await.unwrap();
    assert!(!head.contains("upgrade"), "no upgrade asked of the origin: {head}");
    assert!(head.contains("sec-websocket-key"), "the other handshake headers pass as any header does");
}

#[tokio::test]
async fn an_origin_that_does_not_switch_gives_an_ordinary_response() {
    let (origin, mut heads) = recording_origin().await;
    let proxy = proxy(origin).await;
    let response = not_switched(&proxy, "/ws/x").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_deref(), Some(&b"no"[..]));
    let head = within("the origin's request", heads.recv()).await.unwrap();
    assert!(head.contains("connection: upgrade") && head.contains("upgrade: websocket"), "{head}");
    assert_eq!(proxy.metric(r#"accel_upgrades_total{route="ws",result="declined"}"#).await, 1.0);
}

#[tokio::test]
async fn a_quiet_tunnel_closes_after_its_idle_timeout() {
    let proxy = proxy(echo_origin().await).await;
    let (mut ws, _) =
        within("the handshake", tokio_tungstenite::connect_async(ws_url(&proxy, "/quiet"))).await.unwrap();
    ws.send(Message::text("once")).await.unwrap();
    assert_eq!(within("the echo", ws.next()).await.unwrap().unwrap(), Message::text("once"));
    // Nothing more is sent: the proxy closes the tunnel, and the client sees its end.
    let end = within("the idle close", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    });
    end.await;
    assert_eq!(proxy.metric(r#"accel_tunnels_open{route="quiet"}"#).await, 0.0);
}
