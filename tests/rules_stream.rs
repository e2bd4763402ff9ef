//! Business rules in `meshguard run` on the real Kafka: the loans rules sample produced to a
//! topic, each `error` rule's rejections dead-lettered with class `rule_violation` and the rule
//! named, the schema violation as before, and every rule's failures counted in the metric.

// tests/common's helpers trip this lint on the toolchain in use; the code is shared as it is.
#![allow(clippy::result_large_err)]

mod common;

use std::time::Duration;

use common::*;

/// The loans product with only `loan-schema`, bound to `topic`, without reconciliation or an
/// at-rest source (no source rows are written here).
fn loans_product(dir: &std::path::Path, topic: &str) {
    let text = std::fs::read_to_string(repo().join("config/products/loans.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let spec = doc.get_mut("spec").unwrap_or_else(|| panic!("spec"));
    if let Some(contracts) = spec.get_mut("contracts").and_then(serde_yaml::Value::as_sequence_mut) {
        contracts.truncate(1);
        if let Some(m) = contracts[0].as_mapping_mut() {
            let _ = m.remove("reconciliation");
            // Its at-rest binding names a table of `spec.sources`, removed below.
            let _ = m.remove("source");
        }
    }
    if let Some(m) = spec.as_mapping_mut() {
        let _ = m.remove("sources");
    }
    spec["apis"]["kafka"]["topics"] = serde_yaml::Value::Sequence(vec![topic.into()]);
    std::fs::write(dir.join("loans.yaml"), serde_yaml::to_string(&doc).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_dead_letters_error_rules_and_counts_every_rule() {
    let kafka = kafka();
    let topic = unique("loans-rules");
    create_topics(&kafka, &[&topic], 1).await;
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    loans_product(dir.path(), &topic);

    let sample = std::fs::read(repo().join("samples/loans-rules.ndjson")).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&[u8]> = sample.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 12);
    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka).create().unwrap_or_else(|e| panic!("{e}"));
    for line in &lines {
        let rec = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic).payload(line);
        let _ = producer.send(rec, Duration::from_secs(10)).await.unwrap_or_else(|(e, _)| panic!("{e}"));
    }

    let service = Service::start(&kafka, dir.path(), &names, &[]);
    wait_committed(&kafka, &names.group, &[&topic], 1, lines.len() as i64, Duration::from_secs(120));
    let dead = read_all(&kafka, &names.dlq, 5, Duration::from_secs(60));
    assert_eq!(dead.len(), 5);
    // Offsets are the sample's line numbers minus one.
    let mut by_offset: Vec<(i64, String, String)> = dead
        .iter()
        .map(|d| {
            let class = d.headers.get("meshguard.error.class").cloned().unwrap_or_default();
            let violations = d.headers.get("meshguard.violations").cloned().unwrap_or_default();
            (position(d).2, class, violations)
        })
        .collect();
    by_offset.sort();
    let offsets: Vec<i64> = by_offset.iter().map(|(o, _, _)| *o).collect();
    assert_eq!(offsets, [1, 2, 4, 8, 9]);
    let classes: Vec<&str> = by_offset.iter().map(|(_, c, _)| c.as_str()).collect();
    assert_eq!(classes, ["rule_violation", "rule_violation", "rule_violation", "rule_violation", "contract_violation"]);
    assert!(by_offset[0].2.contains("positive-principal") && by_offset[0].2.contains("\"keyword\":\"rule\""), "{}", by_offset[0].2);
    assert!(by_offset[3].2.contains("positive-principal") && by_offset[3].2.contains("repaid-has-update"), "{}", by_offset[3].2);

    let (code, metrics) = service.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    for (rule, severity, count) in [
        ("positive-principal", "error", 2.0),
        ("repaid-has-update", "error", 2.0),
        ("collateral-covers-principal", "error", 1.0),
        ("settlement-currency", "warn", 2.0),
        ("rate-cap", "warn", 3.0),
    ] {
        // The enforced version's rules: the shipped shadow version 2.0.0 runs the same rules in
        // `run` too and counts its failures under its own version label.
        let got = metric_sum(&metrics, "meshguard_rule_violations_total", &[("version", "1.0.0"), ("rule", rule), ("severity", severity)]);
        assert_eq!(got, count, "{rule}");
    }
    assert_eq!(metric_sum(&metrics, "meshguard_events_total", &[("outcome", "invalid")]), 5.0);
}
