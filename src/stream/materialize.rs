//! The materializer (`mongodb.materialize = "kafka"`): a consumer group of its own
//! (`<kafka.group_id>.materializer`) over `topics.records`, writing what the stream produced
//! there (a lineage entry per record, the version of each valid record) to MongoDB at the
//! document store's pace, so the stream does not wait for it.
//!
//! Delivery: the stream produces the entries in the batch (in its transaction, in exactly-once
//! mode; the materializer reads committed records only), so an entry exists exactly when its
//! input record's offset is committed. The materializer commits an entry's offset only after
//! its documents are written; every document has a deterministic `_id`, so whatever is written
//! again after a crash or a rebalance is a duplicate key, taken as success. Nothing is lost,
//! nothing stored twice.
//!
//! Partitions of `topics.records` spread the writing over the instances (Kafka's assignment);
//! a key's entries share a partition, so its versions are written in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::owner::consumer;
use crate::config::Settings;
use crate::error::{Error, System};
use crate::sink::mongo::{Documents, Entry, MongoSink};
use crate::telemetry::names::{MATERIALIZE_LAG_SECONDS, MATERIALIZED_TOTAL, SINK_WRITE_SECONDS};

/// How long a gathering batch waits for more entries once it has one.
const LINGER: Duration = Duration::from_millis(100);
/// Draining with no partition assigned for this long: the other instances own them all.
const UNASSIGNED_GRACE: Duration = Duration::from_secs(5);

/// What the materializer runs with.
#[derive(Debug, Clone)]
pub struct Env {
    /// Set once the stream has stopped: the materializer writes what is left (up to
    /// `delivery.shutdown_timeout_ms`) and returns.
    pub drain: Arc<AtomicBool>,
    /// The runtime the document store's client runs on.
    pub runtime: tokio::runtime::Handle,
    /// `/readyz` shows the lag.
    pub health: Arc<crate::telemetry::http::Health>,
}

/// Runs the materializer until it has drained after `env.drain`. Any failure (MongoDB
/// unavailable, Kafka errors) starts it over from the committed offsets after a pause.
pub fn run(settings: &Settings, env: &Env) -> Result<(), Error> {
    let mut pause = Duration::from_millis(500);
    let timeout = Duration::from_millis(settings.delivery.shutdown_timeout_ms);
    let mut drain_started: Option<Instant> = None;
    loop {
        match run_once(settings, env, &mut drain_started) {
            Ok(()) => return Ok(()),
            Err(e) if drain_started.is_some_and(|t| t.elapsed() >= timeout) => return Err(e),
            Err(e) => {
                counter!(crate::telemetry::names::SINK_ERRORS_TOTAL, "sink" => "materializer").increment(1);
                warn!(error = %e.message, retry_in_ms = pause.as_millis() as u64, "materializer failed; starting over from the committed entries");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn run_once(settings: &Settings, env: &Env, drain_started: &mut Option<Instant>) -> Result<(), Error> {
    let timeout = Duration::from_millis(settings.delivery.shutdown_timeout_ms);
    let topic = settings.topics.records.as_str();
    let consumer = consumer(settings, &format!("{}.materializer", settings.kafka.group_id))?;
    consumer.subscribe(&[topic]).map_err(|e| Error::transient(System::Kafka, format_args!("cannot subscribe to {topic}: {e}")))?;
    let store = env
        .runtime
        .block_on(MongoSink::open(&settings.mongodb.uri, &settings.mongodb.database))
        .map_err(|e| Error::transient(System::MongoDb, format_args!("materializer: {e}")))?
        .with_history(settings.mongodb.history);
    let max = settings.mongodb.materialize_batch.max(1);
    info!(topic, max, "materializer started");
    loop {
        let draining = env.drain.load(Ordering::Relaxed);
        if draining && drain_started.is_none() {
            *drain_started = Some(Instant::now());
        }
        if drain_started.is_some_and(|t| t.elapsed() >= timeout) {
            warn!("materializer: entries left unwritten at shutdown; the next start writes them");
            return Ok(());
        }
        let mut documents = Documents::default();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut newest_produced_ms: Option<i64> = None;
        let mut first_at: Option<Instant> = None;
        while documents.entries().len() < max {
            let wait = match first_at {
                None => Duration::from_millis(100),
                Some(t) => match LINGER.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break,
                },
            };
            let Some(polled) = consumer.poll(wait) else { break };
            let m = polled.map_err(|e| Error::transient(System::Kafka, format_args!("reading {topic}: {e}")))?;
            let _ = next.insert(m.partition(), m.offset() + 1);
            first_at.get_or_insert_with(Instant::now);
            if let Some(ts) = m.timestamp().to_millis() {
                newest_produced_ms = Some(newest_produced_ms.map_or(ts, |n: i64| n.max(ts)));
            }
            match m.payload().map(serde_json::from_slice::<Entry>) {
                Some(Ok(entry)) => documents.push(entry),
                _ => {
                    warn!(partition = m.partition(), offset = m.offset(), "materializer: unreadable entry skipped");
                    counter!(MATERIALIZED_TOTAL, "outcome" => "unreadable").increment(1);
                }
            }
        }
        if next.is_empty() {
            // Everything committed so far is written.
            gauge!(MATERIALIZE_LAG_SECONDS).set(0.0);
            let alone = drain_started.is_some_and(|t| t.elapsed() > UNASSIGNED_GRACE);
            if draining && caught_up(&consumer, topic, alone) {
                info!("materializer drained");
                return Ok(());
            }
            continue;
        }
        let started = Instant::now();
        let written = env.runtime.block_on(documents.write(&store, true)).map_err(Error::from)?;
        histogram!(SINK_WRITE_SECONDS, "sink" => "materializer").record(started.elapsed().as_secs_f64());
        counter!(MATERIALIZED_TOTAL, "outcome" => "written").increment(written as u64);
        if let Some(ms) = newest_produced_ms {
            let lag = crate::measure::unix_ms(time::OffsetDateTime::now_utc()).saturating_sub(ms).max(0);
            gauge!(MATERIALIZE_LAG_SECONDS).set(lag as f64 / 1000.0);
            env.health.store_lag_ms.store(lag, Ordering::Relaxed);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
        }
        // A partition revoked meanwhile refuses the commit: its new owner writes those entries
        // again, which stores nothing twice (deterministic ids).
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            warn!(error = %e, "materializer: cannot commit the entries written; they are written again after a rebalance");
        }
    }
}

/// Whether every assigned partition of `topic` is read to its end (the consumer's position,
/// or the committed offset before the first fetch, at the high watermark). With nothing
/// assigned: `alone` (the group's other members own every partition).
fn caught_up(consumer: &rdkafka::consumer::BaseConsumer, topic: &str, alone: bool) -> bool {
    let Ok(assigned) = consumer.assignment() else { return false };
    if assigned.count() == 0 {
        return alone;
    }
    let positions = consumer.position().unwrap_or_default();
    let committed = consumer.committed(Duration::from_secs(5)).unwrap_or_default();
    assigned.elements().iter().filter(|e| e.topic() == topic).all(|e| {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(5)) else { return false };
        let at = |tpl: &TopicPartitionList| match tpl.find_partition(topic, e.partition()).map(|p| p.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        at(&positions).or_else(|| at(&committed)).is_some_and(|o| o >= high) || high == 0
    })
}
