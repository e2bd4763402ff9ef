//! The catalog in MongoDB `data_products`: one document per product, `_id` = its name, read and
//! written by `_id` only (FerretDB scans a collection for any other filter; this one holds a
//! handful of documents, so the unfiltered reads below cost one small scan).
//!
//! A document is the declaration as the seed reads it (`apiVersion`, `kind`, `metadata`, `spec`
//! at the top level) plus `revision`, `hash`, `schemas` (`[{file, text}]`: every file the
//! declaration names), `retired` and `applied_at`. A document without `revision` was stored by
//! `meshguard run` from files (the declaration only): it is not part of the applied catalog.
//!
//! [`CatalogWatch`] is how `serve` and `run` follow it: it re-reads the revisions, compiles a
//! changed catalog with the same code as files ([`crate::product::stored::compile`]), and
//! refuses one that does not compile (the running one stays; counted in
//! `meshguard_catalog_refusals_total`, logged once per refused set of revisions).

use std::collections::BTreeMap;

use metrics::{counter, gauge};
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde_json::Value;
use tracing::{error, info};

use super::mongo::{
    DATA_PRODUCT_REVISIONS, DATA_PRODUCTS, MongoSink, MongoSinkError, classify, in_collection, is_duplicate_key, json_to_bson,
};
use crate::product::stored::{Revisions, StoredProduct, compile};
use crate::product::{Catalog, LoadErrors};
use crate::telemetry::names::{CATALOG_REFUSALS_TOTAL, CATALOG_REVISION};

/// The fields the catalog adds to a declaration.
const CATALOG_FIELDS: [&str; 5] = ["revision", "hash", "schemas", "retired", "applied_at"];

/// What `data_products` holds.
#[derive(Debug, Default)]
pub struct Stored {
    /// Documents written by `catalog apply`, retired ones included.
    pub applied: Vec<StoredProduct>,
    /// Ids of documents without a revision (declarations `run` stored from files).
    pub unapplied: Vec<String>,
}

/// A document as stored.
pub fn to_document(p: &StoredProduct) -> Document {
    let mut d = match json_to_bson(&p.declaration) {
        Bson::Document(d) => d,
        _ => Document::new(),
    };
    let schemas: Vec<Document> = p.files.iter().map(|(file, text)| doc! { "file": file, "text": text }).collect();
    let _ = d.insert("revision", p.revision);
    let _ = d.insert("hash", p.hash.as_str());
    let _ = d.insert("schemas", schemas);
    let _ = d.insert("retired", p.retired);
    let _ = d.insert("applied_at", DateTime::now());
    d
}

/// The product a document holds; `None` without a revision (not applied).
pub fn from_document(d: Document) -> Option<StoredProduct> {
    let id = d.get_str("_id").ok()?.to_owned();
    let revision = match d.get("revision")? {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(f) => *f as i64,
        _ => return None,
    };
    let hash = d.get_str("hash").unwrap_or_default().to_owned();
    let retired = d.get_bool("retired").unwrap_or(false);
    let mut files = BTreeMap::new();
    for s in d.get_array("schemas").map(|a| a.as_slice()).unwrap_or_default() {
        if let Some(s) = s.as_document()
            && let (Ok(file), Ok(text)) = (s.get_str("file"), s.get_str("text"))
        {
            let _ = files.insert(file.to_owned(), text.to_owned());
        }
    }
    let mut declaration = Document::new();
    for (k, v) in d {
        if k != "_id" && !CATALOG_FIELDS.contains(&k.as_str()) {
            let _ = declaration.insert(k, v);
        }
    }
    let declaration: Value = Bson::Document(declaration).into_relaxed_extjson();
    Some(StoredProduct { name: id, declaration, files, hash, revision, retired })
}

impl MongoSink {
    /// Every document of `data_products`.
    pub async fn catalog(&self) -> Result<Stored, MongoSinkError> {
        let mut cursor = self.collection(DATA_PRODUCTS).find(doc! {}).await.map_err(|e| in_collection(DATA_PRODUCTS, classify(&e)))?;
        let mut stored = Stored::default();
        while cursor.advance().await.map_err(|e| in_collection(DATA_PRODUCTS, classify(&e)))? {
            let d: Document = cursor.deserialize_current().map_err(|e| MongoSinkError::Rejected(format!("{DATA_PRODUCTS}: {e}")))?;
            let id = d.get_str("_id").unwrap_or_default().to_owned();
            match from_document(d) {
                Some(p) => stored.applied.push(p),
                None => stored.unapplied.push(id),
            }
        }
        stored.applied.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(stored)
    }

    /// `(revision, retired)` of every applied document: the cheap read the watchers repeat.
    pub async fn catalog_revisions(&self) -> Result<BTreeMap<String, (i64, bool)>, MongoSinkError> {
        let mut cursor = self
            .collection(DATA_PRODUCTS)
            .find(doc! {})
            .projection(doc! { "revision": 1, "retired": 1 })
            .await
            .map_err(|e| in_collection(DATA_PRODUCTS, classify(&e)))?;
        let mut out = BTreeMap::new();
        while cursor.advance().await.map_err(|e| in_collection(DATA_PRODUCTS, classify(&e)))? {
            let d: Document = cursor.deserialize_current().map_err(|e| MongoSinkError::Rejected(format!("{DATA_PRODUCTS}: {e}")))?;
            let revision = match d.get("revision") {
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(f)) => *f as i64,
                _ => continue,
            };
            let _ = out.insert(d.get_str("_id").unwrap_or_default().to_owned(), (revision, d.get_bool("retired").unwrap_or(false)));
        }
        Ok(out)
    }

    /// Writes one product's document (replaced by `_id`).
    pub async fn put_product(&self, p: &StoredProduct) -> Result<(), MongoSinkError> {
        self.put_document(DATA_PRODUCTS, &p.name, to_document(p)).await
    }

    /// Claims revision `p.revision` of `p.name` by inserting `<product>@<revision>` into
    /// `data_product_revisions` (with the hash and the time): an insert of an existing `_id` is
    /// refused atomically by every MongoDB-wire server, FerretDB 1.x included, whose filtered
    /// updates are a scan then a write by `_id` (two conditional replaces can both match).
    /// `Taken` says when the holder claimed it.
    pub async fn claim_revision(&self, p: &StoredProduct) -> Result<Claim, MongoSinkError> {
        let id = format!("{}@{}", p.name, p.revision);
        let coll = self.collection(DATA_PRODUCT_REVISIONS);
        let claim = doc! { "_id": id.as_str(), "product": p.name.as_str(), "revision": p.revision, "hash": p.hash.as_str(), "retired": p.retired, "claimed_at": DateTime::now() };
        match coll.insert_one(claim).await {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) if is_duplicate_key(&e) => {
                let held =
                    coll.find_one(doc! { "_id": id.as_str() }).await.map_err(|e| in_collection(DATA_PRODUCT_REVISIONS, classify(&e)))?;
                Ok(Claim::Taken { claimed_at: held.and_then(|d| d.get_datetime("claimed_at").ok().copied()) })
            }
            Err(e) => Err(in_collection(DATA_PRODUCT_REVISIONS, classify(&e))),
        }
    }

    /// Gives back a claim whose document could not be written (best effort).
    pub async fn release_revision(&self, p: &StoredProduct) {
        let id = format!("{}@{}", p.name, p.revision);
        let _ = self.collection(DATA_PRODUCT_REVISIONS).delete_one(doc! { "_id": id }).await;
    }

    /// Writes one product's document only if the stored one is still `expected` (its revision
    /// and hash; `None`: no applied document, at most a declaration `run` stored). `Ok(false)`
    /// when another writer got there first. On MongoDB this alone keeps two applies apart; on
    /// FerretDB 1.x (a scan, then a write by `_id`) it is the second guard behind
    /// [`Self::claim_revision`]. The filter names more than `_id`, which FerretDB answers by
    /// scanning: fine for a collection of a handful of documents.
    pub async fn put_product_if(&self, p: &StoredProduct, expected: Option<(i64, &str)>) -> Result<bool, MongoSinkError> {
        let mut replacement = to_document(p);
        let _ = replacement.insert("_id", p.name.as_str());
        let coll = self.collection(DATA_PRODUCTS);
        let written = match expected {
            Some((revision, hash)) => coll
                .replace_one(doc! { "_id": p.name.as_str(), "revision": revision, "hash": hash }, replacement)
                .await
                .map(|r| r.matched_count == 1),
            // Inserted, or replacing a declaration without a revision; a concurrent insert
            // makes this one a duplicate key.
            None => {
                match coll.replace_one(doc! { "_id": p.name.as_str(), "revision": { "$exists": false } }, replacement).upsert(true).await {
                    Err(e) if is_duplicate_key(&e) => Ok(false),
                    other => other.map(|_| true),
                }
            }
        };
        written.map_err(|e| in_collection(DATA_PRODUCTS, classify(&e)))
    }

    /// Stores a declaration `run` read from files, unless an applied document (with a
    /// revision) holds that product: `catalog apply` owns those, and `run` never overwrites them.
    pub async fn put_declaration_unless_applied(&self, name: &str, declaration: &Value) -> Result<bool, MongoSinkError> {
        let found =
            self.collection(DATA_PRODUCTS).find_one(doc! { "_id": name }).await.map_err(|e| in_collection(DATA_PRODUCTS, classify(&e)))?;
        if found.is_some_and(|d| d.contains_key("revision")) {
            return Ok(false);
        }
        self.put(DATA_PRODUCTS, name, declaration).await?;
        Ok(true)
    }
}

/// The answer to a revision claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This writer holds the revision: it writes the document.
    Claimed,
    /// Another writer claimed it, at that time when known.
    Taken {
        /// When the other writer claimed it.
        claimed_at: Option<DateTime>,
    },
}

/// A catalog compiled from the stored documents, with the revisions it holds.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled catalog.
    pub catalog: Catalog,
    /// Revision of each product in force.
    pub revisions: Revisions,
}

/// Why a stored catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// MongoDB did not answer.
    #[error("{0}")]
    Store(#[from] MongoSinkError),
    /// A product or contract does not compile.
    #[error("the catalog in data_products does not compile:\n{0}")]
    Invalid(LoadErrors),
}

/// Reads and compiles the applied catalog.
pub async fn load(store: &MongoSink) -> Result<Loaded, LoadError> {
    let stored = store.catalog().await?;
    let revisions = in_force(&stored.applied);
    let catalog = compile(&stored.applied).map_err(LoadError::Invalid)?;
    Ok(Loaded { catalog, revisions })
}

fn in_force(applied: &[StoredProduct]) -> Revisions {
    applied.iter().filter(|p| !p.retired).map(|p| (p.name.clone(), p.revision)).collect()
}

/// Shows `revisions` as the catalog revision in force (`meshguard_catalog_revision{product}`).
pub fn show_revisions(previous: &Revisions, revisions: &Revisions) {
    for name in previous.keys().filter(|n| !revisions.contains_key(*n)) {
        gauge!(CATALOG_REVISION, "product" => name.clone()).set(0.0);
    }
    for (name, revision) in revisions {
        gauge!(CATALOG_REVISION, "product" => name.clone()).set(*revision as f64);
    }
}

/// `name@revision …`, for logs.
pub fn describe(revisions: &Revisions) -> String {
    revisions.iter().map(|(n, r)| format!("{n}@{r}")).collect::<Vec<_>>().join(" ")
}

/// What one look at the stored catalog found.
#[derive(Debug)]
pub enum Poll {
    /// The revisions in force are still the stored ones (or the last refused ones).
    Unchanged,
    /// A new catalog compiled: switch to it.
    Switched(Loaded),
    /// A new set of revisions does not compile (already logged and counted); keep the running one.
    Refused,
    /// MongoDB did not answer (already logged); ask again later.
    Unavailable,
}

/// Follows the stored catalog from the revisions in force.
#[derive(Debug)]
pub struct CatalogWatch {
    /// `(revision, retired)` per product in force.
    seen: BTreeMap<String, (i64, bool)>,
    /// The same for the last refused catalog: not compiled, counted or logged again.
    refused: Option<BTreeMap<String, (i64, bool)>>,
    /// What is in force.
    current: Revisions,
}

impl CatalogWatch {
    /// Watches from a catalog loaded with [`load`] (and shows its revisions).
    pub fn new(loaded: &Loaded) -> Self {
        show_revisions(&Revisions::new(), &loaded.revisions);
        let seen = loaded.revisions.iter().map(|(n, r)| (n.clone(), (*r, false))).collect();
        Self { seen, refused: None, current: loaded.revisions.clone() }
    }

    /// The revisions in force.
    pub fn current(&self) -> &Revisions {
        &self.current
    }

    /// Reads the revisions; when they changed, reads and compiles the catalog.
    pub async fn poll(&mut self, store: &MongoSink) -> Poll {
        let now = match store.catalog_revisions().await {
            Ok(r) => r.into_iter().filter(|(_, (_, retired))| !retired).collect::<BTreeMap<_, _>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog's revisions; keeping the catalog in force");
                return Poll::Unavailable;
            }
        };
        if now == self.seen || self.refused.as_ref() == Some(&now) {
            return Poll::Unchanged;
        }
        match load(store).await {
            Ok(loaded) => {
                info!(from = %describe(&self.current), to = %describe(&loaded.revisions), "catalog revision switched");
                show_revisions(&self.current, &loaded.revisions);
                self.seen = loaded.revisions.iter().map(|(n, r)| (n.clone(), (*r, false))).collect();
                self.current = loaded.revisions.clone();
                self.refused = None;
                Poll::Switched(loaded)
            }
            Err(LoadError::Invalid(problems)) => {
                counter!(CATALOG_REFUSALS_TOTAL).increment(1);
                error!(
                    in_force = %describe(&self.current),
                    refused = %now.iter().map(|(n, (r, _))| format!("{n}@{r}")).collect::<Vec<_>>().join(" "),
                    problems = %problems,
                    "catalog revision refused: it does not compile; the revision in force stays"
                );
                self.refused = Some(now);
                Poll::Refused
            }
            Err(LoadError::Store(e)) => {
                tracing::warn!(error = %e, "cannot read the catalog; keeping the catalog in force");
                Poll::Unavailable
            }
        }
    }

    /// Refuses what the last poll switched to, for a reason of the caller's (e.g. `run` cannot
    /// change its subscription): counted and logged like a catalog that does not compile.
    pub fn refuse(&mut self, previous: Revisions, reason: &str) {
        counter!(CATALOG_REFUSALS_TOTAL).increment(1);
        error!(in_force = %describe(&previous), refused = %describe(&self.current), reason, "catalog revision refused; the revision in force stays");
        self.refused = Some(std::mem::take(&mut self.seen));
        show_revisions(&self.current, &previous);
        self.seen = previous.iter().map(|(n, r)| (n.clone(), (*r, false))).collect();
        self.current = previous;
    }
}
