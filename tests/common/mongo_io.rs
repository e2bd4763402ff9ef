//! The document store as a test reads it.

use super::{START_HINT, mongodb};

/// Every document of `collection` in `database` matching `filter`, as JSON.
pub async fn mongo_docs(database: &str, collection: &str, filter: bson::Document) -> Vec<serde_json::Value> {
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("MongoDB: {e}: {START_HINT}"));
    let mut cursor =
        client.database(database).collection::<bson::Document>(collection).find(filter).await.unwrap_or_else(|e| panic!("find: {e}"));
    let mut out = Vec::new();
    while cursor.advance().await.unwrap_or_else(|e| panic!("cursor: {e}")) {
        let d = cursor.deserialize_current().unwrap_or_else(|e| panic!("{e}"));
        out.push(bson::Bson::Document(d).into_relaxed_extjson());
    }
    out
}

/// Alerts of `topic` for `metric` in `state` among `alerts`.
pub fn alerts_of<'a>(alerts: &'a [serde_json::Value], topic: &str, metric: &str, state: &str) -> Vec<&'a serde_json::Value> {
    alerts.iter().filter(|a| a["topic"] == topic && a["metric"] == metric && a["state"] == state).collect()
}

/// Sum of a numeric field over documents.
pub fn sum(docs: &[serde_json::Value], field: &str) -> u64 {
    docs.iter()
        .filter_map(|d| {
            d[field]
                .as_u64()
                .or_else(|| d[field].as_i64().map(|v| v as u64))
                .or_else(|| d[field]["$numberLong"].as_str().and_then(|s| s.parse().ok()))
        })
        .sum()
}

/// Every lineage entry in `database`, in the seed's `data_lineage` shape with `_id` = its
/// lineage id: the entries folded into the record stores' documents (`records.*`, `_lineage`)
/// and the `data_lineage` documents of records without a key.
pub async fn lineage_docs(database: &str) -> Vec<serde_json::Value> {
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("MongoDB: {e}: {START_HINT}"));
    let names = client.database(database).list_collection_names().await.unwrap_or_else(|e| panic!("list collections: {e}"));
    let mut out = mongo_docs(database, "data_lineage", bson::doc! {}).await;
    for store in names.iter().filter(|n| n.starts_with("records.")) {
        for d in mongo_docs(database, store, bson::doc! {}).await {
            for mut entry in d["_lineage"].as_array().cloned().unwrap_or_default() {
                entry["_id"] = entry["lineage_id"].clone();
                out.push(entry);
            }
        }
    }
    out
}
