//! Decode: bytes off the wire into a record (`serde_json::Value`), for JSON and Avro.
//!
//! Avro arrives in three framings: the Confluent wire format (magic `0x00` + 4-byte schema id),
//! Avro single-object encoding (`C3 01` + 8-byte Rabin fingerprint) and plain datums written
//! with a configured schema. Each is resolved against the contract's schema as reader schema.

mod avro;

use serde_json::Value;

pub(crate) use self::avro::leak as leak_schema;
pub use self::avro::{AvroDecoder, Framing};

/// Why bytes could not become a record. The class is a small fixed set (it labels metrics and
/// the `meshguard-error-class` dead-letter header); the message says what exactly went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct DecodeError {
    /// Stable class name.
    pub class: DecodeClass,
    /// Human detail (position, offending byte, schema id).
    pub message: String,
}

/// Stable classes of decode failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeClass {
    /// The payload is empty (a tombstone, or a producer bug).
    Empty,
    /// Not well-formed JSON (includes invalid UTF-8, NaN, excessive nesting, numbers out of range).
    JsonSyntax,
    /// A framing header names a schema id or fingerprint meshguard does not know.
    AvroUnknownSchema,
    /// The bytes do not decode with the writer schema.
    AvroDatum,
    /// The writer's data cannot be resolved to the contract's (reader) schema.
    AvroResolution,
    /// The decoded Avro value has no JSON form (NaN float, …).
    AvroToJson,
}

impl DecodeClass {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::JsonSyntax => "json_syntax",
            Self::AvroUnknownSchema => "avro_unknown_schema",
            Self::AvroDatum => "avro_datum",
            Self::AvroResolution => "avro_resolution",
            Self::AvroToJson => "avro_to_json",
        }
    }
}

impl std::fmt::Display for DecodeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a JSON record.
pub fn decode_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError { class: DecodeClass::Empty, message: "empty payload".into() });
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError { class: DecodeClass::JsonSyntax, message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_json_is_a_decode_error_not_a_panic() {
        let deep = "[".repeat(100_000);
        for bad in [&b""[..], b"{", b"\xff\xfe", b"NaN", b"{\"a\": Infinity}", b"1e400", deep.as_bytes()] {
            let err = decode_json(bad).err();
            assert!(err.is_some(), "{:?} should not decode", String::from_utf8_lossy(bad));
        }
    }
}
