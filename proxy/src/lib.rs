//! Accel: a sidecar reverse proxy that makes an existing HTTP API faster and safer without
//! touching it.
//!
//! # Layout
//!
//! The request path, in the order a request meets it (composed in [`pipeline::handle`]):
//!
//! - [`server`]: accept — the client listeners, connection limits, HTTP/1.1 and h2c, and
//!   TLS ([`tls`]) with ALPN h2 / http/1.1;
//! - [`route`]: host + method + path → the first matching route of the current rules;
//! - [`limit`]: rate limit — the per-client concurrency cap, then the route's quotas for the
//!   request's key (client address, header, path parameter, …) → pass, wait, or `429`;
//! - [`cache`]: lookup — a fresh hit answers, a stale entry is served while it refreshes or
//!   revalidated, a miss is filled; unsafe requests invalidate ([`cache::purge`]: the admin
//!   purge API);
//! - [`coalesce`]: identical concurrent misses send one leader upstream, followers wait;
//! - [`forward`]: forwarding headers, least-connections pick ([`upstream`]), tries with
//!   timeouts and retries over a keep-alive pool;
//! - [`compress`]: brotli / zstd / gzip as the client accepts and the route allows, streamed;
//! - cache store ([`cache`] again): storable answers stored with their tags while they
//!   stream to the client;
//! - [`metrics`]: one record of every outcome, by route.
//!
//! Shared between sidecars, when `[redis]` is configured: [`tier`] — a second level under the
//! cache (a memory miss looks in Redis before the origin), purges that reach every sidecar,
//! and `scope = "cluster"` rate limits; Redis trouble degrades to memory and local limits.
//!
//! Around it: [`config`] (operator files → validated model), [`proxy`] (shared state and
//! reload), [`reload`] (SIGHUP and file watching), [`admin`] (metrics, health, status),
//! [`insight`] (the status page, health score, advice and cache warming),
//! [`sidecar`] (everything assembled), [`error`] (errors → responses), [`body`],
//! [`downstream`] (client identity), [`logging`] and [`cli`].

pub mod admin;
pub mod body;
pub mod cache;
pub mod cli;
pub mod coalesce;
pub mod compress;
pub mod config;
pub mod downstream;
pub mod error;
pub mod forward;
pub mod insight;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod server;
pub mod sidecar;
pub mod tier;
pub mod tls;
pub mod upstream;
