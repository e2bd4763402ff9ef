//! `GET /{product}/lineage/{record_id}`: where a record came from and where it went, for that
//! product only.
//!
//! - upstream: the product's source systems (`spec.sources`), the services it declares
//!   (`spec.lineage.upstream`), and every version of the record as it arrived: topic,
//!   partition, offset, time, the contract that judged it and the outcome;
//! - downstream: the record store holding its valid versions, the dead-letter topic holding
//!   its rejected ones, and the consumers the product declares (`spec.lineage.downstream`).
//!
//! The versions come from the record's document in the product's record store (`_lineage`: the
//! newest `mongodb.history` versions, valid and invalid, written by `run`), read by `_id`:
//! another product's record with the same id is neither shown nor revealed to exist.

use std::collections::BTreeMap;

use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};

use super::Api;
use super::problem::Problem;
use super::store::unavailable;
use crate::product::Product;
use crate::sink::mongo::MongoSink;

/// One version of the record, as its lineage entry tells it.
#[derive(Debug, Clone)]
struct Version {
    lineage_id: String,
    topic: String,
    partition: i64,
    offset: i64,
    timestamp: Value,
    contract: Value,
    contract_version: Value,
    outcome: String,
    destination_system: String,
    destination: String,
}

fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(i)) => i64::from(*i),
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(f)) => *f as i64,
        _ => -1,
    }
}

fn text(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or_default().to_owned()
}

fn version(d: &Document) -> Version {
    let empty = Document::new();
    let source = d.get_document("source").unwrap_or(&empty);
    let destination = d.get_document("destination").unwrap_or(&empty);
    let transformation = d.get_document("transformation").unwrap_or(&empty);
    Version {
        lineage_id: d.get_str("lineage_id").or_else(|_| d.get_str("_id")).unwrap_or_default().to_owned(),
        topic: text(source, "topic"),
        partition: int(source, "partition"),
        offset: int(source, "offset"),
        timestamp: source.get("timestamp").cloned().map(Bson::into_relaxed_extjson).unwrap_or(Value::Null),
        contract: transformation.get("contract").cloned().map(Bson::into_relaxed_extjson).unwrap_or(Value::Null),
        contract_version: transformation.get("version").cloned().map(Bson::into_relaxed_extjson).unwrap_or(Value::Null),
        outcome: text(transformation, "outcome"),
        destination_system: text(destination, "system"),
        destination: text(destination, "collection"),
    }
}

impl Api {
    /// The lineage of one record of `p`; 404 when its record store knows no version of it.
    pub(crate) async fn lineage(&self, p: &Product, record_id: &str) -> Result<Value, Problem> {
        // One read by `_id`: the record's document in its product's store holds its lineage.
        let coll = self.db.collection::<Document>(&MongoSink::record_store(p.name()));
        let found = coll.find_one(doc! { "_id": record_id }).projection(doc! { "_lineage": 1 }).await.map_err(unavailable)?;
        let mut versions: Vec<Version> = found
            .as_ref()
            .and_then(|d| d.get_array("_lineage").ok())
            .map(|a| a.iter().filter_map(Bson::as_document).map(version).collect())
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(Problem::not_found(format!("no lineage for that record in {}", p.name())));
        }
        versions.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
        Ok(json!({
            "product": p.name(),
            "record_id": record_id,
            "upstream": upstream(p, &versions),
            "downstream": downstream(p, record_id, &versions),
        }))
    }
}

fn upstream(p: &Product, versions: &[Version]) -> Vec<Value> {
    let mut out = Vec::new();
    let sources = &p.decl.spec.sources;
    if let Some(m) = &sources.mysql {
        out.push(json!({ "kind": "source", "system": "mysql", "database": m.database, "tables": m.tables }));
    }
    if let Some(m) = &sources.mongodb {
        out.push(json!({ "kind": "source", "system": "mongodb", "database": m.database, "collections": m.collections }));
    }
    for u in &p.decl.spec.lineage.upstream {
        out.push(json!({ "kind": "declared", "source": u.source, "type": u.kind }));
    }
    for v in versions {
        out.push(json!({
            "kind": "event",
            "system": "kafka",
            "topic": v.topic,
            "partition": v.partition,
            "offset": v.offset,
            "timestamp": v.timestamp,
            "contract": v.contract,
            "contract_version": v.contract_version,
            "outcome": v.outcome,
            "lineage_id": v.lineage_id,
        }));
    }
    out
}

fn downstream(p: &Product, record_id: &str, versions: &[Version]) -> Vec<Value> {
    // One hop per destination, with the versions that took it, in upstream order.
    let mut hops: BTreeMap<(bool, String, String), Vec<&str>> = BTreeMap::new();
    for v in versions {
        let rejected = v.outcome != "valid";
        hops.entry((rejected, v.destination_system.clone(), v.destination.clone())).or_default().push(&v.lineage_id);
    }
    let mut out = Vec::new();
    for ((rejected, system, destination), ids) in hops {
        out.push(if rejected {
            json!({ "kind": "dead_letter", "system": system, "topic": destination, "versions": ids })
        } else {
            json!({ "kind": "store", "system": system, "collection": destination, "document_id": record_id, "versions": ids })
        });
    }
    for d in &p.decl.spec.lineage.downstream {
        out.push(json!({ "kind": "declared", "consumer": d.consumer, "type": d.kind }));
    }
    out
}
