//! The consumer: cooperative-sticky group membership, offsets stored only by the stream after
//! its sinks acknowledged, commits on revoke, lag from librdkafka statistics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{counter, gauge};
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::statistics::Statistics;
use tracing::{debug, error, info, warn};

use crate::config::{KafkaClient, Settings};
use crate::error::{Error, System};
use crate::telemetry::http::Health;
use crate::telemetry::names::{ASSIGNED_PARTITIONS, CONSUMER_ERRORS_TOTAL, CONSUMER_LAG, REBALANCES_TOTAL};

/// The first Kafka client error that retrying cannot fix (wrong credentials, a certificate
/// that does not verify). librdkafka itself would retry such errors forever, with backoff; the
/// stream and the start-up check stop instead and report it.
#[derive(Debug, Default)]
pub struct FatalError(Mutex<Option<String>>);

impl FatalError {
    /// Records `error` if it is fatal; returns whether it was.
    pub fn record(&self, error: &KafkaError, reason: &str, security: &str) -> bool {
        let what = match error.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::Authentication | rdkafka::types::RDKafkaErrorCode::SaslAuthenticationFailed) => {
                "Kafka authentication failed"
            }
            Some(rdkafka::types::RDKafkaErrorCode::SSL) => "Kafka TLS handshake failed",
            _ => return false,
        };
        if let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(format!("{what} ({security}): {reason}"));
        }
        true
    }

    /// The recorded error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// Callbacks librdkafka runs inside `poll`.
#[derive(Debug)]
pub struct SourceContext {
    /// Bumped on every rebalance, so the stream can tell that a batch it gathered may hold
    /// records of partitions it no longer owns.
    pub epoch: AtomicU64,
    /// Readiness for `/readyz`.
    pub health: Arc<Health>,
    /// In exactly-once mode offsets are committed by transactions, never on revoke.
    pub commit_on_revoke: bool,
    /// Set when authentication or TLS fails; the stream stops with it.
    pub fatal: FatalError,
    /// `describe_security()` of the settings, for the fatal message.
    pub security: String,
    /// At-least-once: the batch whose dead letters are sent but whose offsets are not stored
    /// yet (the stream gathers the next batch meanwhile). A revoke finishes it before the
    /// commit, so its records are never handed to another instance uncommitted.
    pub in_flight: Mutex<Option<InFlight>>,
    /// How the revoke callback finished the batch in flight: `Some(true)` acknowledged and its
    /// offsets stored, `Some(false)` not (its records are read again).
    pub finished_on_revoke: Mutex<Option<bool>>,
    /// Partitions revoked since the stream last took them, so it drops their per-partition
    /// state (uniqueness) even when they were assigned again meanwhile.
    pub revoked: Mutex<Vec<(String, i32)>>,
}

/// A batch in flight: its offsets, and a wait for its side-topic records' acknowledgements.
pub struct InFlight {
    /// The next offset of every partition in the batch.
    pub offsets: TopicPartitionList,
    /// Waits for the acknowledgements; whether every record was delivered.
    pub acked: Box<dyn Fn() -> bool + Send>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("partitions", &self.offsets.count()).finish_non_exhaustive()
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let mut lag: HashMap<&str, i64> = HashMap::new();
        for (name, topic) in &stats.topics {
            for p in topic.partitions.values() {
                if p.partition >= 0 && p.consumer_lag >= 0 {
                    *lag.entry(name.as_str()).or_default() += p.consumer_lag;
                }
            }
        }
        for (topic, n) in lag {
            gauge!(CONSUMER_LAG, "topic" => topic.to_owned()).set(n as f64);
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            _ => debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        counter!(CONSUMER_ERRORS_TOTAL, "kind" => error_kind(&error)).increment(1);
        if self.fatal.record(&error, reason, &self.security) {
            error!(error = %error, reason, "kafka client error that retrying cannot fix; stopping");
        } else {
            warn!(error = %error, reason, "kafka client error");
        }
    }
}

/// Callbacks of the start-up check's client: only errors matter.
#[derive(Debug)]
struct CheckContext {
    fatal: FatalError,
    security: String,
    last: Mutex<Option<String>>,
}

impl ClientContext for CheckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        debug!(target: "librdkafka", facility = fac, ?level, "{log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.fatal.record(&error, reason, &self.security)
            && let Ok(mut last) = self.last.lock()
        {
            *last = Some(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::producer::ProducerContext for CheckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// Connects once before anything else, so that wrong credentials or a wrong CA end the process
/// at once with a message naming the problem, instead of a client retrying in the background.
/// Waits up to `timeout` for the brokers to answer a metadata request.
pub fn check_connection(settings: &Settings, timeout: std::time::Duration) -> Result<(), Error> {
    let security = settings.kafka.describe_security();
    let context = CheckContext { fatal: FatalError::default(), security: security.clone(), last: Mutex::new(None) };
    let config = rdkafka::ClientConfig::from_iter(settings.kafka_properties(KafkaClient::Check));
    let client: rdkafka::producer::BaseProducer<CheckContext> = config
        .create_with_context(context)
        .map_err(|e| Error::refused(System::Kafka, format_args!("cannot create a Kafka client ({security}): {e}")))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let answered = client.client().fetch_metadata(Some(&settings.topics.dlq), std::time::Duration::from_millis(250));
        client.poll(std::time::Duration::ZERO);
        if let Some(fatal) = client.context().fatal.get() {
            return Err(Error::refused(System::Kafka, fatal));
        }
        if answered.is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let last = client.context().last.lock().ok().and_then(|l| l.clone()).unwrap_or_else(|| "no answer".into());
            return Err(Error::transient(
                System::Kafka,
                format_args!(
                    "cannot reach Kafka at {} ({security}) within {}s: {last}",
                    settings.kafka.bootstrap_servers,
                    timeout.as_secs()
                ),
            ));
        }
    }
}

fn error_kind(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) => "all_brokers_down",
        Some(rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure) => "transport",
        Some(rdkafka::types::RDKafkaErrorCode::Authentication) => "authentication",
        Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => "unknown_topic",
        _ => "other",
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _ = self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Rebalance::Revoke(tpl) = rebalance {
            counter!(REBALANCES_TOTAL, "kind" => "revoke").increment(1);
            info!(partitions = tpl.count(), "partitions revoked");
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())));
            }
            // The batch in flight still owns its partitions here: finish it first.
            let in_flight = self.in_flight.lock().ok().and_then(|mut f| f.take());
            if let Some(f) = in_flight {
                let stored = (f.acked)() && consumer.store_offsets(&f.offsets).is_ok();
                if !stored {
                    warn!("the batch in flight was not acknowledged before the revoke; its records are read again");
                }
                if let Ok(mut outcome) = self.finished_on_revoke.lock() {
                    *outcome = Some(stored);
                }
            }
            // Everything processed so far has had its offsets stored; hand it over committed.
            if self.commit_on_revoke
                && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::NoOffset))
            {
                warn!(error = %e, "commit on revoke failed; the new owner replays from the last commit");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _ = self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Rebalance::Assign(tpl) = rebalance {
            counter!(REBALANCES_TOTAL, "kind" => "assign").increment(1);
            info!(partitions = tpl.count(), "partitions assigned");
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        gauge!(ASSIGNED_PARTITIONS).set(assigned as f64);
        self.health.ready.store(assigned > 0, Ordering::Relaxed);
    }
}

/// The consumer type the stream uses.
pub type Source = BaseConsumer<SourceContext>;

/// Creates the consumer and subscribes to `topics`.
pub fn consumer(settings: &Settings, topics: &[String], health: Arc<Health>) -> Result<Source, Error> {
    let exactly_once = settings.delivery.exactly_once;
    let config = rdkafka::ClientConfig::from_iter(settings.kafka_properties(KafkaClient::Consumer));
    let context = SourceContext {
        epoch: AtomicU64::new(0),
        health,
        commit_on_revoke: !exactly_once,
        fatal: FatalError::default(),
        security: settings.kafka.describe_security(),
        in_flight: Mutex::new(None),
        finished_on_revoke: Mutex::new(None),
        revoked: Mutex::new(Vec::new()),
    };
    let consumer: Source = config
        .create_with_context(context)
        .map_err(|e| Error::refused(System::Kafka, format_args!("cannot create the Kafka consumer: {e}")))?;
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs).map_err(|e| Error::refused(System::Kafka, format_args!("cannot subscribe to {}: {e}", topics.join(", "))))?;
    Ok(consumer)
}
