//! `POST /{product}/validate`: the seed's `validateDataContract` over HTTP. The body is one JSON
//! record (`application/json`), an NDJSON batch (`application/x-ndjson`), or an Avro object
//! container file (`avro/binary`); it is read and judged by the same code as `meshguard check`
//! ([`crate::check::read_from`], [`crate::check::Checker`], [`crate::check::Report`]), so
//! the answer is the `check --format json` report plus one verdict per record. Nothing is
//! stored: it is a read of the product.

use std::io::Cursor;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::problem::{FieldError, Problem};
use crate::check::input::Item;
use crate::check::{Checker, read_from, report_at};
use crate::contract::{Contract, SchemaEngine};

/// Largest body, in bytes.
pub const MAX_VALIDATE_BYTES: usize = 1024 * 1024;
/// Most records in one request (each gets a verdict in the answer).
pub const MAX_VALIDATE_RECORDS: usize = 10_000;
/// The input name in the report.
const INPUT: &str = "request";

fn field(name: &str, message: impl Into<String>) -> Problem {
    Problem::bad_request(vec![FieldError { field: name.into(), message: message.into() }])
}

/// How the body holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The whole body is one record.
    One,
    /// One record per line, or an Avro container file.
    Batch,
}

fn shape(headers: &HeaderMap) -> Shape {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    match essence {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/avro"
        | "avro/binary"
        | "application/octet-stream" => Shape::Batch,
        _ => Shape::One,
    }
}

/// Parses the query (`contract`, `now`) and the body, and judges every record.
pub async fn validate(
    contract: &Arc<Contract>,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, Problem> {
    let body = body.map_err(|e| field("body", format!("unreadable or larger than {MAX_VALIDATE_BYTES} bytes: {e}")))?;
    let now = match query.get("now") {
        None => OffsetDateTime::now_utc(),
        Some(s) => OffsetDateTime::parse(s, &Rfc3339).map_err(|_| field("now", "must be an RFC 3339 instant"))?,
    };
    let shape = shape(headers);
    let contract = contract.clone();
    tokio::task::spawn_blocking(move || judge(&contract, &body, shape, now))
        .await
        .map_err(|_| Problem::unavailable("the validation did not complete"))?
}

fn judge(base: &Contract, body: &[u8], shape: Shape, now: OffsetDateTime) -> Result<Value, Problem> {
    let mut checker =
        Checker::new(base, None).map_err(|r| field("contract", r.violations.first().map(|v| v.message.clone()).unwrap_or_default()))?;
    let contract = checker.contract();
    checker.report.inputs.push(INPUT.into());
    let mut results = Vec::new();
    let mut too_many = false;
    let mut add = |line: u64, item: Item| {
        if results.len() >= MAX_VALIDATE_RECORDS {
            too_many = true;
            return;
        }
        let eval = checker.add(&report_at(INPUT, line), item, now);
        let rejection = eval.rejection.as_ref();
        results.push(json!({
            "line": line,
            "valid": eval.is_valid(),
            "record_id": eval.record_id,
            "stage": rejection.map(|r| r.stage),
            "violations": rejection.map(|r| json!(r.violations)).unwrap_or_else(|| json!([])),
            "completeness": { "present": eval.completeness.present, "applicable": eval.completeness.applicable },
            "freshness_seconds": eval.freshness.map(|f| f.as_secs_f64()),
        }));
    };
    match shape {
        Shape::One => {
            let trimmed = body.trim_ascii();
            if trimmed.is_empty() {
                return Err(field("body", "is empty: send one record, or NDJSON with Content-Type: application/x-ndjson"));
            }
            add(1, Item::Line(trimmed.to_vec()));
        }
        Shape::Batch => {
            let reader_schema = match &contract.engine {
                SchemaEngine::Avro(a) => Some(a.schema),
                SchemaEngine::Json(_) => None,
            };
            read_from(Cursor::new(body), INPUT, reader_schema, &mut add).map_err(|e| field("body", e.message))?;
        }
    }
    if too_many {
        return Err(field("body", format!("holds more than {MAX_VALIDATE_RECORDS} records")));
    }
    if results.is_empty() {
        return Err(field("body", "holds no record"));
    }
    let report = checker.finish();
    let mut out = serde_json::to_value(&report).map_err(|_| Problem::unavailable("the report cannot be rendered"))?;
    out["results"] = Value::Array(results);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_choose_the_shape() {
        let mut h = HeaderMap::new();
        assert_eq!(shape(&h), Shape::One);
        let _ = h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson; charset=utf-8"));
        assert_eq!(shape(&h), Shape::Batch);
        let _ = h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        assert_eq!(shape(&h), Shape::One);
    }
}
