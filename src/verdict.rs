//! One record's verdict: decode → validate → measure, with no I/O. `check` and `run` share it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::contract::tape::Tape;
use crate::contract::{AnyRecord, Contract, RecordView, RuleOutcome, RuleSeverity, SchemaEngine, Violation};
use crate::decode::{DecodeError, decode_json};
use crate::measure::{self, Completeness};

/// Where a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The bytes are not a record.
    Decode,
    /// The record breaks its contract.
    Validate,
}

impl Stage {
    /// The stable name (dead-letter header, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Validate => "validate",
        }
    }
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The failing stage.
    pub stage: Stage,
    /// A stable class: the decode class, `contract_violation` (the schema), or `rule_violation`
    /// (the schema holds, an `error` business rule does not).
    pub class: &'static str,
    /// Every violation found (one `decode` entry for undecodable bytes).
    pub violations: Vec<Violation>,
}

/// Everything learnt about one record.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `None` when valid.
    pub rejection: Option<Rejection>,
    /// The decoded record (absent when it could not be decoded, and always from
    /// [`evaluate_lean`], which keeps none).
    pub record: Option<Value>,
    /// The record id from the contract's key field.
    pub record_id: Option<String>,
    /// Required fields present.
    pub completeness: Completeness,
    /// When the event happened, per the contract's event-time fields.
    pub event_time: Option<OffsetDateTime>,
    /// Age of the event at evaluation time.
    pub freshness: Option<Duration>,
    /// Failed `warn` business rules: counted (metrics, `check`), never a rejection.
    pub warnings: Vec<Violation>,
    /// Every shadow version's verdict (empty for a contract without shadow versions): counted
    /// in metrics and quality windows, never a rejection.
    pub shadows: Vec<ShadowVerdict>,
    /// Whether the record repeats the `unique:` key of an earlier record within the horizon
    /// (set by the stream, which alone sees the records in order).
    pub duplicate: bool,
}

impl Evaluation {
    /// Whether the record holds to its contract.
    pub fn is_valid(&self) -> bool {
        self.rejection.is_none()
    }
}

/// Decodes `payload` with the contract's format.
pub fn decode(contract: &Contract, payload: &[u8]) -> Result<Value, DecodeError> {
    match &contract.engine {
        SchemaEngine::Json(_) => decode_json(payload),
        SchemaEngine::Avro(a) => a.decoder.decode(payload),
    }
}

/// Evaluates one payload against `contract` at `now`.
pub fn evaluate(contract: &Contract, payload: &[u8], now: OffsetDateTime) -> Evaluation {
    match decode(contract, payload) {
        Err(e) => Evaluation {
            rejection: Some(Rejection {
                stage: Stage::Decode,
                class: e.class.as_str(),
                violations: vec![Violation::new("", "decode", e.to_string())],
            }),
            record: None,
            record_id: None,
            completeness: Completeness { present: 0, applicable: u32::try_from(contract.required.len()).unwrap_or(u32::MAX) },
            event_time: None,
            freshness: None,
            warnings: Vec::new(),
            shadows: Vec::new(),
            duplicate: false,
        },
        Ok(record) => evaluate_record(contract, record, now),
    }
}

/// Evaluates an already decoded record (Avro container files, tests).
pub fn evaluate_record(contract: &Contract, record: Value, now: OffsetDateTime) -> Evaluation {
    let mut violations = Vec::new();
    let valid = contract.validate(&record, &mut violations);
    let mut warnings = Vec::new();
    let rejection = if valid {
        apply_rules(contract, AnyRecord::Value(&record), &mut warnings)
    } else {
        Some(Rejection { stage: Stage::Validate, class: "contract_violation", violations })
    };
    let mut eval = measure(contract, &record, rejection, now, true);
    eval.record = Some(record);
    eval.warnings = warnings;
    eval
}

/// Runs the contract's business rules on a record that holds to the schema (rules assume the
/// schema's shape, so they are not run on records the schema rejects). Failed `warn` rules go to
/// `warnings`; failed `error` rules reject the record with class `rule_violation`.
pub fn apply_rules(contract: &Contract, record: AnyRecord<'_>, warnings: &mut Vec<Violation>) -> Option<Rejection> {
    if contract.rules.is_empty() {
        return None;
    }
    let mut outcome = RuleOutcome::default();
    contract.rules.evaluate(record, &mut outcome);
    warnings.append(&mut outcome.warnings);
    (!outcome.errors.is_empty()).then_some(Rejection { stage: Stage::Validate, class: "rule_violation", violations: outcome.errors })
}

/// Evaluates like [`evaluate`] without keeping the record (`Evaluation::record` is `None`), and
/// calls `valid` with a valid record and its id (to take a reconciliation claim from it).
///
/// A JSON record is parsed onto `tape`, borrowing the payload, and validated there: no `Value`
/// tree is built. Whatever the tape refuses or the contract rejects (a payload that is not JSON,
/// a repeated key, a violation) goes the [`evaluate`] way, which gives the same verdict and
/// collects the parser's message or every violation.
pub fn evaluate_lean<'i, T>(
    contract: &Contract,
    payload: &'i [u8],
    now: OffsetDateTime,
    tape: &mut Tape<'i>,
    valid: impl FnOnce(AnyRecord<'_>, Option<&str>) -> Option<T>,
) -> (Evaluation, Option<T>) {
    lean(contract, payload, now, tape, true, valid)
}

/// Evaluates like [`evaluate_lean`] for a caller that keeps neither the record nor its id
/// (`check`, which reports counts, line numbers and measures): `Evaluation::record_id` is always
/// `None` and `valid` gets no id, so a valid record without warnings allocates nothing for its
/// verdict. The verdict, warnings and measures are [`evaluate_lean`]'s.
pub fn evaluate_unkeyed<'i, T>(
    contract: &Contract,
    payload: &'i [u8],
    now: OffsetDateTime,
    tape: &mut Tape<'i>,
    valid: impl FnOnce(AnyRecord<'_>) -> Option<T>,
) -> (Evaluation, Option<T>) {
    lean(contract, payload, now, tape, false, |record, _| valid(record))
}

/// The body of [`evaluate_lean`] and [`evaluate_unkeyed`]; `keyed` says whether the id is read.
fn lean<'i, T>(
    contract: &Contract,
    payload: &'i [u8],
    now: OffsetDateTime,
    tape: &mut Tape<'i>,
    keyed: bool,
    valid: impl FnOnce(AnyRecord<'_>, Option<&str>) -> Option<T>,
) -> (Evaluation, Option<T>) {
    if let SchemaEngine::Json(schema) = &contract.engine
        && tape.parse(payload).is_ok()
        && let Some(root) = tape.root()
        && schema.is_valid_tape(root)
    {
        let mut warnings = Vec::new();
        let rejection = apply_rules(contract, AnyRecord::Tape(root), &mut warnings);
        let mut eval = measure(contract, root, rejection, now, keyed);
        eval.warnings = warnings;
        let taken = if eval.is_valid() { valid(AnyRecord::Tape(root), eval.record_id.as_deref()) } else { None };
        return (eval, taken);
    }
    let mut eval = evaluate(contract, payload, now);
    let taken = match (&eval.record, eval.is_valid()) {
        (Some(record), true) => valid(AnyRecord::Value(record), eval.record_id.as_deref()),
        _ => None,
    };
    eval.record = None;
    if !keyed {
        eval.record_id = None;
    }
    (eval, taken)
}

/// Completeness, event time, freshness and (when `keyed`) id of a decoded record, with its
/// verdict.
fn measure<'a>(
    contract: &Contract,
    record: impl RecordView<'a>,
    rejection: Option<Rejection>,
    now: OffsetDateTime,
    keyed: bool,
) -> Evaluation {
    let event_time = measure::event_time(record, &contract.event_time_fields);
    Evaluation {
        rejection,
        record_id: if keyed { contract.record_id(record) } else { None },
        completeness: contract.required.measure(record),
        event_time,
        freshness: event_time.map(|t| measure::freshness(t, now)),
        record: None,
        warnings: Vec::new(),
        shadows: Vec::new(),
        duplicate: false,
    }
}

/// The Kafka header naming the contract version a record is written to.
pub const VERSION_HEADER: &str = "meshguard.contract.version";

/// A shadow version's verdict on one record: counted, never dead-lettered.
#[derive(Debug, Clone)]
pub struct ShadowVerdict {
    /// The shadow version.
    pub version: String,
    /// What it would have done; `None` when it accepts the record.
    pub rejection: Option<Rejection>,
    /// Its failed `warn` business rules.
    pub warnings: Vec<Violation>,
}

/// One record's evaluation against a contract with several versions.
#[derive(Debug, Clone)]
pub struct VersionedEvaluation<'c> {
    /// The version the record was held to (for the dead-letter header and lineage).
    pub applied_version: String,
    /// That version's compiled contract (what the stream's dead letters and lineage name).
    pub applied: &'c Contract,
    /// The verdict of that version (or the unknown-version rejection), with every shadow
    /// version's verdict in `evaluation.shadows`.
    pub evaluation: Evaluation,
}

/// The enforced version a record is held to: the one its version header names, else the newest.
/// A header naming no enforced version is a rejection (class `unknown_contract_version`).
pub fn select_version<'c>(contract: &'c Contract, header: Option<&[u8]>) -> Result<&'c Contract, Rejection> {
    let Some(raw) = header else { return Ok(contract.newest()) };
    let named = std::str::from_utf8(raw).map(str::trim).unwrap_or_default();
    contract.enforced_version(named).ok_or_else(|| {
        let known: Vec<&str> = contract.enforced().iter().map(|c| c.version.as_str()).collect();
        let shown: String = String::from_utf8_lossy(raw).chars().take(64).collect();
        Rejection {
            stage: Stage::Validate,
            class: "unknown_contract_version",
            violations: vec![Violation::new(
                "",
                "version",
                format!("header {VERSION_HEADER} names version {shown:?}; contract {} enforces {}", contract.name, known.join(", ")),
            )],
        }
    })
}

/// Like [`evaluate`], choosing the version from `version_header` (the value of
/// [`VERSION_HEADER`], if the record has one) and checking every shadow version too.
pub fn evaluate_versioned<'c>(
    contract: &'c Contract,
    payload: &[u8],
    version_header: Option<&[u8]>,
    now: OffsetDateTime,
) -> VersionedEvaluation<'c> {
    let (applied, mut evaluation) = match select_version(contract, version_header) {
        Ok(v) => (v, evaluate(v, payload, now)),
        Err(rejection) => {
            let newest = contract.newest();
            let mut eval = evaluate(newest, payload, now);
            eval.rejection = Some(rejection);
            (newest, eval)
        }
    };
    evaluation.shadows = shadows(contract, payload, now);
    VersionedEvaluation { applied_version: applied.version.clone(), applied, evaluation }
}

/// Like [`evaluate_lean`] (the stream's path), choosing the version from `version_header` and
/// checking every shadow version too. `valid` is called only for a record the applied version
/// accepts.
pub fn evaluate_lean_versioned<'c, 'i, T>(
    contract: &'c Contract,
    payload: &'i [u8],
    version_header: Option<&[u8]>,
    now: OffsetDateTime,
    tape: &mut Tape<'i>,
    valid: impl FnOnce(AnyRecord<'_>, Option<&str>) -> Option<T>,
) -> (VersionedEvaluation<'c>, Option<T>) {
    let shadows = shadows(contract, payload, now);
    match select_version(contract, version_header) {
        Ok(v) => {
            let (mut evaluation, taken) = evaluate_lean(v, payload, now, tape, valid);
            evaluation.shadows = shadows;
            (VersionedEvaluation { applied_version: v.version.clone(), applied: v, evaluation }, taken)
        }
        Err(rejection) => {
            let newest = contract.newest();
            let (mut evaluation, _) = evaluate_lean(newest, payload, now, tape, |_, _| None::<T>);
            evaluation.rejection = Some(rejection);
            evaluation.shadows = shadows;
            (VersionedEvaluation { applied_version: newest.version.clone(), applied: newest, evaluation }, None)
        }
    }
}

/// Every shadow version's verdict on `payload` (counted in
/// `meshguard_shadow_rejections_total{product,contract,version}` by [`Tally`], once final).
pub fn shadows(contract: &Contract, payload: &[u8], now: OffsetDateTime) -> Vec<ShadowVerdict> {
    contract
        .shadows()
        .map(|s| {
            let mut tape = Tape::new();
            // Only the verdict is kept: no id.
            let (eval, _) = lean(s, payload, now, &mut tape, false, |_, _| None::<()>);
            ShadowVerdict { version: s.version.clone(), rejection: eval.rejection, warnings: eval.warnings }
        })
        .collect()
}

/// What evaluations add to `meshguard_rule_violations_total{product,contract,version,rule,severity}`
/// and `meshguard_shadow_rejections_total{product,contract,version}`, gathered per record and
/// counted by [`Tally::emit`] once the records' outcome is final. The stream evaluates a batch
/// again when a sink fails, so counting at evaluation would count a retried record twice; it
/// emits a batch's tally after the batch is committed, as it applies the batch to the windows.
#[derive(Debug, Default)]
pub struct Tally<'c> {
    /// Rule failures by (product, contract, version, rule, severity).
    rules: HashMap<(&'c str, &'c str, &'c str, String, &'static str), u64>,
    /// Shadow rejections by (product, contract, shadow version).
    shadows: HashMap<(&'c str, &'c str, &'c str), u64>,
}

impl<'c> Tally<'c> {
    /// Adds one record's rule failures and shadow rejections: `applied` is the version it was
    /// held to, `base` the bound contract (whose shadow versions `eval.shadows` follows).
    pub fn add(&mut self, base: &'c Contract, applied: &'c Contract, eval: &Evaluation) {
        if let Some(r) = &eval.rejection {
            self.rules_of(applied, &r.violations, RuleSeverity::Error);
        }
        self.rules_of(applied, &eval.warnings, RuleSeverity::Warn);
        for (s, v) in base.shadows().zip(&eval.shadows) {
            if let Some(r) = &v.rejection {
                *self.shadows.entry((&s.product, &s.name, &s.version)).or_default() += 1;
                self.rules_of(s, &r.violations, RuleSeverity::Error);
            }
            self.rules_of(s, &v.warnings, RuleSeverity::Warn);
        }
    }

    fn rules_of(&mut self, c: &'c Contract, violations: &[Violation], severity: RuleSeverity) {
        for v in violations {
            if let Some(rule) = &v.rule {
                let (product, contract, version) = c.rules.labels();
                *self.rules.entry((product, contract, version, rule.clone(), severity.as_str())).or_default() += 1;
            }
        }
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.shadows.is_empty()
    }

    /// Counts what was gathered in the metrics, and empties the tally.
    pub fn emit(&mut self) {
        for ((product, contract, version, rule, severity), n) in self.rules.drain() {
            metrics::counter!(
                crate::telemetry::names::RULE_VIOLATIONS_TOTAL,
                "product" => product.to_owned(),
                "contract" => contract.to_owned(),
                "version" => version.to_owned(),
                "rule" => rule,
                "severity" => severity
            )
            .increment(n);
        }
        for ((product, contract, version), n) in self.shadows.drain() {
            metrics::counter!(
                crate::telemetry::names::SHADOW_REJECTIONS_TOTAL,
                "product" => product.to_owned(),
                "contract" => contract.to_owned(),
                "version" => version.to_owned()
            )
            .increment(n);
        }
    }
}
