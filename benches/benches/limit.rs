//! The cost of a rate-limit check: the keyed GCRA limiter on one hot key, the same limiter
//! spread over 100,000 tracked keys, and building a key from a request.
//!
//! `cargo bench -p accel-benches --bench limit`

use std::hint::black_box;
use std::num::NonZeroU32;

use accel::downstream::ClientAddr;
use accel::limit::key::{KeyInput, KeySpec};
use accel::limit::limiter::{Limiter, TokioClock};
use accel::limit::rule::Rate;
use accel::route::PathParams;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::metrics::gauge::Gauge;

/// A limit that is never reached, as on a protected route in normal traffic.
fn limiter(max_keys: usize) -> Limiter {
    let rate: Rate = "1000000/s".parse().expect("valid rate");
    let burst = NonZeroU32::new(1_000_000).expect("non-zero");
    Limiter::new(rate, burst, None, max_keys, TokioClock::default(), Gauge::default())
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("limit");
    group.throughput(Throughput::Elements(1));

    let hot = limiter(100_000);
    group.bench_function("check_hot_key", |b| b.iter(|| black_box(hot.check(black_box(42)))));

    const KEYS: u64 = 100_000;
    let spread = limiter(KEYS as usize);
    let keys: Vec<u64> = (0..KEYS).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    for &key in &keys {
        spread.check(key);
    }
    assert_eq!(spread.tracked_keys(), KEYS as usize);
    let mut next = 0;
    group.bench_function("check_100k_keys", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            black_box(spread.check(keys[next]))
        })
    });

    let spec = KeySpec::parse(&["client_ip".to_owned(), "header:x-api-key".to_owned()]).expect("valid key");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", http::HeaderValue::from_static("k-3f9a2c7e5b1d4a6f8e0c"));
    let params = PathParams::default();
    let input = KeyInput {
        client: Some(ClientAddr("203.0.113.7".parse().expect("address"))),
        headers: &headers,
        path: "/api/golden-leads/detect",
        params: &params,
    };
    group.bench_function("key_client_ip_and_header", |b| b.iter(|| black_box(spec.key(black_box(&input)))));
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
