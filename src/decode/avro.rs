//! Avro decoding with schema resolution to the contract's reader schema.

use std::collections::HashMap;
use std::io::Cursor;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use serde_json::Value;

use super::{DecodeClass, DecodeError};

/// Which framing the producers use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// Confluent if the first byte is `0x00` and ids are configured; single-object if it starts
    /// with `C3 01`; plain datum otherwise.
    #[default]
    Auto,
    /// Magic byte `0x00`, 4-byte big-endian schema id, datum.
    Confluent,
    /// `C3 01`, 8-byte little-endian Rabin fingerprint of the writer schema, datum.
    SingleObject,
    /// The datum alone, written with the configured plain writer schema.
    Plain,
}

/// A datum reader that lives as long as the program (schemas are loaded once at start-up and
/// leaked, so readers with their resolved names can be built once instead of per record).
struct Reader(GenericDatumReader<'static>);

impl Reader {
    fn new(writer: &'static Schema, reader: &'static Schema) -> Result<Self, String> {
        GenericDatumReader::builder(writer).reader_schema(reader).build().map(Self).map_err(|e| e.to_string())
    }
}

/// Decodes every framing a contract accepts.
pub struct AvroDecoder {
    framing: Framing,
    /// Confluent schema id → reader built for that writer schema.
    by_id: HashMap<u32, Reader>,
    /// Rabin fingerprint (little-endian bytes as u64) → reader.
    by_fingerprint: HashMap<u64, Reader>,
    /// Reader for plain datums (writer = the configured plain writer schema).
    plain: Reader,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("framing", &self.framing)
            .field("confluent_ids", &self.by_id.keys().collect::<Vec<_>>())
            .field("fingerprints", &self.by_fingerprint.len())
            .finish()
    }
}

/// Leaks a schema so readers can borrow it for the program's lifetime. Called once per schema
/// file at start-up.
pub(crate) fn leak(schema: Schema) -> &'static Schema {
    Box::leak(Box::new(schema))
}

/// The fingerprint single-object encoding puts in its header.
pub(crate) fn rabin(schema: &Schema) -> u64 {
    let fp = schema.fingerprint::<Rabin>();
    let mut bytes = [0u8; 8];
    for (dst, src) in bytes.iter_mut().zip(fp.bytes.iter()) {
        *dst = *src;
    }
    u64::from_le_bytes(bytes)
}

impl AvroDecoder {
    /// `reader` is the contract's schema; `writers` are extra writer schemas known by
    /// fingerprint; `ids` are Confluent ids; `plain_writer` writes plain datums (default: reader).
    pub fn new(
        framing: Framing,
        reader: &'static Schema,
        writers: &[&'static Schema],
        ids: &[(u32, &'static Schema)],
        plain_writer: Option<&'static Schema>,
    ) -> Result<Self, String> {
        let mut by_fingerprint = HashMap::new();
        for writer in std::iter::once(&reader).chain(writers) {
            let _ = by_fingerprint.insert(rabin(writer), Reader::new(writer, reader)?);
        }
        let mut by_id = HashMap::new();
        for (id, writer) in ids {
            let _ = by_id.insert(*id, Reader::new(writer, reader)?);
        }
        let plain = Reader::new(plain_writer.unwrap_or(reader), reader)?;
        Ok(Self { framing, by_id, by_fingerprint, plain })
    }

    /// Decodes one payload into its JSON form.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError { class: DecodeClass::Empty, message: "empty payload".into() });
        }
        let framing = match self.framing {
            Framing::Auto if bytes[0] == 0 && bytes.len() >= 5 && !self.by_id.is_empty() => Framing::Confluent,
            Framing::Auto if bytes.starts_with(&[0xC3, 0x01]) => Framing::SingleObject,
            Framing::Auto => Framing::Plain,
            other => other,
        };
        let (reader, datum) = match framing {
            Framing::Confluent => {
                let header = bytes.get(..5).ok_or_else(|| unknown("payload shorter than the 5-byte Confluent header".into()))?;
                if header[0] != 0 {
                    return Err(unknown(format!("magic byte is 0x{:02x}, expected 0x00", header[0])));
                }
                let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                let reader = self.by_id.get(&id).ok_or_else(|| unknown(format!("schema id {id} is not configured")))?;
                (reader, &bytes[5..])
            }
            Framing::SingleObject => {
                let header = bytes.get(..10).ok_or_else(|| unknown("payload shorter than the 10-byte single-object header".into()))?;
                if header[..2] != [0xC3, 0x01] {
                    return Err(unknown(format!("marker is {:02x} {:02x}, expected c3 01", header[0], header[1])));
                }
                let mut fp = [0u8; 8];
                fp.copy_from_slice(&header[2..10]);
                let fp = u64::from_le_bytes(fp);
                let reader = self.by_fingerprint.get(&fp).ok_or_else(|| unknown(format!("writer fingerprint {fp:016x} is not known")))?;
                (reader, &bytes[10..])
            }
            Framing::Plain | Framing::Auto => (&self.plain, bytes),
        };
        let mut cursor = Cursor::new(datum);
        let value = reader.0.read_value(&mut cursor).map_err(|e| {
            let text = e.to_string();
            let class =
                if text.contains("resolv") || text.contains("Resolv") { DecodeClass::AvroResolution } else { DecodeClass::AvroDatum };
            DecodeError { class, message: text }
        })?;
        if (cursor.position() as usize) != datum.len() {
            return Err(DecodeError {
                class: DecodeClass::AvroDatum,
                message: format!("{} trailing bytes after the datum", datum.len() - cursor.position() as usize),
            });
        }
        Value::try_from(value).map_err(|e| DecodeError { class: DecodeClass::AvroToJson, message: e.to_string() })
    }
}

fn unknown(message: String) -> DecodeError {
    DecodeError { class: DecodeClass::AvroUnknownSchema, message }
}
