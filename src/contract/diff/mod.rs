//! Schema evolution: every change between two versions of a contract's schema, and whether it
//! breaks under a compatibility mode (`meshguard contract diff`, `meshguard lint --against`).
//!
//! A change is classified by what it does to the set of records the schema accepts:
//!
//! - it **breaks writers** when some record valid under OLD is rejected under NEW (producers not
//!   yet upgraded start failing; Avro: a reader on NEW cannot read data written with OLD). This
//!   breaks *backward* compatibility.
//! - it **breaks readers** when some record valid under NEW is not valid under OLD (consumers
//!   still on OLD receive records they do not expect; Avro: a reader on OLD cannot read data
//!   written with NEW). This breaks *forward* compatibility.
//!
//! `full` compatibility needs both. Where JSON Schema compatibility cannot be decided statically
//! (two different patterns, a changed `allOf`), the change says "cannot prove compatible" and
//! counts as breaking in every mode. Avro follows the specification's schema-resolution rules
//! through `apache_avro`'s compatibility checker; the path-level listing is meshguard's own.

mod avro;
mod json;

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// Which compatibility a change must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// NEW accepts (reads) everything OLD accepted: records already written stay valid.
    Backward,
    /// OLD accepts (reads) everything NEW accepts: consumers not yet upgraded keep working.
    Forward,
    /// Both.
    Full,
}

impl Mode {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "backward",
            Self::Forward => "forward",
            Self::Full => "full",
        }
    }
}

/// Whom a change breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    /// Nobody: the accepted records are the same (or the change is an annotation).
    None,
    /// Records valid under OLD are rejected under NEW (breaks backward compatibility).
    Writers,
    /// Records valid under NEW are not valid under OLD (breaks forward compatibility).
    Readers,
    /// Both.
    Both,
}

impl Impact {
    /// From whether the change narrows (rejects some OLD records) and widens (admits records OLD
    /// rejected).
    pub fn from_flags(narrows: bool, widens: bool) -> Self {
        match (narrows, widens) {
            (false, false) => Self::None,
            (true, false) => Self::Writers,
            (false, true) => Self::Readers,
            (true, true) => Self::Both,
        }
    }

    /// Whether some OLD record is rejected under NEW.
    pub fn narrows(self) -> bool {
        matches!(self, Self::Writers | Self::Both)
    }

    /// Whether some NEW record is not valid under OLD.
    pub fn widens(self) -> bool {
        matches!(self, Self::Readers | Self::Both)
    }

    /// The union of two impacts.
    pub fn or(self, other: Self) -> Self {
        Self::from_flags(self.narrows() || other.narrows(), self.widens() || other.widens())
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Writers => "writers",
            Self::Readers => "readers",
            Self::Both => "both",
        }
    }
}

/// What kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A field (property) is gone.
    FieldRemoved,
    /// A field (property) is new.
    FieldAdded,
    /// A field is gone and another with the same schema is new (JSON Schema), or a field is new
    /// with the old name as an alias (Avro).
    FieldRenamed,
    /// A field joined `required`.
    MadeRequired,
    /// A field left `required`.
    MadeOptional,
    /// The accepted types changed (narrowed, widened, replaced, Avro promotion).
    TypeChanged,
    /// An enum value (Avro: symbol) is gone.
    EnumValueRemoved,
    /// An enum value (Avro: symbol) is new.
    EnumValueAdded,
    /// A bound, length, format, pattern or `multipleOf` admits fewer values.
    ConstraintTightened,
    /// A bound, length, format, pattern or `multipleOf` admits more values.
    ConstraintLoosened,
    /// A constraint changed in a way that is neither tighter nor looser (or cannot be compared).
    ConstraintChanged,
    /// `additionalProperties` went from open to `false`.
    AdditionalPropertiesClosed,
    /// `additionalProperties` went from `false` to open.
    AdditionalPropertiesOpened,
    /// A `$ref` points somewhere else.
    RefChanged,
    /// Another keyword was added, removed or changed.
    KeywordChanged,
    /// A named Avro type has another name.
    NameChanged,
    /// The Avro compatibility checker's verdict where the listing found nothing more precise.
    Incompatible,
}

impl ChangeKind {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FieldRemoved => "field_removed",
            Self::FieldAdded => "field_added",
            Self::FieldRenamed => "field_renamed",
            Self::MadeRequired => "made_required",
            Self::MadeOptional => "made_optional",
            Self::TypeChanged => "type_changed",
            Self::EnumValueRemoved => "enum_value_removed",
            Self::EnumValueAdded => "enum_value_added",
            Self::ConstraintTightened => "constraint_tightened",
            Self::ConstraintLoosened => "constraint_loosened",
            Self::ConstraintChanged => "constraint_changed",
            Self::AdditionalPropertiesClosed => "additional_properties_closed",
            Self::AdditionalPropertiesOpened => "additional_properties_opened",
            Self::RefChanged => "ref_changed",
            Self::KeywordChanged => "keyword_changed",
            Self::NameChanged => "name_changed",
            Self::Incompatible => "incompatible",
        }
    }
}

/// One change between OLD and NEW.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Where, as a path into the record: `/payment_method/type`; `/[]` is an array's items,
    /// `/*` any other property (`additionalProperties`, Avro map values); `""` the record itself.
    pub path: String,
    /// What kind of change.
    pub kind: ChangeKind,
    /// A human sentence.
    pub message: String,
    /// Whom it breaks.
    pub impact: Impact,
    /// `false` when compatibility could not be decided statically ("cannot prove compatible"):
    /// the change then counts as breaking in every mode.
    pub provable: bool,
}

impl Change {
    /// Whether this change breaks compatibility under `mode`.
    pub fn breaks(&self, mode: Mode) -> bool {
        if !self.provable {
            return true;
        }
        match mode {
            Mode::Backward => self.impact.narrows(),
            Mode::Forward => self.impact.widens(),
            Mode::Full => self.impact != Impact::None,
        }
    }
}

/// The schema language of both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaFormat {
    /// JSON Schema (draft-07).
    JsonSchema,
    /// Apache Avro.
    Avro,
}

impl SchemaFormat {
    /// A name for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::JsonSchema => "JSON Schema",
            Self::Avro => "Avro",
        }
    }
}

/// The Avro checker's answer for one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AvroResolution {
    /// `full` (always resolves), `partial` (may fail for some data: counted as breaking) or
    /// `incompatible`.
    pub verdict: &'static str,
    /// The checker's reason when not `full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The Avro checker's verdicts (`apache_avro::schema_compatibility`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AvroChecker {
    /// A reader on NEW reading data written with OLD.
    pub backward: AvroResolution,
    /// A reader on OLD reading data written with NEW.
    pub forward: AvroResolution,
}

/// The result of comparing two schemas.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// OLD's name (a file path, or `REF:path`).
    pub old: String,
    /// NEW's name.
    pub new: String,
    /// Schema language.
    pub format: SchemaFormat,
    /// The mode judged.
    pub mode: Mode,
    /// Whether NEW is compatible with OLD under the mode.
    pub compatible: bool,
    /// Changes that break under the mode.
    pub breaking: usize,
    /// Of those, how many could not be proved compatible.
    pub unproven: usize,
    /// Every change, in schema order.
    pub changes: Vec<Change>,
    /// For Avro, the specification checker's verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avro_checker: Option<AvroChecker>,
}

/// Why two schemas could not be compared (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A file could not be read.
    #[error("{name}: cannot read: {source}")]
    Read {
        /// Which file.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON at all.
    #[error("{name}: not JSON: {source}")]
    NotJson {
        /// Which file.
        name: String,
        /// Why.
        source: serde_json::Error,
    },
    /// JSON, but not a valid draft-07 schema.
    #[error("{name}: not a valid JSON Schema (draft-07): {message}")]
    InvalidJsonSchema {
        /// Which file.
        name: String,
        /// The meta-schema's complaint.
        message: String,
    },
    /// Not a valid Avro schema.
    #[error("{name}: not a valid Avro schema: {message}")]
    InvalidAvro {
        /// Which file.
        name: String,
        /// The parser's complaint.
        message: String,
    },
    /// One side is Avro, the other JSON Schema.
    #[error("cannot compare {old} ({old_format}) with {new} ({new_format}): both must be JSON Schema or both Avro")]
    FormatMismatch {
        /// OLD's name.
        old: String,
        /// OLD's language.
        old_format: &'static str,
        /// NEW's name.
        new: String,
        /// NEW's language.
        new_format: &'static str,
    },
}

/// A schema read for comparison.
#[derive(Debug, Clone)]
pub enum LoadedSchema {
    /// A JSON Schema document.
    Json(Value),
    /// A parsed Avro schema.
    Avro(apache_avro::Schema),
}

impl LoadedSchema {
    /// Its language.
    pub fn format(&self) -> SchemaFormat {
        match self {
            Self::Json(_) => SchemaFormat::JsonSchema,
            Self::Avro(_) => SchemaFormat::Avro,
        }
    }

    /// Reads and parses a schema file (see [`LoadedSchema::parse`]).
    pub fn load(path: &Path) -> Result<Self, DiffError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DiffError::Read { name: name.clone(), source })?;
        Self::parse(&name, &text)
    }

    /// Parses schema text. A name ending in `.avsc`, or a JSON document that is an Avro named
    /// type (`"type": "record" | "enum" | "fixed"` with a `name`) or an Avro union (an array),
    /// is Avro; anything else must be a valid draft-07 JSON Schema.
    pub fn parse(name: &str, text: &str) -> Result<Self, DiffError> {
        let json: Value = serde_json::from_str(text).map_err(|source| DiffError::NotJson { name: name.to_owned(), source })?;
        let looks_avro = name.ends_with(".avsc")
            || json.is_array()
            || (json.get("name").is_some_and(Value::is_string)
                && matches!(json.get("type").and_then(Value::as_str), Some("record" | "enum" | "fixed")));
        if looks_avro {
            let schema =
                apache_avro::Schema::parse(&json).map_err(|e| DiffError::InvalidAvro { name: name.to_owned(), message: e.to_string() })?;
            return Ok(Self::Avro(schema));
        }
        if let Err(e) = jsonschema::draft7::meta::validate(&json) {
            let at = e.instance_path().to_string();
            let message = if at.is_empty() { e.to_string() } else { format!("at {at}: {e}") };
            return Err(DiffError::InvalidJsonSchema { name: name.to_owned(), message });
        }
        Ok(Self::Json(json))
    }
}

/// Compares OLD with NEW under `mode`.
pub fn diff(old_name: &str, old: &LoadedSchema, new_name: &str, new: &LoadedSchema, mode: Mode) -> Result<DiffReport, DiffError> {
    let (changes, avro_checker) = match (old, new) {
        (LoadedSchema::Json(o), LoadedSchema::Json(n)) => (json::diff(o, n), None),
        (LoadedSchema::Avro(o), LoadedSchema::Avro(n)) => {
            let (changes, checker) = avro::diff(o, n);
            (changes, Some(checker))
        }
        _ => {
            return Err(DiffError::FormatMismatch {
                old: old_name.to_owned(),
                old_format: old.format().label(),
                new: new_name.to_owned(),
                new_format: new.format().label(),
            });
        }
    };
    let mut report = DiffReport {
        old: old_name.to_owned(),
        new: new_name.to_owned(),
        format: old.format(),
        mode,
        compatible: true,
        breaking: 0,
        unproven: 0,
        changes,
        avro_checker,
    };
    if let Some(checker) = &report.avro_checker {
        avro::reconcile_with_checker(&mut report.changes, checker);
    }
    report.breaking = report.changes.iter().filter(|c| c.breaks(mode)).count();
    report.unproven = report.changes.iter().filter(|c| !c.provable).count();
    report.compatible = report.breaking == 0;
    Ok(report)
}

/// Reads both files and compares them.
pub fn diff_files(old: &Path, new: &Path, mode: Mode) -> Result<DiffReport, DiffError> {
    let o = LoadedSchema::load(old)?;
    let n = LoadedSchema::load(new)?;
    diff(&old.display().to_string(), &o, &new.display().to_string(), &n, mode)
}

/// The report for people.
pub fn render_text(r: &DiffReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} → {}  ({}, mode {})", r.old, r.new, r.format.label(), r.mode.as_str());
    if r.changes.is_empty() {
        let _ = writeln!(s, "  no changes");
    }
    for c in &r.changes {
        let path = if c.path.is_empty() { "/" } else { c.path.as_str() };
        let verdict = match (c.breaks(r.mode), c.provable) {
            (true, false) => "BREAKING (cannot prove compatible)".to_owned(),
            (true, true) => format!("BREAKING (breaks {})", c.impact.as_str()),
            (false, _) if c.impact == Impact::None => "compatible".to_owned(),
            (false, _) => format!("ok under {} (breaks {} otherwise)", r.mode.as_str(), c.impact.as_str()),
        };
        let _ = writeln!(s, "  {path:<28} {:<28} {verdict}", c.kind.as_str());
        let _ = writeln!(s, "      {}", c.message);
    }
    if let Some(a) = &r.avro_checker {
        for (dir, res) in [("backward (NEW reads OLD)", &a.backward), ("forward (OLD reads NEW)", &a.forward)] {
            let reason = res.reason.as_deref().map(|x| format!(": {x}")).unwrap_or_default();
            let _ = writeln!(s, "  avro resolution {dir}: {}{reason}", res.verdict);
        }
    }
    let unproven = if r.unproven > 0 { format!(", {} cannot be proved compatible", r.unproven) } else { String::new() };
    if r.compatible {
        let _ = writeln!(s, "  COMPATIBLE under {}: {} change(s), none breaking", r.mode.as_str(), r.changes.len());
    } else {
        let _ = writeln!(s, "  BREAKING under {}: {} of {} change(s) break{unproven}", r.mode.as_str(), r.breaking, r.changes.len());
    }
    s
}

/// Appends a path segment, escaped as in a JSON pointer.
pub(crate) fn join(path: &str, segment: &str) -> String {
    format!("{path}/{}", segment.replace('~', "~0").replace('/', "~1"))
}
