//! The data product REST API of `meshguard serve`: the seed's `data-product-api.js` routes with
//! its holes fixed.
//!
//! # Layout
//!
//! - [`server`]: the listener: a connection cap, header-read / idle and request timeouts, and a
//!   shutdown that ends within its timeout whatever the clients do.
//! - [`routes`]: the router and the handlers, one per route.
//! - [`audit`]: the middleware every product route passes: it authenticates ([`auth`]), limits
//!   callers without valid credentials ([`limit`]), bounds the request's time, and writes one
//!   `access_audit` document per request (status, path, record id), failing closed.
//! - [`guard`]: authorization against the product's `spec.access` (reads need `read`, methods
//!   that change state need `write`, `admin` implies both).
//! - [`aliases`]: the REST endpoints products declare, matched on the decoded path.
//! - [`store`]: the MongoDB reads (records, search, alerts, quality windows); [`lineage`]: where
//!   a record came from and went, for its product only.
//! - [`graphql`]: the GraphQL schema generated from each contract, and its resolvers.
//! - [`validate`]: validation on demand, with `meshguard check`'s own reading and verdicts.
//! - [`search`]: the typed search language, never MongoDB operators; [`problem`]: RFC 9457
//!   errors; [`openapi`]: the OpenAPI 3.0.3 document.
//!
//! Reads only what `meshguard run` writes: `records.{product}` (one document per key, read by
//! `_id`: the newest valid version and the key's lineage), `data_quality_alerts`,
//! `quality_metrics`, `users`.

pub mod aliases;
pub mod audit;
pub mod auth;
pub mod graphql;
pub mod guard;
pub mod limit;
pub mod lineage;
pub mod openapi;
pub mod problem;
pub mod reload;
pub mod routes;
pub mod search;
pub mod server;
pub mod store;
pub mod validate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use mongodb::Database;
use serde_json::Value;
use tracing::warn;

pub use self::aliases::{Alias, AliasKind};
use self::auth::Authenticator;
pub use self::limit::AnonymousLimiter;
use self::search::Fields;
pub use self::server::{ServeError, serve};
use crate::config::ApiSettings;
use crate::product::Catalog;

pub use crate::telemetry::names::{
    ACCESS_DENIALS_TOTAL, API_CONNECTIONS_REFUSED_TOTAL, API_RATE_LIMITED_TOTAL, API_REQUEST_SECONDS, API_REQUESTS_TOTAL,
};

/// Everything a request needs.
#[derive(Debug)]
pub struct Api {
    /// The products served, with their compiled contracts.
    catalog: Catalog,
    /// Where `meshguard run` writes and the audit goes.
    db: Database,
    /// Verifies credentials (shared by every catalog revision served).
    auth: Arc<Authenticator>,
    /// The Prometheus recorder, rendered on `/metrics`.
    metrics: Option<PrometheusHandle>,
    /// Searchable top-level fields per product (its first contract's).
    fields: HashMap<String, Fields>,
    /// The GraphQL schema text per product that declares one (served for tools).
    graphql: HashMap<String, String>,
    /// The executable GraphQL schema per product, generated from its contract.
    graphql_schemas: HashMap<String, async_graphql::dynamic::Schema>,
    /// The REST endpoints the products declare.
    aliases: Vec<Alias>,
    /// The OpenAPI document, built once.
    openapi: Value,
    /// Limits callers without valid credentials, per address; shared by every catalog revision
    /// served, so a new revision does not hand a flooding address a fresh bucket.
    limiter: Arc<AnonymousLimiter>,
    /// Longest a request may take, body upload included.
    request_timeout: Duration,
}

impl Api {
    /// Builds the API over a loaded catalog and a MongoDB database; `settings` gives the
    /// per-request limits. Search fields and GraphQL schemas come from what the catalog loaded
    /// (no file is read again, so a built-in catalog serves the same). `auth` and `limiter`
    /// outlive a catalog revision: `serve` passes the same ones to each.
    pub fn new(
        catalog: Catalog,
        db: Database,
        auth: Arc<Authenticator>,
        limiter: Arc<AnonymousLimiter>,
        metrics: Option<PrometheusHandle>,
        settings: &ApiSettings,
    ) -> Self {
        let mut fields = HashMap::new();
        let mut graphql = HashMap::new();
        let mut aliases = Vec::new();
        for p in &catalog.products {
            let f = p.schemas.first().map(search::fields_of).unwrap_or_default();
            let _ = fields.insert(p.name().to_owned(), f);
            if let Some(text) = &p.graphql_sdl {
                let _ = graphql.insert(p.name().to_owned(), text.clone());
            }
            let base = p.decl.spec.apis.rest.as_ref().and_then(|r| r.base_path().ok()).unwrap_or_default();
            for e in p.decl.spec.apis.rest.iter().flat_map(|r| r.endpoints.iter()) {
                match Alias::parse(p.name(), &base, e) {
                    Some(a) if !a.is_reserved(&catalog) => aliases.push(a),
                    _ => warn!(product = p.name(), endpoint = %e, "REST endpoint not served (unsupported shape or clashes with a route)"),
                }
            }
        }
        let mut graphql_schemas = HashMap::new();
        for p in &catalog.products {
            match fields.get(p.name()).map(|f| graphql::schema(p, f)) {
                Some(Ok(schema)) => {
                    let _ = graphql_schemas.insert(p.name().to_owned(), schema);
                }
                Some(Err(e)) => warn!(product = p.name(), error = %e.0, "no GraphQL schema could be generated"),
                None => {}
            }
        }
        let openapi = openapi::document(&catalog, &aliases, &fields);
        describe_counter!(API_REQUESTS_TOTAL, Unit::Count, "API requests by route template, method and status.");
        describe_histogram!(API_REQUEST_SECONDS, Unit::Seconds, "API request latency by route template.");
        describe_counter!(ACCESS_DENIALS_TOTAL, Unit::Count, "API accesses denied (401, 403) by product and role.");
        describe_counter!(API_RATE_LIMITED_TOTAL, Unit::Count, "API requests without valid credentials refused with 429.");
        describe_counter!(API_CONNECTIONS_REFUSED_TOTAL, Unit::Count, "API connections refused at api.max_connections.");
        Self {
            catalog,
            db,
            auth,
            metrics,
            fields,
            graphql,
            graphql_schemas,
            aliases,
            openapi,
            limiter,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
        }
    }

    /// The aliases served.
    pub fn aliases(&self) -> &[Alias] {
        &self.aliases
    }

    /// The OpenAPI document.
    pub fn openapi(&self) -> &Value {
        &self.openapi
    }
}
