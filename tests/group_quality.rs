//! Group-wide quality (`quality.scope = "group"`) against the real Kafka, MariaDB and
//! MongoDB-wire servers: several instances of `meshguard run`, one window per (binding, period)
//! with no instance in its id, exact volumes, one alert episode whatever the instance count, and
//! an owner killed with SIGKILL while the episode fires.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use mongodb::bson::doc;

/// Group scope, short windows, one good window to resolve.
fn group_env(names: &Names, tag: &str) -> Vec<(String, String)> {
    vec![
        ("MESHGUARD__QUALITY__SCOPE".into(), "group".into()),
        ("MESHGUARD__QUALITY__WINDOW_MS".into(), "2000".into()),
        ("MESHGUARD__QUALITY__LATENESS_MS".into(), "3000".into()),
        ("MESHGUARD__QUALITY__ALERT_RESOLVE_AFTER".into(), "1".into()),
        ("MESHGUARD__QUALITY__SILENCE_AFTER_MS".into(), "600000".into()),
        ("MESHGUARD__RECONCILE__GRACE_MS".into(), "3000".into()),
        ("MESHGUARD__TOPICS__PARTIALS".into(), format!("{}.partials.{tag}", names.alerts)),
        ("MESHGUARD__TOPICS__QUALITY_STATE".into(), format!("{}.state.{tag}", names.alerts)),
    ]
}

fn start(s: &Scenario, env: &[(String, String)]) -> Service {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    s.start(&refs)
}

async fn windows_until(
    database: &str,
    topic: &str,
    within: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let windows = mongo_docs(database, "quality_metrics", doc! { "topic": topic }).await;
        if done(&windows) {
            return windows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "group windows of {topic} never met the condition (volume so far {}): {:#?}",
            sum(&windows, "volume"),
            windows.iter().rev().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One document per window: no instance in any id, no window twice.
fn assert_one_document_per_window(windows: &[serde_json::Value]) {
    let mut per_start: BTreeMap<String, usize> = BTreeMap::new();
    for w in windows {
        assert!(w.get("instance").is_none(), "a group window names no instance: {w}");
        *per_start.entry(w["window_start"].to_string()).or_default() += 1;
    }
    assert!(per_start.values().all(|n| *n == 1), "one document per window: {per_start:?}");
}

fn produce_phase(s: &Scenario, topic: &str, count: usize, mismatch: &str, seed: u64) {
    let (count, seed) = (count.to_string(), seed.to_string());
    produce_cli(
        &s.kafka,
        s.products.dir.path(),
        topic,
        &["--count", &count, "--invalid-ratio", "0", "--mismatch-ratio", mismatch, "--mysql", &mysql(), "--seed", &seed],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_report_one_window_and_one_accuracy_episode() {
    let s = Scenario::payments(&["pay-group"], 12).await;
    let topic = s.topics.concat();
    let env = group_env(&s.names, "a");
    let services: Vec<Service> = (0..3).map(|_| start(&s, &env)).collect();
    for svc in &services {
        svc.wait_ready(Duration::from_secs(60));
    }
    // Healthy, then 5% of the source rows disagree, then healthy again.
    produce_phase(&s, &topic, 600, "0", 31);
    windows_until(&s.names.database, &topic, Duration::from_secs(120), |w| sum(w, "volume") == 600).await;
    produce_phase(&s, &topic, 600, "0.05", 32);
    let alerts =
        read_json_until(&s.kafka, &s.names.alerts, Duration::from_secs(120), |a| !alerts_of(a, &topic, "accuracy", "firing").is_empty());
    let firing = alerts_of(&alerts, &topic, "accuracy", "firing")[0].clone();
    produce_phase(&s, &topic, 600, "0", 33);
    let alerts =
        read_json_until(&s.kafka, &s.names.alerts, Duration::from_secs(120), |a| !alerts_of(a, &topic, "accuracy", "resolved").is_empty());
    let ids: std::collections::BTreeSet<&str> =
        alerts.iter().filter(|a| a["topic"] == topic.as_str() && a["metric"] == "accuracy").filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one accuracy episode for the group, not one per instance: {ids:?}");
    assert_eq!(alerts_of(&alerts, &topic, "accuracy", "resolved")[0]["id"], firing["id"]);
    let id = firing["id"].as_str().unwrap_or_default().to_owned();
    let stored = mongo_docs(&s.names.database, "data_quality_alerts", doc! { "id": &id }).await;
    assert_eq!(stored.len(), 2, "one firing and one resolved document: {stored:#?}");
    // Every event counted exactly once over the group's windows, and every claim decided once.
    let windows = windows_until(&s.names.database, &topic, Duration::from_secs(120), |w| {
        sum(w, "volume") + sum(w, "late") >= 1800 && sum(w, "accuracy_checked") >= 1800
    })
    .await;
    assert_eq!(sum(&windows, "volume") + sum(&windows, "late"), 1800, "exact volume");
    assert_eq!(sum(&windows, "accuracy_checked"), 1800, "every claim decided once");
    assert_one_document_per_window(&windows);
    drop(services);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_owner_while_an_alert_fires_keeps_one_episode_and_exact_volume() {
    let s = Scenario::payments(&["pay-owner"], 12).await;
    let topic = s.topics.concat();
    let env = group_env(&s.names, "b");
    let mut services: Vec<Service> = (0..2).map(|_| start(&s, &env)).collect();
    for svc in &services {
        svc.wait_ready(Duration::from_secs(60));
    }
    produce_phase(&s, &topic, 400, "0.5", 41);
    let alerts =
        read_json_until(&s.kafka, &s.names.alerts, Duration::from_secs(120), |a| !alerts_of(a, &topic, "accuracy", "firing").is_empty());
    let firing = alerts_of(&alerts, &topic, "accuracy", "firing")[0].clone();
    // Every instance is killed while the episode fires: whichever owned the windows is gone,
    // with the alert state only in the state topic. A fresh pair takes over.
    for svc in &services {
        svc.signal(9);
    }
    for svc in &mut services {
        let _ = svc.wait(Duration::from_secs(10));
    }
    drop(services);
    let services: Vec<Service> = (0..2).map(|_| start(&s, &env)).collect();
    for svc in &services {
        svc.wait_ready(Duration::from_secs(60));
    }
    produce_phase(&s, &topic, 400, "0", 42);
    let alerts =
        read_json_until(&s.kafka, &s.names.alerts, Duration::from_secs(120), |a| !alerts_of(a, &topic, "accuracy", "resolved").is_empty());
    let ids: std::collections::BTreeSet<&str> =
        alerts.iter().filter(|a| a["topic"] == topic.as_str() && a["metric"] == "accuracy").filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "the new owner resolves the episode the old one fired: {ids:?}");
    assert_eq!(alerts_of(&alerts, &topic, "accuracy", "resolved")[0]["id"], firing["id"]);
    let windows = windows_until(&s.names.database, &topic, Duration::from_secs(120), |w| sum(w, "volume") + sum(w, "late") >= 800).await;
    assert_eq!(sum(&windows, "volume") + sum(&windows, "late"), 800, "exact volume across the kill");
    assert_one_document_per_window(&windows);
    drop(services);
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_waiting_for_their_rows_survive_a_kill_9() {
    let s = Scenario::payments(&["pay-claims"], 3).await;
    let topic = s.topics.concat();
    let mut env = group_env(&s.names, "c");
    env.retain(|(k, _)| k != "MESHGUARD__RECONCILE__GRACE_MS");
    env.push(("MESHGUARD__RECONCILE__GRACE_MS".into(), "120000".into()));
    env.push(("MESHGUARD__TOPICS__CLAIMS".into(), format!("{}.claims.c", s.names.alerts)));
    // Events whose source rows are not written yet: their claims wait for the grace period. A
    // seed of this run's own, so no row of an earlier run matches them.
    let seed = u64::from_str_radix(&unique("s")[2..14], 16).unwrap_or(51);
    let sent = s.produce(150, 0.0, seed).await;
    let mut first = start(&s, &env);
    first.wait_ready(Duration::from_secs(60));
    // Every offset committed: a restart reads none of these events again, so only the durable
    // claims can bring their accuracy verdicts back.
    s.wait_committed(150, Duration::from_secs(60));
    first.signal(9);
    let _ = first.wait(Duration::from_secs(10));
    drop(first);
    let second = start(&s, &env);
    second.wait_ready(Duration::from_secs(60));
    write_source_rows(sent.len(), seed).await;
    let windows = windows_until(&s.names.database, &topic, Duration::from_secs(120), |w| sum(w, "accuracy_checked") >= 150).await;
    assert_eq!(sum(&windows, "accuracy_matched"), 150, "every claim restored and matched");
    assert_eq!(sum(&windows, "accuracy_missing") + sum(&windows, "accuracy_mismatched"), 0);
    assert_eq!(sum(&windows, "accuracy_checked"), 150, "none decided twice");
    drop(second);
}
