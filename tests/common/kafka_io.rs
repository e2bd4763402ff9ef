//! Kafka as a test sees it from outside: topics, produced events, dead letters read back,
//! committed offsets.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{binary, repo, unique};

/// Creates topics with `partitions` partitions (admin API) and waits until they exist.
pub async fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap_or_else(|e| panic!("admin: {e}"));
    let new: Vec<NewTopic<'_>> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let results = admin
        .create_topics(new.iter(), &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))))
        .await
        .unwrap_or_else(|e| panic!("create topics: {e}"));
    for r in results {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
}

/// Where one produced event landed, and what it was meant to be.
#[derive(Debug, Clone)]
pub struct Sent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub valid: bool,
    pub undecodable: bool,
    /// The Kafka key (the record id).
    pub key: String,
    /// The record's event time as the contract defines it (epoch ms), if it decodes.
    pub event_time_ms: Option<i64>,
}

/// Produces `count` generated payment events spread over `topics`; returns where each landed.
pub async fn produce_payments(bootstrap: &str, topics: &[&str], count: usize, invalid_ratio: f64, seed: u64) -> Vec<Sent> {
    produce_payments_keyed(bootstrap, topics, count, invalid_ratio, seed, 0).await
}

/// As [`produce_payments`], the record ids drawn from a pool of `keys` (0: a fresh id each),
/// so that records get several versions.
pub async fn produce_payments_keyed(
    bootstrap: &str,
    topics: &[&str],
    count: usize,
    invalid_ratio: f64,
    seed: u64,
    keys: usize,
) -> Vec<Sent> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let catalog = meshguard::product::Catalog::load(&meshguard::product::Files::Disk {
        products: repo().join("config/products"),
        schemas: repo().join("schemas"),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let contract =
        catalog.product("payments-data-product").and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("payments contract"));
    let mut generator = meshguard::generate::Generator::for_contract(&contract, seed, invalid_ratio, 0.0)
        .unwrap_or_else(|| panic!("generator"))
        .with_key_pool(keys, seed);
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let event = generator.next_event(time::OffsetDateTime::now_utc());
        let topic = topics[i % topics.len()];
        let fut = producer
            .send_result(FutureRecord::to(topic).key(&event.key).payload(&event.payload))
            .unwrap_or_else(|(e, _)| panic!("send: {e}"));
        let event_time_ms = serde_json::from_slice::<serde_json::Value>(&event.payload)
            .ok()
            .and_then(|v| meshguard::measure::event_time(&v, &contract.event_time_fields))
            .map(meshguard::measure::unix_ms);
        pending.push((topic, event.intent, event.key, event_time_ms, fut));
    }
    let mut sent = Vec::with_capacity(count);
    for (topic, intent, key, event_time_ms, fut) in pending {
        let d = match fut.await {
            Ok(Ok(d)) => d,
            Ok(Err((e, _))) => panic!("delivery failed: {e}"),
            Err(_) => panic!("delivery cancelled"),
        };
        sent.push(Sent {
            topic: topic.to_owned(),
            partition: d.partition,
            offset: d.offset,
            valid: intent.is_valid(),
            undecodable: matches!(intent, meshguard::generate::Intent::Undecodable(_)),
            key,
            event_time_ms,
        });
    }
    sent
}

/// A plain consumer of `topic` from the beginning, read_committed, in a group of its own.
pub fn reader(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer =
        reader_config(bootstrap).set("auto.offset.reset", "earliest").create().unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer.subscribe(&[topic]).unwrap_or_else(|e| panic!("subscribe: {e}"));
    consumer
}

/// A read_committed reader assigned every partition of `topic` from its beginning, joining no
/// group, that reports each partition's end (`KafkaError::PartitionEOF`); with the partitions.
pub fn reader_to_end(bootstrap: &str, topic: &str) -> (BaseConsumer, Vec<i32>) {
    let consumer: BaseConsumer =
        reader_config(bootstrap).set("enable.partition.eof", "true").create().unwrap_or_else(|e| panic!("consumer: {e}"));
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap_or_else(|e| panic!("{e}"));
    }
    consumer.assign(&tpl).unwrap_or_else(|e| panic!("assign {topic}: {e}"));
    (consumer, partitions)
}

/// What every test reader shares: its own group, no commits, committed records only.
fn reader_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    let _ = config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    config
}

/// One dead letter as read back with a plain Kafka client.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// The source position a dead letter names in its `meshguard.source.*` headers.
pub fn position(d: &DeadLetter) -> (String, i32, i64) {
    let h = &d.headers;
    (
        h.get("meshguard.source.topic").cloned().unwrap_or_default(),
        h.get("meshguard.source.partition").and_then(|p| p.parse().ok()).unwrap_or(-1),
        h.get("meshguard.source.offset").and_then(|p| p.parse().ok()).unwrap_or(-1),
    )
}

/// The positions of the invalid records among `sent`.
pub fn invalid_positions(sent: &[Sent]) -> std::collections::BTreeSet<(String, i32, i64)> {
    sent.iter().filter(|s| !s.valid).map(|s| (s.topic.clone(), s.partition, s.offset)).collect()
}

/// Reads `topic` from the beginning (read_committed) until `expected` records arrived or
/// `within` passed, then keeps reading briefly so that extra (duplicate) records would show.
pub fn read_all(bootstrap: &str, topic: &str, expected: usize, within: Duration) -> Vec<DeadLetter> {
    let consumer = reader(bootstrap, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline {
        if out.len() >= expected && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_secs(2));
        }
        if settle.is_some_and(|s| Instant::now() >= s) {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for item in h.iter() {
                    let _ = headers.insert(item.key.to_owned(), String::from_utf8_lossy(item.value.unwrap_or_default()).into_owned());
                }
            }
            out.push(DeadLetter { key: m.key().map(<[u8]>::to_vec), payload: m.payload().map(<[u8]>::to_vec), headers });
        }
    }
    out
}

/// The group's committed offset summed over the partitions of `topics` (each `partitions` wide).
pub fn committed_total(bootstrap: &str, group: &str, topics: &[&str], partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition(t, p);
        }
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(c) => c.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum(),
        Err(_) => 0,
    }
}

/// Waits until the group has committed `target` records over `topics`.
pub fn wait_committed(bootstrap: &str, group: &str, topics: &[&str], partitions: i32, target: i64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = 0;
    while Instant::now() < deadline {
        last = committed_total(bootstrap, group, topics, partitions);
        if last >= target {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("group {group} committed {last} of {target} records within {within:?}");
}

/// Reads JSON records of `topic` from the beginning until `done(all so far)` holds; panics with
/// what was read when `within` passes first.
pub fn read_json_until(
    bootstrap: &str,
    topic: &str,
    within: Duration,
    mut done: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let consumer = reader(bootstrap, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: condition not met within {within:?}; read {} records: {:#?}",
            out.len(),
            out.iter().rev().take(5).collect::<Vec<_>>()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
            && let Some(v) = m.payload().and_then(|p| serde_json::from_slice(p).ok())
        {
            out.push(v);
        }
    }
}

/// Runs `meshguard produce` for `topic` (bound in `products`) with extra arguments.
pub fn produce_cli(bootstrap: &str, products: &Path, topic: &str, args: &[&str]) {
    let out = Command::new(binary())
        .args(["produce", "--topic", topic])
        .args(args)
        .current_dir(repo())
        .env("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
        .env("MESHGUARD__PRODUCTS__DIR", products)
        .env("MESHGUARD__SCHEMAS__DIR", repo().join("schemas"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
}
