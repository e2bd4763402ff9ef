//! The search language: a typed AST parsed by hand from the request body (never passed through),
//! checked against the contract's top-level fields, then turned into a MongoDB filter.
//!
//! ```json
//! {"filter": {"and": [{"field": "status", "op": "eq", "value": "COMPLETED"},
//!                     {"field": "amount", "op": "gte", "value": 100}]},
//!  "sort": {"field": "amount", "order": "desc"}, "limit": 50, "cursor": "<opaque>"}
//! ```

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Map, Value};

use super::problem::FieldError;
use crate::contract::{MAX_RECORD_ID, stored_id};

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 50;
/// Largest page size.
pub const MAX_LIMIT: u64 = 500;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 20;
/// Most values in one `in`.
pub const MAX_IN_VALUES: usize = 100;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest string value, in characters.
pub const MAX_STRING: usize = 1024;

/// The type of a searchable field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    /// JSON integer / Avro int, long.
    Integer,
    /// JSON number / Avro float, double.
    Number,
    /// A string.
    String,
    /// A string from a fixed set.
    Enum(Vec<String>),
    /// true / false.
    Boolean,
    /// Objects, arrays, bytes: not searchable.
    Other,
}

impl FieldType {
    /// The name used in messages and the OpenAPI document.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Number => "number",
            Self::String => "string",
            Self::Enum(_) => "enum",
            Self::Boolean => "boolean",
            Self::Other => "object",
        }
    }
}

/// Top-level fields of a contract, by name.
pub type Fields = BTreeMap<String, FieldType>;

/// The top-level fields of a schema document as the catalog loaded it: JSON Schema
/// `properties` or Avro record `fields`.
pub fn fields_of(schema: &Value) -> Fields {
    let mut out = Fields::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            let _ = out.insert(name.clone(), json_schema_type(s));
        }
    } else if let Some(fields) = schema.get("fields").and_then(Value::as_array) {
        for f in fields {
            if let (Some(name), Some(t)) = (f.get("name").and_then(Value::as_str), f.get("type")) {
                let _ = out.insert(name.to_owned(), avro_type(t));
            }
        }
    }
    out
}

fn json_schema_type(s: &Value) -> FieldType {
    if let Some(symbols) = s.get("enum").and_then(Value::as_array)
        && symbols.iter().all(Value::is_string)
    {
        return FieldType::Enum(symbols.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    }
    let t = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("object"),
        _ => "object",
    };
    match t {
        "integer" => FieldType::Integer,
        "number" => FieldType::Number,
        "string" => FieldType::String,
        "boolean" => FieldType::Boolean,
        _ => FieldType::Other,
    }
}

fn avro_type(t: &Value) -> FieldType {
    match t {
        Value::String(s) => match s.as_str() {
            "int" | "long" => FieldType::Integer,
            "float" | "double" => FieldType::Number,
            "string" => FieldType::String,
            "boolean" => FieldType::Boolean,
            _ => FieldType::Other,
        },
        Value::Array(branches) => {
            let non_null: Vec<&Value> = branches.iter().filter(|b| b.as_str() != Some("null")).collect();
            if non_null.len() == 1 { avro_type(non_null[0]) } else { FieldType::Other }
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("enum") => FieldType::Enum(
                o.get("symbols").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect(),
            ),
            Some(_) if o.get("logicalType").and_then(Value::as_str) == Some("decimal") => FieldType::Other,
            Some(inner) => avro_type(&Value::String(inner.to_owned())),
            None => FieldType::Other,
        },
        _ => FieldType::Other,
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// One of a list.
    In,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// String starts with.
    Prefix,
    /// String contains.
    Contains,
}

impl Op {
    /// Every operator's wire name.
    pub const NAMES: [&'static str; 9] = ["eq", "ne", "in", "lt", "lte", "gt", "gte", "prefix", "contains"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "in" => Self::In,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "prefix" => Self::Prefix,
            "contains" => Self::Contains,
            _ => return None,
        })
    }
}

/// A scalar value, already checked against its field's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    fn bson(&self) -> Bson {
        match self {
            Self::Int(i) => Bson::Int64(*i),
            Self::Float(f) => Bson::Double(*f),
            Self::Str(s) => Bson::String(s.clone()),
            Self::Bool(b) => Bson::Boolean(*b),
        }
    }
}

/// One condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// A top-level field of the contract.
    pub field: String,
    /// The operator.
    pub op: Op,
    /// One value, or several for `in`.
    pub values: Vec<Scalar>,
}

/// A parsed, checked search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// Sort field and direction (1 or -1).
    pub sort: Option<(String, i32)>,
    /// Page size.
    pub limit: u64,
    /// Results to skip (from the cursor).
    pub skip: u64,
}

type Errors = Vec<FieldError>;

fn err(field: impl Into<String>, message: impl Into<String>) -> Errors {
    vec![FieldError { field: field.into(), message: message.into() }]
}

/// Finds the first key starting with `$` anywhere in `v`.
fn dollar_key(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if k.starts_with('$') { Some(p) } else { dollar_key(v, &p) }
        }),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| dollar_key(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn object<'a>(v: &'a Value, path: &str, allowed: &[&str]) -> Result<&'a Map<String, Value>, Errors> {
    let m = v.as_object().ok_or_else(|| err(path, "must be an object"))?;
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        return Err(err(p, format!("unknown key; expected one of: {}", allowed.join(", "))));
    }
    Ok(m)
}

/// Parses and checks a request body against the contract's fields.
pub fn parse(body: &[u8], fields: &Fields) -> Result<Search, Errors> {
    if body.len() > MAX_BODY_BYTES {
        return Err(err("body", format!("exceeds {MAX_BODY_BYTES} bytes")));
    }
    // No body at all means "everything"; anything else must be a JSON document.
    let v: Value = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| err("body", format!("not valid JSON (or nested too deeply): {e}")))?
    };
    if let Some(p) = dollar_key(&v, "") {
        return Err(err(p, "keys starting with '$' are not allowed"));
    }
    let top = object(&v, "", &["filter", "sort", "limit", "cursor"])?;
    let mut conditions = Vec::new();
    if let Some(f) = top.get("filter") {
        let fm = f.as_object().ok_or_else(|| err("filter", "must be an object"))?;
        if fm.contains_key("and") {
            let m = object(f, "filter", &["and"])?;
            let list = m.get("and").and_then(Value::as_array).ok_or_else(|| err("filter.and", "must be an array of conditions"))?;
            if list.len() > MAX_CONDITIONS {
                return Err(err("filter.and", format!("at most {MAX_CONDITIONS} conditions")));
            }
            for (i, c) in list.iter().enumerate() {
                conditions.push(condition(c, &format!("filter.and[{i}]"), fields)?);
            }
        } else {
            conditions.push(condition(f, "filter", fields)?);
        }
    }
    let sort = match top.get("sort") {
        None => None,
        Some(s) => {
            let m = object(s, "sort", &["field", "order"])?;
            let field = m.get("field").and_then(Value::as_str).ok_or_else(|| err("sort.field", "must be a string"))?;
            match fields.get(field) {
                None => return Err(err("sort.field", format!("unknown field {field:?}"))),
                Some(FieldType::Other) => return Err(err("sort.field", format!("field {field:?} is not sortable"))),
                Some(_) => {}
            }
            let dir = match m.get("order") {
                None => 1,
                Some(Value::String(o)) if o == "asc" => 1,
                Some(Value::String(o)) if o == "desc" => -1,
                Some(_) => return Err(err("sort.order", "must be \"asc\" or \"desc\"")),
            };
            Some((field.to_owned(), dir))
        }
    };
    let limit = match top.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.as_u64() {
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(err("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))),
        },
    };
    let skip = match top.get("cursor") {
        None => 0,
        Some(Value::String(c)) => decode_cursor(c).ok_or_else(|| err("cursor", "not a cursor returned by this API"))?,
        Some(_) => return Err(err("cursor", "must be a string")),
    };
    Ok(Search { conditions, sort, limit, skip })
}

fn condition(v: &Value, path: &str, fields: &Fields) -> Result<Condition, Errors> {
    let m = object(v, path, &["field", "op", "value"])?;
    let field = m.get("field").and_then(Value::as_str).ok_or_else(|| err(format!("{path}.field"), "must be a string"))?;
    let Some(ty) = fields.get(field) else {
        return Err(err(format!("{path}.field"), format!("unknown field {field:?}; searchable fields: {}", searchable(fields))));
    };
    let op_name = m.get("op").and_then(Value::as_str).ok_or_else(|| err(format!("{path}.op"), "must be a string"))?;
    let op = Op::parse(op_name)
        .ok_or_else(|| err(format!("{path}.op"), format!("unknown operator {op_name:?}; expected one of: {}", Op::NAMES.join(", "))))?;
    let value = m.get("value").ok_or_else(|| err(format!("{path}.value"), "is required"))?;
    let vpath = format!("{path}.value");
    if *ty == FieldType::Other {
        return Err(err(format!("{path}.field"), format!("field {field:?} is not searchable")));
    }
    let values = match op {
        Op::In => {
            let list = value.as_array().ok_or_else(|| err(&vpath, "must be an array for \"in\""))?;
            if list.is_empty() || list.len() > MAX_IN_VALUES {
                return Err(err(&vpath, format!("must hold 1 to {MAX_IN_VALUES} values")));
            }
            list.iter().enumerate().map(|(i, x)| scalar(x, ty, &format!("{vpath}[{i}]"))).collect::<Result<Vec<_>, _>>()?
        }
        Op::Prefix | Op::Contains => {
            if !matches!(ty, FieldType::String | FieldType::Enum(_)) {
                return Err(err(format!("{path}.op"), format!("{op_name:?} applies to string fields only")));
            }
            let s = value.as_str().ok_or_else(|| err(&vpath, "must be a string"))?;
            if s.chars().count() > MAX_STRING {
                return Err(err(&vpath, format!("longer than {MAX_STRING} characters")));
            }
            vec![Scalar::Str(s.to_owned())]
        }
        Op::Lt | Op::Lte | Op::Gt | Op::Gte if *ty == FieldType::Boolean => {
            return Err(err(format!("{path}.op"), format!("{op_name:?} does not apply to boolean fields")));
        }
        _ => vec![scalar(value, ty, &vpath)?],
    };
    Ok(Condition { field: field.to_owned(), op, values })
}

fn searchable(fields: &Fields) -> String {
    fields.iter().filter(|(_, t)| **t != FieldType::Other).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

fn scalar(v: &Value, ty: &FieldType, path: &str) -> Result<Scalar, Errors> {
    match (ty, v) {
        (FieldType::Integer, Value::Number(n)) => n.as_i64().map(Scalar::Int).ok_or_else(|| err(path, "must be an integer")),
        (FieldType::Number, Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Scalar::Int(i)),
            None => n.as_f64().filter(|f| f.is_finite()).map(Scalar::Float).ok_or_else(|| err(path, "must be a number")),
        },
        (FieldType::String, Value::String(s)) if s.chars().count() <= MAX_STRING => Ok(Scalar::Str(s.clone())),
        (FieldType::Enum(symbols), Value::String(s)) => {
            if symbols.contains(s) {
                Ok(Scalar::Str(s.clone()))
            } else {
                Err(err(path, format!("must be one of: {}", symbols.join(", "))))
            }
        }
        (FieldType::Boolean, Value::Bool(b)) => Ok(Scalar::Bool(*b)),
        _ => Err(err(path, format!("must be a {}", ty.name()))),
    }
}

impl Search {
    /// The MongoDB filter: built only from checked field names, fixed operators and typed values.
    pub fn filter(&self) -> Document {
        let parts: Vec<Bson> = self.conditions.iter().map(|c| Bson::Document(c.filter())).collect();
        if parts.is_empty() {
            Document::new()
        } else {
            doc! { "$and": parts }
        }
    }

    /// The search's condition on the record key as a condition on `_id`, which the store can
    /// look up instead of reading every document: the record store keeps each record under its
    /// key ([`stored_id`]), so `eq` on `key_field` is `_id` equal to the stored id, and a
    /// `prefix` is an anchored regex on `_id` (FerretDB's SQLite backend reads it as a range of
    /// the `_id` index: testcontainers/ferretdb/patches/id-prefix.patch). `None` when the search
    /// has neither; an `eq` is preferred. The condition itself stays in [`Search::filter`], so
    /// this only narrows what is read. A record whose key is longer than [`MAX_RECORD_ID`]
    /// bytes is kept under a hash and is not found by a prefix of its key.
    pub fn key_filter(&self, key_field: &str) -> Option<Bson> {
        let on_key = || self.conditions.iter().filter(|c| c.field == key_field);
        let eq = on_key().find_map(|c| match (c.op, c.values.as_slice()) {
            (Op::Eq, [Scalar::Str(v)]) => Some(Bson::String(stored_id(v.clone()))),
            _ => None,
        });
        eq.or_else(|| {
            on_key().find_map(|c| match (c.op, c.values.as_slice()) {
                (Op::Prefix, [Scalar::Str(p)]) if !p.is_empty() && p.len() <= MAX_RECORD_ID => {
                    Some(Bson::Document(doc! { "$regex": format!("^{}", regex::escape(p)) }))
                }
                _ => None,
            })
        })
    }
}

impl Condition {
    fn filter(&self) -> Document {
        let f = self.field.as_str();
        let first = self.values.first().map(Scalar::bson).unwrap_or(Bson::Null);
        let text = match self.values.first() {
            Some(Scalar::Str(s)) => regex::escape(s),
            _ => String::new(),
        };
        match self.op {
            Op::Eq => doc! { f: { "$eq": first } },
            Op::Ne => doc! { f: { "$ne": first } },
            Op::In => doc! { f: { "$in": self.values.iter().map(Scalar::bson).collect::<Vec<_>>() } },
            Op::Lt => doc! { f: { "$lt": first } },
            Op::Lte => doc! { f: { "$lte": first } },
            Op::Gt => doc! { f: { "$gt": first } },
            Op::Gte => doc! { f: { "$gte": first } },
            Op::Prefix => doc! { f: { "$regex": format!("^{text}") } },
            Op::Contains => doc! { f: { "$regex": text } },
        }
    }
}

/// What a cursor looks like: base64url of a 48-bit big-endian skip offset (every string of this
/// shape is a valid cursor, so the OpenAPI document can describe it exactly).
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{8}$";

/// The opaque cursor for a skip offset.
pub fn encode_cursor(skip: u64) -> String {
    let bytes = skip.min((1 << 48) - 1).to_be_bytes();
    URL_SAFE_NO_PAD.encode(&bytes[2..])
}

fn decode_cursor(c: &str) -> Option<u64> {
    if c.len() != 8 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    let mut out = [0u8; 8];
    out[2..].copy_from_slice(bytes.get(..6)?);
    Some(u64::from_be_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        let mut f = Fields::new();
        let _ = f.insert("amount".into(), FieldType::Number);
        let _ = f.insert("status".into(), FieldType::Enum(vec!["COMPLETED".into(), "FAILED".into()]));
        let _ = f.insert("payment_id".into(), FieldType::String);
        let _ = f.insert("payment_method".into(), FieldType::Other);
        f
    }

    #[test]
    fn parses_the_grammar() {
        let body = br#"{"filter":{"and":[{"field":"status","op":"eq","value":"COMPLETED"},{"field":"amount","op":"gte","value":100},{"field":"payment_id","op":"prefix","value":"3f."}]},"sort":{"field":"amount","order":"desc"},"limit":10}"#;
        let s = parse(body, &fields()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.limit, 10);
        assert_eq!(s.sort, Some(("amount".into(), -1)));
        let f = s.filter();
        assert!(f.to_string().contains(r#""$regex": "^3f\.""#), "{f}");
        let c = encode_cursor(50);
        let s = parse(format!(r#"{{"cursor":"{c}"}}"#).as_bytes(), &fields()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.skip, 50);
    }

    #[test]
    fn rejects_injection_and_bad_input() {
        for (body, field) in [
            (r#"{"filter":{"$where":"1"}}"#, "filter.$where"),
            (r#"{"filter":{"field":"amount","op":"$ne","value":1}}"#, "filter.op"),
            (r#"{"filter":{"field":"payment_id","op":"eq","value":{"$gt":""}}}"#, "filter.value.$gt"),
            (r#"{"filter":{"field":"nope","op":"eq","value":1}}"#, "filter.field"),
            (r#"{"filter":{"field":"amount","op":"eq","value":"x"}}"#, "filter.value"),
            (r#"{"filter":{"field":"status","op":"eq","value":"WHATEVER"}}"#, "filter.value"),
            (r#"{"limit":100000}"#, "limit"),
            (r#"{"extra":1}"#, "extra"),
            (r#"{"filter":{"field":"payment_method","op":"eq","value":1}}"#, "filter.field"),
        ] {
            let e = parse(body.as_bytes(), &fields()).err().unwrap_or_else(|| panic!("{body} accepted"));
            assert_eq!(e[0].field, field, "{body}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(deep.as_bytes(), &fields()).is_err());
    }

    #[test]
    fn key_conditions_become_id_conditions() {
        let key = |body: &str| parse(body.as_bytes(), &fields()).unwrap_or_else(|e| panic!("{e:?}")).key_filter("payment_id");
        assert_eq!(key(r#"{"filter":{"field":"status","op":"eq","value":"COMPLETED"}}"#), None);
        assert_eq!(key(r#"{"filter":{"field":"payment_id","op":"contains","value":"ab"}}"#), None);
        assert_eq!(key(r#"{"filter":{"field":"payment_id","op":"ne","value":"ab"}}"#), None);
        assert_eq!(key(r#"{"filter":{"field":"payment_id","op":"prefix","value":""}}"#), None);
        assert_eq!(
            key(r#"{"filter":{"field":"payment_id","op":"prefix","value":"a.b"}}"#),
            Some(Bson::Document(doc! { "$regex": "^a\\.b" })),
            "a literal prefix"
        );
        // An eq wins over a prefix, wherever it is.
        assert_eq!(
            key(r#"{"filter":{"and":[{"field":"payment_id","op":"prefix","value":"a"},{"field":"payment_id","op":"eq","value":"ab"}]}}"#),
            Some(Bson::String("ab".into()))
        );
        // Keys longer than MAX_RECORD_ID are stored under their hash: an eq looks that up, a
        // prefix that long cannot be the start of a stored id.
        let long = "x".repeat(MAX_RECORD_ID + 1);
        let eq = key(&format!(r#"{{"filter":{{"field":"payment_id","op":"eq","value":"{long}"}}}}"#));
        assert_eq!(eq, Some(Bson::String(stored_id(long.clone()))));
        assert!(matches!(eq, Some(Bson::String(s)) if s.starts_with("sha256:")));
        assert_eq!(key(&format!(r#"{{"filter":{{"field":"payment_id","op":"prefix","value":"{long}"}}}}"#)), None);
    }
}
