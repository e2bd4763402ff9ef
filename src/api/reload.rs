//! Serving a catalog that changes: every listener's router is the current revision's, looked up
//! per request, so a new revision (built whole beside the running one, then swapped in) serves
//! from the next request while requests already in progress finish on the one they started
//! with. `meshguard serve` swaps when the catalog in MongoDB changes (`products.source =
//! "mongodb"`). What is not the catalog's outlives a revision: the authenticator (its JWKS
//! cache) and the anonymous limiter's buckets are shared by every revision's `Api`.

use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use tower_service::Service;

/// The routers in force, one per listener, replaced together.
#[derive(Debug, Clone)]
pub struct Swap {
    current: Arc<RwLock<Vec<Router>>>,
}

impl Swap {
    /// Starts with `routers` (one per listener, in the listeners' order).
    pub fn new(routers: Vec<Router>) -> Self {
        Self { current: Arc::new(RwLock::new(routers)) }
    }

    /// Serves `routers` from the next request on; they must be as many, in the same order.
    pub fn replace(&self, routers: Vec<Router>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = routers;
    }

    /// The router of listener `i`: each request goes to the router in force when it arrives.
    pub fn router(&self, i: usize) -> Router {
        let current = self.current.clone();
        Router::new().fallback(move |req: Request| {
            let mut router = current.read().unwrap_or_else(PoisonError::into_inner).get(i).cloned().unwrap_or_default();
            // A `Router` is always ready: `call` needs no `poll_ready` first.
            async move {
                match router.call(req).await {
                    Ok(response) => response.into_response(),
                    Err(never) => match never {},
                }
            }
        })
    }
}
