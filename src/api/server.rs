//! The listener of `meshguard serve`. `axum::serve` has no header-read timeout, no connection
//! cap and a graceful shutdown that waits for every client forever, so one slow client could
//! hold a connection open indefinitely and a half-sent request could keep a pod from stopping.
//! Here, with hyper directly:
//! - at most `max_connections` connections are open; one more is answered 503 and closed;
//! - the headers of each request must arrive within `header_read_timeout` (which is also the
//!   idle timeout of a kept-alive connection between requests);
//! - a request must be complete, body included, within `request_timeout` (in
//!   [`super::audit::gate`]: 408);
//! - on shutdown, listening stops, open connections are asked to finish, and whatever is still
//!   open after `shutdown_timeout` is closed, so `serve` always returns within it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics::counter;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;
use tracing::{debug, info, warn};

use super::API_CONNECTIONS_REFUSED_TOTAL;
use crate::config::ApiSettings;

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers; the idle timeout between requests too.
    pub header_read_timeout: Duration,
    /// Time open connections get after shutdown is asked for.
    pub shutdown_timeout: Duration,
}

impl From<&ApiSettings> for Limits {
    fn from(s: &ApiSettings) -> Self {
        Self {
            max_connections: s.max_connections,
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            shutdown_timeout: Duration::from_millis(s.shutdown_timeout_ms),
        }
    }
}

/// Binds every `(address, router)` pair, then serves them all until `shutdown` resolves and
/// their connections are closed (within `limits.shutdown_timeout`).
pub async fn serve(
    listeners: Vec<(SocketAddr, Router)>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut bound = Vec::with_capacity(listeners.len());
    for (addr, router) in listeners {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        bound.push((listener, router));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = JoinSet::new();
    for (listener, router) in bound {
        let _ = loops.spawn(accept_loop(listener, router, limits, stop_rx.clone()));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    Ok(())
}

async fn accept_loop(listener: TcpListener, router: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            counter!(API_CONNECTIONS_REFUSED_TOTAL).increment(1);
            let _ = connections.spawn(refuse(stream));
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let _ = req.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            async move { router.call(req.map(Body::new)).await }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let _ = connections.spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, client = %remote, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open_now = graceful.count();
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await.is_err() {
        warn!(
            open = open_now,
            timeout_ms = limits.shutdown_timeout.as_millis() as u64,
            "connections still open at the shutdown timeout; closing them"
        );
    } else {
        info!("every connection closed");
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Answers a connection over the cap with 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"type":"https://meshguard.dev/problems/overloaded","title":"Too many open connections","status":503,"detail":"the server holds api.max_connections connections; retry later"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(BODY.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
