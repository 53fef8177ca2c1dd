//! Accept: the client-facing listener. HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one
//! port, a bound on open connections, `TCP_NODELAY`, and graceful shutdown that stops
//! accepting, lets in-flight requests finish, and gives up after the drain deadline.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::downstream::Downstream;
use crate::pipeline;
use crate::proxy::Proxy;

/// Serves clients on `listener` until `shutdown` completes, then drains. With `tls`, every
/// connection is a TLS handshake first (bounded by the header read timeout).
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.get()));
    // Every connection's task, so that the drain deadline can end the ones still open.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let downstream = Arc::new(Downstream::new(
            peer,
            tls.is_some(),
            proxy.pipeline.running.load().clients.trusted_proxies(),
        ));
        let open = OpenConnection::new(&proxy);
        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            let downstream = downstream.clone();
            async move { Ok::<_, Infallible>(pipeline::handle(&proxy.pipeline, &downstream, request).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let _open = open;
            let result = match tls {
                None => {
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service).into_owned())
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(deadline = ?limits.drain_timeout, "draining connections");
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(open = connections.len(), "drain deadline passed; closing remaining connections");
    }
    // Past the deadline (or with every connection done): close what is left, so that no
    // connection outlives the server, also when the process goes on (tests, embedding).
    connections.shutdown().await;
}

/// Counts an open client connection for as long as it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(proxy: &Proxy) -> Self {
        proxy.metrics.downstream_connections_total.inc();
        proxy.metrics.downstream_connections.inc();
        Self(proxy.metrics.downstream_connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
