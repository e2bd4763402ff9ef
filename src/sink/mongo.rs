//! The MongoDB sink: record stores (one per data product, one document per key holding the
//! newest valid version and the key's lineage: [`super::records`]), lineage of records without
//! a key, and replace-or-insert documents (quality windows, alerts, product declarations).
//!
//! Every write is idempotent, so the at-least-once stream may replay a batch after a crash:
//! lineage entries have a deterministic id (`topic/partition/offset/timestamp_ms`: a re-created
//! topic reuses positions, not timestamps) and a replayed one is already there; the newest
//! version of a record is the one with the greatest `(event_time_ms, offset)`, so a replay or an
//! out-of-order older event never hides a newer one.
//!
//! The code needs nothing FerretDB (the MongoDB-wire server used in tests) lacks: no
//! transactions, no client `bulkWrite`, no aggregation. FerretDB 1.x looks up only an exact
//! `_id` filter in an index (with the index `testcontainers/ferretdb` adds), and scans the
//! collection for any other: so every read and every update is by `_id`, and new documents go
//! in unordered `insert_many`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use rdkafka::message::{BorrowedMessage, Message};

use crate::contract::Contract;
pub use crate::error::redact_uri;
use crate::error::{Error, Secrets, System};
use crate::measure::unix_ms;
use crate::quality::alert::{Alert, AlertState};
use crate::quality::window::ClosedWindow;
use crate::verdict::Evaluation;

/// The seed's per-record lineage collection.
pub const LINEAGE: &str = "data_lineage";
/// The seed's data product declarations.
pub const DATA_PRODUCTS: &str = "data_products";
/// One document per product revision `catalog apply` wrote (`_id` = `<product>@<revision>`):
/// inserting it claims the revision, so two applies never write the same one.
pub const DATA_PRODUCT_REVISIONS: &str = "data_product_revisions";
/// The seed's quality alerts (one document per alert episode).
pub const ALERTS: &str = "data_quality_alerts";
/// The seed's users (`user_id`, `roles`).
pub const USERS: &str = "users";
/// One document per (product, contract, topic, window).
pub const QUALITY_METRICS: &str = "quality_metrics";
/// One document per API access decision.
pub const ACCESS_AUDIT: &str = "access_audit";

/// The indexes [`MongoSink::connect`] creates on [`LINEAGE`].
pub const LINEAGE_INDEXES: [&str; 3] = ["lineage_document_id", "lineage_record_id", "lineage_product"];

/// How long the driver looks for a server before an operation fails (a down server fails fast).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// MongoDB's duplicate key error code (E11000).
pub(super) const DUPLICATE_KEY: i32 = 11000;
/// Server error codes that mean "try again later" rather than "your data is wrong".
const TRANSIENT_CODES: [i32; 17] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11601, // Interrupted
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Why a MongoDB write failed: `Unavailable` (network/timeouts/server selection: the caller
/// retries the batch) or `Rejected` (the server refused the data: a bug or bad config).
#[derive(Debug, thiserror::Error)]
pub enum MongoSinkError {
    /// The server could not be reached or did not answer in time; retrying the same batch later
    /// is safe (every write is idempotent).
    #[error("mongodb unavailable: {0}")]
    Unavailable(String),
    /// The server refused the request (bad data, bad configuration, a bug); retrying will not help.
    #[error("mongodb rejected the write: {0}")]
    Rejected(String),
}

impl MongoSinkError {
    /// Whether the caller should retry the batch later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<MongoSinkError> for Error {
    /// Unavailable: retry the batch with backoff (every write is idempotent). Rejected: the
    /// same documents would be refused again, so the stream stops with the error instead of
    /// retrying it forever.
    fn from(e: MongoSinkError) -> Self {
        match e {
            MongoSinkError::Unavailable(_) => Error::transient(System::MongoDb, e),
            MongoSinkError::Rejected(_) => Error::refused(System::MongoDb, e),
        }
    }
}

/// One input record's lineage: the seed's shape, with a deterministic id.
#[derive(Debug, Clone)]
pub struct LineageDoc {
    /// Kafka topic the record was read from.
    pub source_topic: String,
    /// Kafka partition.
    pub source_partition: i32,
    /// Kafka offset.
    pub source_offset: i64,
    /// Kafka record timestamp.
    pub source_timestamp_ms: Option<i64>,
    /// Data product the topic belongs to.
    pub product: String,
    /// Contract the record was validated against.
    pub contract: String,
    /// That contract's version.
    pub contract_version: String,
    /// The record's business id (key field), when it has one.
    pub record_id: Option<String>,
    /// `"valid"` or `"invalid"`.
    pub outcome: &'static str,
    /// Record store collection for valid records, the DLQ topic name for invalid ones.
    pub destination_collection: String,
    /// `"mongodb"` or `"kafka"`.
    pub destination_system: &'static str,
    /// When meshguard processed the record.
    pub processed_at: time::OffsetDateTime,
}

impl LineageDoc {
    /// The deterministic document id: `"{topic}/{partition}/{offset}/{timestamp_ms}"`. The
    /// position alone does not tell a replay from a new record: offsets start at 0 again when
    /// a topic is re-created (a failover, any test environment), and every new record was
    /// taken for a replay of the old one and dropped. A replayed record keeps its timestamp.
    pub fn id(&self) -> String {
        record_position(&self.source_topic, self.source_partition, self.source_offset, self.source_timestamp_ms)
    }

    /// The document as stored in [`LINEAGE`] (the seed's `trackDataLineage` shape).
    pub fn to_document(&self) -> Document {
        let id = self.id();
        doc! {
            "_id": &id,
            "lineage_id": &id,
            "product": &self.product,
            "source": {
                "system": "kafka",
                "topic": &self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
                "record_id": self.record_id.clone(),
                "timestamp": self.source_timestamp_ms.map(DateTime::from_millis),
            },
            "destination": {
                "system": self.destination_system,
                "collection": &self.destination_collection,
                "document_id": self.record_id.clone(),
            },
            "transformation": {
                "type": "contract-validation",
                "contract": &self.contract,
                "version": &self.contract_version,
                "outcome": self.outcome,
            },
            "created_at": bson_time(self.processed_at),
        }
    }
}

/// The latest valid record of a key, for the product's record store.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// The record's key: the document's `_id`.
    pub key: String,
    /// The decoded record; an object's fields are stored at the top level.
    pub record: serde_json::Value,
    /// Event time; a missing one sorts oldest.
    pub event_time_ms: Option<i64>,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset: breaks ties between equal event times.
    pub offset: i64,
    /// The Kafka record's timestamp: with the position, tells a replay from a new record.
    pub timestamp_ms: Option<i64>,
    /// Contract the record satisfied.
    pub contract: String,
    /// That contract's version.
    pub contract_version: String,
}

/// A Kafka record's identity across replays and topic re-creation:
/// `"{topic}/{partition}/{offset}/{timestamp_ms}"` (`-` for a record without a timestamp).
pub fn record_position(topic: &str, partition: i32, offset: i64, timestamp_ms: Option<i64>) -> String {
    match timestamp_ms {
        Some(ts) => format!("{topic}/{partition}/{offset}/{ts}"),
        None => format!("{topic}/{partition}/{offset}/-"),
    }
}

/// One input record on its way to the document store: its lineage and, for a valid record with
/// a key, its version. With `mongodb.materialize = "kafka"` this is what `topics.records`
/// carries (JSON, keyed by [`Entry::key`]) from the stream to the materializer; inline, the
/// stream turns it into documents itself. Both ways give the same documents.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Kafka topic the record was read from.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Kafka record timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    /// Data product the topic belongs to.
    pub product: String,
    /// Contract (version) the record was held to.
    pub contract: String,
    /// That contract's version.
    pub contract_version: String,
    /// The record's business id (key field), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// Whether the record satisfied its contract.
    pub valid: bool,
    /// Where an invalid record went (the dead-letter topic).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dead_letters: String,
    /// When meshguard processed the record (milliseconds since the epoch).
    pub processed_at_ms: i64,
    /// The record's event time (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<i64>,
    /// The decoded record, for a valid record with a key (its version in the record store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
}

impl Entry {
    /// The entry of `m` held to `contract` (taking a valid record's decoded form out of `eval`).
    pub fn of(
        m: &BorrowedMessage<'_>,
        contract: &Contract,
        eval: &mut Evaluation,
        dlq_topic: &str,
        processed_at: time::OffsetDateTime,
    ) -> Self {
        let valid = eval.is_valid();
        // Only a valid record with a key has a version.
        let record = if eval.record_id.is_some() { eval.record.take() } else { None };
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            product: contract.product.clone(),
            contract: contract.name.clone(),
            contract_version: contract.version.clone(),
            record_id: eval.record_id.clone(),
            valid,
            dead_letters: if valid { String::new() } else { dlq_topic.to_owned() },
            processed_at_ms: unix_ms(processed_at),
            event_time_ms: eval.event_time.map(unix_ms),
            record,
        }
    }

    /// The Kafka key in `topics.records`: product and record id (a key's versions stay in one
    /// partition, in order), or the record's position when it has no id.
    pub fn key(&self) -> String {
        match &self.record_id {
            Some(id) => format!("{}/{id}", self.product),
            None => format!("{}/@{}", self.product, record_position(&self.topic, self.partition, self.offset, self.timestamp_ms)),
        }
    }
}

/// What a batch writes to the document store: a lineage document for every record with a
/// contract, and a version of every valid record with a key. Built record by record (on the
/// stream thread in the batch's order, or by the materializer), written at once.
#[derive(Debug, Default)]
pub struct Documents {
    entries: Vec<Entry>,
}

impl Documents {
    /// Adds `m`'s lineage and, for a valid record with a key, its version (taking the decoded
    /// record out of `eval`). `dlq_topic` is where an invalid record went.
    pub fn add(
        &mut self,
        m: &BorrowedMessage<'_>,
        contract: &Contract,
        eval: &mut Evaluation,
        dlq_topic: &str,
        processed_at: time::OffsetDateTime,
    ) {
        self.entries.push(Entry::of(m, contract, eval, dlq_topic, processed_at));
    }

    /// Adds an entry (the materializer's, read from `topics.records`).
    pub fn push(&mut self, e: Entry) {
        self.entries.push(e);
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the entries: keyed records folded into their record stores' documents (see
    /// [`super::records`]), records without a key as `data_lineage` documents; the number of
    /// documents written.
    ///
    /// `single_writer`: no other writer merges these records' keys meanwhile (the materializer,
    /// whose input is partitioned by key); otherwise each merge holds a lock on its key.
    pub async fn write(self, mongo: &MongoSink, single_writer: bool) -> Result<usize, MongoSinkError> {
        super::records::write(mongo, self.entries, mongo.history, single_writer).await
    }
}

/// What the quality stage reports with a batch: closed windows, alert transitions and
/// OpenLineage run events, written by the sinks with the batch and retried with it.
#[derive(Debug, Clone, Copy)]
pub struct Reports<'a> {
    /// Closed windows (one `quality_metrics` document each).
    pub windows: &'a [ClosedWindow],
    /// Alert transitions (the alerts topic and `data_quality_alerts`).
    pub alerts: &'a [Alert],
    /// OpenLineage run events (the lineage topic).
    pub events: &'a [serde_json::Value],
    /// The OpenLineage job name: the lineage topic's key.
    pub job: &'a str,
    /// This instance, recorded in (and part of the id of) its window documents; `None` for
    /// group-wide windows, which no instance owns.
    pub instance: Option<&'a str>,
    /// The partials of this batch (group-wide quality), for the partials topic.
    pub partials: &'a [crate::quality::partial::Partial],
    /// Positions of the claims decided (group-wide quality): tombstones for the claims topic.
    pub claims_decided: &'a [String],
}

/// The MongoDB sink: one client (a connection pool), one database.
#[derive(Clone)]
pub struct MongoSink {
    db: Database,
    uri: Arc<str>,
    /// Lineage entries kept per key in a record store (`mongodb.history`).
    history: usize,
}

impl fmt::Debug for MongoSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSink").field("uri", &self.uri).field("database", &self.db.name()).finish()
    }
}

impl MongoSink {
    /// Connects (server selection timeout ~5 s, so a down server fails fast), and creates
    /// indexes (idempotent) on: data_lineage (destination.document_id, source.record_id,
    /// product), data_quality_alerts (product, state, fired_at), quality_metrics
    /// (product+contract+topic+window_start), access_audit (at, product), users (user_id
    /// unique), and on each product's record store (`_meta.updated_at`).
    pub async fn connect(uri: &str, database: &str, products: &[String]) -> Result<Self, MongoSinkError> {
        let sink = Self::open(uri, database).await?;
        let secret = Secrets::of(uri);
        sink.create_indexes(products).await.map_err(|e| secret.scrub_error(e))?;
        Ok(sink)
    }

    /// Connects without creating indexes (a second client of a process whose first one made
    /// them: the MongoDB-wire server used in tests drops connections that race to create the
    /// same index).
    pub async fn open(uri: &str, database: &str) -> Result<Self, MongoSinkError> {
        let secret = Secrets::of(uri);
        let mut options = ClientOptions::parse(uri).await.map_err(|e| secret.scrub_error(classify(&e)))?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(CONNECT_TIMEOUT);
        }
        if options.app_name.is_none() {
            options.app_name = Some("meshguard".to_owned());
        }
        let secret = secret.with_password(options.credential.as_ref().and_then(|c| c.password.clone()));
        let client = Client::with_options(options).map_err(|e| secret.scrub_error(classify(&e)))?;
        let db = client.database(database);
        // The server is reached here, so that a wrong address or credentials fail fast.
        let _ = db.run_command(doc! { "ping": 1 }).await.map_err(|e| secret.scrub_error(classify(&e)))?;
        Ok(Self { db, uri: Arc::from(redact_uri(uri)), history: super::records::DEFAULT_HISTORY })
    }

    /// Keeps the newest `history` lineage entries per key in the record stores (at least 1).
    #[must_use]
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(1);
        self
    }

    /// Name of a product's record store collection: "records.{product}".
    pub fn record_store(product: &str) -> String {
        format!("records.{product}")
    }

    /// The database, for readers (the API) that need more than this sink offers.
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub(super) fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection::<Document>(name)
    }

    async fn create_indexes(&self, products: &[String]) -> Result<(), MongoSinkError> {
        let [document_id, record_id, product] = LINEAGE_INDEXES;
        let lineage = vec![
            index(doc! { "destination.document_id": 1 }, document_id, false),
            index(doc! { "source.record_id": 1 }, record_id, false),
            index(doc! { "product": 1 }, product, false),
        ];
        let alerts = vec![index(doc! { "product": 1, "state": 1, "fired_at": -1 }, "alerts_product_state_fired_at", false)];
        let metrics = vec![index(
            doc! { "product": 1, "contract": 1, "topic": 1, "window_start": -1 },
            "quality_product_contract_topic_window",
            false,
        )];
        let audit = vec![index(doc! { "at": -1 }, "audit_at", false), index(doc! { "product": 1, "at": -1 }, "audit_product_at", false)];
        let users = vec![index(doc! { "user_id": 1 }, "users_user_id", true)];
        let mut plan = vec![
            (LINEAGE.to_owned(), lineage),
            (ALERTS.to_owned(), alerts),
            (QUALITY_METRICS.to_owned(), metrics),
            (ACCESS_AUDIT.to_owned(), audit),
            (USERS.to_owned(), users),
        ];
        for p in products {
            plan.push((Self::record_store(p), vec![index(doc! { "_meta.updated_at": -1 }, "records_updated_at", false)]));
        }
        for (collection, models) in plan {
            // Only the missing ones: the MongoDB-wire server used in tests panics on a
            // createIndexes that names indexes the collection already has.
            // A server that cannot be reached fails here, fast; anything else (a collection that
            // does not exist yet, on some servers) means no index yet.
            let existing = match self.collection(&collection).list_index_names().await {
                Ok(names) => names,
                Err(e) => match classify(&e) {
                    unavailable @ MongoSinkError::Unavailable(_) => return Err(in_collection(&collection, unavailable)),
                    MongoSinkError::Rejected(_) => Vec::new(),
                },
            };
            let missing: Vec<IndexModel> = models
                .into_iter()
                .filter(|m| m.options.as_ref().and_then(|o| o.name.as_ref()).is_none_or(|n| !existing.contains(n)))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let _ = self.collection(&collection).create_indexes(missing).await.map_err(|e| in_collection(&collection, classify(&e)))?;
        }
        Ok(())
    }

    /// Inserts lineage documents with `_id = doc.id()`, unordered; duplicate-key errors (a
    /// replay) count as success, any other write error is returned. Empty slice = no-op.
    pub async fn write_lineage(&self, docs: &[LineageDoc]) -> Result<(), MongoSinkError> {
        self.insert_new(LINEAGE, docs.iter().map(LineageDoc::to_document).collect()).await
    }

    /// Writes valid versions of records to records.{product} as the stream does (one document
    /// per key, `_id` = the key: the newest version by `(event_time_ms, offset)` and the key's
    /// lineage; see [`super::records`]). A replay writes nothing; an out-of-order older event
    /// never hides a newer one.
    pub async fn write_versions(&self, product: &str, records: &[StoredRecord]) -> Result<(), MongoSinkError> {
        let processed_at_ms = unix_ms(time::OffsetDateTime::now_utc());
        let entries = records
            .iter()
            .map(|r| Entry {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                product: product.to_owned(),
                contract: r.contract.clone(),
                contract_version: r.contract_version.clone(),
                record_id: Some(r.key.clone()),
                valid: true,
                dead_letters: String::new(),
                processed_at_ms,
                event_time_ms: r.event_time_ms,
                record: Some(r.record.clone()),
            })
            .collect();
        super::records::write(self, entries, self.history, false).await.map(|_| ())
    }

    /// Writes entries as the stream does: a keyed record's lineage (and, valid, its version)
    /// into its key's record store document, a record without a key as a `data_lineage`
    /// document. The number of documents written.
    pub async fn write_entries(&self, entries: Vec<Entry>) -> Result<usize, MongoSinkError> {
        super::records::write(self, entries, self.history, false).await
    }

    /// Inserts documents unordered; duplicate `_id`s (a replay) count as success.
    pub async fn insert_new(&self, collection: &str, documents: Vec<Document>) -> Result<(), MongoSinkError> {
        if documents.is_empty() {
            return Ok(());
        }
        match self.collection(collection).insert_many(documents).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                    match failure.write_errors.iter().flatten().find(|w| w.code != DUPLICATE_KEY) {
                        None => Ok(()),
                        Some(w) => Err(in_collection(
                            collection,
                            MongoSinkError::Rejected(format!(
                                "write error {} ({}): {}",
                                w.code,
                                w.code_name.as_deref().unwrap_or("?"),
                                w.message
                            )),
                        )),
                    }
                }
                _ => Err(in_collection(collection, classify(&e))),
            },
        }
    }

    /// Inserts JSON documents with the given ids unless they exist (windows, alert transitions).
    pub async fn insert_json(&self, collection: &str, docs: &[(String, serde_json::Value)]) -> Result<(), MongoSinkError> {
        let mut out = Vec::with_capacity(docs.len());
        for (id, doc) in docs {
            let Bson::Document(fields) = json_to_bson(doc) else {
                return Err(MongoSinkError::Rejected(format!("{collection}/{id}: a document must be a JSON object")));
            };
            let mut d = Document::new();
            let _ = d.insert("_id", id.as_str());
            for (k, v) in fields {
                if k != "_id" {
                    let _ = d.insert(k, v);
                }
            }
            out.push(d);
        }
        self.insert_new(collection, out).await
    }

    /// Replace-or-insert one JSON document with `_id = id` (used for quality windows, alerts,
    /// data product declarations). The document must be a JSON object; its own `_id` is replaced.
    pub async fn put(&self, collection: &str, id: &str, doc: &serde_json::Value) -> Result<(), MongoSinkError> {
        match json_to_bson(doc) {
            Bson::Document(d) => self.put_document(collection, id, d).await,
            other => Err(MongoSinkError::Rejected(format!(
                "{collection}/{id}: a document must be a JSON object, not {:?}",
                other.element_type()
            ))),
        }
    }

    /// [`put`](Self::put) for a BSON document (to store real BSON dates, for instance).
    pub async fn put_document(&self, collection: &str, id: &str, doc: Document) -> Result<(), MongoSinkError> {
        let mut replacement = Document::new();
        let _ = replacement.insert("_id", id);
        for (k, v) in doc {
            if k != "_id" {
                let _ = replacement.insert(k, v);
            }
        }
        let coll = self.collection(collection);
        // Two concurrent upserts of a new id may both try to insert; the loser retries once
        // (the document exists then, so the retry is a plain replace).
        for attempt in 0..2 {
            match coll.replace_one(doc! { "_id": id }, &replacement).upsert(true).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && is_duplicate_key(&e) => {}
                Err(e) => return Err(in_collection(collection, classify(&e))),
            }
        }
        Ok(())
    }

    /// Writes the windows and alerts of `reports` (idempotent: deterministic ids). A window is
    /// replaced if it exists: the owner of group-wide windows writes them before its Kafka
    /// transaction (exactly-once) or its state (at-least-once) commits, so an owner that fails
    /// in between leaves a window that the next owner closes again, from the state it restores,
    /// possibly with other contents (a partial counted `late` there, in its own window here);
    /// the next owner's windows are the ones its state goes on from, so the newest write wins
    /// (insert-only kept the failed owner's and lost what the next one counted differently).
    /// Alerts are insert-only: an episode is two documents (`{id}:firing`, `{id}:resolved`).
    pub async fn write_reports(&self, reports: &Reports<'_>) -> Result<(), MongoSinkError> {
        let windows: Vec<(String, serde_json::Value)> = reports
            .windows
            .iter()
            .map(|w| {
                let mut doc = serde_json::to_value(w).unwrap_or_default();
                if let Some(o) = doc.as_object_mut()
                    && let Some(instance) = reports.instance
                {
                    let _ = o.insert("instance".into(), serde_json::Value::String(instance.to_owned()));
                }
                (w.id(reports.instance), doc)
            })
            .collect();
        for (id, doc) in &windows {
            self.put(QUALITY_METRICS, id, doc).await?;
        }
        let alerts: Vec<(String, serde_json::Value)> = reports
            .alerts
            .iter()
            .map(|alert| {
                let mut doc = serde_json::to_value(alert).unwrap_or_default();
                if let Some(o) = doc.as_object_mut() {
                    // The seed's field name, for dashboards written against it.
                    let _ = o.insert("data_product".into(), serde_json::Value::String(alert.product.clone()));
                }
                let state = if alert.state == AlertState::Firing { "firing" } else { "resolved" };
                (format!("{}:{state}", alert.id), doc)
            })
            .collect();
        self.insert_json(ALERTS, &alerts).await
    }

    /// Reads one document by _id as JSON (relaxed extended JSON: dates are `{"$date": …}`).
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<serde_json::Value>, MongoSinkError> {
        let found = self.collection(collection).find_one(doc! { "_id": id }).await.map_err(|e| in_collection(collection, classify(&e)))?;
        Ok(found.map(|d| Bson::Document(d).into_relaxed_extjson()))
    }

    /// Count of documents matching `filter` (a bson Document) — for tests.
    pub async fn count(&self, collection: &str, filter: Document) -> Result<u64, MongoSinkError> {
        self.collection(collection).count_documents(filter).await.map_err(|e| in_collection(collection, classify(&e)))
    }
}

fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    let options = IndexOptions::builder().name(name.to_owned()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

pub(super) fn in_collection(collection: &str, e: MongoSinkError) -> MongoSinkError {
    match e {
        MongoSinkError::Unavailable(m) => MongoSinkError::Unavailable(format!("{collection}: {m}")),
        MongoSinkError::Rejected(m) => MongoSinkError::Rejected(format!("{collection}: {m}")),
    }
}

pub(super) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors.as_ref().is_some_and(|w| !w.is_empty() && w.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// Sorts a driver error into "retry later" and "refused"; the message never carries a password.
pub(super) fn classify(e: &mongodb::error::Error) -> MongoSinkError {
    let message = redact_uri(&e.kind.to_string());
    let transient_label = e.contains_label("RetryableWriteError") || e.contains_label("ResetPool");
    let unavailable = match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(c) => transient_label || TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::Write(WriteFailure::WriteError(w)) => TRANSIENT_CODES.contains(&w.code),
        ErrorKind::InsertMany(m) => m.write_concern_error.is_some() && m.write_errors.as_ref().is_none_or(Vec::is_empty),
        _ => transient_label,
    };
    if unavailable { MongoSinkError::Unavailable(message) } else { MongoSinkError::Rejected(message) }
}

/// The passwords to scrub from `connect`'s messages (see [`Secrets`]).
trait ScrubMongo {
    fn scrub_error(&self, e: MongoSinkError) -> MongoSinkError;
}

impl ScrubMongo for Secrets {
    fn scrub_error(&self, e: MongoSinkError) -> MongoSinkError {
        match e {
            MongoSinkError::Unavailable(m) => MongoSinkError::Unavailable(self.scrub(&m)),
            MongoSinkError::Rejected(m) => MongoSinkError::Rejected(self.scrub(&m)),
        }
    }
}

/// JSON → BSON as `bson::to_bson` does it (integers → Int64, other numbers → Double), except
/// that it cannot fail: an integer beyond `i64` becomes a Double instead of an error.
pub(super) fn json_to_bson(value: &serde_json::Value) -> Bson {
    use serde_json::Value;
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(fields) => Bson::Document(fields.iter().map(|(k, v)| (k.clone(), json_to_bson(v))).collect()),
    }
}

fn bson_time(t: time::OffsetDateTime) -> DateTime {
    DateTime::from_millis(unix_ms(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_uri("mongodb://u:p%40ss@h:27017/db"), "mongodb://u:***@h:27017/db");
        assert_eq!(redact_uri("x mongodb://h:27017 y"), "x mongodb://h:27017 y");
        assert_eq!(redact_uri("a mongodb://u@h b mongodb+srv://v:w@x/"), "a mongodb://u@h b mongodb+srv://v:***@x/");
    }

    #[test]
    fn secret_scrubs_decoded_password() {
        let s = Secrets::of("mongodb://u:hunter2@h/").with_password(Some("hunter2".into()));
        let e = s.scrub_error(MongoSinkError::Rejected("auth failed for hunter2".into()));
        assert_eq!(e.to_string(), "mongodb rejected the write: auth failed for ***");
    }
}
