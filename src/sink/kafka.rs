//! The side-topic producer: idempotent and batched; in exactly-once mode transactional, with
//! the consumer's offsets committed in the same transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::warn;

use crate::config::{KafkaClient, Settings};
use crate::error::{Error, System};

/// Counts failed deliveries; the stream checks it once per batch. Every delivery report (run on
/// the producer's polling thread) wakes a waiting [`SideProducer::finish`].
#[derive(Debug, Default)]
pub struct SinkContext {
    failures: Arc<AtomicU64>,
    /// Delivery reports served so far (successes and failures), never reset.
    acked: Arc<AtomicU64>,
    delivered: Arc<(Mutex<()>, Condvar)>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            // One line per batch, not per record (a refused batch of thousands of dead letters
            // logged thousands): the batch's own warning gives the count.
            if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                warn!(error = %e, "side-topic delivery failed; the batch will be retried");
            } else {
                tracing::debug!(error = %e, "side-topic delivery failed");
            }
        }
        let (lock, wake) = &*self.delivered;
        let guard = lock.lock();
        let _ = self.acked.fetch_add(1, Ordering::Release);
        drop(guard);
        wake.notify_all();
    }
}

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Some records were not acknowledged.
    #[error("{0} side-topic records were not delivered")]
    Undelivered(u64),
    /// The client refused or timed out.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

impl SinkError {
    /// A fatal transactional error (e.g. the producer was fenced, or its epoch bumped after a
    /// transaction timeout): this producer can never commit again and must be replaced.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Kafka(KafkaError::Transaction(e)) => e.is_fatal(),
            Self::Kafka(e) => e.rdkafka_error_code().is_some_and(|c| {
                matches!(
                    c,
                    RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::InvalidProducerIdMapping
                )
            }),
            Self::Undelivered(_) => false,
        }
    }
}

impl SinkError {
    /// The stream's retry hint for this producer's failure. At-least-once: a fresh client
    /// (new metadata and connections) for any failure: a CI run of the fault harness once
    /// stalled for ten minutes after a broker restart, its last lines side-topic delivery
    /// time-outs, while the test's own producer delivered every input. Exactly-once: only a
    /// fenced or fatally failed producer is replaced; otherwise the transaction is aborted and
    /// the batch read again.
    pub fn into_error(self, transactional: bool) -> Error {
        if !transactional || self.is_fatal() { Error::replace_client(System::Kafka, self) } else { Error::transient(System::Kafka, self) }
    }
}

/// The Kafka transaction calls under way (send the offsets and commit, or abort), each with the
/// moment it may end by, in ms since `WATCHDOG_EPOCH`. One entry per call, not one shared
/// deadline: the stream and the group-wide quality owner each have a transactional producer, and
/// with a single slot the owner's calls (one per window) re-armed and then cleared it while the
/// stream's call hung, so the watchdog never fired (the fault harness caught a stream parked in
/// `send_offsets_to_transaction` for over five minutes, the owner committing beside it).
static TXN_CALLS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
static TXN_CALL_IDS: AtomicU64 = AtomicU64::new(0);
static WATCHDOG_EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
static WATCHDOG: std::sync::Once = std::sync::Once::new();
/// A transaction call gets its own time-outs (30 s for the offsets, 30 s for the commit) and
/// then this much more before the watchdog gives up on it.
const TXN_WATCHDOG: Duration = Duration::from_secs(120);

/// The earliest deadline of the transaction calls under way.
fn earliest_txn_deadline() -> Option<u64> {
    TXN_CALLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(_, d)| *d).min()
}

/// Ends the process when a Kafka transaction call outlives its time-outs by far. librdkafka 2.12's
/// `send_offsets_to_transaction` can wait forever for a group coordinator it decommissioned
/// after a broker restart, past its time-out (confluentinc/librdkafka#5456 and #5511: the call
/// waits on a condition variable with no time limit); the fault harness caught a stream thread
/// parked there for ten minutes. The call cannot be cancelled, and a restart resumes from the
/// last committed transaction, which is what exactly-once is built to survive (a supervisor,
/// e.g. Kubernetes, starts the process again). Started once, by the first transactional producer.
fn start_txn_watchdog() {
    WATCHDOG.call_once(|| {
        let _ = *WATCHDOG_EPOCH;
        let spawned = std::thread::Builder::new().name("txn-watchdog".into()).spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if earliest_txn_deadline().is_some_and(|d| WATCHDOG_EPOCH.elapsed().as_millis() as u64 > d) {
                    tracing::error!(
                        waited_s = TXN_WATCHDOG.as_secs(),
                        "a Kafka transaction call has not returned (librdkafka#5456/#5511); exiting so that a restart resumes from the last committed transaction"
                    );
                    std::process::exit(1);
                }
            }
        });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the transaction watchdog");
        }
    });
}

/// Arms the watchdog for one transaction call; disarmed (that call only) when dropped.
struct TxnCall(u64);

impl TxnCall {
    fn arm() -> Self {
        Self::arm_for(TXN_WATCHDOG)
    }

    fn arm_for(limit: Duration) -> Self {
        let id = TXN_CALL_IDS.fetch_add(1, Ordering::Relaxed);
        let deadline = (WATCHDOG_EPOCH.elapsed() + limit).as_millis() as u64;
        TXN_CALLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, deadline));
        Self(id)
    }
}

impl Drop for TxnCall {
    fn drop(&mut self) {
        TXN_CALLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|(id, _)| *id != self.0);
    }
}

/// The producer for dead letters, alerts and OpenLineage events.
pub struct SideProducer {
    producer: ThreadedProducer<SinkContext>,
    failures: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    delivered: Arc<(Mutex<()>, Condvar)>,
    /// Records accepted by `send` so far, never reset.
    sent: AtomicU64,
    transactional: bool,
    timeout: Duration,
}

impl std::fmt::Debug for SideProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideProducer").field("transactional", &self.transactional).finish_non_exhaustive()
    }
}

impl SideProducer {
    /// Creates the producer; in exactly-once mode also initialises transactions.
    pub fn new(settings: &Settings, transactional_id: Option<&str>) -> Result<Self, Error> {
        let config = rdkafka::ClientConfig::from_iter(settings.kafka_properties(KafkaClient::SideProducer(transactional_id)));
        let context = SinkContext::default();
        let failures = context.failures.clone();
        let delivered = context.delivered.clone();
        let acked = context.acked.clone();
        let producer: ThreadedProducer<SinkContext> = config
            .create_with_context(context)
            .map_err(|e| Error::refused(System::Kafka, format_args!("cannot create the Kafka producer: {e}")))?;
        let timeout = Duration::from_secs(30);
        if transactional_id.is_some() {
            start_txn_watchdog();
            producer
                .init_transactions(timeout)
                .map_err(|e| Error::transient(System::Kafka, format_args!("cannot initialise Kafka transactions: {e}")))?;
        }
        Ok(Self { producer, failures, acked, delivered, sent: AtomicU64::new(0), transactional: transactional_id.is_some(), timeout })
    }

    /// Whether batches are transactions (exactly-once).
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Starts a batch.
    pub fn begin(&self) -> Result<(), SinkError> {
        self.failures.store(0, Ordering::Relaxed);
        if self.transactional {
            self.producer.begin_transaction()?;
        }
        Ok(())
    }

    /// Queues one record; waits while the local queue is full. When the producer refuses it as
    /// too large (`message.max.bytes`), `smaller(attempt)` gives a smaller version to send
    /// instead (key, payload, headers), for `attempt` 1, 2, …; `None` gives up with the error.
    pub fn send<'a>(
        &self,
        topic: &str,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
        headers: OwnedHeaders,
        mut smaller: impl FnMut(u32) -> Option<(Option<&'a [u8]>, Option<&'a [u8]>, OwnedHeaders)>,
    ) -> Result<(), SinkError> {
        let build = |key: Option<&'a [u8]>, payload: Option<&'a [u8]>, headers: OwnedHeaders| {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).headers(headers);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = payload {
                record = record.payload(p);
            }
            record
        };
        let mut record = build(key, payload, headers);
        let mut attempt = 0;
        loop {
            match self.enqueue(record) {
                Ok(()) => return Ok(()),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                    attempt += 1;
                    match smaller(attempt) {
                        Some((k, p, h)) => record = build(k, p, h),
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Queues `record`, waiting while the local queue is full.
    fn enqueue(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    let _ = self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Queues one small record to a chosen partition (`None`: the partitioner's); waits while
    /// the local queue is full.
    pub fn send_to(&self, topic: &str, partition: Option<i32>, key: &[u8], payload: Option<&[u8]>) -> Result<(), SinkError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        self.enqueue(record).map_err(SinkError::from)
    }

    /// The number of partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<i32, Error> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| Error::transient(System::Kafka, format_args!("cannot read the metadata of {topic}: {e}")))?;
        match metadata.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()) {
            Some(n) if n > 0 => Ok(i32::try_from(n).unwrap_or(i32::MAX)),
            _ => Err(Error::transient(System::Kafka, format_args!("topic {topic} has no partitions (does it exist?)"))),
        }
    }

    /// Ends a batch: waits for every acknowledgement (at-least-once) or commits the transaction
    /// with `offsets` (exactly-once).
    pub fn finish(&self, offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>) -> Result<(), SinkError> {
        if self.transactional {
            let _watched = TxnCall::arm();
            if let Some((tpl, group)) = offsets {
                self.producer.send_offsets_to_transaction(tpl, group, self.timeout)?;
            }
            self.producer.commit_transaction(self.timeout)?;
        } else {
            self.wait_delivered()?;
        }
        match self.failures.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(SinkError::Undelivered(n)),
        }
    }

    /// Waits until every queued record is acknowledged. Not `Producer::flush`: on a
    /// `ThreadedProducer` its loop polls the main queue for up to 100 ms at a time while the
    /// polling thread takes the delivery reports, so every batch with a dead letter paid ~100 ms.
    fn wait_delivered(&self) -> Result<(), SinkError> {
        let waiter = self.waiter();
        if waiter.done() {
            return Ok(());
        }
        // A zero-timeout flush sends what is queued now instead of after linger.ms; it reports
        // a time-out because the records are still in flight, which is expected here.
        let _ = self.producer.flush(Duration::ZERO);
        waiter.wait_acked()
    }

    /// A handle that waits, from any thread, until every record sent so far is acknowledged
    /// (at-least-once mode: the consumer's revoke callback finishes the batch in flight with it).
    pub fn waiter(&self) -> AckWaiter {
        AckWaiter {
            acked: self.acked.clone(),
            failures: self.failures.clone(),
            delivered: self.delivered.clone(),
            target: self.sent.load(Ordering::Relaxed),
            timeout: self.timeout,
        }
    }

    /// Abandons a batch (exactly-once): nothing of it becomes visible.
    pub fn abort(&self) -> Result<(), SinkError> {
        if self.transactional {
            let _watched = TxnCall::arm();
            self.producer.abort_transaction(self.timeout)?;
        }
        Ok(())
    }
}

/// Waits for the acknowledgement of the records a [`SideProducer`] had sent when it was made.
#[derive(Debug)]
pub struct AckWaiter {
    acked: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    delivered: Arc<(Mutex<()>, Condvar)>,
    target: u64,
    timeout: Duration,
}

impl AckWaiter {
    fn done(&self) -> bool {
        self.acked.load(Ordering::Acquire) >= self.target
    }

    fn wait_acked(&self) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.timeout;
        let (lock, wake) = &*self.delivered;
        let mut guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while !self.done() {
            let now = Instant::now();
            if now >= deadline {
                return Err(SinkError::Kafka(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)));
            }
            // The report's count is raised under the lock, so none is missed between the check
            // and the wait.
            guard = wake.wait_timeout(guard, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        Ok(())
    }

    /// Waits until those records are acknowledged; an error if one was not delivered (or the
    /// producer's time-out passed first).
    pub fn wait(&self) -> Result<(), SinkError> {
        self.wait_acked()?;
        match self.failures.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(SinkError::Undelivered(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One producer's call ending must not disarm another's that is still under way (the
    /// watchdog once shared one slot, which the quality owner's commits kept clearing).
    #[test]
    fn a_call_that_ends_leaves_the_others_armed() {
        let hung = TxnCall::arm_for(Duration::from_secs(3_000));
        let hung_deadline = earliest_txn_deadline();
        assert!(hung_deadline.is_some());
        for _ in 0..3 {
            let other = TxnCall::arm_for(Duration::from_secs(4_000));
            drop(other);
        }
        assert_eq!(earliest_txn_deadline(), hung_deadline, "the hung call is still watched");
        let sooner = TxnCall::arm_for(Duration::from_secs(1_000));
        assert!(earliest_txn_deadline() < hung_deadline, "the earliest deadline is the one watched");
        drop(sooner);
        let id = hung.0;
        drop(hung);
        let armed = TXN_CALLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|(i, _)| *i == id);
        assert!(!armed, "a call that ended is no longer watched");
    }
}
