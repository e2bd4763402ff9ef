//! Sinks: where verdicts go, behind one [`Sinks`] value. [`kafka`] is the side-topic producer
//! (dead letters, alerts, OpenLineage events; transactional in exactly-once mode), [`dlq`]
//! shapes a dead letter, [`mongo`] is the document store (lineage, record versions, windows,
//! alerts), which builds its own documents from the verdicts.
//!
//! A batch goes `begin` → `dead_letter`… → `send_reports` → `write_documents` → `finish`
//! (the acknowledgement, or the transaction's commit); a failure carries its retry hint
//! ([`crate::error::Retry`]) and [`Sinks::failed`] does the sinks' part of the recovery.

pub mod catalog;
pub mod dlq;
pub mod kafka;
pub mod mongo;
pub mod records;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::histogram;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use tracing::{info, warn};

use self::kafka::{AckWaiter, SideProducer};
use self::mongo::{Documents, MongoSink, Reports};
use crate::config::Settings;
use crate::contract::Contract;
use crate::error::{Error, Retry, System};
use crate::product::Catalog;
use crate::telemetry::names::SINK_WRITE_SECONDS;
use crate::verdict::Rejection;

/// Every sink of the stream.
#[derive(Debug)]
pub struct Sinks {
    side: SideProducer,
    /// Set when the side producer must be replaced before the next batch (see [`Retry::ReplaceClient`]).
    replace_side: bool,
    /// The same `transactional.id` for every replacement: `init_transactions` fences the old
    /// producer and aborts whatever transaction it left open.
    transactional_id: Option<String>,
    mongo: Option<MongoSink>,
    /// Partitions of the partials topic (group-wide quality), read once at start.
    partials_partitions: i32,
    settings: Settings,
    runtime: tokio::runtime::Handle,
}

impl Sinks {
    /// Creates the side producer (retrying while Kafka cannot initialise transactions yet) and
    /// connects the document store when enabled (waiting for it while it is unavailable), then
    /// stores the product declarations there.
    pub fn connect(
        settings: &Settings,
        catalog: &Catalog,
        instance: &str,
        runtime: tokio::runtime::Handle,
        stop: &AtomicBool,
    ) -> Result<Self, Error> {
        let transactional_id = settings.delivery.exactly_once.then(|| match settings.delivery.transactional_id.trim() {
            "" => format!("{}-{instance}", settings.kafka.group_id),
            id => id.to_owned(),
        });
        let side = side_producer(settings, transactional_id.as_deref(), stop)?;
        let partials_partitions =
            if settings.quality.scope == crate::config::QualityScope::Group { partials_partitions(&side, settings, stop)? } else { 1 };
        let mongo = if settings.mongodb.enabled { Some(connect_mongo(settings, Some(catalog), &runtime, stop)?) } else { None };
        Ok(Self { side, replace_side: false, transactional_id, mongo, partials_partitions, settings: settings.clone(), runtime })
    }

    /// The sinks of the owner of group-wide windows: a producer (transactional under
    /// `transactional_id` in exactly-once mode; at-least-once its outputs have deterministic
    /// ids, see docs/design.md) and the document store.
    pub fn connect_reporter(
        settings: &Settings,
        runtime: tokio::runtime::Handle,
        stop: &AtomicBool,
        transactional_id: Option<String>,
    ) -> Result<Self, Error> {
        let side = side_producer(settings, transactional_id.as_deref(), stop)?;
        let mongo = if settings.mongodb.enabled { Some(connect_mongo(settings, None, &runtime, stop)?) } else { None };
        Ok(Self { side, replace_side: false, transactional_id, mongo, partials_partitions: 1, settings: settings.clone(), runtime })
    }

    /// Keeps a pending reconciliation claim durably (group-wide quality), in the current batch:
    /// `payload` under its `position` (`topic/partition/offset`) in the compacted claims topic.
    pub fn send_claim(&self, position: &str, payload: &[u8]) -> Result<(), Error> {
        self.side.send_to(&self.settings.topics.claims, None, position.as_bytes(), Some(payload)).map_err(|e| self.kafka(e))
    }

    /// Sends one binding's durable state (group-wide quality) to the compacted state topic.
    pub fn send_state(&self, key: &str, state: &serde_json::Value) -> Result<(), Error> {
        let payload = serde_json::to_vec(state).unwrap_or_default();
        self.side.send_to(&self.settings.topics.quality_state, None, key.as_bytes(), Some(&payload)).map_err(|e| self.kafka(e))
    }

    /// Whether the document store is on (lineage documents and record versions are written).
    pub fn has_store(&self) -> bool {
        self.mongo.is_some()
    }

    /// Where dead letters go.
    pub fn dlq_topic(&self) -> &str {
        &self.settings.topics.dlq
    }

    /// Replaces the side producer if the last failure asked for it; an error while it cannot
    /// be replaced yet (the caller backs off and asks again).
    pub fn ready(&mut self) -> Result<(), Error> {
        if !self.replace_side {
            return Ok(());
        }
        self.side = SideProducer::new(&self.settings, self.transactional_id.as_deref())?;
        self.replace_side = false;
        if self.side.is_transactional() {
            info!("transactional producer replaced; resuming from the committed offsets");
        } else {
            info!("side-topic producer replaced; resuming from the failed batch's first records");
        }
        Ok(())
    }

    fn kafka(&self, e: kafka::SinkError) -> Error {
        e.into_error(self.side.is_transactional())
    }

    /// Starts a batch (a transaction in exactly-once mode).
    pub fn begin(&self) -> Result<(), Error> {
        self.side.begin().map_err(|e| self.kafka(e))
    }

    /// Sends `m`'s dead letter. Too large for the producer: first without the payload, then
    /// without key and original headers too; the reason always goes through, so nothing stalls.
    pub fn dead_letter(&self, m: &BorrowedMessage<'_>, contract: &Contract, r: &Rejection) -> Result<(), Error> {
        use rdkafka::message::Message;
        let headers = dlq::headers(m, contract, r, dlq::Carry::All);
        self.side
            .send(&self.settings.topics.dlq, m.key(), m.payload(), headers, |attempt| match attempt {
                1 => Some((m.key(), None, dlq::headers(m, contract, r, dlq::Carry::NoPayload))),
                2 => Some((None, None, dlq::headers(m, contract, r, dlq::Carry::ReasonOnly))),
                _ => None,
            })
            .map_err(|e| self.kafka(e))
    }

    /// Sends the partials, alerts and OpenLineage run events of `reports` within the current
    /// batch (its transaction, in exactly-once mode).
    pub fn send_reports(&self, reports: &Reports<'_>) -> Result<(), Error> {
        let topics = &self.settings.topics;
        for p in reports.partials {
            let key = p.key();
            let partition = crate::quality::partial::partition_of(&key, self.partials_partitions);
            let payload = serde_json::to_vec(p).unwrap_or_default();
            self.side.send_to(&topics.partials, Some(partition), key.as_bytes(), Some(&payload)).map_err(|e| self.kafka(e))?;
        }
        for position in reports.claims_decided {
            self.side.send_to(&topics.claims, None, position.as_bytes(), None).map_err(|e| self.kafka(e))?;
        }
        for alert in reports.alerts {
            let payload = serde_json::to_vec(alert).unwrap_or_default();
            self.side
                .send(&topics.alerts, Some(alert.product.as_bytes()), Some(&payload), OwnedHeaders::new(), |_| None)
                .map_err(|e| self.kafka(e))?;
        }
        for event in reports.events {
            let payload = serde_json::to_vec(event).unwrap_or_default();
            self.side
                .send(&topics.lineage, Some(reports.job.as_bytes()), Some(&payload), OwnedHeaders::new(), |_| None)
                .map_err(|e| self.kafka(e))?;
        }
        Ok(())
    }

    /// Hands a batch's documents on and writes the reports' windows and alerts to the document
    /// store (idempotent: deterministic ids), when it is on. Inline, the documents are written
    /// here; with `mongodb.materialize = "kafka"` they are produced to `topics.records` within
    /// the batch (its transaction, in exactly-once mode), for the materializer.
    pub fn write_documents(&self, documents: Documents, reports: &Reports<'_>) -> Result<(), Error> {
        let Some(mongo) = &self.mongo else { return Ok(()) };
        let decoupled = self.settings.mongodb.materialize == crate::config::Materialize::Kafka;
        if decoupled {
            let topic = &self.settings.topics.records;
            for e in documents.entries() {
                let payload = serde_json::to_vec(e).unwrap_or_default();
                self.side.send_to(topic, None, e.key().as_bytes(), Some(&payload)).map_err(|e| self.kafka(e))?;
            }
            if reports.windows.is_empty() && reports.alerts.is_empty() {
                return Ok(());
            }
        }
        let started = Instant::now();
        self.runtime.block_on(async {
            if !decoupled {
                let _ = documents.write(mongo, false).await?;
            }
            mongo.write_reports(reports).await
        })?;
        histogram!(SINK_WRITE_SECONDS, "sink" => "mongodb").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The document store, when it is on.
    pub fn store(&self) -> Option<&MongoSink> {
        self.mongo.as_ref()
    }

    /// Ends a batch: at-least-once waits for every side-topic acknowledgement; exactly-once
    /// commits the transaction with `offsets`.
    pub fn finish(&self, offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>) -> Result<(), Error> {
        self.side.finish(offsets).map_err(|e| self.kafka(e))
    }

    /// A wait for the side-topic records sent so far that any thread can run (the consumer's
    /// revoke callback finishes the batch in flight with it).
    pub fn waiter(&self) -> AckWaiter {
        self.side.waiter()
    }

    /// The sinks' part of recovering from a failed batch: a client the error condemns is
    /// replaced before the next batch; an open transaction is aborted (and its producer
    /// replaced if even that fails), so none of the batch's output becomes visible.
    pub fn failed(&mut self, e: &Error) {
        if e.retry == Retry::ReplaceClient && e.system == System::Kafka {
            if self.side.is_transactional() {
                warn!("the transactional producer is fenced or in a fatal state; replacing it");
            }
            self.replace_side = true;
        } else if self.side.is_transactional()
            && let Err(abort) = self.side.abort()
        {
            warn!(error = %abort, fatal = abort.is_fatal(), "aborting the transaction failed; replacing the producer");
            self.replace_side = true;
        }
    }
}

/// The partials topic's partition count, waiting (up to 30 s) for a topic just created by
/// another instance to appear in the metadata.
fn partials_partitions(side: &SideProducer, settings: &Settings, stop: &AtomicBool) -> Result<i32, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match side.partitions(&settings.topics.partials) {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                warn!(error = %e.message, "waiting for the partials topic");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates the side-topic producer, retrying while Kafka cannot initialise transactions yet (a
/// broker restarting, or a predecessor with the same `transactional.id` whose open transaction
/// the coordinator is still aborting).
fn side_producer(settings: &Settings, transactional_id: Option<&str>, stop: &AtomicBool) -> Result<SideProducer, Error> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match SideProducer::new(settings, transactional_id) {
            Ok(p) => return Ok(p),
            Err(e) if e.retry != Retry::Stop && transactional_id.is_some() && !stop.load(Ordering::Relaxed) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Kafka transactions not ready; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn connect_mongo(
    settings: &Settings,
    catalog: Option<&Catalog>,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
) -> Result<MongoSink, Error> {
    let products: Vec<String> = catalog.map(|c| c.products.iter().map(|p| p.name().to_owned()).collect()).unwrap_or_default();
    let mut backoff = Duration::from_millis(500);
    loop {
        // The stream's client makes the indexes; the owner's is a second client of the process.
        let (uri, database) = (&settings.mongodb.uri, &settings.mongodb.database);
        let connected = match catalog {
            Some(_) => runtime.block_on(MongoSink::connect(uri, database, &products)),
            None => runtime.block_on(MongoSink::open(uri, database)),
        }
        .map(|m| m.with_history(settings.mongodb.history));
        match connected {
            Ok(m) => {
                // From files, the declarations are stored for the seed's readers, but never
                // over a document `catalog apply` wrote (it owns those). From the catalog in
                // MongoDB there is nothing to store: it is read from there.
                let from_files = settings.products.source == crate::config::ProductsSource::Files;
                for p in catalog.iter().flat_map(|c| &c.products).filter(|_| from_files) {
                    match runtime.block_on(m.put_declaration_unless_applied(p.name(), &p.raw)) {
                        Ok(true) => {}
                        Ok(false) => info!(product = p.name(), "data_products holds an applied catalog document; not overwritten"),
                        Err(e) => warn!(error = %e, product = p.name(), "cannot store the data product declaration"),
                    }
                }
                return Ok(m);
            }
            Err(e) if e.is_retryable() && !stop.load(Ordering::Relaxed) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MongoDB unavailable; waiting for it before consuming");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(Error::refused(System::MongoDb, format_args!("MongoDB: {e}"))),
        }
    }
}
