//! Telemetry: Prometheus metrics (names from one place, labels from small fixed sets) and the
//! operational HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
//!
//! Hot-path counters are registered once per (product, contract, topic) binding and updated once
//! per batch, never looked up per event.

pub mod http;
pub mod names;

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use self::names::*;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(FRESHNESS_SECONDS.into()),
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(SINK_WRITE_SECONDS.into()),
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(BATCH_RECORDS.into()),
                &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(RECONCILE_BATCH_RECORDS.into()),
                &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(API_REQUEST_SECONDS.into()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(RECONCILE_SECONDS.into()),
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )
        })?;
    let handle = builder.install_recorder()?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    describe_counter!(EVENTS_TOTAL, Unit::Count, "Input events processed, by outcome (valid, invalid).");
    describe_counter!(DEAD_LETTERS_TOTAL, Unit::Count, "Events written to the dead-letter topic, by failing stage.");
    describe_counter!(VIOLATIONS_TOTAL, Unit::Count, "Contract violations found, by schema keyword.");
    describe_counter!(
        RULE_VIOLATIONS_TOTAL,
        Unit::Count,
        "Business rules (CEL) that failed, by product, contract, version, rule and severity."
    );
    describe_counter!(
        SHADOW_REJECTIONS_TOTAL,
        Unit::Count,
        "Records a shadow contract version would have rejected, by product, contract and version."
    );
    describe_counter!(
        DUPLICATES_TOTAL,
        Unit::Count,
        "Records whose unique key repeats an earlier record's within the contract's horizon, by product, contract and topic."
    );
    describe_histogram!(FRESHNESS_SECONDS, Unit::Seconds, "Age of each event at validation (now - event time).");
    describe_counter!(REQUIRED_PRESENT_TOTAL, Unit::Count, "Required fields present in processed events (completeness numerator).");
    describe_counter!(REQUIRED_EXPECTED_TOTAL, Unit::Count, "Required fields applicable to processed events (completeness denominator).");
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Messages between the committed position and the end of each topic, summed over assigned partitions."
    );
    describe_gauge!(ASSIGNED_PARTITIONS, Unit::Count, "Partitions currently assigned to this instance.");
    describe_counter!(REBALANCES_TOTAL, Unit::Count, "Consumer group rebalances seen by this instance, by kind (assign, revoke).");
    describe_histogram!(
        SINK_WRITE_SECONDS,
        Unit::Seconds,
        "Per batch: MongoDB, the time to write the batch; Kafka, the wait for its acknowledgement or transaction commit after the batch is sent."
    );
    describe_counter!(SINK_ERRORS_TOTAL, Unit::Count, "Failed sink writes (the batch is retried, never dropped).");
    describe_histogram!(BATCH_RECORDS, Unit::Count, "Input records per processed batch.");
    describe_counter!(CONSUMER_ERRORS_TOTAL, Unit::Count, "Errors reported by the Kafka consumer, by kind.");
    describe_gauge!(COMPLETENESS_RATIO, "Required fields present / applicable in the last closed window.");
    describe_gauge!(ACCURACY_RATIO, "Reconciled records matching the source / checked, in the last closed window.");
    describe_gauge!(LINEAGE_COVERAGE_RATIO, "Records with a lineage document / records processed, in the last closed window.");
    describe_counter!(ALERTS_TOTAL, Unit::Count, "Quality alerts by metric and state (firing, resolved).");
    describe_counter!(
        PARTIALS_TOTAL,
        Unit::Count,
        "Partial windows merged by the owner of group-wide windows, by outcome (counted, replaced, replay, late, unknown, unreadable)."
    );
    describe_counter!(
        SCAN_ROWS_TOTAL,
        Unit::Count,
        "Rows read by scheduled scans of bound tables and collections (scan.interval_ms), by product, contract, source and outcome (valid, invalid)."
    );
    describe_counter!(
        SCAN_ERRORS_TOTAL,
        Unit::Count,
        "Scheduled scans that failed (database unreachable, table or column missing), by source; retried at the next interval."
    );
    describe_gauge!(
        SOURCE_FRESHNESS_SECONDS,
        Unit::Seconds,
        "Age of a bound table's newest row (now - its newest event time) at its last scheduled scan, by product, contract and source."
    );
    describe_histogram!(RECONCILE_BATCH_RECORDS, Unit::Count, "Records checked per reconciliation run (one query per table and chunk).");
    describe_histogram!(RECONCILE_SECONDS, Unit::Seconds, "Duration of one reconciliation run against the source database.");
    describe_gauge!(RECONCILE_BACKLOG, Unit::Count, "Records waiting for reconciliation (unverified or within the grace period).");
    describe_counter!(RECONCILE_ERRORS_TOTAL, Unit::Count, "Reconciliation runs that failed to reach the source database.");
    describe_counter!(
        MATERIALIZED_TOTAL,
        Unit::Count,
        "Documents the materializer wrote to MongoDB from topics.records, by outcome (written, unreadable)."
    );
    describe_gauge!(
        MATERIALIZE_LAG_SECONDS,
        Unit::Seconds,
        "How far behind the stream the document store is (mongodb.materialize = kafka): now minus the produce time of the newest entry written; 0 when all is read."
    );
    describe_gauge!(
        CATALOG_REVISION,
        "Revision in force of each data product read from the catalog in MongoDB (products.source = mongodb; 0 once retired)."
    );
    describe_counter!(
        CATALOG_REFUSALS_TOTAL,
        Unit::Count,
        "Stored catalog revisions refused (do not compile, or run cannot switch to them); the revision in force stays."
    );
}

/// Registers the error series of `meshguard run` at zero, so that `rate()` in the rules and the
/// dashboard reads 0 (not "no data") before the first failure. Only label values fixed by the
/// configuration: the sinks that are enabled and the reconciler when MySQL is on.
pub fn register_run_error_series(mongodb: bool, mysql: bool) {
    counter!(SINK_ERRORS_TOTAL, "sink" => "kafka").increment(0);
    if mongodb {
        counter!(SINK_ERRORS_TOTAL, "sink" => "mongodb").increment(0);
    }
    if mysql {
        counter!(RECONCILE_ERRORS_TOTAL).increment(0);
        gauge!(RECONCILE_BACKLOG).set(0.0);
    }
}

/// Metric handles for one topic binding.
#[derive(Debug, Clone)]
pub struct BindingMetrics {
    /// Valid events.
    pub valid: Counter,
    /// Invalid events.
    pub invalid: Counter,
    /// Dead letters from undecodable events.
    pub dead_decode: Counter,
    /// Dead letters from contract violations.
    pub dead_validate: Counter,
    /// Event age.
    pub freshness: Histogram,
    /// Completeness numerator.
    pub required_present: Counter,
    /// Completeness denominator.
    pub required_expected: Counter,
    /// Consumer lag of the topic.
    pub lag: Gauge,
    labels: [(&'static str, String); 3],
}

impl BindingMetrics {
    /// Registers the handles of one binding.
    pub fn new(product: &str, contract: &str, topic: &str) -> Self {
        let labels = [("product", product.to_owned()), ("contract", contract.to_owned()), ("topic", topic.to_owned())];
        let with = |extra: (&'static str, &'static str)| {
            let mut l: Vec<(&'static str, String)> = labels.to_vec();
            l.push((extra.0, extra.1.to_owned()));
            l
        };
        Self {
            valid: counter!(EVENTS_TOTAL, &with(("outcome", "valid"))),
            invalid: counter!(EVENTS_TOTAL, &with(("outcome", "invalid"))),
            dead_decode: counter!(DEAD_LETTERS_TOTAL, &with(("stage", "decode"))),
            dead_validate: counter!(DEAD_LETTERS_TOTAL, &with(("stage", "validate"))),
            freshness: histogram!(FRESHNESS_SECONDS, &labels),
            required_present: counter!(REQUIRED_PRESENT_TOTAL, &labels),
            required_expected: counter!(REQUIRED_EXPECTED_TOTAL, &labels),
            lag: gauge!(CONSUMER_LAG, "topic" => topic.to_owned()),
            labels,
        }
    }

    /// Counts violations by keyword (invalid events only, so not on the hot path).
    pub fn violation(&self, keyword: &str, n: u64) {
        let keyword = keyword_label(keyword);
        counter!(VIOLATIONS_TOTAL, "product" => self.labels[0].1.clone(), "contract" => self.labels[1].1.clone(), "keyword" => keyword)
            .increment(n);
    }
}
