//! The stream: gather a batch from the consumer, decode → validate → measure each record, write
//! every sink (dead letters, alerts and OpenLineage events to Kafka; lineage documents, the
//! record store, windows and alerts to MongoDB), and only when every sink has acknowledged the
//! batch store its offsets (or commit them in the batch's transaction).
//!
//! Rebalance callbacks run inside `poll`, between records of a gathering batch; records of
//! partitions revoked meanwhile are dropped from the batch unprocessed (their new owner reads
//! them from the committed offset), so no output is written for a record this instance does
//! not own any more.
//!
//! Quality windows count a batch only once it is acknowledged, so a retried batch is never
//! counted twice; a closed window's outputs (its document, alerts, the OpenLineage RUNNING
//! event) travel with the next batch and are retried with it.

mod outputs;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;
use tracing::{error, info, warn};

use self::outputs::Outputs;
use crate::config::Settings;
use crate::contract::AnyRecord;
use crate::contract::Contract;
use crate::contract::tape::Tape;
use crate::lineage::openlineage::EventType;
use crate::product::Catalog;
use crate::quality::Clock;
use crate::reconcile::Claim;
use crate::reconcile::mysql::MySqlSource;
use crate::reconcile::worker::{Worker, WorkerSettings};
use crate::sink::dlq;
use crate::sink::kafka::{SideProducer, SinkError};
use crate::sink::mongo::{LineageDoc, MongoSink, StoredRecord};
use crate::source::kafka::{InFlight, Source, consumer, offsets_list};
use crate::telemetry::BindingMetrics;
use crate::telemetry::http::Health;
use crate::telemetry::names::*;
use crate::verdict::{Evaluation, Stage, evaluate, evaluate_lean};

/// A topic's contract with its metric handles.
struct Bound {
    topic: String,
    contract: Arc<Contract>,
    metrics: BindingMetrics,
}

/// What one acknowledged batch contributes to windows, metrics and reconciliation. Topics are
/// borrowed from the bindings, not from the batch, so the batch's records can be released
/// while its acknowledgements are awaited.
struct Done<'a> {
    evaluated: Vec<(&'a str, OffsetDateTime, Evaluation)>,
    claims: Vec<Claim>,
    lineage: HashMap<&'a str, u64>,
}

/// The first offset of each partition of a batch: where to read it again if it fails.
type Firsts = Vec<(String, i32, i64)>;

/// A batch whose outputs are sent, waiting for their acknowledgement (or the transaction's
/// commit) before its offsets are stored.
struct Sent<'a> {
    done: Done<'a>,
    records: usize,
    /// The next offset of every partition in the batch.
    offsets: TopicPartitionList,
    /// The first offset of every partition in the batch, to read it again if it fails.
    first: Firsts,
}

/// When a Kafka transaction call (send the offsets and commit, or abort) may end, in ms since
/// `WATCHDOG_EPOCH`; 0 when none is under way. Exactly-once only.
static TXN_DEADLINE_MS: AtomicU64 = AtomicU64::new(0);
static WATCHDOG_EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
/// A transaction call gets its own time-outs (30 s for the offsets, 30 s for the commit) and
/// then this much more before the watchdog gives up on it.
const TXN_WATCHDOG: Duration = Duration::from_secs(120);

/// Ends the process when a Kafka transaction call outlives its time-outs by far. librdkafka 2.12's
/// `send_offsets_to_transaction` can wait forever for a group coordinator it decommissioned
/// after a broker restart, past its time-out (confluentinc/librdkafka#5456 and #5511); the fault
/// harness caught a stream thread parked there for ten minutes. The call cannot be cancelled,
/// and a restart resumes from the last committed transaction, which is what exactly-once is
/// built to survive (a supervisor, e.g. Kubernetes, starts the process again).
fn start_txn_watchdog() {
    let _ = *WATCHDOG_EPOCH;
    let spawned = std::thread::Builder::new().name("txn-watchdog".into()).spawn(|| loop {
        std::thread::sleep(Duration::from_secs(1));
        let deadline = TXN_DEADLINE_MS.load(Ordering::Relaxed);
        if deadline != 0 && WATCHDOG_EPOCH.elapsed().as_millis() as u64 > deadline {
            error!(
                waited_s = TXN_WATCHDOG.as_secs(),
                "a Kafka transaction call has not returned (librdkafka#5456/#5511); exiting so that a restart resumes from the last committed transaction"
            );
            std::process::exit(1);
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the transaction watchdog");
    }
}

/// Arms the watchdog for one transaction call; disarmed when dropped.
struct TxnCall;

impl TxnCall {
    fn arm() -> Self {
        let deadline = (WATCHDOG_EPOCH.elapsed() + TXN_WATCHDOG).as_millis() as u64;
        TXN_DEADLINE_MS.store(deadline.max(1), Ordering::Relaxed);
        Self
    }
}

impl Drop for TxnCall {
    fn drop(&mut self) {
        TXN_DEADLINE_MS.store(0, Ordering::Relaxed);
    }
}

/// Runs until `stop` is set, then drains the current batch and commits.
pub fn run(
    settings: &Settings,
    catalog: &Catalog,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> Result<(), String> {
    let topics = catalog.topics();
    if topics.is_empty() {
        return Err("no data product declares a Kafka topic (spec.apis.kafka.topics)".into());
    }
    let bound: HashMap<String, Bound> = catalog
        .bindings()
        .map(|b| {
            (
                b.topic.clone(),
                Bound {
                    topic: b.topic.clone(),
                    contract: b.contract.clone(),
                    metrics: BindingMetrics::new(&b.contract.product, &b.contract.name, &b.topic),
                },
            )
        })
        .collect();
    let eos = settings.delivery.exactly_once;
    if eos {
        start_txn_watchdog();
    }
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let transactional_id = eos.then(|| match settings.delivery.transactional_id.trim() {
        "" => format!("{}-{instance}", settings.kafka.group_id),
        id => id.to_owned(),
    });
    let mut sink = side_producer(settings, transactional_id.as_deref(), &stop)?;
    // Set when the transactional producer hit a fatal error (fenced, or its epoch bumped by a
    // transaction timeout) or could not abort, or (at-least-once) when side-topic records were
    // not acknowledged: it is replaced before the next batch.
    let mut replace_sink = false;
    let mongo = if settings.mongodb.enabled { Some(connect_mongo(settings, catalog, &runtime, &stop)?) } else { None };
    let reconciler = if settings.mysql.enabled {
        // The pool's background tasks live on the runtime.
        let _guard = runtime.enter();
        let db = MySqlSource::lazy(&settings.mysql.url, u32::try_from(settings.reconcile.concurrency).unwrap_or(u32::MAX))?;
        let worker = WorkerSettings {
            grace: Duration::from_millis(settings.reconcile.grace_ms),
            chunk: settings.reconcile.chunk,
            concurrency: settings.reconcile.concurrency,
            max_backlog: settings.reconcile.max_backlog,
            interval: Duration::from_millis(500),
        };
        Some(Worker::start(db, worker, clock.clone(), &runtime))
    } else {
        None
    };
    let plan = Plan { threads: settings.delivery.evaluators(), records: mongo.is_some(), claims: reconciler.is_some() };
    let mut out = Outputs::new(settings, catalog, &instance, clock.now(), mongo.is_some());
    let source = consumer(settings, &topics, health.clone())?;
    info!(topics = topics.len(), exactly_once = eos, group = %settings.kafka.group_id, instance = %instance, "stream started");
    health.live.store(true, Ordering::Relaxed);
    out.lineage_event(EventType::Start, clock.now(), None);

    let max = settings.delivery.batch_max_records;
    let linger = Duration::from_millis(settings.delivery.batch_linger_ms);
    let mut backoff = Duration::from_millis(100);
    let mut owned_epoch = u64::MAX;
    let mut result = Ok(());
    let mut in_flight: Option<Sent<'_>> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(fatal) = source.context().fatal.get() {
            error!(error = %fatal, "stopping: the Kafka connection cannot work with this configuration");
            result = Err(fatal);
            break;
        }
        if replace_sink {
            // Same transactional.id: init_transactions fences the old producer and aborts
            // whatever transaction it left open, so none of its output ever becomes visible.
            match SideProducer::new(settings, transactional_id.as_deref()) {
                Ok(fresh) => {
                    sink = fresh;
                    replace_sink = false;
                    if eos {
                        info!("transactional producer replaced; resuming from the committed offsets");
                    } else {
                        info!("side-topic producer replaced; resuming from the failed batch's first records");
                    }
                }
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot replace the side-topic producer yet");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let epoch = source.context().epoch.load(Ordering::SeqCst);
        // With a batch in flight, wait for the next one no longer than the linger time: the
        // batch in flight is finished after gathering, so that wait is also its commit delay.
        let first_wait = if in_flight.is_some() { linger } else { Duration::from_millis(100) };
        let batch = gather(&source, max, settings.delivery.batch_max_bytes, linger, first_wait, &stop);
        let batch = if source.context().epoch.load(Ordering::SeqCst) == epoch { batch } else { owned_only(&source, batch) };
        // At-least-once: the previous batch's dead letters were acknowledged while this batch
        // was gathered; store its offsets now, before this batch sends anything.
        if let Some(sent) = in_flight.take() {
            match complete(sent, &sink, &source, settings, &mut out) {
                Ok(done) => {
                    backoff = Duration::from_millis(100);
                    finished(done, &bound, reconciler.as_ref(), &stop, &mut out);
                }
                Err((e, mut first)) => {
                    // The batch just gathered follows the failed one: read both again, from the
                    // failed batch's first offsets and, for partitions only the new batch holds,
                    // from the new batch's (dropping it without would skip its records).
                    for (topic, partition, offset) in firsts(&batch) {
                        if !first.iter().any(|(t, p, _)| *p == partition && *t == topic) {
                            first.push((topic, partition, offset));
                        }
                    }
                    drop(batch);
                    recover(&e, &first, &source, &sink, eos, &mut replace_sink, &mut backoff);
                    continue;
                }
            }
        }
        let epoch = source.context().epoch.load(Ordering::SeqCst);
        if epoch != owned_epoch {
            owned_epoch = epoch;
            out.owned(owned_topics(&source), clock.now());
        }
        // Verdicts count in the window open when they are reached.
        if let Some(r) = &reconciler {
            for d in r.decided() {
                out.windows.accuracy(&d);
            }
        }
        out.close_due_windows(clock.now());
        if batch.is_empty() && !out.has_pending() {
            continue;
        }
        let first = firsts(&batch);
        let sent = process(&batch, &first, &bound, &sink, mongo.as_ref(), plan, &source, settings, clock.as_ref(), &runtime, &mut out);
        // The records are no longer needed: the producer copied what it sends.
        drop(batch);
        match sent {
            // In flight until the next batch is gathered.
            Ok(sent) if !eos => in_flight = Some(sent),
            Ok(sent) => match complete(sent, &sink, &source, settings, &mut out) {
                Ok(done) => {
                    backoff = Duration::from_millis(100);
                    finished(done, &bound, reconciler.as_ref(), &stop, &mut out);
                }
                Err((e, first)) => recover(&e, &first, &source, &sink, eos, &mut replace_sink, &mut backoff),
            },
            Err(e) => recover(&e, &first, &source, &sink, eos, &mut replace_sink, &mut backoff),
        }
    }
    if let Some(sent) = in_flight.take() {
        match complete(sent, &sink, &source, settings, &mut out) {
            Ok(done) => finished(done, &bound, reconciler.as_ref(), &stop, &mut out),
            Err((e, _)) => warn!(error = %e.message, "the last batch was not acknowledged; a restart reads it again"),
        }
    }
    health.ready.store(false, Ordering::Relaxed);
    // The final lineage event goes out with a last (record-less) batch.
    out.lineage_event(
        if result.is_ok() { EventType::Complete } else { EventType::Abort },
        clock.now(),
        result.as_ref().err().map(String::as_str),
    );
    let last = process(&[], &[], &bound, &sink, mongo.as_ref(), plan, &source, settings, clock.as_ref(), &runtime, &mut out)
        .and_then(|sent| complete(sent, &sink, &source, settings, &mut out).map_err(|(e, _)| e));
    if let Err(e) = last {
        warn!(error = %e.message, "final lineage event not delivered");
    }
    if !eos
        && let Err(e) = source.commit_consumer_state(CommitMode::Sync)
        && !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::NoOffset))
    {
        warn!(error = %e, "final commit failed; a restart replays from the last commit");
    }
    source.unsubscribe();
    health.live.store(false, Ordering::Relaxed);
    info!("stream stopped");
    result
}

/// Creates the side-topic producer, retrying while Kafka cannot initialise transactions yet (a
/// broker restarting, or a predecessor with the same `transactional.id` whose open transaction
/// the coordinator is still aborting).
fn side_producer(settings: &Settings, transactional_id: Option<&str>, stop: &AtomicBool) -> Result<SideProducer, String> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match SideProducer::new(settings, transactional_id) {
            Ok(p) => return Ok(p),
            Err(e) if transactional_id.is_some() && !stop.load(Ordering::Relaxed) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Kafka transactions not ready; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn connect_mongo(settings: &Settings, catalog: &Catalog, runtime: &tokio::runtime::Handle, stop: &AtomicBool) -> Result<MongoSink, String> {
    let products: Vec<String> = catalog.products.iter().map(|p| p.name().to_owned()).collect();
    let mut backoff = Duration::from_millis(500);
    loop {
        match runtime.block_on(MongoSink::connect(&settings.mongodb.uri, &settings.mongodb.database, &products)) {
            Ok(m) => {
                for p in &catalog.products {
                    if let Err(e) = runtime.block_on(m.put(crate::sink::mongo::DATA_PRODUCTS, p.name(), &p.raw)) {
                        warn!(error = %e, product = p.name(), "cannot store the data product declaration");
                    }
                }
                return Ok(m);
            }
            Err(e) if e.is_retryable() && !stop.load(Ordering::Relaxed) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MongoDB unavailable; waiting for it before consuming");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(format!("MongoDB: {e}")),
        }
    }
}

fn owned_topics(source: &Source) -> HashSet<String> {
    source.assignment().map(|a| a.elements().iter().map(|e| e.topic().to_owned()).collect()).unwrap_or_default()
}

/// Polls until `max` records or `max_bytes` of payloads and keys, the linger time after the
/// first record, `first_wait` without any record, or a stop request. The clock and the stop flag are read every 64 records, not
/// per record (reading the clock was the largest single item in a profile of the stream thread).
fn gather<'c>(
    source: &'c Source,
    max: usize,
    max_bytes: usize,
    linger: Duration,
    first_wait: Duration,
    stop: &AtomicBool,
) -> Vec<BorrowedMessage<'c>> {
    let mut batch = Vec::with_capacity(max.min(4096));
    // The records' payloads and keys stay in librdkafka's buffers until the batch is dropped.
    let mut bytes = 0_usize;
    let size = |m: &BorrowedMessage<'_>| m.payload_len() + m.key_len();
    let mut deadline: Option<Instant> = None;
    while batch.len() < max && bytes < max_bytes {
        let wait = match deadline {
            None => first_wait,
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        match source.poll(wait) {
            Some(Ok(m)) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + linger);
                }
                bytes += size(&m);
                batch.push(m);
                // Drain what is already fetched without a time-out per record.
                while batch.len() < max && bytes < max_bytes && !batch.len().is_multiple_of(64) {
                    match source.poll(Duration::ZERO) {
                        Some(Ok(m)) => {
                            bytes += size(&m);
                            batch.push(m);
                        }
                        Some(Err(e)) => {
                            counter!(CONSUMER_ERRORS_TOTAL, "kind" => "poll").increment(1);
                            tracing::debug!(error = %e, "poll error");
                        }
                        None => break,
                    }
                }
            }
            Some(Err(e)) => {
                counter!(CONSUMER_ERRORS_TOTAL, "kind" => "poll").increment(1);
                tracing::debug!(error = %e, "poll error");
            }
            None => break,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    batch
}

/// Keeps the records of partitions still assigned.
fn owned_only<'c>(source: &'c Source, batch: Vec<BorrowedMessage<'c>>) -> Vec<BorrowedMessage<'c>> {
    let Ok(assignment) = source.assignment() else { return Vec::new() };
    let owned: HashSet<(String, i32)> = assignment.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
    let before = batch.len();
    let kept: Vec<_> = batch.into_iter().filter(|m| owned.contains(&(m.topic().to_owned(), m.partition()))).collect();
    if kept.len() != before {
        info!(dropped = before - kept.len(), "records of revoked partitions left to their new owner");
    }
    kept
}

/// A failed batch: which sink, and why.
struct BatchError {
    sink: &'static str,
    message: String,
    /// The transactional producer can never commit again (see [`SinkError::is_fatal`]).
    fatal: bool,
}

fn kafka_err(e: impl std::fmt::Display) -> BatchError {
    BatchError { sink: "kafka", message: e.to_string(), fatal: false }
}

fn sink_err(e: SinkError) -> BatchError {
    BatchError { sink: "kafka", fatal: e.is_fatal(), message: e.to_string() }
}

#[allow(clippy::too_many_arguments)]
fn process<'a>(
    batch: &[BorrowedMessage<'_>],
    first: &[(String, i32, i64)],
    bound: &'a HashMap<String, Bound>,
    sink: &SideProducer,
    mongo: Option<&MongoSink>,
    plan: Plan,
    source: &Source,
    settings: &Settings,
    clock: &dyn Clock,
    runtime: &tokio::runtime::Handle,
    out: &mut Outputs,
) -> Result<Sent<'a>, BatchError> {
    let dlq_topic = settings.topics.dlq.as_str();
    sink.begin().map_err(sink_err)?;
    // Borrowed from the batch: no allocation per record.
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    let mut run: Option<(&str, i32, i64)> = None;
    let mut done = Done { evaluated: Vec::with_capacity(batch.len()), claims: Vec::new(), lineage: HashMap::new() };
    let mut lineage: Vec<LineageDoc> = Vec::new();
    let mut stores: HashMap<&str, Vec<StoredRecord>> = HashMap::new();
    // One instant per batch (a batch spans a few milliseconds): freshness, lineage and windows
    // are measured at processing time without reading the clock per record.
    let now = clock.now();
    for_each_verdict(batch, bound, now, plan, |m, verdict| {
        let topic = m.topic();
        // Records come in runs of one partition: one map entry per run, not per record.
        match &mut run {
            Some((t, p, o)) if *t == topic && *p == m.partition() => *o = m.offset() + 1,
            _ => {
                if let Some((t, p, o)) = run.replace((topic, m.partition(), m.offset() + 1)) {
                    let _ = next.insert((t, p), o);
                }
            }
        }
        let Some(Verdict { bound: b, mut eval, claim }) = verdict else { return Ok(()) };
        done.claims.extend(claim);
        if let Some(r) = &eval.rejection {
            // Too large for the producer: first without the payload, then without key and
            // original headers too; the reason always goes through, so nothing stalls.
            let headers = dlq::headers(m, &b.contract, r, dlq::Carry::All);
            sink.send(dlq_topic, m.key(), m.payload(), headers, |attempt| match attempt {
                1 => Some((m.key(), None, dlq::headers(m, &b.contract, r, dlq::Carry::NoPayload))),
                2 => Some((None, None, dlq::headers(m, &b.contract, r, dlq::Carry::ReasonOnly))),
                _ => None,
            })
            .map_err(sink_err)?;
        }
        if mongo.is_some() {
            let valid = eval.is_valid();
            lineage.push(LineageDoc {
                source_topic: topic.to_owned(),
                source_partition: m.partition(),
                source_offset: m.offset(),
                source_timestamp_ms: m.timestamp().to_millis(),
                product: b.contract.product.clone(),
                contract: b.contract.name.clone(),
                contract_version: b.contract.version.clone(),
                record_id: eval.record_id.clone(),
                outcome: if valid { "valid" } else { "invalid" },
                destination_collection: if valid { MongoSink::record_store(&b.contract.product) } else { dlq_topic.to_owned() },
                destination_system: if valid { "mongodb" } else { "kafka" },
                processed_at: now,
            });
            *done.lineage.entry(b.topic.as_str()).or_default() += 1;
        }
        // Only a valid record's decoded form is kept, and only with a record store.
        if let Some(record) = eval.record.take()
            && let (Some(_), Some(key)) = (mongo, eval.record_id.clone())
        {
            stores.entry(b.contract.product.as_str()).or_default().push(StoredRecord {
                key,
                record,
                event_time_ms: eval.event_time.map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)),
                topic: topic.to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                contract: b.contract.name.clone(),
                contract_version: b.contract.version.clone(),
            });
        }
        done.evaluated.push((b.topic.as_str(), now, eval));
        Ok(())
    })?;
    if let Some((t, p, o)) = run {
        let _ = next.insert((t, p), o);
    }
    out.send_kafka(sink).map_err(sink_err)?;
    if let Some(mongo) = mongo {
        let mongo_started = Instant::now();
        runtime
            .block_on(async {
                mongo.write_lineage(&lineage).await?;
                for (product, records) in &stores {
                    mongo.write_versions(product, records).await?;
                }
                out.write_mongo(mongo).await
            })
            .map_err(|e| BatchError { sink: "mongodb", message: e.to_string(), fatal: false })?;
        histogram!(SINK_WRITE_SECONDS, "sink" => "mongodb").record(mongo_started.elapsed().as_secs_f64());
    }
    let offsets = offsets_list(&next);
    if !settings.delivery.exactly_once && offsets.count() > 0 {
        // Until `complete` takes it back, a revoke finishes this batch (see `InFlight`).
        let waiter = sink.waiter();
        if let Ok(mut outcome) = source.context().finished_on_revoke.lock() {
            *outcome = None;
        }
        if let Ok(mut slot) = source.context().in_flight.lock() {
            *slot = Some(InFlight { offsets: offsets.clone(), acked: Box::new(move || waiter.wait().is_ok()) });
        }
    }
    Ok(Sent { done, records: batch.len(), offsets, first: first.to_vec() })
}

/// Waits for a sent batch's acknowledgements (at-least-once; or commits its transaction with
/// its offsets) and stores its offsets. On failure, the batch's first offsets to read it again.
fn complete<'a>(
    sent: Sent<'a>,
    sink: &SideProducer,
    source: &Source,
    settings: &Settings,
    out: &mut Outputs,
) -> Result<Done<'a>, (BatchError, Firsts)> {
    let Sent { done, records, offsets, first } = sent;
    // The Kafka sink's time is the wait for its acknowledgement (or the transaction's commit)
    // once the batch is evaluated and sent, not the evaluation before it.
    let kafka_started = Instant::now();
    let result = if settings.delivery.exactly_once {
        source.group_metadata().ok_or_else(|| kafka_err("the consumer has no group metadata")).and_then(|group| {
            let offsets = (offsets.count() > 0).then_some(&offsets);
            let _watched = TxnCall::arm();
            sink.finish(offsets.map(|o| (o, &group))).map_err(sink_err)
        })
    } else {
        let registered = source.context().in_flight.lock().ok().and_then(|mut f| f.take());
        match registered {
            _ if offsets.count() == 0 => sink.finish(None).map_err(sink_err),
            Some(_) => sink.finish(None).map_err(sink_err).and_then(|()| {
                if offsets.count() > 0 {
                    source.store_offsets(&offsets).map_err(|e| kafka_err(format!("storing offsets: {e}")))
                } else {
                    Ok(())
                }
            }),
            // A revoke finished it while the next batch was gathered.
            None => match source.context().finished_on_revoke.lock().ok().and_then(|mut o| o.take()) {
                Some(true) => Ok(()),
                _ => Err(BatchError { sink: "kafka", message: "side-topic records not acknowledged before a revoke".into(), fatal: false }),
            },
        }
    };
    if let Err(e) = result {
        return Err((e, first));
    }
    out.clear_pending();
    histogram!(SINK_WRITE_SECONDS, "sink" => "kafka").record(kafka_started.elapsed().as_secs_f64());
    histogram!(BATCH_RECORDS).record(records as f64);
    Ok(done)
}

/// Applies an acknowledged batch: metrics, windows, and its claims to reconciliation.
fn finished(done: Done<'_>, bound: &HashMap<String, Bound>, reconciler: Option<&Worker>, stop: &AtomicBool, out: &mut Outputs) {
    apply(&done, bound, out);
    if let Some(r) = reconciler {
        r.submit(done.claims, stop);
    }
}

/// After a failed batch: aborts its transaction (or marks the producer for replacement), reads
/// it again from its first offsets (exactly-once: from the committed ones) and backs off.
fn recover(
    e: &BatchError,
    first: &[(String, i32, i64)],
    source: &Source,
    sink: &SideProducer,
    eos: bool,
    replace_sink: &mut bool,
    backoff: &mut Duration,
) {
    counter!(SINK_ERRORS_TOTAL, "sink" => e.sink).increment(1);
    warn!(error = %e.message, sink = e.sink, retry_in_ms = backoff.as_millis() as u64, "batch not acknowledged; rewinding to retry it");
    if eos {
        if e.fatal {
            warn!("the transactional producer is fenced or in a fatal state; replacing it");
            *replace_sink = true;
        } else if let Err(e) = {
            let _watched = TxnCall::arm();
            sink.abort()
        } {
            warn!(error = %e, fatal = e.is_fatal(), "aborting the transaction failed; replacing the producer");
            *replace_sink = true;
        }
        rewind_to_committed(source, first);
    } else {
        // Side-topic records not acknowledged: a fresh client starts from new metadata and
        // connections. A CI run of the fault harness once stalled for ten minutes after a
        // broker restart, its last lines side-topic delivery time-outs, while the test's own
        // producer delivered every input (cause not found). One client start per failure.
        if e.sink == "kafka" {
            *replace_sink = true;
        }
        rewind(source, first);
    }
    std::thread::sleep(*backoff);
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}

/// The first offset of every partition in `batch`.
fn firsts(batch: &[BorrowedMessage<'_>]) -> Firsts {
    let mut first: Firsts = Vec::new();
    let mut last: Option<(&str, i32)> = None;
    for m in batch {
        let (topic, partition) = (m.topic(), m.partition());
        // Records come in runs of one partition.
        if last == Some((topic, partition)) {
            continue;
        }
        last = Some((topic, partition));
        if !first.iter().any(|(t, p, _)| *p == partition && t == topic) {
            first.push((topic.to_owned(), partition, m.offset()));
        }
    }
    first
}

/// Records evaluated together before their side effects are sent. Small, so dead letters leave
/// while later records are evaluated: with the whole batch evaluated first, every batch waited
/// for all its acknowledgements at the end (0.9 s instead of 0.44 s per million events at 1024;
/// docs/benchmarks.md).
const EVALUATION_SLICE: usize = 128;

/// How batches are evaluated, fixed at start: on how many threads, and what the stream needs of
/// a record beyond its verdict.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Threads that evaluate a batch (`delivery.evaluation_threads`, resolved).
    threads: usize,
    /// Keep the decoded record of a valid event (for the record store).
    records: bool,
    /// Take a reconciliation claim for a valid event (a source database decides them).
    claims: bool,
}

/// One record's evaluation with its binding and claim.
struct Verdict<'a> {
    bound: &'a Bound,
    eval: Evaluation,
    claim: Option<Claim>,
}

/// Calls `each` with every record of `batch` and its verdict (`None` for a topic without a
/// contract), in the batch's order. Decoding, validation and measurement (pure CPU, no I/O) are
/// spread over `plan.threads` threads by slices: slice k is evaluated by thread k mod `threads`,
/// thread 0 being the stream thread itself, which also runs `each` on every slice in turn; the
/// others evaluate their slices ahead and hand them over in order.
fn for_each_verdict<'a, 'm, 'c, E>(
    batch: &'m [BorrowedMessage<'c>],
    bound: &'a HashMap<String, Bound>,
    now: OffsetDateTime,
    plan: Plan,
    mut each: impl FnMut(&'m BorrowedMessage<'c>, Option<Verdict<'a>>) -> Result<(), E>,
) -> Result<(), E> {
    let slices: Vec<&'m [BorrowedMessage<'c>]> = batch.chunks(EVALUATION_SLICE).collect();
    // One thread (or one slice) spawns nothing: the stream thread evaluates every slice.
    let threads = plan.threads.min(slices.len()).max(1);
    std::thread::scope(|scope| {
        let mut ahead = Vec::with_capacity(threads - 1);
        for t in 1..threads {
            let (tx, rx) = std::sync::mpsc::channel();
            let mine: Vec<&[BorrowedMessage<'c>]> = slices.iter().skip(t).step_by(threads).copied().collect();
            let _ = scope.spawn(move || {
                for slice in mine {
                    // The stream stopped reading (a sink failed): stop evaluating.
                    if tx.send(evaluate_slice(slice, bound, now, plan)).is_err() {
                        return;
                    }
                }
            });
            ahead.push(rx);
        }
        for (k, slice) in slices.iter().enumerate() {
            let verdicts = match k % threads {
                0 => evaluate_slice(slice, bound, now, plan),
                // A helper that died (it panicked; the scope re-raises that) leaves its slices to
                // this thread.
                t => ahead[t - 1].recv().unwrap_or_else(|_| evaluate_slice(slice, bound, now, plan)),
            };
            for (m, v) in slice.iter().zip(verdicts) {
                each(m, v)?;
            }
        }
        Ok(())
    })
}

/// Evaluates the records of one slice. The claim is taken and the decoded record dropped (unless
/// `plan.records`) right after each record is evaluated, on the thread that decoded it: while it
/// is in cache, and without freeing memory across threads.
fn evaluate_slice<'a>(
    records: &[BorrowedMessage<'_>],
    bound: &'a HashMap<String, Bound>,
    now: OffsetDateTime,
    plan: Plan,
) -> Vec<Option<Verdict<'a>>> {
    // Batches mostly hold runs of one topic: look the binding up only when the topic changes.
    let mut last: Option<(&str, Option<&'a Bound>)> = None;
    // Reused by every record of the slice (they borrow from the same batch).
    let mut tape = Tape::new();
    records
        .iter()
        .map(|m| {
            let topic = m.topic();
            let b = match last {
                Some((t, b)) if t == topic => b,
                _ => {
                    let b = bound.get(topic);
                    last = Some((topic, b));
                    b
                }
            }?;
            let payload = m.payload().unwrap_or_default();
            // Claims only when a database will decide them: without one they would pile up.
            let take = |record: AnyRecord<'_>, id: Option<&str>| {
                if plan.claims { crate::reconcile::claim(&b.contract, topic, record, id, now) } else { None }
            };
            if !plan.records {
                // Nothing keeps the decoded record: validate it where it lies.
                let (eval, claim) = evaluate_lean(&b.contract, payload, now, &mut tape, take);
                return Some(Verdict { bound: b, eval, claim });
            }
            let mut eval = evaluate(&b.contract, payload, now);
            let valid = eval.is_valid();
            let claim = match (&eval.record, valid) {
                (Some(record), true) => take(AnyRecord::Value(record), eval.record_id.as_deref()),
                _ => None,
            };
            if !valid {
                eval.record = None;
            }
            Some(Verdict { bound: b, eval, claim })
        })
        .collect()
}

/// Applies an acknowledged batch to metrics and windows.
fn apply(done: &Done<'_>, bound: &HashMap<String, Bound>, out: &mut Outputs) {
    #[derive(Default)]
    struct Tally {
        valid: u64,
        decode: u64,
        validate: u64,
        present: u64,
        expected: u64,
    }
    let mut tallies: HashMap<&str, Tally> = HashMap::new();
    // Batches hold runs of one topic: one lookup per run, not per record.
    for run in done.evaluated.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        let (topic, now) = (run[0].0, run[0].1);
        let Some(b) = bound.get(topic) else { continue };
        let t = tallies.entry(topic).or_default();
        for (_, _, eval) in run {
            t.present += u64::from(eval.completeness.present);
            t.expected += u64::from(eval.completeness.applicable);
            if let Some(age) = eval.freshness {
                b.metrics.freshness.record(age.as_secs_f64());
            }
            match &eval.rejection {
                None => t.valid += 1,
                Some(r) => {
                    match r.stage {
                        Stage::Decode => t.decode += 1,
                        Stage::Validate => t.validate += 1,
                    }
                    let mut keywords: Vec<&str> = r.violations.iter().map(|v| v.keyword.as_str()).collect();
                    keywords.sort_unstable();
                    keywords.dedup();
                    for k in keywords {
                        b.metrics.violation(k, 1);
                    }
                }
            }
        }
        out.windows.observe_run(topic, run.iter().map(|(_, _, e)| e), now);
    }
    for (topic, n) in &done.lineage {
        out.windows.lineage_written(topic, *n);
    }
    for (topic, t) in tallies {
        if let Some(b) = bound.get(topic) {
            b.metrics.valid.increment(t.valid);
            b.metrics.invalid.increment(t.decode + t.validate);
            b.metrics.dead_decode.increment(t.decode);
            b.metrics.dead_validate.increment(t.validate);
            b.metrics.required_present.increment(t.present);
            b.metrics.required_expected.increment(t.expected);
        }
    }
}

/// Seeks every partition of a batch back to its first record (`first`, see [`firsts`]), so the
/// batch is read again.
fn rewind(source: &Source, first: &[(String, i32, i64)]) {
    for (topic, partition, offset) in first {
        if let Err(e) = source.seek(topic, *partition, Offset::Offset(*offset), Duration::from_secs(5)) {
            warn!(topic, partition, offset, error = %e, "seek back failed");
        }
    }
}

/// Exactly-once: seeks every partition of a failed batch back to the group's committed offset
/// (the end of the last committed transaction), falling back to the batch's first record when
/// the coordinator does not answer or nothing is committed yet (the two agree while this
/// instance owns the partition: each committed batch commits its offsets).
fn rewind_to_committed(source: &Source, first: &[(String, i32, i64)]) {
    if first.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(first.len());
    for (topic, partition, _) in first {
        let _ = tpl.add_partition(topic, *partition);
    }
    let committed: HashMap<(String, i32), i64> = match source.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(c) => c
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "committed offsets unavailable; rewinding to the batch's first records");
            HashMap::new()
        }
    };
    for (topic, partition, offset) in first {
        let (partition, to) = (*partition, committed.get(&(topic.clone(), *partition)).copied().unwrap_or(*offset));
        if let Err(e) = source.seek(topic, partition, Offset::Offset(to), Duration::from_secs(5)) {
            warn!(topic, partition, offset = to, error = %e, "seek back failed");
        }
    }
}
