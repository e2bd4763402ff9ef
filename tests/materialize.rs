//! The document store fed from Kafka (`mongodb.materialize = "kafka"`) against the real Kafka
//! and MongoDB-wire servers: the stream produces a lineage entry per record (and each valid
//! record's version) to `topics.records`; the materializer writes them. Killed with SIGKILL
//! mid-stream, in both delivery modes, the store ends with exactly one lineage entry per input
//! record and a current version for each valid record: nothing lost, nothing stored twice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mongodb::bson::{Document, doc};

const PARTITIONS: i32 = 3;

async fn count(database: &str, collection: &str) -> u64 {
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("MongoDB: {e}: {START_HINT}"));
    client
        .database(database)
        .collection::<Document>(collection)
        .count_documents(doc! {})
        .await
        .unwrap_or_else(|e| panic!("count {collection}: {e}: {START_HINT}"))
}

/// Lineage entries (the ids, each once) and records with a current version in the store.
async fn stored(database: &str, store: &str) -> (u64, u64) {
    let lineage = lineage_docs(database).await;
    let ids: std::collections::HashSet<String> = lineage.iter().filter_map(|d| d["_id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids.len(), lineage.len(), "a lineage entry stored twice");
    let current = mongo_docs(database, store, doc! { "_meta": { "$exists": true } }).await;
    (lineage.len() as u64, current.len() as u64)
}

/// Polls the store until it holds `lineage` entries and `versions` current records (or more:
/// then the assertion after it fails) or `within` passes.
async fn wait_store(database: &str, store: &str, lineage: u64, versions: u64, within: Duration) -> (u64, u64) {
    let deadline = Instant::now() + within;
    loop {
        let got = stored(database, store).await;
        if (got.0 >= lineage && got.1 >= versions) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn killed_mid_stream_stores_each_record_once(exactly_once: bool, tag: &str, seed: u64) {
    let s = Scenario::payments(&[tag], PARTITIONS).await;
    let records_topic = unique("records");
    let sent = s.produce(6_000, 0.02, seed).await;
    let valid = sent.iter().filter(|x| x.valid).count() as u64;
    let eos = if exactly_once { "true" } else { "false" };
    let env = [
        ("MESHGUARD__MONGODB__MATERIALIZE", "kafka"),
        ("MESHGUARD__MONGODB__MATERIALIZE_BATCH", "500"),
        ("MESHGUARD__TOPICS__RECORDS", records_topic.as_str()),
        ("MESHGUARD__DELIVERY__EXACTLY_ONCE", eos),
        ("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "300"),
        ("MESHGUARD__MYSQL__ENABLED", "false"),
    ];
    let store = "records.payments-data-product";

    // The first instance is killed once the materializer has written something, not all.
    let first = s.start(&env);
    let (l, _) = wait_store(&s.names.database, store, 1, 0, Duration::from_secs(120)).await;
    first.signal(9);
    drop(first);
    assert!(l >= 1, "the materializer wrote nothing within 120 s");
    let (before, _) = wait_store(&s.names.database, store, 0, 0, Duration::ZERO).await;
    assert!(before < sent.len() as u64, "the kill should land mid-stream ({before} lineage documents already)");

    let mut second = s.start(&env);
    s.wait_committed(sent.len() as i64, Duration::from_secs(180));
    let (lineage, versions) = wait_store(&s.names.database, store, sent.len() as u64, valid, Duration::from_secs(180)).await;
    assert_eq!(lineage, sent.len() as u64, "one lineage document per input record");
    assert_eq!(versions, valid, "one version per valid record");

    // The materializer reports what it wrote and that it has caught up.
    let (code, metrics) = second.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    assert!(metric_sum(&metrics, "meshguard_materialized_documents_total", &[("outcome", "written")]) > 0.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "meshguard_materialized_documents_total", &[("outcome", "unreadable")]), 0.0);

    // A graceful stop changes nothing: everything was already written once.
    second.signal(15);
    assert_eq!(second.wait(Duration::from_secs(60)), Some(0));
    let after = stored(&s.names.database, store).await;
    assert_eq!(after, (sent.len() as u64, valid));
}

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_materializer_killed_mid_stream_stores_each_record_once() {
    killed_mid_stream_stores_each_record_once(false, "mat-alo", 4101).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_materializer_killed_mid_stream_stores_each_record_once() {
    killed_mid_stream_stores_each_record_once(true, "mat-eos", 4102).await;
}

/// Records with many versions (6,000 events over 300 keys, ~20 each): the materializer merges
/// each key's versions into its one document (read, merged, replaced by `_id`). Killed with
/// SIGKILL mid-stream, every key ends with its newest version by (event time, offset) and
/// exactly its newest `mongodb.history` (10) lineage entries, each once.
#[tokio::test(flavor = "multi_thread")]
async fn versions_of_a_key_merge_to_the_newest_across_a_kill() {
    let s = Scenario::payments(&["mat-keys"], PARTITIONS).await;
    let records_topic = unique("records");
    let sent = s.produce_keyed(6_000, 0.0, 4104, 300).await;
    let env = [
        ("MESHGUARD__MONGODB__MATERIALIZE", "kafka"),
        ("MESHGUARD__MONGODB__MATERIALIZE_BATCH", "500"),
        ("MESHGUARD__TOPICS__RECORDS", records_topic.as_str()),
        ("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "300"),
        ("MESHGUARD__MYSQL__ENABLED", "false"),
        ("MESHGUARD__MONGODB__HISTORY", "10"),
    ];
    let store = "records.payments-data-product";
    let order = |x: &Sent| (x.event_time_ms.unwrap_or(i64::MIN), x.offset);
    let mut by_key: std::collections::HashMap<&str, Vec<&Sent>> = std::collections::HashMap::new();
    for x in &sent {
        by_key.entry(x.key.as_str()).or_default().push(x);
    }
    for versions in by_key.values_mut() {
        versions.sort_by_key(|x| std::cmp::Reverse(order(x)));
    }
    assert_eq!(by_key.len(), 300, "6,000 draws from 300 keys reach them all");

    let first = s.start(&env);
    let (l, _) = wait_store(&s.names.database, store, 1, 0, Duration::from_secs(120)).await;
    first.signal(9);
    drop(first);
    assert!(l >= 1, "the materializer wrote nothing within 120 s");

    let _second = s.start(&env);
    s.wait_committed(sent.len() as i64, Duration::from_secs(180));
    // Every key's current version is its newest one: poll until the store says so (or 180 s).
    let newest = |d: &serde_json::Value| {
        let key = d["_id"].as_str().unwrap_or_default();
        let want = by_key.get(key).and_then(|v| v.first()).map(|x| (x.topic.clone(), x.partition as i64, x.offset));
        let got = (d["_meta"]["topic"].as_str().map(str::to_owned), d["_meta"]["partition"].as_i64(), d["_meta"]["offset"].as_i64());
        want.is_some_and(|(t, p, o)| got == (Some(t), Some(p), Some(o)))
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let docs = loop {
        let docs = mongo_docs(&s.names.database, store, doc! {}).await;
        if (docs.len() == by_key.len() && docs.iter().all(newest)) || Instant::now() > deadline {
            break docs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(docs.len(), 300, "one document per key");
    for d in &docs {
        let key = d["_id"].as_str().unwrap_or_default();
        let versions = &by_key[key];
        assert!(newest(d), "{key}: stored {} but the newest sent is {:?}", d["_meta"], versions.first());
        let mut lineage: Vec<(String, i64, i64)> = d["_lineage"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let src = &e["source"];
                        (
                            src["topic"].as_str().unwrap_or_default().to_owned(),
                            src["partition"].as_i64().unwrap_or(-1),
                            src["offset"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut want: Vec<(String, i64, i64)> = versions.iter().take(10).map(|x| (x.topic.clone(), x.partition as i64, x.offset)).collect();
        lineage.sort();
        want.sort();
        assert_eq!(lineage, want, "{key}: the newest 10 lineage entries, each once");
    }
}

/// The stream does not wait for the store: with the materializer's writes slowed to a crawl
/// (one document per write), the stream still commits every input record.
#[tokio::test(flavor = "multi_thread")]
async fn the_stream_commits_without_waiting_for_the_store() {
    let s = Scenario::payments(&["mat-decoupled"], PARTITIONS).await;
    let records_topic = unique("records");
    let sent = s.produce(5_000, 0.0, 4103).await;
    let env = [
        ("MESHGUARD__MONGODB__MATERIALIZE", "kafka"),
        ("MESHGUARD__MONGODB__MATERIALIZE_BATCH", "1"),
        ("MESHGUARD__TOPICS__RECORDS", records_topic.as_str()),
        ("MESHGUARD__MYSQL__ENABLED", "false"),
    ];
    let service = s.start(&env);
    s.wait_committed(sent.len() as i64, Duration::from_secs(120));
    let written = count(&s.names.database, "records.payments-data-product").await;
    assert!(written < sent.len() as u64, "the store should still be behind the stream ({written} of {} written)", sent.len());
    let (code, metrics) = service.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    assert!(metric_sum(&metrics, "meshguard_materialize_lag_seconds", &[]) >= 0.0, "{metrics}");
    assert!(metrics.contains("meshguard_materialize_lag_seconds"), "the lag is exported");
    let (code, ready) = service.get("/readyz").unwrap_or_default();
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("document store behind the stream by"), "/readyz shows the store's lag: {ready}");
}
