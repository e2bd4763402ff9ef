//! A bound MongoDB collection, read in pages of one cursor: `find({})` with `batch_size n`, in
//! the server's natural order, each page a `getMore`. No filter and no sort: FerretDB 1.x (the
//! MongoDB-wire server of the tests) pushes down nothing but exact `_id` equality, so keyset
//! pages (`_id > last`, sorted by `_id`) would each read and sort the whole collection (measured:
//! 200,000 documents, 200 pages, not done after 10 minutes), while one cursor reads it once.
//! Each document becomes a record: Decimal128 written as its decimal digits, dates as RFC 3339
//! UTC, ObjectIds as hex strings; `_id` itself is left out unless the contract names it.

use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Cursor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Row, is_json_number, push_name, push_string, rfc3339};
use crate::error::{Error, Secrets, System, redact_uri};
use crate::product::model::SourceBinding;

fn refused(message: impl std::fmt::Display) -> Error {
    Error::refused(System::MongoDb, message)
}

/// Appends `value` as JSON.
pub fn push_bson(out: &mut Vec<u8>, value: &Bson) {
    match value {
        Bson::Null | Bson::Undefined => out.extend_from_slice(b"null"),
        Bson::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Bson::Int32(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Bson::Int64(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Bson::Double(f) if f.is_finite() => {
            // serde_json writes the shortest text that reads back as the same double.
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Bson::Double(f) => push_string(out, &f.to_string()),
        Bson::Decimal128(d) => {
            let text = d.to_string();
            if is_json_number(&text) { out.extend_from_slice(text.as_bytes()) } else { push_string(out, &text) }
        }
        Bson::String(s) | Bson::Symbol(s) => push_string(out, s),
        Bson::DateTime(dt) => match instant(dt).and_then(rfc3339) {
            Some(t) => push_string(out, &t),
            None => push_string(out, &dt.to_string()),
        },
        Bson::ObjectId(id) => push_string(out, &id.to_hex()),
        Bson::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_bson(out, item);
            }
            out.push(b']');
        }
        Bson::Document(d) => push_document(out, d, false),
        other => push_string(out, &other.to_string()),
    }
}

/// Appends `doc` as a JSON object, without `_id` when `skip_id`.
pub fn push_document(out: &mut Vec<u8>, doc: &Document, skip_id: bool) {
    out.push(b'{');
    let mut first = true;
    for (name, value) in doc {
        if skip_id && name == "_id" {
            continue;
        }
        push_name(out, &mut first, name);
        push_bson(out, value);
    }
    out.push(b'}');
}

fn instant(dt: &bson::DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(dt.timestamp_millis()) * 1_000_000).ok()
}

/// A field's value as an instant: a BSON date, or a string in RFC 3339.
fn event_time(value: &Bson) -> Option<OffsetDateTime> {
    match value {
        Bson::DateTime(dt) => instant(dt),
        Bson::String(s) => OffsetDateTime::parse(s, &Rfc3339).ok(),
        _ => None,
    }
}

/// A field's value as the key the report shows.
fn key_text(value: &Bson) -> String {
    match value {
        Bson::String(s) => s.clone(),
        Bson::ObjectId(id) => id.to_hex(),
        other => other.to_string(),
    }
}

/// A MongoDB client for `mongodb.uri` (a pool: scheduled scans keep one for every scan).
#[derive(Debug, Clone)]
pub struct Server {
    client: Client,
    /// The URI with its password hidden, for messages.
    shown: String,
    secrets: Secrets,
}

impl Server {
    /// A client for `uri` (5 s to select a server or connect, unless the URI says otherwise).
    /// The connection is made on first use.
    pub async fn connect(uri: &str) -> Result<Self, Error> {
        let secrets = Secrets::of(uri);
        let scrub = |e: &dyn std::fmt::Display| secrets.scrub(&e.to_string()).replace('\n', " ");
        let mut options =
            ClientOptions::parse(uri).await.map_err(|e| refused(format_args!("mongodb.uri {}: {}", redact_uri(uri), scrub(&e))))?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(5));
        }
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(Duration::from_secs(5));
        }
        let secrets = secrets.with_password(options.credential.as_ref().and_then(|c| c.password.clone()));
        let scrub = |e: &dyn std::fmt::Display| secrets.scrub(&e.to_string()).replace('\n', " ");
        let client = Client::with_options(options).map_err(|e| refused(format_args!("mongodb.uri {}: {}", redact_uri(uri), scrub(&e))))?;
        Ok(Self { client, shown: redact_uri(uri), secrets })
    }
}

/// A checked collection and the cursor its pages come from.
#[derive(Debug)]
pub struct CollectionReader {
    collection: Collection<Document>,
    /// The field documents are reported by.
    key: String,
    /// Event-time fields, the first present one counts.
    event_time: Vec<String>,
    /// Whether `_id` is a field of the record (the contract names it).
    keep_id: bool,
    page_size: u32,
    /// Opened by the first page (boxed: a cursor is large, a reader is moved around).
    cursor: Option<Box<Cursor<Document>>>,
    done: bool,
    secrets: Secrets,
}

impl CollectionReader {
    /// Connects to `uri` and checks that `database.collection` exists.
    pub async fn open(uri: &str, binding: &SourceBinding, database: &str, collection: &str, page_size: u32) -> Result<Self, Error> {
        let server = Server::connect(uri).await?;
        Self::on(&server, binding, database, collection, page_size).await
    }

    /// Checks that `database.collection` exists on `server` (connected once, read many times).
    pub async fn on(server: &Server, binding: &SourceBinding, database: &str, collection: &str, page_size: u32) -> Result<Self, Error> {
        let secrets = server.secrets.clone();
        let db = server.client.database(database);
        let names = db.list_collection_names().await.map_err(|e| {
            refused(format_args!("cannot reach MongoDB at {}: {}", server.shown, secrets.scrub(&e.to_string()).replace('\n', " ")))
        })?;
        if !names.iter().any(|n| n == collection) {
            return Err(refused(format_args!("collection {database}.{collection} does not exist")));
        }
        Ok(Self {
            collection: db.collection(collection),
            key: binding.key.clone(),
            event_time: binding.event_time.clone(),
            keep_id: binding.fields.iter().any(|f| f == "_id"),
            page_size: page_size.max(1),
            cursor: None,
            done: false,
            secrets,
        })
    }

    /// The next page of the cursor.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Row>>, Error> {
        if self.done {
            return Ok(None);
        }
        let name = self.collection.name().to_owned();
        let secrets = &self.secrets;
        let failed = |e: mongodb::error::Error| {
            Error::transient(
                System::MongoDb,
                format_args!("reading collection {name}: {}", secrets.scrub(&e.to_string()).replace('\n', " ")),
            )
        };
        let cursor = match &mut self.cursor {
            Some(c) => c,
            None => self.cursor.insert(Box::new(self.collection.find(doc! {}).batch_size(self.page_size).await.map_err(failed)?)),
        };
        let mut page = Vec::with_capacity(self.page_size as usize);
        while page.len() < self.page_size as usize {
            if !cursor.advance().await.map_err(failed)? {
                self.done = true;
                break;
            }
            let doc: Document = cursor.deserialize_current().map_err(failed)?;
            let key = match doc.get(&self.key) {
                Some(v) => key_text(v),
                None => format!("_id {}", doc.get("_id").map(key_text).unwrap_or_default()),
            };
            let time = self.event_time.iter().find_map(|f| doc.get(f).filter(|v| !matches!(v, Bson::Null))).and_then(event_time);
            let mut json = Vec::with_capacity(256);
            push_document(&mut json, &doc, !self.keep_id);
            page.push(Row { key, json, event_time: time });
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_records_with_exact_values() {
        let amount: bson::Decimal128 = match "12345678901234567.89".parse() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let doc = doc! {
            "_id": bson::oid::ObjectId::parse_str("0123456789abcdef01234567").unwrap_or_default(),
            "payment_id": "p-1",
            "amount": amount,
            "risk": 0.25,
            "n": 3_i64,
            "processed_at": bson::DateTime::from_millis(1_764_800_000_123),
            "tags": ["a", Bson::Null],
        };
        let mut out = Vec::new();
        push_document(&mut out, &doc, true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"payment_id":"p-1","amount":12345678901234567.89,"risk":0.25,"n":3,"processed_at":"2025-12-03T22:13:20.123Z","tags":["a",null]}"#
        );
    }
}
