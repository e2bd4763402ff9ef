//! `meshguard dlq replay` against the real broker: records dead-lettered by a running stream are
//! re-checked against a fixed contract and re-published to their source topic once, with their
//! key, value and headers and `meshguard.replayed: 1`; `--dry-run` and the filters publish
//! nothing; a second run replays nothing again (receipts), and a replay that the stream rejects
//! again is never replayed (loop guard).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn payment(amount: &str, currency: &str) -> String {
    format!(
        r#"{{"payment_id":"{}","customer_id":42,"amount":{amount},"currency":"{currency}","status":"COMPLETED","created_at":"2026-11-29T10:00:00Z"}}"#,
        uuid::Uuid::new_v4()
    )
}

/// A record to produce: key, payload, headers.
type Record<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Produces each record to `topic` and waits for every acknowledgement.
async fn produce(kafka: &str, topic: &str, records: &[Record<'_>]) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", kafka).create().unwrap_or_else(|e| panic!("producer: {e}"));
    for (key, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in *headers {
            h = h.insert(Header { key: k, value: Some(*v) });
        }
        let record = FutureRecord::to(topic).key(*key).payload(*payload).headers(h);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(10)).await {
            panic!("send to {topic}: {e}");
        }
    }
}

/// A config directory whose payments contract (bound to `topic`) no longer has `multipleOf` on
/// the amount: the "fixed" contract.
fn relaxed_config(topic: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let products = dir.path().join("products");
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&schemas).unwrap_or_else(|e| panic!("{e}"));
    bind_product(&products, "payments.yaml", &[topic]);
    for entry in std::fs::read_dir(repo().join("schemas")).unwrap_or_else(|e| panic!("{e}")).flatten() {
        let _ = std::fs::copy(entry.path(), schemas.join(entry.file_name())).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schemas.join("payment-schema.json")).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let removed = schema["properties"]["amount"].as_object_mut().and_then(|a| a.remove("multipleOf"));
    assert!(removed.is_some(), "the shipped payment schema has multipleOf on amount");
    std::fs::write(schemas.join("payment-schema.json"), schema.to_string()).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// Runs `meshguard dlq replay --format json ARGS` with the config in `config`; its summary.
fn replay(s: &Scenario, config: &Path, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(binary())
        .args(["dlq", "replay", "--format", "json"])
        .args(args)
        .current_dir(repo())
        .env("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS", &s.kafka)
        .env("MESHGUARD__KAFKA__GROUP_ID", &s.names.group)
        .env("MESHGUARD__PRODUCTS__DIR", config.join("products"))
        .env("MESHGUARD__SCHEMAS__DIR", config.join("schemas"))
        .env("MESHGUARD__TOPICS__DLQ", &s.names.dlq)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "dlq replay {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn counts(summary: &serde_json::Value) -> [u64; 5] {
    ["read", "replayed", "still_failing", "skipped", "outside_filter"].map(|k| summary[k].as_u64().unwrap_or(u64::MAX))
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_what_the_fixed_contract_accepts_exactly_once() {
    let s = Scenario::payments(&["pay-replay"], 2).await;
    let topic = s.topics[0].clone();
    let _stream = s.start(&[("MESHGUARD__MYSQL__ENABLED", "false")]);

    // One valid record; two that break only `multipleOf` (the fix accepts them); one with a
    // lower-case currency and one that is not JSON (the fix still rejects them).
    let (cents_1, cents_2, valid) = (payment("12.345", "EUR"), payment("0.001", "USD"), payment("10.00", "EUR"));
    let currency = payment("5.00", "eur");
    produce(
        &s.kafka,
        &topic,
        &[
            ("k-valid", &valid, &[]),
            ("k-cents-1", &cents_1, &[("trace-id", "t-1")]),
            ("k-cents-2", &cents_2, &[]),
            ("k-currency", &currency, &[]),
            ("k-json", "{\"payment_id\": ", &[]),
        ],
    )
    .await;
    let dead = read_all(&s.kafka, &s.names.dlq, 4, Duration::from_secs(120));
    assert_eq!(dead.len(), 4, "the stream dead-letters the four invalid records: {dead:?}");
    // Two dead letters the stream never wrote: one without meshguard's headers, one from a topic
    // no contract binds any more. Each is skipped with its reason, never dropped silently.
    produce(
        &s.kafka,
        &s.names.dlq,
        &[
            ("k-bare", &valid, &[]),
            ("k-unbound", &valid, &[("meshguard.source.topic", "retired.topic"), ("meshguard.product", "payments-data-product")]),
        ],
    )
    .await;

    let fixed = relaxed_config(&topic);
    let dir = fixed.path();

    // Filters and --dry-run publish nothing (checked below by the exact count on the source topic).
    let other = replay(&s, dir, &["--dry-run", "--product", "loans-data-product"], &[]);
    // The dead letter without headers names no product: it is skipped, not left out.
    assert_eq!(counts(&other), [6, 0, 0, 1, 5], "{other:#}");
    let old = replay(&s, dir, &["--dry-run", "--until", "2000-01-01T00:00:00Z"], &[]);
    assert_eq!(counts(&old), [6, 0, 0, 0, 6], "{old:#}");
    let dry = replay(&s, dir, &["--dry-run"], &[]);
    assert_eq!(counts(&dry), [6, 2, 2, 2, 0], "{dry:#}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["still_failing_by_class"], serde_json::json!({"contract_violation": 1, "json_syntax": 1}), "{dry:#}");
    assert_eq!(dry["skipped_by_reason"], serde_json::json!({"missing_headers": 1, "source_not_bound": 1}), "{dry:#}");
    // Per product (the dead letter without headers names none: totals only).
    assert_eq!(
        dry["by_product"],
        serde_json::json!({"payments-data-product": {"replayed": 2, "still_failing": 2, "skipped": 1}}),
        "{dry:#}"
    );

    // The real run, exactly-once: replays and receipts commit in one transaction.
    let first = replay(&s, dir, &[], &[("MESHGUARD__DELIVERY__EXACTLY_ONCE", "true")]);
    assert_eq!(counts(&first), [6, 2, 2, 2, 0], "{first:#}");
    assert_eq!(first["exactly_once"], true);
    assert_eq!(first["replayed_by_topic"][&topic], 2);
    assert_eq!(first["by_product"]["payments-data-product"]["replayed"], 2, "{first:#}");

    // The source topic holds the 5 originals and exactly 2 replays: original key, value and
    // headers, plus meshguard.replayed: 1.
    let source = read_all(&s.kafka, &topic, 7, Duration::from_secs(60));
    assert_eq!(source.len(), 7, "5 originals + 2 replays, nothing from the dry runs");
    let replays: Vec<&DeadLetter> = source.iter().filter(|r| r.headers.contains_key("meshguard.replayed")).collect();
    assert_eq!(replays.len(), 2);
    for r in &replays {
        assert_eq!(r.headers.get("meshguard.replayed").map(String::as_str), Some("1"));
        assert!(!r.headers.contains_key("meshguard.source.topic"), "the reason headers are not replayed: {:?}", r.headers);
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let payload = String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned();
        match key.as_str() {
            "k-cents-1" => {
                assert_eq!(payload, cents_1);
                assert_eq!(r.headers.get("trace-id").map(String::as_str), Some("t-1"), "the record's own headers are kept");
            }
            "k-cents-2" => assert_eq!(payload, cents_2),
            other => panic!("unexpected replay of {other}"),
        }
    }

    // The stream still holds the old contract: it rejects both replays again, and their dead
    // letters keep meshguard.replayed (the loop guard's mark).
    let dead = read_all(&s.kafka, &s.names.dlq, 8, Duration::from_secs(120));
    assert_eq!(dead.len(), 8, "4 + 2 written by the test + 2 replays rejected again");
    assert_eq!(dead.iter().filter(|d| d.headers.get("meshguard.replayed").is_some_and(|v| v == "1")).count(), 2);

    // Run again (at-least-once): nothing is replayed twice. The two replayed dead letters have
    // receipts, the two re-rejected replays are loop-guarded, the two still fail.
    let second = replay(&s, dir, &[], &[]);
    assert_eq!(counts(&second), [8, 0, 2, 6, 0], "{second:#}");
    assert_eq!(
        second["skipped_by_reason"],
        serde_json::json!({"already_replayed": 2, "failed_after_replay": 2, "missing_headers": 1, "source_not_bound": 1}),
        "{second:#}"
    );
    assert_eq!(
        second["by_product"],
        serde_json::json!({"payments-data-product": {"replayed": 0, "still_failing": 2, "skipped": 5}}),
        "{second:#}"
    );
    let source = read_all(&s.kafka, &topic, 7, Duration::from_secs(30));
    assert_eq!(source.len(), 7, "the second run published nothing");
}
