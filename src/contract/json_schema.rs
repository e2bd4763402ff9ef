//! JSON Schema draft-07 contracts through the `jsonschema` crate.

use std::path::{Path, PathBuf};

use jsonschema::json::Json;
use jsonschema::{Draft, PatternOptions, Retrieve, Uri, ValidationOptions, Validator};
use serde_json::Value;

use super::Violation;
use super::tape::{TapeJson, TapeNode};

/// Upper bound on regex backtracking, so a contract's `pattern` can never hang a partition.
const REGEX_BACKTRACK_LIMIT: usize = 100_000;

/// A compiled draft-07 schema, for records as `serde_json::Value` and on a tape.
pub struct JsonSchemaContract {
    validator: Validator,
    /// The same schema and options, compiled for [`TapeJson`] instances.
    tape: Validator<TapeJson>,
}

impl std::fmt::Debug for JsonSchemaContract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaContract").finish_non_exhaustive()
    }
}

/// Resolves `$ref`s to files under the schemas directory, plus optional URL prefixes mapped to
/// folders (the conformance suite's `http://localhost:1234/`). Never touches the network.
#[derive(Debug, Clone, Default)]
pub struct SchemaRetriever {
    /// Folder that `file:` references must stay inside.
    root: Option<PathBuf>,
    /// `(url prefix, folder)` pairs.
    prefixes: Vec<(String, PathBuf)>,
}

impl SchemaRetriever {
    /// Resolves `file:` references inside `root` only.
    pub fn within(root: impl Into<PathBuf>) -> Self {
        Self { root: Some(root.into()), prefixes: Vec::new() }
    }

    /// Also serves `prefix…` from `folder`.
    pub fn with_prefix(mut self, prefix: impl Into<String>, folder: impl Into<PathBuf>) -> Self {
        self.prefixes.push((prefix.into(), folder.into()));
        self
    }

    fn read(path: &Path) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }
}

impl Retrieve for SchemaRetriever {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let text = uri.as_str();
        for (prefix, folder) in &self.prefixes {
            if let Some(rest) = text.strip_prefix(prefix.as_str()) {
                let rest = rest.split('#').next().unwrap_or(rest);
                if rest.split('/').any(|seg| seg == "..") {
                    return Err(format!("refusing {text}: '..' in path").into());
                }
                return Self::read(&folder.join(rest));
            }
        }
        if let (Some(root), Some(path)) = (&self.root, text.strip_prefix("file://")) {
            let path = PathBuf::from(path);
            let canonical = path.canonicalize().map_err(|e| format!("{text}: {e}"))?;
            let root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
            if !canonical.starts_with(&root) {
                return Err(format!("refusing {text}: outside {}", root.display()).into());
            }
            return Self::read(&canonical);
        }
        Err(format!("cannot resolve {text}: only local schema files are allowed").into())
    }
}

/// `uuid` as RFC 4122 text (8-4-4-4-12 hex digits). jsonschema checks it from 2019-09 on only.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl JsonSchemaContract {
    /// Compiles `schema` as draft-07 with every format asserted. `base_uri` anchors relative refs.
    pub fn compile(schema: &Value, base_uri: Option<String>, retriever: SchemaRetriever) -> Result<Self, String> {
        let message = |e: jsonschema::ValidationError<'_>| {
            let at = e.instance_path().as_str();
            if at.is_empty() { e.to_string() } else { format!("{e} (at {at})") }
        };
        let validator = Self::options(jsonschema::options(), base_uri.clone(), retriever.clone()).build(schema).map_err(message)?;
        let tape = Self::options(jsonschema::options_for::<TapeJson>(), base_uri, retriever).build(schema).map_err(message)?;
        Ok(Self { validator, tape })
    }

    /// One configuration for both representations, so they cannot disagree.
    fn options<F: Json>(
        options: ValidationOptions<'static, std::sync::Arc<dyn Retrieve>, F>,
        base_uri: Option<String>,
        retriever: SchemaRetriever,
    ) -> ValidationOptions<'static, std::sync::Arc<dyn Retrieve>, F> {
        let options = options
            .with_draft(Draft::Draft7)
            .should_validate_formats(true)
            .with_format("uuid", is_uuid)
            .with_pattern_options(PatternOptions::fancy_regex().backtrack_limit(REGEX_BACKTRACK_LIMIT))
            .with_retriever(retriever);
        match base_uri {
            Some(base) => options.with_base_uri(base),
            None => options,
        }
    }

    /// Whether a record parsed onto a tape is valid (the same verdict [`Self::is_valid`] gives
    /// its `Value`).
    pub fn is_valid_tape(&self, record: TapeNode<'_>) -> bool {
        self.tape.is_valid(record)
    }

    /// Appends every violation of `record`; returns whether it is valid.
    pub fn validate(&self, record: &Value, out: &mut Vec<Violation>) -> bool {
        // The boolean check is several times cheaper; errors are collected only for the few
        // records that fail.
        if self.validator.is_valid(record) {
            return true;
        }
        let before = out.len();
        for error in self.validator.iter_errors(record) {
            out.push(Violation {
                path: error.instance_path().as_str().to_owned(),
                keyword: error.kind().keyword().to_owned(),
                message: error.to_string(),
                rule: None,
            });
        }
        if out.len() == before {
            // is_valid and iter_errors disagree only if the crate has a bug; keep the verdict.
            out.push(Violation::new("", "schema", "record is not valid"));
        }
        false
    }

    /// Whether `record` is valid, without collecting violations.
    pub fn is_valid(&self, record: &Value) -> bool {
        self.validator.is_valid(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuid_format_is_asserted_under_draft7() -> Result<(), String> {
        let c = JsonSchemaContract::compile(&json!({"type":"string","format":"uuid"}), None, SchemaRetriever::default())?;
        assert!(c.is_valid(&json!("3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f")));
        assert!(!c.is_valid(&json!("not-a-uuid")));
        assert!(!c.is_valid(&json!("3f2c1a9e8b7d4c6e9f102a3b4c5d6e7f")));
        Ok(())
    }

    #[test]
    fn every_violation_has_pointer_and_keyword() -> Result<(), String> {
        let schema = json!({"type":"object","required":["a","b"],"properties":{"c":{"type":"integer","minimum":1}}});
        let c = JsonSchemaContract::compile(&schema, None, SchemaRetriever::default())?;
        let mut out = Vec::new();
        assert!(!c.validate(&json!({"c": 0}), &mut out));
        let mut got: Vec<(String, String)> = out.iter().map(|v| (v.path.clone(), v.keyword.clone())).collect();
        got.sort();
        assert_eq!(got, vec![("".into(), "required".into()), ("".into(), "required".into()), ("/c".into(), "minimum".into())]);
        Ok(())
    }

    #[test]
    fn catastrophic_pattern_does_not_hang() -> Result<(), String> {
        // Without lookaround or backreferences fancy-regex hands the pattern to the `regex`
        // crate, whose engine is linear in the input: `(a+)+` cannot explode there.
        let c = JsonSchemaContract::compile(&json!({"type":"string","pattern":"^(a+)+$"}), None, SchemaRetriever::default())?;
        let hostile = format!("{}!", "a".repeat(5_000));
        let mut out = Vec::new();
        assert!(!c.validate(&json!(hostile), &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].keyword.as_str(), out[0].path.as_str()), ("pattern", ""));
        assert!(c.is_valid(&json!("a".repeat(5_000))));
        Ok(())
    }

    #[test]
    fn catastrophic_backtracking_pattern_hits_the_limit_and_is_a_violation() -> Result<(), String> {
        // A lookahead inside the repeated group forces fancy-regex's backtracking engine for the
        // whole loop, where `(a+)+` before a failing `$` takes 2^n steps; the backtrack limit stops it and the record is reported invalid
        // (fail closed) with the engine's reason, instead of holding the partition.
        let schema = json!({"type":"object","properties":{"id":{"type":"string","pattern":"^((?=a)a+)+$"}}});
        let c = JsonSchemaContract::compile(&schema, None, SchemaRetriever::default())?;
        for n in [30, 1_000, 100_000] {
            let hostile = format!("{}!", "a".repeat(n));
            let mut out = Vec::new();
            assert!(!c.validate(&json!({ "id": hostile }), &mut out), "n={n}");
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!((out[0].keyword.as_str(), out[0].path.as_str()), ("pattern", "/id"), "{out:?}");
            assert!(out[0].message.contains("backtracking"), "{out:?}");
        }
        // The limit does not get in the way of ordinary matches.
        assert!(c.is_valid(&json!({"id": "aaaa"})));
        Ok(())
    }
}
