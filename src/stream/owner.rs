//! The owner of group-wide windows (`quality.scope = "group"`): a second consumer group
//! (`<kafka.group_id>.quality`) over the partials topic. Kafka's partition assignment decides
//! which instance owns a binding: the one assigned its partition of the partials topic (every
//! instance sends a binding's partials to the same partition, [`partition_of`]). No election of
//! our own.
//!
//! The owner merges partials ([`Aggregator`]), closes windows by watermark or lateness, judges
//! them against the alert rules and writes what the stream wrote per instance before: window
//! documents (ids without an instance), alerts (topic and collection), OpenLineage RUNNING
//! events. Then it keeps each binding's state in the compacted state topic (the last window
//! closed, the offsets counted, the alert rules' state) and commits the partials it no longer
//! needs. A new owner (after a crash, a rebalance or a scale) reads the state, reads again the
//! partials of the windows still open, and carries on: window and alert ids are deterministic, so
//! what the old owner wrote twice is the same document (MongoDB keeps one; the alerts topic may
//! carry the same id twice).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Env;
use super::outputs::Outputs;
use super::reload::Current;
use super::scheduled::{Scheduler, Source, sources_of};
use crate::config::{KafkaClient, Settings};
use crate::contract::Contract;
use crate::error::{Error, System};
use crate::product::Catalog;
use crate::quality::aggregate::{Added, Aggregator, Committed, Progress, Timing};
use crate::quality::alert::{Metric, Track};
use crate::quality::partial::{Partial, binding_key, partition_of};
use crate::sink::Sinks;
use crate::sink::mongo::Documents;

/// What the state topic keeps per binding.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    progress: Progress,
    alerts: Vec<(Metric, Track)>,
}

/// Why [`run_once`] returned.
enum Ended {
    /// `env.stop` was set.
    Stopped,
    /// A new catalog revision binds other products or contracts: start over with it.
    Rebound,
}

/// Runs the owner until `env.stop` is set, with the catalog in force (`current`: the stream
/// switches it; the owner follows). Any failure (a window's outputs not written, a server
/// unavailable) starts it over from the committed partials after a pause, never skipping a
/// window; the stream beside it goes on meanwhile.
pub fn run(settings: &Settings, current: &Current, env: Env) -> Result<(), Error> {
    let mut pause = Duration::from_millis(500);
    while !env.stop.load(Ordering::Relaxed) {
        match run_once(settings, current, &env) {
            Ok(Ended::Stopped) => return Ok(()),
            Ok(Ended::Rebound) => info!("the catalog's bindings changed; the group-wide quality owner starts over with them"),
            Err(e) => {
                warn!(error = %e.message, retry_in_ms = pause.as_millis() as u64, "group-wide quality owner failed; starting over from the committed partials");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(())
}

pub(super) fn consumer(settings: &Settings, group: &str) -> Result<BaseConsumer, Error> {
    let mut config = rdkafka::ClientConfig::from_iter(settings.kafka_properties(KafkaClient::Consumer));
    let _ = config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "roundrobin")
        .set("statistics.interval.ms", "0");
    config.create().map_err(|e| Error::refused(System::Kafka, format_args!("cannot create the quality owner's consumer: {e}")))
}

pub(super) fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<usize, Error> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| Error::transient(System::Kafka, format_args!("cannot read the metadata of {topic}: {e}")))?;
    Ok(metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len()))
}

/// Reads a compacted topic to its end: the last value of every key (a tombstone removes it).
pub(super) fn read_compacted(settings: &Settings, topic: &str) -> Result<HashMap<String, Vec<u8>>, Error> {
    let reader = consumer(settings, &format!("{}.compacted-reader", settings.kafka.group_id))?;
    let n = partitions(&reader, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..i32::try_from(n).unwrap_or(0) {
        let (low, high) = reader
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| Error::transient(System::Kafka, format_args!("cannot read the offsets of {topic}: {e}")))?;
        if high > low {
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(low));
            let _ = ends.insert(p, high);
        }
    }
    let mut values = HashMap::new();
    if ends.is_empty() {
        return Ok(values);
    }
    reader.assign(&tpl).map_err(|e| Error::transient(System::Kafka, format_args!("cannot read {topic}: {e}")))?;
    // Given up when nothing comes for this long (a large topic takes as long as it takes).
    let stall = Duration::from_secs(30);
    let mut progress_at = Instant::now();
    let mut done: HashSet<i32> = HashSet::new();
    let mut read: u64 = 0;
    while done.len() < ends.len() {
        if progress_at.elapsed() > stall {
            return Err(Error::transient(
                System::Kafka,
                format_args!("{topic} not read to its end: nothing read for {} s ({read} records read)", stall.as_secs()),
            ));
        }
        let polled = reader.poll(Duration::from_millis(100));
        let idle = polled.is_none();
        if let Some(m) = polled {
            read += 1;
            progress_at = Instant::now();
            let m = m.map_err(|e| Error::transient(System::Kafka, format_args!("reading {topic}: {e}")))?;
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                match m.payload() {
                    Some(p) => {
                        let _ = values.insert(key.to_owned(), p.to_vec());
                    }
                    None => {
                        let _ = values.remove(key);
                    }
                }
            }
            if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                let _ = done.insert(m.partition());
            }
        }
        // Transaction markers take offsets but are never delivered: the consumer's position
        // tells when a partition is read past its high mark (asked when the consumer is idle,
        // and now and then: asking for every record costs more than reading it).
        if (idle || read.is_multiple_of(4096))
            && let Ok(positions) = reader.position()
        {
            for e in positions.elements() {
                if let Offset::Offset(o) = e.offset()
                    && ends.get(&e.partition()).is_some_and(|end| o >= *end)
                {
                    let _ = done.insert(e.partition());
                }
            }
        }
    }
    Ok(values)
}

/// The last state of every binding.
fn read_states(settings: &Settings) -> Result<HashMap<String, State>, Error> {
    let mut states = HashMap::new();
    for (key, value) in read_compacted(settings, &settings.topics.quality_state)? {
        match serde_json::from_slice::<State>(&value) {
            Ok(s) => {
                let _ = states.insert(key, s);
            }
            Err(e) => warn!(error = %e, key, "unreadable quality state; that binding starts afresh"),
        }
    }
    Ok(states)
}

fn bindings_of(catalog: &Catalog) -> BTreeMap<String, (Arc<Contract>, String)> {
    catalog
        .bindings()
        .map(|b| (binding_key(&b.contract.product, &b.contract.name, &b.topic), (b.contract.clone(), b.topic.clone())))
        .collect()
}

fn run_once(settings: &Settings, current: &Current, env: &Env) -> Result<Ended, Error> {
    let (mut generation, catalog) = current.get();
    let catalog: &Catalog = &catalog;
    let topic = settings.topics.partials.clone();
    let consumer = consumer(settings, &format!("{}.quality", settings.kafka.group_id))?;
    consumer.subscribe(&[&topic]).map_err(|e| Error::transient(System::Kafka, format_args!("cannot subscribe to {topic}: {e}")))?;
    let partials_partitions = match partitions(&consumer, &topic)? {
        0 => return Err(Error::transient(System::Kafka, format_args!("the partials topic {topic} does not exist yet"))),
        n => i32::try_from(n).unwrap_or(i32::MAX),
    };
    let mut bindings = bindings_of(catalog);
    // Bound tables scanned on a schedule: bindings of their own, owned like a topic's.
    let mut sources: BTreeMap<String, Source> = sources_of(catalog, settings);
    let mut scheduler = Scheduler::new(settings);
    let exactly_once = settings.delivery.exactly_once;
    // Exactly-once, a transactional producer of its own (a new id per start, like the stream's
    // default; the partials' consumer group fences an owner that lost its partitions).
    let transactional_id = exactly_once.then(|| format!("{}.quality-{}", settings.kafka.group_id, uuid::Uuid::new_v4().simple()));
    let mut sinks = Sinks::connect_reporter(settings, env.runtime.clone(), &env.stop, transactional_id)?;
    let track_lineage = sinks.has_store();
    // Group scope (the owner runs only then), so its reports carry no instance.
    let mut out = Outputs::new(settings, catalog, "group", env.run.clone(), env.clock.now(), track_lineage);
    out.at_rest(sources.values().map(|s| (s.label.clone(), s.contract.clone())));
    let timing = Timing {
        window: Duration::from_millis(settings.quality.window_ms),
        lateness: Duration::from_millis(settings.quality.lateness_ms),
        silence_after: Duration::from_millis(settings.quality.silence_after_ms),
    };
    let mut agg = Aggregator::new(timing, track_lineage);
    // At-least-once, windows wait for the stream's group to commit what they counted (see
    // `quality::aggregate`): a reader of the group's committed offsets that never joins it.
    let offsets = if exactly_once { None } else { Some(consumer_of_offsets(settings)?) };
    let mut committed = if exactly_once { Committed::everything() } else { Committed::default() };
    let mut committed_at: Option<Instant> = None;
    // Partials partitions gained and not yet read up to where they stood at the takeover
    // (partition → (high watermark then, give up waiting at)).
    let mut catching_up: HashMap<i32, (i64, Instant)> = HashMap::new();
    let mut owned: HashSet<i32> = HashSet::new();
    let mut keys_of: HashMap<i32, Vec<String>> = HashMap::new();
    for key in bindings.keys().chain(sources.keys()) {
        keys_of.entry(partition_of(key, partials_partitions)).or_default().push(key.clone());
    }
    // Next offset to read of each owned partials partition.
    let mut position: HashMap<i32, i64> = HashMap::new();
    let mut source_partitions: HashMap<String, usize> = HashMap::new();
    info!(topic = %topic, partitions = partials_partitions, "group-wide quality owner started");
    while !env.stop.load(Ordering::Relaxed) {
        if current.generation() != generation {
            let (g, next) = current.get();
            generation = g;
            let next_bindings = bindings_of(&next);
            let next_sources = sources_of(&next, settings);
            if !next_bindings.keys().eq(bindings.keys()) || !next_sources.keys().eq(sources.keys()) {
                return Ok(Ended::Rebound);
            }
            for (key, (contract, _)) in &next_bindings {
                agg.set_contract(key, contract.clone());
            }
            for (key, source) in &next_sources {
                agg.set_contract(key, source.contract.clone());
            }
            out.follow(&next);
            out.at_rest(next_sources.values().map(|s| (s.label.clone(), s.contract.clone())));
            bindings = next_bindings;
            sources = next_sources;
            info!(generation, "group-wide windows follow the new catalog revision");
        }
        // Read what is there (up to a bound) before closing anything: a window is never closed
        // by its lateness bound while its partials wait unread in the owner's own backlog.
        let mut drained = 0_usize;
        while drained < DRAIN_AT_MOST {
            let polled = consumer.poll(if drained == 0 { Duration::from_millis(100) } else { Duration::ZERO });
            // Ownership: the partials partitions assigned now.
            let assigned: HashSet<i32> = consumer
                .assignment()
                .map(|tpl| tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect())
                .unwrap_or_default();
            if assigned != owned {
                let now = env.clock.now();
                for p in owned.difference(&assigned) {
                    for key in keys_of.get(p).into_iter().flatten() {
                        agg.disown(key);
                    }
                    let _ = position.remove(p);
                    let _ = catching_up.remove(p);
                }
                let gained: Vec<i32> = assigned.difference(&owned).copied().collect();
                if !gained.is_empty() {
                    let mut states = read_states(settings)?;
                    // Where this group's reading of each gained partition starts.
                    let mut start = TopicPartitionList::new();
                    for p in &gained {
                        let _ = start.add_partition(&topic, *p);
                    }
                    let start: HashMap<i32, i64> = consumer
                        .committed_offsets(start, Duration::from_secs(10))
                        .map(|tpl| {
                            tpl.elements()
                                .iter()
                                .filter_map(|e| if let Offset::Offset(o) = e.offset() { Some((e.partition(), o)) } else { None })
                                .collect()
                        })
                        .unwrap_or_default();
                    for p in &gained {
                        for key in keys_of.get(p).into_iter().flatten() {
                            if let Some(at_rest) = sources.get(key) {
                                let state = states.remove(key).unwrap_or_default();
                                out.restore_alerts(&at_rest.label, state.alerts);
                                agg.own_source(key, at_rest.contract.clone(), &at_rest.label, state.progress, now);
                                agg.hold(key);
                                continue;
                            }
                            let Some((contract, source)) = bindings.get(key) else { continue };
                            let n = match source_partitions.get(source) {
                                Some(n) => *n,
                                None => {
                                    let n = partitions(&consumer, source)?;
                                    let _ = source_partitions.insert(source.clone(), n);
                                    n
                                }
                            };
                            let state = states.remove(key).unwrap_or_default();
                            out.restore_alerts(source, state.alerts);
                            agg.own(key, contract.clone(), source, n, state.progress, now);
                            agg.hold(key);
                        }
                        // Hold the windows until the partials already there are read: the backlog
                        // goes into its windows, not into `late` of windows closed empty meanwhile.
                        let (low, high) = consumer.fetch_watermarks(&topic, *p, Duration::from_secs(10)).unwrap_or((0, 0));
                        if start.get(p).copied().unwrap_or(low).max(low) < high {
                            let _ = catching_up.insert(*p, (high, Instant::now() + HOLD_AT_MOST));
                        } else {
                            for key in keys_of.get(p).into_iter().flatten() {
                                agg.release(key);
                            }
                        }
                    }
                    info!(gained = ?gained, owned = ?assigned, "owning group-wide windows");
                }
                owned = assigned;
            }
            let Some(m) = polled else { break };
            let m = m.map_err(|e| Error::transient(System::Kafka, format_args!("reading {topic}: {e}")))?;
            let _ = position.insert(m.partition(), m.offset() + 1);
            match m.payload().map(serde_json::from_slice::<Partial>) {
                Some(Ok(p)) => {
                    let added = agg.add(p, m.offset());
                    if matches!(added, Added::Replay | Added::Late | Added::Replaced) {
                        tracing::debug!(?added, partition = m.partition(), offset = m.offset(), "partial");
                    }
                    metrics::counter!(crate::telemetry::names::PARTIALS_TOTAL, "outcome" => outcome(added)).increment(1);
                }
                _ => {
                    warn!(partition = m.partition(), offset = m.offset(), "unreadable partial skipped");
                    metrics::counter!(crate::telemetry::names::PARTIALS_TOTAL, "outcome" => "unreadable").increment(1);
                }
            }
            drained += 1;
        }
        if !catching_up.is_empty() {
            let read: HashMap<i32, i64> = consumer
                .position()
                .map(|tpl| {
                    tpl.elements()
                        .iter()
                        .filter_map(|e| if let Offset::Offset(o) = e.offset() { Some((e.partition(), o)) } else { None })
                        .collect()
                })
                .unwrap_or_default();
            catching_up.retain(|p, (high, until)| {
                let at = read.get(p).copied().max(position.get(p).copied()).unwrap_or(0);
                let caught_up = at >= *high;
                if caught_up || Instant::now() > *until {
                    if !caught_up {
                        warn!(
                            partition = *p,
                            read = at,
                            takeover_end = *high,
                            "partials backlog not read within its bound; closing windows anyway"
                        );
                    }
                    for key in keys_of.get(p).into_iter().flatten() {
                        agg.release(key);
                    }
                    return false;
                }
                true
            });
        }
        if let Some(reader) = &offsets
            && agg.has_open()
            && committed_at.is_none_or(|t| t.elapsed() >= COMMITTED_REFRESH)
        {
            committed_at = Some(Instant::now());
            match committed_offsets(reader, &agg, &source_partitions) {
                Ok(c) => committed = c,
                Err(e) => warn!(error = %e.message, "cannot read the stream's committed offsets; windows wait"),
            }
        }
        if !sources.is_empty() {
            scheduler.tick(&mut agg, &sources, &env.runtime, env.clock.now());
        }
        let now = env.clock.now();
        let closed = agg.close_due(now, &committed);
        if closed.is_empty() {
            continue;
        }
        let mut states = Vec::with_capacity(closed.len());
        let mut windows = Vec::with_capacity(closed.len());
        for (key, w, progress) in closed {
            tracing::debug!(key, window_start = %w.window_start, volume = w.volume, late = ?w.late, "window closed");
            states.push((key, w.topic.clone(), progress));
            windows.push(w);
        }
        out.report(windows, now);
        // What no open window needs any more: committed with the outputs.
        let mut tpl = TopicPartitionList::new();
        for p in &owned {
            let Some(next) = position.get(p) else { continue };
            let needed = agg.needed_from(keys_of.get(p).into_iter().flatten()).unwrap_or(*next);
            let _ = tpl.add_partition_offset(&topic, *p, Offset::Offset(needed.min(*next)));
        }
        let group = if exactly_once && tpl.count() > 0 { consumer.group_metadata() } else { None };
        let written = (|| {
            sinks.begin()?;
            let reports = out.reports();
            sinks.send_reports(&reports)?;
            sinks.write_documents(Documents::default(), &reports)?;
            for (key, source, progress) in states {
                let state = State { progress, alerts: out.alert_state(&source) };
                sinks.send_state(&key, &serde_json::to_value(&state).unwrap_or_default())?;
            }
            // Exactly-once: the alerts, run events, states and the partials read commit in one
            // transaction (a killed owner's outputs are aborted, never read twice).
            sinks.finish(group.as_ref().map(|g| (&tpl, g)))
        })();
        if let Err(e) = written {
            sinks.failed(&e);
            return Err(e);
        }
        out.clear_pending();
        if group.is_none()
            && tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            warn!(error = %e, "cannot commit the partials read; a new owner reads them again");
        }
    }
    Ok(Ended::Stopped)
}

/// Partials read at most per round before due windows are closed.
const DRAIN_AT_MOST: usize = 10_000;
/// How often, at most, the stream group's committed offsets are read while windows are open.
const COMMITTED_REFRESH: Duration = Duration::from_millis(500);
/// How long a new owner waits at most to read the partials backlog before closing windows.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// A consumer in the stream's group that never subscribes: it only reads the group's committed
/// offsets (an OffsetFetch; it takes no partitions from the stream).
fn consumer_of_offsets(settings: &Settings) -> Result<BaseConsumer, Error> {
    consumer(settings, &settings.kafka.group_id)
}

/// The stream group's committed offsets of every partition of the source topics `agg` owns.
fn committed_offsets(reader: &BaseConsumer, agg: &Aggregator, partitions: &HashMap<String, usize>) -> Result<Committed, Error> {
    let mut tpl = TopicPartitionList::new();
    for topic in agg.topics() {
        for p in 0..partitions.get(topic).copied().unwrap_or(0) {
            let _ = tpl.add_partition(topic, i32::try_from(p).unwrap_or(i32::MAX));
        }
    }
    let mut next = HashMap::new();
    if tpl.count() == 0 {
        return Ok(Committed::offsets(next));
    }
    let tpl = reader
        .committed_offsets(tpl, Duration::from_secs(5))
        .map_err(|e| Error::transient(System::Kafka, format_args!("cannot read the stream group's committed offsets: {e}")))?;
    for e in tpl.elements() {
        if let Offset::Offset(o) = e.offset() {
            let _ = next.insert((e.topic().to_owned(), e.partition()), o);
        }
    }
    Ok(Committed::offsets(next))
}

fn outcome(a: Added) -> &'static str {
    match a {
        Added::Counted => "counted",
        Added::Replaced => "replaced",
        Added::Replay => "replay",
        Added::Late => "late",
        Added::Unknown => "unknown",
    }
}
