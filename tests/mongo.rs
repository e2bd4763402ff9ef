//! The MongoDB sink against the real MongoDB-wire server (FerretDB) that `testcontainers/up`
//! starts. Each test uses a database of its own and drops it at the end.

use std::time::{Duration, Instant};

use meshguard::sink::mongo::{LINEAGE, LINEAGE_INDEXES, LineageDoc, MongoSink, MongoSinkError, StoredRecord, UpsertStats, UpsertStrategy};
use mongodb::bson::doc;
use serde_json::json;

const HINT: &str = "start it with testcontainers/up ferretdb and `source testcontainers/env`";

fn uri() -> String {
    std::env::var("MESHGUARD_TEST_MONGODB").unwrap_or_else(|_| panic!("MESHGUARD_TEST_MONGODB is not set: {HINT}"))
}

/// A sink on a fresh database (with record stores for `products`).
async fn sink(products: &[&str]) -> MongoSink {
    let uri = uri();
    let database = format!("t{}", uuid::Uuid::new_v4().simple());
    let products: Vec<String> = products.iter().map(|p| (*p).to_owned()).collect();
    MongoSink::connect(&uri, &database, &products).await.unwrap_or_else(|e| panic!("MongoDB at {uri} is not usable ({e}): {HINT}"))
}

async fn drop_db(sink: &MongoSink) {
    sink.database().drop().await.unwrap_or_else(|e| panic!("drop database: {e}"));
}

fn lineage(i: i64) -> LineageDoc {
    let valid = i % 10 != 0;
    LineageDoc {
        source_topic: "payments.created".into(),
        source_partition: (i % 3) as i32,
        source_offset: i,
        source_timestamp_ms: Some(1_700_000_000_000 + i),
        product: "payments".into(),
        contract: "payment-v1".into(),
        contract_version: "1.0.0".into(),
        record_id: Some(format!("pay-{i:05}")),
        outcome: if valid { "valid" } else { "invalid" },
        destination_collection: if valid { MongoSink::record_store("payments") } else { "datamesh.dlq".into() },
        destination_system: if valid { "mongodb" } else { "kafka" },
        processed_at: time::OffsetDateTime::now_utc(),
    }
}

fn record(key: &str, amount: i64, event_time_ms: Option<i64>, offset: i64) -> StoredRecord {
    StoredRecord {
        key: key.into(),
        record: json!({ "payment_id": key, "amount": amount, "currency": "EUR", "nested": { "a": [1, 2.5, "x", null] } }),
        event_time_ms,
        topic: "payments.updated".into(),
        partition: 0,
        offset,
        contract: "payment-v1".into(),
        contract_version: "1.0.0".into(),
    }
}

async fn stored(sink: &MongoSink, key: &str) -> serde_json::Value {
    sink.get(&MongoSink::record_store("payments"), key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .unwrap_or_else(|| panic!("{key} is not stored"))
}

#[tokio::test]
async fn lineage_replays_never_duplicate() {
    let sink = sink(&[]).await;
    let docs: Vec<LineageDoc> = (0..1000).map(lineage).collect();

    sink.write_lineage(&[]).await.unwrap_or_else(|e| panic!("empty batch: {e}"));
    // A partial batch first, so the full one mixes duplicates and new documents.
    sink.write_lineage(&docs[..400]).await.unwrap_or_else(|e| panic!("first write: {e}"));
    sink.write_lineage(&docs).await.unwrap_or_else(|e| panic!("second write: {e}"));
    sink.write_lineage(&docs).await.unwrap_or_else(|e| panic!("replay: {e}"));
    assert_eq!(sink.count(LINEAGE, doc! {}).await.unwrap_or_else(|e| panic!("count: {e}")), 1000);

    // The seed's getDataLineage query.
    let found = sink
        .count(LINEAGE, doc! { "destination.collection": "records.payments", "destination.document_id": "pay-00007" })
        .await
        .unwrap_or_else(|e| panic!("count: {e}"));
    assert_eq!(found, 1);
    assert_eq!(
        sink.count(LINEAGE, doc! { "destination.document_id": "pay-00010", "transformation.outcome": "invalid" }).await.ok(),
        Some(1)
    );
    assert_eq!(sink.count(LINEAGE, doc! { "source.record_id": "pay-00999" }).await.ok(), Some(1));

    let d = sink.get(LINEAGE, &docs[7].id()).await.unwrap_or_else(|e| panic!("get: {e}")).unwrap_or_else(|| panic!("lineage doc missing"));
    assert_eq!(d["_id"], json!("payments.created/1/7"));
    assert_eq!(d["lineage_id"], d["_id"]);
    assert_eq!(d["product"], json!("payments"));
    assert_eq!(d["source"]["system"], json!("kafka"));
    assert_eq!(d["source"]["topic"], json!("payments.created"));
    assert_eq!(d["source"]["partition"], json!(1));
    assert_eq!(d["source"]["offset"], json!(7));
    assert_eq!(d["source"]["record_id"], json!("pay-00007"));
    assert!(d["source"]["timestamp"]["$date"].is_string(), "timestamp is a BSON date: {d}");
    assert_eq!(d["destination"], json!({ "system": "mongodb", "collection": "records.payments", "document_id": "pay-00007" }));
    assert_eq!(
        d["transformation"],
        json!({ "type": "contract-validation", "contract": "payment-v1", "version": "1.0.0", "outcome": "valid" })
    );
    assert!(d["created_at"]["$date"].is_string(), "created_at is a BSON date: {d}");

    // Timing: 2000 new documents, then the same 2000 again (all duplicates).
    let more: Vec<LineageDoc> = (1000..3000).map(lineage).collect();
    let t = Instant::now();
    sink.write_lineage(&more).await.unwrap_or_else(|e| panic!("2000: {e}"));
    let fresh = t.elapsed();
    let t = Instant::now();
    sink.write_lineage(&more).await.unwrap_or_else(|e| panic!("2000 replay: {e}"));
    eprintln!("write_lineage: 2000 new in {fresh:?}, 2000 replayed in {:?}", t.elapsed());
    assert_eq!(sink.count(LINEAGE, doc! {}).await.ok(), Some(3000));

    drop_db(&sink).await;
}

#[tokio::test]
async fn record_store_keeps_the_newest() {
    let sink = sink(&["payments"]).await;
    eprintln!("detected upsert strategy: {:?}", sink.upsert_strategy());
    newest_wins(sink).await;
}

/// The atomic conditional path MongoDB uses, run against this server too (it is correct on
/// FerretDB, only slow on large stores).
#[tokio::test]
async fn record_store_keeps_the_newest_conditional() {
    newest_wins(sink(&["payments"]).await.with_upsert_strategy(UpsertStrategy::Conditional)).await;
}

#[tokio::test]
async fn record_store_keeps_the_newest_read_then_write() {
    newest_wins(sink(&["payments"]).await.with_upsert_strategy(UpsertStrategy::ReadThenWrite)).await;
}

async fn newest_wins(sink: MongoSink) {
    let store = MongoSink::record_store("payments");
    assert_eq!(store, "records.payments");
    let up = |records: Vec<StoredRecord>| {
        let sink = sink.clone();
        async move { sink.upsert_records("payments", &records).await.unwrap_or_else(|e| panic!("upsert: {e}")) }
    };

    // Newer wins, whatever the arrival order.
    let v2 = record("p1", 200, Some(2000), 5);
    let v1 = record("p1", 100, Some(1000), 9);
    assert_eq!(up(vec![v2.clone()]).await, UpsertStats { written: 1, kept_newer: 0 });
    assert_eq!(up(vec![v1.clone()]).await, UpsertStats { written: 0, kept_newer: 1 });
    let s = stored(&sink, "p1").await;
    assert_eq!(s["amount"], json!(200));
    assert_eq!(s["_id"], json!("p1"));
    assert_eq!(s["payment_id"], json!("p1"));
    assert_eq!(s["nested"], json!({ "a": [1, 2.5, "x", null] }));
    assert_eq!(s["_meta"]["event_time_ms"], json!(2000));
    assert_eq!(s["_meta"]["offset"], json!(5));
    assert_eq!(s["_meta"]["partition"], json!(0));
    assert_eq!(s["_meta"]["topic"], json!("payments.updated"));
    assert_eq!(s["_meta"]["contract"], json!("payment-v1"));
    assert_eq!(s["_meta"]["contract_version"], json!("1.0.0"));
    assert!(s["_meta"]["updated_at"]["$date"].is_string(), "updated_at is a BSON date: {s}");

    // Same event time: the greater offset wins.
    assert_eq!(up(vec![record("p1", 201, Some(2000), 6)]).await, UpsertStats { written: 1, kept_newer: 0 });
    assert_eq!(stored(&sink, "p1").await["amount"], json!(201));
    assert_eq!(up(vec![record("p1", 199, Some(2000), 4)]).await, UpsertStats { written: 0, kept_newer: 1 });

    // Replaying a batch leaves identical contents (updated_at included: nothing is rewritten).
    let batch: Vec<StoredRecord> = (0..50).map(|i| record(&format!("r{i}"), i, Some(10_000 + i), 100 + i)).collect();
    assert_eq!(up(batch.clone()).await, UpsertStats { written: 50, kept_newer: 0 });
    let before: Vec<serde_json::Value> = stored_batch(&sink, 50).await;
    assert_eq!(up(batch.clone()).await, UpsertStats { written: 0, kept_newer: 50 });
    assert_eq!(stored_batch(&sink, 50).await, before);

    // One key three times in one batch, shuffled: the newest ends up stored.
    let three = vec![record("k3", 2, Some(3000), 20), record("k3", 3, Some(3000), 21), record("k3", 1, Some(1000), 30)];
    assert_eq!(up(three).await, UpsertStats { written: 1, kept_newer: 2 });
    assert_eq!(stored(&sink, "k3").await["amount"], json!(3));
    let shuffled = vec![record("k3", 1, Some(1000), 30), record("k3", 4, Some(4000), 1), record("k3", 2, Some(3000), 20)];
    assert_eq!(up(shuffled).await, UpsertStats { written: 1, kept_newer: 2 });
    assert_eq!(stored(&sink, "k3").await["amount"], json!(4));

    // A missing event time sorts oldest: it never overwrites a timed record...
    assert_eq!(up(vec![record("k3", 99, None, 1_000_000)]).await, UpsertStats { written: 0, kept_newer: 1 });
    assert_eq!(stored(&sink, "k3").await["amount"], json!(4));
    // ...among untimed records the greater offset wins, and any timed record replaces them.
    assert_eq!(up(vec![record("u", 1, None, 10)]).await, UpsertStats { written: 1, kept_newer: 0 });
    assert_eq!(stored(&sink, "u").await["_meta"]["event_time_ms"], json!(null));
    assert_eq!(up(vec![record("u", 2, None, 11)]).await, UpsertStats { written: 1, kept_newer: 0 });
    assert_eq!(up(vec![record("u", 0, None, 9)]).await, UpsertStats { written: 0, kept_newer: 1 });
    assert_eq!(stored(&sink, "u").await["amount"], json!(2));
    assert_eq!(up(vec![record("u", 3, Some(1), 0)]).await, UpsertStats { written: 1, kept_newer: 0 });
    assert_eq!(stored(&sink, "u").await["amount"], json!(3));

    // A newer version drops fields the older one had (a replacement, not a merge).
    let mut slim = record("u", 4, Some(2), 0);
    slim.record = json!({ "payment_id": "u", "amount": 4, "_id": "ignored", "_meta": "ignored" });
    assert_eq!(up(vec![slim]).await, UpsertStats { written: 1, kept_newer: 0 });
    let s = stored(&sink, "u").await;
    assert!(s.get("currency").is_none() && s.get("nested").is_none(), "stale fields survived: {s}");
    assert_eq!(s["_id"], json!("u"));
    assert_eq!(s["_meta"]["event_time_ms"], json!(2));

    let total = 50 + 3;
    assert_eq!(sink.count(&store, doc! {}).await.ok(), Some(total));
    assert_eq!(up(Vec::new()).await, UpsertStats::default());

    drop_db(&sink).await;
}

/// With the strategy detected for this server: 2000 new keys, a replay of them, then 2000 newer
/// versions.
#[tokio::test]
async fn record_store_timing() {
    let sink = sink(&["payments"]).await;
    let store = MongoSink::record_store("payments");
    let up = |records: Vec<StoredRecord>| {
        let sink = sink.clone();
        async move { sink.upsert_records("payments", &records).await.unwrap_or_else(|e| panic!("upsert: {e}")) }
    };
    let many: Vec<StoredRecord> = (0..2000).map(|i| record(&format!("m{i}"), i, Some(50_000 + i), 1000 + i)).collect();
    let t = Instant::now();
    assert_eq!(up(many.clone()).await, UpsertStats { written: 2000, kept_newer: 0 });
    let fresh = t.elapsed();
    let t = Instant::now();
    assert_eq!(up(many.clone()).await, UpsertStats { written: 0, kept_newer: 2000 });
    let replay = t.elapsed();
    let newer: Vec<StoredRecord> =
        many.iter().map(|r| StoredRecord { event_time_ms: r.event_time_ms.map(|t| t + 1), ..r.clone() }).collect();
    let t = Instant::now();
    assert_eq!(up(newer).await, UpsertStats { written: 2000, kept_newer: 0 });
    eprintln!(
        "upsert_records ({:?}): 2000 new keys in {fresh:?}, replayed in {replay:?}, 2000 newer versions in {:?}",
        sink.upsert_strategy(),
        t.elapsed()
    );
    assert_eq!(sink.count(&store, doc! {}).await.ok(), Some(2000));
    assert_eq!(stored(&sink, "m7").await["_meta"]["event_time_ms"], json!(50_008));

    drop_db(&sink).await;
}

/// The stored documents r0..r{n}, in key order.
async fn stored_batch(sink: &MongoSink, n: i64) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(stored(sink, &format!("r{i}")).await);
    }
    // The replay check compares whole documents, updated_at included.
    assert!(out.iter().all(|d| d["_meta"]["updated_at"]["$date"].is_string()));
    out
}

#[tokio::test]
async fn put_get_round_trip() {
    let sink = sink(&[]).await;
    let window = json!({ "product": "payments", "contract": "payment-v1", "topic": "payments.created",
        "window_start": "2024-01-01T00:00:00Z", "events": 10, "completeness": 0.9, "tags": ["a", "b"], "_id": "overridden" });
    let id = "payments/payment-v1/payments.created/1704067200000";
    assert_eq!(sink.get("quality_metrics", id).await.ok(), Some(None));
    sink.put("quality_metrics", id, &window).await.unwrap_or_else(|e| panic!("put: {e}"));
    let mut expected = window.clone();
    expected["_id"] = json!(id);
    assert_eq!(sink.get("quality_metrics", id).await.ok(), Some(Some(expected.clone())));

    let mut second = window.clone();
    second["events"] = json!(12);
    second.as_object_mut().map(|o| o.remove("tags"));
    sink.put("quality_metrics", id, &second).await.unwrap_or_else(|e| panic!("put again: {e}"));
    assert_eq!(sink.count("quality_metrics", doc! {}).await.ok(), Some(1));
    let got = sink.get("quality_metrics", id).await.ok().flatten().unwrap_or_else(|| panic!("missing after second put"));
    assert_eq!(got["events"], json!(12));
    assert!(got.get("tags").is_none(), "put replaces the whole document: {got}");

    match sink.put("quality_metrics", "x", &json!([1, 2])).await {
        Err(MongoSinkError::Rejected(m)) => assert!(m.contains("object"), "{m}"),
        other => panic!("a non-object document must be rejected, got {other:?}"),
    }

    // Concurrent puts of one new id: one document, no error.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let sink = sink.clone();
        let _ = tasks.spawn(async move { sink.put("data_products", "payments", &json!({ "n": i })).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap_or_else(|e| panic!("task: {e}")).unwrap_or_else(|e| panic!("concurrent put: {e}"));
    }
    assert_eq!(sink.count("data_products", doc! {}).await.ok(), Some(1));

    drop_db(&sink).await;
}

#[tokio::test]
async fn a_closed_port_is_unavailable_fast() {
    let t = Instant::now();
    let result = MongoSink::connect("mongodb://meshguard:s3cret-pw@127.0.0.1:1/?authSource=admin", "datamesh", &[]).await;
    let elapsed = t.elapsed();
    match result {
        Err(MongoSinkError::Unavailable(m)) => {
            assert!(!m.contains("s3cret-pw"), "the password leaked: {m}");
            eprintln!("closed port: Unavailable after {elapsed:?}: {m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test]
async fn indexes_exist_and_connect_is_idempotent() {
    let sink = sink(&["payments", "loans"]).await;
    let name = sink.database().name().to_owned();
    let again = MongoSink::connect(&uri(), &name, &["payments".to_owned(), "loans".to_owned()])
        .await
        .unwrap_or_else(|e| panic!("second connect: {e}"));
    assert!(format!("{again:?}").contains(&name));

    let names = |collection: &str| {
        let db = sink.database().clone();
        let collection = collection.to_owned();
        async move {
            db.collection::<bson::Document>(&collection)
                .list_index_names()
                .await
                .unwrap_or_else(|e| panic!("list indexes of {collection}: {e}"))
        }
    };
    let lineage = names(LINEAGE).await;
    for index in LINEAGE_INDEXES {
        assert!(lineage.iter().any(|n| n == index), "{index} missing from {lineage:?}");
    }
    assert!(names("data_quality_alerts").await.iter().any(|n| n == "alerts_product_state_fired_at"));
    assert!(names("quality_metrics").await.iter().any(|n| n == "quality_product_contract_topic_window"));
    let audit = names("access_audit").await;
    assert!(audit.iter().any(|n| n == "audit_at") && audit.iter().any(|n| n == "audit_product_at"), "{audit:?}");
    assert!(names("users").await.iter().any(|n| n == "users_user_id"));
    for store in ["records.payments", "records.loans"] {
        assert!(names(store).await.iter().any(|n| n == "records_updated_at"), "{store}");
    }

    // users.user_id is unique.
    sink.put("users", "a", &json!({ "user_id": "alice", "roles": ["admin"] })).await.unwrap_or_else(|e| panic!("put user: {e}"));
    match sink.put("users", "b", &json!({ "user_id": "alice", "roles": [] })).await {
        Err(MongoSinkError::Rejected(_)) => {}
        other => panic!("a second alice must be rejected, got {other:?}"),
    }

    drop_db(&sink).await;
}

/// Two writers racing on the same new keys (say, two topics of one product on two instances):
/// whatever interleaving, every key ends at the newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_of_new_keys_end_at_the_newest() {
    for strategy in [UpsertStrategy::ReadThenWrite, UpsertStrategy::Conditional] {
        let sink = sink(&["payments"]).await.with_upsert_strategy(strategy);
        let older: Vec<StoredRecord> = (0..200).map(|i| record(&format!("k{i}"), 1, Some(1000), i)).collect();
        let newer: Vec<StoredRecord> = (0..200).map(|i| record(&format!("k{i}"), 2, Some(2000), i)).collect();
        let (a, b) = tokio::join!(sink.upsert_records("payments", &older), sink.upsert_records("payments", &newer));
        let (a, b) = (a.unwrap_or_else(|e| panic!("{strategy:?} older: {e}")), b.unwrap_or_else(|e| panic!("{strategy:?} newer: {e}")));
        assert_eq!(a.written + a.kept_newer + b.written + b.kept_newer, 400, "{a:?} {b:?}");
        assert_eq!(b.kept_newer, 0, "{strategy:?}: the newer batch is never kept out: {b:?}");
        let store = MongoSink::record_store("payments");
        assert_eq!(sink.count(&store, doc! {}).await.ok(), Some(200));
        assert_eq!(sink.count(&store, doc! { "amount": 2 }).await.ok(), Some(200), "{strategy:?}");
        eprintln!("{strategy:?} race: older {a:?}, newer {b:?}");
        drop_db(&sink).await;
    }
}
