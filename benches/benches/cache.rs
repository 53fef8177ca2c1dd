//! Micro-benchmarks of the cache's hot paths: hashing a key, key + lookup, building a hit
//! response, and purging a tag that 100,000 entries carry.
//!
//! `cargo bench -p accel-benches --bench cache`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use accel::cache::key::KeySpec;
use accel::cache::policy::Freshness;
use accel::cache::{Cache, CacheConfig, CacheEntry, CacheKey, CacheStatus, Clock, RouteCaching, Tag};
use accel::metrics::Metrics;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("api.example.com"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("bench/1.0"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer 0123456789abcdef"));
    headers
}

fn entry(body: Bytes, tags: Vec<Tag>, now: u64) -> CacheEntry {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    CacheEntry {
        status: StatusCode::OK,
        headers,
        body,
        stored_at: now,
        initial_age: Duration::ZERO,
        freshness: Freshness {
            ttl: Duration::from_secs(300),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            keep: Duration::ZERO,
            shared_with_credentials: true,
        },
        tags,
        host: "api.example.com".into(),
        path: "/api/golden-leads/17".into(),
        variants: Default::default(),
        hit: Default::default(),
    }
}

fn cache(memory: u64) -> Cache {
    let config = CacheConfig { memory, clock: Clock::manual(1_700_000_000_000), ..CacheConfig::default() };
    Cache::new(config, &Metrics::new(&[1.0]))
}

fn benches(c: &mut Criterion) {
    let headers = request_headers();
    let spec = KeySpec { headers: vec![header::AUTHORIZATION], ..KeySpec::default() };
    let path = "/api/golden-leads/17";
    let query = Some("tier=gold&min_probability=0.8&limit=50");

    c.bench_function("cache/key_hash", |b| {
        b.iter(|| black_box(&spec).key(Some("api.example.com"), black_box(path), black_box(query), &headers))
    });

    let warm = cache(256 << 20);
    let body = Bytes::from(vec![b'x'; 2048]);
    for i in 0..10_000u128 {
        let seq = warm.store.reserve();
        warm.store.insert(CacheKey(i), &headers, Arc::new(entry(body.clone(), Vec::new(), 0)), seq);
    }
    let key = spec.key(Some("api.example.com"), path, query, &headers);
    let seq = warm.store.reserve();
    warm.store.insert(key, &headers, Arc::new(entry(body.clone(), vec![Tag::new("lead:17")], 0)), seq);
    warm.store.run_pending_tasks();

    c.bench_function("cache/key_and_lookup (10k entries)", |b| {
        b.iter(|| {
            let key = spec.key(Some("api.example.com"), black_box(path), black_box(query), &headers);
            black_box(warm.store.get(key, &headers).expect("stored"))
        })
    });

    let stored = warm.store.get(key, &headers).expect("stored");
    let now = warm.clock.now();
    let route = RouteCaching {
        settings: Default::default(),
        metrics: warm.metrics.route(&accel::name::RouteName::try_from("leads").unwrap()),
        compress: None,
        request_id: true,
    };
    c.bench_function("cache/hit_response_build (2 KB)", |b| {
        b.iter(|| {
            let answer = warm.answer(
                &route,
                &stored,
                &http::Method::GET,
                &headers,
                now,
                CacheStatus::Hit { ttl: 300 },
            );
            black_box(answer.response)
        })
    });

    let mut group = c.benchmark_group("cache/purge");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(100));
    group.bench_function("one tag over 100k entries", |b| {
        b.iter_batched_ref(
            || {
                let full = cache(1 << 30);
                let tags = vec![Tag::new("bulk")];
                let small = Bytes::from_static(b"{}");
                for i in 0..100_000u128 {
                    let seq = full.store.reserve();
                    full.store.insert(
                        CacheKey(i),
                        &HeaderMap::new(),
                        Arc::new(entry(small.clone(), tags.clone(), 0)),
                        seq,
                    );
                }
                full
            },
            |full| {
                let purged = full.store.purge_tags(&[Tag::new("bulk")]);
                assert_eq!(purged, 100_000);
                purged
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(cache_benches, benches);
criterion_main!(cache_benches);
