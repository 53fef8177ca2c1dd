//! Cached variants: a cached answer's body in each coding, compressed once at the route's
//! `cached_level` when a client first asks for it (or eagerly when stored), then served to
//! every later client with no compression work.
//!
//! [`Variants`] is what a cache entry carries: one slot per coding, shared by every copy of
//! the entry. The first request for a coding compresses on a blocking thread (brotli 11 on a
//! large body takes milliseconds); requests that arrive meanwhile wait for that one result
//! instead of compressing again, so each variant is made exactly once
//! (`accel_compressions_total{kind="variant"}`).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::response::Parts;
use tokio::sync::OnceCell;

use super::metrics::{EncodingMetrics, Run};
use super::{Encoding, codec};

/// The compressed variants of one cached answer. Cloning shares the slots.
#[derive(Debug, Clone, Default)]
pub struct Variants(Arc<[OnceCell<Bytes>; 3]>);

impl Variants {
    /// No variant made yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The variant of `encoding`, if it was made; `None` for identity.
    pub fn get(&self, encoding: Encoding) -> Option<&Bytes> {
        self.0[encoding.index()?].get()
    }

    /// The variant of `encoding`, compressed from `identity` at `level` if nobody has made it
    /// yet; concurrent callers share one compression. `metrics` counts the run, its bytes and
    /// time. Identity is `identity` itself.
    pub async fn get_or_compress(
        &self,
        encoding: Encoding,
        level: i32,
        identity: &Bytes,
        metrics: Option<&EncodingMetrics>,
    ) -> io::Result<Bytes> {
        let Some(index) = encoding.index() else { return Ok(identity.clone()) };
        let variant = self.0[index]
            .get_or_try_init(|| async {
                let mut meter = metrics.map(|m| m.start(Run::Variant));
                let input = identity.clone();
                let started = Instant::now();
                let compressed =
                    tokio::task::spawn_blocking(move || codec::compress(encoding, level, &input))
                        .await
                        .map_err(io::Error::other)??;
                if let Some(meter) = meter.as_mut() {
                    meter.record(identity.len(), compressed.len(), started.elapsed());
                }
                Ok::<_, io::Error>(compressed)
            })
            .await?;
        Ok(variant.clone())
    }

    /// Bytes held by the variants made so far: the cache counts them in its memory bound.
    pub fn weight(&self) -> usize {
        self.0.iter().filter_map(OnceCell::get).map(Bytes::len).sum()
    }
}

/// Headers of a cached answer sent as its `encoding` variant of `length` bytes:
/// `Content-Encoding`, the variant's exact `Content-Length`, `Vary: Accept-Encoding`, a weak
/// `ETag`, no `Accept-Ranges`.
pub fn mark_variant(parts: &mut Parts, encoding: Encoding, length: usize) {
    super::mark_encoded(&mut parts.headers, encoding);
    super::add_vary(&mut parts.headers);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::codec::tests::{decode_all, sample};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_variant_is_compressed_once_and_served_to_many() {
        let metrics = crate::metrics::Metrics::new(&crate::metrics::DEFAULT_LATENCY_BUCKETS);
        let route = crate::name::RouteName::try_from("api").unwrap();
        let handles = super::super::metrics::CompressMetrics::register(&metrics).route(&route);
        let identity = Bytes::from(sample(100 * 1024));
        let variants = Variants::new();
        let mut askers = Vec::new();
        for _ in 0..32 {
            let (variants, identity, handles) = (variants.clone(), identity.clone(), handles.clone());
            askers.push(tokio::spawn(async move {
                variants.get_or_compress(Encoding::Brotli, 11, &identity, handles.get(Encoding::Brotli)).await
            }));
        }
        let mut bodies = Vec::new();
        for asker in askers {
            bodies.push(asker.await.unwrap().unwrap());
        }
        assert!(bodies.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()), "one shared variant");
        assert_eq!(decode_all(Encoding::Brotli, &bodies[0]), identity);
        assert_eq!(variants.weight(), bodies[0].len());
        assert!(variants.get(Encoding::Gzip).is_none());
        let text = metrics.encode();
        let runs = "accel_compressions_total{route=\"api\",encoding=\"br\",kind=\"variant\"} 1";
        assert!(text.contains(runs), "{text}");
        let bytes_in = format!(
            "accel_compression_bytes_total{{route=\"api\",encoding=\"br\",direction=\"in\"}} {}",
            identity.len()
        );
        assert!(text.contains(&bytes_in), "{text}");

        let gzip = variants
            .get_or_compress(Encoding::Gzip, 9, &identity, handles.get(Encoding::Gzip))
            .await
            .unwrap();
        assert_eq!(decode_all(Encoding::Gzip, &gzip), identity);
        assert_eq!(variants.weight(), bodies[0].len() + gzip.len());
        let same = variants.get_or_compress(Encoding::Identity, 0, &identity, None).await.unwrap();
        assert_eq!(same, identity);
    }
}
