//! `meshguard run` against a real Kafka broker: routing with exact counts, dead-letter headers,
//! poison records, kill -9 and restart, two instances in one group, graceful shutdown.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use common::*;

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn routes_exactly_the_invalid_records_with_their_reasons() {
    let Scenario { kafka, topics, names, products, .. } =
        Scenario::payments(&["pay-created", "pay-updated", "pay-completed"], PARTITIONS).await;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    // The acceptance run: 100k payment events, 1% invalid.
    let sent = produce_payments(&kafka, &topic_refs, 100_000, 0.01, 42).await;
    let expected = invalid_positions(&sent);
    assert!(expected.len() > 800, "the generator should have produced ~1% invalid records");

    let service = Service::start(&kafka, products.dir.path(), &names, &[]);
    wait_committed(&kafka, &names.group, &topic_refs, PARTITIONS, sent.len() as i64, Duration::from_secs(300));
    let dead = read_all(&kafka, &names.dlq, expected.len(), Duration::from_secs(60));

    let got: Vec<_> = dead.iter().map(position).collect();
    let got_set: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no dead letter is written twice in an uninterrupted run");
    assert_eq!(got_set, expected, "the dead-letter topic holds exactly the invalid records");

    let by_pos: std::collections::HashMap<_, _> = sent.iter().map(|s| ((s.topic.clone(), s.partition, s.offset), s)).collect();
    for d in &dead {
        let s = by_pos[&position(d)];
        let h = &d.headers;
        assert_eq!(h.get("meshguard.stage").map(String::as_str), Some(if s.undecodable { "decode" } else { "validate" }), "{h:?}");
        assert_eq!(h.get("meshguard.product").map(String::as_str), Some("payments-data-product"));
        assert_eq!(h.get("meshguard.contract").map(String::as_str), Some("payment-schema"));
        assert_eq!(h.get("meshguard.contract.version").map(String::as_str), Some("1.0.0"));
        let violations: serde_json::Value =
            serde_json::from_str(h.get("meshguard.violations").map(String::as_str).unwrap_or("null")).unwrap_or_default();
        let list = violations.as_array().cloned().unwrap_or_default();
        assert!(!list.is_empty(), "violations carried: {h:?}");
        for v in &list {
            assert!(
                v.get("path").is_some_and(serde_json::Value::is_string) && v.get("keyword").is_some_and(serde_json::Value::is_string),
                "{v}"
            );
        }
        if !s.undecodable {
            assert_eq!(h.get("meshguard.error.class").map(String::as_str), Some("contract_violation"));
        }
        assert!(d.payload.is_some(), "the original bytes are forwarded");
    }

    // The service's own counters agree with what a plain client counted.
    let (code, metrics) = service.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    let invalid = metric_sum(&metrics, "meshguard_events_total", &[("outcome", "invalid")]);
    let valid = metric_sum(&metrics, "meshguard_events_total", &[("outcome", "valid")]);
    assert_eq!(invalid as usize, expected.len());
    assert_eq!(valid as usize, sent.len() - expected.len());
    assert_eq!(metric_sum(&metrics, "meshguard_dead_letters_total", &[]) as usize, expected.len());
    promtool_check_metrics(&metrics);
}

/// `promtool check metrics` (Debian package `prometheus`) must accept a scrape.
fn promtool_check_metrics(scrape: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool is not installed ({e}): apt-get install prometheus"));
    child.stdin.take().map(|mut s| s.write_all(scrape.as_bytes())).transpose().unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_do_not_stall_a_partition() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-poison"], 1).await;
    let topic = topics.concat();
    // Raw poison first, then ordinary events behind it on the same (only) partition.
    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka).create().unwrap_or_else(|e| panic!("{e}"));
    let deep = "[".repeat(200_000);
    let poison: Vec<Vec<u8>> =
        vec![b"\xff\xfe\x00garbage".to_vec(), b"{\"payment_id\":".to_vec(), deep.into_bytes(), b"NaN".to_vec(), Vec::new()];
    for p in &poison {
        let rec = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic).payload(p);
        let _ = producer.send(rec, Duration::from_secs(10)).await.unwrap_or_else(|(e, _)| panic!("{e}"));
    }
    let sent = produce_payments(&kafka, &[&topic], 200, 0.0, 7).await;
    let _service = Service::start(&kafka, products.dir.path(), &names, &[]);
    wait_committed(&kafka, &names.group, &[&topic], 1, (poison.len() + sent.len()) as i64, Duration::from_secs(60));
    let dead = read_all(&kafka, &names.dlq, poison.len(), Duration::from_secs(30));
    assert_eq!(dead.len(), poison.len());
    assert!(dead.iter().all(|d| d.headers.get("meshguard.stage").map(String::as_str) == Some("decode")));
    let offsets: HashSet<i64> = dead.iter().map(|d| position(d).2).collect();
    assert_eq!(offsets, (0..poison.len() as i64).collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_nothing() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-kill"], PARTITIONS).await;
    let topic = topics.concat();
    let sent = produce_payments(&kafka, &[&topic], 30_000, 0.02, 99).await;
    let expected = invalid_positions(&sent);

    let first = Service::start(&kafka, products.dir.path(), &names, &[("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "200")]);
    // Kill it once it has made some progress but not all.
    wait_committed(&kafka, &names.group, &[&topic], PARTITIONS, 1, Duration::from_secs(60));
    first.signal(9);
    drop(first);
    let before = committed_total(&kafka, &names.group, &[&topic], PARTITIONS);
    assert!(before < sent.len() as i64, "the kill should land mid-stream (committed {before})");

    let _second = Service::start(&kafka, products.dir.path(), &names, &[]);
    wait_committed(&kafka, &names.group, &[&topic], PARTITIONS, sent.len() as i64, Duration::from_secs(120));
    let dead = read_all(&kafka, &names.dlq, expected.len(), Duration::from_secs(60));
    let got: BTreeSet<_> = dead.iter().map(position).collect();
    assert_eq!(got, expected, "every invalid input is in the dead-letter topic (duplicates allowed at least once)");
    assert!(dead.len() >= expected.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_partitions_and_take_over() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-group"], 4).await;
    let topic = topics.concat();
    let a = Service::start(&kafka, products.dir.path(), &names, &[]);
    a.wait_ready(Duration::from_secs(60));
    // B's drain may take long on a loaded machine: what is tested is that it drains and exits 0,
    // not how fast.
    let mut b = Service::start(&kafka, products.dir.path(), &names, &[("MESHGUARD__DELIVERY__SHUTDOWN_TIMEOUT_MS", "60000")]);
    b.wait_ready(Duration::from_secs(60));
    // Both hold partitions at once: cooperative rebalancing split the four.
    let assigned = |s: &Service| metric_sum(&s.get("/metrics").unwrap_or_default().1, "meshguard_assigned_partitions", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(assigned(&a) + assigned(&b) == 4.0 && assigned(&a) > 0.0 && assigned(&b) > 0.0) {
        assert!(std::time::Instant::now() < deadline, "partitions not split: a={} b={}", assigned(&a), assigned(&b));
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = produce_payments(&kafka, &[&topic], 4_000, 0.03, 5).await;
    let expected = invalid_positions(&sent);
    // Stop B gracefully; A takes over its partitions.
    b.signal(15);
    assert_eq!(b.wait(Duration::from_secs(75)), Some(0), "SIGTERM drains and exits 0");
    let sent2 = produce_payments(&kafka, &[&topic], 2_000, 0.03, 6).await;
    let mut all_expected = expected;
    all_expected.extend(invalid_positions(&sent2));
    wait_committed(&kafka, &names.group, &[&topic], 4, (sent.len() + sent2.len()) as i64, Duration::from_secs(90));
    let dead = read_all(&kafka, &names.dlq, all_expected.len(), Duration::from_secs(60));
    let got: BTreeSet<_> = dead.iter().map(position).collect();
    assert_eq!(got, all_expected);
    assert_eq!(assigned(&a), 4.0, "the remaining instance owns every partition");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_under_load_hands_every_batch_over_committed() {
    // A consumes a backlog (a batch's offsets are stored only after the next batch is gathered)
    // and B joins meanwhile, so partitions change hands under load. With no crash the hand-over
    // is clean: every dead letter is written exactly once. (The revoke callback finishes A's
    // batch in flight; this test also passed with that step disabled, so it guards the
    // hand-over as a whole, not that step alone.)
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-handover"], 6).await;
    let topic = topics.concat();
    let sent = produce_payments(&kafka, &[&topic], 40_000, 0.03, 8).await;
    let expected = invalid_positions(&sent);
    // Small batches keep A busy with the backlog (one acknowledgement round trip per 100
    // records) until B has joined.
    let a = Service::start(&kafka, products.dir.path(), &names, &[("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "100")]);
    a.wait_ready(Duration::from_secs(60));
    let b = Service::start(&kafka, products.dir.path(), &names, &[]);
    b.wait_ready(Duration::from_secs(60));
    let early = committed_total(&kafka, &names.group, &[&topic], 6);
    assert!(early < sent.len() as i64, "A finished the backlog before B joined ({early} committed): the hand-over was not under load");
    wait_committed(&kafka, &names.group, &[&topic], 6, sent.len() as i64, Duration::from_secs(120));
    let revoked = metric_sum(&a.get("/metrics").unwrap_or_default().1, "meshguard_rebalances_total", &[("kind", "revoke")]);
    assert!(revoked >= 1.0, "B's join revoked none of A's partitions: the hand-over was not exercised");
    let dead = read_all(&kafka, &names.dlq, expected.len(), Duration::from_secs(60));
    let mut seen: BTreeMap<_, usize> = BTreeMap::new();
    for d in &dead {
        *seen.entry(position(d)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "dead letters written more than once across the hand-over: {twice:?}");
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_that_refuses_records_holds_the_batch_until_it_accepts_them() {
    // The broker refuses every dead letter (the topic's max.message.bytes is below any record):
    // the batch is not acknowledged, so it is read again, with a fresh producer each time, and
    // nothing past it is committed. Once the topic accepts records, every dead letter arrives.
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
    let kafka = kafka();
    let topic = unique("pay-refused");
    create_topics(&kafka, &[&topic], 1).await;
    let names = Names::new();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka).create().unwrap_or_else(|e| panic!("admin: {e}"));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let dlq = NewTopic::new(&names.dlq, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100");
    for r in admin.create_topics([&dlq], &opts).await.unwrap_or_else(|e| panic!("create {}: {e}", names.dlq)) {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    let products = Products::payments(&[&topic]);
    let sent = produce_payments(&kafka, &[&topic], 300, 0.1, 21).await;
    let expected = invalid_positions(&sent);
    let first_invalid = sent.iter().position(|s| !s.valid).unwrap_or_else(|| panic!("the generator produced no invalid event"));
    let service = Service::start(&kafka, products.dir.path(), &names, &[("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "50")]);
    // Three failed attempts: the retries (each with a replaced producer) fail the same way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let scrape = service.get("/metrics").unwrap_or_default().1;
        if metric_sum(&scrape, "meshguard_sink_errors_total", &[("sink", "kafka")]) >= 3.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no three side-topic failures within 60 s; metrics:\n{scrape}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = committed_total(&kafka, &names.group, &[&topic], 1);
    assert!(held <= first_invalid as i64, "committed {held} records past the first refused dead letter (offset {first_invalid})");
    let mut fix = AlterConfig::new(ResourceSpecifier::Topic(&names.dlq));
    fix = fix.set("max.message.bytes", "1048588");
    for r in admin.alter_configs([&fix], &opts).await.unwrap_or_else(|e| panic!("alter {}: {e}", names.dlq)) {
        r.unwrap_or_else(|(t, e)| panic!("alter {t:?}: {e}"));
    }
    wait_committed(&kafka, &names.group, &[&topic], 1, sent.len() as i64, Duration::from_secs(60));
    let dead = read_all(&kafka, &names.dlq, expected.len(), Duration::from_secs(30));
    let got: BTreeSet<_> = dead.iter().map(position).collect();
    assert_eq!(got, expected, "every invalid input is in the dead-letter topic once it accepts records");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_config_is_a_clear_error() {
    // No broker needed: a misspelled setting fails before any connection.
    let out = std::process::Command::new(binary())
        .arg("run")
        .current_dir(repo())
        .env("MESHGUARD__DELIVERY__BATCH_MAX_RECORDZ", "5")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_max_recordz"), "{err}");
}
