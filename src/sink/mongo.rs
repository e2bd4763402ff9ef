//! The MongoDB sink: per-record lineage, the latest valid record per key (one record store per
//! data product), and replace-or-insert documents (quality windows, alerts, product
//! declarations).
//!
//! Every write is idempotent, so the at-least-once stream may replay a batch after a crash:
//! lineage documents have a deterministic `_id` (`topic/partition/offset`) and a replayed insert
//! is a duplicate key that counts as success; the record store only ever moves forward
//! (greater `(event_time_ms, offset)`), so a replay or an out-of-order older event never
//! overwrites a newer one.
//!
//! The code needs nothing FerretDB (the MongoDB-wire server used in tests) lacks: no
//! transactions, no client `bulkWrite`, no aggregation. The record store's "newer wins" is a
//! conditional `replace_one` with upsert per key on MongoDB, and a batched read → delete →
//! insert on FerretDB 1.x, whose filtered commands all scan the collection
//! ([`UpsertStrategy`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::task::JoinSet;

/// The seed's per-record lineage collection.
pub const LINEAGE: &str = "data_lineage";
/// The seed's data product declarations.
pub const DATA_PRODUCTS: &str = "data_products";
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
/// Record-store upserts in flight at once (there is no `bulkWrite` on FerretDB).
const UPSERT_CONCURRENCY: usize = 16;
/// MongoDB's duplicate key error code (E11000).
const DUPLICATE_KEY: i32 = 11000;
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
    /// The deterministic document id: `"{topic}/{partition}/{offset}"`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.source_topic, self.source_partition, self.source_offset)
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
    /// Contract the record satisfied.
    pub contract: String,
    /// That contract's version.
    pub contract_version: String,
}

impl StoredRecord {
    /// The order of versions of one key: greater is newer (`None` < any event time).
    fn version(&self) -> (Option<i64>, i64) {
        (self.event_time_ms, self.offset)
    }

    /// The stored document: the record's fields at top level (a record's own `_id` and `_meta`
    /// are dropped, a non-object record is stored under `value`), plus `_meta`.
    fn to_document(&self, updated_at: DateTime) -> Document {
        let mut out = Document::new();
        let _ = out.insert("_id", self.key.as_str());
        match json_to_bson(&self.record) {
            Bson::Document(fields) => {
                for (k, v) in fields {
                    if k != "_id" && k != "_meta" {
                        let _ = out.insert(k, v);
                    }
                }
            }
            other => {
                let _ = out.insert("value", other);
            }
        }
        let _ = out.insert(
            "_meta",
            doc! {
                "event_time_ms": self.event_time_ms,
                "topic": &self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "contract": &self.contract,
                "contract_version": &self.contract_version,
                "updated_at": updated_at,
            },
        );
        out
    }

    /// Matches this key's stored document only when it is older than this record.
    fn older_filter(&self) -> Document {
        match self.event_time_ms {
            Some(t) => doc! {
                "_id": self.key.as_str(),
                "$or": [
                    { "_meta.event_time_ms": Bson::Null },
                    { "_meta.event_time_ms": { "$lt": t } },
                    { "_meta.event_time_ms": t, "_meta.offset": { "$lt": self.offset } },
                ],
            },
            None => doc! {
                "_id": self.key.as_str(),
                "_meta.event_time_ms": Bson::Null,
                "_meta.offset": { "$lt": self.offset },
            },
        }
    }
}

/// What [`MongoSink::upsert_records`] did: `written + kept_newer` is the number of input records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpsertStats {
    /// Records stored (inserted or replacing an older version).
    pub written: u64,
    /// Records not stored because a newer (or the same) version of the key is stored or is in
    /// the same batch.
    pub kept_newer: u64,
}

/// How [`MongoSink::upsert_records`] makes "newer wins" hold, chosen at connect from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertStrategy {
    /// MongoDB (and servers that evaluate filters natively): one `replace_one` per key whose
    /// filter is `_id` AND "the stored version is older", with upsert. Atomic per key: concurrent
    /// writers of one key can never move it backwards.
    Conditional,
    /// FerretDB 1.x (SQLite): every filtered command scans the whole collection (an `{_id}`
    /// filter in SQLite, since its `_id` index does not match the query's JSON expression; any
    /// other filter decoding every document in Go), so per-key commands cost O(slice × store).
    /// Instead, per slice: one `find({_id: {$in}})` for the stored versions, one `delete_many`
    /// of the keys whose stored version is older, one unordered `insert_many` of what to write;
    /// keys that lost an insert race are settled one by one (read by `_id`, then insert or
    /// replace). FerretDB's own conditional updates are not atomic either, so this loses little
    /// there: two writers of one key racing between read and write can let the older land last,
    /// and a replaced key is briefly absent between the delete and the insert.
    ReadThenWrite,
}

/// The MongoDB sink: one client (a connection pool), one database.
#[derive(Clone)]
pub struct MongoSink {
    db: Database,
    uri: Arc<str>,
    strategy: UpsertStrategy,
}

impl fmt::Debug for MongoSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSink").field("uri", &self.uri).field("database", &self.db.name()).field("strategy", &self.strategy).finish()
    }
}

impl MongoSink {
    /// Connects (server selection timeout ~5 s, so a down server fails fast), and creates
    /// indexes (idempotent) on: data_lineage (destination.document_id, source.record_id,
    /// product), data_quality_alerts (product, state, fired_at), quality_metrics
    /// (product+contract+topic+window_start), access_audit (at, product), users (user_id
    /// unique), and on each product's record store (`_meta.updated_at`).
    pub async fn connect(uri: &str, database: &str, products: &[String]) -> Result<Self, MongoSinkError> {
        let secret = Secret::of(uri);
        let mut options = ClientOptions::parse(uri).await.map_err(|e| secret.scrub(classify(&e)))?;
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
        let client = Client::with_options(options).map_err(|e| secret.scrub(classify(&e)))?;
        let db = client.database(database);
        let strategy = detect_strategy(&db).await.map_err(|e| secret.scrub(e))?;
        let sink = Self { db, uri: Arc::from(redact_uri(uri)), strategy };
        sink.create_indexes(products).await.map_err(|e| secret.scrub(e))?;
        Ok(sink)
    }

    /// How this sink keeps "newer wins" in the record stores (depends on the server).
    pub fn upsert_strategy(&self) -> UpsertStrategy {
        self.strategy
    }

    /// Overrides the detected strategy (tests exercise both against one server).
    pub fn with_upsert_strategy(mut self, strategy: UpsertStrategy) -> Self {
        self.strategy = strategy;
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

    fn collection(&self, name: &str) -> Collection<Document> {
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
            plan.push((
                Self::record_store(p),
                vec![
                    index(doc! { "_meta.updated_at": -1 }, "records_updated_at", false),
                    index(doc! { "key": 1, "_meta.event_time_ms": -1, "_meta.offset": -1 }, "records_latest", false),
                ],
            ));
        }
        for (collection, models) in plan {
            // Only the missing ones: the MongoDB-wire server used in tests panics on a
            // createIndexes that names indexes the collection already has.
            let existing = self.collection(&collection).list_index_names().await.unwrap_or_default();
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

    /// Upserts each record into records.{product} with `_id = key`, but only if it is NEWER
    /// than what is stored: newer = greater `(event_time_ms, offset)`, a missing event time
    /// sorts oldest. A replay or an out-of-order older event never overwrites a newer one.
    ///
    /// Records of one slice that share a key are reduced to the newest first. No transactions:
    /// with [`UpsertStrategy::Conditional`] (MongoDB) each key gets one `replace_one` whose
    /// filter is "this `_id` AND the stored version is older", with upsert, at most 16 in
    /// flight; when the stored document is not older the filter misses, the upsert's insert hits
    /// duplicate key 11000, and the record counts as `kept_newer`. FerretDB 1.x gets
    /// [`UpsertStrategy::ReadThenWrite`] (see there).
    pub async fn upsert_records(&self, product: &str, records: &[StoredRecord]) -> Result<UpsertStats, MongoSinkError> {
        let mut stats = UpsertStats::default();
        if records.is_empty() {
            return Ok(stats);
        }
        // The newest version of each key in this slice (the first one wins a tie: a replay).
        let mut newest: std::collections::HashMap<&str, &StoredRecord> = std::collections::HashMap::with_capacity(records.len());
        for r in records {
            let _ = newest
                .entry(r.key.as_str())
                .and_modify(|kept| {
                    if r.version() > kept.version() {
                        *kept = r
                    }
                })
                .or_insert(r);
        }
        stats.kept_newer = (records.len() - newest.len()) as u64;

        let collection_name = Self::record_store(product);
        let collection = self.collection(&collection_name);
        let updated_at = DateTime::now();
        let newest: Vec<&StoredRecord> = newest.into_values().collect();
        let (written, kept) = match self.strategy {
            UpsertStrategy::Conditional => per_key(&collection, UpsertStrategy::Conditional, &newest, updated_at).await,
            UpsertStrategy::ReadThenWrite => batched(&collection, &newest, updated_at).await,
        }
        .map_err(|e| in_collection(&collection_name, e))?;
        stats.written += written;
        stats.kept_newer += kept;
        Ok(stats)
    }

    /// Appends versions of records to records.{product}: one document per input record with
    /// `_id = "{key}@{topic}/{partition}/{offset}"` and the record id in `key`; the latest
    /// version of a key is the one with the greatest `(_meta.event_time_ms, _meta.offset)`, so an
    /// out-of-order older event never hides a newer one and a replay inserts nothing new.
    ///
    /// Insert-only on purpose: the MongoDB-wire server used in tests scans a whole collection
    /// for every filtered update (a conditional upsert per record took ~35 ms on 2,000
    /// documents and grows with the collection), while an unordered `insert_many` of 2,000
    /// documents takes ~0.2 s whatever the collection's size.
    pub async fn write_versions(&self, product: &str, records: &[StoredRecord]) -> Result<(), MongoSinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let updated_at = DateTime::now();
        let docs: Vec<Document> = records
            .iter()
            .map(|r| {
                let mut d = r.to_document(updated_at);
                let _ = d.insert("_id", format!("{}@{}/{}/{}", r.key, r.topic, r.partition, r.offset));
                let _ = d.insert("key", r.key.as_str());
                d
            })
            .collect();
        self.insert_new(&Self::record_store(product), docs).await
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

/// Writes each record with one task per key (at most [`UPSERT_CONCURRENCY`] in flight);
/// returns `(written, kept_newer)`.
async fn per_key(
    collection: &Collection<Document>,
    strategy: UpsertStrategy,
    records: &[&StoredRecord],
    updated_at: DateTime,
) -> Result<(u64, u64), MongoSinkError> {
    let mut jobs = records.iter().map(|r| (r.version(), r.older_filter(), r.to_document(updated_at)));
    let (mut written, mut kept) = (0, 0);
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < UPSERT_CONCURRENCY {
            let Some((version, filter, replacement)) = jobs.next() else {
                break;
            };
            let collection = collection.clone();
            let _ = in_flight.spawn(async move {
                match strategy {
                    UpsertStrategy::Conditional => replace_if_older(&collection, filter, replacement).await,
                    UpsertStrategy::ReadThenWrite => read_then_write(&collection, version, replacement).await,
                }
            });
        }
        match in_flight.join_next().await {
            None => break,
            Some(Ok(Ok(true))) => written += 1,
            Some(Ok(Ok(false))) => kept += 1,
            // Dropping `in_flight` aborts the rest; the caller retries the whole (idempotent) batch.
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => {
                return Err(MongoSinkError::Rejected(format!("record store upsert task failed: {e}")));
            }
        }
    }
    Ok((written, kept))
}

/// Keys per `$in` read in [`batched`].
const READ_CHUNK: usize = 5_000;

/// [`UpsertStrategy::ReadThenWrite`] for a whole slice, in a handful of commands whatever its
/// size (FerretDB answers every filtered command with a scan of the collection, so per-key
/// commands cost O(slice × store)): one `find({_id: {$in}})` for the stored versions, one
/// `delete_many` of the keys whose stored version is older, one unordered `insert_many` of
/// everything to write. An insert that hits a duplicate key lost a race with another writer;
/// those few keys are settled one by one. Between the delete and the insert a replaced key is
/// briefly absent for readers. Returns `(written, kept_newer)`.
async fn batched(collection: &Collection<Document>, records: &[&StoredRecord], updated_at: DateTime) -> Result<(u64, u64), MongoSinkError> {
    let mut stored: std::collections::HashMap<String, (Option<i64>, i64)> = std::collections::HashMap::with_capacity(records.len());
    for chunk in records.chunks(READ_CHUNK) {
        let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
        let mut cursor =
            collection.find(doc! { "_id": { "$in": keys } }).projection(doc! { "_meta": 1 }).await.map_err(|e| classify(&e))?;
        while cursor.advance().await.map_err(|e| classify(&e))? {
            let found = cursor.deserialize_current().map_err(|e| classify(&e))?;
            if let Ok(id) = found.get_str("_id") {
                let _ = stored.insert(id.to_owned(), stored_version(&found));
            }
        }
    }
    let mut kept = 0;
    let mut replace: Vec<&str> = Vec::new();
    let mut write: Vec<&StoredRecord> = Vec::with_capacity(records.len());
    for r in records {
        match stored.get(r.key.as_str()) {
            Some(version) if *version >= r.version() => kept += 1,
            Some(_) => {
                replace.push(r.key.as_str());
                write.push(r);
            }
            None => write.push(r),
        }
    }
    if write.is_empty() {
        return Ok((0, kept));
    }
    for chunk in replace.chunks(READ_CHUNK) {
        let _ = collection.delete_many(doc! { "_id": { "$in": chunk } }).await.map_err(|e| classify(&e))?;
    }
    let docs: Vec<Document> = write.iter().map(|r| r.to_document(updated_at)).collect();
    let raced: Vec<&StoredRecord> = match collection.insert_many(&docs).ordered(false).await {
        Ok(_) => Vec::new(),
        Err(e) => match e.kind.as_ref() {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                if let Some(w) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                    return Err(MongoSinkError::Rejected(format!(
                        "write error {} ({}): {}",
                        w.code,
                        w.code_name.as_deref().unwrap_or("?"),
                        w.message
                    )));
                }
                errors.iter().filter_map(|w| write.get(w.index).copied()).collect()
            }
            _ => return Err(classify(&e)),
        },
    };
    let mut written = (write.len() - raced.len()) as u64;
    if !raced.is_empty() {
        let (w, k) = per_key(collection, UpsertStrategy::ReadThenWrite, &raced, updated_at).await?;
        written += w;
        kept += k;
    }
    Ok((written, kept))
}

/// One conditional replace with upsert: `Ok(true)` when written, `Ok(false)` when the stored
/// version is not older (the filter missed and the insert hit the existing `_id`).
async fn replace_if_older(collection: &Collection<Document>, filter: Document, replacement: Document) -> Result<bool, MongoSinkError> {
    // A duplicate key on the first attempt may also be a race with a concurrent writer that
    // inserted the key after our filter missed; the retry sees that document and decides.
    for attempt in 0..2 {
        match collection.replace_one(filter.clone(), &replacement).upsert(true).await {
            Ok(_) => return Ok(true),
            Err(e) if is_duplicate_key(&e) => {
                if attempt == 1 {
                    return Ok(false);
                }
            }
            Err(e) => return Err(classify(&e)),
        }
    }
    Ok(false)
}

/// [`UpsertStrategy::ReadThenWrite`] for one key: `Ok(true)` when written, `Ok(false)` when the
/// stored version is not older. Every operation filters on `_id` alone (FerretDB's fast path).
async fn read_then_write(
    collection: &Collection<Document>,
    version: (Option<i64>, i64),
    replacement: Document,
) -> Result<bool, MongoSinkError> {
    let id = replacement.get("_id").cloned().unwrap_or(Bson::Null);
    // A lost race (inserted or deleted between our read and write) re-reads; a few rounds suffice.
    for _ in 0..4 {
        let stored = collection.find_one(doc! { "_id": id.clone() }).projection(doc! { "_meta": 1 }).await.map_err(|e| classify(&e))?;
        match stored {
            None => match collection.insert_one(&replacement).await {
                Ok(_) => return Ok(true),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(classify(&e)),
            },
            Some(stored) if stored_version(&stored) >= version => return Ok(false),
            Some(_) => {
                let result = collection.replace_one(doc! { "_id": id.clone() }, &replacement).await.map_err(|e| classify(&e))?;
                if result.matched_count > 0 {
                    return Ok(true);
                }
            }
        }
    }
    Err(MongoSinkError::Unavailable(format!("record {id}: the stored document kept changing under concurrent writers")))
}

/// The `(event_time_ms, offset)` of a stored record; a missing or non-numeric field reads as
/// oldest.
fn stored_version(stored: &Document) -> (Option<i64>, i64) {
    let number = |meta: &Document, field: &str| match meta.get(field) {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Double(n)) if n.is_finite() => Some(*n as i64),
        _ => None,
    };
    match stored.get_document("_meta") {
        Ok(meta) => (number(meta, "event_time_ms"), number(meta, "offset").unwrap_or(i64::MIN)),
        Err(_) => (None, i64::MIN),
    }
}

/// FerretDB announces itself with `ferretdbVersion` in `buildInfo` (`"unknown"` when embedded
/// without version stamping); 1.x (or unknown) gets [`UpsertStrategy::ReadThenWrite`].
async fn detect_strategy(db: &Database) -> Result<UpsertStrategy, MongoSinkError> {
    let info = db.run_command(doc! { "buildInfo": 1 }).await.map_err(|e| classify(&e))?;
    Ok(strategy_for(info.get_str("ferretdbVersion").ok()))
}

fn strategy_for(ferretdb_version: Option<&str>) -> UpsertStrategy {
    let Some(version) = ferretdb_version else {
        return UpsertStrategy::Conditional;
    };
    let major = version.trim_start_matches('v').split('.').next().and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 2 => UpsertStrategy::Conditional,
        _ => UpsertStrategy::ReadThenWrite,
    }
}

fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    let options = IndexOptions::builder().name(name.to_owned()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

fn in_collection(collection: &str, e: MongoSinkError) -> MongoSinkError {
    match e {
        MongoSinkError::Unavailable(m) => MongoSinkError::Unavailable(format!("{collection}: {m}")),
        MongoSinkError::Rejected(m) => MongoSinkError::Rejected(format!("{collection}: {m}")),
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
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
fn classify(e: &mongodb::error::Error) -> MongoSinkError {
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

/// Hides the password of every `scheme://user:password@host` in `text`: `user:***@`.
pub fn redact_uri(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')).unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        match word.rfind('@') {
            Some(at) => {
                let userinfo = &word[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&word[at..]);
            }
            None => out.push_str(word),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The password of the URI being connected to, to scrub from `connect`'s messages even where it
/// appears outside a URI (decoded).
struct Secret(Vec<String>);

impl Secret {
    fn of(uri: &str) -> Self {
        let authority = uri.split_once("://").map_or("", |(_, tail)| tail.split(char::is_whitespace).next().unwrap_or_default());
        let password = authority.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).map(|(_, p)| p);
        Self(password.filter(|p| !p.is_empty()).map(str::to_owned).into_iter().collect())
    }

    fn with_password(mut self, password: Option<String>) -> Self {
        self.0.extend(password.filter(|p| !p.is_empty()));
        self
    }

    fn scrub(&self, e: MongoSinkError) -> MongoSinkError {
        let clean = |m: String| self.0.iter().fold(m, |m, s| m.replace(s.as_str(), "***"));
        match e {
            MongoSinkError::Unavailable(m) => MongoSinkError::Unavailable(clean(m)),
            MongoSinkError::Rejected(m) => MongoSinkError::Rejected(clean(m)),
        }
    }
}

/// JSON → BSON as `bson::to_bson` does it (integers → Int64, other numbers → Double), except
/// that it cannot fail: an integer beyond `i64` becomes a Double instead of an error.
fn json_to_bson(value: &serde_json::Value) -> Bson {
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
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    DateTime::from_millis(i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX }))
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
    fn strategy_by_server() {
        assert_eq!(strategy_for(None), UpsertStrategy::Conditional);
        assert_eq!(strategy_for(Some("unknown")), UpsertStrategy::ReadThenWrite);
        assert_eq!(strategy_for(Some("v1.24.2")), UpsertStrategy::ReadThenWrite);
        assert_eq!(strategy_for(Some("v2.1.0")), UpsertStrategy::Conditional);
    }

    #[test]
    fn secret_scrubs_decoded_password() {
        let s = Secret::of("mongodb://u:hunter2@h/").with_password(Some("hunter2".into()));
        let e = s.scrub(MongoSinkError::Rejected("auth failed for hunter2".into()));
        assert_eq!(e.to_string(), "mongodb rejected the write: auth failed for ***");
    }
}
