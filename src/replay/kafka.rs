//! The replay's I/O: the receipts and the dead-letter topic read up to their end offsets at
//! start, by manual assignment; replays and receipts published by the side producer, in Kafka
//! transactions when `delivery.exactly_once` is on.
//!
//! Manual assignment, not a consumer group: a run reads every partition from its first offset to
//! the end offset it had when the run started, so it joins no group, waits for no rebalance and
//! commits no offset. Which dead letters were replayed is kept in the receipts topic instead,
//! written with the replays (in the same transaction when exactly-once), so a run with
//! `--product` or `--since` never moves a group past dead letters it left out, and a dead letter
//! that still fails is re-checked by the next run (after another fix it passes).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;

use super::{DeadLetter, Filter, HeaderPair, Outcome, Summary, judge};
use crate::config::{KafkaClient, Settings};
use crate::error::{Error, System};
use crate::product::Catalog;
use crate::sink::kafka::SideProducer;
use crate::source::quietly;

/// Replays per transaction (exactly-once) or per wait for acknowledgements.
const CHUNK: u64 = 1000;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Replays the dead letters of `settings.topics.dlq` that `filter` selects and the contracts of
/// `catalog` now accept; with `dry_run`, only judges them.
pub fn replay(settings: &Settings, catalog: &Catalog, filter: &Filter, dry_run: bool) -> Result<Summary, Error> {
    let dlq = settings.topics.dlq.clone();
    let receipts_topic = settings.topics.dlq_replays();
    let exactly_once = settings.delivery.exactly_once;
    let mut summary = Summary { dlq: dlq.clone(), dry_run, exactly_once: exactly_once && !dry_run, ..Summary::default() };

    let mut receipts: HashSet<Vec<u8>> = HashSet::new();
    let found = read_to_end(settings, &receipts_topic, |m| {
        if let Some(k) = m.key() {
            let _ = receipts.insert(k.to_vec());
        }
        Ok(())
    })?;
    if !found && !dry_run {
        create_receipts_topic(settings, &receipts_topic)?;
    }

    let producer = if dry_run {
        None
    } else {
        let id = exactly_once.then(|| format!("{}.dlq-replay", settings.kafka.group_id));
        // One transactional.id for every replay of this group: a second replay started while
        // one runs fences the first, whose open transaction is aborted.
        Some(SideProducer::new(settings, id.as_deref())?)
    };
    let kafka_err = |e: crate::sink::kafka::SinkError| e.into_error(exactly_once);
    if let Some(p) = &producer {
        p.begin().map_err(kafka_err)?;
    }
    let now = OffsetDateTime::now_utc();
    let mut pending = 0u64;
    let result = read_to_end(settings, &dlq, |m| {
        let timestamp_ms = m.timestamp().to_millis();
        let receipt = format!("{dlq}/{}/{}/{}", m.partition(), m.offset(), timestamp_ms.unwrap_or(-1));
        let letter = DeadLetter {
            headers: header_pairs(m),
            payload: m.payload(),
            timestamp: timestamp_ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()),
            receipted: receipts.contains(receipt.as_bytes()),
        };
        let outcome = judge(catalog, filter, letter, now);
        summary.count(&outcome);
        if let (Some(p), Outcome::Replay { topic, headers, product }) = (&producer, &outcome) {
            p.send(topic, m.key(), m.payload(), owned(headers), |_| None).map_err(kafka_err)?;
            let body = serde_json::json!({
                "source_topic": topic,
                "product": product,
                "replayed_at": now.unix_timestamp(),
            })
            .to_string();
            p.send(&receipts_topic, Some(receipt.as_bytes()), Some(body.as_bytes()), OwnedHeaders::new(), |_| None).map_err(kafka_err)?;
            pending += 1;
            if pending >= CHUNK {
                p.finish(None).map_err(kafka_err)?;
                p.begin().map_err(kafka_err)?;
                pending = 0;
            }
        }
        Ok(())
    });
    let finished = match (&result, &producer) {
        (Ok(true), Some(p)) => p.finish(None).map_err(kafka_err),
        (Ok(true), None) => Ok(()),
        (Ok(false), _) => Err(Error::refused(System::Kafka, format_args!("the dead-letter topic {dlq} does not exist"))),
        (Err(e), _) => Err(e.clone()),
    };
    if let Err(e) = finished {
        if let Some(p) = &producer {
            let _ = p.abort();
        }
        return Err(e);
    }
    Ok(summary)
}

/// The headers of `m`, or `None` when one cannot be read: rdkafka panics on a header name that
/// is not UTF-8 (a hostile producer can send one, and the stream keeps it in the dead letter).
/// The panic is caught, and not printed: it is the dead letter's reason (`malformed_headers`).
fn header_pairs(m: &BorrowedMessage<'_>) -> Option<Vec<HeaderPair>> {
    let Some(headers) = m.headers() else { return Some(Vec::new()) };
    quietly(|| headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect::<Vec<_>>())
}

fn owned(pairs: &[HeaderPair]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(pairs.len());
    for (key, value) in pairs {
        out = out.insert(Header { key, value: value.as_deref() });
    }
    out
}

/// Calls `each` with every record of `topic` from its first offset up to the end offset each
/// partition had when this was called (read_committed: aborted records are never seen).
/// `Ok(false)` when the topic does not exist.
fn read_to_end(settings: &Settings, topic: &str, mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), Error>) -> Result<bool, Error> {
    let kafka = |what: &str, e: KafkaError| Error::transient(System::Kafka, format_args!("{what} {topic}: {e}"));
    let consumer: BaseConsumer = rdkafka::ClientConfig::from_iter(settings.kafka_properties(KafkaClient::DlqReader))
        .create()
        .map_err(|e| Error::refused(System::Kafka, format_args!("cannot create the Kafka consumer: {e}")))?;
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).map_err(|e| kafka("cannot read the metadata of", e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()) else {
        return Ok(false);
    };
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) =
            consumer.fetch_watermarks(topic, p.id(), METADATA_TIMEOUT).map_err(|e| kafka("cannot read the end offsets of", e))?;
        if high > low {
            let _ = ends.insert(p.id(), high);
            assignment.add_partition_offset(topic, p.id(), Offset::Offset(low)).map_err(|e| kafka("cannot assign", e))?;
        }
    }
    if ends.is_empty() {
        return Ok(true);
    }
    consumer.assign(&assignment).map_err(|e| kafka("cannot assign", e))?;
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => {
                let Some(&end) = ends.get(&m.partition()) else { continue };
                if m.offset() < end {
                    each(&m)?;
                }
                if m.offset() + 1 >= end {
                    let _ = ends.remove(&m.partition());
                }
            }
            // The end of what is readable now. Transaction markers take offsets but are never
            // delivered, so the partition is done when its position passed the end at start.
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let position = consumer.position().map_err(|e| kafka("cannot read the position in", e))?;
                let at = position.find_partition(topic, p).and_then(|e| e.offset().to_raw());
                if let (Some(at), Some(&end)) = (at, ends.get(&p))
                    && at >= end
                {
                    let _ = ends.remove(&p);
                }
            }
            Some(Err(e)) => return Err(kafka("cannot read", e)),
        }
    }
    Ok(true)
}

/// Creates the receipts topic: compacted (a receipt's key is its dead letter's position, so
/// compaction keeps one per dead letter), one partition (receipts are few and small).
fn create_receipts_topic(settings: &Settings, topic: &str) -> Result<(), Error> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::from_iter(settings.kafka_properties(KafkaClient::Admin))
        .create()
        .map_err(|e| Error::refused(System::Kafka, format_args!("cannot create the Kafka admin client: {e}")))?;
    let brokers = admin
        .inner()
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| Error::transient(System::Kafka, format_args!("cannot reach Kafka: {e}")))?
        .brokers()
        .len();
    let replication = if brokers >= 3 { 3 } else { 1 };
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(replication)).set("cleanup.policy", "compact");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::refused(System::Kafka, format_args!("cannot start a runtime: {e}")))?;
    let results = runtime
        .block_on(admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT))))
        .map_err(|e| Error::transient(System::Kafka, format_args!("cannot create {topic}: {e}")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(Error::transient(System::Kafka, format_args!("cannot create {name}: {code}"))),
        }
    }
    tracing::info!(topic, "created the dlq replay receipts topic");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quietly;

    #[test]
    fn a_panic_while_reading_headers_is_a_value() {
        assert_eq!(quietly(|| 7), Some(7));
        let failed: Option<u8> = quietly(|| panic!("header name is not UTF-8"));
        assert_eq!(failed, None);
    }
}
