//! Loads every data product, compiles every contract once, and binds each Kafka topic to one
//! contract. Every problem found is collected (not just the first), each naming its file and,
//! where it can be found, its line.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::embedded;
use super::model::{API_VERSION, ContractSpec, DataProduct};
use crate::config::is_valid_topic_name;
use crate::contract::{AvroContract, Contract, JsonSchemaContract, RequiredFields, RuleSet, SchemaEngine, SchemaRetriever};
use crate::decode::AvroDecoder;

/// One problem in the configuration, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while loading.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadErrors(pub Vec<Problem>);

impl fmt::Display for LoadErrors {
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

/// Where declarations and schemas are read from.
#[derive(Debug, Clone)]
pub enum Files {
    /// Directories on disk.
    Disk {
        /// `products.dir`
        products: PathBuf,
        /// `schemas.dir`
        schemas: PathBuf,
    },
    /// The products and schemas compiled into the binary.
    Embedded,
    /// The catalog `meshguard catalog apply` stored in MongoDB, as read back
    /// (`data_products/<product>/<reference>`).
    Stored(Arc<super::stored::StoredFiles>),
}

impl Files {
    /// The configured directories, or the embedded set when the products directory is the
    /// default and does not exist (running outside a checkout).
    pub fn from_settings(settings: &crate::config::Settings, explicit: bool) -> Self {
        let products = settings.products.dir.clone();
        if !explicit && !products.exists() && products == Path::new("config/products") {
            return Self::Embedded;
        }
        Self::Disk { products, schemas: settings.schemas.dir.clone() }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Disk { products, .. } => products.display().to_string(),
            Self::Embedded => "the built-in products".to_owned(),
            Self::Stored(_) => "the catalog in MongoDB data_products".to_owned(),
        }
    }

    fn product_files(&self) -> Result<Vec<(PathBuf, String)>, Problem> {
        match self {
            Self::Stored(stored) => stored.product_files(),
            Self::Embedded => {
                Ok(embedded::PRODUCTS.iter().map(|(n, t)| (PathBuf::from(format!("<built-in>/{n}")), (*t).to_owned())).collect())
            }
            Self::Disk { products, .. } => {
                let problem = |message: String| Problem { file: products.clone(), line: None, message };
                let entries = std::fs::read_dir(products).map_err(|e| problem(format!("cannot read the products directory: {e}")))?;
                let mut files = Vec::new();
                for entry in entries {
                    let path = entry.map_err(|e| problem(e.to_string()))?.path();
                    if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                        let text = std::fs::read_to_string(&path).map_err(|e| Problem {
                            file: path.clone(),
                            line: None,
                            message: format!("cannot read: {e}"),
                        })?;
                        files.push((path, text));
                    }
                }
                files.sort_by(|a, b| a.0.cmp(&b.0));
                if files.is_empty() {
                    return Err(problem("no *.yaml data products found".into()));
                }
                Ok(files)
            }
        }
    }

    /// Resolves a file reference from a product declaration: `schemas/…` is looked up in the
    /// schemas directory, anything else relative to the declaring file. Public so that tools
    /// comparing two revisions of a product (`lint --against`) find the same files.
    pub fn resolve(&self, declaring: &Path, reference: &str) -> PathBuf {
        let rel = Path::new(reference);
        match self {
            Self::Embedded => PathBuf::from(format!("<built-in>/{}", file_name(rel))),
            // The reference as written, under the declaring document: its key in the document.
            Self::Stored(_) => PathBuf::from(format!("{}/{reference}", declaring.display())),
            Self::Disk { schemas, .. } => {
                if rel.is_absolute() {
                    rel.to_path_buf()
                } else if let Ok(rest) = rel.strip_prefix("schemas") {
                    schemas.join(rest)
                } else {
                    declaring.parent().unwrap_or(Path::new(".")).join(rel)
                }
            }
        }
    }

    /// Reads a file that [`Files::resolve`] named (from disk, or the embedded set).
    pub fn read(&self, path: &Path) -> Result<String, String> {
        match self {
            Self::Embedded => {
                let name = file_name(path);
                embedded::SCHEMAS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| (*t).to_owned())
                    .ok_or_else(|| "no such built-in file".to_owned())
            }
            Self::Disk { .. } => std::fs::read_to_string(path).map_err(|e| e.to_string()),
            Self::Stored(stored) => stored.read(path),
        }
    }

    fn retriever(&self) -> SchemaRetriever {
        match self {
            Self::Disk { schemas, .. } => SchemaRetriever::within(schemas.clone()),
            Self::Embedded | Self::Stored(_) => SchemaRetriever::default(),
        }
    }

    fn base_uri(&self, path: &Path) -> Option<String> {
        match self {
            Self::Disk { .. } => path.canonicalize().ok().map(|p| format!("file://{}", p.display())),
            Self::Embedded | Self::Stored(_) => None,
        }
    }
}

fn file_name(path: &Path) -> String {
    path.components()
        .next_back()
        .map(|c| match c {
            Component::Normal(s) => s.to_string_lossy().into_owned(),
            other => other.as_os_str().to_string_lossy().into_owned(),
        })
        .unwrap_or_default()
}

/// A loaded data product.
#[derive(Debug)]
pub struct Product {
    /// The declaration as written.
    pub decl: DataProduct,
    /// The file it came from.
    pub file: PathBuf,
    /// Compiled contracts, in declaration order.
    pub contracts: Vec<Arc<Contract>>,
    /// The declaration as JSON, for the `data_products` collection and the API.
    pub raw: Value,
    /// Each contract's schema document as loaded (JSON Schema as written; Avro in its JSON
    /// form), in the order of `contracts`: the API derives its search fields and documents from
    /// these instead of reading the files again.
    pub schemas: Vec<Value>,
    /// The GraphQL schema text of `spec.apis.graphql.schema`, as read by the lint.
    pub graphql_sdl: Option<String>,
}

impl Product {
    /// The product's name.
    pub fn name(&self) -> &str {
        &self.decl.metadata.name
    }

    /// A contract by name, or the first when `name` is `None`.
    pub fn contract(&self, name: Option<&str>) -> Option<&Arc<Contract>> {
        match name {
            None => self.contracts.first(),
            Some(n) => self.contracts.iter().find(|c| c.name == n),
        }
    }
}

/// A topic and the contract that holds its records.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The Kafka topic.
    pub topic: String,
    /// Its contract.
    pub contract: Arc<Contract>,
}

/// Every product, contract and topic binding.
#[derive(Debug)]
pub struct Catalog {
    /// Products in file order.
    pub products: Vec<Product>,
    /// Topic → binding.
    bindings: BTreeMap<String, Binding>,
}

impl Catalog {
    /// Loads and compiles everything, or returns every problem found.
    pub fn load(files: &Files) -> Result<Self, LoadErrors> {
        let mut problems = Vec::new();
        let sources = match files.product_files() {
            Ok(s) => s,
            Err(p) => return Err(LoadErrors(vec![p])),
        };
        let mut products: Vec<Product> = Vec::new();
        let mut bindings: BTreeMap<String, Binding> = BTreeMap::new();
        let mut topic_owner: HashMap<String, PathBuf> = HashMap::new();
        // Schemas referenced by several contracts are parsed once.
        let mut avro_cache: HashMap<PathBuf, &'static apache_avro::Schema> = HashMap::new();
        // Where each product declares `baseUrl`, for the lint across products.
        let mut base_url_lines: Vec<Option<usize>> = Vec::new();
        for (file, text) in sources {
            let decl: DataProduct = match serde_yaml::from_str(&text) {
                Ok(d) => d,
                Err(e) => {
                    let line = e.location().map(|l| l.line());
                    problems.push(Problem { file, line, message: strip_location(&e.to_string()) });
                    continue;
                }
            };
            let mut here = |needle: &str, message: String| {
                problems.push(Problem { file: file.clone(), line: line_of(&text, needle), message });
            };
            if decl.api_version != API_VERSION {
                here("apiVersion", format!("apiVersion {:?} is not supported (expected {API_VERSION:?})", decl.api_version));
            }
            if decl.kind != "DataProduct" {
                here("kind", format!("kind {:?} is not supported (expected \"DataProduct\")", decl.kind));
            }
            let name = decl.metadata.name.clone();
            if !is_identifier_like(&name) {
                here("name:", format!("metadata.name {name:?} must be lower-case letters, digits and '-'"));
            }
            if let Some(other) = products.iter().find(|p| p.name() == name) {
                here("name:", format!("metadata.name {name:?} is also declared in {}", other.file.display()));
            }
            if decl.spec.contracts.is_empty() {
                here("contracts", "spec.contracts is empty: a data product needs at least one contract".into());
            }
            let declared_topics: Vec<String> = decl.spec.apis.kafka.as_ref().map(|k| k.topics.clone()).unwrap_or_default();
            for t in &declared_topics {
                if !is_valid_topic_name(t) {
                    here(t, format!("spec.apis.kafka.topics: {t:?} is not a valid Kafka topic name"));
                }
            }
            let mysql_tables: Vec<String> = decl.spec.sources.mysql.as_ref().map(|m| m.tables.clone()).unwrap_or_default();
            let mut graphql_sdl = None;
            if let Some(gql) = &decl.spec.apis.graphql {
                let path = files.resolve(&file, &gql.schema);
                match files.read(&path) {
                    Ok(text) => graphql_sdl = Some(text),
                    Err(e) => here(&gql.schema, format!("spec.apis.graphql.schema: {}: {e}", path.display())),
                }
            }

            let mut contracts = Vec::new();
            let mut schemas = Vec::new();
            let mut seen = Vec::<&str>::new();
            for spec in &decl.spec.contracts {
                if seen.contains(&spec.name.as_str()) {
                    here(&format!("name: {}", spec.name), format!("contract {:?} is declared twice", spec.name));
                    continue;
                }
                seen.push(&spec.name);
                for t in spec.topics.iter().flatten() {
                    if !declared_topics.contains(t) {
                        here(t, format!("contract {:?} binds topic {t:?}, which spec.apis.kafka.topics does not list", spec.name));
                    }
                }
                if let Some(r) = &spec.reconciliation {
                    if !mysql_tables.contains(&r.table) {
                        here(
                            "table:",
                            format!("contract {:?}: reconciliation.table {:?} is not one of spec.sources.mysql.tables", spec.name, r.table),
                        );
                    }
                    let mut idents = vec![("table", &r.table), ("keyColumn", &r.key_column), ("amountColumn", &r.amount_column)];
                    if let Some(c) = &r.currency_column {
                        idents.push(("currencyColumn", c));
                    }
                    for (key, ident) in idents {
                        if !is_sql_identifier(ident) {
                            here(key, format!("contract {:?}: reconciliation.{key} {ident:?} is not a plain SQL identifier", spec.name));
                        }
                    }
                }
                if let Some(source) = &spec.source {
                    for message in source_problems(&decl, &spec.name, source) {
                        here("source:", message);
                    }
                }
                let rules = match RuleSet::compile(&decl.metadata.name, &spec.name, &spec.rules) {
                    Ok(r) => r.with_version(&spec.version),
                    Err(errors) => {
                        for e in errors {
                            here(&format!("name: {}", e.rule), format!("contract {:?}: {e}", spec.name));
                        }
                        continue;
                    }
                };
                let (mut contract, schema) = match compile(files, &file, &decl, spec, rules, &mut avro_cache) {
                    Ok(c) => c,
                    Err(message) => {
                        here(&spec.schema, format!("contract {:?}: {message}", spec.name));
                        continue;
                    }
                };
                let mut versions_ok = true;
                let mut seen_versions = vec![spec.version.clone()];
                for v in &spec.versions {
                    if seen_versions.contains(&v.version) {
                        here(&v.schema, format!("contract {:?}: version {:?} is declared twice", spec.name, v.version));
                        versions_ok = false;
                        continue;
                    }
                    seen_versions.push(v.version.clone());
                    let mut vspec = spec.clone();
                    vspec.version = v.version.clone();
                    vspec.schema = v.schema.clone();
                    vspec.versions = Vec::new();
                    if let Some(r) = &v.rules {
                        vspec.rules = r.clone();
                    }
                    let rules = match RuleSet::compile(&decl.metadata.name, &spec.name, &vspec.rules) {
                        Ok(r) => r.with_version(&v.version),
                        Err(errors) => {
                            for e in errors {
                                here(&format!("name: {}", e.rule), format!("contract {:?} version {:?}: {e}", spec.name, v.version));
                            }
                            versions_ok = false;
                            continue;
                        }
                    };
                    match compile(files, &file, &decl, &vspec, rules, &mut avro_cache) {
                        Ok((mut c, _)) if c.is_avro() == contract.is_avro() => {
                            c.mode = v.mode;
                            contract.versions.push(Arc::new(c));
                        }
                        Ok(_) => {
                            here(
                                &v.schema,
                                format!(
                                    "contract {:?} version {:?}: every version must be JSON Schema, or every one Avro",
                                    spec.name, v.version
                                ),
                            );
                            versions_ok = false;
                        }
                        Err(message) => {
                            here(&v.schema, format!("contract {:?} version {:?}: {message}", spec.name, v.version));
                            versions_ok = false;
                        }
                    }
                }
                if versions_ok {
                    contracts.push(Arc::new(contract));
                    schemas.push(schema);
                }
            }

            // Bind topics: explicit bindings first, then the first contract takes the rest.
            if contracts.len() == decl.spec.contracts.len() {
                let mut bound: BTreeMap<String, Arc<Contract>> = BTreeMap::new();
                for (spec, contract) in decl.spec.contracts.iter().zip(&contracts) {
                    for t in spec.topics.iter().flatten() {
                        if let Some(prev) = bound.insert(t.clone(), contract.clone()) {
                            here(t, format!("topic {t:?} is bound to both {:?} and {:?}", prev.name, contract.name));
                        }
                    }
                }
                if let Some(first) = contracts.first() {
                    for t in &declared_topics {
                        let _ = bound.entry(t.clone()).or_insert_with(|| first.clone());
                    }
                }
                for (topic, contract) in bound {
                    if let Some(owner) = topic_owner.get(&topic) {
                        here(&topic, format!("topic {topic:?} is also declared by {}", owner.display()));
                        continue;
                    }
                    let _ = topic_owner.insert(topic.clone(), file.clone());
                    let _ = bindings.insert(topic.clone(), Binding { topic, contract });
                }
            }
            if let Some(Err(message)) = decl.spec.apis.rest.as_ref().map(|r| r.base_path()) {
                here("baseUrl", format!("spec.apis.rest.{message}"));
            }
            base_url_lines.push(line_of(&text, "baseUrl"));
            let raw = serde_yaml::from_str::<Value>(&text).unwrap_or(Value::Null);
            products.push(Product { decl, file, contracts, raw, schemas, graphql_sdl });
        }
        lint_rest_paths(&products, &base_url_lines, &mut problems);
        if problems.is_empty() { Ok(Self { products, bindings }) } else { Err(LoadErrors(problems)) }
    }

    /// A product by name.
    pub fn product(&self, name: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.name() == name)
    }

    /// The binding of a topic.
    pub fn binding(&self, topic: &str) -> Option<&Binding> {
        self.bindings.get(topic)
    }

    /// Every binding, by topic.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values()
    }

    /// Every bound topic.
    pub fn topics(&self) -> Vec<String> {
        self.bindings.keys().cloned().collect()
    }
}

/// First segments the main routes own (`/products`, `/healthz`, …).
const MAIN_ROUTE_ROOTS: [&str; 4] = ["products", "healthz", "metrics", "openapi.json"];

/// The main routes under a product segment (`None` = a path parameter). A search endpoint
/// `/{x}/search` is not shadowed by `POST /{product}/search`: that handler serves it.
const MAIN_PRODUCT_ROUTES: [(&str, &[Option<&str>]); 5] = [
    ("/{product}/data/{record_id}", &[None, Some("data"), None]),
    ("/{product}/lineage/{record_id}", &[None, Some("lineage"), None]),
    ("/{product}/validate", &[None, Some("validate")]),
    ("/{product}/alerts", &[None, Some("alerts")]),
    ("/{product}/graphql", &[None, Some("graphql")]),
];

/// A product's REST endpoints as served: `baseUrl`'s path, then the endpoint's segments
/// (`None` for a `{param}`). With the template for messages.
fn served_paths(product: &Product) -> Vec<(String, Vec<Option<String>>)> {
    let Some(rest) = &product.decl.spec.apis.rest else { return Vec::new() };
    let base = rest.base_path().unwrap_or_default();
    rest.endpoints
        .iter()
        .map(|e| {
            let trimmed = e.trim_matches('/');
            let mut pattern: Vec<Option<String>> = base.segments.iter().cloned().map(Some).collect();
            pattern.extend(trimmed.split('/').map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned())));
            (format!("{}/{trimmed}", base.raw), pattern)
        })
        .collect()
}

/// Whether some request path matches both patterns.
fn overlap(a: &[Option<String>], b: &[Option<String>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| matches!((x, y), (None, _) | (_, None)) || x == y)
}

/// The lint of `apis.rest.baseUrl` across products: a prefixed endpoint must not be shadowed by
/// a main route or a product's routes, nor answer a path another product's endpoint answers.
/// Products without a base path keep today's behaviour (an endpoint that clashes is skipped
/// with a warning when served).
fn lint_rest_paths(products: &[Product], lines: &[Option<usize>], problems: &mut Vec<Problem>) {
    let prefixed = |p: &Product| p.decl.spec.apis.rest.as_ref().and_then(|r| r.base_path().ok()).is_some_and(|b| !b.segments.is_empty());
    let paths: Vec<_> = products.iter().map(served_paths).collect();
    for (i, p) in products.iter().enumerate() {
        if !prefixed(p) {
            continue;
        }
        let mut report = |message: String| problems.push(Problem { file: p.file.clone(), line: lines.get(i).copied().flatten(), message });
        let base = p.decl.spec.apis.rest.as_ref().and_then(|r| r.base_path().ok()).unwrap_or_default();
        let first = base.segments.first().map(String::as_str).unwrap_or_default();
        if MAIN_ROUTE_ROOTS.contains(&first) {
            report(format!("spec.apis.rest.baseUrl: its path {} is under /{first}, a main route of the API", base.raw));
            continue;
        }
        if products.iter().any(|q| q.name() == first) {
            report(format!("spec.apis.rest.baseUrl: its path {} is under /{first}, the main routes of product {first:?}", base.raw));
            continue;
        }
        for (template, pattern) in &paths[i] {
            let shadowing = MAIN_PRODUCT_ROUTES.iter().find(|(_, route)| {
                route.len() == pattern.len() && route.iter().zip(pattern).all(|(r, s)| r.is_none() || r.as_deref() == s.as_deref())
            });
            if let Some((route, _)) = shadowing {
                report(format!("spec.apis.rest: endpoint {template} is shadowed by the main route {route}"));
                continue;
            }
            for (j, q) in products.iter().enumerate() {
                // A pair of prefixed products is reported once, by the first.
                if j == i || (j < i && prefixed(q)) {
                    continue;
                }
                if let Some((other, _)) = paths[j].iter().find(|(_, o)| overlap(pattern, o)) {
                    report(format!(
                        "spec.apis.rest: endpoint {template} collides with {other} of product {:?} (both would answer the same paths)",
                        q.name()
                    ));
                }
            }
        }
    }
}

fn compile(
    files: &Files,
    declaring: &Path,
    decl: &DataProduct,
    spec: &ContractSpec,
    rules: RuleSet,
    avro_cache: &mut HashMap<PathBuf, &'static apache_avro::Schema>,
) -> Result<(Contract, Value), String> {
    let path = files.resolve(declaring, &spec.schema);
    let is_avro = path.extension().and_then(|e| e.to_str()) == Some("avsc");
    let (engine, required, properties, document) = if is_avro {
        let schema = load_avro(files, &path, avro_cache)?;
        let avro = spec.avro.clone().unwrap_or_default();
        let mut writers = Vec::new();
        for w in &avro.writers {
            writers.push(load_avro(files, &files.resolve(declaring, w), avro_cache)?);
        }
        let mut ids = Vec::new();
        for (id, w) in &avro.registry {
            ids.push((*id, load_avro(files, &files.resolve(declaring, w), avro_cache)?));
        }
        let plain = match &avro.plain_writer {
            Some(w) => Some(load_avro(files, &files.resolve(declaring, w), avro_cache)?),
            None => None,
        };
        let decoder = AvroDecoder::new(avro.encoding, schema, &writers, &ids, plain)
            .map_err(|e| format!("cannot resolve writer schemas against {}: {e}", path.display()))?;
        let properties = match schema {
            apache_avro::Schema::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
            _ => return Err(format!("{}: an Avro contract must be a record schema", path.display())),
        };
        let document = serde_json::to_value(schema).map_err(|e| format!("{}: {e}", path.display()))?;
        (SchemaEngine::Avro(AvroContract { schema, decoder }), AvroContract::required_fields(schema), properties, document)
    } else {
        if spec.avro.is_some() {
            return Err("`avro` settings given for a JSON Schema contract".into());
        }
        let text = files.read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let schema: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let compiled = JsonSchemaContract::compile(&schema, files.base_uri(&path), files.retriever())
            .map_err(|e| format!("{}: not a valid draft-07 schema: {e}", path.display()))?;
        let properties: Vec<String> =
            schema.get("properties").and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
        let required = RequiredFields::from_json_schema(&schema);
        (SchemaEngine::Json(compiled), required, properties, schema)
    };
    let key_field = match &spec.key_field {
        Some(k) if properties.contains(k) => Some(k.clone()),
        Some(k) => return Err(format!("keyField {k:?} is not a property of {}", path.display())),
        None => required.dotted().into_iter().find(|f| !f.contains('.') && f.ends_with("_id")),
    };
    if let Some(u) = &spec.unique {
        if u.fields.is_empty() {
            return Err("unique.fields is empty: name the key's fields".into());
        }
        for f in &u.fields {
            let top = f.split('.').next().unwrap_or_default();
            if !properties.iter().any(|p| p == top) {
                return Err(format!("unique field {f:?} is not a property of {}", path.display()));
            }
        }
    }
    if let Some(v) = &spec.volume
        && let (Some(min), Some(max)) = (v.min, v.max)
        && min > max
    {
        return Err(format!("volume.min {min} is above volume.max {max}"));
    }
    let event_time_fields = spec.event_time_fields.clone().unwrap_or_else(|| vec!["updated_at".into(), "created_at".into()]);
    let reconciliation = spec.reconciliation.clone().or_else(|| default_reconciliation(decl, key_field.as_deref(), &properties));
    if let Some(r) = &reconciliation {
        for field in std::iter::once(&r.amount_field).chain(r.currency_field.as_ref()) {
            if !properties.contains(field) {
                return Err(format!("reconciliation field {field:?} is not a property of {}", path.display()));
            }
        }
        if key_field.is_none() {
            return Err("reconciliation needs a keyField".into());
        }
        for ident in [&r.table, &r.key_column, &r.amount_column].into_iter().chain(r.currency_column.as_ref()) {
            if !is_sql_identifier(ident) {
                return Err(format!("reconciliation: {ident:?} is not a plain SQL identifier"));
            }
        }
    }
    let source = source_binding(decl, spec, key_field.as_deref(), &event_time_fields, &properties, &document, is_avro)?;
    let contract = Contract {
        source,
        product: decl.metadata.name.clone(),
        domain: decl.metadata.domain.clone(),
        name: spec.name.clone(),
        version: spec.version.clone(),
        schema_file: path,
        engine,
        quality: spec.quality.clone(),
        required,
        key_field,
        event_time_fields,
        reconciliation,
        rules,
        mode: crate::product::model::VersionMode::Enforce,
        versions: Vec::new(),
        unique: spec.unique.clone(),
        volume: spec.volume,
    };
    Ok((contract, document))
}

/// What is wrong with a contract's `source:` (checked where the line is known; `compile`
/// resolves it).
fn source_problems(decl: &DataProduct, contract: &str, source: &crate::product::model::SourceSpec) -> Vec<String> {
    let sources = &decl.spec.sources;
    let mut problems = Vec::new();
    match (&source.mysql, &source.mongodb) {
        (Some(t), None) => {
            if !sources.mysql.as_ref().is_some_and(|m| m.tables.contains(&t.table)) {
                problems.push(format!("contract {contract:?}: source.mysql.table {:?} is not one of spec.sources.mysql.tables", t.table));
            }
            let idents =
                [("table", Some(&t.table)), ("keyColumn", t.key_column.as_ref()), ("eventTimeColumn", t.event_time_column.as_ref())];
            for (key, ident) in idents {
                if let Some(ident) = ident
                    && !is_sql_identifier(ident)
                {
                    problems.push(format!("contract {contract:?}: source.mysql.{key} {ident:?} is not a plain SQL identifier"));
                }
            }
        }
        (None, Some(c)) => {
            if !sources.mongodb.as_ref().is_some_and(|m| m.collections.contains(&c.collection)) {
                problems.push(format!(
                    "contract {contract:?}: source.mongodb.collection {:?} is not one of spec.sources.mongodb.collections",
                    c.collection
                ));
            }
        }
        _ => problems.push(format!("contract {contract:?}: source names exactly one of `mysql` or `mongodb`")),
    }
    problems
}

/// The contract's source binding: the declared one, or the default for a product that
/// declares none: the one table or collection of `spec.sources` named after the contract
/// (`payment-schema` → `payment` or `payments`, `payment-analytics-schema` →
/// `payment_analytics`), keyed by the contract's key field. Scans hold records to JSON Schema
/// contracts only: an Avro contract takes no default and may not declare one.
fn source_binding(
    decl: &DataProduct,
    spec: &ContractSpec,
    key_field: Option<&str>,
    event_time_fields: &[String],
    properties: &[String],
    document: &Value,
    is_avro: bool,
) -> Result<Option<crate::product::model::SourceBinding>, String> {
    use crate::product::model::{SourceAt, SourceBinding};
    let sources = &decl.spec.sources;
    let mysql_db = || sources.mysql.as_ref().map(|m| m.database.clone()).unwrap_or_default();
    let mongo_db = || sources.mongodb.as_ref().map(|m| m.database.clone()).unwrap_or_default();
    // The contract's event-time fields, then its required date-time properties.
    let default_times = || {
        let mut times: Vec<String> = event_time_fields.to_vec();
        let required: Vec<&str> =
            document.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        for p in properties {
            let is_time = document.pointer(&format!("/properties/{p}/format")).and_then(Value::as_str) == Some("date-time");
            if is_time && required.contains(&p.as_str()) && !times.contains(p) {
                times.push(p.clone());
            }
        }
        times
    };
    let Some(declared) = &spec.source else {
        if is_avro || decl.spec.contracts.iter().any(|c| c.source.is_some()) {
            return Ok(None);
        }
        let Some(key) = key_field else { return Ok(None) };
        let stem = spec.name.strip_suffix("-schema").unwrap_or(&spec.name).replace('-', "_");
        let named = |n: &String| *n == stem || *n == format!("{stem}s");
        let tables = sources.mysql.iter().flat_map(|m| &m.tables).filter(|t| named(t) && is_sql_identifier(t));
        let collections = sources.mongodb.iter().flat_map(|m| &m.collections).filter(|c| named(c));
        let mut found: Vec<SourceAt> = tables
            .map(|t| SourceAt::Mysql { database: mysql_db(), table: t.clone() })
            .chain(collections.map(|c| SourceAt::Mongodb { database: mongo_db(), collection: c.clone() }))
            .collect();
        if found.len() != 1 || !is_sql_identifier(key) {
            return Ok(None);
        }
        let at = found.remove(0);
        let binding = SourceBinding { at, key: key.to_owned(), event_time: default_times(), fields: properties.to_vec(), declared: false };
        return Ok(Some(binding));
    };
    if is_avro {
        return Err("source: `meshguard scan` holds rows and documents to JSON Schema contracts only; this one is Avro".into());
    }
    let (at, key, time) = match (&declared.mysql, &declared.mongodb) {
        (Some(t), None) => (SourceAt::Mysql { database: mysql_db(), table: t.table.clone() }, &t.key_column, &t.event_time_column),
        (None, Some(c)) => {
            (SourceAt::Mongodb { database: mongo_db(), collection: c.collection.clone() }, &c.key_field, &c.event_time_field)
        }
        // Reported with its line by `source_problems`.
        _ => return Err("source names exactly one of `mysql` or `mongodb`".into()),
    };
    let key = match (key, key_field) {
        (Some(k), _) => k.clone(),
        (None, Some(k)) => k.to_owned(),
        (None, None) => return Err("source: no key to page and report rows by: set keyColumn/keyField (or the contract's keyField)".into()),
    };
    if matches!(at, SourceAt::Mysql { .. }) && !is_sql_identifier(&key) {
        return Err(format!("source: key column {key:?} is not a plain SQL identifier"));
    }
    let event_time = match time {
        Some(t) => vec![t.clone()],
        None => default_times(),
    };
    Ok(Some(SourceBinding { at, key, event_time, fields: properties.to_vec(), declared: true }))
}

/// The seed's reconciliation, for a product that declares none: the MySQL table named after the
/// domain (`payments`), matched on the key field, comparing `amount` (and `currency` when the
/// contract has it). Applies only when all of those exist.
fn default_reconciliation(
    decl: &DataProduct,
    key_field: Option<&str>,
    properties: &[String],
) -> Option<crate::product::model::ReconciliationSpec> {
    let tables = &decl.spec.sources.mysql.as_ref()?.tables;
    let table = tables.iter().find(|t| **t == decl.metadata.domain)?;
    let key = key_field?;
    if !properties.iter().any(|p| p == "amount") {
        return None;
    }
    let currency = properties.iter().any(|p| p == "currency").then(|| "currency".to_owned());
    Some(crate::product::model::ReconciliationSpec {
        table: table.clone(),
        key_column: key.to_owned(),
        amount_column: "amount".into(),
        amount_field: "amount".into(),
        currency_column: currency.clone(),
        currency_field: currency,
        tolerance: None,
    })
}

fn load_avro(
    files: &Files,
    path: &Path,
    cache: &mut HashMap<PathBuf, &'static apache_avro::Schema>,
) -> Result<&'static apache_avro::Schema, String> {
    if let Some(s) = cache.get(path) {
        return Ok(s);
    }
    let text = files.read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let schema = apache_avro::Schema::parse_str(&text).map_err(|e| format!("{}: not a valid Avro schema: {e}", path.display()))?;
    let leaked = crate::decode::leak_schema(schema);
    let _ = cache.insert(path.to_path_buf(), leaked);
    Ok(leaked)
}

/// serde_yaml appends " at line L column C"; the line is reported separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The first line containing `needle`, 1-based.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn is_identifier_like(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A plain SQL identifier (no quoting needed, nothing to inject).
pub fn is_sql_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
