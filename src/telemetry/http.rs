//! `/metrics`, `/healthz` and `/readyz` of `meshguard run`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the probes report.
#[derive(Debug)]
pub struct Health {
    /// The processing loop is running.
    pub live: AtomicBool,
    /// Partitions are assigned and the brokers answer.
    pub ready: AtomicBool,
    /// How far the document store is behind the stream, in milliseconds, when the materializer
    /// runs (`mongodb.materialize = "kafka"`); negative: no materializer.
    pub store_lag_ms: AtomicI64,
}

impl Default for Health {
    fn default() -> Self {
        Self { live: AtomicBool::new(false), ready: AtomicBool::new(false), store_lag_ms: AtomicI64::new(-1) }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Serves the endpoints until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn render(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.live.load(Ordering::Relaxed) { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "stopped\n") }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    // The document store's lag is information, not readiness: the stream does not wait for it.
    let store = match s.health.store_lag_ms.load(Ordering::Relaxed) {
        lag if lag < 0 => String::new(),
        lag => format!("document store behind the stream by {:.1} s\n", lag as f64 / 1000.0),
    };
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready\n{store}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: no partitions assigned or brokers unreachable\n{store}"))
    }
}
