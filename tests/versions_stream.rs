//! Contract versions, shadow versions and uniqueness in `meshguard run` on the real Kafka:
//! records carrying `meshguard.contract.version` headers on one topic, each held to its own
//! version (dead letters and lineage name the version applied), a shadow version's would-be
//! rejections counted exactly and never dead-lettered, and duplicates (the same key and payload
//! produced twice) counted exactly and dead-lettered with class `duplicate` when the contract
//! says so. The quality windows carry both (`shadow_rejections`, `duplicates`), duplicates
//! exactly per window across a rebalance; rule failures and shadow rejections count once per
//! record through a batch retried while the document store is cut off.

// tests/common's helpers trip this lint on the toolchain in use; the code is shared as it is.
#![allow(clippy::result_large_err)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// Writes the schemas of the versioned contract into `dir/schemas`: 1.0.0 the payments schema,
/// 2.0.0 also requires `payment_method`, 3.0.0 (shadow) also closes the record.
fn versioned_schemas(dir: &Path) {
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap_or_else(|e| panic!("{e}"));
    let v1: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/payment-schema.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut v2 = v1.clone();
    if let Some(r) = v2["required"].as_array_mut() {
        r.push("payment_method".into());
    }
    let mut v3 = v2.clone();
    v3["additionalProperties"] = false.into();
    for (name, schema) in [("payment-schema.json", &v1), ("p2.json", &v2), ("p3.json", &v3)] {
        std::fs::write(schemas.join(name), schema.to_string()).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A product file with one contract bound to `topic`; `extra` is appended to the contract.
fn product(dir: &Path, name: &str, topic: &str, extra: &str) {
    let products = dir.join("products");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    let yaml = format!(
        "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: {name}\n  domain: payments\n  version: \"1\"\n  owner: t@example.com\nspec:\n  contracts:\n    - name: pay\n      version: \"1.0.0\"\n      schema: schemas/payment-schema.json\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99%\n{extra}  apis:\n    kafka:\n      topics: [{topic}]\n"
    );
    std::fs::write(products.join(format!("{name}.yaml")), yaml).unwrap_or_else(|e| panic!("{e}"));
}

const VERSIONS: &str = "      versions:\n        - version: \"2.0.0\"\n          schema: schemas/p2.json\n        - version: \"3.0.0\"\n          schema: schemas/p3.json\n          mode: shadow\n";

fn payment(id: u32, method: bool, extra: bool, currency: bool) -> Vec<u8> {
    let mut v = serde_json::json!({
        "payment_id": format!("6f1c1a52-3f57-4d1c-9d61-0b1b2f1c{id:04x}"),
        "customer_id": 7,
        "amount": 10.5,
        "currency": "EUR",
        "status": "PENDING",
        "created_at": "2026-11-29T11:59:59Z",
    });
    if method {
        v["payment_method"] = serde_json::json!({"type": "CARD"});
    }
    if extra {
        v["note"] = "x".into();
    }
    if !currency && let Some(o) = v.as_object_mut() {
        let _ = o.remove("currency");
    }
    v.to_string().into_bytes()
}

/// Produces `(key, payload, version header)` records to `topic` in order; returns how many.
async fn produce(kafka: &str, topic: &str, records: &[(String, Vec<u8>, Option<&str>)]) -> usize {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("enable.idempotence", "true")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    for (key, payload, version) in records {
        let mut rec = FutureRecord::<str, [u8]>::to(topic).key(key).payload(payload);
        if let Some(v) = version {
            rec = rec.headers(OwnedHeaders::new().insert(Header { key: "meshguard.contract.version", value: Some(*v) }));
        }
        let _ = producer.send(rec, Duration::from_secs(10)).await.unwrap_or_else(|(e, _)| panic!("{e}"));
    }
    records.len()
}

/// The test's settings: the schemas of `dir`, no source database; the store when `store`.
fn env(dir: &Path, store: bool) -> Vec<(&'static str, String)> {
    let mut env =
        vec![("MESHGUARD__SCHEMAS__DIR", dir.join("schemas").display().to_string()), ("MESHGUARD__MYSQL__ENABLED", "false".to_owned())];
    if store {
        // Short windows, so the test sees its windows closed within seconds.
        env.push(("MESHGUARD__QUALITY__WINDOW_MS", "1000".to_owned()));
    } else {
        env.push(("MESHGUARD__MONGODB__ENABLED", "false".to_owned()));
    }
    env
}

/// The `quality_metrics` documents of `topic`, polled until their volumes add up to `volume`.
async fn windows_with_volume(database: &str, topic: &str, volume: u64, within: Duration) -> Vec<Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let windows = mongo_docs(database, "quality_metrics", bson::doc! {"topic": topic}).await;
        if sum(&windows, "volume") >= volume {
            return windows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "windows of {topic} reached volume {} of {volume}: {windows:#?}",
            sum(&windows, "volume")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A window's rejections by one shadow version (its `shadow_rejections` entry).
fn shadow_rejected(window: &Value, version: &str) -> u64 {
    window["shadow_rejections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["version"] == version)
        .map(|e| sum(std::slice::from_ref(e), "rejected"))
        .sum()
}

/// One topic, records written to 1.0.0 and 2.0.0 (and to none, and to an unknown version):
/// each held to its own version, the version applied named in its dead letter (and, with the
/// store, in its lineage document); the shadow 3.0.0's rejections counted and not dead-lettered.
async fn versions_in_run(store: bool) {
    let kafka = kafka();
    let topic = unique("pay-versions");
    create_topics(&kafka, &[&topic], 1).await;
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    versioned_schemas(dir.path());
    product(dir.path(), "versioned", &topic, VERSIONS);

    // (payload, header): offset, applied version, dead letter?, shadow 3.0.0 rejects?
    let records: Vec<(String, Vec<u8>, Option<&str>)> = vec![
        // 0: 1.0.0 accepts a record without payment_method; the shadow does not.
        ("k0".into(), payment(0, false, false, true), Some("1.0.0")),
        // 1: 2.0.0 requires it: dead letter naming 2.0.0; the shadow rejects too.
        ("k1".into(), payment(1, false, false, true), Some("2.0.0")),
        // 2: no header: the newest enforced version, 2.0.0, rejects it; so does the shadow.
        ("k2".into(), payment(2, false, false, true), None),
        // 3: valid under 2.0.0 and the shadow.
        ("k3".into(), payment(3, true, false, true), Some("2.0.0")),
        // 4: an extra field: 1.0.0 accepts, only the (closed) shadow would reject: no dead letter.
        ("k4".into(), payment(4, true, true, true), Some("1.0.0")),
        // 5: a version the contract does not enforce (3.0.0 is a shadow): rejected, named 2.0.0.
        ("k5".into(), payment(5, true, false, true), Some("3.0.0")),
        // 6: breaks 1.0.0 itself (no currency): dead letter naming 1.0.0; the shadow rejects.
        ("k6".into(), payment(6, true, false, false), Some("1.0.0")),
        // 7: valid under the newest by default.
        ("k7".into(), payment(7, true, false, true), None),
    ];
    let n = produce(&kafka, &topic, &records).await;

    let env = env(dir.path(), store);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let service = Service::start(&kafka, &dir.path().join("products"), &names, &env_refs);
    wait_committed(&kafka, &names.group, &[&topic], 1, n as i64, Duration::from_secs(120));

    let dead = read_all(&kafka, &names.dlq, 4, Duration::from_secs(60));
    let mut got: Vec<(i64, String, String)> = dead
        .iter()
        .map(|d| {
            let h = &d.headers;
            (
                position(d).2,
                h.get("meshguard.contract.version").cloned().unwrap_or_default(),
                h.get("meshguard.error.class").cloned().unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    let expected: Vec<(i64, String, String)> = [
        (1, "2.0.0", "contract_violation"),
        (2, "2.0.0", "contract_violation"),
        (5, "2.0.0", "unknown_contract_version"),
        (6, "1.0.0", "contract_violation"),
    ]
    .iter()
    .map(|(o, v, c)| (*o, (*v).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(got, expected, "dead letters: {dead:#?}");

    let (code, metrics) = service.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    let shadow = metric_sum(&metrics, "meshguard_shadow_rejections_total", &[("product", "versioned"), ("version", "3.0.0")]);
    assert_eq!(shadow, 5.0, "offsets 0, 1, 2, 4 and 6 break the shadow version");
    assert_eq!(metric_sum(&metrics, "meshguard_events_total", &[("topic", topic.as_str()), ("outcome", "invalid")]), 4.0);
    assert_eq!(metric_sum(&metrics, "meshguard_events_total", &[("topic", topic.as_str()), ("outcome", "valid")]), 4.0);

    if store {
        let lineage =
            lineage_docs(&names.database).await.into_iter().filter(|d| d["source"]["topic"] == topic.as_str()).collect::<Vec<_>>();
        let mut versions: Vec<(i64, String, String)> = lineage
            .iter()
            .map(|d| {
                (
                    d["source"]["offset"].as_i64().unwrap_or(-1),
                    d["transformation"]["version"].as_str().unwrap_or_default().to_owned(),
                    d["transformation"]["outcome"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        versions.sort();
        let want: Vec<(i64, &str, &str)> = vec![
            (0, "1.0.0", "valid"),
            (1, "2.0.0", "invalid"),
            (2, "2.0.0", "invalid"),
            (3, "2.0.0", "valid"),
            (4, "1.0.0", "valid"),
            (5, "2.0.0", "invalid"),
            (6, "1.0.0", "invalid"),
            (7, "2.0.0", "valid"),
        ];
        let want: Vec<(i64, String, String)> = want.into_iter().map(|(o, v, c)| (o, v.to_owned(), c.to_owned())).collect();
        assert_eq!(versions, want);

        // The windows count the shadow's would-be rejections as the metric does.
        let windows = windows_with_volume(&names.database, &topic, n as u64, Duration::from_secs(60)).await;
        assert_eq!(sum(&windows, "volume"), 8, "{windows:#?}");
        assert_eq!(windows.iter().map(|w| shadow_rejected(w, "3.0.0")).sum::<u64>(), 5, "{windows:#?}");
        assert_eq!(sum(&windows, "invalid"), 4, "{windows:#?}");
        assert_eq!(sum(&windows, "duplicates"), 0, "{windows:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_holds_each_record_to_its_version_on_the_lean_path() {
    versions_in_run(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_holds_each_record_to_its_version_and_lineage_names_it() {
    versions_in_run(true).await;
}

/// Two topics, each with a `unique: payment_id` contract, one dead-lettering duplicates and one
/// only counting them; the same key and payload produced twice (three times for one key), over
/// two partitions.
#[tokio::test(flavor = "multi_thread")]
async fn run_counts_duplicates_and_dead_letters_them_when_configured() {
    let kafka = kafka();
    let rejecting = unique("pay-unique-dlq");
    let counting = unique("pay-unique-count");
    create_topics(&kafka, &[&rejecting, &counting], 2).await;
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    versioned_schemas(dir.path());
    product(dir.path(), "unique-dlq", &rejecting, "      unique:\n        fields: [payment_id]\n        deadLetter: true\n");
    product(dir.path(), "unique-count", &counting, "      unique:\n        fields: [payment_id]\n");

    // a, b, a, c, b, a, d-invalid, d-invalid: three duplicates (a twice, b once); the invalid
    // record has no key to count (only records the contract accepts are keyed).
    let rec = |id: u32, valid: bool| (format!("key-{id}"), payment(id, true, false, valid), None);
    let records: Vec<(String, Vec<u8>, Option<&str>)> =
        vec![rec(1, true), rec(2, true), rec(1, true), rec(3, true), rec(2, true), rec(1, true), rec(4, false), rec(4, false)];
    let n = produce(&kafka, &rejecting, &records).await + produce(&kafka, &counting, &records).await;

    let env = env(dir.path(), false);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let service = Service::start(&kafka, &dir.path().join("products"), &names, &env_refs);
    wait_committed(&kafka, &names.group, &[&rejecting, &counting], 2, n as i64, Duration::from_secs(120));

    // Dead letters: on the rejecting topic 3 duplicates and 2 invalid records, on the counting
    // topic only the 2 invalid ones.
    let dead = read_all(&kafka, &names.dlq, 7, Duration::from_secs(60));
    let classes = |topic: &str| {
        let mut c: Vec<String> = dead
            .iter()
            .filter(|d| position(d).0 == topic)
            .map(|d| d.headers.get("meshguard.error.class").cloned().unwrap_or_default())
            .collect();
        c.sort();
        c
    };
    assert_eq!(classes(&rejecting), ["contract_violation", "contract_violation", "duplicate", "duplicate", "duplicate"], "{dead:#?}");
    assert_eq!(classes(&counting), ["contract_violation", "contract_violation"], "{dead:#?}");
    assert_eq!(dead.len(), 7);
    let duplicate_keys: Vec<String> = {
        let mut k: Vec<String> = dead
            .iter()
            .filter(|d| d.headers.get("meshguard.error.class").is_some_and(|c| c == "duplicate"))
            .map(|d| String::from_utf8_lossy(d.key.as_deref().unwrap_or_default()).into_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(duplicate_keys, ["key-1", "key-1", "key-2"]);
    assert!(
        dead.iter()
            .filter(|d| d.headers.get("meshguard.error.class").is_some_and(|c| c == "duplicate"))
            .all(|d| d.headers.get("meshguard.violations").is_some_and(|v| v.contains("\"keyword\":\"unique\""))),
        "{dead:#?}"
    );

    let (code, metrics) = service.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    for topic in [&rejecting, &counting] {
        assert_eq!(metric_sum(&metrics, "meshguard_duplicates_total", &[("topic", topic.as_str())]), 3.0, "{topic}");
    }
    assert_eq!(metric_sum(&metrics, "meshguard_events_total", &[("topic", rejecting.as_str()), ("outcome", "invalid")]), 5.0);
    assert_eq!(metric_sum(&metrics, "meshguard_events_total", &[("topic", counting.as_str()), ("outcome", "invalid")]), 2.0);
}

/// Produces `(key, payload)` records to `topic` one at a time (a key's copies in order on its
/// partition), each stamped with the time it is sent; returns the timestamps in ms.
async fn produce_stamped(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) -> Vec<i64> {
    let mut stamps = Vec::with_capacity(records.len());
    for (key, payload) in records {
        let ts = meshguard::measure::unix_ms(time::OffsetDateTime::now_utc());
        let rec = FutureRecord::<str, [u8]>::to(topic).key(key).payload(payload).timestamp(ts);
        let _ = producer.send(rec, Duration::from_secs(10)).await.unwrap_or_else(|(e, _)| panic!("{e}"));
        stamps.push(ts);
    }
    stamps
}

/// `count` payments with fresh ids from `first_id`, then a second copy of every `every`-th one
/// (same key, same payload): the duplicates. Returns the records in sending order and, for each,
/// whether it is a duplicate.
fn with_duplicates(first_id: u32, count: u32, every: u32) -> Vec<((String, Vec<u8>), bool)> {
    let rec = |id: u32| (format!("key-{id}"), payment(id, true, false, true));
    let mut out: Vec<((String, Vec<u8>), bool)> = (first_id..first_id + count).map(|id| (rec(id), false)).collect();
    out.extend((first_id..first_id + count).step_by(every as usize).map(|id| (rec(id), true)));
    out
}

/// Waits until `svc` holds `partitions` source partitions.
async fn wait_assigned(svc: &Service, partitions: f64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let held = svc.get("/metrics").map_or(-1.0, |(_, body)| metric_sum(&body, "meshguard_assigned_partitions", &[]));
        if held == partitions {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the instance at {} holds {held} partitions, not {partitions}, after {within:?}",
            svc.http
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Duplicates of a `unique: payment_id` contract (group-wide windows) counted exactly per window
/// and in the metric across a rebalance: one instance reads the first phase (200 payments, 40
/// of them sent twice), a second joins and takes half the partitions, then the second phase
/// (200 more, 50 sent twice) is read by both. Uniqueness state is per partition and dropped on
/// revoke (docs/design.md), so each duplicate here is read by the instance that read its first
/// copy: both copies of a key are sent within one phase, and the phases are apart from the
/// rebalance (the first committed before the second instance starts, the second sent once both
/// hold their share). Every window's `duplicates` equals the duplicates sent with a timestamp
/// in it.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_counted_exactly_per_window_across_a_rebalance() {
    let kafka = kafka();
    let topic = unique("pay-unique-rebalance");
    create_topics(&kafka, &[&topic], 4).await;
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    versioned_schemas(dir.path());
    product(dir.path(), "unique-rebalance", &topic, "      unique:\n        fields: [payment_id]\n");
    let mut env = env(dir.path(), true);
    for (k, v) in [
        ("MESHGUARD__QUALITY__SCOPE", "group".to_owned()),
        ("MESHGUARD__QUALITY__WINDOW_MS", "2000".to_owned()),
        ("MESHGUARD__QUALITY__LATENESS_MS", "3000".to_owned()),
        ("MESHGUARD__QUALITY__SILENCE_AFTER_MS", "600000".to_owned()),
        ("MESHGUARD__TOPICS__PARTIALS", format!("{}.partials", names.alerts)),
        ("MESHGUARD__TOPICS__QUALITY_STATE", format!("{}.state", names.alerts)),
    ] {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("enable.idempotence", "true")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    let window_of = |ms: i64| ms - ms.rem_euclid(2000);
    let mut expected: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    let mut sent = 0usize;

    // Phase 1: one instance.
    let first = Service::start(&kafka, &dir.path().join("products"), &names, &env_refs);
    let phase1 = with_duplicates(0, 200, 5);
    let records: Vec<(String, Vec<u8>)> = phase1.iter().map(|(r, _)| r.clone()).collect();
    for (ts, (_, dup)) in produce_stamped(&producer, &topic, &records).await.into_iter().zip(&phase1) {
        *expected.entry(window_of(ts)).or_default() += u64::from(*dup);
    }
    sent += phase1.len();
    wait_committed(&kafka, &names.group, &[&topic], 4, sent as i64, Duration::from_secs(120));

    // A second instance joins: the group rebalances until each holds two partitions.
    let second = Service::start(&kafka, &dir.path().join("products"), &names, &env_refs);
    wait_assigned(&second, 2.0, Duration::from_secs(60)).await;
    wait_assigned(&first, 2.0, Duration::from_secs(60)).await;

    // Phase 2: both instances.
    let phase2 = with_duplicates(1000, 200, 4);
    let records: Vec<(String, Vec<u8>)> = phase2.iter().map(|(r, _)| r.clone()).collect();
    for (ts, (_, dup)) in produce_stamped(&producer, &topic, &records).await.into_iter().zip(&phase2) {
        *expected.entry(window_of(ts)).or_default() += u64::from(*dup);
    }
    sent += phase2.len();
    wait_committed(&kafka, &names.group, &[&topic], 4, sent as i64, Duration::from_secs(120));
    let injected: u64 = expected.values().sum();
    assert_eq!(injected, 40 + 50);

    // The metric, summed over both instances; the second counted its share after the rebalance.
    let count = |svc: &Service| {
        svc.get("/metrics").map_or(0.0, |(_, body)| metric_sum(&body, "meshguard_duplicates_total", &[("topic", topic.as_str())]))
    };
    let (by_first, by_second) = (count(&first), count(&second));
    assert_eq!(by_first + by_second, injected as f64, "first {by_first}, second {by_second}");
    assert!(by_second > 0.0 && by_first > 40.0, "first {by_first}, second {by_second}");

    // The group-wide windows: every duplicate in the window of its timestamp, none late.
    let windows = windows_with_volume(&names.database, &topic, sent as u64, Duration::from_secs(120)).await;
    assert_eq!(sum(&windows, "volume"), sent as u64, "{windows:#?}");
    assert_eq!(sum(&windows, "late"), 0, "{windows:#?}");
    let mut got: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for w in &windows {
        let start =
            w["window_start"].as_str().and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok());
        let start = start.map(meshguard::measure::unix_ms).unwrap_or_else(|| panic!("window_start of {w}"));
        let n = sum(std::slice::from_ref(w), "duplicates");
        if n > 0 {
            *got.entry(start).or_default() += n;
        }
    }
    expected.retain(|_, n| *n > 0);
    assert_eq!(got, expected, "duplicates per window start (ms)");
}

/// A TCP proxy to the document store that the test can cut: connections are closed and new
/// ones refused until it is restored (no server is stopped: others use it).
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Self {
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_open, conns) = (open.clone(), live.clone());
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            let _ = std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            });
        };
        let _ = std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&target) else { continue };
                let (Ok(i2), Ok(o2), Ok(i3), Ok(o3)) =
                    (inbound.try_clone(), outbound.try_clone(), inbound.try_clone(), outbound.try_clone())
                else {
                    continue;
                };
                conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend([i3, o3]);
                pipe(inbound, o2);
                pipe(outbound, i2);
            }
        });
        Self { port, open, live }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Rule failures and shadow rejections count once per record although a batch is evaluated
/// again after each failed write: the document store is cut off while a batch is in flight,
/// the stream retries it several times (each retry a new evaluation), and the counters stay at
/// zero until the batch is acknowledged, then hold exactly one count per record.
#[tokio::test(flavor = "multi_thread")]
async fn rule_failures_and_shadow_rejections_count_once_through_a_retried_batch() {
    let kafka = kafka();
    let topic = unique("pay-retried");
    create_topics(&kafka, &[&topic], 1).await;
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    versioned_schemas(dir.path());
    let rules = "      rules:\n        - name: big\n          expr: amount > 100.0\n          severity: warn\n";
    product(dir.path(), "retried", &topic, &format!("{rules}{VERSIONS}"));
    let store = mongodb();
    let proxy = Proxy::start(store.trim_start_matches("mongodb://").trim_end_matches('/').to_owned());
    let uri = format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500&connectTimeoutMS=500", proxy.port);
    let mut env = env(dir.path(), true);
    env.push(("MESHGUARD__MONGODB__URI", uri));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let service = Service::start(&kafka, &dir.path().join("products"), &names, &env_refs);
    service.wait_ready(Duration::from_secs(60));

    proxy.cut();
    // All held to 1.0.0, which accepts them; the warn rule `big` fails on every one. The shadow
    // 3.0.0 rejects the 10 without payment_method and runs the rule (failing) on the other 10.
    let records: Vec<(String, Vec<u8>, Option<&str>)> =
        (0..20).map(|id| (format!("k{id}"), payment(id, id % 2 == 0, false, true), Some("1.0.0"))).collect();
    let n = produce(&kafka, &topic, &records).await;
    let metrics = || service.get("/metrics").map(|(_, body)| body).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics();
        if metric_sum(&m, "meshguard_sink_errors_total", &[("sink", "mongodb")]) >= 3.0 {
            // Evaluated at least three times, acknowledged never: nothing counted yet.
            assert_eq!(metric_sum(&m, "meshguard_rule_violations_total", &[("product", "retried")]), 0.0, "{m}");
            assert_eq!(metric_sum(&m, "meshguard_shadow_rejections_total", &[("product", "retried")]), 0.0, "{m}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the store's failures never showed: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.restore();
    wait_committed(&kafka, &names.group, &[&topic], 1, n as i64, Duration::from_secs(120));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = metrics();
        if metric_sum(&m, "meshguard_events_total", &[("topic", topic.as_str())]) >= n as f64 {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "the batch was never applied: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rule = |version: &str| {
        metric_sum(
            &m,
            "meshguard_rule_violations_total",
            &[("product", "retried"), ("version", version), ("rule", "big"), ("severity", "warn")],
        )
    };
    assert_eq!(rule("1.0.0"), 20.0, "{m}");
    assert_eq!(rule("3.0.0"), 10.0, "{m}");
    assert_eq!(metric_sum(&m, "meshguard_shadow_rejections_total", &[("product", "retried"), ("version", "3.0.0")]), 10.0, "{m}");
    assert_eq!(metric_sum(&m, "meshguard_events_total", &[("topic", topic.as_str())]), 20.0, "{m}");
}
