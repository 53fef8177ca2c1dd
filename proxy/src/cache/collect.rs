//! The miss path's body: the upstream body streams to the client while it is collected, up
//! to the rule's `max_object_size`. When it ends complete, the entry is stored and the
//! leader's followers get it; a body that grows past the limit streams on uncollected (never
//! buffered whole), and one that breaks off or ends short of its `Content-Length` is never
//! stored (and reaches the client as the error it is).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::entry::CacheEntry;
use super::key::CacheKey;
use super::policy::RejectReason;
use super::store::Seq;
use super::{Cache, FlightLeader, Handoff, RouteCaching};
use crate::body::{Body, BoxError};

/// What finishing an entry needs once its body is complete.
#[derive(Debug)]
pub(super) struct Collecting {
    pub cache: Arc<Cache>,
    /// The route: its compression makes eager variants when the entry is stored.
    pub route: Arc<RouteCaching>,
    pub key: CacheKey,
    /// The request's headers: they pick the variant when the answer varies.
    pub request: HeaderMap,
    /// The entry, body still empty.
    pub template: CacheEntry,
    pub seq: Seq,
    /// Store the entry (false: only hand it to followers).
    pub store: bool,
    pub leader: Option<FlightLeader>,
    /// Most bytes collected.
    pub limit: usize,
    /// The entry may be written to the second level (see [`Cache::may_leave_memory`]).
    pub second_level: bool,
    /// The cluster-wide coalescing lock, held until the entry is in the second level (or
    /// released when it drops: the entry is abandoned or not shared).
    pub cluster_lock: Option<crate::tier::ClusterLock>,
    /// The tier's purge sequence before the fetch (see [`Cache::share_entry`]).
    pub purge_point: crate::tier::PurgePoint,
}

impl Collecting {
    fn finish(self, body: Bytes) {
        let Self {
            cache,
            route,
            key,
            request,
            mut template,
            seq,
            store,
            leader,
            second_level,
            cluster_lock,
            purge_point,
            ..
        } = self;
        template.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        template.body = body;
        let entry = Arc::new(template);
        let variant = key_for(&entry, key, &request);
        if store {
            cache.store.insert(key, &request, entry.clone(), seq);
            if second_level {
                cache.share_entry(key, variant, &entry, cluster_lock, purge_point);
            }
            // compress (eager routes): every coding's variant now, in the background.
            if let Some(compress) = route.compress.as_ref().filter(|c| c.policy.eager) {
                let (mut parts, ()) = http::Response::new(()).into_parts();
                parts.status = entry.status;
                parts.headers = entry.headers.clone();
                if let Some(fill) = compress.eager_fill(&parts, &entry.body, &entry.variants) {
                    tokio::spawn(fill);
                }
            }
        }
        if let Some(leader) = leader {
            leader.publish(Arc::new(Handoff { entry, variant }));
        }
    }

    fn abandon(self, reason: RejectReason) {
        if self.store {
            self.cache.metrics.rejected(reason);
        }
        // Dropping the leader releases the followers, and the cluster lock the other sidecars.
    }
}

/// The key that tells variants apart: followers compare it with their own.
pub(super) fn key_for(entry: &CacheEntry, key: CacheKey, request: &HeaderMap) -> CacheKey {
    let names: Vec<header::HeaderName> = super::policy::vary_names(&entry.headers)
        .filter_map(|n| header::HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    if names.is_empty() { key } else { key.variant(&names, request) }
}

pin_project! {
    /// An upstream body being collected into an entry as it streams to the client.
    #[derive(Debug)]
    pub(super) struct CollectBody {
        #[pin]
        inner: Body,
        chunks: Vec<Bytes>,
        size: usize,
        collecting: Option<Collecting>,
    }
}

impl CollectBody {
    /// Collects `inner` into `collecting`'s entry.
    pub(super) fn new(inner: Body, collecting: Collecting) -> Self {
        if http_body::Body::is_end_stream(&inner) {
            // Nothing will be polled: the entry is complete now.
            finish(Some(collecting), Vec::new(), 0);
            return Self { inner, chunks: Vec::new(), size: 0, collecting: None };
        }
        Self { inner, chunks: Vec::new(), size: 0, collecting: Some(collecting) }
    }
}

fn finish(collecting: Option<Collecting>, chunks: Vec<Bytes>, size: usize) {
    let Some(collecting) = collecting else { return };
    let expected = collecting
        .template
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if expected.is_some_and(|n| n != size) {
        collecting.abandon(RejectReason::Truncated);
        return;
    }
    let body = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(size);
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        }
    };
    collecting.finish(body);
}

impl http_body::Body for CollectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(collecting)) = (frame.data_ref(), this.collecting.as_ref()) {
                    *this.size += data.len();
                    if *this.size > collecting.limit {
                        if let Some(collecting) = this.collecting.take() {
                            collecting.abandon(RejectReason::TooLarge);
                        }
                        *this.chunks = Vec::new();
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    finish(this.collecting.take(), std::mem::take(this.chunks), *this.size);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(collecting) = this.collecting.take() {
                    collecting.abandon(RejectReason::Truncated);
                }
                *this.chunks = Vec::new();
            }
            Poll::Ready(None) => finish(this.collecting.take(), std::mem::take(this.chunks), *this.size),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
