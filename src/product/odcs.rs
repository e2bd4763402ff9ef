//! ODCS (Open Data Contract Standard) v3.1 export and import, so a meshguard contract can be
//! exchanged with the tools of the data-contract world.
//!
//! Export maps one contract of a product to one ODCS document: the schema as ODCS properties
//! (for catalogues) *and* verbatim as a custom property (`meshguardSchema`, so nothing is lost),
//! freshness as the `latency` SLA property, completeness as a `missingValues` library check,
//! accuracy and the business rules as custom checks (engines `meshguard` and `cel`), the owner
//! as the team, `spec.access` as roles, the bound topics, and the Kafka server. Import reverses
//! it; a document from elsewhere (no `meshguardSchema`) gets a draft-07 JSON Schema built from
//! its ODCS properties. What import cannot map is reported field by field, all at once.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::catalog::{Catalog, Files};
use super::model::{Permission, RuleSeverity};
use super::sla::{FreshnessSla, Percent};
use crate::contract::SchemaEngine;

/// The ODCS version written.
pub const API_VERSION: &str = "v3.1.0";
/// ODCS versions import reads (the 3.x documents share the fields meshguard maps).
pub const READABLE_VERSIONS: &[&str] = &["v3.1.0", "v3.0.2", "v3.0.1", "v3.0.0"];

const SCHEMA_PROPERTY: &str = "meshguardSchema";
const FORMAT_PROPERTY: &str = "meshguardSchemaFormat";
const FILE_PROPERTY: &str = "meshguardSchemaFile";
const TOPICS_PROPERTY: &str = "topics";
const KEY_FIELD_PROPERTY: &str = "keyField";
const EVENT_TIME_PROPERTY: &str = "eventTimeFields";
const PRODUCT_VERSION_PROPERTY: &str = "dataProductVersion";

/// SLAs given to a document that declares none: they never breach, and import says so.
const DEFAULT_FRESHNESS: &str = "24h";
const DEFAULT_PERCENT: &str = "0%";

/// Why a contract could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No such product.
    #[error("unknown product {name:?}; known products: {known}")]
    UnknownProduct {
        /// The name asked for.
        name: String,
        /// The loaded products.
        known: String,
    },
    /// No such contract in the product.
    #[error("product {product:?} has no contract {name:?}; its contracts: {known}")]
    UnknownContract {
        /// The product.
        product: String,
        /// The name asked for.
        name: String,
        /// Its contracts.
        known: String,
    },
    /// The contract's schema file cannot be read or parsed.
    #[error("{file}: {message}")]
    Schema {
        /// The schema file.
        file: String,
        /// Why.
        message: String,
    },
}

/// One field of an ODCS document that import cannot map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Where in the document (`schema[0].properties[2].logicalType`).
    pub field: String,
    /// Why, and what to do.
    pub reason: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every field import could not map.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ImportError(pub Vec<FieldProblem>);

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Values a data product needs that an ODCS document may lack.
#[derive(Debug, Clone, Default)]
pub struct ImportDefaults {
    /// `metadata.domain` when the document has no `domain`.
    pub domain: Option<String>,
    /// `metadata.owner` when the document's team has no member.
    pub owner: Option<String>,
}

/// What import produces: a product declaration and its schema files.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `metadata.name`; the product file is `<name>.yaml`.
    pub product_name: String,
    /// The product declaration (YAML, the seed's format).
    pub product_yaml: String,
    /// `(file name under the schemas directory, contents)`.
    pub schemas: Vec<(String, String)>,
    /// Defaults applied, for the user to review.
    pub notes: Vec<String>,
}

/// A decimal as a JSON number (exact for the short decimals SLAs use).
fn number(d: Decimal) -> Value {
    d.normalize().to_string().parse::<serde_json::Number>().map(Value::Number).unwrap_or(Value::Null)
}

fn custom(property: &str, value: Value) -> Value {
    json!({ "property": property, "value": value })
}

/// Exports `contract` (default: the first) of `product` as an ODCS v3.1 document.
pub fn export(catalog: &Catalog, files: &Files, product: &str, contract: Option<&str>, kafka_host: &str) -> Result<Value, ExportError> {
    let Some(p) = catalog.product(product) else {
        let known = catalog.products.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
        return Err(ExportError::UnknownProduct { name: product.to_owned(), known });
    };
    let Some(c) = p.contract(contract) else {
        let known = p.contracts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(ExportError::UnknownContract { product: product.to_owned(), name: contract.unwrap_or_default().to_owned(), known });
    };
    let spec = p.decl.spec.contracts.iter().find(|s| s.name == c.name);
    let file = c.schema_file.display().to_string();
    let text = files.read(&c.schema_file).map_err(|message| ExportError::Schema { file: file.clone(), message })?;
    let schema: Value =
        serde_json::from_str(&text).map_err(|e| ExportError::Schema { file: file.clone(), message: format!("not JSON: {e}") })?;
    let avro = matches!(c.engine, SchemaEngine::Avro(_));
    let topics: Vec<String> =
        catalog.bindings().filter(|b| b.contract.product == c.product && b.contract.name == c.name).map(|b| b.topic.clone()).collect();

    let properties = if avro { avro_properties(&schema) } else { json_properties(&schema) };
    let mut quality = vec![
        json!({
            "name": "completeness",
            "dimension": "completeness",
            "type": "library",
            "metric": "missingValues",
            "unit": "percent",
            "mustBeLessOrEqualTo": number(Decimal::ONE_HUNDRED - c.quality.completeness.0),
            "description": "Share of required fields missing, per window (meshguard completeness SLA).",
        }),
        json!({
            "name": "accuracy",
            "dimension": "accuracy",
            "type": "custom",
            "engine": "meshguard",
            "implementation": { "check": "reconciliation", "atLeast": c.quality.accuracy.to_string() },
            "description": "Share of records matching the source database, per window (meshguard accuracy SLA).",
        }),
    ];
    for rule in spec.map(|s| s.rules.as_slice()).unwrap_or_default() {
        let mut q = json!({
            "name": rule.name,
            "dimension": "conformity",
            "type": "custom",
            "engine": "cel",
            "implementation": rule.expr,
            "severity": match rule.severity { RuleSeverity::Error => "error", RuleSeverity::Warn => "warning" },
        });
        if let (Some(d), Some(o)) = (&rule.description, q.as_object_mut()) {
            let _ = o.insert("description".into(), json!(d));
        }
        quality.push(q);
    }
    let file_name = c.schema_file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut customs = vec![
        custom(FORMAT_PROPERTY, json!(if avro { "avro" } else { "json-schema" })),
        custom(FILE_PROPERTY, json!(file_name)),
        custom(SCHEMA_PROPERTY, schema.clone()),
        custom(TOPICS_PROPERTY, json!(topics)),
    ];
    if let Some(k) = spec.and_then(|s| s.key_field.as_ref()) {
        customs.push(custom(KEY_FIELD_PROPERTY, json!(k)));
    }
    if let Some(e) = spec.and_then(|s| s.event_time_fields.as_ref()) {
        customs.push(custom(EVENT_TIME_PROPERTY, json!(e)));
    }
    let mut object = json!({
        "name": c.name,
        "physicalType": "topic",
        "logicalType": "object",
        "properties": properties,
        "quality": quality,
        "customProperties": customs,
    });
    if let Some(o) = object.as_object_mut() {
        if let Some(first) = topics.first() {
            let _ = o.insert("physicalName".into(), json!(first));
        }
        if let Some(d) = schema.get("description").or_else(|| schema.get("doc")).and_then(Value::as_str) {
            let _ = o.insert("description".into(), json!(d));
        }
    }
    let roles: Vec<Value> = p
        .decl
        .spec
        .access
        .iter()
        .map(|a| {
            let access: Vec<&str> = a
                .permissions
                .iter()
                .map(|p| match p {
                    Permission::Read => "read",
                    Permission::Write => "write",
                    Permission::Admin => "admin",
                })
                .collect();
            json!({ "role": a.role, "access": access.join(",") })
        })
        .collect();
    let mut doc = json!({
        "apiVersion": API_VERSION,
        "kind": "DataContract",
        "id": format!("{}.{}", p.name(), c.name),
        "name": c.name,
        "version": c.version,
        "status": "active",
        "domain": p.decl.metadata.domain,
        "dataProduct": p.name(),
        "team": { "name": format!("{} team", p.decl.metadata.domain), "members": [{ "username": p.decl.metadata.owner, "role": "owner" }] },
        "roles": roles,
        "servers": [{ "server": "kafka", "type": "kafka", "host": kafka_host, "format": if avro { "avro" } else { "json" } }],
        "schema": [object],
        "slaProperties": [{ "property": "latency", "value": u64::try_from(c.quality.freshness.0.as_millis()).unwrap_or(u64::MAX), "unit": "ms", "element": c.name }],
        "customProperties": [custom(PRODUCT_VERSION_PROPERTY, json!(p.decl.metadata.version))],
    });
    if let (Some(d), Some(o)) = (&p.decl.metadata.description, doc.as_object_mut()) {
        let _ = o.insert("description".into(), json!({ "purpose": d }));
    }
    Ok(doc)
}

/// ODCS properties of a JSON Schema object, sorted by name (so exports are stable).
fn json_properties(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
    props.iter().map(|(name, s)| json_property(name, s, required.contains(&name.as_str()), 0)).collect()
}

fn json_property(name: &str, s: &Value, required: bool, depth: usize) -> Value {
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let main = types.iter().copied().find(|t| *t != "null").unwrap_or("string");
    let format = s.get("format").and_then(Value::as_str);
    let logical = match (main, format) {
        ("string", Some("date-time")) => "timestamp",
        ("string", Some("date")) => "date",
        ("string", Some("time")) => "time",
        (t @ ("string" | "number" | "integer" | "boolean" | "object" | "array"), _) => t,
        _ => "string",
    };
    let mut p = Map::new();
    let _ = p.insert("name".into(), json!(name));
    let _ = p.insert("logicalType".into(), json!(logical));
    let _ = p.insert("physicalType".into(), json!(if types.is_empty() { "any".to_owned() } else { types.join("|") }));
    let _ = p.insert("required".into(), json!(required));
    if let Some(d) = s.get("description").and_then(Value::as_str) {
        let _ = p.insert("description".into(), json!(d));
    }
    let allowed: &[&str] = match logical {
        "string" => &["minLength", "maxLength", "pattern", "format"],
        "number" | "integer" => &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"],
        "object" => &["minProperties", "maxProperties"],
        "array" => &["minItems", "maxItems", "uniqueItems"],
        _ => &[],
    };
    let options: Map<String, Value> = allowed.iter().filter_map(|k| s.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
    if !options.is_empty() {
        let _ = p.insert("logicalTypeOptions".into(), Value::Object(options));
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let _ = p.insert(
            "quality".into(),
            json!([{ "type": "library", "metric": "invalidValues", "arguments": { "validValues": values }, "mustBe": 0, "dimension": "conformity" }]),
        );
    }
    if depth < 16 {
        if logical == "object" {
            let nested = json_properties(s);
            if !nested.is_empty() {
                let _ = p.insert("properties".into(), json!(nested));
            }
        }
        if logical == "array"
            && let Some(items) = s.get("items").filter(|i| i.is_object())
        {
            let mut item = json_property("items", items, false, depth + 1);
            if let Some(o) = item.as_object_mut() {
                let _ = o.remove("required");
            }
            let _ = p.insert("items".into(), item);
        }
    }
    Value::Object(p)
}

/// ODCS properties of an Avro record schema (from its JSON form).
fn avro_properties(schema: &Value) -> Vec<Value> {
    let Some(fields) = schema.get("fields").and_then(Value::as_array) else { return Vec::new() };
    fields
        .iter()
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?;
            let t = f.get("type")?;
            let (nullable, inner) = match t {
                Value::Array(u) => (u.iter().any(|v| v == "null"), u.iter().find(|v| *v != "null").cloned().unwrap_or(Value::Null)),
                other => (false, other.clone()),
            };
            let (physical, logical_type) = match &inner {
                Value::String(s) => (s.clone(), None),
                Value::Object(o) => (
                    o.get("type").and_then(Value::as_str).unwrap_or("record").to_owned(),
                    o.get("logicalType").and_then(Value::as_str).map(str::to_owned),
                ),
                _ => ("unknown".into(), None),
            };
            let logical = match (physical.as_str(), logical_type.as_deref()) {
                (_, Some("timestamp-millis" | "timestamp-micros")) => "timestamp",
                (_, Some("date")) => "date",
                (_, Some("time-millis" | "time-micros")) => "time",
                ("int" | "long", _) => "integer",
                ("float" | "double", _) => "number",
                ("boolean", _) => "boolean",
                ("record" | "map", _) => "object",
                ("array", _) => "array",
                _ => "string",
            };
            let mut p = json!({
                "name": name,
                "logicalType": logical,
                "physicalType": logical_type.map(|l| format!("{physical} ({l})")).unwrap_or(physical),
                "required": f.get("default").is_none() && !nullable,
            });
            if let (Some(d), Some(o)) = (f.get("doc").and_then(Value::as_str), p.as_object_mut()) {
                let _ = o.insert("description".into(), json!(d));
            }
            Some(p)
        })
        .collect()
}

/// A name as meshguard wants it: lower-case letters, digits and `-`.
fn identifier(s: &str) -> String {
    let mut out = String::new();
    for ch in s.trim().chars() {
        match ch {
            'a'..='z' | '0'..='9' => out.push(ch),
            'A'..='Z' => out.push(ch.to_ascii_lowercase()),
            _ if !out.ends_with('-') => out.push('-'),
            _ => {}
        }
    }
    out.trim_matches('-').to_owned()
}

fn custom_property<'v>(customs: Option<&'v Value>, name: &str) -> Option<&'v Value> {
    customs?.as_array()?.iter().find(|c| c.get("property").and_then(Value::as_str) == Some(name)).and_then(|c| c.get("value"))
}

/// Reads an ODCS document into a data product declaration and its schema files.
pub fn import(doc: &Value, defaults: &ImportDefaults) -> Result<Imported, ImportError> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut problem = |field: &str, reason: String| problems.push(FieldProblem { field: field.to_owned(), reason });
    let str_at = |key: &str| doc.get(key).and_then(Value::as_str);

    match str_at("apiVersion") {
        Some(v) if READABLE_VERSIONS.contains(&v) => {}
        Some(v) => problem("apiVersion", format!("{v:?} is not an ODCS version this build reads ({})", READABLE_VERSIONS.join(", "))),
        None => problem("apiVersion", "absent: an ODCS document names its version (e.g. v3.1.0)".into()),
    }
    if str_at("kind") != Some("DataContract") {
        problem("kind", format!("{:?}: an ODCS document is kind DataContract", str_at("kind").unwrap_or_default()));
    }
    let version = str_at("version").map(str::to_owned).unwrap_or_else(|| {
        problem("version", "absent: the contract version is required".into());
        String::new()
    });
    let product_source = str_at("dataProduct").or_else(|| str_at("id")).unwrap_or_default();
    let product_name = identifier(product_source);
    if product_name.is_empty() {
        problem("dataProduct", "absent (and `id` gives no usable name): a data product needs metadata.name".into());
    }
    let domain = match (str_at("domain"), &defaults.domain) {
        (Some(d), _) => d.to_owned(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            problem("domain", "absent: a data product needs metadata.domain (give it with --domain)".into());
            String::new()
        }
    };
    let team_members = match doc.get("team") {
        Some(Value::Array(members)) => Some(members.as_slice()),
        Some(t) => t.get("members").and_then(Value::as_array).map(Vec::as_slice),
        None => None,
    };
    let owner_from_team = team_members
        .and_then(|ms| ms.iter().find(|m| m.get("role").and_then(Value::as_str) == Some("owner")).or_else(|| ms.first()))
        .and_then(|m| m.get("username"))
        .and_then(Value::as_str);
    let owner = match (owner_from_team, &defaults.owner) {
        (Some(o), _) => o.to_owned(),
        (None, Some(o)) => o.clone(),
        (None, None) => {
            problem("team", "no member with a username: a data product needs metadata.owner (give it with --owner)".into());
            String::new()
        }
    };
    let product_version = custom_property(doc.get("customProperties"), PRODUCT_VERSION_PROPERTY)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| version.clone());

    // Freshness: the `latency` SLA property.
    let latency = doc
        .get("slaProperties")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().enumerate().find(|(_, s)| s.get("property").and_then(Value::as_str) == Some("latency")));
    let freshness = match latency {
        None => {
            notes.push(format!("slaProperties: no `latency`; freshness SLA set to {DEFAULT_FRESHNESS}"));
            DEFAULT_FRESHNESS.to_owned()
        }
        Some((i, sla)) => {
            let unit = sla.get("unit").and_then(Value::as_str).unwrap_or("ms");
            let unit = match unit {
                "ms" | "millisecond" | "milliseconds" => "ms",
                "s" | "second" | "seconds" => "s",
                "m" | "min" | "minute" | "minutes" => "m",
                "h" | "hour" | "hours" => "h",
                other => {
                    problem(&format!("slaProperties[{i}].unit"), format!("{other:?}: freshness needs ms, s, m or h"));
                    "ms"
                }
            };
            let value = match sla.get("value") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            match FreshnessSla::from_str(&format!("{value}{unit}")) {
                Ok(f) => f.to_string(),
                Err(e) => {
                    problem(&format!("slaProperties[{i}].value"), e);
                    String::new()
                }
            }
        }
    };

    let access = import_roles(doc.get("roles"), &mut problem);
    let mut contracts = Vec::new();
    let mut schemas = Vec::new();
    let mut all_topics: Vec<String> = Vec::new();
    match doc.get("schema").and_then(Value::as_array) {
        None => problem("schema", "absent: a data product needs at least one schema object".into()),
        Some(objects) if objects.is_empty() => problem("schema", "empty: a data product needs at least one schema object".into()),
        Some(objects) => {
            for (i, object) in objects.iter().enumerate() {
                let at = format!("schema[{i}]");
                match import_object(&at, object, &version, &freshness, &mut notes) {
                    Ok((contract, file, text, topics)) => {
                        for t in topics {
                            if !all_topics.contains(&t) {
                                all_topics.push(t);
                            }
                        }
                        contracts.push(contract);
                        schemas.push((file, text));
                    }
                    Err(mut ps) => problems.append(&mut ps),
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(ImportError(problems));
    }
    let mut spec = json!({ "contracts": contracts, "access": access });
    if !all_topics.is_empty()
        && let Some(o) = spec.as_object_mut()
    {
        let _ = o.insert("apis".into(), json!({ "kafka": { "topics": all_topics } }));
    }
    let mut metadata = json!({ "name": product_name, "domain": domain, "version": product_version, "owner": owner });
    if let (Some(purpose), Some(o)) =
        (doc.get("description").and_then(|d| d.get("purpose")).and_then(Value::as_str), metadata.as_object_mut())
    {
        let _ = o.insert("description".into(), json!(purpose));
    }
    let product = json!({ "apiVersion": super::model::API_VERSION, "kind": "DataProduct", "metadata": metadata, "spec": spec });
    let product_yaml = serde_yaml::to_string(&product)
        .map_err(|e| ImportError(vec![FieldProblem { field: "(document)".into(), reason: format!("cannot write the product: {e}") }]))?;
    Ok(Imported { product_name, product_yaml, schemas, notes })
}

fn import_roles(roles: Option<&Value>, problem: &mut impl FnMut(&str, String)) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, r) in roles.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let Some(name) = r.get("role").and_then(Value::as_str) else {
            problem(&format!("roles[{i}].role"), "absent".into());
            continue;
        };
        let mut permissions = Vec::new();
        for a in r.get("access").and_then(Value::as_str).unwrap_or("read").split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match a {
                "read" | "write" | "admin" => permissions.push(a.to_owned()),
                "readwrite" | "read-write" => permissions.extend(["read".to_owned(), "write".to_owned()]),
                other => problem(&format!("roles[{i}].access"), format!("{other:?} is not read, write or admin")),
            }
        }
        out.push(json!({ "role": name, "permissions": permissions }));
    }
    out
}

type ImportedObject = (Value, String, String, Vec<String>);

/// One ODCS schema object → a contract entry, its schema file name and text, and its topics.
fn import_object(
    at: &str,
    object: &Value,
    version: &str,
    freshness: &str,
    notes: &mut Vec<String>,
) -> Result<ImportedObject, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut problem = |field: String, reason: String| problems.push(FieldProblem { field, reason });
    let customs = object.get("customProperties");
    let name = identifier(object.get("name").and_then(Value::as_str).unwrap_or_default());
    if name.is_empty() {
        problem(format!("{at}.name"), "absent or without letters or digits: a contract needs a name".into());
    }
    // The schema itself: verbatim when meshguard exported it, else built from the properties.
    let format = custom_property(customs, FORMAT_PROPERTY).and_then(Value::as_str).unwrap_or("json-schema");
    let (file, text) = match (custom_property(customs, SCHEMA_PROPERTY), format) {
        (Some(schema), "json-schema" | "avro") => {
            let ext = if format == "avro" { "avsc" } else { "json" };
            let file = custom_property(customs, FILE_PROPERTY)
                .and_then(Value::as_str)
                .filter(|f| !f.is_empty() && !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{name}.{ext}"));
            (file, serde_json::to_string_pretty(schema).unwrap_or_default() + "\n")
        }
        (Some(_), other) => {
            problem(format!("{at}.customProperties.{FORMAT_PROPERTY}"), format!("{other:?} is not json-schema or avro"));
            (String::new(), String::new())
        }
        (None, _) => match object.get("properties").and_then(Value::as_array) {
            Some(props) if !props.is_empty() => {
                let mut schema = json!({ "$schema": "http://json-schema.org/draft-07/schema#", "type": "object" });
                if let Some(title) = object.get("name").and_then(Value::as_str) {
                    schema["title"] = json!(title);
                }
                if let Some(d) = object.get("description").and_then(Value::as_str) {
                    schema["description"] = json!(d);
                }
                let (properties, required) = build_properties(&format!("{at}.properties"), props, &mut problem, 0);
                schema["required"] = json!(required);
                schema["properties"] = Value::Object(properties);
                notes.push(format!("{at}: JSON Schema built from the ODCS properties (no {SCHEMA_PROPERTY})"));
                (format!("{name}.json"), serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n")
            }
            _ => {
                let registry = object
                    .get("authoritativeDefinitions")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(|d| d.get("url"))
                    .and_then(Value::as_str);
                let reason = match registry {
                    Some(url) => format!(
                        "no properties: the schema is held elsewhere ({url}); meshguard needs the schema itself (export it from there and add it as properties)"
                    ),
                    None => "no properties: meshguard needs the fields to build a contract schema".into(),
                };
                problem(format!("{at}.properties"), reason);
                (String::new(), String::new())
            }
        },
    };
    // Quality: completeness, accuracy, rules.
    let mut completeness = None;
    let mut accuracy = None;
    let mut rules = Vec::new();
    for (i, q) in object.get("quality").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let qat = format!("{at}.quality[{i}]");
        match (q.get("type").and_then(Value::as_str), q.get("engine").and_then(Value::as_str), q.get("metric").and_then(Value::as_str)) {
            (Some("library") | None, _, Some("missingValues")) if q.get("unit").and_then(Value::as_str) == Some("percent") => {
                let missing = q.get("mustBeLessOrEqualTo").and_then(|v| Decimal::from_str(&v.to_string()).ok());
                match missing.map(|m| Percent::from_str(&format!("{}%", (Decimal::ONE_HUNDRED - m).normalize()))) {
                    Some(Ok(p)) => completeness = Some(p.to_string()),
                    Some(Err(e)) => problem(format!("{qat}.mustBeLessOrEqualTo"), e),
                    None => problem(format!("{qat}.mustBeLessOrEqualTo"), "a missingValues percent check needs mustBeLessOrEqualTo".into()),
                }
            }
            (Some("custom"), Some("meshguard"), _) => {
                let at_least = q.get("implementation").and_then(|i| i.get("atLeast")).and_then(Value::as_str).unwrap_or_default();
                match Percent::from_str(at_least) {
                    Ok(p) => accuracy = Some(p.to_string()),
                    Err(e) => problem(format!("{qat}.implementation.atLeast"), e),
                }
            }
            (Some("custom"), Some("cel"), _) => {
                let rule_name = q.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some(expr) = q.get("implementation").and_then(Value::as_str) else {
                    problem(format!("{qat}.implementation"), "a CEL check's implementation is its expression (a string)".into());
                    continue;
                };
                let severity = match q.get("severity").and_then(Value::as_str) {
                    Some("warning" | "warn" | "info") => "warn",
                    _ => "error",
                };
                let mut rule = json!({ "name": rule_name, "expr": expr, "severity": severity });
                if let Some(d) = q.get("description").and_then(Value::as_str) {
                    rule["description"] = json!(d);
                }
                rules.push(rule);
            }
            _ => notes.push(format!(
                "{qat}: a {} check meshguard does not run; not imported",
                q.get("type").and_then(Value::as_str).unwrap_or("library")
            )),
        }
    }
    let completeness = completeness.unwrap_or_else(|| {
        notes.push(format!("{at}.quality: no missingValues percent check; completeness SLA set to {DEFAULT_PERCENT}"));
        DEFAULT_PERCENT.into()
    });
    let accuracy = accuracy.unwrap_or_else(|| {
        notes.push(format!("{at}.quality: no meshguard accuracy check; accuracy SLA set to {DEFAULT_PERCENT}"));
        DEFAULT_PERCENT.into()
    });
    let mut topics: Vec<String> = custom_property(customs, TOPICS_PROPERTY)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if topics.is_empty()
        && object.get("physicalType").and_then(Value::as_str) == Some("topic")
        && let Some(t) = object.get("physicalName").and_then(Value::as_str)
    {
        topics.push(t.to_owned());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut contract = json!({
        "name": name,
        "version": version,
        "schema": format!("schemas/{file}"),
        "quality": { "freshness": freshness, "completeness": completeness, "accuracy": accuracy },
    });
    if !topics.is_empty() {
        contract["topics"] = json!(topics);
    }
    if let Some(k) = custom_property(customs, KEY_FIELD_PROPERTY) {
        contract["keyField"] = k.clone();
    }
    if let Some(e) = custom_property(customs, EVENT_TIME_PROPERTY) {
        contract["eventTimeFields"] = e.clone();
    }
    if !rules.is_empty() {
        contract["rules"] = json!(rules);
    }
    Ok((contract, file, text, topics))
}

/// Draft-07 `properties` and `required` from ODCS properties.
fn build_properties(
    at: &str,
    props: &[Value],
    problem: &mut impl FnMut(String, String),
    depth: usize,
) -> (Map<String, Value>, Vec<String>) {
    let mut out = Map::new();
    let mut required = Vec::new();
    for (i, p) in props.iter().enumerate() {
        let pat = format!("{at}[{i}]");
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            problem(format!("{pat}.name"), "absent: every property needs a name".into());
            continue;
        };
        if p.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(name.to_owned());
        }
        let _ = out.insert(name.to_owned(), build_property(&pat, p, problem, depth));
    }
    (out, required)
}

fn build_property(at: &str, p: &Value, problem: &mut impl FnMut(String, String), depth: usize) -> Value {
    let logical = p.get("logicalType").and_then(Value::as_str).map(str::to_owned).or_else(|| {
        let physical = p.get("physicalType").and_then(Value::as_str)?.to_ascii_lowercase();
        Some(
            match physical.as_str() {
                "int" | "long" | "bigint" | "integer" | "smallint" => "integer",
                "double" | "float" | "decimal" | "number" => "number",
                "bool" | "boolean" => "boolean",
                "string" | "varchar" | "text" => "string",
                _ => return None,
            }
            .to_owned(),
        )
    });
    let mut s = match logical.as_deref() {
        Some(t @ ("string" | "number" | "integer" | "boolean" | "object" | "array")) => json!({ "type": t }),
        Some("date") => json!({ "type": "string", "format": "date" }),
        Some("timestamp") => json!({ "type": "string", "format": "date-time" }),
        Some("time") => json!({ "type": "string", "format": "time" }),
        Some(other) => {
            problem(format!("{at}.logicalType"), format!("{other:?} is not an ODCS logical type"));
            return json!({});
        }
        None => {
            problem(format!("{at}.logicalType"), "absent, and the physicalType does not say which JSON type to use".into());
            return json!({});
        }
    };
    if let Some(d) = p.get("description").and_then(Value::as_str) {
        s["description"] = json!(d);
    }
    // Date options in ODCS are JDK patterns and date strings, not JSON Schema keywords: the
    // type's own format stands.
    if let Some(Value::Object(options)) = p.get("logicalTypeOptions")
        && !matches!(logical.as_deref(), Some("date" | "timestamp" | "time"))
    {
        for (k, v) in options {
            s[k] = v.clone();
        }
    }
    if depth < 16 {
        if let Some(nested) = p.get("properties").and_then(Value::as_array) {
            let (properties, required) = build_properties(&format!("{at}.properties"), nested, problem, depth + 1);
            s["properties"] = Value::Object(properties);
            if !required.is_empty() {
                s["required"] = json!(required);
            }
        }
        if let Some(items) = p.get("items") {
            s["items"] = build_property(&format!("{at}.items"), items, problem, depth + 1);
        }
    }
    s
}
