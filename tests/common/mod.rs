//! Shared helpers for integration tests against the real servers started by
//! `testcontainers/up`. Nothing here fakes a server: a missing server fails the test loudly.

#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub const START_HINT: &str = "start the test servers with `testcontainers/up` and `source testcontainers/env`";

/// The broker address from MESHGUARD_TEST_KAFKA; fails loudly when unset or unreachable.
pub fn kafka() -> String {
    let addr = std::env::var("MESHGUARD_TEST_KAFKA").unwrap_or_else(|_| panic!("MESHGUARD_TEST_KAFKA is not set: {START_HINT}"));
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &addr).create().unwrap_or_else(|e| panic!("kafka client: {e}"));
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
        panic!("Kafka at {addr} does not answer ({e}): {START_HINT}");
    }
    addr
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshguard"))
}

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

/// A product directory binding `topics` to the seed's payment contract.
pub struct Products {
    pub dir: tempfile::TempDir,
}

impl Products {
    pub fn payments(topics: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        bind_product(dir.path(), "payments.yaml", topics);
        Self { dir }
    }
}

/// Writes `config/products/<file>` into `dir` with every contract's Kafka `topics:` list
/// replaced by `topics`.
pub fn bind_product(dir: &Path, file: &str, topics: &[&str]) {
    let seed = std::fs::read_to_string(repo().join("config/products").join(file)).unwrap_or_else(|e| panic!("{e}"));
    let mut yaml = String::new();
    let mut skipping = false;
    for line in seed.lines() {
        if line.starts_with("      topics:") {
            yaml.push_str(line);
            yaml.push('\n');
            for t in topics {
                yaml.push_str(&format!("        - {t}\n"));
            }
            skipping = true;
            continue;
        }
        if skipping && line.trim_start().starts_with("- ") {
            continue;
        }
        skipping = false;
        yaml.push_str(line);
        yaml.push('\n');
    }
    std::fs::write(dir.join(file), yaml).unwrap_or_else(|e| panic!("{e}"));
}

/// Side-topic names and group of one test.
pub struct Names {
    pub group: String,
    pub dlq: String,
    pub alerts: String,
    pub lineage: String,
    /// MongoDB database of this test.
    pub database: String,
}

impl Names {
    pub fn new() -> Self {
        Self {
            group: unique("g"),
            dlq: unique("dlq"),
            alerts: unique("alerts"),
            lineage: unique("lineage"),
            database: unique("db").replace('-', "_"),
        }
    }
}

/// MongoDB URI from MESHGUARD_TEST_MONGODB; fails loudly when unset.
pub fn mongodb() -> String {
    std::env::var("MESHGUARD_TEST_MONGODB").unwrap_or_else(|_| panic!("MESHGUARD_TEST_MONGODB is not set: {START_HINT}"))
}

/// MySQL URL from MESHGUARD_TEST_MYSQL; fails loudly when unset.
pub fn mysql() -> String {
    std::env::var("MESHGUARD_TEST_MYSQL").unwrap_or_else(|_| panic!("MESHGUARD_TEST_MYSQL is not set: {START_HINT}"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

/// A running `meshguard run`.
pub struct Service {
    pub child: Child,
    pub http: String,
}

impl Service {
    pub fn start(bootstrap: &str, products: &Path, names: &Names, extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary());
        let _ = cmd
            .arg("run")
            .current_dir(repo())
            .env("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
            .env("MESHGUARD__KAFKA__GROUP_ID", &names.group)
            .env("MESHGUARD__PRODUCTS__DIR", products)
            .env("MESHGUARD__SCHEMAS__DIR", repo().join("schemas"))
            .env("MESHGUARD__TOPICS__DLQ", &names.dlq)
            .env("MESHGUARD__TOPICS__ALERTS", &names.alerts)
            .env("MESHGUARD__TOPICS__LINEAGE", &names.lineage)
            .env("MESHGUARD__HTTP__ADDR", &http)
            .env("MESHGUARD__MONGODB__URI", mongodb())
            .env("MESHGUARD__MONGODB__DATABASE", &names.database)
            .env("MESHGUARD__MYSQL__URL", mysql())
            .env("RUST_LOG", std::env::var("MESHGUARD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            let _ = cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn meshguard: {e}"));
        Self { child, http }
    }

    /// Sends a signal by number (9 = KILL, 15 = TERM).
    pub fn signal(&self, sig: i32) {
        let status =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "meshguard did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GETs a path of the operational endpoint.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.http, path)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("meshguard at {} was not ready within {within:?}", self.http);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP/1.0 GET, so tests need no HTTP client dependency.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// Sum of a metric's samples whose labels contain every `label=value` given.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Where one produced event landed, and what it was meant to be.
#[derive(Debug, Clone)]
pub struct Sent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub valid: bool,
    pub undecodable: bool,
}

/// Produces `count` generated payment events spread over `topics`; returns where each landed.
pub async fn produce_payments(bootstrap: &str, topics: &[&str], count: usize, invalid_ratio: f64, seed: u64) -> Vec<Sent> {
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
    let mut generator =
        meshguard::generate::Generator::for_contract(&contract, seed, invalid_ratio, 0.0).unwrap_or_else(|| panic!("generator"));
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let event = generator.next_event(time::OffsetDateTime::now_utc());
        let topic = topics[i % topics.len()];
        let fut = producer
            .send_result(FutureRecord::to(topic).key(&event.key).payload(&event.payload))
            .unwrap_or_else(|(e, _)| panic!("send: {e}"));
        pending.push((topic, event.intent, fut));
    }
    let mut sent = Vec::with_capacity(count);
    for (topic, intent, fut) in pending {
        let delivery = fut.await.unwrap_or_else(|_| panic!("delivery cancelled"));
        let d = delivery.unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
        sent.push(Sent {
            topic: topic.to_owned(),
            partition: d.partition,
            offset: d.offset,
            valid: intent.is_valid(),
            undecodable: matches!(intent, meshguard::generate::Intent::Undecodable(_)),
        });
    }
    sent
}

/// A plain consumer of `topic` from the beginning, read_committed, in a group of its own.
pub fn reader(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer.subscribe(&[topic]).unwrap_or_else(|e| panic!("subscribe: {e}"));
    consumer
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

/// Every document of `collection` in `database` matching `filter`, as JSON.
pub async fn mongo_docs(database: &str, collection: &str, filter: bson::Document) -> Vec<serde_json::Value> {
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("MongoDB: {e}: {START_HINT}"));
    let mut cursor =
        client.database(database).collection::<bson::Document>(collection).find(filter).await.unwrap_or_else(|e| panic!("find: {e}"));
    let mut out = Vec::new();
    while cursor.advance().await.unwrap_or_else(|e| panic!("cursor: {e}")) {
        let d = cursor.deserialize_current().unwrap_or_else(|e| panic!("{e}"));
        out.push(bson::Bson::Document(d).into_relaxed_extjson());
    }
    out
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

/// Alerts of `topic` for `metric` in `state` among `alerts`.
pub fn alerts_of<'a>(alerts: &'a [serde_json::Value], topic: &str, metric: &str, state: &str) -> Vec<&'a serde_json::Value> {
    alerts.iter().filter(|a| a["topic"] == topic && a["metric"] == metric && a["state"] == state).collect()
}

/// Sum of a numeric field over documents.
pub fn sum(docs: &[serde_json::Value], field: &str) -> u64 {
    docs.iter()
        .filter_map(|d| {
            d[field]
                .as_u64()
                .or_else(|| d[field].as_i64().map(|v| v as u64))
                .or_else(|| d[field]["$numberLong"].as_str().and_then(|s| s.parse().ok()))
        })
        .sum()
}
