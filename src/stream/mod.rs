//! The stream: gather a batch from the consumer, decode → validate → measure each record,
//! route rejections to the dead-letter topic, and only when every sink has acknowledged the
//! batch store its offsets (or commit them in the batch's transaction).
//!
//! Rebalance callbacks run inside `poll`, between records of a gathering batch; records of
//! partitions revoked meanwhile are dropped from the batch unprocessed (their new owner reads
//! them from the committed offset), so no output is written for a record this instance does
//! not own any more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::Offset;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::contract::Contract;
use crate::product::Catalog;
use crate::quality::Clock;
use crate::sink::dlq;
use crate::sink::kafka::SideProducer;
use crate::source::kafka::{Source, consumer, offsets_list};
use crate::telemetry::BindingMetrics;
use crate::telemetry::http::Health;
use crate::telemetry::names::{BATCH_RECORDS, SINK_ERRORS_TOTAL, SINK_WRITE_SECONDS};
use crate::verdict::{Stage, evaluate};

/// A topic's contract with its metric handles.
struct Bound {
    contract: Arc<Contract>,
    metrics: BindingMetrics,
}

/// Per-binding tallies of one batch, applied to metrics once the batch is acknowledged.
#[derive(Default, Clone, Copy)]
struct Tally {
    valid: u64,
    decode: u64,
    validate: u64,
    present: u64,
    expected: u64,
}

/// Runs until `stop` is set, then drains the current batch and commits.
pub fn run(settings: &Settings, catalog: &Catalog, clock: Arc<dyn Clock>, health: Arc<Health>, stop: Arc<AtomicBool>) -> Result<(), String> {
    let topics = catalog.topics();
    if topics.is_empty() {
        return Err("no data product declares a Kafka topic (spec.apis.kafka.topics)".into());
    }
    let bound: HashMap<String, Bound> = catalog
        .bindings()
        .map(|b| (b.topic.clone(), Bound { contract: b.contract.clone(), metrics: BindingMetrics::new(&b.contract.product, &b.contract.name, &b.topic) }))
        .collect();
    let eos = settings.delivery.exactly_once;
    let transactional_id = eos.then(|| format!("{}-{}", settings.kafka.group_id, uuid::Uuid::new_v4()));
    let sink = SideProducer::new(settings, transactional_id.as_deref())?;
    let source = consumer(settings, &topics, health.clone())?;
    info!(topics = topics.len(), exactly_once = eos, group = %settings.kafka.group_id, "stream started");
    health.live.store(true, Ordering::Relaxed);

    let max = settings.delivery.batch_max_records;
    let linger = Duration::from_millis(settings.delivery.batch_linger_ms);
    let dlq_topic = settings.topics.dlq.as_str();
    let mut backoff = Duration::from_millis(100);
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        let epoch = source.context().epoch.load(Ordering::SeqCst);
        let batch = gather(&source, max, linger, &stop);
        if batch.is_empty() {
            continue;
        }
        let batch = if source.context().epoch.load(Ordering::SeqCst) == epoch { batch } else { owned_only(&source, batch) };
        if batch.is_empty() {
            continue;
        }
        match process(&batch, &bound, &sink, &source, dlq_topic, clock.as_ref(), eos) {
            Ok(tallies) => {
                backoff = Duration::from_millis(100);
                histogram!(BATCH_RECORDS).record(batch.len() as f64);
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
            Err(e) => {
                counter!(SINK_ERRORS_TOTAL, "sink" => "kafka").increment(1);
                warn!(error = %e, records = batch.len(), retry_in_ms = backoff.as_millis() as u64, "batch not acknowledged; rewinding to retry it");
                if eos {
                    if let Err(e) = sink.abort() {
                        error!(error = %e, "aborting the transaction failed");
                        result = Err(format!("transaction abort failed: {e}"));
                        break;
                    }
                }
                rewind(&source, &batch);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    health.ready.store(false, Ordering::Relaxed);
    if !eos {
        if let Err(e) = source.commit_consumer_state(CommitMode::Sync) {
            if !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
                warn!(error = %e, "final commit failed; a restart replays from the last commit");
            }
        }
    }
    source.unsubscribe();
    health.live.store(false, Ordering::Relaxed);
    info!("stream stopped");
    result
}

/// Polls until `max` records, the linger time after the first record, or a stop request.
fn gather<'c>(source: &'c Source, max: usize, linger: Duration, stop: &AtomicBool) -> Vec<BorrowedMessage<'c>> {
    let mut batch = Vec::with_capacity(max.min(4096));
    let mut deadline: Option<Instant> = None;
    while batch.len() < max {
        let wait = match deadline {
            None => Duration::from_millis(100),
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        match source.poll(wait) {
            Some(Ok(m)) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + linger);
                }
                batch.push(m);
            }
            Some(Err(e)) => {
                counter!(crate::telemetry::names::CONSUMER_ERRORS_TOTAL, "kind" => "poll").increment(1);
                tracing::debug!(error = %e, "poll error");
            }
            None => {
                if deadline.is_some() || stop.load(Ordering::Relaxed) {
                    break;
                }
                if batch.is_empty() {
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
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

fn process<'b>(
    batch: &'b [BorrowedMessage<'_>],
    bound: &HashMap<String, Bound>,
    sink: &SideProducer,
    source: &Source,
    dlq_topic: &str,
    clock: &dyn Clock,
    eos: bool,
) -> Result<HashMap<&'b str, Tally>, String> {
    let started = Instant::now();
    sink.begin().map_err(|e| e.to_string())?;
    let mut tallies: HashMap<&str, Tally> = HashMap::new();
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for m in batch {
        let topic = m.topic();
        let _ = next.insert((topic.to_owned(), m.partition()), m.offset() + 1);
        let Some(b) = bound.get(topic) else { continue };
        let now = clock.now();
        let eval = evaluate(&b.contract, m.payload().unwrap_or_default(), now);
        let t = tallies.entry(topic).or_default();
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
                let headers = dlq::headers(m, &b.contract, r, false);
                sink.send(dlq_topic, m.key(), m.payload(), headers, |h| {
                    h.insert(Header { key: dlq::header::PAYLOAD_DROPPED, value: Some("true".as_bytes()) })
                })
                .map_err(|e| e.to_string())?;
            }
        }
    }
    let offsets = offsets_list(&next);
    if eos {
        let group = source.group_metadata().ok_or("the consumer has no group metadata")?;
        sink.finish(Some((&offsets, &group))).map_err(|e| e.to_string())?;
    } else {
        sink.finish(None).map_err(|e| e.to_string())?;
        source.store_offsets(&offsets).map_err(|e| format!("storing offsets: {e}"))?;
    }
    histogram!(SINK_WRITE_SECONDS, "sink" => "kafka").record(started.elapsed().as_secs_f64());
    Ok(tallies)
}

/// Seeks every partition of `batch` back to its first record, so the batch is read again.
fn rewind(source: &Source, batch: &[BorrowedMessage<'_>]) {
    let mut first: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let _ = first.entry((m.topic(), m.partition())).or_insert(m.offset());
    }
    for ((topic, partition), offset) in first {
        if let Err(e) = source.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
            warn!(topic, partition, offset, error = %e, "seek back failed");
        }
    }
}
