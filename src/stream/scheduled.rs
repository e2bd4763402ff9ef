//! Scheduled scans (`scan.interval_ms` > 0, group-wide quality): the data a contract's bound
//! MySQL table keeps at rest, held to the contract inside `run`, with the windows, SLAs and
//! alerts of the stream.
//!
//! - **One scanner per table.** A bound table is a binding of its own (key
//!   `product/contract/mysql:table`) hashed to a partition of the partials topic like a topic's;
//!   the instance Kafka assigns that partition to (the owner of its windows) scans it. N
//!   instances never scan a table N times, and a crashed owner's tables move with its partitions.
//! - **Incremental.** A scan reads the rows whose event time (the first non-null event-time
//!   column) lies after the mark where the last scan stopped (event time and key of its last
//!   row), up to `now - SETTLE`, in (event time, key) order: a row counts once per change that
//!   moves its event time (an `updated_at` set on each write). At most `scan.max_rows` per scan;
//!   the rest waits for the next one.
//! - **Durable.** The mark goes into the window its rows were counted in, and into the state
//!   topic with that window once it closes (`Progress::scan_mark`). A new owner starts from the
//!   mark of the last closed window: the rows whose counts died with the old owner's open windows
//!   are read again, and counted once.
//! - **Freshness** of data at rest is the age of the table's newest row at each scan (one sample
//!   per scan: a table that stops being written breaches the SLA), and silence is judged on that
//!   newest row as for a topic.
//! - **Failures** (database unreachable, table or column gone) are a warning and
//!   `meshguard_scan_errors_total{source}`; the scan is tried again at the next interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use time::OffsetDateTime;
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
use crate::scan::mysql::TableReader;
use crate::telemetry::names::{SCAN_ERRORS_TOTAL, SCAN_ROWS_TOTAL, SOURCE_FRESHNESS_SECONDS};

/// Rows whose event time is younger than this wait for a later scan: a writer's transaction
/// may still commit rows stamped before it.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A bound table scheduled scans read.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its contract.
    pub contract: Arc<Contract>,
    /// The binding (key, event-time columns, fields).
    pub binding: SourceBinding,
    /// The table.
    pub table: String,
    /// `mysql:<table>`: the window's `topic` and `source`, the alert's `topic`, the metric label.
    pub label: String,
}

/// The bound MySQL tables of `catalog` by binding key, when scheduled scans are on. MongoDB
/// collections are left to `meshguard scan` (said once at start).
pub fn sources_of(catalog: &Catalog, settings: &Settings) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    if settings.scan.interval_ms == 0 {
        return out;
    }
    for c in catalog.products.iter().flat_map(|p| &p.contracts) {
        let Some(binding) = &c.source else { continue };
        if let SourceAt::Mysql { table, .. } = &binding.at {
            let label = format!("mysql:{table}");
            let key = binding_key(&c.product, &c.name, &label);
            let _ = out.insert(key, Source { contract: c.clone(), binding: binding.clone(), table: table.clone(), label });
        }
    }
    out
}

/// The collections scheduled scans do not read (for the start-up note).
pub fn unscheduled(catalog: &Catalog) -> Vec<String> {
    catalog
        .products
        .iter()
        .flat_map(|p| &p.contracts)
        .filter_map(|c| c.source.as_ref())
        .filter(|b| matches!(b.at, SourceAt::Mongodb { .. }))
        .map(|b| b.at.describe())
        .collect()
}

/// What one scan of a table found.
#[derive(Debug, Default)]
struct Scanned {
    counts: Counts,
    newest_ms: Option<i64>,
    age_seconds: Option<f64>,
    mark: Option<ScanMark>,
    rows: u64,
}

/// When each owned table is due, and how scans read.
#[derive(Debug)]
pub struct Scheduler {
    interval: Duration,
    page_size: u32,
    max_rows: u64,
    mysql_url: String,
    due: HashMap<String, Instant>,
}

impl Scheduler {
    /// From `scan.*` and `mysql.url`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            interval: Duration::from_millis(settings.scan.interval_ms.max(1)),
            page_size: settings.scan.page_size,
            max_rows: settings.scan.max_rows,
            mysql_url: settings.mysql.url.clone(),
            due: HashMap::new(),
        }
    }

    /// Scans every table of `sources` that `agg` owns and that is due, and counts what each scan
    /// found in its windows. A failed scan is a warning and a metric, tried again next interval.
    pub fn tick(
        &mut self,
        agg: &mut Aggregator,
        sources: &BTreeMap<String, Source>,
        runtime: &tokio::runtime::Handle,
        now: OffsetDateTime,
    ) {
        for (key, source) in sources {
            let Some(mark) = agg.scan_mark(key) else {
                let _ = self.due.remove(key);
                continue;
            };
            if self.due.get(key).is_some_and(|t| Instant::now() < *t) {
                continue;
            }
            let _ = self.due.insert(key.clone(), Instant::now() + self.interval);
            match runtime.block_on(self.scan(source, mark, now)) {
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

    /// Reads the rows of `source` changed after `mark` and holds each to the contract.
    async fn scan(&self, source: &Source, mark: Option<ScanMark>, now: OffsetDateTime) -> Result<Scanned, Error> {
        let contract = &source.contract;
        let mut reader = TableReader::open(&self.mysql_url, contract, &source.binding, &source.table, self.page_size).await?;
        let until = now - SETTLE;
        reader.since(mark.clone().map(|m| (m.at, m.key)), sql_datetime(until))?;
        let newest = reader.newest().await?.as_deref().and_then(crate::scan::parse_sql_datetime);
        let mut checker = Checker::new(contract, None).map_err(|r| {
            Error::refused(System::MySql, r.violations.first().map(|v| v.message.clone()).unwrap_or_else(|| "no enforced version".into()))
        })?;
        let sla = contract.quality.freshness.0.as_secs_f64();
        let input = source.binding.at.describe();
        let mut out = Scanned { mark, ..Scanned::default() };
        while out.rows < self.max_rows {
            let Some(page) = reader.next_page().await? else { break };
            for row in page {
                out.rows += 1;
                let at = At { input: input.clone(), line: out.rows, key: Some(row.key) };
                let eval = checker.add(&at, Item::Line(row.json), now);
                out.counts.observe(&eval, Some(sla), false);
            }
        }
        if let Some((at, key)) = reader.mark() {
            out.mark = Some(ScanMark { at, key });
        }
        // Freshness of data at rest: the age of the newest row, one sample per scan (the rows'
        // own ages say how old the changed rows are, not how stale the table is).
        out.counts.stale_samples.clear();
        out.counts.freshness = None;
        if let Some(t) = newest {
            let age = (now - t).as_seconds_f64().max(0.0);
            let mut s = sketch();
            s.add(age);
            out.counts.freshness = Some(s);
            out.age_seconds = Some(age);
            out.newest_ms = Some(crate::measure::unix_ms(t));
        }
        Ok(out)
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

    #[test]
    fn datetimes_are_written_as_the_server_prints_them() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_796_395_201_250_000_000).unwrap_or_else(|e| panic!("{e}"));
        let text = sql_datetime(t);
        assert_eq!(crate::scan::parse_sql_datetime(&text), Some(t), "{text}");
        assert_eq!(text.len(), "2026-12-04 15:00:01.250000".len());
    }
}
