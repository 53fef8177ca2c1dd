//! One endpoint: its in-flight count (least-connections), active health and passive ejection.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use tokio::time::Instant;

use super::Ejection;
use super::connections::{ConnectionSettings, Connections};
use super::metrics::{BodyError, EndpointMetrics};
use super::{EndpointAddr, UpstreamName};
use crate::body::{Exchange, Home};
use crate::metrics::{Metrics, WarnBudget};

/// One address of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub index: usize,
    pub addr: EndpointAddr,
    /// Requests sent and not yet finished (until the response body's last byte).
    in_flight: AtomicUsize,
    /// The active health checker's verdict; true until a check says otherwise.
    healthy: AtomicBool,
    /// Consecutive failed requests, for passive ejection.
    failures: AtomicU32,
    /// Until when passive ejection skips this endpoint.
    ejected_until: Mutex<Option<Instant>>,
    /// Keep-alive connections to this endpoint.
    pub connections: Connections,
    pub metrics: EndpointMetrics,
    /// Warnings of response bodies that broke off.
    broken_bodies: WarnBudget,
}

/// How an endpoint stands, as reported on `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Healthy,
    /// Failed active health checks.
    Unhealthy,
    /// Skipped for a cool-down after consecutive failed requests.
    Ejected,
}

impl EndpointState {
    /// Label for logs and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Ejected => "ejected",
        }
    }
}

impl Endpoint {
    pub(super) fn new(
        index: usize,
        upstream: &UpstreamName,
        addr: EndpointAddr,
        settings: ConnectionSettings,
        metrics: &Metrics,
    ) -> Self {
        let metrics = EndpointMetrics::new(metrics, upstream, &addr);
        metrics.healthy.set(1);
        Self {
            index,
            connections: Connections::new(addr.clone(), settings, metrics.lookups.clone()),
            addr,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            metrics,
            broken_bodies: WarnBudget::default(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Healthy by the active checks and not ejected at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        self.state(now) == EndpointState::Healthy
    }

    /// The endpoint's state at `now`.
    pub fn state(&self, now: Instant) -> EndpointState {
        if !self.healthy.load(Ordering::Relaxed) {
            return EndpointState::Unhealthy;
        }
        let until = *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
        match until {
            Some(until) if until > now => EndpointState::Ejected,
            _ => EndpointState::Healthy,
        }
    }

    /// Sets the active health verdict.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                // A re-admitted endpoint starts with a clean slate.
                self.failures.store(0, Ordering::Relaxed);
                *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(endpoint = %self.addr, "endpoint healthy again");
            } else {
                tracing::warn!(endpoint = %self.addr, "endpoint failed health checks");
            }
        }
        self.metrics.healthy.set(i64::from(healthy));
    }

    /// A request to this endpoint succeeded.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this endpoint failed (connect error, timeout, 5xx). Ejects it when the
    /// failures reach the threshold, unless `others_available` is false: the last available
    /// endpoint of an upstream is never ejected.
    pub fn record_failure(&self, policy: &Ejection, others_available: bool, now: Instant) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= policy.consecutive_failures.get() && others_available {
            self.failures.store(0, Ordering::Relaxed);
            *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(now + policy.cooldown);
            self.metrics.ejections.inc();
            tracing::warn!(endpoint = %self.addr, failures, cooldown = ?policy.cooldown, "endpoint ejected");
        }
    }
}

/// Counts one request in flight on an endpoint for as long as it lives. The proxy moves it,
/// into the response body ([`InFlight::into_exchange`]), so the count lasts until the body's
/// last byte has been sent.
#[derive(Debug)]
pub struct InFlight(Exchange);

impl InFlight {
    /// Starts counting a request on `endpoint`.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        endpoint.metrics.in_flight.inc();
        Self(Exchange::counted(endpoint))
    }

    /// Starts counting a request on `endpoint` if that keeps it within `cap`; `None` when it
    /// is full (another request took the last place since the pick).
    pub fn try_new(endpoint: Arc<Endpoint>, cap: Option<std::num::NonZeroUsize>) -> Option<Self> {
        let Some(cap) = cap else { return Some(Self::new(endpoint)) };
        endpoint
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < cap.get()).then_some(n + 1))
            .ok()?;
        endpoint.metrics.in_flight.inc();
        Some(Self(Exchange::counted(endpoint)))
    }

    /// The exchange, counted until its response body ends.
    pub fn into_exchange(self) -> Exchange {
        self.0
    }
}

impl Home for Endpoint {
    fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics.in_flight.dec();
    }

    fn broke_off(&self, error: &crate::h1::Error) {
        let reason = BodyError::of(error);
        self.metrics.body_error(reason);
        if let Some(suppressed) = self.broken_bodies.due() {
            tracing::warn!(endpoint = %self.addr, %error, suppressed, "response body broke off");
        }
    }
}
