//! `meshguard dlq replay`: dead letters re-checked against the contract now in force, and those
//! that pass re-published to their source topic, once.
//!
//! This file decides (no I/O): it splits a dead letter's headers into the original record's
//! and the reason meshguard appended (`sink::dlq`), applies the filters, the receipts of earlier
//! runs and the loop guard, and re-checks the payload with the same [`Checker`] as `check` and
//! `POST /validate`. `kafka.rs` reads the topics and publishes.
//!
//! Loop guard: a replayed record carries `meshguard.replayed: N`. The stream keeps a record's
//! own headers when it dead-letters it, so a replayed record that fails again reaches the
//! dead-letter topic still carrying that header, and replay skips every dead letter that carries
//! it: a record is replayed at most once. Receipts (one record per replayed dead letter, keyed by
//! its position, in `topics.dlq_replays`) keep a later run from replaying a dead letter that an
//! earlier run already replayed and that the stream then accepted.

mod kafka;

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

pub use self::kafka::replay;
use crate::check::input::Item;
use crate::check::{Checker, report_at};
use crate::product::Catalog;
use crate::sink::dlq::header;
use crate::verdict::VERSION_HEADER;

/// The header of a replayed record: how many times it has been replayed (`1`).
pub const REPLAYED_HEADER: &str = "meshguard.replayed";

/// One header as read: its name and value.
pub type HeaderPair = (String, Option<Vec<u8>>);

/// Which dead letters a run considers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only those whose contract's product (`meshguard.product`) is this one.
    pub product: Option<String>,
    /// Only those written at or after this instant (the dead letter's Kafka timestamp).
    pub since: Option<OffsetDateTime>,
    /// Only those written before this instant.
    pub until: Option<OffsetDateTime>,
}

/// Why a selected dead letter was not replayed (other than failing its contract again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// A receipt says an earlier run replayed it.
    AlreadyReplayed,
    /// The record was itself a replay and failed again (the loop guard).
    FailedAfterReplay,
    /// It carries no `meshguard.source.topic` or `meshguard.product` header.
    MissingHeaders,
    /// A header name or value that cannot be read (not UTF-8, a count that is not a number).
    MalformedHeaders,
    /// The payload was too large and was dropped when it was dead-lettered: nothing to replay.
    PayloadDropped,
    /// No contract is bound to its source topic any more.
    SourceNotBound,
}

impl Skip {
    /// The stable name (summary, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyReplayed => "already_replayed",
            Self::FailedAfterReplay => "failed_after_replay",
            Self::MissingHeaders => "missing_headers",
            Self::MalformedHeaders => "malformed_headers",
            Self::PayloadDropped => "payload_dropped",
            Self::SourceNotBound => "source_not_bound",
        }
    }
}

/// A dead letter's headers, split into the original record's and meshguard's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The original record's own headers, in order.
    pub original: Vec<HeaderPair>,
    /// `meshguard.source.topic`.
    pub source_topic: String,
    /// `meshguard.product`.
    pub product: String,
    /// Whether `meshguard.payload.dropped` is set.
    pub payload_dropped: bool,
    /// The original's `meshguard.replayed` count (0 without one).
    pub replayed: u32,
}

impl Parsed {
    /// The original record's `meshguard.contract.version` header, which selects the version
    /// it is held to.
    pub fn version_header(&self) -> Option<&[u8]> {
        self.original.iter().rev().find(|(k, _)| k == VERSION_HEADER).and_then(|(_, v)| v.as_deref())
    }

    /// The headers of the replayed record: the original's, with `meshguard.replayed` raised.
    pub fn replay_headers(&self) -> Vec<HeaderPair> {
        let mut out: Vec<HeaderPair> = self.original.iter().filter(|(k, _)| k != REPLAYED_HEADER).cloned().collect();
        out.push((REPLAYED_HEADER.to_owned(), Some((self.replayed + 1).to_string().into_bytes())));
        out
    }
}

/// Splits a dead letter's headers. meshguard appends its reason after the record's own headers,
/// starting with `meshguard.source.topic`, so the last occurrence of that name starts the reason
/// (a record's own headers may hold any name, even meshguard's).
pub fn parse(headers: Vec<HeaderPair>) -> Result<Parsed, Skip> {
    let start = headers.iter().rposition(|(k, _)| k == header::SOURCE_TOPIC).ok_or(Skip::MissingHeaders)?;
    let mut original = headers;
    let reason = original.split_off(start);
    let text = |name: &str| -> Result<Option<&str>, Skip> {
        match reason.iter().rev().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) => std::str::from_utf8(v.as_deref().unwrap_or_default()).map(Some).map_err(|_| Skip::MalformedHeaders),
        }
    };
    let source_topic = text(header::SOURCE_TOPIC)?.unwrap_or_default().to_owned();
    let product = text(header::PRODUCT)?.ok_or(Skip::MissingHeaders)?.to_owned();
    if source_topic.is_empty() || product.is_empty() {
        return Err(Skip::MalformedHeaders);
    }
    let payload_dropped = text(header::PAYLOAD_DROPPED)?.is_some_and(|v| v == "true");
    let replayed = match original.iter().rev().find(|(k, _)| k == REPLAYED_HEADER) {
        None => 0,
        Some((_, v)) => std::str::from_utf8(v.as_deref().unwrap_or_default())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or(Skip::MalformedHeaders)?,
    };
    Ok(Parsed { original, source_topic, product, payload_dropped, replayed })
}

/// One dead letter as read.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// Its headers, or `None` when they cannot be read.
    pub headers: Option<Vec<HeaderPair>>,
    /// Its payload.
    pub payload: Option<&'a [u8]>,
    /// Its Kafka timestamp.
    pub timestamp: Option<OffsetDateTime>,
    /// Whether a receipt says it was replayed before.
    pub receipted: bool,
}

/// What to do with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The filters leave it out.
    OutsideFilter,
    /// Selected, not replayed, for this reason; the product its headers name, when they can
    /// be read.
    Skipped(Skip, Option<String>),
    /// The contract in force still rejects it, with this class.
    StillFailing {
        /// The error class.
        class: &'static str,
        /// The product whose contract rejected it.
        product: String,
    },
    /// It passes: publish it to `topic` with `headers`.
    Replay {
        /// Its source topic.
        topic: String,
        /// The original headers plus `meshguard.replayed`.
        headers: Vec<HeaderPair>,
        /// The product whose contract rejected it.
        product: String,
    },
}

/// Judges one dead letter: filters, receipts, loop guard, then the contract bound to its source
/// topic in `catalog`, at `now`.
pub fn judge(catalog: &Catalog, filter: &Filter, letter: DeadLetter<'_>, now: OffsetDateTime) -> Outcome {
    if filter.since.is_some() || filter.until.is_some() {
        let Some(t) = letter.timestamp else { return Outcome::OutsideFilter };
        if filter.since.is_some_and(|s| t < s) || filter.until.is_some_and(|u| t >= u) {
            return Outcome::OutsideFilter;
        }
    }
    let Some(headers) = letter.headers else { return Outcome::Skipped(Skip::MalformedHeaders, None) };
    let parsed = match parse(headers) {
        Ok(p) => p,
        Err(skip) => return Outcome::Skipped(skip, None),
    };
    let skipped = |skip: Skip| Outcome::Skipped(skip, Some(parsed.product.clone()));
    if filter.product.as_ref().is_some_and(|p| *p != parsed.product) {
        return Outcome::OutsideFilter;
    }
    if letter.receipted {
        return skipped(Skip::AlreadyReplayed);
    }
    if parsed.replayed >= 1 {
        return skipped(Skip::FailedAfterReplay);
    }
    if parsed.payload_dropped {
        return skipped(Skip::PayloadDropped);
    }
    let Some(binding) = catalog.binding(&parsed.source_topic) else { return skipped(Skip::SourceNotBound) };
    let mut checker = match Checker::new(&binding.contract, parsed.version_header()) {
        Ok(c) => c,
        Err(rejection) => return Outcome::StillFailing { class: rejection.class, product: parsed.product },
    };
    let eval = checker.add(&report_at("dlq", 0), Item::Line(letter.payload.unwrap_or_default().to_vec()), now);
    match eval.rejection {
        Some(r) => Outcome::StillFailing { class: r.class, product: parsed.product },
        None => Outcome::Replay { topic: parsed.source_topic.clone(), headers: parsed.replay_headers(), product: parsed.product },
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// The dead-letter topic read.
    pub dlq: String,
    /// Nothing was published.
    pub dry_run: bool,
    /// Replays and receipts were committed in Kafka transactions.
    pub exactly_once: bool,
    /// Dead letters read (up to the end offsets at start).
    pub read: u64,
    /// Left out by --product / --since / --until.
    pub outside_filter: u64,
    /// Re-published (with --dry-run: would be).
    pub replayed: u64,
    /// Still rejected by the contract in force.
    pub still_failing: u64,
    /// Selected but not replayed, for a reason in `skipped_by_reason`.
    pub skipped: u64,
    /// Replayed, per source topic.
    pub replayed_by_topic: BTreeMap<String, u64>,
    /// Still failing, per error class.
    pub still_failing_by_class: BTreeMap<String, u64>,
    /// Skipped, per reason.
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// Replayed, still failing and skipped per product (header `meshguard.product`): what a
    /// scheduler turns into `meshguard_dlq_replayed_total{product,outcome}` if it keeps
    /// metrics (the command is one-shot and serves none). A dead letter whose headers cannot be
    /// read names no product: it is in the totals only.
    pub by_product: BTreeMap<String, ProductCounts>,
}

/// One product's share of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ProductCounts {
    /// Re-published (with --dry-run: would be).
    pub replayed: u64,
    /// Still rejected by the contract in force.
    pub still_failing: u64,
    /// Selected but not replayed.
    pub skipped: u64,
}

impl Summary {
    /// Counts one outcome.
    pub fn count(&mut self, outcome: &Outcome) {
        self.read += 1;
        match outcome {
            Outcome::OutsideFilter => self.outside_filter += 1,
            Outcome::Skipped(skip, product) => {
                self.skipped += 1;
                *self.skipped_by_reason.entry(skip.as_str().to_owned()).or_default() += 1;
                if let Some(p) = product {
                    self.by_product.entry(p.clone()).or_default().skipped += 1;
                }
            }
            Outcome::StillFailing { class, product } => {
                self.still_failing += 1;
                *self.still_failing_by_class.entry((*class).to_owned()).or_default() += 1;
                self.by_product.entry(product.clone()).or_default().still_failing += 1;
            }
            Outcome::Replay { topic, product, .. } => {
                self.replayed += 1;
                *self.replayed_by_topic.entry(topic.clone()).or_default() += 1;
                self.by_product.entry(product.clone()).or_default().replayed += 1;
            }
        }
    }

    /// The summary for people.
    pub fn render_text(&self) -> String {
        let list = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        let mut out = format!(
            "dlq replay of {}{}: {} dead letters read (up to the end offsets at start)\n",
            self.dlq,
            if self.dry_run {
                " (dry run: nothing published)"
            } else if self.exactly_once {
                " (exactly-once)"
            } else {
                ""
            },
            self.read
        );
        let replayed = if self.dry_run { "would replay" } else { "replayed" };
        out.push_str(&format!("  {replayed:<15} {:>6}  {}\n", self.replayed, list(&self.replayed_by_topic)));
        out.push_str(&format!("  {:<15} {:>6}  {}\n", "still failing", self.still_failing, list(&self.still_failing_by_class)));
        out.push_str(&format!("  {:<15} {:>6}  {}\n", "skipped", self.skipped, list(&self.skipped_by_reason)));
        out.push_str(&format!("  {:<15} {:>6}\n", "outside filter", self.outside_filter));
        for (product, c) in &self.by_product {
            out.push_str(&format!("  {product}: {replayed} {}, still failing {}, skipped {}\n", c.replayed, c.still_failing, c.skipped));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> HeaderPair {
        (k.to_owned(), Some(v.as_bytes().to_vec()))
    }

    fn reason() -> Vec<HeaderPair> {
        vec![
            h(header::SOURCE_TOPIC, "payments.created"),
            h(header::SOURCE_PARTITION, "0"),
            h(header::SOURCE_OFFSET, "7"),
            h(header::STAGE, "validate"),
            h(header::PRODUCT, "payments-data-product"),
            h(header::CONTRACT, "payment-schema"),
            h(header::CONTRACT_VERSION, "1.0.0"),
            h(header::ERROR_CLASS, "contract_violation"),
            h(header::VIOLATIONS, "[]"),
        ]
    }

    #[test]
    fn the_reason_starts_at_the_last_source_topic_header() -> Result<(), Skip> {
        // The record's own headers may hold meshguard's names (a version header, even a stray
        // source topic): they stay the original's.
        let mut headers = vec![h("trace", "t-1"), h(header::SOURCE_TOPIC, "spoof"), h(VERSION_HEADER, "2.0.0")];
        headers.extend(reason());
        let parsed = parse(headers)?;
        assert_eq!(parsed.original.len(), 3);
        assert_eq!(parsed.source_topic, "payments.created");
        assert_eq!(parsed.version_header(), Some(&b"2.0.0"[..]));
        assert_eq!(parsed.replayed, 0);
        let replay = parsed.replay_headers();
        assert_eq!(replay.last(), Some(&h(REPLAYED_HEADER, "1")));
        assert_eq!(replay.len(), 4);
        Ok(())
    }

    #[test]
    fn missing_or_malformed_headers_are_reasons() {
        assert_eq!(parse(vec![h("trace", "t")]), Err(Skip::MissingHeaders));
        let mut replayed = vec![h(REPLAYED_HEADER, "many")];
        replayed.extend(reason());
        assert_eq!(parse(replayed), Err(Skip::MalformedHeaders));
        let mut once = vec![h(REPLAYED_HEADER, "1")];
        once.extend(reason());
        assert_eq!(parse(once).map(|p| p.replayed), Ok(1));
        let no_product: Vec<HeaderPair> = reason().into_iter().filter(|(k, _)| k != header::PRODUCT).collect();
        assert_eq!(parse(no_product), Err(Skip::MissingHeaders));
    }

    #[test]
    fn the_summary_counts_every_outcome() {
        let mut s = Summary { dlq: "datamesh.dlq".into(), ..Summary::default() };
        s.count(&Outcome::Skipped(Skip::FailedAfterReplay, Some("p".into())));
        s.count(&Outcome::Skipped(Skip::MissingHeaders, None));
        s.count(&Outcome::StillFailing { class: "json_syntax", product: "q".into() });
        s.count(&Outcome::OutsideFilter);
        s.count(&Outcome::Replay { topic: "payments.created".into(), headers: Vec::new(), product: "p".into() });
        assert_eq!((s.read, s.replayed, s.still_failing, s.skipped, s.outside_filter), (5, 1, 1, 2, 1));
        assert_eq!(s.by_product.get("p"), Some(&ProductCounts { replayed: 1, still_failing: 0, skipped: 1 }));
        assert_eq!(s.by_product.get("q"), Some(&ProductCounts { replayed: 0, still_failing: 1, skipped: 0 }));
        assert_eq!(s.by_product.len(), 2, "a dead letter that names no product is in the totals only");
        let text = s.render_text();
        assert!(text.contains("replayed             1  payments.created 1"), "{text}");
        assert!(text.contains("skipped              2  failed_after_replay 1, missing_headers 1"), "{text}");
        assert!(text.contains("  p: replayed 1, still failing 0, skipped 1\n"), "{text}");
    }
}
