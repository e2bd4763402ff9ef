//! The data product REST API of `meshguard serve`: the seed's `data-product-api.js` routes with
//! its holes fixed. Every request is authenticated ([`auth`]), every product route authorized
//! against the product's `spec.access` (GET needs `read`, anything else `write`, `admin` implies
//! both) and every decision audited in MongoDB `access_audit` and counted in metrics. Search
//! takes a small typed language ([`search`]), never MongoDB operators. Errors are RFC 9457
//! problem documents ([`problem`]). The OpenAPI 3.0.3 document is [`openapi`].
//!
//! Reads only what `meshguard run` writes: `records.{product}` (insert-only versions; the
//! latest of a key is the greatest `(_meta.event_time_ms, _meta.offset)`), `data_lineage`,
//! `data_quality_alerts`, `quality_metrics`, `users`.

pub mod auth;
pub mod openapi;
pub mod problem;
pub mod search;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use mongodb::Database;
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde_json::{Value, json};
use tracing::{error, warn};

use self::auth::{AuthError, Authenticator, Principal};
use self::problem::{FieldError, Problem};
use self::search::{Fields, Search};
use crate::product::model::Permission;
use crate::product::{Catalog, Product};
use crate::sink::mongo::{ACCESS_AUDIT, ALERTS, LINEAGE, MongoSink, QUALITY_METRICS, USERS};

pub use crate::telemetry::names::{ACCESS_DENIALS_TOTAL, API_REQUEST_SECONDS, API_REQUESTS_TOTAL};

/// Most alert documents read for one product.
const MAX_ALERT_DOCS: i64 = 5000;
/// Most lineage documents returned per direction.
const MAX_LINEAGE_DOCS: i64 = 1000;
/// Most record versions a search considers before it asks for a narrower filter.
pub const MAX_SEARCH_SCAN: usize = 10_000;

/// A REST endpoint declared in a product's `spec.apis.rest.endpoints`, served as an alias.
#[derive(Debug, Clone)]
pub struct Alias {
    /// The endpoint as declared (`/payments/{payment_id}/status`).
    pub template: String,
    /// The product it serves.
    pub product: String,
    /// Static leading segments (`["payments"]`).
    prefix: Vec<String>,
    /// What it serves.
    pub kind: AliasKind,
    /// The path parameter's name (`payment_id`), when there is one.
    pub param: Option<String>,
}

/// What an alias serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasKind {
    /// `GET /{x}/{id}`: the latest record.
    Record,
    /// `GET /{x}/{id}/status`: its `status` field.
    Status,
    /// `POST /{x}/search`.
    Search,
}

impl Alias {
    /// Parses the supported shapes: static segments then `{param}`, `{param}/status` or `search`.
    pub fn parse(product: &str, template: &str) -> Option<Self> {
        let segs: Vec<&str> = template.trim_matches('/').split('/').collect();
        let is_param = |s: &str| s.len() > 2 && s.starts_with('{') && s.ends_with('}');
        let is_static = |s: &str| !s.is_empty() && !s.contains(['{', '}']);
        let build = |prefix: &[&str], kind, param: Option<&str>| {
            (!prefix.is_empty() && prefix.iter().all(|s| is_static(s))).then(|| Self {
                template: template.to_owned(),
                product: product.to_owned(),
                prefix: prefix.iter().map(|s| (*s).to_owned()).collect(),
                kind,
                param: param.map(|p| p.trim_matches(['{', '}']).to_owned()),
            })
        };
        match segs.as_slice() {
            [prefix @ .., "search"] => build(prefix, AliasKind::Search, None),
            [prefix @ .., p, "status"] if is_param(p) => build(prefix, AliasKind::Status, Some(p)),
            [prefix @ .., p] if is_param(p) => build(prefix, AliasKind::Record, Some(p)),
            _ => None,
        }
    }

    /// The record id when `path` matches this alias (`Some("")` for search).
    fn matches(&self, segs: &[&str]) -> Option<String> {
        let n = self.prefix.len();
        if segs.len() < n || segs[..n].iter().zip(&self.prefix).any(|(a, b)| a != b) {
            return None;
        }
        match (self.kind, &segs[n..]) {
            (AliasKind::Search, ["search"]) => Some(String::new()),
            (AliasKind::Record, [id]) if !id.is_empty() => Some((*id).to_owned()),
            (AliasKind::Status, [id, "status"]) if !id.is_empty() => Some((*id).to_owned()),
            _ => None,
        }
    }
}

/// Everything a request needs.
#[derive(Debug)]
pub struct Api {
    catalog: Catalog,
    db: Database,
    auth: Authenticator,
    metrics: Option<PrometheusHandle>,
    fields: HashMap<String, Fields>,
    graphql: HashMap<String, String>,
    aliases: Vec<Alias>,
    openapi: Value,
}

impl Api {
    /// Builds the API over a loaded catalog and a MongoDB database. `schemas_dir` resolves
    /// `schemas/…` references (GraphQL schemas).
    pub fn new(catalog: Catalog, db: Database, auth: Authenticator, metrics: Option<PrometheusHandle>, schemas_dir: &FsPath) -> Self {
        let mut fields = HashMap::new();
        let mut graphql = HashMap::new();
        let mut aliases = Vec::new();
        for p in &catalog.products {
            let f = p.contracts.first().map(|c| read_fields(&c.schema_file, schemas_dir)).unwrap_or_default();
            let _ = fields.insert(p.name().to_owned(), f);
            if let Some(g) = &p.decl.spec.apis.graphql {
                let path = resolve(&p.file, schemas_dir, &g.schema);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let _ = graphql.insert(p.name().to_owned(), text);
                    }
                    Err(e) => warn!(product = p.name(), file = %path.display(), error = %e, "cannot read the GraphQL schema"),
                }
            }
            for e in p.decl.spec.apis.rest.iter().flat_map(|r| r.endpoints.iter()) {
                match Alias::parse(p.name(), e) {
                    Some(a) if !is_reserved(&a.prefix[0], &catalog) => aliases.push(a),
                    _ => warn!(product = p.name(), endpoint = %e, "REST endpoint not served (unsupported shape or clashes with a route)"),
                }
            }
        }
        let openapi = openapi::document(&catalog, &aliases, &fields);
        describe_counter!(API_REQUESTS_TOTAL, Unit::Count, "API requests by route template, method and status.");
        describe_histogram!(API_REQUEST_SECONDS, Unit::Seconds, "API request latency by route template.");
        describe_counter!(ACCESS_DENIALS_TOTAL, Unit::Count, "API accesses denied (401, 403) by product and role.");
        Self { catalog, db, auth, metrics, fields, graphql, aliases, openapi }
    }

    /// The aliases served.
    pub fn aliases(&self) -> &[Alias] {
        &self.aliases
    }

    /// The OpenAPI document.
    pub fn openapi(&self) -> &Value {
        &self.openapi
    }

    /// The router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", tracked("/healthz", get(healthz)))
            .route("/metrics", tracked("/metrics", get(metrics_text)))
            .route("/openapi.json", tracked("/openapi.json", get(openapi_json)))
            .route("/products", tracked("/products", get(list_products)))
            .route("/products/{product}", tracked("/products/{product}", get(get_product)))
            .route("/{product}/data/{record_id}", tracked("/{product}/data/{record_id}", get(get_data)))
            .route("/{product}/lineage/{record_id}", tracked("/{product}/lineage/{record_id}", get(get_lineage)))
            .route(
                "/{product}/search",
                tracked("/{product}/search", post(post_search).layer(DefaultBodyLimit::max(search::MAX_BODY_BYTES))),
            )
            .route("/{product}/alerts", tracked("/{product}/alerts", get(get_alerts)))
            .route("/{product}/graphql", tracked("/{product}/graphql", get(get_graphql)))
            .fallback(fallback)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self)
    }

    /// Authenticates, finds the product, authorizes and audits. 401/404/403 as problems.
    async fn guard(&self, headers: &HeaderMap, product: &str, method: &Method, route: &str) -> Result<(&Product, Principal), Problem> {
        let permission = if method == Method::GET || method == Method::HEAD { Permission::Read } else { Permission::Write };
        let principal = match self.authenticate(headers) {
            Ok(p) => p,
            Err(e) => {
                self.audit("anonymous", &[], product, method, route, permission, false, e.reason()).await?;
                // The label set stays fixed: a product name from the URL counts only if it exists.
                denial(if self.catalog.product(product).is_some() { product } else { "unknown" }, "none");
                return Err(Problem::unauthorized(e.reason()));
            }
        };
        let Some(p) = self.catalog.product(product) else {
            return Err(Problem::not_found(format!("no data product named {product:?}")));
        };
        let roles = self.roles(&principal).await?;
        let allowed = may(p, &roles, permission);
        let reason = if allowed {
            format!("a role grants {}", perm_name(permission))
        } else {
            format!("no role of the user grants {} on {product}", perm_name(permission))
        };
        self.audit(&principal.user, &roles, product, method, route, permission, allowed, &reason).await?;
        if !allowed {
            denial(product, roles.first().map_or("none", String::as_str));
            return Err(Problem::forbidden(reason));
        }
        Ok((p, principal))
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let text = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| AuthError::Invalid("a credential header is not ASCII")));
        let authorization = text(header::AUTHORIZATION.as_str()).transpose()?;
        let api_key = text("x-api-key").transpose()?;
        self.auth.authenticate(authorization, api_key, time::OffsetDateTime::now_utc().unix_timestamp())
    }

    /// The token's roles, or the seed's `getUserRoles` (MongoDB `users`).
    async fn roles(&self, principal: &Principal) -> Result<Vec<String>, Problem> {
        if let Some(r) = &principal.roles {
            return Ok(r.clone());
        }
        let user =
            self.db.collection::<Document>(USERS).find_one(doc! { "user_id": principal.user.as_str() }).await.map_err(unavailable)?;
        Ok(user
            .and_then(|u| u.get_array("roles").ok().map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect()))
            .unwrap_or_default())
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        user: &str,
        roles: &[String],
        product: &str,
        method: &Method,
        route: &str,
        permission: Permission,
        allowed: bool,
        reason: &str,
    ) -> Result<(), Problem> {
        let d = doc! {
            "_id": uuid::Uuid::new_v4().to_string(),
            "at": DateTime::now(),
            "user": user,
            "roles": roles,
            "product": product,
            "method": method.as_str(),
            "route": route,
            "permission": perm_name(permission),
            "outcome": if allowed { "allowed" } else { "denied" },
            "reason": reason,
        };
        // Fail closed: a decision that cannot be audited is not served.
        self.db.collection::<Document>(ACCESS_AUDIT).insert_one(d).await.map(|_| ()).map_err(|e| {
            error!(error = %e, "cannot write the access audit");
            Problem::unavailable("the access audit cannot be written")
        })
    }

    /// The latest version of a record, split into (fields, meta).
    async fn latest(&self, product: &str, key: &str) -> Result<Option<(serde_json::Map<String, Value>, Value)>, Problem> {
        let found = self
            .db
            .collection::<Document>(&MongoSink::record_store(product))
            .find_one(doc! { "key": key })
            .sort(doc! { "_meta.event_time_ms": -1, "_meta.offset": -1 })
            .await
            .map_err(unavailable)?;
        Ok(found.map(split_record))
    }

    /// The seed's data route: the latest version, re-validated against its contract.
    async fn record(&self, p: &Product, key: &str) -> Result<Value, Problem> {
        let Some((fields, meta)) = self.latest(p.name(), key).await? else {
            return Err(Problem::not_found(format!("no record {key:?} in {}", p.name())));
        };
        let contract = p.contract(meta.get("contract").and_then(Value::as_str)).or_else(|| p.contract(None));
        let record = Value::Object(fields);
        if let Some(c) = contract {
            let mut violations = Vec::new();
            if !c.validate(&record, &mut violations) {
                return Err(Problem::contract_violation(
                    format!("record {key:?} no longer satisfies contract {} {}", c.name, c.version),
                    json!(violations),
                ));
            }
        }
        let mut out = record;
        out["_meta"] = meta;
        Ok(out)
    }

    async fn search(&self, p: &Product, body: Result<Bytes, BytesRejection>) -> Result<Value, Problem> {
        let body = body.map_err(|e| {
            Problem::bad_request(vec![FieldError {
                field: "body".into(),
                message: format!("unreadable or larger than {} bytes: {e}", search::MAX_BODY_BYTES),
            }])
        })?;
        let empty = Fields::new();
        let fields = self.fields.get(p.name()).unwrap_or(&empty);
        let s = search::parse(&body, fields).map_err(Problem::bad_request)?;
        self.run_search(p, &s).await
    }

    /// Search over the latest versions: (1) versions matching the filter, (2) the latest
    /// version of each of their keys, (3) the matching versions that are the latest, sorted and
    /// paged by MongoDB. So a record whose newest version no longer matches is not returned.
    async fn run_search(&self, p: &Product, s: &Search) -> Result<Value, Problem> {
        let coll = self.db.collection::<Document>(&MongoSink::record_store(p.name()));
        let projection = doc! { "_id": 1, "key": 1, "_meta.event_time_ms": 1, "_meta.offset": 1 };
        let mut cursor =
            coll.find(s.filter()).projection(projection.clone()).limit(MAX_SEARCH_SCAN as i64 + 1).await.map_err(unavailable)?;
        let mut candidates: HashSet<String> = HashSet::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut n = 0usize;
        while cursor.advance().await.map_err(unavailable)? {
            let d = cursor.deserialize_current().map_err(unavailable)?;
            n += 1;
            if let (Ok(id), Ok(key)) = (d.get_str("_id"), d.get_str("key")) {
                let _ = candidates.insert(id.to_owned());
                let _ = keys.insert(key.to_owned());
            }
        }
        if n > MAX_SEARCH_SCAN {
            return Err(Problem::bad_request(vec![FieldError {
                field: "filter".into(),
                message: format!("matches more than {MAX_SEARCH_SCAN} record versions; narrow the filter"),
            }]));
        }
        let mut latest: HashMap<String, ((i64, i64), String)> = HashMap::new();
        if !keys.is_empty() {
            let key_list: Vec<&String> = keys.iter().collect();
            let mut cursor = coll.find(doc! { "key": { "$in": key_list } }).projection(projection).await.map_err(unavailable)?;
            while cursor.advance().await.map_err(unavailable)? {
                let d = cursor.deserialize_current().map_err(unavailable)?;
                let (Ok(id), Ok(key)) = (d.get_str("_id"), d.get_str("key")) else { continue };
                let meta = d.get_document("_meta").ok();
                let t = meta.and_then(|m| m.get("event_time_ms")).and_then(bson_i64).unwrap_or(i64::MIN);
                let o = meta.and_then(|m| m.get("offset")).and_then(bson_i64).unwrap_or(i64::MIN);
                let entry = latest.entry(key.to_owned()).or_insert(((i64::MIN, i64::MIN), String::new()));
                if (t, o) > entry.0 || entry.1.is_empty() {
                    *entry = ((t, o), id.to_owned());
                }
            }
        }
        let ids: Vec<String> = latest.into_values().map(|(_, id)| id).filter(|id| candidates.contains(id)).collect();
        let mut results = Vec::new();
        let mut more = false;
        if !ids.is_empty() {
            let mut sort = Document::new();
            if let Some((f, dir)) = &s.sort {
                let _ = sort.insert(f.as_str(), *dir);
            }
            let _ = sort.insert("key", 1);
            let mut cursor =
                coll.find(doc! { "_id": { "$in": ids } }).sort(sort).skip(s.skip).limit(s.limit as i64 + 1).await.map_err(unavailable)?;
            while cursor.advance().await.map_err(unavailable)? {
                let d = cursor.deserialize_current().map_err(unavailable)?;
                if results.len() as u64 == s.limit {
                    more = true;
                    break;
                }
                let (mut fields, meta) = split_record(d);
                let _ = fields.insert("_meta".into(), meta);
                results.push(Value::Object(fields));
            }
        }
        let next = more.then(|| search::encode_cursor(s.skip + s.limit));
        Ok(json!({ "product": p.name(), "count": results.len(), "results": results, "next_cursor": next }))
    }

    async fn lineage(&self, product: &str, record_id: &str) -> Result<Value, Problem> {
        let coll = self.db.collection::<Document>(LINEAGE);
        let upstream = collect(
            coll.find(doc! { "destination.document_id": record_id, "product": product }).sort(doc! { "_id": 1 }).limit(MAX_LINEAGE_DOCS),
        )
        .await?;
        let downstream = collect(coll.find(doc! { "source.record_id": record_id }).sort(doc! { "_id": 1 }).limit(MAX_LINEAGE_DOCS)).await?;
        if upstream.is_empty() && downstream.is_empty() {
            return Err(Problem::not_found(format!("no lineage for record {record_id:?} in {product}")));
        }
        Ok(json!({ "product": product, "record_id": record_id, "upstream": upstream, "downstream": downstream }))
    }

    async fn alerts(&self, product: &str, limit: i64) -> Result<Value, Problem> {
        let coll = self.db.collection::<Document>(ALERTS);
        let docs = collect(coll.find(doc! { "product": product }).limit(MAX_ALERT_DOCS)).await?;
        let resolved: HashSet<&str> =
            docs.iter().filter(|d| d["state"] == "resolved").filter_map(|d| d.get("id").and_then(Value::as_str)).collect();
        let firing: Vec<&Value> = docs
            .iter()
            .filter(|d| d["state"] == "firing" && d.get("id").and_then(Value::as_str).is_some_and(|id| !resolved.contains(id)))
            .collect();
        let mut recent: Vec<&Value> = docs.iter().collect();
        recent.sort_by_key(|d| std::cmp::Reverse(sort_time(d)));
        recent.truncate(limit as usize);
        Ok(json!({ "product": product, "firing": firing, "recent": recent }))
    }

    async fn product_detail(&self, p: &Product) -> Result<Value, Problem> {
        let windows = collect(self.db.collection::<Document>(QUALITY_METRICS).find(doc! { "product": p.name() }).limit(5000)).await?;
        let mut latest: BTreeMap<String, Value> = BTreeMap::new();
        for w in windows {
            let topic = w.get("topic").and_then(Value::as_str).unwrap_or("").to_owned();
            let newer = latest.get(&topic).is_none_or(|old| sort_key(&w, "window_end") > sort_key(old, "window_end"));
            if newer {
                let _ = latest.insert(topic, w);
            }
        }
        let raw_contracts = p.raw.pointer("/spec/contracts").and_then(Value::as_array).cloned().unwrap_or_default();
        let contracts: Vec<Value> = p
            .contracts
            .iter()
            .map(|c| {
                let raw = raw_contracts.iter().find(|r| r["name"] == c.name.as_str()).cloned().unwrap_or(Value::Null);
                let topics: Vec<&str> = self.catalog.bindings().filter(|b| b.contract.product == p.name() && b.contract.name == c.name).map(|b| b.topic.as_str()).collect();
                json!({ "name": c.name, "version": c.version, "schema": raw["schema"], "sla": raw["quality"], "topics": topics, "key_field": c.key_field })
            })
            .collect();
        Ok(json!({
            "name": p.name(),
            "domain": p.decl.metadata.domain,
            "owner": p.decl.metadata.owner,
            "version": p.decl.metadata.version,
            "declaration": p.raw,
            "contracts": contracts,
            "quality": latest.into_values().collect::<Vec<_>>(),
        }))
    }
}

fn is_reserved(first: &str, catalog: &Catalog) -> bool {
    matches!(first, "products" | "healthz" | "metrics" | "openapi.json") || catalog.product(first).is_some()
}

fn may(p: &Product, roles: &[String], permission: Permission) -> bool {
    p.decl
        .spec
        .access
        .iter()
        .any(|rule| roles.contains(&rule.role) && (rule.permissions.contains(&permission) || rule.permissions.contains(&Permission::Admin)))
}

fn perm_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Admin => "admin",
    }
}

fn denial(product: &str, role: &str) {
    counter!(ACCESS_DENIALS_TOTAL, "product" => product.to_owned(), "role" => role.to_owned()).increment(1);
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    error!(error = %e, "mongodb read failed");
    Problem::unavailable("MongoDB did not answer")
}

fn bson_i64(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

fn to_json(d: Document) -> Value {
    Bson::Document(d).into_relaxed_extjson()
}

/// Record fields without `_id`, `key` and `_meta`; `_meta` (with the key and version id).
fn split_record(mut d: Document) -> (serde_json::Map<String, Value>, Value) {
    let id = d.remove("_id");
    let key = d.remove("key");
    let mut meta = match d.remove("_meta") {
        Some(Bson::Document(m)) => to_json(m),
        _ => json!({}),
    };
    meta["key"] = key.map(Bson::into_relaxed_extjson).unwrap_or(Value::Null);
    meta["version_id"] = id.map(Bson::into_relaxed_extjson).unwrap_or(Value::Null);
    let fields = match to_json(d) {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    (fields, meta)
}

async fn collect(find: mongodb::action::Find<'_, Document>) -> Result<Vec<Value>, Problem> {
    let mut cursor = find.await.map_err(unavailable)?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(unavailable)? {
        out.push(to_json(cursor.deserialize_current().map_err(unavailable)?));
    }
    Ok(out)
}

/// A comparable time of a JSON value: numbers, `{"$date": …}` and strings, as text.
fn sort_key(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::Number(n)) => format!("{:020}", n.as_i64().unwrap_or(0)),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("$date") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        },
        _ => String::new(),
    }
}

fn sort_time(d: &Value) -> String {
    std::cmp::max(sort_key(d, "fired_at"), sort_key(d, "resolved_at"))
}

fn read_fields(schema_file: &FsPath, schemas_dir: &FsPath) -> Fields {
    let f = search::fields_of(schema_file);
    if !f.is_empty() {
        return f;
    }
    // Embedded catalogs name files `<built-in>/x`: look for `x` in the schemas directory.
    schema_file.file_name().map(|n| search::fields_of(&schemas_dir.join(n))).unwrap_or_default()
}

fn resolve(product_file: &FsPath, schemas_dir: &FsPath, reference: &str) -> PathBuf {
    let rel = FsPath::new(reference);
    if rel.is_absolute() {
        rel.to_path_buf()
    } else if let Ok(rest) = rel.strip_prefix("schemas") {
        schemas_dir.join(rest)
    } else {
        product_file.parent().unwrap_or(FsPath::new(".")).join(rel)
    }
}

fn tracked(route: &'static str, mr: MethodRouter<Arc<Api>>) -> MethodRouter<Arc<Api>> {
    mr.layer(middleware::from_fn(move |req: Request, next: Next| track(route, req, next)))
}

async fn track(route: &'static str, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    record(route, method, resp.status(), start);
    resp
}

fn record(route: &'static str, method: &'static str, status: StatusCode, start: Instant) {
    counter!(API_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status.as_u16().to_string()).increment(1);
    histogram!(API_REQUEST_SECONDS, "route" => route).record(start.elapsed().as_secs_f64());
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn json_ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn respond(r: Result<Value, Problem>) -> Response {
    match r {
        Ok(v) => json_ok(v),
        Err(p) => p.into_response(),
    }
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
    json_ok(s.openapi.clone())
}

async fn list_products(State(s): State<Arc<Api>>, method: Method, headers: HeaderMap) -> Response {
    let r = async {
        let principal = match s.authenticate(&headers) {
            Ok(p) => p,
            Err(e) => {
                s.audit("anonymous", &[], "*", &method, "/products", Permission::Read, false, e.reason()).await?;
                denial("*", "none");
                return Err(Problem::unauthorized(e.reason()));
            }
        };
        let roles = s.roles(&principal).await?;
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
        s.audit(
            &principal.user,
            &roles,
            "*",
            &method,
            "/products",
            Permission::Read,
            true,
            &format!("listing {} readable products", visible.len()),
        )
        .await?;
        Ok(json!({ "products": visible }))
    }
    .await;
    respond(r)
}

async fn get_product(State(s): State<Arc<Api>>, method: Method, headers: HeaderMap, Path(product): Path<String>) -> Response {
    let r = async {
        let (p, _) = s.guard(&headers, &product, &method, "/products/{product}").await?;
        s.product_detail(p).await
    }
    .await;
    respond(r)
}

async fn get_data(State(s): State<Arc<Api>>, method: Method, headers: HeaderMap, Path((product, id)): Path<(String, String)>) -> Response {
    let r = async {
        let (p, _) = s.guard(&headers, &product, &method, "/{product}/data/{record_id}").await?;
        s.record(p, &id).await
    }
    .await;
    respond(r)
}

async fn get_lineage(
    State(s): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path((product, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let (p, _) = s.guard(&headers, &product, &method, "/{product}/lineage/{record_id}").await?;
        s.lineage(p.name(), &id).await
    }
    .await;
    respond(r)
}

async fn post_search(
    State(s): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(product): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        // A declared `/{x}/search` endpoint is routed here too (its first segment is not a product).
        let alias = s
            .catalog
            .product(&product)
            .is_none()
            .then(|| s.aliases.iter().find(|a| a.kind == AliasKind::Search && a.matches(&[product.as_str(), "search"]).is_some()))
            .flatten();
        let (name, route) = match alias {
            Some(a) => (a.product.as_str(), a.template.as_str()),
            None => (product.as_str(), "/{product}/search"),
        };
        let (p, _) = s.guard(&headers, name, &method, route).await?;
        s.search(p, body).await
    }
    .await;
    respond(r)
}

async fn get_alerts(
    State(s): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    Path(product): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = async {
        let (p, _) = s.guard(&headers, &product, &method, "/{product}/alerts").await?;
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

async fn get_graphql(State(s): State<Arc<Api>>, method: Method, headers: HeaderMap, Path(product): Path<String>) -> Response {
    match s.guard(&headers, &product, &method, "/{product}/graphql").await {
        Err(p) => p.into_response(),
        Ok((p, _)) => match s.graphql.get(p.name()) {
            Some(text) => ([(header::CONTENT_TYPE, "application/graphql; charset=utf-8")], text.clone()).into_response(),
            None => Problem::not_found(format!("{} declares no GraphQL schema", p.name())).into_response(),
        },
    }
}

async fn method_not_allowed(method: Method) -> Response {
    Problem::method_not_allowed(format!("{method} is not allowed on this route")).into_response()
}

/// The product's declared REST endpoints (aliases), else 404.
async fn fallback(State(s): State<Arc<Api>>, method: Method, headers: HeaderMap, req: Request) -> Response {
    let start = Instant::now();
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // `/x/search` matches both `/x/search` and `/x/{id}`: prefer the alias for this method.
    let expected_for = |a: &Alias| if a.kind == AliasKind::Search { Method::POST } else { Method::GET };
    let mut candidates: Vec<(&Alias, String)> = s.aliases.iter().filter_map(|a| a.matches(&segs).map(|id| (a, id))).collect();
    // As in OpenAPI, a concrete path (`/x/search`) wins over a templated one (`/x/{id}`).
    if candidates.iter().any(|(a, _)| a.kind == AliasKind::Search) {
        candidates.retain(|(a, _)| a.kind == AliasKind::Search);
    }
    let chosen = candidates
        .iter()
        .find(|(a, _)| expected_for(a) == method || (method == Method::HEAD && expected_for(a) == Method::GET))
        .or(candidates.first());
    let Some((alias, id)) = chosen.cloned() else {
        let r = Problem::not_found(format!("no route {path}")).into_response();
        record("unmatched", method_label(&method), r.status(), start);
        return r;
    };
    let expected = expected_for(alias);
    let r = if method != expected && !(method == Method::HEAD && expected == Method::GET) {
        // Every method of every alias matching this path.
        let get = candidates.iter().any(|(a, _)| expected_for(a) == Method::GET);
        let post = candidates.iter().any(|(a, _)| expected_for(a) == Method::POST);
        let allow: &'static str = match (get, post) {
            (true, true) => "GET,HEAD,POST",
            (false, true) => "POST",
            _ => "GET,HEAD",
        };
        let mut r = Problem::method_not_allowed(format!("{method} is not allowed here (allowed: {allow})")).into_response();
        let _ = r.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static(allow));
        r
    } else {
        let result = async {
            let (p, _) = s.guard(&headers, &alias.product, &method, &alias.template).await?;
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
    };
    record("alias", method_label(&method), r.status(), start);
    r
}

/// Serves until `shutdown` resolves.
pub async fn serve(api: Arc<Api>, addr: SocketAddr, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    axum::serve(listener, api.router()).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_parse_the_supported_shapes() {
        let a = Alias::parse("p", "/payments/{payment_id}/status").unwrap_or_else(|| panic!("status"));
        assert_eq!(a.kind, AliasKind::Status);
        assert_eq!(a.param.as_deref(), Some("payment_id"));
        assert_eq!(a.matches(&["payments", "42", "status"]), Some("42".into()));
        assert_eq!(a.matches(&["payments", "42"]), None);
        let a = Alias::parse("p", "/cards/transactions/search").unwrap_or_else(|| panic!("search"));
        assert_eq!(a.kind, AliasKind::Search);
        assert_eq!(a.matches(&["cards", "transactions", "search"]), Some(String::new()));
        assert_eq!(a.matches(&["cards", "transactions"]), None);
        let r = Alias::parse("p", "/cards/transactions/{transaction_id}").unwrap_or_else(|| panic!("record"));
        assert_eq!(r.matches(&["cards", "transactions", "t1"]), Some("t1".into()));
        assert!(Alias::parse("p", "/{x}/y").is_none());
    }
}
