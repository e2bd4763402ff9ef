//! Reconcile: accuracy against the source database, in batches.
//!
//! Valid records of contracts with a reconciliation table become [`Claim`]s (record id, amount,
//! currency). [`Reconciler::run`] checks every due claim with one `SELECT … WHERE key IN (…)`
//! per table and chunk (never one query per event); amounts compare as decimals within the
//! tolerance. A record not yet in the source is re-checked until its grace period ends
//! (replication lag is not an inaccuracy) and only then counts as missing. When the database is
//! unreachable nothing is decided: claims stay pending (unverified) and are retried; the caller
//! pauses the stream only when the backlog reaches its bound.

pub mod mysql;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::contract::{Contract, RecordView};
use crate::error::Error;
use crate::product::model::ReconciliationSpec;

/// The seed's tolerance: amounts closer than this match.
pub const DEFAULT_TOLERANCE: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

/// What the source holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceValue {
    /// The amount column.
    pub amount: Decimal,
    /// The currency column, when configured.
    pub currency: Option<String>,
}

/// A source database that answers one batched lookup per table.
pub trait SourceDb: Send + Sync {
    /// Looks up `keys` in `spec.table`. Keys absent from the answer are not (yet) in the source.
    fn fetch(&self, spec: &ReconciliationSpec, keys: &[String])
    -> impl Future<Output = Result<HashMap<String, SourceValue>, Error>> + Send;
}

/// One valid record waiting to be reconciled.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The contract it was validated against.
    pub contract: Arc<Contract>,
    /// The topic it came from (windows are per topic).
    pub topic: String,
    /// Record id = the source table's key.
    pub key: String,
    /// The event's amount, exact.
    pub amount: Decimal,
    /// The event's currency, when the contract reconciles currency.
    pub currency: Option<String>,
    /// When it was first seen; the grace period runs from here.
    pub first_seen: OffsetDateTime,
    /// When it is looked up next: at once, then, while its row is absent, after 1, 2, 4 … s
    /// (at most 32 s, and at the latest when the grace period ends), so rows that lag do not
    /// cost a lookup every round.
    pub next_check: OffsetDateTime,
    /// Lookups that found no row.
    pub absent: u32,
    /// The record's source partition and offset (`-1` when unknown): the claim's identity, so
    /// a record read again is not claimed twice, and a pending claim can be kept durably.
    pub partition: i32,
    /// See `partition`.
    pub offset: i64,
}

/// A pending claim as kept durably (group-wide quality: the compacted claims topic, keyed by
/// [`Claim::position`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredClaim {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Record id = the source table's key.
    pub key: String,
    /// The event's amount, exact (a decimal string).
    pub amount: Decimal,
    /// The event's currency.
    pub currency: Option<String>,
    /// When it was first seen, ms since the epoch: the grace period goes on from there.
    pub first_seen_ms: i64,
}

impl Claim {
    /// `topic/partition/offset`: the claim's identity.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// The claim as kept durably.
    pub fn to_stored(&self) -> StoredClaim {
        StoredClaim {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            key: self.key.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            first_seen_ms: crate::measure::unix_ms(self.first_seen),
        }
    }

    /// A claim kept durably, held to `contract` again; looked up at once.
    pub fn from_stored(s: StoredClaim, contract: Arc<Contract>, now: OffsetDateTime) -> Self {
        let first_seen = OffsetDateTime::from_unix_timestamp_nanos(i128::from(s.first_seen_ms) * 1_000_000).unwrap_or(now);
        Self {
            contract,
            topic: s.topic,
            key: s.key,
            amount: s.amount,
            currency: s.currency,
            first_seen,
            next_check: now,
            absent: 0,
            partition: s.partition,
            offset: s.offset,
        }
    }

    /// Schedules the next lookup after one that found no row at `now`.
    fn postpone(&mut self, now: OffsetDateTime, grace: Duration) {
        self.absent = self.absent.saturating_add(1);
        let wait = time::Duration::seconds(1_i64 << self.absent.saturating_sub(1).min(5));
        let grace_ends = self.first_seen + grace;
        self.next_check = (now + wait).min(grace_ends);
    }
}

/// The verdict on one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Amount (and currency) agree with the source.
    Matched,
    /// The source disagrees.
    Mismatched {
        /// What the source holds.
        source: SourceValue,
    },
    /// Still absent after the grace period.
    Missing,
}

/// A decided claim.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The claim.
    pub claim: Claim,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Builds a claim from a valid record, if its contract reconciles and the record has the
/// fields. Amounts come from the number's shortest text (exact for any amount of up to 15
/// significant digits) or from a decimal string.
pub fn claim<'a>(
    contract: &Arc<Contract>,
    topic: &str,
    record: impl RecordView<'a>,
    key: Option<&str>,
    now: OffsetDateTime,
) -> Option<Claim> {
    let spec = contract.reconciliation.as_ref()?;
    let key = key?;
    let amount = record.member(&spec.amount_field)?;
    let amount = match (amount.as_number(), amount.as_str()) {
        (Some(n), _) => Decimal::from_str(&n.to_string()).or_else(|_| Decimal::from_scientific(&n.to_string())).ok()?,
        (_, Some(s)) => Decimal::from_str(s).ok()?,
        _ => return None,
    };
    let currency = spec.currency_field.as_ref().and_then(|f| record.member(f)).and_then(|v| v.as_str()).map(str::to_owned);
    Some(Claim {
        contract: contract.clone(),
        topic: topic.to_owned(),
        key: key.to_owned(),
        amount,
        currency,
        first_seen: now,
        next_check: now,
        absent: 0,
        partition: -1,
        offset: -1,
    })
}

/// Compares a claim with its source row.
pub fn compare(claim: &Claim, spec: &ReconciliationSpec, source: &SourceValue) -> Outcome {
    let tolerance = spec.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let amount_ok = (source.amount - claim.amount).abs() < tolerance;
    let currency_ok = match (&spec.currency_column, &claim.currency, &source.currency) {
        (Some(_), Some(a), Some(b)) => a.eq_ignore_ascii_case(b.trim()),
        (Some(_), _, _) => false,
        (None, _, _) => true,
    };
    if amount_ok && currency_ok { Outcome::Matched } else { Outcome::Mismatched { source: source.clone() } }
}

/// Holds pending claims and decides them in batches.
#[derive(Debug)]
pub struct Reconciler {
    /// Claims not decided yet, oldest first.
    pending: Vec<Claim>,
    /// How long a record may be absent from the source before it counts as missing.
    grace: Duration,
    /// Largest number of keys in one `IN (…)` list.
    chunk: usize,
    /// Consecutive failed lookups (for logs and backoff).
    pub failures: u64,
    /// Positions of the pending claims that have one: a record read again (a replay, or a
    /// claim restored from the durable store beside its replay) is claimed once.
    positions: std::collections::HashSet<(String, i32, i64)>,
}

impl Reconciler {
    /// A reconciler with the given grace period and query chunk size.
    pub fn new(grace: Duration, chunk: usize) -> Self {
        Self { pending: Vec::new(), grace, chunk: chunk.max(1), failures: 0, positions: Default::default() }
    }

    /// Adds claims; a claim whose position is already pending is ignored. Returns how many
    /// were added.
    pub fn submit(&mut self, claims: impl IntoIterator<Item = Claim>) -> usize {
        let before = self.pending.len();
        for c in claims {
            if c.offset < 0 || self.positions.insert((c.topic.clone(), c.partition, c.offset)) {
                self.pending.push(c);
            }
        }
        self.pending.len() - before
    }

    /// Drops the pending claims of `partitions` (their new owner restores them); returns how
    /// many were dropped.
    pub fn forget(&mut self, partitions: &[(String, i32)]) -> usize {
        let before = self.pending.len();
        let positions = &mut self.positions;
        self.pending.retain(|c| {
            let gone = c.offset >= 0 && partitions.iter().any(|(t, p)| *t == c.topic && *p == c.partition);
            if gone {
                let _ = positions.remove(&(c.topic.clone(), c.partition, c.offset));
            }
            !gone
        });
        before - self.pending.len()
    }

    /// Claims not decided yet (the backlog).
    pub fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// Checks every due pending claim against `db` at `now`: one query per table and chunk, up to
    /// `concurrency` chunks in flight at once (the pool's connections).
    /// Returns the decided claims; the rest stay pending. On a database error every claim of
    /// that chunk stays pending and the error is returned alongside what was decided.
    pub async fn run<D: SourceDb>(&mut self, db: &D, now: OffsetDateTime, concurrency: usize) -> (Vec<Decided>, Option<Error>) {
        let mut decided = Vec::new();
        let error = self.run_each(db, now, concurrency, |d| decided.extend(d)).await;
        (decided, error)
    }

    /// [`Reconciler::run`], handing each answered chunk's verdicts to `each` as it arrives, so
    /// the caller can release them (and the stream waiting for room) while later chunks are
    /// still in flight. Returns the last database error, if any.
    pub async fn run_each<D: SourceDb>(
        &mut self,
        db: &D,
        now: OffsetDateTime,
        concurrency: usize,
        mut each: impl FnMut(Vec<Decided>),
    ) -> Option<Error> {
        use futures_util::StreamExt;
        if self.pending.is_empty() {
            return None;
        }
        let mut by_table: HashMap<String, Vec<Claim>> = HashMap::new();
        let (due, later): (Vec<Claim>, Vec<Claim>) = self.pending.drain(..).partition(|c| c.next_check <= now);
        self.pending = later;
        for c in due {
            let table = c.contract.reconciliation.as_ref().map(|s| s.table.clone()).unwrap_or_default();
            by_table.entry(table).or_default().push(c);
        }
        // Claims move into their chunk and out into a verdict: none is copied.
        let mut chunks: Vec<(Arc<ReconciliationSpec>, Vec<Claim>)> = Vec::new();
        for (_, claims) in by_table {
            let Some(spec) = claims.first().and_then(|c| c.contract.reconciliation.clone()) else { continue };
            let spec = Arc::new(spec);
            let mut claims = claims.into_iter().peekable();
            while claims.peek().is_some() {
                chunks.push((spec.clone(), claims.by_ref().take(self.chunk).collect()));
            }
        }
        let mut error = None;
        // Each answer is decided as it arrives, so at most `concurrency` of them are held.
        let mut answers = futures_util::stream::iter(chunks)
            .map(|(spec, chunk)| async move {
                let mut keys: Vec<String> = chunk.iter().map(|c| c.key.clone()).collect();
                keys.sort_unstable();
                keys.dedup();
                let found = db.fetch(&spec, &keys).await;
                (spec, chunk, found)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((spec, chunk, found)) = answers.next().await {
            match found {
                Ok(found) => {
                    self.failures = 0;
                    let mut decided = Vec::with_capacity(chunk.len());
                    for c in chunk {
                        match found.get(&c.key) {
                            Some(source) => decided.push(Decided { outcome: compare(&c, &spec, source), claim: c }),
                            None if now - c.first_seen >= self.grace => decided.push(Decided { claim: c, outcome: Outcome::Missing }),
                            None => {
                                let mut c = c;
                                c.postpone(now, self.grace);
                                self.pending.push(c);
                            }
                        }
                    }
                    for d in &decided {
                        if d.claim.offset >= 0 {
                            let _ = self.positions.remove(&(d.claim.topic.clone(), d.claim.partition, d.claim.offset));
                        }
                    }
                    if !decided.is_empty() {
                        each(decided);
                    }
                }
                Err(e) => {
                    self.failures += 1;
                    error = Some(e);
                    self.pending.extend(chunk);
                }
            }
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::{Catalog, Files};
    use std::sync::Mutex;
    use time::macros::datetime;

    /// An in-memory source for unit tests (the MySQL one is tested against MariaDB).
    struct Memory {
        rows: Mutex<HashMap<String, SourceValue>>,
        queries: Mutex<Vec<usize>>,
        down: Mutex<bool>,
    }

    impl Memory {
        fn empty() -> Self {
            Self { rows: Mutex::new(HashMap::new()), queries: Mutex::new(Vec::new()), down: Mutex::new(false) }
        }
    }

    fn poisoned<T>(e: std::sync::PoisonError<T>) -> Error {
        Error::transient(crate::error::System::MySql, e)
    }

    impl SourceDb for Memory {
        async fn fetch(&self, _: &ReconciliationSpec, keys: &[String]) -> Result<HashMap<String, SourceValue>, Error> {
            if *self.down.lock().map_err(poisoned)? {
                return Err(Error::transient(crate::error::System::MySql, "down"));
            }
            self.queries.lock().map_err(poisoned)?.push(keys.len());
            let rows = self.rows.lock().map_err(poisoned)?;
            Ok(keys.iter().filter_map(|k| rows.get(k).map(|v| (k.clone(), v.clone()))).collect())
        }
    }

    fn contract() -> Arc<Contract> {
        let files = Files::Embedded;
        let catalog = Catalog::load(&files).unwrap_or_else(|e| panic!("{e}"));
        catalog.product("payments-data-product").and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("contract"))
    }

    fn claim_for(c: &Arc<Contract>, key: &str, amount: &str, at: OffsetDateTime) -> Claim {
        let record = serde_json::json!({"payment_id": key, "amount": amount.parse::<f64>().unwrap_or_default(), "currency": "EUR"});
        claim(c, "payments.created", &record, Some(key), at).unwrap_or_else(|| panic!("claim"))
    }

    #[tokio::test]
    async fn one_query_per_chunk_and_decimal_comparison() {
        let c = contract();
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        let db = Memory::empty();
        {
            let mut rows = db.rows.lock().unwrap_or_else(|e| panic!("{e}"));
            for i in 0..250 {
                let _ = rows.insert(format!("k{i}"), SourceValue { amount: Decimal::new(1999, 2), currency: Some("EUR".into()) });
            }
            // 19.99 vs 20.00: a cent apart is a mismatch (the seed's `< 0.01`).
            let _ = rows.insert("k7".into(), SourceValue { amount: Decimal::new(2000, 2), currency: Some("EUR".into()) });
            let _ = rows.insert("k8".into(), SourceValue { amount: Decimal::new(1999, 2), currency: Some("USD".into()) });
        }
        let mut r = Reconciler::new(Duration::from_secs(30), 100);
        r.submit((0..250).map(|i| claim_for(&c, &format!("k{i}"), "19.99", t0)));
        let (decided, err) = r.run(&db, t0, 1).await;
        assert!(err.is_none());
        assert_eq!(decided.len(), 250);
        assert_eq!(*db.queries.lock().unwrap_or_else(|e| panic!("{e}")), vec![100, 100, 50]);
        let mismatched: Vec<&str> = decided.iter().filter(|d| d.outcome != Outcome::Matched).map(|d| d.claim.key.as_str()).collect();
        assert_eq!(mismatched.len(), 2);
        assert!(mismatched.contains(&"k7") && mismatched.contains(&"k8"));
    }

    #[tokio::test]
    async fn an_absent_row_is_looked_up_again_with_backoff_until_the_grace_period_ends() {
        let c = contract();
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        let db = Memory::empty();
        let mut r = Reconciler::new(Duration::from_secs(10), 100);
        r.submit([claim_for(&c, "lagging", "10.00", t0)]);
        let queries = |db: &Memory| db.queries.lock().unwrap_or_else(|e| panic!("{e}")).len();
        // Looked up at 0 s, then 1, 2 and 4 s after each miss: at 0, 1, 3, 7 s, and at 10 s
        // (the grace period's end) instead of 15.
        let mut looked_up_at = Vec::new();
        for tenth in 0..=120 {
            let now = t0 + time::Duration::milliseconds(tenth * 100);
            let before = queries(&db);
            let (decided, err) = r.run(&db, now, 1).await;
            assert!(err.is_none());
            if queries(&db) > before {
                looked_up_at.push(tenth);
            }
            if !decided.is_empty() {
                assert_eq!(decided[0].outcome, Outcome::Missing);
                assert_eq!(tenth, 100, "missing exactly when the grace period ends");
                break;
            }
        }
        assert_eq!(looked_up_at, vec![0, 10, 30, 70, 100]);
        assert_eq!(r.backlog(), 0);
    }

    #[tokio::test]
    async fn absent_rows_wait_for_the_grace_period_and_outages_decide_nothing() {
        let c = contract();
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        let db = Memory::empty();
        let mut r = Reconciler::new(Duration::from_secs(30), 100);
        r.submit([claim_for(&c, "late", "10.00", t0), claim_for(&c, "never", "10.00", t0)]);
        let (decided, _) = r.run(&db, t0 + time::Duration::seconds(5), 2).await;
        assert!(decided.is_empty());
        assert_eq!(r.backlog(), 2);
        let _ = db
            .rows
            .lock()
            .unwrap_or_else(|e| panic!("{e}"))
            .insert("late".into(), SourceValue { amount: Decimal::new(1000, 2), currency: Some("EUR".into()) });
        *db.down.lock().unwrap_or_else(|e| panic!("{e}")) = true;
        let (decided, err) = r.run(&db, t0 + time::Duration::seconds(60), 2).await;
        assert!(decided.is_empty() && err.is_some(), "an outage decides nothing");
        assert_eq!(r.backlog(), 2);
        *db.down.lock().unwrap_or_else(|e| panic!("{e}")) = false;
        let (decided, _) = r.run(&db, t0 + time::Duration::seconds(61), 2).await;
        let by_key: HashMap<&str, &Outcome> = decided.iter().map(|d| (d.claim.key.as_str(), &d.outcome)).collect();
        assert_eq!(by_key.get("late"), Some(&&Outcome::Matched));
        assert_eq!(by_key.get("never"), Some(&&Outcome::Missing));
        assert_eq!(r.backlog(), 0);
    }
}
