//! The upstream of the scale benchmark: an in-process HTTP/1.1 server that counts the requests
//! it gets per path, so every figure about origin fetches is counted where they land.
//!
//! Every GET gets `200`, `Cache-Control: max-age=300` and the body
//! `{"path":"<path>","fetch":<n>}`, where `n` counts this path's requests from 1: a client that
//! reads `fetch` greater than 1 knows the answer was fetched again (after a purge). Paths under
//! [`SLOW_PREFIX`] answer after the configured latency, so that concurrent misses overlap the
//! leader's fetch as they would in front of a real API; the others answer at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::fast_origin::accept;

/// Paths answered after the origin's latency.
pub const SLOW_PREFIX: &str = "/api/items/";

/// A running counting origin; stops when dropped.
#[derive(Debug)]
pub struct CountingOrigin {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    server: JoinHandle<()>,
}

impl CountingOrigin {
    /// Listens on a free loopback port; paths under [`SLOW_PREFIX`] answer after `latency`.
    pub async fn start(latency: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let server = tokio::spawn(serve(listener, Arc::clone(&hits), latency));
        Ok(Self { addr, hits, server })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received for `path` so far.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().map_or(0, |hits| hits.get(path).copied().unwrap_or(0))
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The fetch number in a body this origin wrote; `None` for any other body.
pub fn fetch_number(body: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("fetch")?.as_u64()
}

async fn serve(listener: TcpListener, hits: Arc<Mutex<HashMap<String, u64>>>, latency: Duration) {
    accept(listener, "accel-scale origin", move |request| {
        let hits = Arc::clone(&hits);
        async move { answer(request.uri().path(), &hits, latency).await }
    })
    .await;
}

async fn answer(path: &str, hits: &Mutex<HashMap<String, u64>>, latency: Duration) -> Response<Full<Bytes>> {
    let fetch = match hits.lock() {
        Ok(mut hits) => {
            let count = hits.entry(path.to_owned()).or_insert(0);
            *count += 1;
            *count
        }
        Err(_) => 0,
    };
    if path.starts_with(SLOW_PREFIX) {
        tokio::time::sleep(latency).await;
    }
    let body = serde_json::json!({ "path": path, "fetch": fetch }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_number_is_read_back_from_a_body() {
        assert_eq!(fetch_number(br#"{"path":"/a","fetch":3}"#), Some(3));
        assert_eq!(fetch_number(b"not json"), None);
    }
}
