//! The MongoDB sink against the real MongoDB-wire server (FerretDB) that `testcontainers/up`
//! starts. Each test uses a database of its own and drops it at the end.

use std::time::{Duration, Instant};

use meshguard::sink::mongo::{LINEAGE, LINEAGE_INDEXES, LineageDoc, MongoSink, MongoSinkError, StoredRecord};
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
        timestamp_ms: Some(1_700_000_000_000 + offset),
        contract: "payment-v1".into(),
        contract_version: "1.0.0".into(),
    }
}

async fn stored(sink: &MongoSink, id: &str) -> serde_json::Value {
    sink.get(&MongoSink::record_store("payments"), id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
        .unwrap_or_else(|| panic!("{id} is not stored"))
}

fn lineage_ids(d: &serde_json::Value) -> Vec<String> {
    d["_lineage"].as_array().map(|l| l.iter().filter_map(|e| e["lineage_id"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The record store holds one document per key (`_id` = the key): the newest valid version's
/// fields at the top level, the version in `_meta`, and the key's lineage in `_lineage`. A
/// replay writes nothing; versions of one batch become one write; a re-created topic's record
/// at a reused position is a new version, not a replay.
#[tokio::test]
async fn one_document_per_key_holds_the_newest_version_and_replays_add_nothing() {
    let sink = sink(&["payments"]).await;
    let store = MongoSink::record_store("payments");
    let versions = vec![record("p1", 100, Some(1000), 5), record("p1", 101, Some(2000), 6), record("p2", 7, None, 7)];
    sink.write_versions("payments", &versions).await.unwrap_or_else(|e| panic!("write: {e}"));
    let first = stored(&sink, "p1").await;
    sink.write_versions("payments", &versions).await.unwrap_or_else(|e| panic!("replay: {e}"));
    assert_eq!(sink.count(&store, doc! {}).await.ok(), Some(2));
    let newest = stored(&sink, "p1").await;
    assert_eq!(newest, first, "a replay changes nothing, not even updated_at");
    assert_eq!(newest["amount"], json!(101));
    assert_eq!(newest["nested"], json!({ "a": [1, 2.5, "x", null] }));
    assert_eq!(newest["_meta"]["event_time_ms"], json!(2000));
    assert_eq!(newest["_meta"]["offset"], json!(6));
    assert_eq!(newest["_meta"]["version_id"], json!("p1@payments.updated/0/6/1700000000006"));
    assert_eq!(lineage_ids(&newest), vec!["payments.updated/0/6/1700000000006", "payments.updated/0/5/1700000000005"]);
    assert_eq!(newest["_lineage"][0]["source"]["record_id"], json!("p1"));
    assert_eq!(newest["_lineage"][0]["transformation"]["outcome"], json!("valid"));
    assert_eq!(stored(&sink, "p2").await["_meta"]["event_time_ms"], json!(null));
    // An older event arriving later (another batch) joins the lineage, not the current version.
    sink.write_versions("payments", &[record("p1", 50, Some(500), 9)]).await.unwrap_or_else(|e| panic!("older: {e}"));
    let after = stored(&sink, "p1").await;
    assert_eq!(after["amount"], json!(101), "an out-of-order older event never hides the newer version");
    assert_eq!(lineage_ids(&after).len(), 3);
    // The topic re-created: the same position holds a new record (a later timestamp), which is
    // stored, not taken for a replay.
    let recreated = StoredRecord { timestamp_ms: Some(1_800_000_000_000), ..record("p1", 300, Some(3000), 6) };
    sink.write_versions("payments", &[recreated]).await.unwrap_or_else(|e| panic!("re-created: {e}"));
    let after = stored(&sink, "p1").await;
    assert_eq!(after["amount"], json!(300));
    assert_eq!(after["_meta"]["version_id"], json!("p1@payments.updated/0/6/1800000000000"));
    assert_eq!(lineage_ids(&after).len(), 4);
    sink.write_versions("payments", &[]).await.unwrap_or_else(|e| panic!("empty: {e}"));
    drop_db(&sink).await;
}

/// `mongodb.history` bounds a key's document: after 30 versions over 3 batches (some out of
/// order), it holds the 5 newest by event time, and the newest valid one is current.
#[tokio::test]
async fn history_is_bounded_and_keeps_the_newest_versions() {
    let sink = sink(&["payments"]).await.with_history(5);
    let mut all: Vec<StoredRecord> = (0..30).map(|i| record("k", i, Some(1_000 + (i * 7919) % 30), 100 + i)).collect();
    // Other keys in the same batches: new keys are inserted, "k" is merged.
    all.extend((0..20).map(|i| record(&format!("other-{i}"), i, Some(1), i)));
    for batch in all.chunks(17) {
        sink.write_versions("payments", batch).await.unwrap_or_else(|e| panic!("write: {e}"));
    }
    let k = stored(&sink, "k").await;
    let times: Vec<i64> =
        k["_lineage"].as_array().map(|l| l.iter().filter_map(|e| e["event_time_ms"].as_i64()).collect()).unwrap_or_default();
    assert_eq!(times, vec![1029, 1028, 1027, 1026, 1025], "the 5 newest, newest first");
    assert_eq!(k["_meta"]["event_time_ms"], json!(1029));
    assert_eq!(sink.count(&MongoSink::record_store("payments"), doc! {}).await.ok(), Some(21));
    drop_db(&sink).await;
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
    assert_eq!(d["_id"], json!("payments.created/1/7/1700000000007"));
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
    // The topic re-created: offsets 0.. again, records with later timestamps are new records,
    // not replays (with `topic/partition/offset` ids, every one of them was dropped).
    let recreated: Vec<LineageDoc> =
        (0..100).map(|i| LineageDoc { source_timestamp_ms: Some(1_800_000_000_000 + i), ..lineage(i) }).collect();
    sink.write_lineage(&recreated).await.unwrap_or_else(|e| panic!("re-created topic: {e}"));
    assert_eq!(sink.count(LINEAGE, doc! {}).await.ok(), Some(3100));
    sink.write_lineage(&recreated).await.unwrap_or_else(|e| panic!("re-created replay: {e}"));
    assert_eq!(sink.count(LINEAGE, doc! {}).await.ok(), Some(3100));

    drop_db(&sink).await;
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

/// FerretDB's SQLite backend reads a top-level string equality in SQL
/// (testcontainers/ferretdb/patches/string-eq.patch) and still matches as MongoDB does: an array
/// holding the string matches, a value of another type or a nested field with that text does
/// not, and conditions it cannot read in SQL (a dotted path, `$ne`) give the same answers.
#[tokio::test]
async fn string_equalities_are_read_in_sql_and_match_as_mongodb_does() {
    let sink = sink(&[]).await;
    let coll = sink.database().collection::<bson::Document>("eq");
    let docs = vec![
        doc! { "_id": "s", "status": "COMPLETED", "n": 1 },
        doc! { "_id": "arr", "status": ["PENDING", "COMPLETED"], "n": 2 },
        doc! { "_id": "other", "status": "PENDING", "n": 3 },
        doc! { "_id": "nested", "status": { "COMPLETED": "COMPLETED" }, "n": 4 },
        doc! { "_id": "int", "status": 7, "n": 5 },
        doc! { "_id": "missing", "n": 6 },
        doc! { "_id": "dotted", "a": { "status": "COMPLETED" }, "n": 7 },
        doc! { "_id": "quote", "status": "it's \"COMPLETED\"", "n": 8 },
    ];
    let _ = coll.insert_many(docs).await.unwrap_or_else(|e| panic!("insert_many: {e}"));
    let ids = |filter: bson::Document| {
        let coll = coll.clone();
        async move {
            let mut cursor = coll.find(filter.clone()).sort(doc! { "_id": 1 }).await.unwrap_or_else(|e| panic!("find {filter}: {e}"));
            let mut out = Vec::new();
            while cursor.advance().await.unwrap_or_else(|e| panic!("{e}")) {
                out.push(cursor.deserialize_current().unwrap_or_else(|e| panic!("{e}")).get_str("_id").unwrap_or_default().to_owned());
            }
            out
        }
    };
    let pushdown = |filter: bson::Document| {
        let db = sink.database().clone();
        async move {
            let explain =
                db.run_command(doc! { "explain": { "find": "eq", "filter": filter } }).await.unwrap_or_else(|e| panic!("explain: {e}"));
            explain.get_bool("filterPushdown").unwrap_or(false)
        }
    };
    // MongoDB's answer: the string itself, or an array holding it.
    assert_eq!(ids(doc! { "status": "COMPLETED" }).await, ["arr", "s"]);
    assert_eq!(ids(doc! { "status": { "$eq": "COMPLETED" } }).await, ["arr", "s"]);
    assert_eq!(ids(doc! { "$and": [{ "$and": [{ "status": { "$eq": "COMPLETED" } }] }, { "n": { "$lt": 2 } }] }).await, ["s"]);
    assert_eq!(ids(doc! { "status": "it's \"COMPLETED\"" }).await, ["quote"]);
    assert_eq!(ids(doc! { "status": "COMPLETED", "_id": { "$regex": "^a" } }).await, ["arr"]);
    assert_eq!(ids(doc! { "a.status": "COMPLETED" }).await, ["dotted"]);
    assert_eq!(ids(doc! { "status": { "$ne": "COMPLETED" } }).await, ["dotted", "int", "missing", "nested", "other", "quote"]);
    assert!(
        pushdown(doc! { "status": "COMPLETED" }).await,
        "FerretDB reads a string equality in SQL (testcontainers/ferretdb/patches/string-eq.patch; a FerretDB built before it: \
         testcontainers/down ferretdb && testcontainers/up)"
    );
    assert!(pushdown(doc! { "$and": [{ "$and": [{ "status": { "$eq": "COMPLETED" } }] }] }).await);
    assert!(!pushdown(doc! { "a.status": "COMPLETED" }).await, "a dotted path is not read in SQL");
    assert!(!pushdown(doc! { "status": 7 }).await, "only strings are");
    drop_db(&sink).await;
}
