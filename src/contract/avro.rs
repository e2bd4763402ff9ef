//! Avro contracts: the `.avsc` is the reader schema; decoding with resolution is the check.

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;

use super::RequiredFields;
use crate::decode::AvroDecoder;
pub use crate::decode::Framing as AvroEncoding;

/// A compiled Avro contract.
#[derive(Debug)]
pub struct AvroContract {
    /// The contract's schema (reader schema), loaded once.
    pub schema: &'static Schema,
    /// Readers for every framing and writer schema the contract accepts.
    pub decoder: AvroDecoder,
}

impl AvroContract {
    /// Required fields of an Avro record schema: fields without a default, nested records
    /// included (a null in a nullable field without default counts as missing).
    pub fn required_fields(schema: &Schema) -> RequiredFields {
        let mut out = Vec::new();
        walk(schema, &mut Vec::new(), &mut out, 0);
        RequiredFields::from_paths(out)
    }
}

fn walk(schema: &Schema, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, depth: usize) {
    if depth > 32 {
        return;
    }
    if let Schema::Record(RecordSchema { fields, .. }) = schema {
        for field in fields {
            prefix.push(field.name.clone());
            if field.default.is_none() {
                out.push(prefix.clone());
            }
            let inner = match &field.schema {
                Schema::Union(u) => u.variants().iter().find(|v| matches!(v, Schema::Record(_))),
                other => Some(other),
            };
            if let Some(inner) = inner {
                walk(inner, prefix, out, depth + 1);
            }
            let _ = prefix.pop();
        }
    }
}
