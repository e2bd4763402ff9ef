//! Contracts: a schema compiled once, its quality SLAs, and how it binds to the stream.
//!
//! A violation is data, not an error: it keeps its JSON pointer, keyword and message all the way
//! to the dead-letter headers and the `check` report.

mod avro;
pub mod diff;
mod json_schema;
pub(crate) mod required;
pub mod rules;
pub mod tape;
pub mod unique;

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Number, Value};

use crate::product::model::{QualitySpec, ReconciliationSpec, VersionMode};

pub use self::avro::{AvroContract, AvroEncoding};
pub use self::json_schema::{JsonSchemaContract, SchemaRetriever};
pub use self::required::RequiredFields;
pub use self::rules::{RuleOutcome, RuleSet};
/// A business rule's severity (its metric label), re-exported for the stages that count failures.
pub use crate::product::model::RuleSeverity;

/// Read access to a decoded record, however it is held: a `serde_json::Value` tree, or a tape
/// ([`tape::TapeNode`]). Completeness, the record id, the event time and reconciliation claims
/// read records through it, so both forms give the same answers.
pub trait RecordView<'a>: Copy {
    /// The member `name` of an object; `None` when absent or when this is not an object.
    fn member(self, name: &str) -> Option<Self>;
    /// Whether this is an object.
    fn is_object(self) -> bool;
    /// Whether this is `null`.
    fn is_null(self) -> bool;
    /// The string, if this is one.
    fn as_str(self) -> Option<&'a str>;
    /// The number, if this is one.
    fn as_number(self) -> Option<&'a Number>;
}

impl<'a> RecordView<'a> for &'a Value {
    fn member(self, name: &str) -> Option<Self> {
        self.as_object()?.get(name)
    }
    fn is_object(self) -> bool {
        Value::is_object(self)
    }
    fn is_null(self) -> bool {
        Value::is_null(self)
    }
    fn as_str(self) -> Option<&'a str> {
        Value::as_str(self)
    }
    fn as_number(self) -> Option<&'a Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }
}

impl<'a> RecordView<'a> for tape::TapeNode<'a> {
    fn member(self, name: &str) -> Option<Self> {
        self.get(name)
    }
    fn is_object(self) -> bool {
        tape::TapeNode::is_object(&self)
    }
    fn is_null(self) -> bool {
        self.is_null_value()
    }
    fn as_str(self) -> Option<&'a str> {
        tape::TapeNode::as_str(&self)
    }
    fn as_number(self) -> Option<&'a Number> {
        tape::TapeNode::as_number(&self)
    }
}

/// A record in either form, for code that takes one through a closure.
#[derive(Debug, Clone, Copy)]
pub enum AnyRecord<'a> {
    /// A `serde_json::Value` tree.
    Value(&'a Value),
    /// A record on a tape.
    Tape(tape::TapeNode<'a>),
}

impl<'a> RecordView<'a> for AnyRecord<'a> {
    fn member(self, name: &str) -> Option<Self> {
        match self {
            Self::Value(v) => v.member(name).map(Self::Value),
            Self::Tape(t) => t.member(name).map(Self::Tape),
        }
    }
    fn is_object(self) -> bool {
        match self {
            Self::Value(v) => v.is_object(),
            Self::Tape(t) => RecordView::is_object(t),
        }
    }
    fn is_null(self) -> bool {
        match self {
            Self::Value(v) => v.is_null(),
            Self::Tape(t) => RecordView::is_null(t),
        }
    }
    fn as_str(self) -> Option<&'a str> {
        match self {
            Self::Value(v) => RecordView::as_str(v),
            Self::Tape(t) => RecordView::as_str(t),
        }
    }
    fn as_number(self) -> Option<&'a Number> {
        match self {
            Self::Value(v) => RecordView::as_number(v),
            Self::Tape(t) => RecordView::as_number(t),
        }
    }
}

/// One way a record breaks its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer to the offending value (`""` is the whole record).
    pub path: String,
    /// The schema keyword that failed (`required`, `pattern`, …), or `decode` for bytes that are
    /// not a record at all.
    pub keyword: String,
    /// A human sentence.
    pub message: String,
    /// The business rule that failed (keyword `rule`), absent for schema violations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Violation {
    /// A schema or decode violation (no rule).
    pub fn new(path: impl Into<String>, keyword: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), keyword: keyword.into(), message: message.into(), rule: None }
    }
}

/// The schema half of a contract.
#[derive(Debug)]
// One per contract, built once at start-up and never moved on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum SchemaEngine {
    /// JSON records checked by a compiled draft-07 validator.
    Json(JsonSchemaContract),
    /// Avro records: decoding with schema resolution is the check.
    Avro(AvroContract),
}

/// A compiled contract, ready for the hot path.
#[derive(Debug)]
pub struct Contract {
    /// Owning data product.
    pub product: String,
    /// Owning domain.
    pub domain: String,
    /// Contract name.
    pub name: String,
    /// Contract version.
    pub version: String,
    /// Schema file it was compiled from (for messages).
    pub schema_file: PathBuf,
    /// The compiled schema.
    pub engine: SchemaEngine,
    /// Quality SLAs.
    pub quality: QualitySpec,
    /// Required fields, for completeness.
    pub required: RequiredFields,
    /// Field holding the record id.
    pub key_field: Option<String>,
    /// Event-time fields tried in order for freshness.
    pub event_time_fields: Vec<String>,
    /// Accuracy reconciliation, when declared.
    pub reconciliation: Option<ReconciliationSpec>,
    /// Business rules (CEL), compiled; empty when the contract declares none.
    pub rules: RuleSet,
    /// Whether this version's verdict counts (`enforce`) or is only measured (`shadow`).
    pub mode: VersionMode,
    /// The contract's other versions (`versions:`), compiled; empty for a single version and
    /// for the versions themselves.
    pub versions: Vec<std::sync::Arc<Contract>>,
    /// The uniqueness constraint; its state lives in a [`unique::UniqueTracker`] per consumer.
    pub unique: Option<crate::product::model::UniqueSpec>,
    /// The volume SLA per window.
    pub volume: Option<crate::product::model::VolumeSpec>,
    /// The table or collection its data rests in (`meshguard scan`).
    pub source: Option<crate::product::model::SourceBinding>,
}

/// Longest record id kept as it is (bytes); longer ids are replaced by their SHA-256.
pub const MAX_RECORD_ID: usize = 256;

/// The id a record is kept under for the text of its key: the text itself, or `sha256:` and the
/// hex SHA-256 of it when it is longer than [`MAX_RECORD_ID`] bytes.
pub fn stored_id(id: String) -> String {
    if id.len() <= MAX_RECORD_ID {
        return id;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Contract {
    /// `product:contract`, the key the seed uses.
    pub fn key(&self) -> String {
        format!("{}:{}", self.product, self.name)
    }

    /// Checks a decoded record, appending every violation to `out`. Returns whether it is valid.
    pub fn validate(&self, record: &Value, out: &mut Vec<Violation>) -> bool {
        match &self.engine {
            SchemaEngine::Json(c) => c.validate(record, out),
            // Decoding with the contract as reader schema already enforced it.
            SchemaEngine::Avro(_) => true,
        }
    }

    /// The record id, if the key field holds a string or an integer. An id longer than
    /// [`MAX_RECORD_ID`] bytes (a hostile or broken record: ids are indexed and copied into
    /// lineage documents) is replaced by `sha256:` and the hex SHA-256 of it.
    pub fn record_id<'a>(&self, record: impl RecordView<'a>) -> Option<String> {
        let field = self.key_field.as_deref()?;
        let value = record.member(field)?;
        let id = match (value.as_str(), value.as_number()) {
            (Some(s), _) => s.to_owned(),
            (_, Some(n)) => n.to_string(),
            _ => return None,
        };
        Some(stored_id(id))
    }

    /// Whether this contract is Avro.
    pub fn is_avro(&self) -> bool {
        matches!(self.engine, SchemaEngine::Avro(_))
    }

    /// Every enforced version, this one included, newest first (by [`compare_versions`]).
    pub fn enforced(&self) -> Vec<&Contract> {
        let mut out: Vec<&Contract> = std::iter::once(self)
            .filter(|c| c.mode == VersionMode::Enforce)
            .chain(self.versions.iter().map(|c| &**c).filter(|c| c.mode == VersionMode::Enforce))
            .collect();
        out.sort_by(|a, b| compare_versions(&b.version, &a.version));
        out
    }

    /// The version a record without a version header is held to: the newest enforced one.
    pub fn newest(&self) -> &Contract {
        self.enforced().first().copied().unwrap_or(self)
    }

    /// The enforced version called `version`.
    pub fn enforced_version(&self, version: &str) -> Option<&Contract> {
        self.enforced().into_iter().find(|c| c.version == version)
    }

    /// The shadow versions, in declaration order.
    pub fn shadows(&self) -> impl Iterator<Item = &Contract> {
        self.versions.iter().map(|c| &**c).filter(|c| c.mode == VersionMode::Shadow)
    }
}

/// Orders version strings: dot- or dash-separated parts compared as numbers when both are
/// numbers (`1.10.0` after `1.9.0`), as text otherwise.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| s.trim_start_matches(['v', 'V']).split(['.', '-']).map(str::to_owned).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}
