//! Endpoint health: active checks eject a failing endpoint and re-admit it; passive ejection
//! after consecutive failed requests, for a cool-down; the last available endpoint is never
//! ejected; a dead endpoint costs idempotent clients nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use accel_e2e::{FakeOrigin, OriginHandle, TestProxy, body, eventually_async};
use http::{Response, StatusCode};

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

/// An origin whose `/health` answers 200 or 503 as `healthy` says; every other path says
/// `name`.
async fn switchable(name: &'static str, healthy: &Arc<AtomicBool>) -> OriginHandle {
    let healthy = healthy.clone();
    FakeOrigin::new()
        .route("/health", "")
        .handler(move |_| {
            let ok = healthy.load(Ordering::SeqCst);
            async move {
                let mut response = Response::new(body::full(if ok { "ok" } else { "sick" }));
                if !ok {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                response
            }
        })
        .route("/*", name)
        .start()
        .await
}

async fn state(proxy: &TestProxy, addr: std::net::SocketAddr) -> String {
    let status = proxy.status_json().await;
    status["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["addr"] == addr.to_string())
        .and_then(|e| e["state"].as_str())
        .expect("the endpoint's state")
        .to_owned()
}

async fn wait_for_state(proxy: &TestProxy, addr: std::net::SocketAddr, want: &str) {
    eventually_async(&format!("{addr} becomes {want}"), || async { state(proxy, addr).await == want }).await;
}

fn healthy_series(addr: std::net::SocketAddr) -> String {
    format!(r#"accel_endpoint_healthy{{upstream="api",endpoint="{addr}"}}"#)
}

#[tokio::test]
async fn active_checks_eject_a_failing_endpoint_and_readmit_it() {
    let a_ok = Arc::new(AtomicBool::new(true));
    let b_ok = Arc::new(AtomicBool::new(true));
    let a = switchable("a", &a_ok).await;
    let b = switchable("b", &b_ok).await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"health = { path = "/health", interval = "20ms", timeout = "5s", unhealthy_threshold = 2, healthy_threshold = 2 }"#,
        )
        .rules(RULES)
        .start()
        .await;
    eventually_async("the checks reach both endpoints", || async {
        a.hits("/health") > 0 && b.hits("/health") > 0
    })
    .await;

    a_ok.store(false, Ordering::SeqCst);
    wait_for_state(&proxy, a.addr(), "unhealthy").await;
    assert_eq!(proxy.metric(&healthy_series(a.addr())).await, 0.0);
    assert_eq!(proxy.admin_get("/readyz").await.status, 200, "one endpoint is enough to be ready");

    let before = a.hits("/x");
    for _ in 0..20 {
        assert_eq!(proxy.get("/x").await.text(), "b");
    }
    assert_eq!(a.hits("/x"), before, "an unhealthy endpoint gets no traffic");
    // The checks do not pause while it is out.
    let checks = a.hits("/health");
    eventually_async("checks go on", || async { a.hits("/health") > checks }).await;

    a_ok.store(true, Ordering::SeqCst);
    wait_for_state(&proxy, a.addr(), "healthy").await;
    assert_eq!(proxy.metric(&healthy_series(a.addr())).await, 1.0);
    let mut back = false;
    for _ in 0..64 {
        if proxy.get("/x").await.text() == "a" {
            back = true;
            break;
        }
    }
    assert!(back, "a re-admitted endpoint takes traffic again");
}

#[tokio::test]
async fn a_killed_endpoint_is_checked_out_and_back_in_after_restart() {
    let up = Arc::new(AtomicBool::new(true));
    let a = switchable("a", &up).await;
    let b = switchable("b", &up).await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"health = { path = "/health", interval = "20ms", timeout = "5s", unhealthy_threshold = 1 }"#,
        )
        .rules(RULES)
        .start()
        .await;

    a.stop();
    wait_for_state(&proxy, a.addr(), "unhealthy").await;
    for _ in 0..20 {
        let response = proxy.get("/x").await;
        assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "b"));
    }

    a.restart().await;
    wait_for_state(&proxy, a.addr(), "healthy").await;
}

#[tokio::test]
async fn every_endpoint_failing_checks_makes_the_proxy_unready_but_still_tried() {
    let ok = Arc::new(AtomicBool::new(true));
    let a = switchable("a", &ok).await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr()],
            r#"health = { path = "/health", interval = "20ms", unhealthy_threshold = 1 }"#,
        )
        .rules(RULES)
        .start()
        .await;
    ok.store(false, Ordering::SeqCst);
    wait_for_state(&proxy, a.addr(), "unhealthy").await;

    let ready = proxy.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("api"), "{}", ready.text());
    // Never refuse while an endpoint might answer: the unhealthy endpoint is still tried.
    let response = proxy.get("/x").await;
    assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "a"));
}

#[tokio::test]
async fn consecutive_failures_eject_an_endpoint_for_the_cool_down() {
    let a = FakeOrigin::new().route("/*", "broken").status(500).start().await;
    let b = FakeOrigin::new().route("/*", "b").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"ejection = { consecutive_failures = 3, cooldown = "1h" }"#,
        )
        .rules(RULES)
        .start()
        .await;

    // Without a retry status, a 500 reaches the client; the third in a row ejects the endpoint.
    let mut errors = 0;
    for _ in 0..200 {
        if proxy.get("/x").await.status == 500 {
            errors += 1;
        }
        if a.total_hits() == 3 {
            break;
        }
    }
    assert_eq!(a.total_hits(), 3);
    assert_eq!(errors, 3);
    assert_eq!(state(&proxy, a.addr()).await, "ejected");
    let ejections = format!(r#"accel_endpoint_ejections_total{{upstream="api",endpoint="{}"}}"#, a.addr());
    assert_eq!(proxy.metric(&ejections).await, 1.0);

    for _ in 0..20 {
        assert_eq!(proxy.get("/x").await.status, 200);
    }
    assert_eq!(a.total_hits(), 3, "an ejected endpoint gets nothing during its cool-down");
}

#[tokio::test]
async fn an_ejected_endpoint_returns_after_its_cool_down() {
    let a = FakeOrigin::new().route("/*", "broken").status(500).start().await;
    let b = FakeOrigin::new().route("/*", "b").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"ejection = { consecutive_failures = 1, cooldown = "50ms" }"#,
        )
        .rules(RULES)
        .start()
        .await;
    while a.total_hits() == 0 {
        proxy.get("/x").await;
    }
    // Counted rather than looked at: the cool-down may be over before `/status` is read.
    let ejections = format!(r#"accel_endpoint_ejections_total{{upstream="api",endpoint="{}"}}"#, a.addr());
    assert_eq!(proxy.metric(&ejections).await, 1.0);

    wait_for_state(&proxy, a.addr(), "healthy").await;
    eventually_async("the endpoint gets a request again", || async {
        proxy.get("/x").await;
        a.total_hits() > 1
    })
    .await;
}

#[tokio::test]
async fn the_last_available_endpoint_is_never_ejected() {
    let a = FakeOrigin::new().route("/*", "broken").status(500).start().await;
    let b = FakeOrigin::new().route("/*", "also broken").status(502).start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"ejection = { consecutive_failures = 1, cooldown = "1h" }"#,
        )
        .rules(RULES)
        .start()
        .await;

    for _ in 0..30 {
        let status = proxy.get("/x").await.status;
        assert!(status == 500 || status == 502, "{status}");
    }
    let states = [state(&proxy, a.addr()).await, state(&proxy, b.addr()).await];
    assert_eq!(states.iter().filter(|s| *s == "ejected").count(), 1, "{states:?}");
    assert_eq!(a.total_hits() + b.total_hits(), 30, "every request still reached an endpoint");
}

#[tokio::test]
async fn a_dead_endpoint_costs_idempotent_clients_nothing() {
    let a = FakeOrigin::new().route("/*", "a").start().await;
    let b = FakeOrigin::new().route("/*", "b").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"ejection = { consecutive_failures = 2, cooldown = "1h" }"#,
        )
        .rules(RULES)
        .start()
        .await;
    assert_eq!(proxy.get("/x").await.status, 200);

    a.stop();
    // Refused connections are retried on the other endpoint; after two the dead one is out.
    for _ in 0..40 {
        let response = proxy.get("/x").await;
        assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "b"));
    }
    assert_eq!(state(&proxy, a.addr()).await, "ejected");
    // Two failed tries (refused, or a pooled connection found closed) ejected it.
    let outcome = |o: &str| {
        format!(r#"accel_upstream_requests_total{{upstream="api",endpoint="{}",outcome="{o}"}}"#, a.addr())
    };
    let failed =
        proxy.metric(&outcome("connect_error")).await + proxy.metric(&outcome("protocol_error")).await;
    assert_eq!(failed, 2.0);
}

#[tokio::test]
async fn only_consecutive_failures_count_towards_ejection() {
    let flip = Arc::new(AtomicBool::new(false));
    let a = {
        let flip = flip.clone();
        FakeOrigin::new()
            .route("/*", "")
            .handler(move |_| {
                // 500, 200, 500, 200, … whatever the order requests arrive in.
                let fail = !flip.fetch_xor(true, Ordering::SeqCst);
                async move {
                    let mut response = Response::new(body::full("a"));
                    if fail {
                        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    response
                }
            })
            .start()
            .await
    };
    let b = FakeOrigin::new().route("/*", "b").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[a.addr(), b.addr()],
            r#"ejection = { consecutive_failures = 2, cooldown = "1h" }"#,
        )
        .rules(RULES)
        .start()
        .await;

    for _ in 0..40 {
        proxy.get("/x").await;
    }

    assert!(a.total_hits() > 2, "a took part ({} requests)", a.total_hits());
    assert_eq!(state(&proxy, a.addr()).await, "healthy", "a success in between resets the count");
}
