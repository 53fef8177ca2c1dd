//! Reload: on a change of a rules file or of `accel.toml`, and on demand (what SIGHUP does);
//! an invalid set is rejected, counted, and the running configuration keeps serving; no
//! request fails because of a reload, including one in flight across it. Upstreams and the
//! live settings of `accel.toml` apply; start-only settings are named and wait for a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use accel::config::restart::StartOnly;
use accel_e2e::{Collected, FakeOrigin, Gate, TestProxy, body, eventually_async, within};
use http::{Method, Response};

fn route(name: &str, path_prefix: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{path_prefix}\" }}\nupstream = \"api\"\n"
    )
}

const RELOAD_OK: &str = r#"accel_config_reloads_total{result="success"}"#;
const RELOAD_ERROR: &str = r#"accel_config_reloads_total{result="error"}"#;
const RESTART_PENDING: &str = "accel_config_restart_pending";
const FILE_EVENTS_UNCHANGED: &str = r#"accel_config_file_events_total{result="unchanged"}"#;

/// The `endpoints = [...]` line of an upstream.
fn endpoints(addrs: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("endpoints = [{}]", list.join(", "))
}

/// `accel.toml`'s text with its (only) upstream's endpoints replaced.
fn with_endpoints(proxy: &TestProxy, from: &[std::net::SocketAddr], to: &[std::net::SocketAddr]) -> String {
    let text = proxy.config_text();
    assert!(text.contains(&endpoints(from)), "{text}");
    text.replace(&endpoints(from), &endpoints(to))
}

#[tokio::test]
async fn a_changed_rules_file_is_picked_up() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("old", "/old/")).start().await;
    assert_eq!(proxy.get("/new/x").await.status, 404);

    proxy.rewrite_rules(&route("new", "/new/"));

    eventually_async("the new rules serve", || async { proxy.get("/new/x").await.status == 200 }).await;
    assert_eq!(proxy.get("/old/x").await.status, 404, "the old rules are gone");
    assert!(proxy.metric(RELOAD_OK).await >= 1.0);
}

#[tokio::test]
async fn a_new_file_matching_the_rules_glob_is_picked_up() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("a", "/a/")).start().await;

    let more = proxy.rules_path().with_file_name("more.toml");
    std::fs::write(&more, route("b", "/b/")).unwrap();

    eventually_async("the new file's routes serve", || async { proxy.get("/b/x").await.status == 200 }).await;
    assert_eq!(proxy.get("/a/x").await.status, 200);
}

#[tokio::test]
async fn an_explicit_reload_swaps_the_rules() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("old", "/old/")).start().await;

    proxy.rewrite_rules(&format!("{}\n{}", route("one", "/one/"), route("two", "/two/")));
    let routes = proxy.reload().expect("valid rules");

    assert_eq!(routes, 2);
    assert_eq!(proxy.get("/two/x").await.status, 200);
    assert_eq!(proxy.get("/old/x").await.status, 404);
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_running_rules() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("good", "/")).start().await;

    proxy.rewrite_rules(
        "[[route]]\nname = \"bad\"\nupstream = \"nowhere\"\ntimeouts = { response = \"soon\" }\n",
    );
    let problems = proxy.reload().expect_err("the new rules are invalid");

    let text = problems.to_string();
    let file = proxy.rules_path().display().to_string();
    assert!(
        text.contains(&format!(r#"{file}: route "bad": key `upstream`: unknown upstream "nowhere""#)),
        "{text}"
    );
    assert!(text.contains(r#"route "bad": key `timeouts.response`"#), "{text}");
    assert!(proxy.metric(RELOAD_ERROR).await >= 1.0);
    assert_eq!(proxy.get("/anything").await.status, 200, "the old rules still serve");
    let status = proxy.status_json().await;
    assert_eq!(status["routes"][0]["name"], "good");
}

#[tokio::test]
async fn an_invalid_file_change_is_rejected_and_counted() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("good", "/")).start().await;

    proxy.rewrite_rules("[[route]\nthis is not toml");

    eventually_async("the watcher rejects the file", || async { proxy.metric(RELOAD_ERROR).await >= 1.0 })
        .await;
    assert_eq!(proxy.metric(RELOAD_OK).await, 0.0);
    assert_eq!(proxy.get("/anything").await.status, 200);
}

#[tokio::test]
async fn rules_files_that_all_vanish_leave_the_running_rules() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("good", "/")).start().await;

    std::fs::remove_file(proxy.rules_path()).unwrap();

    eventually_async("the watcher rejects the empty set", || async {
        proxy.metric(RELOAD_ERROR).await >= 1.0
    })
    .await;
    let problems = proxy.reload().expect_err("no rules file is not a rule set");
    assert!(problems.to_string().contains("matches no rules file"), "{problems}");
    assert_eq!(proxy.get("/anything").await.status, 200, "the old rules still serve");
    assert_eq!(proxy.metric(RELOAD_OK).await, 0.0);

    // An empty file is a deliberate empty set.
    std::fs::write(proxy.rules_path(), "").unwrap();
    assert_eq!(proxy.reload().expect("an empty file is valid"), 0);
    assert_eq!(proxy.get("/anything").await.status, 404);
}

#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("v0", "/")).start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = proxy.client();
        let url = proxy.url("/load");
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut answered = 0;
            while !stop.load(Ordering::SeqCst) {
                let request = http::Request::get(&url).body(body::empty()).unwrap();
                let response = client.request(request).await.expect("an answer");
                let response = Collected::from(response).await.expect("a whole body");
                assert_eq!(response.status, 200, "{}", response.text());
                answered += 1;
            }
            answered
        }));
    }

    for i in 1..=20 {
        // Both variants route everything; names and order change so each is a new table.
        let rules = if i % 2 == 0 {
            route(&format!("v{i}"), "/")
        } else {
            format!("{}\n{}", route("extra", "/extra/"), route(&format!("v{i}"), "/"))
        };
        proxy.rewrite_rules(&rules);
        proxy.reload().expect("valid rules");
        let before = origin.total_hits();
        eventually_async("requests flow after the reload", || async { origin.total_hits() > before + 4 })
            .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for client in clients {
        total += within("a client finishes", client).await.expect("no client failed");
    }
    assert!(total >= 80, "{total}");
    assert_eq!(proxy.metric(r#"accel_requests_total{route="v20",method="GET",status="5xx"}"#).await, 0.0);
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_rules_it_started_with() {
    let gate = Gate::new();
    let origin = {
        let gate = gate.clone();
        FakeOrigin::new()
            .route("/slow", "")
            .handler(move |_| {
                let gate = gate.clone();
                async move {
                    gate.wait().await;
                    Response::new(body::full("finished"))
                }
            })
            .start()
            .await
    };
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("before", "/")).start().await;
    let client = proxy.client();
    let request = proxy.request(Method::GET, "/slow").body(body::empty()).unwrap();
    let held = tokio::spawn(async move { client.request(request).await });
    eventually_async("the request reached the origin", || async { origin.hits("/slow") == 1 }).await;

    // The route it matched disappears.
    proxy.rewrite_rules(&route("after", "/other/"));
    proxy.reload().expect("valid rules");
    assert_eq!(proxy.get("/slow").await.status, 404);
    gate.open();

    let response = within("the held request", held).await.unwrap().expect("an answer");
    let response = Collected::from(response).await.unwrap();
    assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "finished"));
    assert_eq!(proxy.metric(r#"accel_requests_total{route="before",method="GET",status="2xx"}"#).await, 1.0);
}

#[tokio::test]
async fn endpoint_health_survives_a_reload() {
    let broken = FakeOrigin::new().route("/*", "broken").status(500).start().await;
    let fine = FakeOrigin::new().route("/*", "fine").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[broken.addr(), fine.addr()],
            r#"ejection = { consecutive_failures = 1, cooldown = "1h" }"#,
        )
        .rules(&route("before", "/"))
        .start()
        .await;
    while broken.total_hits() == 0 {
        proxy.get("/x").await;
    }

    proxy.rewrite_rules(&route("after", "/"));
    proxy.reload().expect("valid rules");

    for _ in 0..20 {
        assert_eq!(proxy.get("/x").await.text(), "fine");
    }
    assert_eq!(broken.total_hits(), 1, "the ejected endpoint stays out across the reload");
}

#[tokio::test]
async fn one_change_is_one_reload() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("old", "/old/")).start().await;

    proxy.rewrite_rules(&route("new", "/new/"));
    eventually_async("the change is picked up", || async { proxy.metric(RELOAD_OK).await >= 1.0 }).await;

    // Reloading reads the files; that must not count as another change. A later event that
    // changes nothing (a chmod to the same mode) is handled after any event of that reading:
    // once it is counted, there has still been exactly one reload.
    let unchanged = proxy.metric(FILE_EVENTS_UNCHANGED).await;
    let file = std::fs::File::open(proxy.rules_path()).unwrap();
    file.set_permissions(file.metadata().unwrap().permissions()).unwrap();
    eventually_async("the watcher handles the no-change event", || async {
        proxy.metric(FILE_EVENTS_UNCHANGED).await > unchanged
    })
    .await;
    assert_eq!(proxy.metric(RELOAD_OK).await, 1.0);
    assert_eq!(proxy.metric(r#"accel_config_file_events_total{result="reload"}"#).await, 1.0);
}

#[tokio::test]
async fn an_endpoint_added_to_accel_toml_takes_traffic() {
    let old = FakeOrigin::new().route("/*", "old").start().await;
    let new = FakeOrigin::new().route("/*", "new").start().await;
    let proxy = TestProxy::builder().upstream("api", &[old.addr()]).rules(&route("all", "/")).start().await;
    assert_eq!(proxy.get("/x").await.text(), "old");

    // The file watcher sees accel.toml change, as it does the rules.
    proxy.rewrite_config(&with_endpoints(&proxy, &[old.addr()], &[old.addr(), new.addr()]));
    eventually_async("the watcher reloads accel.toml", || async { proxy.metric(RELOAD_OK).await >= 1.0 })
        .await;

    eventually_async("the new endpoint answers", || async { proxy.get("/x").await.text() == "new" }).await;
    let status = proxy.status_json().await;
    assert_eq!(status["upstreams"][0]["endpoints"].as_array().map(Vec::len), Some(2), "{status}");
    assert_eq!(proxy.metric(RESTART_PENDING).await, 0.0, "endpoints apply live");
}

#[tokio::test]
async fn a_removed_endpoint_drains_and_no_request_fails() {
    let gate = Gate::new();
    let leaving =
        FakeOrigin::new().route("/slow", "").gated(&gate, "finished").route("/*", "leaving").start().await;
    let staying = FakeOrigin::new().route("/*", "staying").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[leaving.addr()]).rules(&route("all", "/")).start().await;
    // A request held on the endpoint about to go.
    let client = proxy.client();
    let request = proxy.request(Method::GET, "/slow").body(body::empty()).unwrap();
    let held = tokio::spawn(async move { client.request(request).await });
    eventually_async("the request reached the endpoint", || async { leaving.hits("/slow") == 1 }).await;
    // Clients keep asking across the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, url, stop) = (proxy.client(), proxy.url("/load"), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut answered = 0;
            while !stop.load(Ordering::SeqCst) {
                let request = http::Request::get(&url).body(body::empty()).unwrap();
                let response = client.request(request).await.expect("an answer");
                let response = Collected::from(response).await.expect("a whole body");
                assert_eq!(response.status, 200, "{}", response.text());
                answered += 1;
            }
            answered
        }));
    }

    // Add the new endpoint, then take the old one out.
    proxy.rewrite_config(&with_endpoints(&proxy, &[leaving.addr()], &[leaving.addr(), staying.addr()]));
    proxy.reload_config().expect("valid accel.toml");
    eventually_async("the added endpoint serves", || async { staying.total_hits() > 0 }).await;
    proxy.rewrite_config(&with_endpoints(&proxy, &[leaving.addr(), staying.addr()], &[staying.addr()]));
    let reloaded = proxy.reload_config().expect("valid accel.toml");
    assert!(reloaded.restart.is_empty(), "{:?}", reloaded.restart);
    // Once every client has had answers on the new snapshot, the old one's picks are done.
    let flowing = staying.total_hits();
    eventually_async("requests flow after the removal", || async { staying.total_hits() > flowing + 8 })
        .await;
    let (gone, flowing) = (leaving.total_hits(), staying.total_hits());
    eventually_async("more requests flow", || async { staying.total_hits() > flowing + 8 }).await;
    assert_eq!(leaving.total_hits(), gone, "the removed endpoint gets no new request");

    gate.open();
    let response = within("the held request", held).await.unwrap().expect("an answer");
    let response = Collected::from(response).await.unwrap();
    assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "finished"), "it drained");
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        within("a client finishes", client).await.expect("no client failed");
    }
    let status = proxy.status_json().await;
    let addrs: Vec<&str> = status["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["addr"].as_str())
        .collect();
    assert_eq!(addrs, [staying.addr().to_string()]);
}

#[tokio::test]
async fn a_kept_endpoint_keeps_its_health_when_another_is_added() {
    let broken = FakeOrigin::new().route("/*", "broken").status(500).start().await;
    let fine = FakeOrigin::new().route("/*", "fine").start().await;
    let more = FakeOrigin::new().route("/*", "more").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[broken.addr(), fine.addr()],
            r#"ejection = { consecutive_failures = 1, cooldown = "1h" }"#,
        )
        .rules(&route("all", "/"))
        .start()
        .await;
    while broken.total_hits() == 0 {
        proxy.get("/x").await;
    }

    let all = [broken.addr(), fine.addr(), more.addr()];
    proxy.rewrite_config(&with_endpoints(&proxy, &[broken.addr(), fine.addr()], &all));
    proxy.reload_config().expect("valid accel.toml");

    for _ in 0..30 {
        assert_ne!(proxy.get("/x").await.text(), "broken");
    }
    assert_eq!(broken.total_hits(), 1, "the ejected endpoint stays out across the reload");
    assert!(more.total_hits() > 0, "the added endpoint shares the load");
}

#[tokio::test]
async fn a_changed_client_concurrency_applies() {
    let gate = Gate::new();
    let origin =
        FakeOrigin::new().route("/slow", "").gated(&gate, "finished").route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("all", "/")).start().await;
    let hold = || {
        let client = proxy.client();
        let request = proxy.request(Method::GET, "/slow").body(body::empty()).unwrap();
        tokio::spawn(async move { client.request(request).await })
    };
    let first = hold();
    eventually_async("the first request is held", || async { origin.hits("/slow") == 1 }).await;
    assert_eq!(proxy.get("/x").await.status, 200, "no cap yet");

    proxy.rewrite_config(&format!("{}\n[limits]\nclient_concurrency = 1\n", proxy.config_text()));
    assert!(proxy.reload_config().expect("valid accel.toml").restart.is_empty());
    let second = hold();
    eventually_async("the second request is held", || async { origin.hits("/slow") == 2 }).await;
    assert_eq!(proxy.get("/x").await.status, 429, "the new cap holds");

    gate.open();
    for held in [first, second] {
        let response = within("a held request", held).await.unwrap().expect("an answer");
        assert_eq!(response.status(), 200);
    }
    eventually_async("the cap frees", || async { proxy.get("/x").await.status == 200 }).await;
}

#[tokio::test]
async fn a_changed_listen_address_waits_for_a_restart_and_the_rest_applies() {
    let first = FakeOrigin::new().route("/*", "first").start().await;
    let second = FakeOrigin::new().route("/*", "second").start().await;
    let proxy = TestProxy::builder().upstream("api", &[first.addr()]).rules(&route("all", "/")).start().await;

    let text = with_endpoints(&proxy, &[first.addr()], &[second.addr()]);
    proxy.rewrite_config(&text.replace("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\""));
    eventually_async("the watcher applies what it can", || async {
        proxy.metric(RESTART_PENDING).await == 1.0
    })
    .await;

    assert_eq!(proxy.metric(RELOAD_OK).await, 1.0);
    assert_eq!(proxy.get("/x").await.text(), "second", "the old listener serves the new upstream");
    let reloaded = proxy.reload_config().expect("valid accel.toml");
    assert_eq!(reloaded.restart, vec![StartOnly::Listen], "still named on every reload until a restart");
}

#[tokio::test]
async fn an_invalid_accel_toml_keeps_the_running_configuration() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy =
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(&route("good", "/")).start().await;
    let good = proxy.config_text();

    proxy.rewrite_config(&format!("{good}\n[limits]\nclient_concurrency = 0\n"));
    eventually_async("the watcher rejects accel.toml", || async { proxy.metric(RELOAD_ERROR).await >= 1.0 })
        .await;
    let problems = proxy.reload().expect_err("the new accel.toml is invalid");
    let text = problems.to_string();
    let file = proxy.config_path().display().to_string();
    assert!(text.contains(&format!("{file}: key `limits.client_concurrency`")), "{text}");
    assert_eq!(proxy.metric(RELOAD_OK).await, 0.0);
    assert_eq!(proxy.get("/anything").await.status, 200, "the old configuration still serves");
    assert_eq!(proxy.metric(RESTART_PENDING).await, 0.0);
}

#[tokio::test]
async fn a_route_naming_a_removed_upstream_is_a_reload_error() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let other = FakeOrigin::new().route("/*", "other").start().await;
    // First match wins: the narrower route first.
    let rules = format!(
        "[[route]]\nname = \"to-other\"\nmatch = {{ path_prefix = \"/other/\" }}\nupstream = \"other\"\n\n{}",
        route("main", "/")
    );
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .upstream("other", &[other.addr()])
        .rules(&rules)
        .start()
        .await;
    let text = proxy.config_text();
    let section = format!("[upstreams.other]\n{}\n", endpoints(&[other.addr()]));
    assert!(text.contains(&section), "{text}");

    proxy.rewrite_config(&text.replace(&section, ""));
    let problems = proxy.reload().expect_err("a route names the removed upstream");

    let rules_file = proxy.rules_path().display().to_string();
    let text = problems.to_string();
    assert!(
        text.contains(&format!(
            r#"{rules_file}: route "to-other": key `upstream`: unknown upstream "other""#
        )),
        "{text}"
    );
    assert!(proxy.metric(RELOAD_ERROR).await >= 1.0);
    assert_eq!(proxy.get("/other/x").await.text(), "other", "the old upstream still serves");
}

#[tokio::test]
async fn changed_compress_defaults_apply_to_every_route() {
    let document = "[".to_owned() + &"{\"id\":1,\"city\":\"Lyon\"},".repeat(400) + "{}]";
    let origin = FakeOrigin::new()
        .route("/*", document.clone())
        .header("content-type", "application/json")
        .start()
        .await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&route("all", "/"))
        .sidecar_toml("[compress]\nenabled = false\n")
        .start()
        .await;
    let get = || async {
        let request = proxy.request(Method::GET, "/doc").header("accept-encoding", "gzip");
        proxy.send(request.body(body::empty()).unwrap()).await
    };
    assert_eq!(get().await.header("content-encoding"), None);

    proxy.rewrite_config(&proxy.config_text().replace("enabled = false", "enabled = true"));
    assert!(proxy.reload_config().expect("valid accel.toml").restart.is_empty());

    let answer = get().await;
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    assert!(answer.body.len() < document.len());
}

#[tokio::test]
async fn a_health_check_added_by_a_reload_runs() {
    let sick = FakeOrigin::new().route("/health", "down").status(503).route("/*", "sick").start().await;
    let well = FakeOrigin::new().route("/*", "well").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[sick.addr(), well.addr()])
        .rules(&route("all", "/"))
        .start()
        .await;
    let state = || async {
        let status = proxy.status_json().await;
        status["upstreams"][0]["endpoints"][0]["state"].as_str().map(str::to_owned)
    };
    assert_eq!(state().await.as_deref(), Some("healthy"), "no checks yet");

    let line = endpoints(&[sick.addr(), well.addr()]);
    let checked =
        format!("{line}\nhealth = {{ path = \"/health\", interval = \"20ms\", unhealthy_threshold = 1 }}");
    proxy.rewrite_config(&proxy.config_text().replace(&line, &checked));
    proxy.reload_config().expect("valid accel.toml");

    eventually_async("the new check marks the endpoint", || async {
        state().await.as_deref() == Some("unhealthy")
    })
    .await;
    for _ in 0..10 {
        assert_eq!(proxy.get("/x").await.text(), "well");
    }
}

#[tokio::test]
async fn a_removed_upstream_leaves_the_status_and_the_health_metrics() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let other = FakeOrigin::new().route("/*", "other").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .upstream("other", &[other.addr()])
        .rules(&route("all", "/"))
        .start()
        .await;
    let healthy = r#"accel_endpoint_healthy{upstream="other""#;
    assert!(proxy.metrics_text().await.contains(healthy));

    let section = format!("[upstreams.other]\n{}\n", endpoints(&[other.addr()]));
    proxy.rewrite_config(&proxy.config_text().replace(&section, ""));
    proxy.reload_config().expect("no route names the removed upstream");

    assert!(!proxy.metrics_text().await.contains(healthy), "no longer counted as an endpoint");
    let status = proxy.status_json().await;
    let names: Vec<&str> =
        status["upstreams"].as_array().unwrap().iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["api"]);
    assert_eq!(proxy.get("/x").await.text(), "ok");
}
