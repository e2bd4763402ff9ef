//! The MongoDB reads of the API: the latest version of a record, search over latest versions,
//! alerts and quality windows (lineage: [`super::lineage`]). Filters are built here from typed values only.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};
use tracing::error;

use super::Api;
use super::problem::{FieldError, Problem};
use super::search::{self, Fields, Search};
use crate::product::Product;
use crate::sink::mongo::{ALERTS, MongoSink, QUALITY_METRICS};

/// Most alert documents read for one product.
const MAX_ALERT_DOCS: i64 = 5000;

impl Api {
    /// The latest version of a record, split into (fields, meta).
    pub(crate) async fn latest(&self, product: &str, key: &str) -> Result<Option<(serde_json::Map<String, Value>, Value)>, Problem> {
        // One read by `_id` (the key): the only filter FerretDB 1.x looks up in an index.
        let found = self
            .db
            .collection::<Document>(&MongoSink::record_store(product))
            .find_one(doc! { "_id": key })
            .projection(doc! { "_lineage": 0 })
            .await
            .map_err(unavailable)?;
        // A key seen only in invalid versions has lineage and no current version.
        Ok(found.filter(|d| d.contains_key("_meta")).map(split_record))
    }

    /// The seed's data route: the latest version, re-validated against its contract.
    pub(crate) async fn record(&self, p: &Product, key: &str) -> Result<Value, Problem> {
        let Some((fields, meta)) = self.latest(p.name(), key).await? else {
            return Err(Problem::not_found(format!("no such record in {}", p.name())));
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

    pub(crate) async fn search(&self, p: &Product, body: Result<Bytes, BytesRejection>) -> Result<Value, Problem> {
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

    /// Search over the current versions: the record store holds one document per key (its
    /// newest valid version), so the filter, sort and page are MongoDB's. Documents without a
    /// current version (keys seen only invalid) and without `_lineage` (a version document of a
    /// store written before one document per key) are left out.
    pub(crate) async fn run_search(&self, p: &Product, s: &Search) -> Result<Value, Problem> {
        let coll = self.db.collection::<Document>(&MongoSink::record_store(p.name()));
        let mut filter = doc! { "$and": [s.filter(), { "_meta": { "$exists": true }, "_lineage": { "$exists": true } }] };
        // A condition on the key narrows the read to an `_id` lookup (or range) instead of a
        // scan of the store, when every contract of the product keys its records by that field.
        if let Some(key) = key_field(p)
            && let Some(id) = s.key_filter(key)
        {
            let _ = filter.insert("_id", id);
        }
        let mut sort = Document::new();
        if let Some((f, dir)) = &s.sort {
            let _ = sort.insert(f.as_str(), *dir);
        }
        let _ = sort.insert("_id", 1);
        let mut cursor = coll
            .find(filter)
            .projection(doc! { "_lineage": 0 })
            .sort(sort)
            .skip(s.skip)
            .limit(s.limit as i64 + 1)
            .await
            .map_err(unavailable)?;
        let mut results = Vec::new();
        let mut more = false;
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
        let next = more.then(|| search::encode_cursor(s.skip + s.limit));
        Ok(json!({ "product": p.name(), "count": results.len(), "results": results, "next_cursor": next }))
    }

    pub(crate) async fn alerts(&self, product: &str, limit: i64) -> Result<Value, Problem> {
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

    pub(crate) async fn product_detail(&self, p: &Product) -> Result<Value, Problem> {
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

/// The field every contract (and contract version) of `p` keys its records by, if they agree.
fn key_field(p: &Product) -> Option<&str> {
    let mut keys =
        p.contracts.iter().flat_map(|c| std::iter::once(&**c).chain(c.versions.iter().map(|v| &**v))).map(|c| c.key_field.as_deref());
    let first = keys.next()??;
    keys.all(|k| k == Some(first)).then_some(first)
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Problem {
    error!(error = %e, "mongodb read failed");
    Problem::unavailable("MongoDB did not answer")
}

fn to_json(d: Document) -> Value {
    Bson::Document(d).into_relaxed_extjson()
}

/// Record fields without `_id`, `_meta` and `_lineage`; `_meta` (with the key and version id).
fn split_record(mut d: Document) -> (serde_json::Map<String, Value>, Value) {
    let key = d.remove("_id");
    let _ = d.remove("_lineage");
    let mut meta = match d.remove("_meta") {
        Some(Bson::Document(m)) => to_json(m),
        _ => json!({}),
    };
    meta["key"] = key.map(Bson::into_relaxed_extjson).unwrap_or(Value::Null);
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
