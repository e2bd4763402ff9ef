//! The OpenAPI 3.0.3 document, written by hand: every route, parameter, request body and
//! response (problem documents included).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::search::{self, FieldType, Fields, Op};
use super::{Alias, AliasKind};
use crate::product::Catalog;

fn problem(description: &str) -> Value {
    json!({ "description": description, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string", "minLength": 1 } })
}

/// The errors every authenticated product route can answer.
fn guarded(mut responses: Map<String, Value>) -> Value {
    let _ = responses.insert("401".into(), problem("Missing, malformed, expired or forged credentials."));
    let _ = responses
        .insert("403".into(), problem("The user's roles do not grant the permission (reads, search included: read; changes: write)."));
    let _ = responses.insert("404".into(), problem("Unknown data product, record or route."));
    let _ = responses.insert("408".into(), problem("The request, body included, did not arrive within api.request_timeout_ms."));
    let _ = responses
        .insert("429".into(), problem("Too many requests without valid credentials from this address (api.anonymous_per_second)."));
    let _ = responses
        .insert("503".into(), problem("MongoDB is unavailable (or the access audit cannot be written), or api.max_connections are open."));
    Value::Object(responses)
}

fn responses(list: &[(&str, Value)]) -> Map<String, Value> {
    list.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn record_op(summary: &str, id_param: &str) -> Value {
    json!({
        "summary": summary,
        "tags": ["data"],
        "parameters": [path_param(id_param, "The record id (the contract's key field).")],
        "responses": guarded(responses(&[
            ("200", ok("The latest version of the record, re-validated against its contract, with `_meta`.", "Record")),
            ("500", problem("The stored record no longer satisfies its contract; `violations` lists why.")),
        ])),
    })
}

fn search_op(summary: &str, product: &str) -> Value {
    json!({
        "summary": summary,
        "tags": ["data"],
        "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/SearchRequest-{product}") } } } },
        "responses": guarded(responses(&[
            ("200", ok("The latest versions of the matching records, one page.", "SearchResponse")),
            ("400", problem("Invalid search: unknown key or field, wrong type, `$` operator, limit over 500, too many conditions, body over 64 KiB; `errors` names the field.")),
        ])),
    })
}

/// The document, with the aliases the products declare.
pub fn document(catalog: &Catalog, aliases: &[Alias], fields: &HashMap<String, Fields>) -> Value {
    let mut doc = base(catalog, aliases);
    doc["components"]["schemas"]["ValidationReport"] = validation_report();
    for (name, schema) in search_schemas(catalog, fields) {
        doc["components"]["schemas"][name] = schema;
    }
    doc
}

/// The answer of `POST /{product}/validate`: the `check --format json` report plus `results`.
fn validation_report() -> Value {
    json!({
        "type": "object", "required": ["product", "contract", "version", "records", "valid", "invalid", "undecodable", "violations", "completeness", "freshness", "results"],
        "properties": {
            "product": { "type": "string" }, "contract": { "type": "string" }, "version": { "type": "string" }, "schema": { "type": "string" },
            "inputs": { "type": "array", "items": { "type": "string" } },
            "records": { "type": "integer" }, "valid": { "type": "integer" }, "invalid": { "type": "integer" }, "undecodable": { "type": "integer" },
            "violations": { "type": "array", "description": "Violations grouped by path and keyword, most frequent first.", "items": { "type": "object", "properties": {
                "path": { "type": "string" }, "keyword": { "type": "string" }, "count": { "type": "integer" }, "example": { "type": "string" },
                "lines": { "type": "array", "items": { "type": "object" } } } } },
            "completeness": { "type": "object", "description": "present, applicable, percent, complete_records, sla, meets_sla" },
            "freshness": { "type": "object", "description": "measured, without_event_time, p50/p99/max seconds, sla, over_sla" },
            "results": { "type": "array", "items": { "type": "object", "required": ["line", "valid", "violations", "completeness"], "properties": {
                "line": { "type": "integer" }, "valid": { "type": "boolean" }, "record_id": { "type": "string", "nullable": true },
                "stage": { "type": "string", "nullable": true, "enum": ["decode", "validate", null] },
                "violations": { "type": "array", "items": { "type": "object", "properties": {
                    "path": { "type": "string" }, "keyword": { "type": "string" }, "message": { "type": "string" } } } },
                "completeness": { "type": "object", "properties": { "present": { "type": "integer" }, "applicable": { "type": "integer" } } },
                "freshness_seconds": { "type": "number", "nullable": true } } } },
        },
    })
}

fn search_schemas(catalog: &Catalog, fields: &HashMap<String, Fields>) -> Vec<(String, Value)> {
    let empty = Fields::new();
    catalog
        .products
        .iter()
        .map(|p| (format!("SearchRequest-{}", p.name()), search_request(fields.get(p.name()).unwrap_or(&empty))))
        .collect()
}

/// The JSON schema of a value of a field's type.
fn scalar_schema(t: &FieldType) -> Value {
    match t {
        FieldType::Integer => json!({ "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX }),
        FieldType::Number => json!({ "type": "number" }),
        FieldType::String => json!({ "type": "string", "maxLength": search::MAX_STRING }),
        FieldType::Enum(symbols) => json!({ "type": "string", "enum": symbols }),
        FieldType::Boolean => json!({ "type": "boolean" }),
        FieldType::Other => json!({}),
    }
}

/// A search request over these fields: each condition names a field, an operator that applies to
/// its type and a value of that type.
fn search_request(fields: &Fields) -> Value {
    let cond = |field: &str, ops: &[&str], value: Value| {
        json!({ "type": "object", "additionalProperties": false, "required": ["field", "op", "value"],
            "properties": { "field": { "type": "string", "enum": [field] }, "op": { "type": "string", "enum": ops }, "value": value } })
    };
    let mut alternatives = Vec::new();
    for (name, t) in fields.iter().filter(|(_, t)| **t != FieldType::Other) {
        let scalar = scalar_schema(t);
        let cmp: &[&str] = if *t == FieldType::Boolean { &["eq", "ne"] } else { &["eq", "ne", "lt", "lte", "gt", "gte"] };
        alternatives.push(cond(name, cmp, scalar.clone()));
        alternatives.push(cond(
            name,
            &["in"],
            json!({ "type": "array", "minItems": 1, "maxItems": search::MAX_IN_VALUES, "items": scalar }),
        ));
        if matches!(t, FieldType::String | FieldType::Enum(_)) {
            alternatives.push(cond(name, &["prefix", "contains"], json!({ "type": "string", "maxLength": search::MAX_STRING })));
        }
    }
    let condition = json!({ "anyOf": alternatives });
    let sortable: Vec<&str> = fields.iter().filter(|(_, t)| **t != FieldType::Other).map(|(n, _)| n.as_str()).collect();
    json!({
        "type": "object", "additionalProperties": false,
        "description": format!("Typed search. Operators: {}. Field names are the contract's top-level properties.", Op::NAMES.join(", ")),
        "properties": {
            "filter": { "anyOf": [
                condition.clone(),
                { "type": "object", "additionalProperties": false, "required": ["and"], "properties": {
                    "and": { "type": "array", "maxItems": search::MAX_CONDITIONS, "items": condition } } },
            ] },
            "sort": { "type": "object", "additionalProperties": false, "required": ["field"], "properties": {
                "field": { "type": "string", "enum": sortable }, "order": { "type": "string", "enum": ["asc", "desc"], "default": "asc" } } },
            "limit": { "type": "integer", "minimum": 1, "maximum": search::MAX_LIMIT, "default": search::DEFAULT_LIMIT },
            "cursor": { "type": "string", "pattern": search::CURSOR_PATTERN, "description": "next_cursor of the previous page (opaque)." },
        },
    })
}

fn base(catalog: &Catalog, aliases: &[Alias]) -> Value {
    let product = path_param("product", "Data product name (metadata.name), e.g. payments-data-product.");
    let record_id = path_param("record_id", "The record id (the contract's key field).");
    let names: Vec<&str> = catalog.products.iter().map(|p| p.name()).collect();
    let mut paths = Map::new();
    let public = |summary: &str, content_type: &str| {
        json!({ "get": { "summary": summary, "tags": ["operations"], "security": [], "responses": {
            "200": { "description": "OK", "content": { content_type: { "schema": { "type": "string" } } } } } } })
    };
    let _ = paths.insert("/healthz".into(), public("Liveness probe.", "text/plain"));
    let _ = paths.insert(
        "/metrics".into(),
        public("Prometheus metrics (text exposition format). Public on the API port unless api.ops_addr moves it (with this document) to a separate address.", "text/plain"),
    );
    let _ = paths.insert(
        "/openapi.json".into(),
        json!({ "get": { "summary": "This document.", "tags": ["operations"], "security": [], "responses": {
            "200": { "description": "OpenAPI 3.0.3", "content": { "application/json": { "schema": { "type": "object" } } } } } } }),
    );
    let _ = paths.insert(
        "/products".into(),
        json!({ "get": { "summary": "The data products the caller may read.", "tags": ["products"], "responses": {
            "200": ok("Readable data products.", "ProductList"),
            "401": problem("Missing, malformed, expired or forged credentials."),
            "408": problem("The request did not arrive within api.request_timeout_ms."),
            "429": problem("Too many requests without valid credentials from this address."),
            "503": problem("MongoDB is unavailable, or api.max_connections are open."),
        } } }),
    );
    let _ = paths.insert(
        "/products/{product}".into(),
        json!({ "parameters": [product], "get": { "summary": "A product's declaration, contracts with SLAs and latest quality window per topic (needs read).", "tags": ["products"],
            "responses": guarded(responses(&[("200", ok("The data product.", "ProductDetail"))])) } }),
    );
    let _ = paths.insert(
        "/{product}/data/{record_id}".into(),
        json!({ "parameters": [product, record_id], "get": {
            "summary": "The latest version of a record, checked against its contract (needs read).",
            "tags": ["data"],
            "responses": guarded(responses(&[
                ("200", ok("The record's fields and `_meta` (key, contract, version, topic, partition, offset).", "Record")),
                ("500", problem("The stored record no longer satisfies its contract; `violations` lists why.")),
            ])) } }),
    );
    let _ = paths.insert(
        "/{product}/lineage/{record_id}".into(),
        json!({ "parameters": [product, record_id], "get": { "summary": "Upstream and downstream lineage of a record (needs read).", "tags": ["lineage"],
            "responses": guarded(responses(&[("200", ok("Lineage documents.", "Lineage"))])) } }),
    );
    // One search path per product: the request schema depends on the product's contract.
    for name in &names {
        let _ = paths.insert(
            format!("/{name}/search"),
            json!({ "post": search_op(&format!("Search the latest versions of {name} records with a typed filter (/{{product}}/search; needs read: a search changes nothing)."), name) }),
        );
    }
    let _ = paths.insert(
        "/{product}/validate".into(),
        json!({ "parameters": [product], "post": {
            "summary": "Validate records on demand, as `meshguard check` would: valid, violations with paths, completeness, freshness (the seed's validateDataContract; needs read, stores nothing).",
            "tags": ["quality"],
            "parameters": [
                { "name": "contract", "in": "query", "required": false, "description": "Contract of the product (default: its first).", "schema": { "type": "string" } },
                { "name": "now", "in": "query", "required": false, "description": "Measure freshness as of this RFC 3339 instant (default: now).", "schema": { "type": "string", "format": "date-time" } },
            ],
            "requestBody": { "required": true, "description": format!("One record (application/json), an NDJSON batch (application/x-ndjson) or an Avro object container file (avro/binary); at most {} bytes and {} records.", super::validate::MAX_VALIDATE_BYTES, super::validate::MAX_VALIDATE_RECORDS),
                "content": {
                    "application/json": { "schema": {} },
                    "application/x-ndjson": { "schema": { "type": "string" } },
                    "avro/binary": { "schema": { "type": "string", "format": "binary" } },
                } },
            "responses": guarded(responses(&[
                ("200", ok("The check report and one verdict per record.", "ValidationReport")),
                ("400", problem("Empty or unreadable body, too many records, or a bad `now`.")),
                ("404", problem("Unknown data product, or no contract of that name (`contract`).")),
            ])) } }),
    );
    let _ = paths.insert(
        "/{product}/alerts".into(),
        json!({ "parameters": [product], "get": { "summary": "Firing alerts and the most recent alert documents (needs read).", "tags": ["quality"],
            "parameters": [{ "name": "limit", "in": "query", "required": false, "description": "How many recent alert documents (1-500, default 50).",
                "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } }],
            "responses": guarded(responses(&[
                ("200", ok("Alerts.", "Alerts")),
                ("400", problem("Invalid limit.")),
            ])) } }),
    );
    let _ = paths.insert(
        "/{product}/graphql".into(),
        json!({ "parameters": [product],
            "get": { "summary": "The product's declared GraphQL schema text (SDL), for tools (needs read).", "tags": ["products"],
                "responses": guarded(responses(&[("200", json!({ "description": "GraphQL SDL.", "content": { "application/graphql": { "schema": { "type": "string" } } } }))])) },
            "post": { "summary": "Execute a GraphQL query against the schema generated from the product's contract: record(id), search(filter, sort, limit, cursor), lineage(id); depth and complexity limited; introspection on (needs read).", "tags": ["products"],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["query"], "properties": {
                    "query": { "type": "string" }, "variables": { "type": "object", "nullable": true }, "operationName": { "type": "string", "nullable": true } } } } } },
                "responses": guarded(responses(&[
                    ("200", json!({ "description": "A GraphQL response (data and/or errors).", "content": { "application/json": { "schema": { "type": "object" } } } })),
                    ("400", problem("The body is not a GraphQL request or is larger than 64 KiB.")),
                ])) } }),
    );
    for a in aliases {
        let param = a.param.clone().unwrap_or_else(|| "id".into());
        let item = match a.kind {
            AliasKind::Record => {
                json!({ "get": record_op(&format!("Alias of /{}/data/{{record_id}} declared by {}.", a.product, a.product), &param) })
            }
            AliasKind::Status => json!({ "get": {
                "summary": format!("The status of the latest version of a {} record.", a.product),
                "tags": ["data"],
                "parameters": [path_param(&param, "The record id.")],
                "responses": guarded(responses(&[
                    ("200", json!({ "description": "The record id and its status.", "content": { "application/json": { "schema": {
                        "type": "object", "required": [param.as_str(), "status"],
                        "properties": { param.as_str(): { "type": "string" }, "status": { "nullable": true } } } } } })),
                    ("500", problem("The stored record no longer satisfies its contract.")),
                ])) } }),
            AliasKind::Search => {
                json!({ "post": search_op(&format!("Alias of /{}/search declared by {}.", a.product, a.product), &a.product) })
            }
        };
        let _ = paths.insert(a.template.clone(), item);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "meshguard data product API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Data products: {}. Every product route is authenticated (Bearer JWT HS256, RS256 or ES256, or X-Api-Key), authorized by the product's spec.access (reads, search included, need read; methods that change state need write; admin implies both) and audited. Errors are RFC 9457 problem documents.", names.join(", ")),
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearerAuth": [] }, { "apiKey": [] }],
        "tags": [{ "name": "operations" }, { "name": "products" }, { "name": "data" }, { "name": "lineage" }, { "name": "quality" }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "HS256 (shared secret), RS256 or ES256 (identity provider key from a PEM file or JWKS, by kid); claims sub (user id), iss, aud, exp, optional nbf and roles (list of strings); a crit header is refused." },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-Api-Key" },
            },
            "schemas": {
                "Problem": {
                    "type": "object", "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": { "type": "string", "format": "uri", "description": "https://meshguard.dev/problems/{invalid-request|unauthenticated|forbidden|not-found|method-not-allowed|request-timeout|rate-limited|contract-violation|unavailable|overloaded}" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "errors": { "type": "array", "items": { "type": "object", "required": ["field", "message"],
                            "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } },
                        "violations": { "type": "array", "items": { "type": "object", "properties": {
                            "path": { "type": "string" }, "keyword": { "type": "string" }, "message": { "type": "string" } } } },
                    },
                },
                "ProductList": {
                    "type": "object", "required": ["products"],
                    "properties": { "products": { "type": "array", "items": { "type": "object", "required": ["name", "domain", "owner", "version", "contracts"],
                        "properties": {
                            "name": { "type": "string" }, "domain": { "type": "string" }, "owner": { "type": "string" }, "version": { "type": "string" },
                            "description": { "type": "string", "nullable": true },
                            "contracts": { "type": "array", "items": { "type": "object", "properties": { "name": { "type": "string" }, "version": { "type": "string" } } } },
                        } } } },
                },
                "ProductDetail": {
                    "type": "object", "required": ["name", "domain", "owner", "version", "declaration", "contracts", "quality"],
                    "properties": {
                        "name": { "type": "string" }, "domain": { "type": "string" }, "owner": { "type": "string" }, "version": { "type": "string" },
                        "declaration": { "type": "object", "description": "The product YAML as JSON." },
                        "contracts": { "type": "array", "items": { "type": "object", "required": ["name", "version", "topics"], "properties": {
                            "name": { "type": "string" }, "version": { "type": "string" }, "schema": { "type": "string" },
                            "sla": { "type": "object", "description": "freshness, completeness, accuracy as declared" },
                            "topics": { "type": "array", "items": { "type": "string" } },
                            "key_field": { "type": "string", "nullable": true } } } },
                        "quality": { "type": "array", "description": "The latest quality_metrics window per topic.", "items": { "type": "object" } },
                    },
                },
                "Record": {
                    "type": "object", "required": ["_meta"], "additionalProperties": true,
                    "properties": { "_meta": { "type": "object", "properties": {
                        "key": { "type": "string" }, "version_id": { "type": "string" }, "contract": { "type": "string" }, "contract_version": { "type": "string" },
                        "topic": { "type": "string" }, "partition": { "type": "integer" }, "offset": { "type": "integer" },
                        "event_time_ms": { "type": "integer", "nullable": true } } } },
                },
                "Lineage": {
                    "type": "object", "required": ["product", "record_id", "upstream", "downstream"],
                    "description": "This product's lineage of the record only.",
                    "properties": {
                        "product": { "type": "string" }, "record_id": { "type": "string" },
                        "upstream": { "type": "array", "description": "kind source: the product's spec.sources; kind declared: spec.lineage.upstream; kind event: each version of the record (kafka topic, partition, offset, timestamp, contract, contract_version, outcome, lineage_id), in topic/partition/offset order.",
                            "items": { "type": "object", "required": ["kind"], "properties": { "kind": { "type": "string", "enum": ["source", "declared", "event"] } } } },
                        "downstream": { "type": "array", "description": "kind store: the record store with the valid versions; kind dead_letter: the dead-letter topic with the rejected versions; kind declared: spec.lineage.downstream.",
                            "items": { "type": "object", "required": ["kind"], "properties": { "kind": { "type": "string", "enum": ["store", "dead_letter", "declared"] },
                                "versions": { "type": "array", "items": { "type": "string" } } } } },
                    },
                },
                "SearchResponse": {
                    "type": "object", "required": ["product", "count", "results", "next_cursor"],
                    "properties": {
                        "product": { "type": "string" }, "count": { "type": "integer" },
                        "results": { "type": "array", "items": { "$ref": "#/components/schemas/Record" } },
                        "next_cursor": { "type": "string", "nullable": true },
                    },
                },
                "Alerts": {
                    "type": "object", "required": ["product", "firing", "recent"],
                    "properties": {
                        "product": { "type": "string" },
                        "firing": { "type": "array", "description": "Firing documents of episodes with no resolved document.", "items": { "type": "object" } },
                        "recent": { "type": "array", "items": { "type": "object" } },
                    },
                },
            },
        },
    })
}
