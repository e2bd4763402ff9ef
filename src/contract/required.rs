//! Required fields of a contract, for completeness: the seed's `getRequiredFields` (every
//! `required` list, nested objects included), evaluated against a record.

use serde_json::Value;

use super::RecordView;

/// Completeness of one record: required fields present out of those that apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completeness {
    /// Required fields present and not null.
    pub present: u32,
    /// Required fields that apply to this record (a nested field applies when its parent object
    /// is present).
    pub applicable: u32,
}

impl Completeness {
    /// The share as a percentage, for display.
    pub fn percent(self) -> f64 {
        if self.applicable == 0 { 100.0 } else { f64::from(self.present) * 100.0 / f64::from(self.applicable) }
    }

    /// Whether every applicable field is present.
    pub fn is_full(self) -> bool {
        self.present == self.applicable
    }
}

/// Every required field of a schema, as paths of property names.
#[derive(Debug, Clone, Default)]
pub struct RequiredFields {
    paths: Vec<Vec<String>>,
}

impl RequiredFields {
    /// From a JSON Schema: every `required` entry of the root and of nested `properties`.
    pub fn from_json_schema(schema: &Value) -> Self {
        let mut paths = Vec::new();
        Self::walk_json(schema, &mut Vec::new(), &mut paths, 0);
        Self { paths }
    }

    fn walk_json(schema: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, depth: usize) {
        // Real contracts are shallow; the bound only guards against pathological schemas.
        if depth > 32 {
            return;
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                let mut path = prefix.clone();
                path.push(name.to_owned());
                out.push(path);
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                prefix.push(name.clone());
                Self::walk_json(sub, prefix, out, depth + 1);
                let _ = prefix.pop();
            }
        }
    }

    /// From paths directly (Avro: fields without a default).
    pub fn from_paths(paths: Vec<Vec<String>>) -> Self {
        Self { paths }
    }

    /// How many required fields the schema declares.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the schema declares none.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The paths, dotted, for reports.
    pub fn dotted(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.join(".")).collect()
    }

    /// Measures one record. A record that is not an object has nothing present.
    pub fn measure<'a>(&self, record: impl RecordView<'a>) -> Completeness {
        let mut c = Completeness::default();
        'paths: for path in &self.paths {
            let Some((last, parents)) = path.split_last() else { continue };
            let mut node = record;
            for seg in parents {
                match node.member(seg) {
                    Some(child) if child.is_object() => node = child,
                    // The parent is absent (counted on its own if it is required itself).
                    _ => continue 'paths,
                }
            }
            c.applicable += 1;
            if node.member(last).is_some_and(|v| !v.is_null()) {
                c.present += 1;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_required_fields_count_when_parent_present() {
        let schema = json!({
            "required": ["a", "b"],
            "properties": {"b": {"type": "object", "required": ["c"], "properties": {"c": {}}}}
        });
        let r = RequiredFields::from_json_schema(&schema);
        assert_eq!(r.dotted(), vec!["a", "b", "b.c"]);
        assert_eq!(r.measure(&json!({"a": 1, "b": {"c": 2}})), Completeness { present: 3, applicable: 3 });
        assert_eq!(r.measure(&json!({"a": null, "b": {}})), Completeness { present: 1, applicable: 3 });
        assert_eq!(r.measure(&json!({"a": 1})), Completeness { present: 1, applicable: 2 });
        assert_eq!(r.measure(&json!("x")), Completeness { present: 0, applicable: 2 });
    }
}
