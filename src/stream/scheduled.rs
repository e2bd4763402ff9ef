//! Scheduled scans (`scan.interval_ms` > 0, group-wide quality): the data a contract's bound
//! MySQL table or MongoDB collection keeps at rest, held to the contract inside `run`, with the
//! windows, SLAs and alerts of the stream.
//!
//! - **One scanner per source.** A bound table or collection is a binding of its own (key
//!   `product/contract/mysql:table` or `…/mongodb:collection`) hashed to a partition of the
//!   partials topic like a topic's; the instance Kafka assigns that partition to (the owner of
//!   its windows) scans it. N instances never scan a source N times, and a crashed owner's
//!   sources move with its partitions.
//! - **Incremental.** A scan reads the rows whose event time (the first non-null event-time
//!   field) lies after the mark where the last scan stopped (event time and key of its last
//!   row), up to `now - SETTLE`, in (event time, key) order: a row counts once per change that
//!   moves its event time (an `updated_at` set on each write). At most `scan.max_rows` per scan;
//!   the rest waits for the next one. MySQL filters and orders the rows (an indexed event-time
//!   column makes it cheap); a collection is read whole through one cursor and filtered here, as
//!   FerretDB 1.x would read it whole for any filter but exact `_id` equality.
//! - **Durable.** The mark goes into the window its rows were counted in, and into the state
//!   topic with that window once it closes (`Progress::scan_mark`). A new owner starts from the
//!   mark of the last closed window: the rows whose counts died with the old owner's open windows
//!   are read again, and counted once.
//! - **Freshness** of data at rest is the age of the source's newest row at each scan (one
//!   sample per scan: a table that stops being written breaches the SLA), and silence is judged
//!   on that newest row as for a topic.
//! - **Failures** (database unreachable, table, collection or column gone) are a warning and
//!   `meshguard_scan_errors_total{source}`; the scan is tried again at the next interval.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::OnceCell;
use tracing::warn;

use crate::check::input::Item;
use crate::check::{At, Checker};
use crate::config::Settings;
use crate::contract::Contract;
use crate::error::{Error, System};
use crate::product::Catalog;
use crate::product::model::{SourceAt, SourceBinding};
use crate::quality::aggregate::{Aggregator, ScanMark};
use crate::quality::partial::{Counts, binding_key, sketch};
use crate::scan::Row;
use crate::scan::mongo;
use crate::scan::mysql::{self, TableReader};
use crate::telemetry::names::{SCAN_ERRORS_TOTAL, SCAN_ROWS_TOTAL, SOURCE_FRESHNESS_SECONDS};

/// Rows whose event time is younger than this wait for a later scan: a writer's transaction
/// may still commit rows stamped before it.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A bound table or collection scheduled scans read.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its contract.
    pub contract: Arc<Contract>,
    /// The binding (where, key, event-time fields, fields).
    pub binding: SourceBinding,
    /// `mysql:<table>` or `mongodb:<collection>`: the window's `topic` and `source`, the alert's
    /// `topic`, the metric label.
    pub label: String,
}

/// The bound tables and collections of `catalog` by binding key, when scheduled scans are on.
pub fn sources_of(catalog: &Catalog, settings: &Settings) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    if settings.scan.interval_ms == 0 {
        return out;
    }
    for c in catalog.products.iter().flat_map(|p| &p.contracts) {
        let Some(binding) = &c.source else { continue };
        let label = match &binding.at {
            SourceAt::Mysql { table, .. } => format!("mysql:{table}"),
            SourceAt::Mongodb { collection, .. } => format!("mongodb:{collection}"),
        };
        let key = binding_key(&c.product, &c.name, &label);
        let _ = out.insert(key, Source { contract: c.clone(), binding: binding.clone(), label });
    }
    out
}

/// What one scan of a source found.
#[derive(Debug, Default)]
struct Scanned {
    counts: Counts,
    newest_ms: Option<i64>,
    age_seconds: Option<f64>,
    mark: Option<ScanMark>,
    rows: u64,
}

/// Holds the rows of one scan to the contract, in the order they are read.
struct Judge<'c> {
    checker: Checker<'c>,
    sla: f64,
    input: String,
    now: OffsetDateTime,
    out: Scanned,
}

impl<'c> Judge<'c> {
    fn new(source: &'c Source, mark: Option<ScanMark>, now: OffsetDateTime) -> Result<Self, Error> {
        Ok(Self {
            checker: crate::scan::checker(&source.contract, &source.binding.at)?,
            sla: source.contract.quality.freshness.0.as_secs_f64(),
            input: source.binding.at.describe(),
            now,
            out: Scanned { mark, ..Scanned::default() },
        })
    }

    fn row(&mut self, row: Row) {
        self.out.rows += 1;
        let at = At { input: self.input.clone(), line: self.out.rows, key: Some(row.key) };
        let eval = self.checker.add(&at, Item::Line(row.json), self.now);
        self.out.counts.observe(&eval, Some(self.sla), false);
    }

    /// The scan's counts, with freshness as data at rest means it: the age of the newest row,
    /// one sample per scan (the rows' own ages say how old the changed rows are, not how stale
    /// the source is).
    fn finish(mut self, newest: Option<OffsetDateTime>) -> Scanned {
        let out = &mut self.out;
        out.counts.stale_samples.clear();
        out.counts.freshness = None;
        if let Some(t) = newest {
            let age = (self.now - t).as_seconds_f64().max(0.0);
            let mut s = sketch();
            s.add(age);
            out.counts.freshness = Some(s);
            out.age_seconds = Some(age);
            out.newest_ms = Some(crate::measure::unix_ms(t));
        }
        self.out
    }
}

/// A changed document waiting to be judged, ordered by (event time, key).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Changed {
    at: OffsetDateTime,
    key: String,
    json: Vec<u8>,
}

/// Picks, from rows offered in any order, the first `cap` in (event time, key) order that lie
/// after the mark and not after `until`; the newest event time of all is kept for freshness.
#[derive(Debug)]
struct Picker {
    after: Option<(OffsetDateTime, String)>,
    until: OffsetDateTime,
    cap: usize,
    newest: Option<OffsetDateTime>,
    /// A max-heap: its top is the first row to give up when one more comes in under the cap.
    changed: BinaryHeap<Changed>,
}

impl Picker {
    fn new(after: Option<(OffsetDateTime, String)>, until: OffsetDateTime, cap: usize) -> Self {
        Self { after, until, cap: cap.max(1), newest: None, changed: BinaryHeap::new() }
    }

    fn offer(&mut self, row: Row) {
        let Some(at) = row.event_time else { return };
        self.newest = self.newest.max(Some(at));
        if at > self.until || self.after.as_ref().is_some_and(|(t, k)| (at, &row.key) <= (*t, k)) {
            return;
        }
        if self.changed.len() == self.cap && self.changed.peek().is_some_and(|top| (at, &row.key) >= (top.at, &top.key)) {
            return;
        }
        self.changed.push(Changed { at, key: row.key, json: row.json });
        if self.changed.len() > self.cap {
            let _ = self.changed.pop();
        }
    }

    /// The picked rows in (event time, key) order.
    fn picked(self) -> Vec<Changed> {
        self.changed.into_sorted_vec()
    }
}

/// How scans read: the settings and one connection (pool) per server, shared by every scan.
#[derive(Debug, Clone)]
struct Readers {
    page_size: u32,
    max_rows: u64,
    mysql_url: String,
    mongodb_uri: String,
    /// One MySQL connection for every scan of every table (made by the first that succeeds).
    mysql: Arc<OnceCell<mysql::Server>>,
    /// One MongoDB client for every scan of every collection (made by the first that succeeds).
    mongodb: Arc<OnceCell<mongo::Server>>,
}

impl Readers {
    /// Reads the rows of `source` changed after `mark` and holds each to the contract.
    async fn scan(self, source: Source, mark: Option<ScanMark>, now: OffsetDateTime) -> Result<Scanned, Error> {
        match &source.binding.at {
            SourceAt::Mysql { table, .. } => self.scan_table(&source, table, mark, now).await,
            SourceAt::Mongodb { database, collection } => self.scan_collection(&source, database, collection, mark, now).await,
        }
    }

    /// Reads the rows of `table` changed after `mark` (the database filters and orders them)
    /// and holds each to the contract.
    async fn scan_table(&self, source: &Source, table: &str, mark: Option<ScanMark>, now: OffsetDateTime) -> Result<Scanned, Error> {
        let server = self.mysql.get_or_try_init(|| mysql::Server::connect(&self.mysql_url)).await?;
        let mut reader = TableReader::on(server, &source.contract, &source.binding, table, self.page_size).await?;
        reader.since(mark.clone().map(|m| (m.at, m.key)), sql_datetime(now - SETTLE))?;
        let newest = reader.newest().await?.as_deref().and_then(crate::scan::parse_sql_datetime);
        let mut judge = Judge::new(source, mark, now)?;
        while judge.out.rows < self.max_rows {
            let Some(page) = reader.next_page().await? else { break };
            for row in page {
                judge.row(row);
            }
        }
        if let Some((at, key)) = reader.mark() {
            judge.out.mark = Some(ScanMark { at, key });
        }
        Ok(judge.finish(newest))
    }

    /// Reads the documents of `database.collection` changed after `mark` and holds each to the
    /// contract. FerretDB 1.x pushes no filter but exact `_id` equality down to its backend, so
    /// the collection is read whole through one cursor and the changed documents are picked
    /// here: those whose event time lies after the mark and up to `now - SETTLE`, the first
    /// `scan.max_rows` of them in (event time, key) order (a bounded heap; the rest wait for the
    /// next scan).
    async fn scan_collection(
        &self,
        source: &Source,
        database: &str,
        collection: &str,
        mark: Option<ScanMark>,
        now: OffsetDateTime,
    ) -> Result<Scanned, Error> {
        let after = match &mark {
            None => None,
            Some(m) => match OffsetDateTime::parse(&m.at, &Rfc3339) {
                Ok(t) => Some((t, m.key.clone())),
                Err(e) => {
                    return Err(Error::refused(
                        System::MongoDb,
                        format_args!("the scan mark {:?} of {} is not an RFC 3339 instant: {e}", m.at, source.label),
                    ));
                }
            },
        };
        let server = self.mongodb.get_or_try_init(|| mongo::Server::connect(&self.mongodb_uri)).await?;
        let mut reader = mongo::CollectionReader::on(server, &source.binding, database, collection, self.page_size).await?;
        let mut judge = Judge::new(source, mark, now)?;
        let cap = usize::try_from(self.max_rows).unwrap_or(usize::MAX);
        let mut picker = Picker::new(after, now - SETTLE, cap);
        while let Some(page) = reader.next_page().await? {
            for row in page {
                picker.offer(row);
            }
        }
        let newest = picker.newest;
        let mut last = None;
        for c in picker.picked() {
            last = Some((c.at, c.key.clone()));
            judge.row(Row { key: c.key, json: c.json, event_time: Some(c.at) });
        }
        if let Some((at, key)) = last
            && let Some(at) = crate::scan::rfc3339(at)
        {
            judge.out.mark = Some(ScanMark { at, key });
        }
        Ok(judge.finish(newest))
    }
}

/// A scan running on the runtime, and the mark it started from.
#[derive(Debug)]
struct InFlight {
    mark: Option<ScanMark>,
    task: tokio::task::JoinHandle<Result<Scanned, Error>>,
}

/// When each owned source is due, and the scans running. Scans run as tasks on the runtime, so
/// a long one (a large collection is read whole) never holds up the owner's windows; its result
/// is counted by the first tick after it ends, if the owner still owns the source and its mark
/// has not moved meanwhile (else it is dropped and the source scanned again).
#[derive(Debug)]
pub struct Scheduler {
    interval: Duration,
    readers: Readers,
    due: HashMap<String, Instant>,
    in_flight: HashMap<String, InFlight>,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for f in self.in_flight.values() {
            f.task.abort();
        }
    }
}

impl Scheduler {
    /// From `scan.*`, `mysql.url` and `mongodb.uri`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            interval: Duration::from_millis(settings.scan.interval_ms.max(1)),
            readers: Readers {
                page_size: settings.scan.page_size,
                max_rows: settings.scan.max_rows,
                mysql_url: settings.mysql.url.clone(),
                mongodb_uri: settings.mongodb.uri.clone(),
                mysql: Arc::default(),
                mongodb: Arc::default(),
            },
            due: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Counts the scans that ended in their sources' windows, and starts a scan of every source
    /// of `sources` that `agg` owns, that is due and that is not being scanned. A failed scan is
    /// a warning and a metric, tried again next interval.
    pub fn tick(
        &mut self,
        agg: &mut Aggregator,
        sources: &BTreeMap<String, Source>,
        runtime: &tokio::runtime::Handle,
        now: OffsetDateTime,
    ) {
        let ended: Vec<String> = self.in_flight.iter().filter(|(_, f)| f.task.is_finished()).map(|(k, _)| k.clone()).collect();
        for key in ended {
            let Some(f) = self.in_flight.remove(&key) else { continue };
            let Some(source) = sources.get(&key) else { continue };
            let scanned = runtime
                .block_on(f.task)
                .unwrap_or_else(|e| Err(Error::transient(crate::scan::system(&source.binding.at), format_args!("the scan stopped: {e}"))));
            if agg.scan_mark(&key).as_ref() != Some(&f.mark) {
                tracing::debug!(source = %source.label, "scan dropped: the source changed owner or mark while it ran");
                let _ = self.due.remove(&key);
                continue;
            }
            self.count(agg, &key, source, scanned, now);
        }
        for (key, source) in sources {
            let Some(mark) = agg.scan_mark(key) else {
                let _ = self.due.remove(key);
                continue;
            };
            if self.in_flight.contains_key(key) || self.due.get(key).is_some_and(|t| Instant::now() < *t) {
                continue;
            }
            let _ = self.due.insert(key.clone(), Instant::now() + self.interval);
            let task = runtime.spawn(self.readers.clone().scan(source.clone(), mark.clone(), now));
            let _ = self.in_flight.insert(key.clone(), InFlight { mark, task });
        }
    }

    /// Counts what a scan found in the source's windows (at `now`), and in the metrics.
    fn count(&self, agg: &mut Aggregator, key: &str, source: &Source, scanned: Result<Scanned, Error>, now: OffsetDateTime) {
        match scanned {
            Ok(s) => {
                let labels = [
                    ("product", source.contract.product.clone()),
                    ("contract", source.contract.name.clone()),
                    ("source", source.label.clone()),
                ];
                let invalid = s.counts.invalid.min(s.rows);
                for (outcome, n) in [("valid", s.rows - invalid), ("invalid", invalid)] {
                    let mut with = labels.to_vec();
                    with.push(("outcome", outcome.to_owned()));
                    counter!(SCAN_ROWS_TOTAL, &with).increment(n);
                }
                if let Some(age) = s.age_seconds {
                    gauge!(SOURCE_FRESHNESS_SECONDS, &labels).set(age);
                }
                tracing::debug!(source = %source.label, rows = s.rows, mark = ?s.mark, "scheduled scan");
                let _ = agg.add_scan(key, now, &s.counts, s.newest_ms, s.mark);
            }
            Err(e) => {
                counter!(SCAN_ERRORS_TOTAL, "source" => source.label.clone()).increment(1);
                warn!(source = %source.label, error = %e.message, retry_in_ms = self.interval.as_millis() as u64, "scheduled scan failed");
            }
        }
    }
}

/// `t` as MySQL prints a DATETIME(6) in UTC (`2026-12-04 15:00:01.250000`).
fn sql_datetime(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(second: i64, key: &str) -> Row {
        let at = OffsetDateTime::from_unix_timestamp(1_796_395_200 + second).unwrap_or_else(|e| panic!("{e}"));
        Row { key: key.into(), json: b"{}".to_vec(), event_time: Some(at) }
    }

    #[test]
    fn a_collection_scan_picks_the_first_changes_after_the_mark_up_to_the_cap() {
        let t = |second: i64| row(second, "").event_time.unwrap_or_else(|| panic!("no time"));
        // After (second 10, key "b"), up to second 30, at most 3.
        let mut p = Picker::new(Some((t(10), "b".into())), t(30), 3);
        for (second, key) in [(40, "a"), (12, "z"), (10, "a"), (10, "b"), (10, "c"), (30, "a"), (11, "a"), (20, "a")] {
            p.offer(row(second, key));
        }
        p.offer(Row { key: "null".into(), json: Vec::new(), event_time: None });
        assert_eq!(p.newest, Some(t(40)), "freshness sees every row, picked or not");
        let picked: Vec<(i64, String)> = p.picked().into_iter().map(|c| (c.at.unix_timestamp() - 1_796_395_200, c.key)).collect();
        // (10,"a") and (10,"b") are at or before the mark, 40 after `until`; (20,"a") and
        // (30,"a") wait for the next scan.
        assert_eq!(picked, vec![(10, "c".to_owned()), (11, "a".to_owned()), (12, "z".to_owned())]);
    }

    #[test]
    fn datetimes_are_written_as_the_server_prints_them() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_796_395_201_250_000_000).unwrap_or_else(|e| panic!("{e}"));
        let text = sql_datetime(t);
        assert_eq!(crate::scan::parse_sql_datetime(&text), Some(t), "{text}");
        assert_eq!(text.len(), "2026-12-04 15:00:01.250000".len());
    }
}
