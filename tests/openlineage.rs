//! meshguard's OpenLineage events against the OpenLineage spec, offline.
//!
//! Every event [`run_event`] can build (each event type, with and without inputs, outputs and an
//! error) must validate against `spec/OpenLineage.json` (draft 2020-12, formats asserted). The core
//! schema only checks facets loosely (any object with `_producer` and `_schemaURL`), so each facet
//! is ALSO validated against the facet schema its `_schemaURL` names: the URL must be a facet
//! file's `$id` + `#/$defs/<FacetName>`, the facet's key must be the one that file declares, and
//! the facet must be valid there.
//!
//! The spec lives outside the crate, in `../shared/conformance/openlineage/spec/` (see
//! `../shared/conformance/README.md`). The schemas reference each other by `https://openlineage.io/`
//! URLs; [`SpecRetriever`] serves those from the files whose `$id` they are, and nothing touches
//! the network. A missing spec folder fails the test, naming where it looked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Retrieve, Uri, Validator};
use meshguard::lineage::openlineage::{Assertion, EventType, Output, PRODUCER, Run, SCHEMA_URL, TopicQuality, run_event};
use serde_json::{Value, json};
use time::macros::datetime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ALL_TYPES: [EventType; 5] = [EventType::Start, EventType::Running, EventType::Complete, EventType::Abort, EventType::Fail];

fn spec_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/openlineage/spec")
}

/// Serves `https://openlineage.io/spec/...` URLs from the spec files whose `$id` they are.
#[derive(Debug, Clone)]
struct SpecRetriever {
    by_id: Arc<HashMap<String, PathBuf>>,
}

impl Retrieve for SpecRetriever {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, BoxError> {
        let url = uri.as_str();
        let base = url.split('#').next().unwrap_or(url);
        let path = self.by_id.get(base).ok_or_else(|| format!("no schema file in the spec has $id {base}"))?;
        read_json(path)
    }
}

fn read_json(path: &Path) -> Result<Value, BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// The loaded spec: the core validator, every schema file by `$id`, and compiled facet validators.
struct Spec {
    core_id: String,
    core: Validator,
    retriever: SpecRetriever,
    /// `$id` → the file's JSON.
    docs: HashMap<String, Value>,
    /// Compiled validators by schema (a `_schemaURL`, or a file `$id` for the whole file).
    compiled: HashMap<String, Validator>,
}

impl Spec {
    /// Loads `root/OpenLineage.json` and `root/facets/*.json`, or says what is missing where.
    fn load(root: &Path) -> Result<Self, String> {
        let core_path = root.join("OpenLineage.json");
        let facets_dir = root.join("facets");
        if !core_path.is_file() || !facets_dir.is_dir() {
            return Err(format!(
                "OpenLineage spec not found: looked for {} and {} (see ../shared/conformance/README.md)",
                core_path.display(),
                facets_dir.display()
            ));
        }
        let mut files = vec![core_path.clone()];
        let entries = std::fs::read_dir(&facets_dir).map_err(|e| format!("{}: {e}", facets_dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", facets_dir.display()))?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                files.push(path);
            }
        }
        let mut by_id = HashMap::new();
        let mut docs = HashMap::new();
        for path in files {
            let doc = read_json(&path).map_err(|e| e.to_string())?;
            let id = doc["$id"].as_str().ok_or_else(|| format!("{}: no $id", path.display()))?.to_owned();
            assert_eq!(doc["$schema"], "https://json-schema.org/draft/2020-12/schema", "{}: not draft 2020-12", path.display());
            if let Some(previous) = by_id.insert(id.clone(), path.clone()) {
                return Err(format!("$id {id} is declared by both {} and {}", previous.display(), path.display()));
            }
            let _ = docs.insert(id, doc);
        }
        if docs.len() < 20 {
            return Err(format!("only {} schema files under {}: the spec is incomplete", docs.len(), root.display()));
        }
        let core_doc = read_json(&core_path).map_err(|e| e.to_string())?;
        let core_id = core_doc["$id"].as_str().unwrap_or_default().to_owned();
        let retriever = SpecRetriever { by_id: Arc::new(by_id) };
        let core = compile(&core_doc, &retriever).map_err(|e| format!("{}: {e}", core_path.display()))?;
        Ok(Self { core_id, core, retriever, docs, compiled: HashMap::new() })
    }

    fn validator(&mut self, schema_url: &str) -> Result<&Validator, String> {
        if !self.compiled.contains_key(schema_url) {
            let schema = json!({ "$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": schema_url });
            let validator = compile(&schema, &self.retriever).map_err(|e| format!("{schema_url}: {e}"))?;
            let _ = self.compiled.insert(schema_url.to_owned(), validator);
        }
        self.compiled.get(schema_url).ok_or_else(|| format!("{schema_url}: not compiled"))
    }

    /// Problems of `event` against the core schema, as text.
    fn core_errors(&self, event: &Value) -> Vec<String> {
        self.core.iter_errors(event).map(|e| format!("core schema: at {}: {e}", e.instance_path())).collect()
    }

    /// Problems of every facet of `event` against its own facet schema, as text.
    fn facet_errors(&mut self, event: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        for (place, kind, key, facet) in facets_of(event) {
            if let Err(problem) = self.check_facet(kind, &key, &facet) {
                problems.push(format!("{place}.{key}: {problem}"));
            }
        }
        problems
    }

    fn check_facet(&mut self, kind: &str, key: &str, facet: &Value) -> Result<(), String> {
        let producer = facet.get("_producer").and_then(Value::as_str).ok_or("no _producer")?;
        if producer != PRODUCER {
            return Err(format!("_producer is {producer}, not {PRODUCER}"));
        }
        let url = facet.get("_schemaURL").and_then(Value::as_str).ok_or("no _schemaURL")?;
        let (id, fragment) = url.split_once('#').ok_or_else(|| format!("_schemaURL {url} has no #/$defs/<Facet>"))?;
        let doc = self.docs.get(id).ok_or_else(|| format!("_schemaURL {url}: no facet schema has $id {id}"))?;
        let name = fragment.strip_prefix("/$defs/").ok_or_else(|| format!("_schemaURL {url}: fragment is not /$defs/<Facet>"))?;
        if doc["$defs"].get(name).is_none() {
            return Err(format!("_schemaURL {url}: {id} defines no {name}"));
        }
        let declared = &doc["properties"][key]["$ref"];
        if declared != &Value::from(format!("#/$defs/{name}")) {
            return Err(format!("{id} declares {name} under another key than {key:?} (its {key:?} is {declared})"));
        }
        // The facet's kind follows from where it sits: run, job, dataset, input dataset.
        let kind_ok = match kind {
            "dataset" => name.ends_with("DatasetFacet") && !name.ends_with("InputDatasetFacet") && !name.ends_with("OutputDatasetFacet"),
            other => name.ends_with(other),
        };
        if !kind_ok {
            return Err(format!("{name} is not a {kind} facet"));
        }
        let messages = |v: &Validator, instance: &Value| -> Vec<String> {
            v.iter_errors(instance).map(|e| format!("at {}: {e}", e.instance_path())).collect()
        };
        let mut problems = messages(self.validator(url)?, facet);
        // And the whole facet file, with the facet under its key.
        let wrapped = json!({ key: facet });
        problems.extend(messages(self.validator(id)?, &wrapped));
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// Everything wrong with `event`: core schema, facet schemas, and meshguard's own rules.
    fn errors(&mut self, event: &Value) -> Vec<String> {
        let mut problems = self.core_errors(event);
        problems.extend(self.facet_errors(event));
        let schema_url = event["schemaURL"].as_str().unwrap_or_default();
        if schema_url != format!("{}#/$defs/RunEvent", self.core_id) {
            problems.push(format!("schemaURL {schema_url} is not {}#/$defs/RunEvent", self.core_id));
        }
        problems
    }
}

fn compile(schema: &Value, retriever: &SpecRetriever) -> Result<Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_retriever(retriever.clone())
        .build(schema)
        .map_err(|e| e.to_string())
}

fn load() -> Spec {
    match Spec::load(&spec_root()) {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    }
}

/// Every facet in `event`: `(where, kind suffix, key, facet)`.
fn facets_of(event: &Value) -> Vec<(String, &'static str, String, Value)> {
    let mut found = Vec::new();
    let mut collect = |place: String, kind: &'static str, facets: &Value| {
        if let Some(map) = facets.as_object() {
            for (key, facet) in map {
                found.push((place.clone(), kind, key.clone(), facet.clone()));
            }
        }
    };
    collect("run.facets".to_owned(), "RunFacet", &event["run"]["facets"]);
    collect("job.facets".to_owned(), "JobFacet", &event["job"]["facets"]);
    for side in ["inputs", "outputs"] {
        for (i, dataset) in event[side].as_array().into_iter().flatten().enumerate() {
            collect(format!("{side}[{i}].facets"), "dataset", &dataset["facets"]);
            collect(format!("{side}[{i}].inputFacets"), "InputDatasetFacet", &dataset["inputFacets"]);
            collect(format!("{side}[{i}].outputFacets"), "OutputDatasetFacet", &dataset["outputFacets"]);
        }
    }
    found
}

fn run() -> Run {
    Run {
        run_id: uuid::Uuid::new_v4(),
        job_namespace: "meshguard".to_owned(),
        job_name: "meshguard.governance".to_owned(),
        started_at: datetime!(2025-03-01 08:00:00.5 +02:00),
    }
}

fn assertion(text: &str, success: bool, column: Option<&str>) -> Assertion {
    Assertion { assertion: text.to_owned(), success, column: column.map(str::to_owned) }
}

/// A measured topic with failing and passing assertions, and a bare one with nothing known.
fn topics() -> Vec<TopicQuality> {
    vec![
        TopicQuality {
            namespace: "kafka://broker-1:9092".to_owned(),
            topic: "payments.transactions".to_owned(),
            product: "payments".to_owned(),
            owner: "team:payments".to_owned(),
            contract: "payments-transactions".to_owned(),
            contract_version: "1.2.0".to_owned(),
            row_count: 2_000,
            invalid_count: 30,
            completeness_ratio: Some(0.995),
            freshness_p99_seconds: Some(0.42),
            accuracy_ratio: Some(0.999_99),
            null_counts: vec![("customer_id".to_owned(), 7), ("amount".to_owned(), 3), ("customer_id".to_owned(), 3)],
            assertions: vec![
                assertion("freshness <= 1s", true, None),
                assertion("completeness >= 100%", false, None),
                assertion("accuracy >= 99.999%", true, None),
                assertion("validity >= 99%", false, None),
                assertion("not_null", false, Some("customer_id")),
            ],
        },
        TopicQuality {
            namespace: "kafka://broker-1:9092".to_owned(),
            topic: "loans.applications".to_owned(),
            product: "loans".to_owned(),
            owner: String::new(),
            contract: "loans-applications".to_owned(),
            contract_version: String::new(),
            row_count: 0,
            invalid_count: 0,
            completeness_ratio: None,
            freshness_p99_seconds: None,
            accuracy_ratio: None,
            null_counts: Vec::new(),
            assertions: vec![assertion("freshness <= 1s", true, None), assertion("validity >= 99%", true, None)],
        },
    ]
}

fn outputs() -> Vec<Output> {
    vec![
        Output { namespace: "kafka://broker-1:9092".to_owned(), name: "datamesh.deadletter".to_owned() },
        Output { namespace: "kafka://broker-1:9092".to_owned(), name: "datamesh.quality.alerts".to_owned() },
        Output { namespace: "mongodb://mongo:27017".to_owned(), name: "datamesh.data_lineage".to_owned() },
    ]
}

/// Every combination: event type × (no inputs, one, both) × (no outputs, all) × (no error, error).
fn all_events(run: &Run) -> Vec<(String, EventType, bool, Value)> {
    let topics = topics();
    let outputs = outputs();
    let input_sets: [&[TopicQuality]; 3] = [&[], &topics[..1], &topics];
    let output_sets: [&[Output]; 2] = [&[], &outputs];
    let at = datetime!(2025-03-01 06:15:30.123456789 UTC);
    let mut events = Vec::new();
    for event_type in ALL_TYPES {
        for inputs in input_sets {
            for outputs in output_sets {
                for error in [None, Some("broker transport failure: connection refused")] {
                    let label = format!("{event_type} inputs={} outputs={} error={}", inputs.len(), outputs.len(), error.is_some());
                    let event = run_event(run, event_type, at, inputs, outputs, error);
                    events.push((label, event_type, error.is_some(), event));
                }
            }
        }
    }
    events
}

#[test]
fn every_event_validates_against_the_spec_and_its_facet_schemas() {
    let mut spec = load();
    let run = run();
    let events = all_events(&run);
    assert_eq!(events.len(), 60);
    let mut failures = Vec::new();
    let mut facets_checked = 0;
    for (label, _, _, event) in &events {
        facets_checked += facets_of(event).len();
        for problem in spec.errors(event) {
            failures.push(format!("{label}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}\nfirst event:\n{}",
        failures.len(),
        failures.join("\n"),
        serde_json::to_string_pretty(&events[0].3).unwrap_or_default()
    );
    assert!(facets_checked > 300, "only {facets_checked} facets checked");
}

#[test]
fn events_say_what_meshguard_did() {
    let run = run();
    for (label, event_type, with_error, event) in all_events(&run) {
        assert_eq!(event["eventType"], event_type.as_str(), "{label}");
        assert_eq!(event["producer"], PRODUCER, "{label}");
        assert_eq!(event["schemaURL"], SCHEMA_URL, "{label}");
        assert_eq!(event["eventTime"], "2025-03-01T06:15:30.123456789Z", "{label}");
        assert_eq!(event["run"]["runId"], run.run_id.to_string(), "{label}");
        assert_eq!(event["job"]["namespace"], "meshguard", "{label}");
        assert_eq!(event["job"]["name"], "meshguard.governance", "{label}");

        let job_type = &event["job"]["facets"]["jobType"];
        assert_eq!(job_type["processingType"], "STREAMING", "{label}");
        assert_eq!(job_type["integration"], "MESHGUARD", "{label}");
        assert_eq!(job_type["jobType"], "JOB", "{label}");

        let run_facets = &event["run"]["facets"];
        assert_eq!(run_facets["processing_engine"]["name"], "meshguard", "{label}");
        assert_eq!(run_facets["processing_engine"]["version"], env!("CARGO_PKG_VERSION"), "{label}");
        assert_eq!(run_facets["nominalTime"]["nominalStartTime"], "2025-03-01T08:00:00.5+02:00", "{label}");
        let wants_error = with_error && matches!(event_type, EventType::Fail | EventType::Abort);
        assert_eq!(run_facets.get("errorMessage").is_some(), wants_error, "{label}");
        if wants_error {
            assert_eq!(run_facets["errorMessage"]["message"], "broker transport failure: connection refused", "{label}");
            assert_eq!(run_facets["errorMessage"]["programmingLanguage"], "RUST", "{label}");
        }

        for dataset in event["inputs"].as_array().into_iter().flatten() {
            assert_eq!(dataset["facets"]["datasetType"]["datasetType"], "TOPIC", "{label}");
            let measured = event_type != EventType::Start;
            assert_eq!(dataset.get("inputFacets").is_some(), measured, "{label}: START carries no metrics");
            assert_eq!(dataset["facets"].get("dataQualityAssertions").is_some(), measured, "{label}");
        }
        let outputs = event["outputs"].as_array().map_or(0, Vec::len);
        assert!(outputs == 0 || outputs == 3, "{label}");
    }
}

#[test]
fn running_event_carries_the_window_quality() {
    let run = run();
    let event = run_event(&run, EventType::Running, datetime!(2025-03-01 06:15:30 UTC), &topics(), &outputs(), None);
    let measured = &event["inputs"][0];
    assert_eq!(measured["namespace"], "kafka://broker-1:9092");
    assert_eq!(measured["name"], "payments.transactions");
    let metrics = &measured["inputFacets"]["dataQualityMetrics"];
    assert_eq!(metrics["rowCount"], 2_000);
    assert_eq!(metrics["columnMetrics"], json!({ "amount": { "nullCount": 3 }, "customer_id": { "nullCount": 10 } }));
    assert_eq!(measured["facets"]["ownership"]["owners"], json!([{ "name": "team:payments" }]));
    assert_eq!(
        measured["facets"]["tags"]["tags"],
        json!([
            { "key": "product", "value": "payments", "source": "MESHGUARD" },
            { "key": "contract", "value": "payments-transactions", "source": "MESHGUARD" },
            { "key": "contractVersion", "value": "1.2.0", "source": "MESHGUARD" },
        ])
    );
    assert_eq!(
        measured["facets"]["dataQualityAssertions"]["assertions"],
        json!([
            { "assertion": "freshness <= 1s", "success": true, "expected": "<= 1s", "actual": "0.42s" },
            { "assertion": "completeness >= 100%", "success": false, "expected": ">= 100%", "actual": "99.5%" },
            { "assertion": "accuracy >= 99.999%", "success": true, "expected": ">= 99.999%", "actual": "99.999%" },
            { "assertion": "validity >= 99%", "success": false, "expected": ">= 99%", "actual": "98.5%" },
            { "assertion": "not_null", "success": false, "column": "customer_id" },
        ])
    );

    // Nothing measured: no owner, no ratios, no rows.
    let bare = &event["inputs"][1];
    assert!(bare["facets"].get("ownership").is_none());
    assert_eq!(bare["inputFacets"]["dataQualityMetrics"]["rowCount"], 0);
    assert_eq!(bare["inputFacets"]["dataQualityMetrics"]["columnMetrics"], json!({}));
    assert_eq!(
        bare["facets"]["dataQualityAssertions"]["assertions"],
        json!([
            { "assertion": "freshness <= 1s", "success": true, "expected": "<= 1s" },
            { "assertion": "validity >= 99%", "success": true, "expected": ">= 99%" },
        ])
    );

    // Kafka outputs are topics; the MongoDB store is just named.
    assert_eq!(event["outputs"][0]["facets"]["datasetType"]["datasetType"], "TOPIC");
    assert_eq!(event["outputs"][2], json!({ "namespace": "mongodb://mongo:27017", "name": "datamesh.data_lineage" }));
}

#[test]
fn the_checks_reject_bad_events() {
    let mut spec = load();
    let run = run();
    let good = run_event(&run, EventType::Running, datetime!(2025-03-01 06:15:30 UTC), &topics(), &outputs(), None);
    assert!(spec.errors(&good).is_empty(), "{:?}", spec.errors(&good));

    let mutated = |change: &dyn Fn(&mut Value)| {
        let mut event = good.clone();
        change(&mut event);
        event
    };

    // The core schema: an unknown event type, a run id that is no UUID, a facet without _producer.
    let bogus = mutated(&|e| e["eventType"] = json!("BOGUS"));
    assert!(!spec.core_errors(&bogus).is_empty(), "eventType BOGUS accepted");
    let bad_id = mutated(&|e| e["run"]["runId"] = json!("run-42"));
    assert!(!spec.core_errors(&bad_id).is_empty(), "runId run-42 accepted (formats not asserted?)");
    let bad_time = mutated(&|e| e["eventTime"] = json!("2025-03-01 06:15:30"));
    assert!(!spec.core_errors(&bad_time).is_empty(), "eventTime without T and offset accepted");
    let no_producer = mutated(&|e| {
        if let Some(facet) = e["run"]["facets"]["processing_engine"].as_object_mut() {
            let _ = facet.remove("_producer");
        }
    });
    assert!(!spec.core_errors(&no_producer).is_empty(), "run facet without _producer accepted");
    assert!(!spec.facet_errors(&no_producer).is_empty(), "facet without _producer passed its facet schema");

    // The facet schemas catch what the core schema lets through.
    let no_column_metrics = mutated(&|e| {
        if let Some(facet) = e["inputs"][0]["inputFacets"]["dataQualityMetrics"].as_object_mut() {
            let _ = facet.remove("columnMetrics");
        }
    });
    assert!(spec.core_errors(&no_column_metrics).is_empty(), "the core schema checks facet contents after all?");
    let problems = spec.facet_errors(&no_column_metrics);
    assert!(problems.iter().any(|p| p.contains("columnMetrics")), "{problems:?}");

    let string_rows = mutated(&|e| e["inputs"][0]["inputFacets"]["dataQualityMetrics"]["rowCount"] = json!("2000"));
    assert!(spec.core_errors(&string_rows).is_empty());
    assert!(!spec.facet_errors(&string_rows).is_empty(), "rowCount as a string passed");

    let no_success = mutated(&|e| {
        if let Some(item) = e["inputs"][0]["facets"]["dataQualityAssertions"]["assertions"][0].as_object_mut() {
            let _ = item.remove("success");
        }
    });
    assert!(!spec.facet_errors(&no_success).is_empty(), "assertion without success passed");

    // A _schemaURL must name a real facet file, its definition, and the key it sits under.
    let wrong_version = mutated(&|e| {
        e["job"]["facets"]["jobType"]["_schemaURL"] =
            json!("https://openlineage.io/spec/facets/9-9-9/JobTypeJobFacet.json#/$defs/JobTypeJobFacet");
    });
    assert!(!spec.facet_errors(&wrong_version).is_empty(), "unknown facet schema version passed");
    let no_fragment = mutated(&|e| {
        e["job"]["facets"]["jobType"]["_schemaURL"] = json!("https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json");
    });
    assert!(!spec.facet_errors(&no_fragment).is_empty(), "_schemaURL without #/$defs/<Facet> passed");
    let wrong_key = mutated(&|e| {
        let facet = e["run"]["facets"]["processing_engine"].clone();
        e["run"]["facets"]["processingEngine"] = facet;
    });
    assert!(!spec.facet_errors(&wrong_key).is_empty(), "facet under the wrong key passed");
    let wrong_place = mutated(&|e| {
        let facet = e["job"]["facets"]["jobType"].clone();
        e["run"]["facets"]["jobType"] = facet;
    });
    assert!(!spec.facet_errors(&wrong_place).is_empty(), "a job facet among run facets passed");

    // A wrong top-level schemaURL.
    let old_schema = mutated(&|e| e["schemaURL"] = json!("https://openlineage.io/spec/1-0-5/OpenLineage.json#/$defs/RunEvent"));
    assert!(!spec.errors(&old_schema).is_empty(), "schemaURL of another spec version passed");
}

#[test]
fn a_missing_spec_fails_and_says_where_it_looked() {
    let nowhere = spec_root().join("no-such-folder");
    match Spec::load(&nowhere) {
        Ok(_) => panic!("loaded a spec from {}", nowhere.display()),
        Err(e) => assert!(e.contains(&nowhere.join("OpenLineage.json").display().to_string()), "{e}"),
    }
}

mod common;

/// What `meshguard run` itself emits (START, RUNNING per window, COMPLETE on SIGTERM) is valid
/// against the spec and every facet schema.
#[tokio::test(flavor = "multi_thread")]
async fn every_event_meshguard_run_emits_validates() {
    use common::*;
    let Scenario { kafka, topics, names, products, .. } = Scenario::payments(&["pay-ol"], 1).await;
    let topic = topics.concat();
    let _ = produce_payments(&kafka, &[&topic], 500, 0.05, 51).await;
    let mut service = Service::start(
        &kafka,
        products.dir.path(),
        &names,
        &[("MESHGUARD__QUALITY__WINDOW_MS", "1000"), ("MESHGUARD__MYSQL__ENABLED", "false")],
    );
    wait_committed(&kafka, &names.group, &[&topic], 1, 500, std::time::Duration::from_secs(60));
    let _ = read_json_until(&kafka, &names.lineage, std::time::Duration::from_secs(30), |e| {
        e.iter()
            .any(|e| e["eventType"] == "RUNNING" && e["inputs"].as_array().is_some_and(|i| i.iter().any(|i| i["name"] == topic.as_str())))
    });
    service.signal(15);
    assert_eq!(service.wait(std::time::Duration::from_secs(30)), Some(0));
    let events =
        read_json_until(&kafka, &names.lineage, std::time::Duration::from_secs(30), |e| e.iter().any(|e| e["eventType"] == "COMPLETE"));
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["eventType"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"START"));
    assert_eq!(kinds.last(), Some(&"COMPLETE"));
    assert!(kinds.contains(&"RUNNING"));
    let run_ids: std::collections::HashSet<&str> = events.iter().filter_map(|e| e["run"]["runId"].as_str()).collect();
    assert_eq!(run_ids.len(), 1, "one run per instance");
    let mut spec = load();
    let mut failures = Vec::new();
    for e in &events {
        for problem in spec.errors(e) {
            failures.push(problem);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
