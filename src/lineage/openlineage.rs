//! OpenLineage `RunEvent`s for meshguard's streaming job.
//!
//! One meshguard instance is one run of one STREAMING job (`meshguard.<group id>` in namespace
//! `meshguard`): a START event when it joins the group, periodic RUNNING events whose input
//! datasets (the contract-bound Kafka topics) carry the window's data-quality metrics and
//! assertions, and COMPLETE, ABORT or FAIL at shutdown. [`run_event`] builds any of them as a
//! [`serde_json::Value`] ready to publish.
//!
//! # Facets
//!
//! Every facet names its schema as the `$id` of the facet's JSON Schema file in OpenLineage
//! 2-0-2 followed by `#/$defs/<FacetName>`, and carries `_producer` = [`PRODUCER`].
//!
//! | where | key | facet (version) | when |
//! | --- | --- | --- | --- |
//! | `job.facets` | `jobType` | `JobTypeJobFacet` (2-0-4) | always: `STREAMING`, `MESHGUARD`, `JOB` |
//! | `job.facets` | `documentation` | `DocumentationJobFacet` (1-1-0) | always |
//! | `run.facets` | `processing_engine` | `ProcessingEngineRunFacet` (1-1-1) | always: `meshguard` and the crate version |
//! | `run.facets` | `nominalTime` | `NominalTimeRunFacet` (1-0-1) | always: `nominalStartTime` = [`Run::started_at`] |
//! | `run.facets` | `errorMessage` | `ErrorMessageRunFacet` (1-0-1) | FAIL and ABORT with an error |
//! | input `facets` | `datasetType` | `DatasetTypeDatasetFacet` (1-0-1) | always: `TOPIC` |
//! | input `facets` | `documentation` | `DocumentationDatasetFacet` (1-1-0) | always: product and contract |
//! | input `facets` | `ownership` | `OwnershipDatasetFacet` (1-0-1) | when the owner is known |
//! | input `facets` | `tags` | `TagsDatasetFacet` (1-0-0) | product, contract, contract version |
//! | input `facets` | `dataQualityAssertions` | `DataQualityAssertionsDatasetFacet` (1-1-0) | every event but START |
//! | input `inputFacets` | `dataQualityMetrics` | `DataQualityMetricsInputDatasetFacet` (1-0-3) | every event but START |
//! | output `facets` | `datasetType` | `DatasetTypeDatasetFacet` (1-0-1) | `kafka://` outputs: `TOPIC` |
//!
//! START carries the inputs without quality facets: nothing has been measured yet. Assertions
//! of the form `<metric> <op> <threshold>` (`"completeness >= 100%"`) also get `expected`
//! (`">= 100%"`) and, for the metrics meshguard measures (freshness, completeness, accuracy,
//! validity), `actual` in the threshold's unit (`"99.987%"`, `"0.42s"`).

use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// The `producer` (and every facet's `_producer`) URI.
pub const PRODUCER: &str = "https://github.com/meshguard/meshguard";

/// The event's `schemaURL`: the `$id` of the OpenLineage 2-0-2 `OpenLineage.json` + the
/// `RunEvent` definition.
pub const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// `_schemaURL` of each facet: the facet schema's `$id` + `#/$defs/<FacetName>`.
const JOB_TYPE_URL: &str = "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const DOCUMENTATION_JOB_URL: &str = "https://openlineage.io/spec/facets/1-1-0/DocumentationJobFacet.json#/$defs/DocumentationJobFacet";
const PROCESSING_ENGINE_URL: &str =
    "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
const NOMINAL_TIME_URL: &str = "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet";
const ERROR_MESSAGE_URL: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const DATASET_TYPE_URL: &str = "https://openlineage.io/spec/facets/1-0-1/DatasetTypeDatasetFacet.json#/$defs/DatasetTypeDatasetFacet";
const DOCUMENTATION_DATASET_URL: &str =
    "https://openlineage.io/spec/facets/1-1-0/DocumentationDatasetFacet.json#/$defs/DocumentationDatasetFacet";
const OWNERSHIP_URL: &str = "https://openlineage.io/spec/facets/1-0-1/OwnershipDatasetFacet.json#/$defs/OwnershipDatasetFacet";
const TAGS_DATASET_URL: &str = "https://openlineage.io/spec/facets/1-0-0/TagsDatasetFacet.json#/$defs/TagsDatasetFacet";
const DATA_QUALITY_ASSERTIONS_URL: &str =
    "https://openlineage.io/spec/facets/1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";
const DATA_QUALITY_METRICS_URL: &str =
    "https://openlineage.io/spec/facets/1-0-3/DataQualityMetricsInputDatasetFacet.json#/$defs/DataQualityMetricsInputDatasetFacet";

/// `jobType.integration` and the `source` of meshguard's dataset tags.
const INTEGRATION: &str = "MESHGUARD";

const JOB_DESCRIPTION: &str = "meshguard data-contract governance: validates every record on the contract-bound \
    Kafka topics against its data product's contract, measures completeness, freshness, accuracy and validity \
    against the product's SLAs, and routes dead letters, quality alerts and records to side topics and MongoDB.";

/// The run state transition an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The instance joined its consumer group.
    Start,
    /// A periodic report while consuming; carries the window's quality.
    Running,
    /// Clean shutdown.
    Complete,
    /// Stopped before finishing (a signal, a lost group).
    Abort,
    /// Stopped by an error.
    Fail,
}

impl EventType {
    /// The spec's `eventType` value (`START`, `RUNNING`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Start => "START",
            Self::Running => "RUNNING",
            Self::Complete => "COMPLETE",
            Self::Abort => "ABORT",
            Self::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of the streaming job: one meshguard instance, from start to shutdown.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run's id, the same on every event of the run (random v4).
    pub run_id: Uuid,
    /// The job namespace, e.g. `meshguard`.
    pub job_namespace: String,
    /// The job name, e.g. `meshguard.<group id>`.
    pub job_name: String,
    /// When the instance started; reported as the run's `nominalTime.nominalStartTime`.
    pub started_at: OffsetDateTime,
}

impl Run {
    /// A new run with a fresh random id.
    pub fn new(job_namespace: impl Into<String>, job_name: impl Into<String>, started_at: OffsetDateTime) -> Self {
        Self { run_id: Uuid::new_v4(), job_namespace: job_namespace.into(), job_name: job_name.into(), started_at }
    }
}

/// One input dataset (a Kafka topic bound to a contract) with the quality measured in a window.
#[derive(Debug, Clone)]
pub struct TopicQuality {
    /// `kafka://<host:port>` of the first bootstrap server.
    pub namespace: String,
    /// The topic (the dataset name).
    pub topic: String,
    /// The data product the topic belongs to.
    pub product: String,
    /// The product's owner (reported as the dataset owner).
    pub owner: String,
    /// The contract bound to the topic.
    pub contract: String,
    /// The contract's version.
    pub contract_version: String,
    /// Records evaluated in the window.
    pub row_count: u64,
    /// Records that failed decoding or their contract in the window.
    pub invalid_count: u64,
    /// Share of records with every required field, `0.0..=1.0`.
    pub completeness_ratio: Option<f64>,
    /// 99th percentile of event-to-check delay, in seconds.
    pub freshness_p99_seconds: Option<f64>,
    /// Share of accurate records, `0.0..=1.0`.
    pub accuracy_ratio: Option<f64>,
    /// Missing required fields by column (`columnMetrics.<column>.nullCount`).
    pub null_counts: Vec<(String, u64)>,
    /// SLA checks evaluated on the window.
    pub assertions: Vec<Assertion>,
}

/// One SLA check on a window, e.g. `"freshness <= 1s"` or `"completeness >= 100%"`.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// What was checked, as `<metric> <op> <threshold>`.
    pub assertion: String,
    /// Whether the window met it.
    pub success: bool,
    /// The column it refers to; `None` for the whole dataset.
    pub column: Option<String>,
}

/// An output dataset (dead-letter topic, alerts topic, MongoDB record store).
#[derive(Debug, Clone)]
pub struct Output {
    /// e.g. `kafka://broker:9092` or `mongodb://host:27017`.
    pub namespace: String,
    /// e.g. the topic, or `<database>.<collection>`.
    pub name: String,
}

/// Builds one OpenLineage `RunEvent` of `run`.
///
/// `inputs` carry quality facets on every event type but [`EventType::Start`]. `error` becomes
/// the `errorMessage` run facet on [`EventType::Fail`] and [`EventType::Abort`]; it is ignored
/// on the other types.
pub fn run_event(
    run: &Run,
    event_type: EventType,
    event_time: OffsetDateTime,
    inputs: &[TopicQuality],
    outputs: &[Output],
    error: Option<&str>,
) -> Value {
    let measured = event_type != EventType::Start;
    json!({
        "eventType": event_type.as_str(),
        "eventTime": rfc3339(event_time),
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
        "run": {
            "runId": run.run_id.to_string(),
            "facets": run_facets(run, event_type, error),
        },
        "job": {
            "namespace": run.job_namespace,
            "name": run.job_name,
            "facets": job_facets(),
        },
        "inputs": inputs.iter().map(|q| input_dataset(q, measured)).collect::<Vec<_>>(),
        "outputs": outputs.iter().map(output_dataset).collect::<Vec<_>>(),
    })
}

/// A facet: `_producer`, `_schemaURL`, then `body`'s fields.
fn facet(schema_url: &str, body: Value) -> Value {
    let mut map = Map::new();
    let _ = map.insert("_producer".to_owned(), Value::from(PRODUCER));
    let _ = map.insert("_schemaURL".to_owned(), Value::from(schema_url));
    if let Value::Object(fields) = body {
        map.extend(fields);
    }
    Value::Object(map)
}

fn job_facets() -> Value {
    json!({
        "jobType": facet(JOB_TYPE_URL, json!({
            "processingType": "STREAMING",
            "integration": INTEGRATION,
            "jobType": "JOB",
        })),
        "documentation": facet(DOCUMENTATION_JOB_URL, json!({
            "description": JOB_DESCRIPTION,
            "contentType": "text/plain",
        })),
    })
}

fn run_facets(run: &Run, event_type: EventType, error: Option<&str>) -> Value {
    let mut facets = Map::new();
    let _ = facets.insert(
        "processing_engine".to_owned(),
        facet(PROCESSING_ENGINE_URL, json!({ "name": "meshguard", "version": env!("CARGO_PKG_VERSION") })),
    );
    let _ = facets.insert("nominalTime".to_owned(), facet(NOMINAL_TIME_URL, json!({ "nominalStartTime": rfc3339(run.started_at) })));
    if let (EventType::Fail | EventType::Abort, Some(message)) = (event_type, error) {
        let _ = facets
            .insert("errorMessage".to_owned(), facet(ERROR_MESSAGE_URL, json!({ "message": message, "programmingLanguage": "RUST" })));
    }
    Value::Object(facets)
}

fn input_dataset(q: &TopicQuality, measured: bool) -> Value {
    let mut facets = Map::new();
    let _ = facets.insert("datasetType".to_owned(), facet(DATASET_TYPE_URL, json!({ "datasetType": "TOPIC" })));
    let _ = facets.insert(
        "documentation".to_owned(),
        facet(DOCUMENTATION_DATASET_URL, json!({ "description": describe(q), "contentType": "text/plain" })),
    );
    if !q.owner.trim().is_empty() {
        let _ = facets.insert("ownership".to_owned(), facet(OWNERSHIP_URL, json!({ "owners": [{ "name": q.owner }] })));
    }
    let tags: Vec<Value> = [("product", &q.product), ("contract", &q.contract), ("contractVersion", &q.contract_version)]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| json!({ "key": key, "value": value, "source": INTEGRATION }))
        .collect();
    if !tags.is_empty() {
        let _ = facets.insert("tags".to_owned(), facet(TAGS_DATASET_URL, json!({ "tags": tags })));
    }

    let mut dataset = Map::new();
    let _ = dataset.insert("namespace".to_owned(), Value::from(q.namespace.as_str()));
    let _ = dataset.insert("name".to_owned(), Value::from(q.topic.as_str()));
    if measured {
        let assertions: Vec<Value> = q.assertions.iter().map(|a| assertion(a, q)).collect();
        let _ = facets.insert("dataQualityAssertions".to_owned(), facet(DATA_QUALITY_ASSERTIONS_URL, json!({ "assertions": assertions })));
        let _ = dataset.insert(
            "inputFacets".to_owned(),
            json!({ "dataQualityMetrics": facet(DATA_QUALITY_METRICS_URL, json!({
                "rowCount": q.row_count,
                "columnMetrics": column_metrics(&q.null_counts),
            })) }),
        );
    }
    let _ = dataset.insert("facets".to_owned(), Value::Object(facets));
    Value::Object(dataset)
}

fn describe(q: &TopicQuality) -> String {
    let mut text = format!("Kafka topic {}", q.topic);
    if !q.product.is_empty() {
        text.push_str(&format!(" of data product {}", q.product));
    }
    if !q.contract.is_empty() {
        text.push_str(&format!(", governed by contract {}", q.contract));
        if !q.contract_version.is_empty() {
            text.push_str(&format!(" version {}", q.contract_version));
        }
    }
    text.push('.');
    text
}

/// `{column: {"nullCount": n}}`; a column listed twice gets the sum.
fn column_metrics(null_counts: &[(String, u64)]) -> Value {
    let mut sums: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (column, count) in null_counts {
        let sum = sums.entry(column.as_str()).or_insert(0);
        *sum = sum.saturating_add(*count);
    }
    Value::Object(sums.into_iter().map(|(column, n)| (column.to_owned(), json!({ "nullCount": n }))).collect())
}

fn assertion(a: &Assertion, q: &TopicQuality) -> Value {
    let mut item = Map::new();
    let _ = item.insert("assertion".to_owned(), Value::from(a.assertion.as_str()));
    let _ = item.insert("success".to_owned(), Value::from(a.success));
    if let Some(column) = &a.column {
        let _ = item.insert("column".to_owned(), Value::from(column.as_str()));
    }
    if let Some((metric, expected)) = split_threshold(&a.assertion) {
        let _ = item.insert("expected".to_owned(), Value::from(expected));
        if let Some(actual) = actual(metric, q) {
            let _ = item.insert("actual".to_owned(), Value::from(actual));
        }
    }
    Value::Object(item)
}

/// `"completeness >= 100%"` → `("completeness", ">= 100%")`.
fn split_threshold(assertion: &str) -> Option<(&str, &str)> {
    let (metric, rest) = assertion.trim().split_once(char::is_whitespace)?;
    let rest = rest.trim();
    let comparison = ["<=", ">=", "==", "!=", "<", ">", "="].iter().any(|op| rest.starts_with(op));
    (comparison && rest.len() > 2).then_some((metric, rest))
}

/// The measured value of `metric` in the threshold's unit, when meshguard measured it.
fn actual(metric: &str, q: &TopicQuality) -> Option<String> {
    let percent = |ratio: f64| ratio.is_finite().then(|| format!("{}%", decimal(ratio * 100.0, 6)));
    match metric.to_ascii_lowercase().as_str() {
        "freshness" => q.freshness_p99_seconds.filter(|s| s.is_finite()).map(|s| format!("{}s", decimal(s, 3))),
        "completeness" => q.completeness_ratio.and_then(percent),
        "accuracy" => q.accuracy_ratio.and_then(percent),
        "validity" if q.row_count > 0 => {
            let valid = q.row_count.saturating_sub(q.invalid_count);
            let ratio = valid as f64 / q.row_count as f64;
            percent(ratio)
        }
        _ => None,
    }
}

/// `value` with at most `places` decimals and no trailing zeros: `99.987`, `100`, `0.42`.
fn decimal(value: f64, places: usize) -> String {
    let text = format!("{value:.places$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

fn output_dataset(o: &Output) -> Value {
    let mut dataset = json!({ "namespace": o.namespace, "name": o.name });
    if o.namespace.starts_with("kafka://")
        && let Value::Object(map) = &mut dataset
    {
        let _ = map.insert("facets".to_owned(), json!({ "datasetType": facet(DATASET_TYPE_URL, json!({ "datasetType": "TOPIC" })) }));
    }
    dataset
}

/// RFC 3339 with the time's own offset; in UTC when the offset has seconds (RFC 3339 cannot
/// say those).
fn rfc3339(t: OffsetDateTime) -> String {
    if let Ok(text) = t.format(&Rfc3339) {
        return text;
    }
    let utc = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    utc.format(&Rfc3339).unwrap_or_else(|_| {
        // Only years outside 0000..=9999 get here; no RFC 3339 form exists for them.
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_split_and_measure() {
        assert_eq!(split_threshold("completeness >= 100%"), Some(("completeness", ">= 100%")));
        assert_eq!(split_threshold("freshness <= 1s"), Some(("freshness", "<= 1s")));
        assert_eq!(split_threshold("not_null"), None);
        assert_eq!(split_threshold("custom thing"), None);
        assert_eq!(decimal(99.987_000_1, 6), "99.987");
        assert_eq!(decimal(100.0, 6), "100");
        assert_eq!(decimal(0.42, 3), "0.42");
    }

    #[test]
    fn offsets_with_seconds_fall_back_to_utc() -> Result<(), Box<dyn std::error::Error>> {
        let t = OffsetDateTime::UNIX_EPOCH.to_offset(UtcOffset::from_hms(1, 0, 30)?);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00Z");
        Ok(())
    }
}
