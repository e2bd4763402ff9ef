//! A dead letter: the original key and bytes unchanged, the reason in headers.

use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use serde::Serialize;

use crate::contract::{Contract, Violation};
use crate::verdict::Rejection;

/// Header names, fixed for consumers of the dead-letter topic.
pub mod header {
    /// Topic the record was read from.
    pub const SOURCE_TOPIC: &str = "meshguard.source.topic";
    /// Its partition.
    pub const SOURCE_PARTITION: &str = "meshguard.source.partition";
    /// Its offset.
    pub const SOURCE_OFFSET: &str = "meshguard.source.offset";
    /// `decode` or `validate`.
    pub const STAGE: &str = "meshguard.stage";
    /// Data product.
    pub const PRODUCT: &str = "meshguard.product";
    /// Contract name.
    pub const CONTRACT: &str = "meshguard.contract";
    /// Contract version.
    pub const CONTRACT_VERSION: &str = "meshguard.contract.version";
    /// Stable error class (`json_syntax`, `contract_violation`, …).
    pub const ERROR_CLASS: &str = "meshguard.error.class";
    /// JSON array of `{path, keyword, message}`.
    pub const VIOLATIONS: &str = "meshguard.violations";
    /// Present (`true`) when the original payload was too large to forward and was dropped.
    pub const PAYLOAD_DROPPED: &str = "meshguard.payload.dropped";
    /// Present (`true`) when even without its payload the record was too large, so its key and
    /// its own headers were dropped as well (only meshguard's headers remain).
    pub const KEY_AND_HEADERS_DROPPED: &str = "meshguard.key_and_headers.dropped";
    /// Size in bytes of the original payload, present when it was dropped.
    pub const PAYLOAD_BYTES: &str = "meshguard.payload.bytes";
}

/// How much of the original record a dead letter carries: everything, or (when the producer
/// refuses it as too large) no payload, or no payload, key or original headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// Key, payload and headers unchanged.
    All,
    /// Key and headers; the payload is dropped.
    NoPayload,
    /// Only meshguard's headers.
    ReasonOnly,
}

/// At most this many violations are carried, each message at most this long: a header must
/// stay small however broken the record is.
const MAX_VIOLATIONS: usize = 50;
const MAX_MESSAGE: usize = 300;

#[derive(Serialize)]
struct Carried<'a> {
    path: &'a str,
    keyword: &'a str,
    message: &'a str,
}

fn violations_json(violations: &[Violation]) -> String {
    let carried: Vec<Carried<'_>> = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| Carried { path: &v.path, keyword: &v.keyword, message: truncate(&v.message, MAX_MESSAGE) })
        .collect();
    serde_json::to_string(&carried).unwrap_or_else(|_| "[]".into())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The headers of a dead letter: the original headers first (unless `carry` drops them), then
/// meshguard's reason.
pub fn headers(msg: &BorrowedMessage<'_>, contract: &Contract, rejection: &Rejection, carry: Carry) -> OwnedHeaders {
    // A native copy of the original headers: iterating them would turn each name into a `&str`,
    // and rdkafka panics on a name that is not UTF-8 (a hostile producer can send one).
    let mut h = match (msg.headers(), carry) {
        (Some(original), Carry::All | Carry::NoPayload) => original.detach(),
        _ => OwnedHeaders::new_with_capacity(14),
    };
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let violations = violations_json(&rejection.violations);
    let mut put = |key: &str, value: &str| {
        h = std::mem::replace(&mut h, OwnedHeaders::new()).insert(Header { key, value: Some(value.as_bytes()) });
    };
    put(header::SOURCE_TOPIC, msg.topic());
    put(header::SOURCE_PARTITION, &partition);
    put(header::SOURCE_OFFSET, &offset);
    put(header::STAGE, rejection.stage.as_str());
    put(header::PRODUCT, &contract.product);
    put(header::CONTRACT, &contract.name);
    put(header::CONTRACT_VERSION, &contract.version);
    put(header::ERROR_CLASS, rejection.class);
    put(header::VIOLATIONS, &violations);
    if carry != Carry::All {
        put(header::PAYLOAD_DROPPED, "true");
        put(header::PAYLOAD_BYTES, &msg.payload().map_or(0, <[u8]>::len).to_string());
    }
    if carry == Carry::ReasonOnly {
        put(header::KEY_AND_HEADERS_DROPPED, "true");
    }
    h
}
