//! `meshguard scan`: hold the data a contract's bound table or collection keeps at rest to the
//! contract, with the judgement and the report of `check`.
//!
//! A reader ([`mysql::TableReader`], [`mongo::CollectionReader`]) turns each row or document
//! into a record's JSON text, page by page (keyset pagination: MySQL by the bound unique key,
//! MongoDB by `_id`), on the runtime; the calling thread holds each record to the contract
//! through [`Checker::add`], exactly as `check` holds a line of NDJSON. At most
//! [`PAGES_AHEAD`] pages wait between them, so memory stays a few pages whatever the table's
//! size. Values keep their exact form: a DECIMAL is written as the server prints it (never
//! through a float), DATETIME/TIMESTAMP as RFC 3339 UTC.

pub mod mongo;
pub mod mysql;

use std::time::Instant;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::check::input::Item;
use crate::check::{At, Checker, Report, SourceSummary};
use crate::contract::Contract;
use crate::error::{Error, System};
use crate::product::model::{SourceAt, SourceBinding};

/// Pages read ahead of the one being judged.
pub const PAGES_AHEAD: usize = 2;

/// Rows or documents per page unless `--page-size` says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 1_000;

/// One row or document as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The bound key's value, as text (what the report shows).
    pub key: String,
    /// The record: one JSON object.
    pub json: Vec<u8>,
    /// The first non-null event-time value, when it is a valid instant.
    pub event_time: Option<OffsetDateTime>,
}

/// Where to read from, as the settings say.
#[derive(Debug, Clone)]
pub struct Servers {
    /// `mysql.url`.
    pub mysql_url: String,
    /// `mongodb.uri`.
    pub mongodb_uri: String,
}

/// A bound table or collection, checked and ready to be read.
#[derive(Debug)]
pub enum Reader {
    /// A MySQL/MariaDB table.
    Mysql(mysql::TableReader),
    /// A MongoDB collection.
    Mongo(mongo::CollectionReader),
}

impl Reader {
    /// Connects and checks the binding against what the server holds: the table or collection
    /// exists, the table has every column the contract requires, its key is unique. Each
    /// failure is one line naming what is missing.
    pub async fn open(contract: &Contract, binding: &SourceBinding, servers: &Servers, page_size: u32) -> Result<Self, Error> {
        match &binding.at {
            SourceAt::Mysql { table, .. } => {
                mysql::TableReader::open(&servers.mysql_url, contract, binding, table, page_size).await.map(Self::Mysql)
            }
            SourceAt::Mongodb { database, collection } => {
                mongo::CollectionReader::open(&servers.mongodb_uri, binding, database, collection, page_size).await.map(Self::Mongo)
            }
        }
    }

    /// The next page; `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Row>>, Error> {
        match self {
            Self::Mysql(r) => r.next_page().await,
            Self::Mongo(r) => r.next_page().await,
        }
    }
}

/// The server `at` is on (the error's system).
pub fn system(at: &SourceAt) -> System {
    match at {
        SourceAt::Mysql { .. } => System::MySql,
        SourceAt::Mongodb { .. } => System::MongoDb,
    }
}

/// `check`'s checker for the rows of `at`, held to `contract`'s enforced version.
pub fn checker<'c>(contract: &'c Contract, at: &SourceAt) -> Result<Checker<'c>, Error> {
    Checker::new(contract, None).map_err(|r| {
        Error::refused(system(at), r.violations.first().map(|v| v.message.clone()).unwrap_or_else(|| "no enforced version".into()))
    })
}

/// Reads `reader` to its end on `runtime` and holds every record to `contract` on this thread;
/// `progress` is told how many records were judged after each page. The report names
/// `binding`'s source, its newest event time and its age at `now`.
pub fn scan(
    runtime: &tokio::runtime::Runtime,
    contract: &Contract,
    binding: &SourceBinding,
    mut reader: Reader,
    now: OffsetDateTime,
    progress: impl Fn(u64),
) -> Result<Report, Error> {
    let start = Instant::now();
    let mut checker = checker(contract, &binding.at)?;
    let input = binding.at.describe();
    checker.report.inputs.push(input.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Row>, Error>>(PAGES_AHEAD);
    let read = runtime.spawn(async move {
        loop {
            let page = reader.next_page().await;
            let done = !matches!(page, Ok(Some(_)));
            let sent = match page {
                Ok(Some(rows)) => tx.send(Ok(rows)).await,
                Ok(None) => Ok(()),
                Err(e) => tx.send(Err(e)).await,
            };
            if done || sent.is_err() {
                return;
            }
        }
    });
    let (mut records, mut pages) = (0u64, 0u64);
    let mut newest: Option<OffsetDateTime> = None;
    while let Some(page) = rx.blocking_recv() {
        let page = page?;
        pages += 1;
        for row in page {
            records += 1;
            if let Some(t) = row.event_time {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            let at = At { input: input.clone(), line: records, key: Some(row.key) };
            let _ = checker.add(&at, Item::Line(row.json), now);
        }
        progress(records);
    }
    runtime.block_on(read).map_err(|e| Error::refused(system(&binding.at), format_args!("the reader stopped: {e}")))?;
    let mut report = checker.finish();
    let age = newest.map(|t| (now - t).max(time::Duration::ZERO));
    let sla = contract.quality.freshness.0;
    report.source = Some(SourceSummary {
        source: input,
        key: binding.key.clone(),
        event_time: binding.event_time.clone(),
        newest_event_time: newest.and_then(|t| t.format(&Rfc3339).ok()),
        freshness_seconds: age.map(|a| a.as_seconds_f64()),
        meets_freshness_sla: age.map(|a| a.unsigned_abs() <= sla),
        pages,
        elapsed_seconds: start.elapsed().as_secs_f64(),
    });
    Ok(report)
}

/// Whether `text` is a JSON number as RFC 8259 writes one (what a DECIMAL, an integer or a
/// float column prints is written into the record as it is, never through a float).
pub fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            let _ = digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// A MySQL DATETIME/TIMESTAMP as the server prints it (`2026-12-03 20:19:34.123456`, in UTC:
/// the connection's time zone is `+00:00`) as an instant; `None` for what is no instant (a
/// zero date `0000-00-00 00:00:00`).
pub fn parse_sql_datetime(text: &str) -> Option<OffsetDateTime> {
    let rfc = format!("{}Z", text.replacen(' ', "T", 1));
    OffsetDateTime::parse(&rfc, &Rfc3339).ok()
}

/// `t` as RFC 3339 in UTC with the fraction it has (`2026-12-03T20:19:34.123456Z`).
pub fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok()
}

/// Appends `"name":` to an object being written.
fn push_name(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    push_string(out, name);
    out.push(b':');
}

/// Appends `s` as a JSON string.
fn push_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_recognised_exactly() {
        for ok in ["0", "-0", "12.30", "9999999999999999.99", "-0.01", "1e300", "1.5E-7", "42"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", ".5", "5.", "+1", "1e", "NaN", "inf", "1.2.3", "12a", " 1"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn sql_datetimes_become_utc_instants() {
        let t = parse_sql_datetime("2026-12-03 20:19:34.123456");
        assert_eq!(t.and_then(rfc3339).as_deref(), Some("2026-12-03T20:19:34.123456Z"));
        assert_eq!(parse_sql_datetime("2026-12-03 20:19:34").and_then(rfc3339).as_deref(), Some("2026-12-03T20:19:34Z"));
        assert_eq!(parse_sql_datetime("0000-00-00 00:00:00"), None);
        assert_eq!(parse_sql_datetime("2026-02-30 00:00:00"), None);
    }
}
