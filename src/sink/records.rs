//! The record store: one document per key in `records.{product}` (`_id` = the record's key),
//! holding the newest valid version's fields and `_meta`, and the key's lineage folded in
//! (`_lineage`: the newest `mongodb.history` entries, valid and invalid, in the seed's lineage
//! shape). So every read the API makes is one `find_one` by `_id`, the only filter FerretDB 1.x
//! hands to its backend's index (docs/benchmarks.md, round 5c), and the store holds one document
//! per key whatever the number of events.
//!
//! Writing a batch: entries are grouped by key (a key's versions in one batch become one
//! write); the documents of keys seen for the first time go in one unordered `insert_many`
//! (FerretDB's fastest write); a key whose document exists already (duplicate `_id`) is read,
//! merged and replaced by `_id`, one statement per command (an `update` command of ~100
//! statements, or a few concurrent ones of 50, hangs FerretDB 1.24). Merging is idempotent: a
//! replayed entry is already among the lineage ids and never newer than the current version, so
//! a replay writes nothing. The newest version is the one with the greatest
//! `(event_time_ms, offset)`: an out-of-order older event never hides a newer one.
//!
//! A merge (read, then replace) needs one writer per key at a time: FerretDB has no conditional
//! write it can look up by index (a filter on `_id` and a revision field scans the collection)
//! and applies update operators outside a transaction. With `mongodb.materialize = "kafka"` a
//! key's entries share a partition of `topics.records`, so one materializer writes them.
//! Inline, instances reading one key's events from different source partitions would merge it
//! at the same moment (the later replace dropping what the other added), so each merge holds a
//! lock: a document `{product}/{key}` in [`RECORD_LOCKS`], inserted (a duplicate `_id` means
//! another writer holds it) and deleted after the replace. A lock left by a crashed writer
//! expires after [`LOCK_TTL_MS`]; two writers taking over the same expired lock at the same
//! moment can still race (a crash and contention on one key at once).

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::ErrorKind;

use super::mongo::{DUPLICATE_KEY, Entry, LineageDoc, MongoSink, MongoSinkError, classify, in_collection, is_duplicate_key, json_to_bson};

/// How many keys are merged at once (each a read and a replace on its own connection).
const MERGES_IN_FLIGHT: usize = 8;
/// Locks held while an inline writer merges a key (see the module's documentation).
pub const RECORD_LOCKS: &str = "record_locks";
/// How long a lock lives: a writer that crashed while holding one is taken over after this.
pub const LOCK_TTL_MS: i64 = 30_000;
/// How long a writer waits for a lock before the batch fails (and is retried).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// The lineage entries a document keeps when `mongodb.history` is not given.
pub const DEFAULT_HISTORY: usize = 10;

/// A product's entries by key, the keys in first-seen order.
type Keys = (Vec<String>, HashMap<String, Vec<Entry>>);

/// A key's document as a batch builds it, before it meets the stored one.
#[derive(Debug)]
struct Folded {
    key: String,
    /// The newest valid entry of the batch, if any.
    current: Option<Entry>,
    /// Lineage entries (seed shape, `lineage_id` set), newest first, deduplicated.
    lineage: Vec<Document>,
}

/// Orders versions: event time (missing = oldest), then offset.
fn version_order(event_time_ms: Option<i64>, offset: i64) -> (i64, i64) {
    (event_time_ms.unwrap_or(i64::MIN), offset)
}

/// The lineage entry of `e`: the seed's `data_lineage` shape without `_id`, plus the event time
/// (to order and bound the history).
pub(super) fn lineage_entry(e: &Entry, record_store: &str) -> Document {
    let processed_at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.processed_at_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let lineage = LineageDoc {
        source_topic: e.topic.clone(),
        source_partition: e.partition,
        source_offset: e.offset,
        source_timestamp_ms: e.timestamp_ms,
        product: e.product.clone(),
        contract: e.contract.clone(),
        contract_version: e.contract_version.clone(),
        record_id: e.record_id.clone(),
        outcome: if e.valid { "valid" } else { "invalid" },
        destination_collection: if e.valid { record_store.to_owned() } else { e.dead_letters.clone() },
        destination_system: if e.valid { "mongodb" } else { "kafka" },
        processed_at,
    };
    let mut d = lineage.to_document();
    let _ = d.remove("_id");
    let _ = d.insert("event_time_ms", e.event_time_ms.or(e.timestamp_ms));
    d
}

/// The order of a lineage entry: its event time (or record timestamp), then its offset.
fn entry_order(d: &Document) -> (i64, i64) {
    let t = d.get("event_time_ms").and_then(as_i64);
    let o = d.get_document("source").ok().and_then(|s| s.get("offset")).and_then(as_i64).unwrap_or(i64::MIN);
    version_order(t, o)
}

pub(super) fn as_i64(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// Newest first, each id once, at most `history`.
fn bound(mut lineage: Vec<Document>, history: usize) -> Vec<Document> {
    lineage
        .sort_by(|a, b| entry_order(b).cmp(&entry_order(a)).then_with(|| b.get_str("lineage_id").ok().cmp(&a.get_str("lineage_id").ok())));
    let mut seen = HashSet::new();
    lineage.retain(|d| seen.insert(d.get_str("lineage_id").unwrap_or_default().to_owned()));
    lineage.truncate(history.max(1));
    lineage
}

fn fold(key: String, entries: Vec<Entry>, record_store: &str, history: usize) -> Folded {
    let lineage = bound(entries.iter().map(|e| lineage_entry(e, record_store)).collect(), history);
    let current = entries.into_iter().filter(|e| e.valid && e.record.is_some()).max_by_key(|e| version_order(e.event_time_ms, e.offset));
    Folded { key, current, lineage }
}

/// The stored document of a key: the current version's fields at top level (a record's own
/// `_id`, `_meta` and `_lineage` dropped, a non-object record under `value`), `_meta`, `_lineage`.
fn document(key: &str, current: Option<(&Entry, DateTime)>, lineage: Vec<Document>) -> Document {
    let mut out = Document::new();
    let _ = out.insert("_id", key);
    if let Some((e, updated_at)) = current {
        match e.record.as_ref().map(json_to_bson) {
            Some(Bson::Document(fields)) => {
                for (k, v) in fields {
                    if k != "_id" && k != "_meta" && k != "_lineage" {
                        let _ = out.insert(k, v);
                    }
                }
            }
            Some(other) => {
                let _ = out.insert("value", other);
            }
            None => {}
        }
        let _ = out.insert(
            "_meta",
            doc! {
                "event_time_ms": e.event_time_ms,
                "topic": &e.topic,
                "partition": e.partition,
                "offset": e.offset,
                "timestamp_ms": e.timestamp_ms,
                "contract": &e.contract,
                "contract_version": &e.contract_version,
                "version_id": format!("{key}@{}", super::mongo::record_position(&e.topic, e.partition, e.offset, e.timestamp_ms)),
                "updated_at": updated_at,
            },
        );
    }
    let _ = out.insert("_lineage", lineage.into_iter().map(Bson::Document).collect::<Vec<_>>());
    out
}

/// The stored current version's order, if the document has one.
fn stored_order(d: &Document) -> Option<(i64, i64)> {
    let meta = d.get_document("_meta").ok()?;
    let o = meta.get("offset").and_then(as_i64)?;
    Some(version_order(meta.get("event_time_ms").and_then(as_i64), o))
}

/// `stored` with `f` merged in, or `None` when nothing changes (a replay).
fn merge(stored: &Document, f: &Folded, record_store_history: usize, now: DateTime) -> Option<Document> {
    let old_lineage: Vec<Document> =
        stored.get_array("_lineage").map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect()).unwrap_or_default();
    let old_ids: HashSet<&str> = old_lineage.iter().filter_map(|d| d.get_str("lineage_id").ok()).collect();
    let newer = f.current.as_ref().filter(|e| stored_order(stored).is_none_or(|o| version_order(e.event_time_ms, e.offset) > o));
    let mut lineage = old_lineage.clone();
    lineage.extend(f.lineage.iter().cloned());
    let lineage = bound(lineage, record_store_history);
    let new_ids: HashSet<&str> = lineage.iter().filter_map(|d| d.get_str("lineage_id").ok()).collect();
    if newer.is_none() && new_ids == old_ids {
        return None;
    }
    let mut out = match newer {
        Some(e) => document(&f.key, Some((e, now)), Vec::new()),
        None => {
            let mut d = stored.clone();
            let _ = d.remove("_lineage");
            d
        }
    };
    let _ = out.insert("_lineage", lineage.into_iter().map(Bson::Document).collect::<Vec<_>>());
    Some(out)
}

/// Writes `entries` of keyed records (valid or not) to their products' record stores; entries
/// without a key go to `data_lineage`, one document each. Returns the documents written
/// (inserted or replaced; replays that change nothing are not counted).
///
/// `single_writer`: no other writer merges these keys meanwhile (the materializer: a key's
/// entries share a partition), so merges take no lock.
pub(super) async fn write(mongo: &MongoSink, entries: Vec<Entry>, history: usize, single_writer: bool) -> Result<usize, MongoSinkError> {
    let mut keyless = Vec::new();
    let mut by_product: HashMap<String, Keys> = HashMap::new();
    for e in entries {
        match e.record_id.clone() {
            Some(key) => {
                let (order, groups) = by_product.entry(e.product.clone()).or_default();
                match groups.get_mut(&key) {
                    Some(g) => g.push(e),
                    None => {
                        order.push(key.clone());
                        let _ = groups.insert(key, vec![e]);
                    }
                }
            }
            None => keyless.push(e),
        }
    }
    let mut written = 0;
    if !keyless.is_empty() {
        let docs: Vec<Document> = keyless
            .iter()
            .map(|e| {
                let mut d = lineage_entry(e, &MongoSink::record_store(&e.product));
                let _ = d.remove("event_time_ms");
                let id = super::mongo::record_position(&e.topic, e.partition, e.offset, e.timestamp_ms);
                let mut out = doc! { "_id": id };
                out.extend(d);
                out
            })
            .collect();
        written += docs.len();
        mongo.insert_new(super::mongo::LINEAGE, docs).await?;
    }
    for (product, (order, mut groups)) in by_product {
        let store = MongoSink::record_store(&product);
        let folded: Vec<Folded> = order.into_iter().filter_map(|k| groups.remove(&k).map(|g| fold(k, g, &store, history))).collect();
        written += write_product(mongo, &product, folded, history, single_writer).await?;
    }
    Ok(written)
}

async fn write_product(
    mongo: &MongoSink,
    product: &str,
    folded: Vec<Folded>,
    history: usize,
    single_writer: bool,
) -> Result<usize, MongoSinkError> {
    let store = &MongoSink::record_store(product);
    let now = DateTime::now();
    let fresh: Vec<Document> = folded.iter().map(|f| document(&f.key, f.current.as_ref().map(|e| (e, now)), f.lineage.clone())).collect();
    let n = fresh.len();
    let coll = mongo.collection(store);
    // Keys seen for the first time are inserted; the others (duplicate `_id`) are merged.
    let existing: Vec<usize> = match coll.insert_many(fresh).ordered(false).await {
        Ok(_) => Vec::new(),
        Err(e) => match e.kind.as_ref() {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                if let Some(w) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                    return Err(in_collection(
                        store,
                        MongoSinkError::Rejected(format!(
                            "write error {} ({}): {}",
                            w.code,
                            w.code_name.as_deref().unwrap_or("?"),
                            w.message
                        )),
                    ));
                }
                errors.iter().map(|w| w.index).collect()
            }
            _ => return Err(in_collection(store, classify(&e))),
        },
    };
    let inserted = n - existing.len();
    let merges = existing.into_iter().filter_map(|i| folded.get(i)).map(|f| async move {
        if single_writer {
            return merge_one(mongo, store, f, history, now).await;
        }
        let lock = format!("{product}/{}", f.key);
        acquire(mongo, &lock).await?;
        let merged = merge_one(mongo, store, f, history, now).await;
        let released = release(mongo, &lock).await;
        let merged = merged?;
        released.map(|()| merged)
    });
    let mut replaced = 0;
    let mut results = futures_util::stream::iter(merges).buffer_unordered(MERGES_IN_FLIGHT);
    while let Some(r) = results.next().await {
        replaced += usize::from(r?);
    }
    Ok(inserted + replaced)
}

/// Takes the lock `id` (see the module's documentation), waiting up to [`LOCK_WAIT`].
async fn acquire(mongo: &MongoSink, id: &str) -> Result<(), MongoSinkError> {
    let locks = mongo.collection(RECORD_LOCKS);
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let now = DateTime::now().timestamp_millis();
        match locks.insert_one(doc! { "_id": id, "expires_ms": now + LOCK_TTL_MS }).await {
            Ok(_) => return Ok(()),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(in_collection(RECORD_LOCKS, classify(&e))),
        }
        let held = locks.find_one(doc! { "_id": id }).await.map_err(|e| in_collection(RECORD_LOCKS, classify(&e)))?;
        let expired = held.as_ref().and_then(|d| d.get("expires_ms")).and_then(as_i64).is_some_and(|t| t < now);
        if expired {
            // Its writer crashed: take it over.
            let _ = locks.delete_one(doc! { "_id": id }).await.map_err(|e| in_collection(RECORD_LOCKS, classify(&e)))?;
            continue;
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(MongoSinkError::Unavailable(format!("{RECORD_LOCKS}: {id} stayed locked for {} s", LOCK_WAIT.as_secs())));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

async fn release(mongo: &MongoSink, id: &str) -> Result<(), MongoSinkError> {
    let _ = mongo.collection(RECORD_LOCKS).delete_one(doc! { "_id": id }).await.map_err(|e| in_collection(RECORD_LOCKS, classify(&e)))?;
    Ok(())
}

/// Reads the key's document, merges `f` into it and replaces it; whether it wrote.
async fn merge_one(mongo: &MongoSink, store: &str, f: &Folded, history: usize, now: DateTime) -> Result<bool, MongoSinkError> {
    let coll = mongo.collection(store);
    for attempt in 0..2 {
        let stored = coll.find_one(doc! { "_id": f.key.as_str() }).await.map_err(|e| in_collection(store, classify(&e)))?;
        let next = match &stored {
            Some(d) => merge(d, f, history, now),
            // Deleted since the insert failed: write it as new.
            None => Some(document(&f.key, f.current.as_ref().map(|e| (e, now)), f.lineage.clone())),
        };
        let Some(next) = next else { return Ok(false) };
        match coll.replace_one(doc! { "_id": f.key.as_str() }, next).upsert(true).await {
            Ok(_) => return Ok(true),
            // Two upserts of a deleted key raced: read and merge again.
            Err(e) if attempt == 0 && is_duplicate_key(&e) => {}
            Err(e) => return Err(in_collection(store, classify(&e))),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(key: &str, offset: i64, event_time_ms: Option<i64>, valid: bool) -> Entry {
        Entry {
            topic: "payments.created".into(),
            partition: 0,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            product: "payments".into(),
            contract: "c".into(),
            contract_version: "1.0.0".into(),
            record_id: Some(key.into()),
            valid,
            dead_letters: if valid { String::new() } else { "datamesh.dlq".into() },
            processed_at_ms: 1_700_000_000_000,
            event_time_ms,
            record: valid.then(|| json!({"payment_id": key, "n": offset})),
        }
    }

    fn ids(d: &Document) -> Vec<String> {
        d.get_array("_lineage")
            .map(|a| a.iter().filter_map(|b| b.as_document()?.get_str("lineage_id").ok().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_batch_keeps_the_newest_valid_version_by_event_time_then_offset() {
        let f = fold(
            "k".into(),
            vec![
                entry("k", 1, Some(30), true),
                entry("k", 2, Some(10), true),
                entry("k", 3, Some(30), true),
                entry("k", 4, Some(99), false),
            ],
            "records.payments",
            10,
        );
        assert_eq!(f.current.as_ref().map(|e| e.offset), Some(3));
        assert_eq!(f.lineage.len(), 4);
        assert_eq!(entry_order(&f.lineage[0]), (99, 4));
    }

    #[test]
    fn merge_never_lets_an_older_event_hide_a_newer_one_and_a_replay_changes_nothing() {
        let now = DateTime::from_millis(0);
        let first = fold("k".into(), vec![entry("k", 5, Some(50), true)], "s", 10);
        let stored = document("k", first.current.as_ref().map(|e| (e, now)), first.lineage.clone());
        assert!(merge(&stored, &first, 10, now).is_none(), "a replay writes nothing");
        let older = fold("k".into(), vec![entry("k", 6, Some(40), true)], "s", 10);
        let merged = merge(&stored, &older, 10, now).unwrap_or_else(|| panic!("the older version's lineage is new"));
        assert_eq!(merged.get_i64("n").ok(), Some(5), "the newer version stays current");
        assert_eq!(ids(&merged).len(), 2);
        let newer = fold("k".into(), vec![entry("k", 7, Some(60), true)], "s", 10);
        let merged = merge(&merged, &newer, 10, now).unwrap_or_else(|| panic!("newer"));
        assert_eq!(merged.get_i64("n").ok(), Some(7));
        assert_eq!(merged.get_document("_meta").ok().and_then(|m| m.get_i64("offset").ok()), Some(7));
    }

    #[test]
    fn history_is_bounded_to_the_newest_entries() {
        let now = DateTime::from_millis(0);
        let mut stored = document("k", None, Vec::new());
        for o in 0..25 {
            let f = fold("k".into(), vec![entry("k", o, Some(o), o % 3 != 0)], "s", 10);
            stored = merge(&stored, &f, 10, now).unwrap_or_else(|| panic!("new entry {o}"));
        }
        let kept = ids(&stored);
        assert_eq!(kept.len(), 10);
        assert!(kept[0].contains("/24/"), "{kept:?}");
        assert!(kept[9].contains("/15/"), "{kept:?}");
        assert_eq!(stored.get_i64("n").ok(), Some(23), "24 is invalid; 23 is the newest valid");
        // An entry older than the whole history changes nothing.
        let ancient = fold("k".into(), vec![entry("k", 1000, Some(-5), false)], "s", 10);
        assert!(merge(&stored, &ancient, 10, now).is_none());
    }

    #[test]
    fn an_invalid_only_key_has_lineage_and_no_current_version() {
        let f = fold("k".into(), vec![entry("k", 1, Some(1), false)], "s", 10);
        let d = document("k", f.current.as_ref().map(|e| (e, DateTime::from_millis(0))), f.lineage);
        assert!(d.get("_meta").is_none());
        assert_eq!(ids(&d).len(), 1);
    }
}
