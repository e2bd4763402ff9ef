//! MariaDB stopped for 30 s mid-stream: nothing is lost and no false accuracy alert fires.
//! Its own test binary, because it stops the shared MariaDB that other tests use.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use mongodb::bson::doc;

fn mariadb(action: &str) {
    let status = Command::new(repo().join(format!("testcontainers/{action}"))).arg("mariadb").status().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "testcontainers/{action} mariadb failed");
}

/// Starts MariaDB again even when the test fails half-way.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        mariadb("up");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_pauses_nothing_loses_nothing_and_raises_no_false_alert() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-outage"], 3).await;
    let topic = topics.concat();
    // Source rows and events that agree, all written before the outage.
    produce_cli(
        &kafka,
        products.dir.path(),
        &topic,
        &["--count", "3000", "--invalid-ratio", "0.01", "--mismatch-ratio", "0", "--mysql", &mysql(), "--seed", "41"],
    );
    let env = [
        ("MESHGUARD__QUALITY__WINDOW_MS", "1000"),
        ("MESHGUARD__RECONCILE__GRACE_MS", "5000"),
        ("MESHGUARD__QUALITY__SILENCE_AFTER_MS", "600000"),
    ];
    let _restart = Restart;
    mariadb("down");
    let service = Service::start(&kafka, products.dir.path(), &names, &env);
    // The stream keeps flowing while the source is down: every record is committed.
    wait_committed(&kafka, &names.group, &[&topic], 3, 3000, Duration::from_secs(60));
    let (_, metrics) = service.get("/metrics").unwrap_or_default();
    assert!(metric_sum(&metrics, "meshguard_reconcile_backlog_records", &[]) > 0.0, "claims wait, unverified");
    // Hold the outage for 30 s in all (a fault's duration, not a synchronisation).
    std::thread::sleep(Duration::from_secs(30));
    mariadb("up");
    // Every valid record is then verified against the source, and all of them match.
    let valid = 3000 - sum_invalid(&service);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let windows = mongo_docs(&names.database, "quality_metrics", doc! { "topic": &topic }).await;
        if sum(&windows, "accuracy_checked") >= valid {
            assert_eq!(sum(&windows, "accuracy_matched"), valid, "everything matched once the database was back");
            assert_eq!(sum(&windows, "accuracy_missing") + sum(&windows, "accuracy_mismatched"), 0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every record was reconciled after the outage");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let alerts = read_json_until(&kafka, &names.alerts, Duration::from_secs(5), |_| true);
    assert!(alerts_of(&alerts, &topic, "accuracy", "firing").is_empty(), "no accuracy alert from an outage: {alerts:#?}");
    let lineage = lineage_docs(&names.database).await;
    assert_eq!(lineage.len(), 3000, "nothing lost");
}

fn sum_invalid(service: &Service) -> u64 {
    let (_, metrics) = service.get("/metrics").unwrap_or_default();
    metric_sum(&metrics, "meshguard_events_total", &[("outcome", "invalid")]) as u64
}
