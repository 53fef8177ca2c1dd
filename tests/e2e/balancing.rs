//! Least-connections balancing: an endpoint busy with a request gets no new one while an idle
//! endpoint is free, and a request counts as in flight until its response body's last byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use accel_e2e::{Collected, FakeOrigin, Gate, OriginHandle, TestProxy, body, within};
use http::{Method, Response};

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

/// An origin whose answers send their headers and a first chunk at once, then hold the rest
/// of the body until `gate` opens.
async fn held_body_origin(gate: &Gate) -> OriginHandle {
    FakeOrigin::new().route("/*", "").held_body(gate, "first ", "last").start().await
}

fn in_flight(status: &serde_json::Value, addr: std::net::SocketAddr) -> u64 {
    status["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["addr"] == addr.to_string())
        .and_then(|e| e["in_flight"].as_u64())
        .expect("the endpoint's in-flight count")
}

#[tokio::test]
async fn an_endpoint_is_busy_until_its_response_body_ends() {
    let gate = Gate::new();
    let slow = held_body_origin(&gate).await;
    let fast = FakeOrigin::new().route("/*", "fast").start().await;
    let proxy = TestProxy::builder().upstream("api", &[slow.addr(), fast.addr()]).rules(RULES).start().await;
    let client = proxy.client();

    // Both endpoints are idle, so ties are broken at random: ask until the slow one answers.
    // Its response headers arrive; its body stays open.
    let mut held = None;
    for _ in 0..64 {
        let request = proxy.request(Method::GET, "/x").body(body::empty()).unwrap();
        let response = within("response headers", client.request(request)).await.expect("an answer");
        if slow.total_hits() == 1 {
            held = Some(response);
            break;
        }
        let done = Collected::from(response).await.expect("the fast endpoint's body");
        assert_eq!(done.text(), "fast");
    }
    let held = held.expect("random tie-breaking picks the slow endpoint within 64 tries");
    let fast_before = fast.total_hits();

    // While the slow endpoint's body is open it has one request in flight, the fast one
    // none: every new request goes to the fast endpoint.
    assert_eq!(in_flight(&proxy.status_json().await, slow.addr()), 1);
    for _ in 0..30 {
        assert_eq!(proxy.get("/x").await.text(), "fast");
    }
    assert_eq!(slow.total_hits(), 1);
    assert_eq!(fast.total_hits(), fast_before + 30);

    // The body ends: the count ends with it, and the slow endpoint is picked again.
    gate.open();
    let done = within("the held body", Collected::from(held)).await.expect("the whole body");
    assert_eq!(done.text(), "first last");
    assert_eq!(in_flight(&proxy.status_json().await, slow.addr()), 0);
    for _ in 0..64 {
        proxy.get("/x").await;
        if slow.total_hits() > 1 {
            break;
        }
    }
    assert!(slow.total_hits() > 1, "the slow endpoint is picked again once idle");
}

#[tokio::test]
async fn concurrent_requests_pile_onto_the_endpoint_that_keeps_up() {
    // The slow endpoint holds every request until the gate opens; the fast one answers at
    // once. With least-connections the slow endpoint takes at most the requests that arrive
    // while it has no more in flight than the fast one.
    let gate = Gate::new();
    let slow = {
        let gate = gate.clone();
        FakeOrigin::new()
            .route("/*", "")
            .handler(move |request| {
                let gate = gate.clone();
                async move {
                    let _ = request.into_body().drain().await;
                    gate.wait().await;
                    Response::new(body::full("slow"))
                }
            })
            .start()
            .await
    };
    let fast = FakeOrigin::new().route("/*", "fast").start().await;
    let proxy = TestProxy::builder().upstream("api", &[slow.addr(), fast.addr()]).rules(RULES).start().await;

    // Four clients, each sending 25 requests one after another. A client whose request
    // waits on the slow endpoint stops there; the others go on.
    let finished = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = proxy.client();
        let url = proxy.url("/x");
        let finished = finished.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                let request = http::Request::get(&url).body(body::empty()).unwrap();
                let response = client.request(request).await.expect("an answer");
                statuses.push(response.status().as_u16());
                let _ = Collected::from(response).await;
            }
            finished.fetch_add(1, Ordering::SeqCst);
            statuses
        }));
    }
    // Each stuck client has exactly one request on the slow endpoint.
    accel_e2e::eventually("every client finished or waits on the slow endpoint", || {
        finished.load(Ordering::SeqCst) + slow.total_hits() == 4
    })
    .await;

    // A request goes to the slow endpoint only while it has no more in flight than the fast
    // one. The fast endpoint's in-flight count is at most the number of clients not stuck
    // and not choosing, so at least one client never gets stuck and all its requests go fast.
    let stuck = slow.total_hits();
    assert!(stuck < 4, "least-connections never sends the last free client to the busy endpoint");
    assert!(fast.total_hits() >= 25 * (4 - stuck), "fast {} with {stuck} stuck", fast.total_hits());
    gate.open();
    for client in clients {
        let statuses = within("the client finishes", client).await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_ends_the_count() {
    let gate = Gate::new();
    let origin = held_body_origin(&gate).await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    let request = proxy.request(Method::GET, "/x").body(body::empty()).unwrap();
    let response = within("response headers", proxy.client().request(request)).await.expect("an answer");
    assert_eq!(in_flight(&proxy.status_json().await, origin.addr()), 1);

    // The client drops the response (and its connection) before the body ends.
    drop(response);

    accel_e2e::eventually_async("the in-flight count ends with the client", || async {
        in_flight(&proxy.status_json().await, origin.addr()) == 0
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_at_its_connection_cap_gets_no_more_requests() {
    let gate = Gate::new();
    let held = held_body_origin(&gate).await;
    let proxy = TestProxy::builder()
        .upstream_with("api", &[held.addr()], "max_connections_per_endpoint = 2")
        .rules(RULES)
        .start()
        .await;
    let client = proxy.client();

    // Two answers whose bodies stay open hold both places.
    let mut open = Vec::new();
    for _ in 0..2 {
        let request = proxy.request(Method::GET, "/x").body(body::empty()).unwrap();
        open.push(within("response headers", client.request(request)).await.expect("an answer"));
    }

    let refused = proxy.get("/x").await;
    assert_eq!((refused.status.as_u16(), refused.text().as_str()), (503, "upstream at capacity\n"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(held.total_hits(), 2, "the third request never reached the endpoint");
    assert_eq!(proxy.metric(r#"accel_upstream_overflow_total{upstream="api"}"#).await, 1.0);

    // The places are freed at the bodies' ends.
    gate.open();
    for response in open {
        let done = within("a held body", Collected::from(response)).await.expect("the whole body");
        assert_eq!(done.text(), "first last");
    }
    let after = proxy.get("/x").await;
    assert_eq!((after.status.as_u16(), after.text().as_str()), (200, "first last"));
}
