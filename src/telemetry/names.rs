//! Every metric name, in one place: `meshguard_<noun>_<unit>[_total]`.

/// Input events by outcome.
pub const EVENTS_TOTAL: &str = "meshguard_events_total";
/// Dead letters by stage.
pub const DEAD_LETTERS_TOTAL: &str = "meshguard_dead_letters_total";
/// Violations by keyword.
pub const VIOLATIONS_TOTAL: &str = "meshguard_violations_total";
/// Event age histogram.
pub const FRESHNESS_SECONDS: &str = "meshguard_freshness_seconds";
/// Completeness numerator.
pub const REQUIRED_PRESENT_TOTAL: &str = "meshguard_required_fields_present_total";
/// Completeness denominator.
pub const REQUIRED_EXPECTED_TOTAL: &str = "meshguard_required_fields_expected_total";
/// Consumer lag per topic.
pub const CONSUMER_LAG: &str = "meshguard_consumer_lag_messages";
/// Assigned partitions.
pub const ASSIGNED_PARTITIONS: &str = "meshguard_assigned_partitions";
/// Rebalances by kind.
pub const REBALANCES_TOTAL: &str = "meshguard_rebalances_total";
/// Sink write latency by sink.
pub const SINK_WRITE_SECONDS: &str = "meshguard_sink_write_seconds";
/// Sink errors by sink.
pub const SINK_ERRORS_TOTAL: &str = "meshguard_sink_errors_total";
/// Records per batch.
pub const BATCH_RECORDS: &str = "meshguard_batch_records";
/// Completeness of the last closed window.
pub const COMPLETENESS_RATIO: &str = "meshguard_completeness_ratio";
/// Accuracy of the last closed window.
pub const ACCURACY_RATIO: &str = "meshguard_accuracy_ratio";
/// Lineage coverage of the last closed window.
pub const LINEAGE_COVERAGE_RATIO: &str = "meshguard_lineage_coverage_ratio";
/// Alerts by metric and state.
pub const ALERTS_TOTAL: &str = "meshguard_alerts_total";
/// Partial windows read by the owner of group-wide windows, by outcome.
pub const PARTIALS_TOTAL: &str = "meshguard_quality_partials_total";
/// Rows read by scheduled scans of bound tables and collections.
pub const SCAN_ROWS_TOTAL: &str = "meshguard_scan_rows_total";
/// Scheduled scans that failed (unreachable database, missing table or column).
pub const SCAN_ERRORS_TOTAL: &str = "meshguard_scan_errors_total";
/// Age of a bound table's newest row at its last scheduled scan.
pub const SOURCE_FRESHNESS_SECONDS: &str = "meshguard_source_freshness_seconds";
/// Records per reconciliation run.
pub const RECONCILE_BATCH_RECORDS: &str = "meshguard_reconcile_batch_records";
/// Duration of a reconciliation run.
pub const RECONCILE_SECONDS: &str = "meshguard_reconcile_seconds";
/// Claims waiting for a decision.
pub const RECONCILE_BACKLOG: &str = "meshguard_reconcile_backlog_records";
/// Failed reconciliation lookups.
pub const RECONCILE_ERRORS_TOTAL: &str = "meshguard_reconcile_errors_total";
/// Consumer errors by kind.
pub const CONSUMER_ERRORS_TOTAL: &str = "meshguard_consumer_errors_total";
/// Records a shadow contract version would have rejected, by product, contract and version.
pub const SHADOW_REJECTIONS_TOTAL: &str = "meshguard_shadow_rejections_total";
/// Records whose `unique:` key repeats an earlier record's within the horizon, by product,
/// contract and topic (dead-lettered or only counted, as the contract says).
pub const DUPLICATES_TOTAL: &str = "meshguard_duplicates_total";
/// Failed business rules by product, contract, version, rule and severity (`error` rejects, `warn` counts).
pub const RULE_VIOLATIONS_TOTAL: &str = "meshguard_rule_violations_total";

/// The keyword label: the JSON Schema keywords and meshguard's own (`decode`, `avro`) pass; any
/// other string (a custom keyword) is folded into `other`, so the label set stays small.
pub fn keyword_label(keyword: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "additionalItems",
        "additionalProperties",
        "anyOf",
        "const",
        "contains",
        "contentEncoding",
        "contentMediaType",
        "enum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "falseSchema",
        "format",
        "maxItems",
        "maximum",
        "maxLength",
        "maxProperties",
        "minItems",
        "minimum",
        "minLength",
        "minProperties",
        "multipleOf",
        "not",
        "oneOf",
        "pattern",
        "propertyNames",
        "required",
        "type",
        "uniqueItems",
        "$ref",
        "decode",
        "avro",
        "schema",
        "rule",
        "version",
        "unique",
    ];
    KNOWN.iter().find(|k| **k == keyword).copied().unwrap_or("other")
}

/// API requests by route template, method and status.
pub const API_REQUESTS_TOTAL: &str = "meshguard_api_requests_total";
/// API request latency by route template.
pub const API_REQUEST_SECONDS: &str = "meshguard_api_request_seconds";
/// Denied API accesses (401 and 403) by product and role.
pub const ACCESS_DENIALS_TOTAL: &str = "meshguard_access_denials_total";
/// Requests without valid credentials refused with 429 (over the per-address limit).
pub const API_RATE_LIMITED_TOTAL: &str = "meshguard_api_rate_limited_total";
/// Connections refused because `api.max_connections` were open.
pub const API_CONNECTIONS_REFUSED_TOTAL: &str = "meshguard_api_connections_refused_total";
/// Documents the materializer wrote to MongoDB from `topics.records`, by outcome (`written`,
/// `unreadable`: an entry that does not parse, skipped and logged).
pub const MATERIALIZED_TOTAL: &str = "meshguard_materialized_documents_total";
/// How far behind the stream the document store is: now minus the time the newest entry the
/// materializer wrote was produced (0 when it has read everything).
pub const MATERIALIZE_LAG_SECONDS: &str = "meshguard_materialize_lag_seconds";
/// Revision of each data product in force, when the catalog comes from MongoDB
/// (`products.source = "mongodb"`; 0 once a product is retired).
pub const CATALOG_REVISION: &str = "meshguard_catalog_revision";
/// Stored catalog revisions refused (they do not compile, or `run` cannot switch to them): the
/// revision in force stays.
pub const CATALOG_REFUSALS_TOTAL: &str = "meshguard_catalog_refusals_total";
