//! `fast-origin`: the upstream of the proxy benchmarks, as cheap as an HTTP/1.1 server gets.
//!
//! Every GET (and HEAD) gets the same `200` with a prebuilt JSON body of a chosen size,
//! `Content-Type: application/json` and, unless turned off, `Cache-Control: max-age=300` so
//! that caching proxies may store it. Other methods get `405`. The body and headers are built
//! once; an answer costs a `Bytes` clone and a header map clone.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE},
};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Default body size, in bytes: a typical small JSON API answer.
pub const DEFAULT_SIZE: usize = 2048;

/// The fixed answer an origin serves.
#[derive(Debug, Clone)]
pub struct Answer {
    body: Bytes,
    headers: HeaderMap,
}

impl Answer {
    /// An answer with a JSON body of exactly `size` bytes; `cacheable` adds
    /// `Cache-Control: max-age=300`.
    pub fn new(size: usize, cacheable: bool) -> Self {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if cacheable {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        }
        Self { body: json_body(size), headers }
    }

    /// The body every GET gets.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    fn respond(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = Response::new(Full::new(self.body.clone()));
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// Serves `answer` on every connection `listener` accepts, with keep-alive and `TCP_NODELAY`,
/// until the task is dropped.
pub async fn serve(listener: TcpListener, answer: Answer) {
    let answer = Arc::new(answer);
    accept(listener, "fast-origin", move |request| {
        let response = answer.respond(request.method());
        async move { response }
    })
    .await;
}

/// Accepts connections on `listener` until the task is dropped and answers every request on
/// them with `respond`, with keep-alive and `TCP_NODELAY`; `server` names it in messages.
pub async fn accept<F, R>(listener: TcpListener, server: &'static str, respond: F)
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait for connections to close.
                eprintln!("{server}: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without it a small answer can wait for the peer's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            // A client that goes away mid-request is normal under load.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A JSON document of exactly `size` bytes: an array of items, padded to the size.
fn json_body(size: usize) -> Bytes {
    const OPEN: &str = "{\"items\":[";
    const CLOSE: &str = "],\"pad\":\"\"}";
    if size < OPEN.len() + CLOSE.len() {
        return Bytes::from(" ".repeat(size));
    }
    let mut body = String::with_capacity(size);
    body.push_str(OPEN);
    for id in 0.. {
        let item = format!(
            "{}{{\"id\":{id},\"name\":\"item-{id}\",\"price\":{}.{:02},\"in_stock\":true}}",
            if id == 0 { "" } else { "," },
            100 + id * 7 % 900,
            id * 13 % 100
        );
        if body.len() + item.len() + CLOSE.len() > size {
            break;
        }
        body.push_str(&item);
    }
    body.push_str("],\"pad\":\"");
    let pad = size - body.len() - 2;
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str("\"}");
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_exact_size_and_is_json() {
        for size in [0, 5, 21, 22, 100, 2048, 102_400] {
            let body = json_body(size);
            assert_eq!(body.len(), size);
            if size >= 21 {
                serde_json::from_slice::<serde_json::Value>(&body).unwrap();
            }
        }
    }

    #[test]
    fn answers_get_and_refuses_post() {
        let answer = Answer::new(64, true);
        let ok = answer.respond(&Method::GET);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CACHE_CONTROL], "max-age=300");
        assert_eq!(answer.respond(&Method::POST).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(!Answer::new(64, false).respond(&Method::GET).headers().contains_key(CACHE_CONTROL));
    }
}
