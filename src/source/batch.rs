//! Every consumer operation the stream performs: poll a batch, drop the records of partitions
//! revoked while it was gathered, read a failed batch again, register the batch in flight with
//! the rebalance callback, and store (or hand to a transaction) the offsets of a batch whose
//! sinks acknowledged it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::kafka::{InFlight, Source, consumer};
use crate::config::Settings;
use crate::error::{Error, System};
use crate::telemetry::http::Health;
use crate::telemetry::names::CONSUMER_ERRORS_TOTAL;

/// How much one batch may hold and how long gathering it may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Records at most (`delivery.batch_max_records`).
    pub records: usize,
    /// Bytes of payloads and keys at most (`delivery.batch_max_bytes`).
    pub bytes: usize,
    /// How long to wait for more records after the first (`delivery.batch_linger_ms`).
    pub linger: Duration,
}

impl Limits {
    /// The limits `settings.delivery` sets.
    pub fn of(settings: &Settings) -> Self {
        Self {
            records: settings.delivery.batch_max_records,
            bytes: settings.delivery.batch_max_bytes,
            linger: Duration::from_millis(settings.delivery.batch_linger_ms),
        }
    }
}

/// The first offset of each partition of a batch: where to read it again if it fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firsts(Vec<(String, i32, i64)>);

impl Firsts {
    /// The first offset of every partition in `records`.
    pub fn of(records: &[BorrowedMessage<'_>]) -> Self {
        let mut first = Vec::new();
        let mut last: Option<(&str, i32)> = None;
        for m in records {
            let (topic, partition) = (m.topic(), m.partition());
            // Records come in runs of one partition.
            if last == Some((topic, partition)) {
                continue;
            }
            last = Some((topic, partition));
            if !first.iter().any(|(t, p, _): &(String, i32, i64)| *p == partition && t == topic) {
                first.push((topic.to_owned(), partition, m.offset()));
            }
        }
        Self(first)
    }

    /// Adds the partitions of `later` that this one lacks: a failed batch followed by one
    /// already gathered is read again from the failed batch's offsets and, for partitions only
    /// the later batch holds, from the later batch's (dropping it without would skip its
    /// records).
    pub fn merge(&mut self, later: Self) {
        for (topic, partition, offset) in later.0 {
            if !self.0.iter().any(|(t, p, _)| *p == partition && *t == topic) {
                self.0.push((topic, partition, offset));
            }
        }
    }
}

/// The consumer group member the stream reads from.
pub struct KafkaSource {
    consumer: Source,
    exactly_once: bool,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("exactly_once", &self.exactly_once).finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer and subscribes to `topics`.
    pub fn subscribe(settings: &Settings, topics: &[String], health: Arc<Health>) -> Result<Self, Error> {
        let consumer = consumer(settings, topics, health)?;
        Ok(Self { consumer, exactly_once: settings.delivery.exactly_once })
    }

    /// An error retrying cannot fix (authentication, TLS), once the client met one.
    pub fn fatal(&self) -> Option<String> {
        self.consumer.context().fatal.get()
    }

    /// Bumped by every rebalance.
    pub fn epoch(&self) -> u64 {
        self.consumer.context().epoch.load(Ordering::SeqCst)
    }

    /// The partitions revoked since the last call (topic, partition), oldest first.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.consumer.context().revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    /// Polls until `limits` are reached, the linger time after the first record, `first_wait`
    /// without any record, or a stop request; then keeps only the records of partitions still
    /// assigned if a rebalance happened meanwhile (rebalance callbacks run inside `poll`; the
    /// new owner reads a revoked partition's records from the committed offset). The clock
    /// and the stop flag are read every 64 records, not per record (reading the clock was the
    /// largest single item in a profile of the stream thread).
    pub fn gather(&self, limits: Limits, first_wait: Duration, stop: &AtomicBool) -> Vec<BorrowedMessage<'_>> {
        let epoch = self.epoch();
        let batch = self.poll_batch(limits, first_wait, stop);
        if self.epoch() == epoch { batch } else { self.owned_only(batch) }
    }

    fn poll_batch(&self, limits: Limits, first_wait: Duration, stop: &AtomicBool) -> Vec<BorrowedMessage<'_>> {
        let (max, max_bytes) = (limits.records, limits.bytes);
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
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + limits.linger);
                    }
                    bytes += size(&m);
                    batch.push(m);
                    // Drain what is already fetched without a time-out per record.
                    while batch.len() < max && bytes < max_bytes && !batch.len().is_multiple_of(64) {
                        match self.consumer.poll(Duration::ZERO) {
                            Some(Ok(m)) => {
                                bytes += size(&m);
                                batch.push(m);
                            }
                            Some(Err(e)) => poll_error(&e),
                            None => break,
                        }
                    }
                }
                Some(Err(e)) => poll_error(&e),
                None => break,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        batch
    }

    /// Keeps the records of partitions still assigned.
    fn owned_only<'c>(&'c self, batch: Vec<BorrowedMessage<'c>>) -> Vec<BorrowedMessage<'c>> {
        let Ok(assignment) = self.consumer.assignment() else { return Vec::new() };
        let owned: HashSet<(String, i32)> = assignment.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let before = batch.len();
        let kept: Vec<_> = batch.into_iter().filter(|m| owned.contains(&(m.topic().to_owned(), m.partition()))).collect();
        if kept.len() != before {
            info!(dropped = before - kept.len(), "records of revoked partitions left to their new owner");
        }
        kept
    }

    /// The partitions this instance owns.
    pub fn owned_partitions(&self) -> HashSet<(String, i32)> {
        self.consumer.assignment().map(|a| a.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()).unwrap_or_default()
    }

    /// The topics this instance owns partitions of.
    pub fn owned_topics(&self) -> HashSet<String> {
        self.consumer.assignment().map(|a| a.elements().iter().map(|e| e.topic().to_owned()).collect()).unwrap_or_default()
    }

    /// At-least-once: the batch whose offsets are `offsets` is sent and not yet acknowledged;
    /// until [`acknowledge`](Self::acknowledge) takes it back, a revoke finishes it (waits with
    /// `acked`, stores its offsets) before the partitions are handed over.
    pub fn register_in_flight(&self, offsets: &TopicPartitionList, acked: Box<dyn Fn() -> bool + Send>) {
        if let Ok(mut outcome) = self.consumer.context().finished_on_revoke.lock() {
            *outcome = None;
        }
        if let Ok(mut slot) = self.consumer.context().in_flight.lock() {
            *slot = Some(InFlight { offsets: offsets.clone(), acked });
        }
    }

    /// At-least-once: stores a sent batch's offsets once `acknowledged` (the sinks' wait)
    /// succeeded. A batch a revoke already finished is not waited for again; if the revoke
    /// could not finish it, it failed.
    pub fn acknowledge(&self, offsets: &TopicPartitionList, acknowledged: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        if offsets.count() == 0 {
            return acknowledged();
        }
        let registered = self.consumer.context().in_flight.lock().ok().and_then(|mut f| f.take());
        if registered.is_some() {
            acknowledged()?;
            return self.consumer.store_offsets(offsets).map_err(|e| Error::transient(System::Kafka, format_args!("storing offsets: {e}")));
        }
        match self.consumer.context().finished_on_revoke.lock().ok().and_then(|mut o| o.take()) {
            Some(true) => Ok(()),
            _ => Err(Error::replace_client(System::Kafka, "side-topic records not acknowledged before a revoke")),
        }
    }

    /// The group's metadata, for a transaction's offsets (exactly-once).
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata, Error> {
        self.consumer.group_metadata().ok_or_else(|| Error::transient(System::Kafka, "the consumer has no group metadata"))
    }

    /// Reads a failed batch again: at-least-once from its first records; exactly-once from the
    /// group's committed offsets (the end of the last committed transaction).
    pub fn rewind(&self, first: &Firsts) {
        if self.exactly_once {
            self.rewind_to_committed(first)
        } else {
            self.seek_all(first.0.iter().map(|(t, p, o)| (t.as_str(), *p, *o)))
        }
    }

    fn seek_all<'a>(&self, to: impl Iterator<Item = (&'a str, i32, i64)>) {
        for (topic, partition, offset) in to {
            if let Err(e) = self.consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
                warn!(topic, partition, offset, error = %e, "seek back failed");
            }
        }
    }

    /// Seeks every partition of a failed batch back to the group's committed offset, falling
    /// back to the batch's first record when the coordinator does not answer or nothing is
    /// committed yet (the two agree while this instance owns the partition: each committed
    /// batch commits its offsets).
    fn rewind_to_committed(&self, first: &Firsts) {
        if first.0.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(first.0.len());
        for (topic, partition, _) in &first.0 {
            let _ = tpl.add_partition(topic, *partition);
        }
        let committed: HashMap<(String, i32), i64> = match self.consumer.committed_offsets(tpl, Duration::from_secs(5)) {
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
        self.seek_all(first.0.iter().map(|(topic, partition, offset)| {
            (topic.as_str(), *partition, committed.get(&(topic.clone(), *partition)).copied().unwrap_or(*offset))
        }));
    }

    /// Leaves the group: at-least-once commits the stored offsets first.
    pub fn close(&self) {
        if !self.exactly_once
            && let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync)
            && !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::NoOffset))
        {
            warn!(error = %e, "final commit failed; a restart replays from the last commit");
        }
        self.consumer.unsubscribe();
    }
}

fn poll_error(e: &rdkafka::error::KafkaError) {
    counter!(CONSUMER_ERRORS_TOTAL, "kind" => "poll").increment(1);
    tracing::debug!(error = %e, "poll error");
}

/// Tracks the next offset of every partition of a batch as its records go by, in runs of one
/// partition (one map entry per run, not per record).
#[derive(Debug, Default)]
pub struct NextOffsets<'m> {
    next: HashMap<(&'m str, i32), i64>,
    run: Option<(&'m str, i32, i64)>,
}

impl<'m> NextOffsets<'m> {
    /// Records `m` as processed.
    pub fn advance(&mut self, m: &'m BorrowedMessage<'_>) {
        let topic = m.topic();
        match &mut self.run {
            Some((t, p, o)) if *t == topic && *p == m.partition() => *o = m.offset() + 1,
            _ => {
                if let Some((t, p, o)) = self.run.replace((topic, m.partition(), m.offset() + 1)) {
                    let _ = self.next.insert((t, p), o);
                }
            }
        }
    }

    /// The offsets to store (or commit): the next to consume of every partition seen.
    pub fn into_list(mut self) -> TopicPartitionList {
        if let Some((t, p, o)) = self.run.take() {
            let _ = self.next.insert((t, p), o);
        }
        let mut tpl = TopicPartitionList::with_capacity(self.next.len());
        for ((topic, partition), next) in &self.next {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        tpl
    }
}

/// The value of the last header of `m` named `name` (`None` without one, or a valueless one).
/// rdkafka panics on a header name that is not UTF-8 (a hostile producer can send one): each
/// header is read on its own with that panic caught, unprinted, so such a header is skipped and
/// the others are still read.
pub fn header<'m>(m: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m [u8]> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    (0..headers.count()).rev().find_map(|i| quietly(|| headers.try_get(i).filter(|h| h.key == name).and_then(|h| h.value)).flatten())
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

/// Runs `f`, catching a panic without printing it (on this thread only: the hook installed
/// once passes every other panic to the previous hook). For rdkafka's header accessors, which
/// panic on a header name that is not UTF-8.
pub fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.ok()
}
