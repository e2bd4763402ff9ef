//! Settings: the embedded defaults, then the user's TOML file, then `MESHGUARD__SECTION__KEY`
//! environment variables. Validation is pure; nothing here opens a connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

mod kafka;
pub use self::kafka::{KafkaClient, Properties};

/// The defaults compiled into the binary, so `meshguard` runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Every setting meshguard reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the brokers are and how the clients are tuned.
    pub kafka: KafkaSettings,
    /// Delivery semantics and batching of the stream.
    pub delivery: DeliverySettings,
    /// Names of the side topics meshguard writes.
    pub topics: TopicSettings,
    /// The source of truth for accuracy.
    pub mysql: MysqlSettings,
    /// How accuracy is reconciled.
    pub reconcile: ReconcileSettings,
    /// Quality windows and alert rules.
    pub quality: QualitySettings,
    /// Where alerts, lineage, metrics windows and record stores are kept.
    pub mongodb: MongoSettings,
    /// Where the data product declarations live, and whether `run`/`serve` read them from
    /// there or from the catalog in MongoDB.
    pub products: ProductsSettings,
    /// Where contract schemas live.
    pub schemas: DirSettings,
    /// The operational endpoint of `run` (`/metrics`, `/healthz`, `/readyz`).
    pub http: AddrSettings,
    /// The data product API of `serve`.
    pub api: ApiSettings,
    /// How `serve` authenticates callers.
    pub auth: AuthSettings,
    /// Scheduled scans of the bound tables and collections in `run` (group-wide quality).
    pub scan: ScanSettings,
}

/// Scheduled scans in `run`: the owner of a bound source's windows reads the rows changed
/// since its last scan and counts them in the source's windows (docs/design.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// How often each bound source is scanned, in milliseconds; 0: never (`meshguard scan` only).
    pub interval_ms: u64,
    /// Rows per page.
    pub page_size: u32,
    /// At most this many rows per source and scan; the rest waits for the next scan.
    pub max_rows: u64,
}

/// Credentials the API accepts. Secrets are never logged (`Debug` redacts them); public keys
/// and the JWKS URL are not secrets.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret for bearer JWTs; empty: JWTs are not accepted.
    pub jwt_hs256_secret: String,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// `user_id:sha256hex` entries; the hex is the SHA-256 of the key.
    pub api_keys: Vec<String>,
    /// PEM file of the identity provider's public key (RSA: RS256 tokens; EC P-256: ES256);
    /// empty: none.
    pub jwt_public_key_file: String,
    /// The identity provider's JWKS endpoint (RS256 / ES256 keys by `kid`); empty: none.
    pub jwks_url: String,
    /// How long one JWKS fetch may take.
    pub jwks_timeout_ms: u64,
    /// Least time between two JWKS fetches, so tokens with made-up `kid`s cannot turn into a
    /// flood of fetches.
    pub jwks_min_refresh_ms: u64,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_hs256_secret", &if self.jwt_hs256_secret.is_empty() { "<unset>" } else { "<redacted>" })
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("api_keys", &format_args!("<{} redacted>", self.api_keys.len()))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_timeout_ms", &self.jwks_timeout_ms)
            .field("jwks_min_refresh_ms", &self.jwks_min_refresh_ms)
            .finish()
    }
}

/// A password or key: deserialised like a string, never shown by `Debug` or `Display`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<unset>" } else { "<redacted>" })
    }
}

/// Whether a librdkafka property holds a secret (its value is redacted from `Debug`).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("jaas") || k == "ssl.key.pem"
}

/// Kafka connection and pass-through client properties.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers` for every client.
    pub bootstrap_servers: String,
    /// The consumer group all instances join.
    pub group_id: String,
    /// `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default = "plaintext")]
    pub security_protocol: String,
    /// `sasl.mechanism` (e.g. `SCRAM-SHA-512`); empty: librdkafka's default.
    #[serde(default)]
    pub sasl_mechanism: String,
    /// `sasl.username`.
    #[serde(default)]
    pub sasl_username: String,
    /// `sasl.password`; set it by environment (`MESHGUARD__KAFKA__SASL_PASSWORD`).
    #[serde(default)]
    pub sasl_password: Secret,
    /// `ssl.ca.location`: PEM file of the CA(s) that sign the brokers' certificates; empty: the
    /// system's roots.
    #[serde(default)]
    pub ssl_ca_location: String,
    /// librdkafka consumer properties, applied last (they win over meshguard's choices).
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// librdkafka producer properties, applied last.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

fn plaintext() -> String {
    "plaintext".into()
}

struct RedactedProperties<'a>(&'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedProperties<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, if is_secret_property(k) { "<redacted>" } else { v.as_str() }))).finish()
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("consumer", &RedactedProperties(&self.consumer))
            .field("producer", &RedactedProperties(&self.producer))
            .finish()
    }
}

impl KafkaSettings {
    /// What the clients authenticate as, for messages: `SASL_SSL (SCRAM-SHA-512 as meshguard)`.
    pub fn describe_security(&self) -> String {
        let proto = self.security_protocol.to_ascii_uppercase();
        if proto.starts_with("SASL") {
            let mech = if self.sasl_mechanism.is_empty() { "GSSAPI" } else { self.sasl_mechanism.as_str() };
            format!("{proto} ({mech} as user {:?})", self.sasl_username)
        } else {
            proto
        }
    }
}

/// How records move from input to outputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// One Kafka transaction per batch for side topics and offsets.
    pub exactly_once: bool,
    /// Exactly-once: this instance's `transactional.id`. Empty: `{group_id}-{random}`, new at
    /// each start. A stable id per instance (e.g. the pod name) lets a restarted instance abort
    /// its crashed predecessor's open transaction at once instead of after the transaction
    /// timeout; two live instances must never share one (each fences the other).
    #[serde(default)]
    pub transactional_id: String,
    /// Upper bound of records per batch; bounds memory.
    pub batch_max_records: usize,
    /// Upper bound of a batch's payload and key bytes; bounds memory when events are large.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// How long a batch waits to fill.
    pub batch_linger_ms: u64,
    /// Threads that evaluate a batch (decode, validate, measure), and that `check` judges NDJSON
    /// chunks on; 0 = one per CPU.
    #[serde(default)]
    pub evaluation_threads: usize,
    /// Bound on the drain at shutdown.
    pub shutdown_timeout_ms: u64,
}

impl DeliverySettings {
    /// Threads that evaluate a batch: `evaluation_threads`, or one per CPU when it is 0.
    pub fn evaluators(&self) -> usize {
        match self.evaluation_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }
}

/// Side topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Dead letters: the original bytes with the reason in headers.
    pub dlq: String,
    /// Quality alerts, firing and resolved.
    pub alerts: String,
    /// OpenLineage run events.
    pub lineage: String,
    /// Partial windows of every instance (`quality.scope = "group"`), keyed by binding.
    pub partials: String,
    /// The group-wide windows' durable state (compacted): per binding, the last window closed,
    /// the offsets counted and the alert rules' state.
    pub quality_state: String,
    /// Pending reconciliation claims (group-wide quality; compacted, key `topic/partition/offset`,
    /// a tombstone once decided).
    pub claims: String,
    /// What the document store is fed from (`mongodb.materialize = "kafka"`): a lineage entry
    /// per record and the valid record's version, keyed by product and record id, written in
    /// the batch and read by the materializer (consumer group `<kafka.group_id>.materializer`).
    pub records: String,
    /// Receipts of `meshguard dlq replay`: one record per dead letter replayed (compacted,
    /// keyed by the dead letter's position). Empty: `<dlq>.replays`.
    #[serde(default)]
    pub dlq_replays: String,
}

impl TopicSettings {
    /// The replay receipts topic: `dlq_replays`, or `<dlq>.replays` when that is empty.
    pub fn dlq_replays(&self) -> String {
        if self.dlq_replays.is_empty() { format!("{}.replays", self.dlq) } else { self.dlq_replays.clone() }
    }
}

/// MySQL / MariaDB connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSettings {
    /// Connection URL; a password in it is never logged.
    pub url: String,
    /// Whether accuracy is reconciled at all.
    pub enabled: bool,
}

/// Reconciliation batching and grace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Grace period for rows not yet in the source, in milliseconds.
    pub grace_ms: u64,
    /// Most keys per query.
    pub chunk: usize,
    /// Queries in flight at once (and connections in the pool).
    #[serde(default = "default_reconcile_concurrency")]
    pub concurrency: usize,
    /// Backlog bound at which the stream pauses.
    pub max_backlog: usize,
}

fn default_batch_max_bytes() -> usize {
    16 << 20
}

fn default_reconcile_concurrency() -> usize {
    4
}

/// Windows and alert rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySettings {
    /// Window size in milliseconds.
    pub window_ms: u64,
    /// Silence threshold in milliseconds.
    pub silence_after_ms: u64,
    /// Largest acceptable share of invalid records per window.
    pub max_invalid: crate::product::sla::Percent,
    /// Breaching windows before firing.
    pub alert_fire_after: u32,
    /// Good windows before resolving.
    pub alert_resolve_after: u32,
    /// Whose data a window holds: one instance's partitions, or the whole group's.
    pub scope: QualityScope,
    /// Group-wide windows: how long after its end a window waits for partitions that have not
    /// progressed past it, in milliseconds.
    pub lateness_ms: u64,
}

/// Whose data a quality window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityScope {
    /// Each instance windows the partitions it owns (the windows' ids name it).
    Instance,
    /// Every instance sends partial windows to `topics.partials`; the owner of each binding's
    /// partition merges them into one window for the group (see docs/design.md).
    Group,
}

/// MongoDB connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    /// Connection URI.
    pub uri: String,
    /// Database holding meshguard's collections.
    pub database: String,
    /// Whether lineage, record stores, windows and alerts are written to MongoDB.
    pub enabled: bool,
    /// How lineage documents and record versions reach MongoDB: written by the stream with
    /// each batch, or produced to `topics.records` and written by the materializer.
    pub materialize: Materialize,
    /// The materializer's largest write, in documents.
    pub materialize_batch: usize,
    /// Lineage entries (valid and invalid versions) kept in each key's record store document,
    /// newest first; older ones are dropped as new ones arrive.
    pub history: usize,
}

/// How lineage documents and record versions reach the document store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialize {
    /// The stream writes them with each batch and commits once they are written: the stream
    /// runs at the document store's pace.
    Inline,
    /// The stream produces them to `topics.records` in the batch (its transaction, in
    /// exactly-once mode) and commits once Kafka acknowledges; the materializer, a consumer
    /// group of its own inside `run`, writes them at the store's pace (see docs/design.md).
    Kafka,
}

/// Where `run` and `serve` take the data products from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductsSource {
    /// `products.dir` and `schemas.dir` (or the built-in products), read once at start.
    Files,
    /// The catalog `meshguard catalog apply` wrote to MongoDB `data_products`, re-read every
    /// `products.reload_interval_ms` and switched to when a revision changes.
    Mongodb,
}

/// The data products' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductsSettings {
    /// The declarations' directory (`source = "files"`, `check`, `lint`, `catalog apply`).
    pub dir: PathBuf,
    /// Where `run` and `serve` read the catalog from.
    pub source: ProductsSource,
    /// With `source = "mongodb"`: how often the revisions are re-read, in milliseconds.
    pub reload_interval_ms: u64,
}

/// A directory setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSettings {
    /// The directory, relative to the working directory unless absolute.
    pub dir: PathBuf,
}

/// A listen address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrSettings {
    /// `host:port` to bind.
    pub addr: SocketAddr,
}

/// The data product API of `serve`: where it listens and the limits that keep one client (or a
/// crowd of them) from holding its connections, its memory or the access audit hostage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// `host:port` of the API.
    pub addr: SocketAddr,
    /// Where `/metrics` and `/openapi.json` are served. Absent: on `addr`, public like `/healthz`
    /// (a documented choice: they name routes and roles, never records or secrets); set: only
    /// there, so the API port shows neither.
    #[serde(default)]
    pub ops_addr: Option<SocketAddr>,
    /// Connections open at once; a connection over the cap is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; it is also the idle timeout of a
    /// kept-alive connection between requests.
    pub header_read_timeout_ms: u64,
    /// How long a request may take from its headers to its response, body upload included
    /// (a client that stops sending its body gets 408).
    pub request_timeout_ms: u64,
    /// How long `serve` waits for open connections after SIGTERM before it closes them.
    pub shutdown_timeout_ms: u64,
    /// Requests per second each client address may make without valid credentials (their
    /// refusals are audited; beyond this they get 429 and are counted, so a flood cannot fill
    /// the audit).
    pub anonymous_per_second: f64,
    /// Burst allowance of the same limit.
    pub anonymous_burst: u32,
}

/// A configuration that could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// Merging or typing failed; figment names the key and its source.
    #[error("configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// A value is present but unusable.
    #[error("configuration: {key}: {reason}")]
    Value {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Settings {
    /// Loads defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("MESHGUARD__").split("__"));
        let settings: Settings = figment.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Only the embedded defaults (used by tests and by `check`).
    pub fn defaults() -> Result<Self, ConfigError> {
        let settings: Settings = Figment::from(Toml::string(DEFAULT_TOML)).extract().map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::Value { key: "kafka.bootstrap_servers", reason: "is empty".into() });
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(ConfigError::Value { key: "kafka.group_id", reason: "is empty".into() });
        }
        match self.kafka.security_protocol.to_ascii_lowercase().as_str() {
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl" => {}
            other => {
                return Err(ConfigError::Value {
                    key: "kafka.security_protocol",
                    reason: format!("{other:?} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"),
                });
            }
        }
        if !self.kafka.ssl_ca_location.is_empty() && !Path::new(&self.kafka.ssl_ca_location).is_file() {
            return Err(ConfigError::Value {
                key: "kafka.ssl_ca_location",
                reason: format!("{} is not a readable file", self.kafka.ssl_ca_location),
            });
        }
        if self.scan.interval_ms > 0 && self.quality.scope != QualityScope::Group {
            return Err(ConfigError::Value {
                key: "scan.interval_ms",
                reason: "scheduled scans need quality.scope = \"group\" (the owner of a table's windows scans it)".into(),
            });
        }
        if self.scan.page_size == 0 {
            return Err(ConfigError::Value { key: "scan.page_size", reason: "must be at least 1".into() });
        }
        if self.scan.max_rows == 0 {
            return Err(ConfigError::Value { key: "scan.max_rows", reason: "must be at least 1".into() });
        }
        if self.quality.window_ms < 100 {
            return Err(ConfigError::Value { key: "quality.window_ms", reason: "must be at least 100".into() });
        }
        if self.reconcile.concurrency == 0 {
            return Err(ConfigError::Value { key: "reconcile.concurrency", reason: "must be at least 1".into() });
        }
        if self.reconcile.chunk == 0 {
            return Err(ConfigError::Value { key: "reconcile.chunk", reason: "must be at least 1".into() });
        }
        if self.delivery.evaluation_threads > 256 {
            return Err(ConfigError::Value { key: "delivery.evaluation_threads", reason: "must be at most 256 (0 = one per CPU)".into() });
        }
        if self.delivery.batch_max_bytes == 0 {
            return Err(ConfigError::Value { key: "delivery.batch_max_bytes", reason: "must be at least 1".into() });
        }
        if self.delivery.batch_max_records == 0 {
            return Err(ConfigError::Value { key: "delivery.batch_max_records", reason: "must be at least 1".into() });
        }
        if self.api.max_connections == 0 {
            return Err(ConfigError::Value { key: "api.max_connections", reason: "must be at least 1".into() });
        }
        for (key, ms) in
            [("api.header_read_timeout_ms", self.api.header_read_timeout_ms), ("api.request_timeout_ms", self.api.request_timeout_ms)]
        {
            if ms == 0 {
                return Err(ConfigError::Value { key, reason: "must be at least 1".into() });
            }
        }
        if !(self.api.anonymous_per_second.is_finite() && self.api.anonymous_per_second >= 0.0) {
            return Err(ConfigError::Value { key: "api.anonymous_per_second", reason: "must be a number >= 0".into() });
        }
        if self.api.ops_addr == Some(self.api.addr) {
            return Err(ConfigError::Value { key: "api.ops_addr", reason: "must differ from api.addr".into() });
        }
        for (key, topic) in
            [("topics.dlq", &self.topics.dlq), ("topics.alerts", &self.topics.alerts), ("topics.lineage", &self.topics.lineage)]
        {
            if !is_valid_topic_name(topic) {
                return Err(ConfigError::Value { key, reason: format!("{topic:?} is not a valid Kafka topic name") });
            }
        }
        for (key, topic) in [("topics.dlq_replays", &self.topics.dlq_replays())] {
            if !is_valid_topic_name(topic) {
                return Err(ConfigError::Value { key, reason: format!("{topic:?} is not a valid Kafka topic name") });
            }
        }
        Ok(())
    }
}

/// Kafka's own rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_match_design() -> Result<(), ConfigError> {
        let s = Settings::defaults()?;
        assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(s.kafka.group_id, "meshguard");
        assert!(!s.delivery.exactly_once);
        assert_eq!(s.mysql.url, "mysql://root@127.0.0.1:3306/banking");
        assert_eq!(s.mongodb.uri, "mongodb://127.0.0.1:27017");
        assert_eq!(s.mongodb.database, "datamesh");
        assert_eq!(s.products.dir, PathBuf::from("config/products"));
        assert_eq!(s.schemas.dir, PathBuf::from("schemas"));
        assert_eq!(s.http.addr.to_string(), "127.0.0.1:9464");
        assert_eq!(s.api.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.topics.dlq, "datamesh.dlq");
        Ok(())
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let mut k = Settings::defaults().map(|s| s.kafka).unwrap_or_else(|e| panic!("{e}"));
        k.sasl_password = Secret::new("hunter2-kafka");
        let _ = k.consumer.insert("ssl.key.password".into(), "hunter2-key".into());
        let _ = k.producer.insert("sasl.jaas.config".into(), "password=hunter2-jaas".into());
        let shown = format!("{k:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(is_valid_topic_name("payments.created"));
        assert!(!is_valid_topic_name(".."));
        assert!(!is_valid_topic_name("a b"));
        assert!(!is_valid_topic_name(&"x".repeat(250)));
    }
}
