//! Exactly-once mode (`delivery.exactly_once = true`) against the real broker: dead letters and
//! consumer offsets commit in one transaction per batch, so a read_committed reader sees each
//! invalid input's dead letter exactly once across kill -9 and restarts, and a zombie instance
//! (stopped past its session timeout, then resumed) is fenced: its output never becomes visible.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

/// Positions read more than once.
fn repeated(dead: &[DeadLetter]) -> Vec<((String, i32, i64), usize)> {
    let mut n: BTreeMap<(String, i32, i64), usize> = BTreeMap::new();
    for d in dead {
        *n.entry(position(d)).or_default() += 1;
    }
    n.into_iter().filter(|(_, c)| *c > 1).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_repeatedly_leaves_each_dead_letter_exactly_once_under_read_committed() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-eos-kill"], 3).await;
    let topic = topics.concat();
    let sent = produce_payments(&kafka, &[&topic], 20_000, 0.03, 606).await;
    let total = sent.len() as i64;
    let expected = invalid_positions(&sent);
    // One stable transactional.id across restarts: each restart fences its killed predecessor
    // and aborts the transaction it left open.
    let txn = unique("txn");
    let env = [
        ("MESHGUARD__DELIVERY__EXACTLY_ONCE", "true"),
        ("MESHGUARD__DELIVERY__TRANSACTIONAL_ID", txn.as_str()),
        ("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "200"),
        ("MESHGUARD__MYSQL__ENABLED", "false"),
    ];
    for _ in 0..3 {
        let s = Service::start(&kafka, products.dir.path(), &names, &env);
        let before = committed_total(&kafka, &names.group, &[&topic], 3);
        wait_committed(&kafka, &names.group, &[&topic], 3, before + 2_000, Duration::from_secs(120));
        s.signal(9);
        drop(s);
        let at = committed_total(&kafka, &names.group, &[&topic], 3);
        assert!(at < total, "the kill should land mid-stream (committed {at} of {total})");
    }
    let _last = Service::start(&kafka, products.dir.path(), &names, &env);
    wait_committed(&kafka, &names.group, &[&topic], 3, total, Duration::from_secs(180));

    let dead = read_all(&kafka, &names.dlq, expected.len(), Duration::from_secs(90));
    let got: BTreeSet<_> = dead.iter().map(position).collect();
    assert_eq!(got, expected, "read_committed: every invalid input has its dead letter");
    assert_eq!(repeated(&dead), vec![], "read_committed: no dead letter twice after three kill -9");
    assert_eq!(dead.len(), expected.len());
    // MongoDB: one lineage document per input (idempotent inserts by deterministic _id).
    let lineage = lineage_docs(&names.database).await;
    assert_eq!(lineage.len() as i64, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_instance_is_fenced_and_its_output_never_becomes_visible() {
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-eos-zombie"], 4).await;
    let topic = topics.concat();
    // A short session timeout (the broker's minimum is 6 s), so that the stopped instance is
    // evicted quickly; librdkafka properties pass through [kafka.consumer].
    let config = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(config.path(), "[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let config_path = config.path().to_string_lossy().into_owned();
    let sent = produce_payments(&kafka, &[&topic], 20_000, 0.03, 707).await;
    let base = [
        ("MESHGUARD__DELIVERY__EXACTLY_ONCE", "true"),
        ("MESHGUARD__DELIVERY__BATCH_MAX_RECORDS", "100"),
        ("MESHGUARD__MYSQL__ENABLED", "false"),
        ("MESHGUARD_CONFIG", config_path.as_str()),
    ];
    let (txn_a, txn_b) = (unique("txn-a"), unique("txn-b"));
    let mut ea = base.to_vec();
    ea.push(("MESHGUARD__DELIVERY__TRANSACTIONAL_ID", txn_a.as_str()));
    let mut eb = base.to_vec();
    eb.push(("MESHGUARD__DELIVERY__TRANSACTIONAL_ID", txn_b.as_str()));

    let mut a = Service::start(&kafka, products.dir.path(), &names, &ea);
    wait_committed(&kafka, &names.group, &[&topic], 4, 1_000, Duration::from_secs(120));
    a.signal(19); // SIGSTOP: A holds its partitions and, most likely, an open transaction.
    let frozen_at = committed_total(&kafka, &names.group, &[&topic], 4);
    assert!(frozen_at < sent.len() as i64, "A must be stopped mid-stream (committed {frozen_at})");

    // B joins; once A's session times out, B owns every partition and finishes the backlog.
    let b = Service::start(&kafka, products.dir.path(), &names, &eb);
    wait_committed(&kafka, &names.group, &[&topic], 4, sent.len() as i64, Duration::from_secs(180));

    // A wakes up as a zombie: whatever it had in flight must be fenced (aborted), not committed.
    a.signal(18); // SIGCONT
    let more = produce_payments(&kafka, &[&topic], 4_000, 0.03, 708).await;
    let total = (sent.len() + more.len()) as i64;
    wait_committed(&kafka, &names.group, &[&topic], 4, total, Duration::from_secs(180));
    assert!(a.child.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none(), "the fenced instance recovers instead of exiting");
    // A rejoined the group and owns partitions again next to B (cooperative-sticky).
    let assigned = |s: &Service| metric_sum(&s.get("/metrics").unwrap_or_default().1, "meshguard_assigned_partitions", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(assigned(&a) > 0.0 && assigned(&a) + assigned(&b) == 4.0) {
        assert!(Instant::now() < deadline, "A did not rejoin: a={} b={}", assigned(&a), assigned(&b));
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut expected = invalid_positions(&sent);
    expected.extend(invalid_positions(&more));
    let dead = read_all(&kafka, &names.dlq, expected.len(), Duration::from_secs(90));
    let got: BTreeSet<_> = dead.iter().map(position).collect();
    assert_eq!(got, expected, "read_committed: every invalid input has its dead letter");
    assert_eq!(repeated(&dead), vec![], "read_committed: the zombie's dead letters never became visible");
    let lineage = lineage_docs(&names.database).await;
    assert_eq!(lineage.len() as i64, total);
    a.signal(15);
    assert_eq!(a.wait(Duration::from_secs(30)), Some(0), "the recovered instance drains and exits 0");
}
