//! The catalog as MongoDB `data_products` keeps it: one document per product (`_id` = its name)
//! with its declaration, the text of every file the declaration names (contract schemas, their
//! versions, Avro writer schemas, the GraphQL schema), a content hash and a revision. This
//! module is pure: it turns a catalog loaded from files into those documents, plans what an
//! apply changes, and is a [`super::Files`] source, so a catalog read back from MongoDB is
//! compiled by the same code as one read from disk. The reads and writes are
//! `crate::sink::catalog`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::catalog::{Files, Problem};
use super::model::DataProduct;
use super::{Catalog, Product};

/// Where a stored product's files resolve: `data_products/<name>/<reference as written>`.
pub const STORED_PREFIX: &str = "data_products";

/// One product as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProduct {
    /// `metadata.name`, the document's `_id`.
    pub name: String,
    /// The declaration as written (YAML read as JSON).
    pub declaration: Value,
    /// Every file the declaration names, by reference as written (`schemas/payment-schema.json`).
    pub files: BTreeMap<String, String>,
    /// `sha256:` of the declaration and the files (canonical JSON): what tells a change.
    pub hash: String,
    /// Increases on every change; 0 before the first apply.
    pub revision: i64,
    /// Removed from disk since; kept, not deleted.
    pub retired: bool,
}

impl StoredProduct {
    /// The product loaded from `files`, with every file its declaration names read again
    /// (revision 0: the apply decides it).
    pub fn of(product: &Product, files: &Files) -> Result<Self, Problem> {
        let mut texts = BTreeMap::new();
        for reference in references(&product.decl) {
            let path = files.resolve(&product.file, &reference);
            let text = files.read(&path).map_err(|e| Problem {
                file: product.file.clone(),
                line: None,
                message: format!("{reference} ({}): {e}", path.display()),
            })?;
            let _ = texts.insert(reference, text);
        }
        Ok(Self::new(product.name().to_owned(), product.raw.clone(), texts))
    }

    /// A product with its hash computed (revision 0, not retired).
    pub fn new(name: String, declaration: Value, files: BTreeMap<String, String>) -> Self {
        let hash = content_hash(&declaration, &files);
        Self { name, declaration, files, hash, revision: 0, retired: false }
    }
}

/// Every file reference a declaration makes, in a stable order.
pub fn references(decl: &DataProduct) -> Vec<String> {
    let mut out = Vec::new();
    for c in &decl.spec.contracts {
        out.push(c.schema.clone());
        out.extend(c.versions.iter().map(|v| v.schema.clone()));
        if let Some(a) = &c.avro {
            out.extend(a.registry.values().cloned());
            out.extend(a.writers.iter().cloned());
            out.extend(a.plain_writer.iter().cloned());
        }
    }
    if let Some(g) = &decl.spec.apis.graphql {
        out.push(g.schema.clone());
    }
    out.sort();
    out.dedup();
    out
}

/// `sha256:<hex>` of the canonical JSON (keys sorted) of the declaration and the files.
pub fn content_hash(declaration: &Value, files: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    canonical(declaration, &mut text);
    text.push('\n');
    for (name, body) in files {
        canonical(&Value::String(name.clone()), &mut text);
        text.push(':');
        canonical(&Value::String(body.clone()), &mut text);
        text.push('\n');
    }
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The products of the stored catalog that are in force (not retired), as a [`Files`] source.
#[derive(Debug, Clone, Default)]
pub struct StoredFiles {
    products: BTreeMap<String, StoredProduct>,
}

impl StoredFiles {
    /// The source over these products (retired ones are left out).
    pub fn new(products: impl IntoIterator<Item = StoredProduct>) -> Self {
        Self { products: products.into_iter().filter(|p| !p.retired).map(|p| (p.name.clone(), p)).collect() }
    }

    /// Whether no product is in force.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    pub(super) fn product_files(&self) -> Result<Vec<(PathBuf, String)>, Problem> {
        if self.products.is_empty() {
            return Err(Problem {
                file: PathBuf::from(STORED_PREFIX),
                line: None,
                message: "no data product is applied (run `meshguard catalog apply`)".into(),
            });
        }
        // Pretty JSON is YAML, and one key per line lets problems name a line of it.
        Ok(self
            .products
            .values()
            .map(|p| {
                let text = serde_json::to_string_pretty(&p.declaration).unwrap_or_default();
                (Path::new(STORED_PREFIX).join(&p.name), text)
            })
            .collect())
    }

    pub(super) fn read(&self, path: &Path) -> Result<String, String> {
        let text = path.to_string_lossy();
        let rest = text.strip_prefix(STORED_PREFIX).and_then(|r| r.strip_prefix('/')).unwrap_or_default();
        let (product, reference) = rest.split_once('/').ok_or("not a file of the stored catalog")?;
        let stored = self.products.get(product).ok_or("no such product in the stored catalog")?;
        stored.files.get(reference).cloned().ok_or_else(|| format!("the stored document of {product} holds no file {reference:?}"))
    }
}

/// What an apply does to one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Not stored yet (or stored by `run` without a revision).
    Added,
    /// Its declaration or a file changed.
    Changed,
    /// Stored retired, back on disk.
    Restored,
    /// Gone from disk: marked retired.
    Retired,
    /// Same content: same revision, nothing written.
    Unchanged,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Restored => "restored",
            Self::Retired => "retired",
            Self::Unchanged => "unchanged",
        })
    }
}

/// One product's change, with the document to write (none when unchanged).
#[derive(Debug, Clone)]
pub struct Change {
    /// The product.
    pub name: String,
    /// What happens.
    pub kind: ChangeKind,
    /// Revision stored now (0: none).
    pub from: i64,
    /// Hash stored now (`None`: no applied document): with `from`, what the write expects to
    /// replace, so that a concurrent apply is noticed instead of overwritten.
    pub stored_hash: Option<String>,
    /// Revision after the apply.
    pub to: i64,
    /// What differs: `declaration`, and each file added, changed or removed.
    pub details: Vec<String>,
    /// The document to write.
    pub write: Option<StoredProduct>,
}

/// What applying `desired` (from disk) over `current` (stored, applied documents) changes,
/// by product name.
pub fn plan(current: &[StoredProduct], desired: &[StoredProduct]) -> Vec<Change> {
    let stored: BTreeMap<&str, &StoredProduct> = current.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut changes = Vec::new();
    for want in desired {
        let have = stored.get(want.name.as_str());
        let stored_hash = have.map(|h| h.hash.clone());
        let (kind, from, details) = match have {
            None => (ChangeKind::Added, 0, Vec::new()),
            Some(have) if have.hash == want.hash && !have.retired => (ChangeKind::Unchanged, have.revision, Vec::new()),
            Some(have) => {
                let details = differences(have, want);
                (if have.retired { ChangeKind::Restored } else { ChangeKind::Changed }, have.revision, details)
            }
        };
        let to = if kind == ChangeKind::Unchanged { from } else { from + 1 };
        let write = (kind != ChangeKind::Unchanged).then(|| StoredProduct { revision: to, retired: false, ..want.clone() });
        changes.push(Change { name: want.name.clone(), kind, from, stored_hash, to, details, write });
    }
    for have in current {
        if have.retired || desired.iter().any(|w| w.name == have.name) {
            continue;
        }
        let write = StoredProduct { revision: have.revision + 1, retired: true, ..have.clone() };
        changes.push(Change {
            name: have.name.clone(),
            kind: ChangeKind::Retired,
            from: have.revision,
            stored_hash: Some(have.hash.clone()),
            to: have.revision + 1,
            details: Vec::new(),
            write: Some(write),
        });
    }
    changes.sort_by(|a, b| a.name.cmp(&b.name));
    changes
}

fn differences(have: &StoredProduct, want: &StoredProduct) -> Vec<String> {
    let mut out = Vec::new();
    let (mut a, mut b) = (String::new(), String::new());
    canonical(&have.declaration, &mut a);
    canonical(&want.declaration, &mut b);
    if a != b {
        out.push("declaration changed".to_owned());
    }
    for (name, text) in &want.files {
        match have.files.get(name) {
            None => out.push(format!("{name} added")),
            Some(t) if t != text => out.push(format!("{name} changed")),
            Some(_) => {}
        }
    }
    out.extend(have.files.keys().filter(|n| !want.files.contains_key(*n)).map(|n| format!("{n} removed")));
    out
}

/// The revision in force of each product a catalog holds: what `/metrics` and the logs show.
pub type Revisions = BTreeMap<String, i64>;

/// Compiles the products in force with the catalog's own loading code.
pub fn compile(products: &[StoredProduct]) -> Result<Catalog, super::LoadErrors> {
    Catalog::load(&Files::Stored(std::sync::Arc::new(StoredFiles::new(products.iter().cloned()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str, schema: &str) -> StoredProduct {
        let files = BTreeMap::from([("schemas/s.json".to_owned(), schema.to_owned())]);
        StoredProduct::new(name.into(), serde_json::json!({"metadata": {"name": name}, "b": 1, "a": [1, 2]}), files)
    }

    #[test]
    fn the_hash_ignores_key_order_and_sees_every_file() {
        let a = product("p", "{}");
        let reordered: Value = serde_json::from_str(r#"{"a": [1, 2], "b": 1, "metadata": {"name": "p"}}"#).unwrap_or_default();
        assert_eq!(a.hash, StoredProduct::new("p".into(), reordered, a.files.clone()).hash);
        assert_ne!(a.hash, product("p", "{\"type\": \"object\"}").hash);
    }

    #[test]
    fn an_apply_keeps_unchanged_revisions_bumps_changed_ones_and_retires_the_missing() {
        let stored = vec![
            StoredProduct { revision: 3, ..product("same", "{}") },
            StoredProduct { revision: 1, ..product("edited", "{}") },
            StoredProduct { revision: 2, ..product("gone", "{}") },
            StoredProduct { revision: 4, retired: true, ..product("back", "{}") },
        ];
        let desired = vec![product("same", "{}"), product("edited", "{\"x\": 1}"), product("back", "{}"), product("new", "{}")];
        let plan = plan(&stored, &desired);
        let by = |n: &str| plan.iter().find(|c| c.name == n).map(|c| (c.kind, c.from, c.to, c.write.is_some()));
        assert_eq!(by("same"), Some((ChangeKind::Unchanged, 3, 3, false)));
        assert_eq!(by("edited"), Some((ChangeKind::Changed, 1, 2, true)));
        assert_eq!(by("gone"), Some((ChangeKind::Retired, 2, 3, true)));
        assert_eq!(by("back"), Some((ChangeKind::Restored, 4, 5, true)));
        assert_eq!(by("new"), Some((ChangeKind::Added, 0, 1, true)));
        let edited = plan.iter().find(|c| c.name == "edited").map(|c| c.details.clone()).unwrap_or_default();
        assert_eq!(edited, vec!["schemas/s.json changed".to_owned()]);
    }

    #[test]
    fn the_shipped_products_compile_from_their_stored_form() {
        let files = Files::Embedded;
        let catalog = Catalog::load(&files).unwrap_or_else(|e| panic!("{e}"));
        let stored: Vec<StoredProduct> =
            catalog.products.iter().map(|p| StoredProduct::of(p, &files).unwrap_or_else(|e| panic!("{e}"))).collect();
        let again = compile(&stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.topics(), catalog.topics());
        assert_eq!(again.products.len(), catalog.products.len());
    }
}
