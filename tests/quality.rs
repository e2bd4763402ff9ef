//! Accuracy, windowed quality, alerts and lineage against the real Kafka, MariaDB and
//! MongoDB-wire servers, each with exact counts.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::doc;

/// Short windows and one good window to resolve, so episodes play out in seconds.
const FAST: &[(&str, &str)] = &[
    ("MESHGUARD__QUALITY__WINDOW_MS", "1000"),
    ("MESHGUARD__QUALITY__ALERT_RESOLVE_AFTER", "1"),
    ("MESHGUARD__QUALITY__SILENCE_AFTER_MS", "600000"),
    ("MESHGUARD__RECONCILE__GRACE_MS", "3000"),
];

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_amounts_fire_an_accuracy_alert_that_resolves() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-acc"], 1).await;
    let topic = topics.concat();
    // Half of the source rows disagree with their events.
    produce_cli(
        &kafka,
        products.dir.path(),
        &topic,
        &["--count", "200", "--invalid-ratio", "0", "--mismatch-ratio", "0.5", "--mysql", &mysql(), "--seed", "11"],
    );
    let service = Service::start(&kafka, products.dir.path(), &names, FAST);
    let alerts =
        read_json_until(&kafka, &names.alerts, Duration::from_secs(90), |a| !alerts_of(a, &topic, "accuracy", "firing").is_empty());
    let firing = alerts_of(&alerts, &topic, "accuracy", "firing")[0].clone();
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["expected"], ">= 99.999%");
    assert_eq!(firing["product"], "payments-data-product");
    assert!(firing["sample_record_ids"].as_array().is_some_and(|s| !s.is_empty()), "{firing}");
    // Now an accurate stream: the episode resolves, under the same id.
    produce_cli(
        &kafka,
        products.dir.path(),
        &topic,
        &["--count", "300", "--invalid-ratio", "0", "--mismatch-ratio", "0", "--mysql", &mysql(), "--seed", "12"],
    );
    let alerts =
        read_json_until(&kafka, &names.alerts, Duration::from_secs(90), |a| !alerts_of(a, &topic, "accuracy", "resolved").is_empty());
    let resolved = alerts_of(&alerts, &topic, "accuracy", "resolved")[0].clone();
    assert_eq!(resolved["id"], firing["id"], "one alert per episode");
    assert_eq!(alerts_of(&alerts, &topic, "accuracy", "firing").len(), 1, "fired once, not per event or per window");
    // MongoDB holds the episode too.
    let id = firing["id"].as_str().unwrap_or_default().to_owned();
    let stored = mongo_docs(&names.database, "data_quality_alerts", doc! { "id": &id }).await;
    assert!(stored.iter().any(|d| d["state"] == "firing") && stored.iter().any(|d| d["state"] == "resolved"), "{stored:#?}");
    // Every record was reconciled exactly once: 100 mismatched of 200, then 300 matched.
    wait_for_windows(&names.database, &topic, |w| sum(w, "accuracy_checked") == 500).await;
    let windows = mongo_docs(&names.database, "quality_metrics", doc! { "topic": &topic }).await;
    let mismatched = sum(&windows, "accuracy_mismatched");
    assert!((60..=140).contains(&mismatched), "about half of the first 200: {mismatched}");
    assert_eq!(sum(&windows, "accuracy_matched") + mismatched, 500);
    assert_eq!(sum(&windows, "accuracy_missing"), 0);
    drop(service);
}

async fn wait_for_windows(database: &str, topic: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let windows = mongo_docs(database, "quality_metrics", doc! { "topic": topic }).await;
        if done(&windows) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "quality windows of {topic} never met the condition: {:#?}",
            windows.iter().rev().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn late_source_rows_within_grace_are_not_inaccurate_and_absent_ones_become_missing() {
    let kafka = kafka();
    let (late, never) = (unique("pay-late"), unique("pay-never"));
    create_topics(&kafka, &[&late, &never], 1).await;
    let names = Names::new();
    let products = Products::payments(&[&late, &never]);
    // Events first, no source rows yet.
    let sent_late = produce_payments(&kafka, &[&late], 100, 0.0, 21).await;
    let _ = produce_payments(&kafka, &[&never], 80, 0.0, 22).await;
    let mut env = FAST.to_vec();
    env.retain(|(k, _)| *k != "MESHGUARD__RECONCILE__GRACE_MS");
    env.push(("MESHGUARD__RECONCILE__GRACE_MS", "8000"));
    let _service = Service::start(&kafka, products.dir.path(), &names, &env);
    wait_committed(&kafka, &names.group, &[&late, &never], 1, 180, Duration::from_secs(60));
    // The late rows arrive well within the grace period.
    write_source_rows(sent_late.len(), 21).await;
    wait_for_windows(&names.database, &never, |w| sum(w, "accuracy_missing") == 80).await;
    wait_for_windows(&names.database, &late, |w| sum(w, "accuracy_matched") == 100).await;
    let late_windows = mongo_docs(&names.database, "quality_metrics", doc! { "topic": &late }).await;
    assert_eq!(sum(&late_windows, "accuracy_missing") + sum(&late_windows, "accuracy_mismatched"), 0);
    let alerts =
        read_json_until(&kafka, &names.alerts, Duration::from_secs(30), |a| !alerts_of(a, &never, "accuracy", "firing").is_empty());
    assert!(alerts_of(&alerts, &late, "accuracy", "firing").is_empty(), "replication lag is not an inaccuracy");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_incomplete_and_silent_topics_fire_their_alerts() {
    let kafka = kafka();
    let (stale, broken, silent) = (unique("pay-stale"), unique("pay-broken"), unique("pay-silent"));
    create_topics(&kafka, &[&stale, &broken, &silent], 1).await;
    let names = Names::new();
    let products = Products::payments(&[&stale, &broken, &silent]);
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let hour_ago = meshguard::generate::rfc3339(hour_ago);
    produce_cli(&kafka, products.dir.path(), &stale, &["--count", "100", "--invalid-ratio", "0", "--now", &hour_ago]);
    produce_cli(&kafka, products.dir.path(), &broken, &["--count", "200", "--invalid-ratio", "0.5"]);
    produce_cli(&kafka, products.dir.path(), &silent, &["--count", "10", "--invalid-ratio", "0"]);
    let mut env = FAST.to_vec();
    env.retain(|(k, _)| *k != "MESHGUARD__QUALITY__SILENCE_AFTER_MS");
    env.push(("MESHGUARD__QUALITY__SILENCE_AFTER_MS", "4000"));
    env.push(("MESHGUARD__MYSQL__ENABLED", "false"));
    let _service = Service::start(&kafka, products.dir.path(), &names, &env);
    let alerts = read_json_until(&kafka, &names.alerts, Duration::from_secs(90), |a| {
        !alerts_of(a, &stale, "freshness", "firing").is_empty()
            && !alerts_of(a, &broken, "completeness", "firing").is_empty()
            && !alerts_of(a, &broken, "validity", "firing").is_empty()
            && !alerts_of(a, &silent, "silence", "firing").is_empty()
    });
    let f = alerts_of(&alerts, &stale, "freshness", "firing")[0];
    assert_eq!(f["expected"], "p99 <= 1s");
    assert!(f["actual"].as_str().is_some_and(|a| a.starts_with("p99 36")), "about an hour: {f}");
    assert!(alerts_of(&alerts, &stale, "completeness", "firing").is_empty());
    for (topic, metric) in [(&stale, "freshness"), (&broken, "completeness"), (&broken, "validity"), (&silent, "silence")] {
        assert_eq!(alerts_of(&alerts, topic, metric, "firing").len(), 1, "{topic} {metric} fired once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_leave_lineage_and_record_store_as_an_uninterrupted_run() {
    let kafka = kafka();
    let topic = unique("pay-lineage");
    create_topics(&kafka, &[&topic], 3).await;
    let products = Products::payments(&[&topic]);
    // Repeated keys: updates of the same payments, so the store keeps the latest per key.
    // The same seed again: the first 2,000 payments once more, with newer event times.
    let mut sent = produce_payments(&kafka, &[&topic], 6_000, 0.02, 31).await;
    let first_valid = sent.iter().filter(|s| s.valid).count();
    sent.extend(produce_payments(&kafka, &[&topic], 2_000, 0.02, 31).await);
    let total = 8_000;
    let env = [("MESHGUARD__MYSQL__ENABLED", "false"), ("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "300")];

    let calm = Names::new();
    {
        let _s = Service::start(&kafka, products.dir.path(), &calm, &env);
        wait_committed(&kafka, &calm.group, &[&topic], 3, total, Duration::from_secs(180));
    }
    let crashy = Names::new();
    for _ in 0..2 {
        let s = Service::start(&kafka, products.dir.path(), &crashy, &env);
        let before = committed_total(&kafka, &crashy.group, &[&topic], 3);
        wait_committed(&kafka, &crashy.group, &[&topic], 3, before + 1_500, Duration::from_secs(120));
        s.signal(9);
    }
    {
        let _s = Service::start(&kafka, products.dir.path(), &crashy, &env);
        wait_committed(&kafka, &crashy.group, &[&topic], 3, total, Duration::from_secs(180));
    }
    for names in [&calm, &crashy] {
        let lineage = lineage_docs(&names.database).await;
        assert_eq!(lineage.len() as i64, total, "exactly one lineage document per input record");
    }
    // The processing times and dead-letter topics (one per run) differ; nothing else may.
    let store = |docs: Vec<serde_json::Value>| {
        let mut v: Vec<String> = docs
            .into_iter()
            .map(|mut d| {
                if let Some(m) = d.get_mut("_meta").and_then(|m| m.as_object_mut()) {
                    let _ = m.remove("updated_at");
                }
                for e in d["_lineage"].as_array_mut().into_iter().flatten() {
                    if let Some(e) = e.as_object_mut() {
                        let _ = e.remove("created_at");
                        if e["transformation"]["outcome"] == "invalid" {
                            let _ = e.remove("destination");
                        }
                    }
                }
                d.to_string()
            })
            .collect();
        v.sort();
        v
    };
    let collection = meshguard::sink::mongo::MongoSink::record_store("payments-data-product");
    let calm_docs = mongo_docs(&calm.database, &collection, doc! {}).await;
    let current: std::collections::HashSet<String> =
        calm_docs.iter().filter(|d| d.get("_meta").is_some()).filter_map(|d| d["_id"].as_str().map(str::to_owned)).collect();
    assert_eq!(current.len(), first_valid, "one document per payment; the repeats are newer versions of the same keys");
    let repeated = calm_docs.iter().filter(|d| d["_lineage"].as_array().is_some_and(|l| l.len() == 2)).count();
    assert!(repeated > 1_500, "the 2,000 repeated payments have two versions in their lineage: {repeated}");
    let a = store(calm_docs);
    let b = store(mongo_docs(&crashy.database, &collection, doc! {}).await);
    assert!(!a.is_empty());
    assert_eq!(a, b, "the record store after crashes equals the uninterrupted one");
}

/// A topic deleted and re-created starts its offsets at 0 again. The new records' lineage and
/// record versions are written, not taken for replays of the old records at the same
/// positions (with `topic/partition/offset` ids, 0 of them were).
#[tokio::test(flavor = "multi_thread")]
async fn lineage_of_a_re_created_topic_is_not_taken_for_replays() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-recreate"], 1).await;
    let topic = topics.concat();
    let first = produce_payments(&kafka, &[&topic], 300, 0.0, 71).await;
    let mut service = Service::start(&kafka, products.dir.path(), &names, &[]);
    wait_committed(&kafka, &names.group, &[&topic], 1, first.len() as i64, Duration::from_secs(120));
    service.signal(15);
    assert_eq!(service.wait(Duration::from_secs(60)), Some(0));

    recreate_topic(&kafka, &topic).await;
    let second = produce_payments(&kafka, &[&topic], 300, 0.0, 72).await;
    assert!(second.iter().all(|s| s.offset < 300), "the re-created topic starts at offset 0 again");
    // A group of its own: the first group's offsets belong to the deleted topic.
    let again = Names {
        group: unique("g"),
        dlq: names.dlq.clone(),
        alerts: names.alerts.clone(),
        lineage: names.lineage.clone(),
        database: names.database.clone(),
    };
    let service = Service::start(&kafka, products.dir.path(), &again, &[]);
    wait_committed(&kafka, &again.group, &[&topic], 1, second.len() as i64, Duration::from_secs(120));
    drop(service);

    let lineage = lineage_docs(&names.database).await.into_iter().filter(|d| d["source"]["topic"] == topic.as_str()).collect::<Vec<_>>();
    assert_eq!(lineage.len(), first.len() + second.len(), "one lineage document per record of both incarnations");
    let records = mongo_docs(&names.database, "records.payments-data-product", doc! {}).await;
    // Every payment of either incarnation has its own id (other seeds), and all are valid.
    assert_eq!(records.len(), first.len() + second.len(), "one record per payment of both incarnations");
    let versions: usize = records.iter().map(|d| d["_lineage"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(versions, first.len() + second.len(), "every record of both incarnations in its key's lineage");
}

/// Deletes `topic` and creates it again (1 partition) once the broker has let go of it.
async fn recreate_topic(kafka: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", kafka).create().unwrap_or_else(|e| panic!("admin: {e}"));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.delete_topics(&[topic], &opts).await.unwrap_or_else(|e| panic!("delete {topic}: {e}")) {
        r.unwrap_or_else(|(t, e)| panic!("delete {t}: {e}"));
    }
    // Creation fails while the deletion is still under way; retried until it succeeds.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        let results = admin.create_topics([&new], &opts).await.unwrap_or_else(|e| panic!("create {topic}: {e}"));
        match results.into_iter().next() {
            Some(Ok(_)) => return,
            Some(Err((_, e))) if std::time::Instant::now() < deadline => {
                eprintln!("re-creating {topic}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("re-creating {topic}: {other:?}"),
        }
    }
}
