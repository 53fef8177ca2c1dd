//! The cost of strict request framing: checking one request head from its raw bytes, and
//! reading a connection's bytes through the checking wrapper rather than straight from the
//! socket (pipelined heads, and a large body that is only counted).
//!
//! `cargo bench -p accel-benches --bench framing`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use accel::framing::head::{check, find_end};
use accel::framing::{FramedIo, HeadLimits, Rejections, Verdict};
use accel::metrics::Metrics;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncRead, AsyncReadExt};

const LIMITS: HeadLimits = HeadLimits { max_head: 32 * 1024, max_headers: 100, max_target: 8 * 1024 };

/// A head as an API client behind a browser sends it: 13 fields, 620 bytes or so.
const HEAD: &[u8] = b"GET /api/golden-leads/detect?account=4711&since=2026-01-01T00:00:00Z HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-GB,en;q=0.7,de;q=0.3\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0NzExIn0.c2lnbmF0dXJlLWhlcmU\r\n\
X-Request-Id: 6f1c2a9e-3b7d-4e8f-9a0b-1c2d3e4f5a6b\r\n\
Origin: https://app.example.com\r\n\
Referer: https://app.example.com/leads\r\n\
Cookie: session=3f9a2c7e5b1d4a6f8e0c; theme=dark\r\n\
Sec-Fetch-Mode: cors\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-cache\r\n\r\n";

fn head(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(HEAD.len() as u64));
    group.bench_function("check_head_620b", |b| {
        b.iter(|| {
            let bytes = black_box(HEAD);
            let mut scanned = 0;
            let end = find_end(bytes, &mut scanned).expect("sound").expect("whole");
            black_box(check(&bytes[..end], &LIMITS))
        })
    });
    group.finish();
}

/// Reads `input` to its end through `reader`, 16 KiB at a time as hyper does.
async fn drain(mut reader: impl AsyncRead + Unpin) -> usize {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await.expect("in-memory read");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

fn framed<'a>(input: &'a [u8], rejections: &Rejections) -> FramedIo<&'a [u8]> {
    let peer = "127.0.0.1:1".parse().expect("address");
    FramedIo::new(
        input,
        false,
        LIMITS,
        Duration::from_secs(30),
        Arc::new(Verdict::default()),
        rejections.clone(),
        peer,
    )
}

fn connection(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let rejections = Rejections::register(&Metrics::new(&[1.0]));
    let mut group = c.benchmark_group("framing");

    // 100 pipelined heads on one connection.
    let pipelined: Vec<u8> = HEAD.repeat(100);
    group.throughput(Throughput::Elements(100));
    group.bench_function("pipelined_100_heads_plain", |b| {
        b.to_async(&runtime).iter(|| async { black_box(drain(black_box(&pipelined[..])).await) })
    });
    group.bench_function("pipelined_100_heads_framed", |b| {
        b.to_async(&runtime).iter(|| async {
            let read = drain(framed(black_box(&pipelined[..]), &rejections)).await;
            assert_eq!(read, pipelined.len());
            black_box(read)
        })
    });

    // One upload of 4 MiB with a Content-Length: the body is only counted.
    let mut upload = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4194304\r\n\r\n".to_vec();
    upload.resize(upload.len() + 4 * 1024 * 1024, b'x');
    group.throughput(Throughput::Bytes(upload.len() as u64));
    group.bench_function("upload_4mib_plain", |b| {
        b.to_async(&runtime).iter(|| async { black_box(drain(black_box(&upload[..])).await) })
    });
    group.bench_function("upload_4mib_framed", |b| {
        b.to_async(&runtime).iter(|| async {
            let read = drain(framed(black_box(&upload[..]), &rejections)).await;
            assert_eq!(read, upload.len());
            black_box(read)
        })
    });

    // The same upload chunked, in 16 KiB chunks: the framing is followed, the data skipped.
    let mut chunked = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..256 {
        chunked.extend_from_slice(b"4000\r\n");
        chunked.resize(chunked.len() + 16 * 1024, b'x');
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    group.throughput(Throughput::Bytes(chunked.len() as u64));
    group.bench_function("upload_4mib_chunked_framed", |b| {
        b.to_async(&runtime).iter(|| async {
            let read = drain(framed(black_box(&chunked[..]), &rejections)).await;
            assert_eq!(read, chunked.len());
            black_box(read)
        })
    });
    group.finish();
}

criterion_group!(benches, head, connection);
criterion_main!(benches);
