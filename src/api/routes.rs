//! The router and one handler per route. Product routes pass [`audit::gate`] (authentication,
//! limits, audit) and call [`Api::guard`] with the permission the operation needs; the public
//! operations routes (`/healthz`, and `/metrics`, `/openapi.json` unless they are moved to
//! `api.ops_addr`) do not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::aliases::{AliasKind, decoded_segments};
use super::audit::{self, record};
use super::guard::{Caller, Decision, Target, may};
use super::problem::{FieldError, Problem};
use super::{Api, search};
use crate::product::model::Permission;

/// Which operations routes a router carries besides the product routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ops {
    /// `/metrics` and `/openapi.json` on the API port (the default, documented choice).
    OnApiPort,
    /// Only `/healthz` on the API port; the others on [`Api::ops_router`].
    Separate,
}

impl Api {
    /// The API's router.
    pub fn router(self: Arc<Self>, ops: Ops) -> Router {
        let guarded = Router::new()
            .route("/products", get(list_products))
            .route("/products/{product}", get(get_product))
            .route("/{product}/data/{record_id}", get(get_data))
            .route("/{product}/lineage/{record_id}", get(get_lineage))
            .route("/{product}/search", post(post_search).layer(DefaultBodyLimit::max(search::MAX_BODY_BYTES)))
            .route("/{product}/validate", post(post_validate).layer(DefaultBodyLimit::max(super::validate::MAX_VALIDATE_BYTES)))
            .route("/{product}/alerts", get(get_alerts))
            .route("/{product}/graphql", get(get_graphql).post(post_graphql).layer(DefaultBodyLimit::max(search::MAX_BODY_BYTES)))
            .fallback(fallback)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(middleware::from_fn_with_state(self.clone(), audit::gate))
            .with_state(self.clone());
        let public = match ops {
            Ops::OnApiPort => self.ops_router(),
            Ops::Separate => Router::new().route("/healthz", tracked("/healthz", get(healthz))).with_state(self),
        };
        guarded.merge(public)
    }

    /// `/healthz`, `/metrics` and `/openapi.json`: public, unaudited, no credentials.
    pub fn ops_router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", tracked("/healthz", get(healthz)))
            .route("/metrics", tracked("/metrics", get(metrics_text)))
            .route("/openapi.json", tracked("/openapi.json", get(openapi_json)))
            .with_state(self)
    }
}

fn tracked(route: &'static str, mr: MethodRouter<Arc<Api>>) -> MethodRouter<Arc<Api>> {
    mr.layer(middleware::from_fn(move |req: Request, next: Next| track(route, req, next)))
}

async fn track(route: &'static str, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    record(route, &method, resp.status(), start);
    resp
}

fn respond(r: Result<Value, Problem>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

/// The permission a method needs on the GET routes: reads need `read`, anything else `write`
/// (search and validate are reads whatever their method: they say so themselves).
fn by_method(method: &Method) -> Permission {
    if method == Method::GET || method == Method::HEAD { Permission::Read } else { Permission::Write }
}

async fn healthz() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n").into_response()
}

async fn metrics_text(State(s): State<Arc<Api>>) -> Response {
    match &s.metrics {
        Some(m) => {
            m.run_upkeep();
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
        }
        None => Problem::not_found("metrics are not installed").into_response(),
    }
}

async fn openapi_json(State(s): State<Arc<Api>>) -> Response {
    Json(s.openapi.clone()).into_response()
}

async fn list_products(State(s): State<Arc<Api>>, Extension(caller): Extension<Caller>) -> Response {
    let r = async {
        let decision = |user: &str, roles: Vec<String>, allowed: bool, reason: String| Decision {
            user: user.to_owned(),
            roles,
            product: "*".into(),
            requested: None,
            route: "/products".into(),
            alias: false,
            record_id: None,
            permission: Permission::Read,
            allowed,
            reason,
        };
        let principal = match &caller.principal {
            Ok(p) => p,
            Err(e) => {
                caller.decide(decision("anonymous", Vec::new(), false, e.reason().to_owned()));
                super::guard::denial("*", "none");
                return Err(Problem::unauthorized(e.reason()));
            }
        };
        let roles = s.roles(principal).await?;
        let visible: Vec<Value> = s
            .catalog
            .products
            .iter()
            .filter(|p| may(p, &roles, Permission::Read))
            .map(|p| {
                json!({
                    "name": p.name(),
                    "domain": p.decl.metadata.domain,
                    "owner": p.decl.metadata.owner,
                    "version": p.decl.metadata.version,
                    "description": p.decl.metadata.description,
                    "contracts": p.contracts.iter().map(|c| json!({"name": c.name, "version": c.version})).collect::<Vec<_>>(),
                })
            })
            .collect();
        caller.decide(decision(&principal.user, roles, true, format!("listing {} readable products", visible.len())));
        Ok(json!({ "products": visible }))
    }
    .await;
    respond(r)
}

fn target<'a>(product: &'a str, permission: Permission, route: &'a str, record_id: Option<&'a str>) -> Target<'a> {
    Target { product, permission, route, alias: false, record_id }
}

async fn get_product(State(s): State<Arc<Api>>, Extension(c): Extension<Caller>, method: Method, Path(product): Path<String>) -> Response {
    let r = async {
        let p = s.guard(&c, target(&product, by_method(&method), "/products/{product}", None)).await?;
        s.product_detail(p).await
    }
    .await;
    respond(r)
}

async fn get_data(
    State(s): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    method: Method,
    Path((product, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let p = s.guard(&c, target(&product, by_method(&method), "/{product}/data/{record_id}", Some(&id))).await?;
        s.record(p, &id).await
    }
    .await;
    respond(r)
}

async fn get_lineage(
    State(s): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    method: Method,
    Path((product, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let p = s.guard(&c, target(&product, by_method(&method), "/{product}/lineage/{record_id}", Some(&id))).await?;
        s.lineage(p, &id).await
    }
    .await;
    respond(r)
}

async fn post_search(
    State(s): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(product): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        // A declared `/{x}/search` endpoint is routed here too (its first segment is not a product).
        let segs = [product.clone(), "search".to_owned()];
        let alias = s
            .catalog
            .product(&product)
            .is_none()
            .then(|| s.aliases.iter().find(|a| a.kind == AliasKind::Search && a.matches(&segs).is_some()))
            .flatten();
        // A search changes nothing: it is a read, whatever its method.
        let t = match alias {
            Some(a) => Target { product: &a.product, permission: Permission::Read, route: &a.template, alias: true, record_id: None },
            None => target(&product, Permission::Read, "/{product}/search", None),
        };
        let p = s.guard(&c, t).await?;
        s.search(p, body).await
    }
    .await;
    respond(r)
}

async fn post_validate(
    State(s): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(product): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        // Validation stores nothing: it is a read of the product.
        let p = s.guard(&c, target(&product, Permission::Read, "/{product}/validate", None)).await?;
        let contract = p
            .contract(q.get("contract").map(String::as_str))
            .ok_or_else(|| Problem::not_found(format!("{} has no such contract", p.name())))?;
        super::validate::validate(contract, &q, &headers, body).await
    }
    .await;
    respond(r)
}

async fn get_alerts(
    State(s): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    method: Method,
    Path(product): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = async {
        let p = s.guard(&c, target(&product, by_method(&method), "/{product}/alerts", None)).await?;
        let limit = match q.get("limit") {
            None => 50,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if (1..=500).contains(&n) => n,
                _ => {
                    return Err(Problem::bad_request(vec![FieldError {
                        field: "limit".into(),
                        message: "must be an integer from 1 to 500".into(),
                    }]));
                }
            },
        };
        s.alerts(p.name(), limit).await
    }
    .await;
    respond(r)
}

async fn get_graphql(State(s): State<Arc<Api>>, Extension(c): Extension<Caller>, method: Method, Path(product): Path<String>) -> Response {
    match s.guard(&c, target(&product, by_method(&method), "/{product}/graphql", None)).await {
        Err(p) => p.into_response(),
        Ok(p) => match s.graphql.get(p.name()) {
            Some(text) => ([(header::CONTENT_TYPE, "application/graphql; charset=utf-8")], text.clone()).into_response(),
            None => Problem::not_found(format!("{} declares no GraphQL schema", p.name())).into_response(),
        },
    }
}

async fn post_graphql(
    State(s): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(product): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        // Queries only (no mutation exists): a read of the product.
        let p = s.guard(&c, target(&product, Permission::Read, "/{product}/graphql", None)).await?;
        let schema = s.graphql_schemas.get(p.name()).ok_or_else(|| Problem::not_found(format!("{} has no GraphQL schema", p.name())))?;
        let body = body.map_err(|e| {
            Problem::bad_request(vec![FieldError {
                field: "body".into(),
                message: format!("unreadable or larger than {} bytes: {e}", search::MAX_BODY_BYTES),
            }])
        })?;
        let not_graphql = |message: String| Problem::bad_request(vec![FieldError { field: "body".into(), message }]);
        let raw: Value =
            serde_json::from_slice(&body).map_err(|e| not_graphql(format!("not a GraphQL request ({{\"query\": …}}): {e}")))?;
        // async-graphql takes a missing `query` for an empty one (and answers 200 with a parse
        // error); the OpenAPI document requires it, so its absence is the client's 400.
        if !raw.get("query").is_some_and(Value::is_string) {
            return Err(Problem::bad_request(vec![FieldError {
                field: "query".into(),
                message: "is required: the GraphQL query text".into(),
            }]));
        }
        let request: async_graphql::Request =
            serde_json::from_value(raw).map_err(|e| not_graphql(format!("not a GraphQL request ({{\"query\": …}}): {e}")))?;
        let target = super::graphql::Target { api: s.clone(), product: p.name().to_owned() };
        let response = schema.execute(request.data(target)).await;
        serde_json::to_value(&response).map_err(|_| Problem::unavailable("the GraphQL response cannot be rendered"))
    }
    .await;
    respond(r)
}

async fn method_not_allowed(method: Method) -> Response {
    Problem::method_not_allowed(format!("{} is not allowed on this route", audit::method_label(&method))).into_response()
}

/// The product's declared REST endpoints (aliases), else 404.
async fn fallback(State(s): State<Arc<Api>>, Extension(c): Extension<Caller>, method: Method, req: Request) -> Response {
    // Without valid credentials, no route and no method is told apart from another.
    let refused = |c: &Caller, status: Problem| match &c.principal {
        Err(e) => {
            super::guard::denial("unknown", "none");
            Problem::unauthorized(e.reason()).into_response()
        }
        Ok(_) => status.into_response(),
    };
    let Some(segs) = decoded_segments(req.uri().path()) else {
        return refused(&c, Problem::not_found("no such route"));
    };
    let answers = |kind: AliasKind| kind.method() == method || (method == Method::HEAD && kind.method() == Method::GET);
    let mut candidates: Vec<(&super::Alias, String)> = s.aliases.iter().filter_map(|a| a.matches(&segs).map(|id| (a, id))).collect();
    // As in OpenAPI, a concrete path (`/x/search`) wins over a templated one (`/x/{id}`).
    if candidates.iter().any(|(a, _)| a.kind == AliasKind::Search) {
        candidates.retain(|(a, _)| a.kind == AliasKind::Search);
    }
    let Some((alias, id)) = candidates.iter().find(|(a, _)| answers(a.kind)).or(candidates.first()).cloned() else {
        return refused(&c, Problem::not_found("no such route"));
    };
    if !answers(alias.kind) {
        // Every method of every alias matching this path.
        let get = candidates.iter().any(|(a, _)| a.kind.method() == Method::GET);
        let post = candidates.iter().any(|(a, _)| a.kind.method() == Method::POST);
        let allow: &'static str = match (get, post) {
            (true, true) => "GET,HEAD,POST",
            (false, true) => "POST",
            _ => "GET,HEAD",
        };
        let mut r =
            refused(&c, Problem::method_not_allowed(format!("{} is not allowed here (allowed: {allow})", audit::method_label(&method))));
        if r.status() == StatusCode::METHOD_NOT_ALLOWED {
            let _ = r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        return r;
    }
    let result = async {
        let record_id = (alias.kind != AliasKind::Search).then_some(id.as_str());
        // Every alias reads (a search too).
        let t = Target { product: &alias.product, permission: Permission::Read, route: &alias.template, alias: true, record_id };
        let p = s.guard(&c, t).await?;
        match alias.kind {
            AliasKind::Record => s.record(p, &id).await,
            AliasKind::Status => {
                let rec = s.record(p, &id).await?;
                let param = alias.param.clone().unwrap_or_else(|| "id".into());
                Ok(json!({ param: id, "status": rec.get("status").cloned().unwrap_or(Value::Null) }))
            }
            AliasKind::Search => {
                let body = axum::body::to_bytes(req.into_body(), search::MAX_BODY_BYTES).await.map_err(|e| {
                    Problem::bad_request(vec![FieldError {
                        field: "body".into(),
                        message: format!("unreadable or larger than {} bytes: {e}", search::MAX_BODY_BYTES),
                    }])
                })?;
                s.search(p, Ok(body)).await
            }
        }
    }
    .await;
    respond(result)
}
