//! The cold-key storm: on every sidecar at once, many concurrent requests for one key nobody
//! has, repeated with a new key per storm. With the tier's lock, the origin sees one request
//! per storm whatever the number of sidecars; every other request is a follower, answered from
//! its sidecar's leader or from Redis.
//!
//! Every connection is opened first; then all requests are released together, so they arrive
//! while the first one is still at the origin.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::future::{join_all, try_join_all};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::origin::{CountingOrigin, SLOW_PREFIX};
use super::report::{Spread, StormFigures};
use super::sidecar::Sidecar;

/// Longest wait for one storm request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// What one request of a storm saw.
struct Outcome {
    latency: Duration,
    ok: bool,
    upstream: bool,
}

/// Runs `storms` storms of `per_sidecar` concurrent requests on every sidecar; keys are named
/// after `run` so that no storm finds a key another one filled.
pub async fn run(
    sidecars: &[Sidecar],
    origin: &CountingOrigin,
    per_sidecar: usize,
    storms: usize,
    origin_latency: Duration,
    run: &str,
) -> anyhow::Result<StormFigures> {
    let mut origin_fetches = Vec::with_capacity(storms);
    let (mut failed, mut upstream_answers, mut followers) = (0, 0, Vec::new());
    for storm in 0..storms {
        let path = format!("{SLOW_PREFIX}storm-{run}-{storm}");
        let (go, ready) = watch::channel(false);
        let mut connections = Vec::with_capacity(sidecars.len() * per_sidecar);
        for sidecar in sidecars {
            let opened = try_join_all((0..per_sidecar).map(|_| connect(sidecar)))
                .await
                .with_context(|| format!("open {per_sidecar} connections to {}", sidecar.name()))?;
            connections.extend(opened.into_iter().map(|sender| (sender, sidecar.addr())));
        }
        let requests = connections.into_iter().map(|(sender, addr)| {
            let mut ready = ready.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let _ = ready.wait_for(|&go| go).await;
                request(sender, &format!("http://{addr}{path}")).await
            })
        });
        let requests: Vec<_> = requests.collect();
        // Every task is spawned and waiting: let them go together.
        tokio::task::yield_now().await;
        let _ = go.send(true);
        for outcome in join_all(requests).await {
            match outcome {
                Ok(Some(Outcome { latency, ok, upstream })) => {
                    failed += u64::from(!ok);
                    if upstream {
                        upstream_answers += 1;
                    } else {
                        followers.push(latency);
                    }
                }
                Ok(None) | Err(_) => failed += 1,
            }
        }
        origin_fetches.push(origin.hits(&path));
    }
    Ok(StormFigures {
        requests_per_sidecar: per_sidecar,
        origin_fetches,
        upstream_answers,
        failed,
        followers: Spread::of(followers),
        origin_latency_ms: origin_latency.as_secs_f64() * 1000.0,
    })
}

async fn connect(sidecar: &Sidecar) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(sidecar.addr()).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Its errors reach the request in flight.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one GET and reads the answer to its end; `None` when there was none in time.
async fn request(mut sender: SendRequest<Empty<Bytes>>, uri: &str) -> Option<Outcome> {
    let request = Request::get(uri).header("host", "scale.test").body(Empty::new()).ok()?;
    let started = Instant::now();
    let exchange = async {
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        let upstream = response
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| s.contains("fwd-status="));
        response.into_body().collect().await.ok()?;
        Some(Outcome { latency: started.elapsed(), ok: status.is_success(), upstream })
    };
    tokio::time::timeout(REQUEST_DEADLINE, exchange).await.ok().flatten()
}
