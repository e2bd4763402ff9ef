//! The typed `DataProduct` declaration: the seed's YAML exactly, plus optional extension keys.
//! Every struct denies unknown keys, so a misspelling is an error that names the key.

use serde::Deserialize;

use super::sla::{FreshnessSla, Percent};

/// `apiVersion` this build understands.
pub const API_VERSION: &str = "datamesh.banking.com/v1";

/// One data product as declared by its domain team.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataProduct {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be `DataProduct`.
    pub kind: String,
    /// Who owns it and what it is called.
    pub metadata: Metadata,
    /// Sources, contracts, access, APIs and lineage.
    pub spec: Spec,
}

/// Identity and ownership.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique name; the API's `{product}` path segment.
    pub name: String,
    /// Owning domain (payments, loans, cards).
    pub domain: String,
    /// Version of the declaration.
    pub version: String,
    /// Owning team's address.
    pub owner: String,
    /// Free text for catalogues (extension).
    #[serde(default)]
    pub description: Option<String>,
}

/// The body of a data product.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Source systems the product is built from.
    #[serde(default)]
    pub sources: Sources,
    /// Data contracts; the first is the default for `check` and for unbound topics.
    pub contracts: Vec<ContractSpec>,
    /// Role-based access rules.
    #[serde(default)]
    pub access: Vec<AccessRule>,
    /// How the product is served.
    #[serde(default)]
    pub apis: Apis,
    /// Product-level lineage.
    #[serde(default)]
    pub lineage: Lineage,
}

/// Source systems.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// Relational sources (also the truth for accuracy).
    #[serde(default)]
    pub mysql: Option<MysqlSource>,
    /// Document sources.
    #[serde(default)]
    pub mongodb: Option<MongoSource>,
}

/// A MySQL database and its tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSource {
    /// Database (schema) name.
    pub database: String,
    /// Tables the product reads.
    pub tables: Vec<String>,
}

/// A MongoDB database and its collections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSource {
    /// Database name.
    pub database: String,
    /// Collections the product reads.
    pub collections: Vec<String>,
}

/// One data contract: a schema plus quality SLAs, and (extensions) how it binds to the stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContractSpec {
    /// Contract name, unique within the product.
    pub name: String,
    /// Contract version, carried into dead letters and alerts.
    pub version: String,
    /// Schema file: JSON Schema (`.json`) or Avro (`.avsc`). A path starting with `schemas/` is
    /// looked up in the configured schemas directory.
    pub schema: String,
    /// Quality SLAs measured on the stream.
    pub quality: QualitySpec,
    /// Extension: Kafka topics bound to this contract. Default: the first contract binds every
    /// topic of `spec.apis.kafka.topics` that no other contract names.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Extension: the field holding the record id (a top-level property). Default: the first
    /// required property whose name ends in `_id`.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Extension: the event-time field(s) freshness is measured from, tried in order.
    /// Default: `updated_at`, then `created_at`.
    #[serde(default)]
    pub event_time_fields: Option<Vec<String>>,
    /// Extension: accuracy reconciliation against the product's MySQL source.
    #[serde(default)]
    pub reconciliation: Option<ReconciliationSpec>,
    /// Extension: how Avro records are framed and which writer schemas they may use.
    #[serde(default)]
    pub avro: Option<AvroSpec>,
    /// Extension: business rules beyond the schema (CEL expressions), checked on every record
    /// that holds to the schema.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Extension: further versions of this contract, side by side with the one above. A record
    /// is held to the enforced version its `meshguard.contract.version` header names, else to the
    /// newest enforced one; `shadow` versions are checked too and only counted.
    #[serde(default)]
    pub versions: Vec<VersionSpec>,
    /// Extension: a key that must not repeat within a horizon (duplicates counted, and
    /// dead-lettered with class `duplicate` when `deadLetter` is true).
    #[serde(default)]
    pub unique: Option<UniqueSpec>,
    /// Extension: how many records a window should hold (an SLA like the others).
    #[serde(default)]
    pub volume: Option<VolumeSpec>,
    /// Extension: the table or collection of `spec.sources` this contract's data rests in, which
    /// `meshguard scan` reads and holds to the contract. Default, for a product that binds none:
    /// the one declared table or collection named after the contract (below).
    #[serde(default)]
    pub source: Option<SourceSpec>,
}

/// Where a contract's data rests (extension): exactly one of `mysql` or `mongodb`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A table of `spec.sources.mysql.tables`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<TableSource>,
    /// A collection of `spec.sources.mongodb.collections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<CollectionSource>,
}

/// A contract bound to a MySQL table: each row is a record, its columns the record's fields.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableSource {
    /// The table, in the database of `mysql.url`.
    pub table: String,
    /// A unique column rows are paged by and reported with (default: the contract's key field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// The column whose newest value is the table's freshness (default: the contract's
    /// event-time fields, then its required `date-time` properties, the first non-null one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_column: Option<String>,
}

/// A contract bound to a MongoDB collection: each document is a record.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CollectionSource {
    /// The collection, in `spec.sources.mongodb.database`.
    pub collection: String,
    /// The field documents are reported by (default: the contract's key field). The collection
    /// is read through one cursor, in the server's natural order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    /// The field whose newest value is the collection's freshness (default as for tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_field: Option<String>,
}

/// A contract's source binding as resolved at load: what `meshguard scan` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBinding {
    /// The system and the table or collection.
    pub at: SourceAt,
    /// The key column or field: MySQL rows are paged by it; every record is reported by it.
    pub key: String,
    /// Event-time columns or fields, the first non-null one of a record counts.
    pub event_time: Vec<String>,
    /// The contract's top-level properties (a table's other columns are not read).
    pub fields: Vec<String>,
    /// Whether the product declared it (`source:`) rather than took the default.
    pub declared: bool,
}

/// A bound table or collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAt {
    /// A table in the database of `mysql.url`.
    Mysql {
        /// The declared database (`spec.sources.mysql.database`), for messages.
        database: String,
        /// The table.
        table: String,
    },
    /// A collection in the declared database.
    Mongodb {
        /// `spec.sources.mongodb.database`.
        database: String,
        /// The collection.
        collection: String,
    },
}

impl SourceAt {
    /// The table's or collection's name (what `scan --source` selects).
    pub fn name(&self) -> &str {
        match self {
            Self::Mysql { table, .. } => table,
            Self::Mongodb { collection, .. } => collection,
        }
    }

    /// `mysql table payments` / `mongodb collection banking.payment_analytics`.
    pub fn describe(&self) -> String {
        match self {
            Self::Mysql { table, .. } => format!("mysql table {table}"),
            Self::Mongodb { database, collection } => format!("mongodb collection {database}.{collection}"),
        }
    }
}

/// A uniqueness constraint (extension).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UniqueSpec {
    /// The key: one or more fields (dotted for nested ones), all strings or numbers.
    pub fields: Vec<String>,
    /// How long a key is remembered (`10m`, `1h`; default 1h).
    #[serde(default)]
    pub horizon: Option<FreshnessSla>,
    /// Keys remembered per partition at most (default 100000): the state stays bounded.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Whether a duplicate is dead-lettered (class `duplicate`) rather than only counted.
    #[serde(default)]
    pub dead_letter: bool,
}

/// A volume SLA per window (extension).
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Fewest records a window should hold.
    #[serde(default)]
    pub min: Option<u64>,
    /// Most records a window should hold.
    #[serde(default)]
    pub max: Option<u64>,
}

impl VolumeSpec {
    /// Why a window of `count` records breaches the SLA, or `None` when it holds.
    pub fn breach(&self, count: u64) -> Option<String> {
        match (self.min, self.max) {
            (Some(min), _) if count < min => Some(format!("{count} records, fewer than the minimum {min}")),
            (_, Some(max)) if count > max => Some(format!("{count} records, more than the maximum {max}")),
            _ => None,
        }
    }
}

/// Another version of a contract (extension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// The version, unique within the contract; what the header names and dead letters carry.
    pub version: String,
    /// Its schema file (same format as the contract's: JSON Schema or Avro).
    pub schema: String,
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub mode: VersionMode,
    /// Its business rules; the contract's rules when absent.
    #[serde(default)]
    pub rules: Option<Vec<RuleSpec>>,
}

/// Whether a version's verdict counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionMode {
    /// Records held to this version are rejected when they break it.
    #[default]
    Enforce,
    /// Every record is also checked against this version; its would-be rejections are counted,
    /// never dead-lettered: a team sees what the version would reject before enforcing it.
    Shadow,
}

/// A named business rule (extension): a CEL expression that must be `true` for every record.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the contract: the violation's `rule` and the metric label.
    pub name: String,
    /// The CEL expression. Top-level fields are variables (`amount > 0.0`); the whole record is
    /// `record` (`has(record.completed_at)`).
    pub expr: String,
    /// `error` (default: the record is dead-lettered) or `warn` (only counted).
    #[serde(default)]
    pub severity: RuleSeverity,
    /// What the rule protects, for people and catalogues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a failed rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSeverity {
    /// The record is rejected like a schema violation (keyword `rule`).
    #[default]
    Error,
    /// The failure is counted, the record passes.
    Warn,
}

impl RuleSeverity {
    /// The stable name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
        }
    }
}

/// How an Avro contract's records arrive (extension).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AvroSpec {
    /// `auto` (default), `confluent`, `single-object` or `plain`.
    #[serde(default)]
    pub encoding: crate::decode::Framing,
    /// Confluent schema id → writer schema file.
    #[serde(default, deserialize_with = "schema_ids")]
    pub registry: std::collections::BTreeMap<u32, String>,
    /// Further writer schemas recognised by fingerprint in single-object encoding.
    #[serde(default)]
    pub writers: Vec<String>,
    /// Writer schema of plain datums (default: the contract's schema).
    #[serde(default)]
    pub plain_writer: Option<String>,
}

/// Quality SLAs of a contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    /// Largest acceptable age of an event (`1s`, `500ms`, `5m`).
    pub freshness: FreshnessSla,
    /// Smallest acceptable share of required fields present (`100%`).
    pub completeness: Percent,
    /// Smallest acceptable share of records matching the source (`99.999%`).
    pub accuracy: Percent,
}

/// How a contract's records are checked against the source database (extension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReconciliationSpec {
    /// Source table (must be one of `spec.sources.mysql.tables`).
    pub table: String,
    /// Primary-key column matched against the record id.
    pub key_column: String,
    /// Amount column, compared as a decimal.
    pub amount_column: String,
    /// Amount field in the event.
    pub amount_field: String,
    /// Currency column, compared when given.
    #[serde(default)]
    pub currency_column: Option<String>,
    /// Currency field in the event.
    #[serde(default)]
    pub currency_field: Option<String>,
    /// Largest difference that still matches (default `0.01`, the seed's tolerance).
    #[serde(default)]
    pub tolerance: Option<rust_decimal::Decimal>,
}

/// A role and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Role name as found in `users.roles` or a token claim.
    pub role: String,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
}

/// A permission in an access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// GET requests.
    Read,
    /// Every other method.
    Write,
    /// Implies read and write.
    Admin,
}

/// How the product is served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apis {
    /// REST endpoints.
    #[serde(default)]
    pub rest: Option<RestApi>,
    /// GraphQL schema.
    #[serde(default)]
    pub graphql: Option<GraphqlApi>,
    /// Kafka topics the domain publishes.
    #[serde(default)]
    pub kafka: Option<KafkaApi>,
}

/// REST description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestApi {
    /// Public base URL (`https://api.banking.com/v1/payments`) or path (`/v1/payments`): its
    /// path is the prefix of the served endpoints; its host is the gateway's, not ours. Without
    /// one, or with no path, the endpoints are served at the root.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Endpoint templates, relative to the base URL's path.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

impl RestApi {
    /// The base URL's path: its segments as written (percent-encoded) and decoded, empty for
    /// the root. An error says what is wrong with the base URL.
    pub fn base_path(&self) -> Result<BasePath, String> {
        match &self.base_url {
            None => Ok(BasePath::default()),
            Some(url) => BasePath::parse(url),
        }
    }
}

/// The path part of `apis.rest.baseUrl`, the prefix of a product's REST aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BasePath {
    /// The path as written, without a trailing `/` (`/v1/payments`; empty for the root).
    pub raw: String,
    /// Its segments, percent-decoded (compared with a request's decoded segments).
    pub segments: Vec<String>,
}

impl BasePath {
    /// Reads `https://host[:port]/path` or `/path`. A query, a fragment, an empty or dot
    /// segment, a template (`{x}`) or an escape that is not UTF-8 is refused: the prefix must be
    /// a plain path the aliases can be matched under.
    pub fn parse(url: &str) -> Result<Self, String> {
        let path = if let Some((scheme, rest)) = url.split_once("://") {
            if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
                return Err(format!("baseUrl {url:?}: only http(s) URLs or paths starting with / are supported"));
            }
            match rest.find(['/', '?', '#']) {
                Some(i) if rest[..i].is_empty() => return Err(format!("baseUrl {url:?} has no host")),
                Some(i) => &rest[i..],
                None if rest.is_empty() => return Err(format!("baseUrl {url:?} has no host")),
                None => "",
            }
        } else if url.starts_with('/') {
            url
        } else {
            return Err(format!("baseUrl {url:?}: expected an http(s) URL or a path starting with /"));
        };
        if path.contains(['?', '#']) {
            return Err(format!("baseUrl {url:?}: a query or fragment cannot prefix a route"));
        }
        // One trailing slash is how base URLs are often written; it adds no segment.
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.is_empty() {
            return Ok(Self::default());
        }
        let mut segments = Vec::new();
        for seg in path[1..].split('/') {
            let decoded = percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| format!("baseUrl {url:?}: segment {seg:?} does not decode to UTF-8"))?;
            if seg.is_empty() || decoded == "." || decoded == ".." {
                return Err(format!("baseUrl {url:?}: empty, '.' or '..' segments are not served"));
            }
            if decoded.contains(['{', '}']) {
                return Err(format!("baseUrl {url:?}: templated segments ({seg}) are not supported"));
            }
            segments.push(decoded.into_owned());
        }
        Ok(Self { raw: path.to_owned(), segments })
    }
}

/// GraphQL description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlApi {
    /// Schema file.
    pub schema: String,
}

/// Kafka topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaApi {
    /// Topics the domain's services publish.
    pub topics: Vec<String>,
}

/// Product-level lineage.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// Where the product's data comes from.
    #[serde(default)]
    pub upstream: Vec<Upstream>,
    /// Who consumes it.
    #[serde(default)]
    pub downstream: Vec<Downstream>,
}

/// An upstream system.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// System name.
    pub source: String,
    /// How it is connected (api, database, kafka).
    #[serde(rename = "type")]
    pub kind: String,
}

/// A downstream consumer.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Downstream {
    /// Consumer name.
    pub consumer: String,
    /// How it is connected (api, kafka).
    #[serde(rename = "type")]
    pub kind: String,
}

/// Schema ids as YAML writes them (`1: file`), or as JSON must (`"1": file`: the catalog in
/// MongoDB reads declarations back from JSON, whose keys are strings).
fn schema_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::collections::BTreeMap<u32, String>, D::Error> {
    #[derive(Deserialize, PartialEq, Eq, Hash)]
    #[serde(untagged)]
    enum Id {
        Number(u32),
        Text(String),
    }
    let raw = std::collections::HashMap::<Id, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(id, file)| match id {
            Id::Number(n) => Ok((n, file)),
            Id::Text(t) => {
                t.parse::<u32>().map(|n| (n, file)).map_err(|_| serde::de::Error::custom(format!("schema id {t:?} is not a number")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::BasePath;

    fn segs(url: &str) -> Vec<String> {
        BasePath::parse(url).unwrap_or_else(|e| panic!("{e}")).segments
    }

    #[test]
    fn the_base_path_is_the_urls_path() {
        assert_eq!(segs("https://api.banking.com/v1/payments"), vec!["v1", "payments"]);
        assert_eq!(BasePath::parse("https://api.banking.com/v1/payments").map(|b| b.raw), Ok("/v1/payments".to_owned()));
        assert_eq!(segs("HTTP://h:8443/v1/"), vec!["v1"]);
        assert_eq!(segs("/v1/my%20api"), vec!["v1", "my api"]);
        assert_eq!(BasePath::parse("https://api.banking.com"), Ok(BasePath::default()));
        assert_eq!(BasePath::parse("https://api.banking.com/"), Ok(BasePath::default()));
        assert_eq!(BasePath::parse("/"), Ok(BasePath::default()));
    }

    #[test]
    fn base_paths_that_cannot_prefix_a_route_are_refused() {
        for bad in [
            "api.banking.com/v1",
            "ftp://h/v1",
            "https:///v1",
            "https://h/v1?x=1",
            "https://h/v1#top",
            "/v1//payments",
            "/v1/../admin",
            "/v1/{version}",
            "/v1/%FF",
        ] {
            assert!(BasePath::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
