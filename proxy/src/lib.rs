//! Accel: a sidecar reverse proxy that makes an existing HTTP API faster and safer without
//! touching it.
//!
//! # Layout
//!
//! The request path, in the order a request meets it (composed in [`pipeline::handle`]):
//!
//! - [`server`]: accept — the client listeners, connection limits, HTTP/1.1 and h2c, and
//!   TLS ([`tls`]) with ALPN h2 / http/1.1; every HTTP/1 request head checked from its raw
//!   bytes first ([`framing`]: ambiguous framing `400`, over a limit `414` / `431`);
//! - [`forward`]'s request identity first: the `X-Request-Id` (a trusted peer's or a new one)
//!   and W3C trace context, so every answer, refusals included, carries the id;
//! - [`route`]: host + method + path → the first matching route of the current rules;
//! - [`limit`]: rate limit — the per-client concurrency cap, then the route's quotas for the
//!   request's key (client address, header, path parameter, …) → pass, wait, or a refusal;
//! - [`cache`]: lookup — a fresh hit answers, a stale entry is served while one background
//!   request refreshes it, or revalidated; a miss is filled; unsafe requests invalidate;
//! - [`coalesce`]: identical concurrent misses send one leader upstream, followers wait;
//! - [`tier`]: the shared Redis tier, when `[redis]` is configured — a memory miss looks in
//!   Redis before the origin; purges reach every sidecar; `scope = "cluster"` rate limits;
//! - [`forward`]: forwarding headers, least-connections pick ([`upstream`]), tries with
//!   timeouts and retries over per-endpoint keep-alive connections (plain TCP or TLS);
//! - [`error`]: the one rescue point, where every failure and refusal becomes an answer;
//! - [`compress`]: brotli / zstd / gzip as the client accepts and the route allows, streamed;
//! - cache store ([`cache`] again): storable answers stored with their tags while they
//!   stream to the client;
//! - metrics ([`route`]'s per-route handles in the [`metrics`] registry): the request id and
//!   the route's timing headers, one record of every outcome, one access-log line, and a
//!   slow-request line within a process-wide budget.
//!
//! # Layers
//!
//! A module uses only the layers before its own, and the modules listed before it in its
//! own layer; `tests/layers.rs` fails on any other `crate::` path. So a stage reads alone
//! with what is below it, and takes only its own per-route value (`&RouteLimits`,
//! `RouteCaching`, `RouteCompression`), never the whole route or the proxy.
//!
//! 1. leaves: [`problem`], [`quantity`], [`name`], [`params`], [`downstream`], [`h1`], [`body`], [`metrics`], [`framing`], [`secret`]
//! 2. components: [`upstream`], [`tier`], [`coalesce`], [`compress`], [`cache`], [`limit`]
//! 3. routes: [`route`] (a route bundles the components' per-route values)
//! 4. the request path: [`error`], [`forward`], [`pipeline`]
//! 5. assembly: [`tls`], [`config`], [`logging`], [`insight`], [`proxy`], [`reload`], [`warm`], [`server`], [`admin`], [`sidecar`], [`cli`]
//!
//! Leaves: configuration [`problem`]s and [`quantity`]s (durations, sizes), the [`name`]s
//! (routes, upstreams, endpoints), path [`params`], client identity ([`downstream`]), the
//! upstream side of HTTP/1.1 ([`h1`]: one exchange at a time in the request's task), the
//! [`body`] type with the upstream [`body::Exchange`] and the one guarded body
//! ([`body::Guarded`]: holds a permit or an exchange until the body ends), the [`metrics`]
//! registry that every component registers its own metrics in, and the configured
//! [`secret`]s that `Debug` never shows. Assembly: [`config`] (operator files → validated
//! model, gathering each component's converter), [`proxy`] (shared state and reload),
//! [`reload`] (SIGHUP and file watching), [`insight`] (snapshots, health score and advice for the
//! status page), [`warm`] (cache warming), [`admin`] (metrics, health, status, purge),
//! [`sidecar`] (everything assembled), [`logging`] and [`cli`] (with the purge client).

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
pub mod framing;
pub mod h1;
pub mod insight;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod name;
pub mod params;
pub mod pipeline;
pub mod problem;
pub mod proxy;
pub mod quantity;
pub mod reload;
pub mod route;
pub mod secret;
pub mod server;
pub mod sidecar;
pub mod tier;
pub mod tls;
pub mod upstream;
pub mod warm;
