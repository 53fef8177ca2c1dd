//! Compression throughput on the load benchmark's 100 KB JSON answer:
//!
//! - `compress/stream/{br,zstd,gzip}/L`: the body streamed through the proxy's compressing body
//!   in 16 KiB chunks (as an origin's answer arrives), at the streamed levels a route may use;
//! - `compress/variant/{br,zstd,gzip}/L`: the whole body compressed at once, as a cached
//!   answer's variant is (the default cached levels are the highest of each coding);
//! - `compress/negotiate`: reading a browser's `Accept-Encoding` and choosing a coding.
//!
//! Throughput is in identity bytes per second. `cargo bench -p accel-benches --bench compress`.

use std::hint::black_box;

use accel::body::{Body, BoxError};
use accel::compress::body::{EncodeBody, Flush};
use accel::compress::codec::{self, Encoder};
use accel::compress::{AcceptEncoding, Encoding};
use accel_benches::fast_origin::Answer;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body::Frame;
use http_body_util::BodyExt;

const SIZE: usize = 100 * 1024;
const CHUNK: usize = 16 * 1024;

fn chunked(body: &Bytes) -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..body.len())
        .step_by(CHUNK)
        .map(|at| Ok(Frame::data(body.slice(at..(at + CHUNK).min(body.len())))))
        .collect();
    Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
}

fn stream(c: &mut Criterion) {
    let body = Answer::new(SIZE, true).body().clone();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut group = c.benchmark_group("compress/stream");
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (encoding, levels) in
        [(Encoding::Brotli, [1, 4, 6]), (Encoding::Zstd, [1, 3, 9]), (Encoding::Gzip, [1, 6, 9])]
    {
        for level in levels {
            group.bench_with_input(BenchmarkId::new(encoding.as_str(), level), &level, |b, &level| {
                b.to_async(&runtime).iter(|| async {
                    let encoder = Encoder::new(encoding, level, None).expect("a coding");
                    let encoded = EncodeBody::new(chunked(&body), encoder, Flush::Coding, None);
                    black_box(encoded.collect().await.expect("compressed").to_bytes())
                });
            });
        }
    }
    group.finish();
}

fn variant(c: &mut Criterion) {
    let body = Answer::new(SIZE, true).body().clone();
    let mut group = c.benchmark_group("compress/variant");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(20);
    for (encoding, level) in [(Encoding::Brotli, 11), (Encoding::Zstd, 19), (Encoding::Gzip, 9)] {
        group.bench_with_input(BenchmarkId::new(encoding.as_str(), level), &level, |b, &level| {
            b.iter(|| black_box(codec::compress(encoding, level, &body).expect("compressed")));
        });
    }
    group.finish();
}

fn negotiate(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::ACCEPT_ENCODING, "gzip, deflate, br, zstd".parse().expect("header"));
    let preference = Encoding::COMPRESSING;
    c.bench_function("compress/negotiate", |b| {
        b.iter(|| black_box(AcceptEncoding::from_headers(black_box(&headers)).negotiate(&preference)));
    });
}

criterion_group!(benches, stream, variant, negotiate);
criterion_main!(benches);
