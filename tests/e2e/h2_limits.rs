//! HTTP/2 limits on the client side, frame by frame over h2c: concurrent streams, rapid reset
//! (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316) and the header list size. Each case
//! shows what the server sends, that the origin saw nothing it should not have, and that the
//! sidecar goes on serving other clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use accel_e2e::h2c::{self, Frame, H2Connection, code, flag, kind};
use accel_e2e::{FakeOrigin, Gate, OriginHandle, TestProxy, body, eventually, eventually_async, within};

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

async fn setup(limits: &str) -> (OriginHandle, TestProxy) {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = proxy_for(&origin, limits).await;
    (origin, proxy)
}

/// A proxy in front of `origin` with these `[limits]` keys.
async fn proxy_for(origin: &OriginHandle, limits: &str) -> TestProxy {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml(&format!("[limits]\n{limits}"))
        .start()
        .await
}

/// Another client, on its own h2c connection, is served while (or after) one misbehaved.
async fn others_are_served(proxy: &TestProxy) {
    let request = proxy.request(http::Method::GET, "/other").body(body::empty()).expect("a request");
    let response = within("an h2c request", proxy.h2c_client().request(request)).await.expect("served");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
}

/// The `GOAWAY` that ended `ending`, as (error code, debug data).
fn goaway(ending: &h2c::Ending) -> (u32, String) {
    let frame = ending.goaway().unwrap_or_else(|| panic!("no GOAWAY before the close: {:?}", ending.frames));
    (frame.error_code().expect("a GOAWAY's code"), frame.debug_data())
}

/// Waits until `accel_downstream_rejections_total{reason}` is 1 (the connection's task counts
/// it just after the socket closes).
async fn counted_once(proxy: &TestProxy, reason: &str) {
    let series = format!("accel_downstream_rejections_total{{reason=\"{reason}\"}}");
    eventually_async(&format!("{series} = 1"), || async { proxy.metric(&series).await == 1.0 }).await;
}

/// Reads frames until `n` of `of_kind` came.
async fn read_n(connection: &mut H2Connection, n: usize, of_kind: u8) -> Vec<Frame> {
    let mut seen = 0;
    connection
        .read_until(&format!("{n} frames of type {of_kind}"), move |f| {
            seen += usize::from(f.kind == of_kind);
            seen == n
        })
        .await
}

/// An origin whose every request waits at the gate, counting the requests in flight and
/// the most at once.
async fn counting_origin() -> (OriginHandle, Arc<AtomicUsize>, Arc<AtomicUsize>, Gate) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new();
    let origin = {
        let (in_flight, most, gate) = (in_flight.clone(), most.clone(), gate.clone());
        FakeOrigin::new()
            .route("/*", "")
            .handler(move |_| {
                let (in_flight, most, gate) = (in_flight.clone(), most.clone(), gate.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    gate.wait().await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    http::Response::new(body::full("ok"))
                }
            })
            .start()
            .await
    };
    (origin, in_flight, most, gate)
}

/// `SETTINGS_MAX_CONCURRENT_STREAMS` is advertised; streams opened past it get
/// `RST_STREAM REFUSED_STREAM` at once, and the origin never has more than that many requests
/// of the connection in flight.
#[tokio::test]
async fn streams_past_the_concurrency_bound_are_refused() {
    let (origin, _, most, gate) = counting_origin().await;
    let proxy = proxy_for(&origin, "h2_max_concurrent_streams = 4").await;
    let mut connection = H2Connection::open(proxy.addr()).await;
    assert_eq!(connection.server_setting(h2c::SETTINGS_MAX_CONCURRENT_STREAMS), Some(4));
    assert_eq!(connection.server_setting(h2c::SETTINGS_MAX_HEADER_LIST_SIZE), Some(32 * 1024));

    // Six streams at once: 1, 3, 5, 7 are taken, 9 and 11 refused.
    let burst: Vec<u8> = (0..6u32).flat_map(|i| h2c::get(1 + 2 * i, &format!("/s{i}"))).collect();
    connection.write(&burst).await;
    let frames = read_n(&mut connection, 2, kind::RST_STREAM).await;
    let refused: Vec<(u32, Option<u32>)> =
        frames.iter().filter(|f| f.kind == kind::RST_STREAM).map(|f| (f.stream, f.error_code())).collect();
    assert_eq!(refused, [(9, Some(code::REFUSED_STREAM)), (11, Some(code::REFUSED_STREAM))]);
    eventually("the four taken streams reach the origin", || origin.total_hits() == 4).await;

    gate.open();
    let frames = read_n(&mut connection, 4, kind::HEADERS).await;
    let mut answered: Vec<u32> =
        frames.iter().filter(|f| f.kind == kind::HEADERS).map(|f| f.stream).collect();
    answered.sort_unstable();
    assert_eq!(answered, [1, 3, 5, 7]);
    assert_eq!(most.load(Ordering::SeqCst), 4, "the origin's most requests in flight");
    let paths: Vec<String> = origin.requests().iter().map(|r| r.path().to_owned()).collect();
    assert!(
        !paths.iter().any(|p| p == "/s4" || p == "/s5"),
        "a refused stream reached the origin: {paths:?}"
    );
    others_are_served(&proxy).await;
}

/// A well-behaved client (the h2 crate's) reads the advertised bound and queues the streams
/// past it: twice as many requests as the bound all succeed, never more than the bound at the
/// origin at once, and no stream is refused.
#[tokio::test]
async fn a_conforming_client_queues_past_the_concurrency_bound() {
    let (origin, in_flight, most, gate) = counting_origin().await;
    let proxy = proxy_for(&origin, "h2_max_concurrent_streams = 4").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.expect("connect");
    let (client, connection) =
        within("the h2 handshake", h2::client::handshake(tcp)).await.expect("handshake");
    tokio::spawn(connection);
    // Streams sent before the server's SETTINGS arrive are refused past the bound (the client
    // assumed none yet): wait until the client has read it.
    eventually("the client knows the bound", || client.current_max_send_streams() == 4).await;
    let mut client = within("ready", client.ready()).await.expect("ready");
    let mut answers = Vec::new();
    for i in 0..8 {
        let request = http::Request::get(format!("http://x/q{i}")).body(()).expect("a request");
        client = within("ready to send", client.ready()).await.expect("ready");
        let (answer, _) = client.send_request(request, true).expect("send");
        answers.push(answer);
    }
    eventually("four requests at the origin", || origin.total_hits() == 4).await;
    gate.open();
    for answer in answers {
        let response = within("an answer", answer).await.expect("not refused");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(origin.total_hits(), 8);
    assert_eq!(most.load(Ordering::SeqCst), 4, "the origin's most requests in flight");
    assert_eq!(in_flight.load(Ordering::SeqCst), 0);
}

/// CVE-2023-44487: streams opened and reset at once, in a loop. Past
/// `h2_max_pending_accept_reset_streams` (20) the connection ends with
/// `GOAWAY ENHANCE_YOUR_CALM` ("too_many_resets"); none of the streams reached the origin.
#[tokio::test]
async fn rapid_reset_ends_the_connection() {
    let (origin, proxy) = setup("").await;
    let mut connection = H2Connection::open(proxy.addr()).await;
    for batch in 0..100u32 {
        let bytes: Vec<u8> = (0..100u32)
            .map(|i| 1 + 2 * (batch * 100 + i))
            .flat_map(|id| [h2c::get(id, "/r"), h2c::rst_stream(id, code::CANCEL)].concat())
            .collect();
        if !connection.try_write(&bytes).await {
            break;
        }
    }
    let ending = connection.read_to_close().await;
    assert_eq!(goaway(&ending), (code::ENHANCE_YOUR_CALM, "too_many_resets".to_owned()));
    // Each burst is read whole before any of its streams is accepted, so every reset stream
    // was still pending: none went upstream.
    assert_eq!(origin.hits("/r"), 0, "a reset stream reached the origin");
    others_are_served(&proxy).await;
    counted_once(&proxy, "h2_flood").await;
}

/// CVE-2024-27316: `HEADERS` without END_HEADERS, then CONTINUATION frames without end. Past
/// the header list size's worth of frames (32 KiB / 16 KiB + a quarter, at least 5) the
/// connection ends with `GOAWAY ENHANCE_YOUR_CALM` ("too_many_continuations"): the block is
/// never buffered past that, and nothing reaches the origin.
#[tokio::test]
async fn a_continuation_flood_ends_the_connection() {
    for value_size in [1, 16_000] {
        let (origin, proxy) = setup("").await;
        let mut connection = H2Connection::open(proxy.addr()).await;
        connection.write(&h2c::frame(kind::HEADERS, 0, 1, &h2c::header_block("/c", &[]))).await;
        let value = "v".repeat(value_size);
        for i in 0..10_000 {
            let mut block = Vec::new();
            h2c::literal(&mut block, &format!("x-{i}"), &value);
            if !connection.try_write(&h2c::frame(kind::CONTINUATION, 0, 1, &block)).await {
                break;
            }
        }
        let ending = connection.read_to_close().await;
        assert_eq!(goaway(&ending), (code::ENHANCE_YOUR_CALM, "too_many_continuations".to_owned()));
        assert!(ending.on_stream(1, kind::HEADERS).is_empty(), "stream 1 was answered");
        assert_eq!(origin.total_hits(), 0, "the origin saw the request");
        others_are_served(&proxy).await;
        counted_once(&proxy, "h2_flood").await;
    }
}

/// A header block still being decoded when it has grown past the header list size (a field
/// over 32 KiB after 32 KiB of fields) ends the connection with `GOAWAY COMPRESSION_ERROR`
/// before the block ends.
#[tokio::test]
async fn a_block_growing_past_the_list_size_ends_the_connection() {
    let (origin, proxy) = setup("").await;
    let mut connection = H2Connection::open(proxy.addr()).await;
    let mut block = h2c::header_block("/big", &[]);
    for i in 0..40 {
        h2c::literal(&mut block, &format!("x-{i}"), &"v".repeat(1000));
    }
    h2c::literal(&mut block, "x-huge", &"v".repeat(100_000));
    let frames: Vec<Vec<u8>> = block
        .chunks(16_384)
        .enumerate()
        .map(|(i, chunk)| h2c::frame(if i == 0 { kind::HEADERS } else { kind::CONTINUATION }, 0, 1, chunk))
        .collect();
    for frame in frames {
        if !connection.try_write(&frame).await {
            break;
        }
    }
    let ending = connection.read_to_close().await;
    assert_eq!(goaway(&ending).0, code::COMPRESSION_ERROR);
    assert_eq!(origin.total_hits(), 0, "the origin saw the request");
    others_are_served(&proxy).await;
    counted_once(&proxy, "h2_header_list").await;
}

/// A whole header list over `limits.max_header_size` (32 KiB): h2 answers that stream itself
/// with `431` (HEADERS with END_STREAM) and keeps the connection, whose next stream is
/// served; the origin sees only that next one.
#[tokio::test]
async fn a_header_list_over_the_limit_is_431_on_its_stream() {
    let (origin, proxy) = setup("").await;
    let mut connection = H2Connection::open(proxy.addr()).await;
    let mut block = h2c::header_block("/big", &[]);
    for i in 0..40 {
        h2c::literal(&mut block, &format!("x-{i}"), &"v".repeat(1000));
    }
    let chunks: Vec<&[u8]> = block.chunks(16_000).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let first = if i == 0 { kind::HEADERS } else { kind::CONTINUATION };
        let end = if i + 1 == chunks.len() { flag::END_HEADERS } else { 0 };
        let end_stream = if i == 0 { flag::END_STREAM } else { 0 };
        bytes.extend(h2c::frame(first, end | end_stream, 1, chunk));
    }
    bytes.extend(h2c::get(3, "/after"));
    connection.write(&bytes).await;
    let frames =
        connection.read_until("the answer on stream 3", |f| f.stream == 3 && f.kind == kind::HEADERS).await;
    let answer =
        frames.iter().find(|f| f.stream == 1 && f.kind == kind::HEADERS).expect("an answer on stream 1");
    assert_eq!(answer.flags & flag::END_STREAM, flag::END_STREAM);
    // `:status 431`, literal with incremental indexing of name 8, Huffman coded ("431").
    assert_eq!(answer.payload, [0x48, 0x83, 0x69, 0x90, 0xff]);
    assert!(frames.iter().all(|f| f.kind != kind::GOAWAY), "the connection ended: {frames:?}");
    let paths: Vec<String> = origin.requests().iter().map(|r| r.path().to_owned()).collect();
    assert_eq!(paths, ["/after"]);
    others_are_served(&proxy).await;
}
