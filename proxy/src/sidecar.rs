//! The sidecar assembled: the client listener, the admin listener, health checks and the
//! reloader, all stopped by one shutdown future.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{self, Config, Problems, RuleSet};
use crate::proxy::Proxy;
use crate::{admin, limit, reload, server};

/// Loads and validates `accel.toml` (or defaults) and every rules file it names.
pub fn load(path: Option<&Path>) -> Result<(Config, RuleSet), Problems> {
    let config = config::load_sidecar(path)?;
    let upstreams = config.upstreams.iter().map(|u| u.name.clone()).collect();
    let rules = config::rules::load(&config.rules_files, &upstreams)?;
    Ok((config, rules))
}

/// A sidecar with its listeners bound, ready to run.
#[derive(Debug)]
pub struct Sidecar {
    config: Config,
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    admin: TcpListener,
}

impl Sidecar {
    /// Binds the configured addresses.
    pub async fn bind(config: Config, rules: RuleSet) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let admin = TcpListener::bind(config.admin.addr).await?;
        let tls_listener = match &config.tls {
            Some(tls) => Some(TcpListener::bind(tls.addr).await?),
            None => None,
        };
        Ok(Self::with_listeners(config, rules, listener, admin).with_tls_listener(tls_listener))
    }

    /// Uses listeners bound by the caller (tests bind `127.0.0.1:0`).
    pub fn with_listeners(config: Config, rules: RuleSet, listener: TcpListener, admin: TcpListener) -> Self {
        let proxy = Arc::new(Proxy::new(&config, rules));
        Self { config, proxy, listener, tls_listener: None, admin }
    }

    /// Uses `listener` for the TLS listener (`[listen] https`, which must be configured).
    pub fn with_tls_listener(mut self, listener: Option<TcpListener>) -> Self {
        self.tls_listener = listener;
        self
    }

    /// The TLS listener's address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The client listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The shared proxy state.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Serves until `shutdown` completes, then stops accepting and drains in-flight requests
    /// (up to the configured deadline) before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { config, proxy, listener, tls_listener, admin } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut tasks = Vec::new();
        // health: the running upstreams' checks; a reload starts and stops them with upstreams.
        proxy.start_health_checks();
        // reload: watching before the listeners serve, so no later change is missed.
        tasks.push(tokio::spawn(reload::Reloader::start(&proxy).run(proxy.clone(), stopped())));
        if let Some(tier) = &proxy.redis {
            tasks.push(tokio::spawn(tier.clone().run(stopped())));
        }
        tasks.push(tokio::spawn(limit::cleanup(proxy.limits.clone(), stopped())));
        tasks.push(tokio::spawn(snapshots(proxy.clone(), stopped())));
        if let Ok(addr) = listener.local_addr() {
            tasks.push(tokio::spawn(crate::warm::keep_warm(proxy.clone(), addr, stopped())));
        }
        tasks.push(tokio::spawn(admin::run(admin, proxy.clone(), stopped())));
        tracing::info!(
            listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            admin = %config.admin.addr,
            routes = proxy.pipeline.running.load().routes.routes().len(),
            "accel started"
        );
        config.warn_if_admin_exposed();
        let tls = tls_listener.zip(proxy.tls.as_ref()).map(|(listener, certificates)| {
            let acceptor = tokio_rustls::TlsAcceptor::from(certificates.server_config());
            tokio::spawn(server::run(
                listener,
                Some(acceptor),
                proxy.clone(),
                config.limits.clone(),
                stopped(),
            ))
        });
        server::run(listener, None, proxy.clone(), config.limits.clone(), shutdown).await;
        let _ = stop_tx.send(true);
        proxy.stop_health_checks();
        if let Some(tls) = tls {
            let _ = tls.await;
        }
        for task in tasks {
            let _ = task.await;
        }
        tracing::info!("accel stopped");
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Takes a snapshot of the proxy's counters for the status page now and every interval after, until `shutdown` completes.
async fn snapshots(proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    let mut ticks = tokio::time::interval(proxy.insight.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => proxy.insight.push(crate::admin::snapshot(&proxy)),
        }
    }
}
