//! The evaluation stage: decode → validate → measure every record of a batch (pure CPU, no
//! I/O), spread over `delivery.evaluation_threads` threads, handing the verdicts to the stream
//! thread in the batch's order. Also takes the reconciliation claim (and the `unique:` key) of a
//! valid record while it is in cache.
//!
//! A contract with `versions:` holds each record to the version its `meshguard.contract.version`
//! header names (the newest enforced one by default) and checks its shadow versions, through
//! `verdict::evaluate_lean_versioned` as `check` does; a contract without versions keeps the
//! plain `evaluate_lean` path. Uniqueness needs the batch's order: keys are taken where the
//! record is evaluated and observed on the stream thread, in order, before the verdict is handed
//! on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, counter};
use rdkafka::message::{BorrowedMessage, Message};
use time::OffsetDateTime;

use crate::contract::tape::Tape;
use crate::contract::unique::{self, Seen, UniqueTracker};
use crate::contract::{AnyRecord, Contract, Violation};
use crate::reconcile::Claim;
use crate::telemetry::BindingMetrics;
use crate::telemetry::names::DUPLICATES_TOTAL;
use crate::verdict::{Evaluation, Rejection, Stage, VERSION_HEADER, evaluate, evaluate_lean, evaluate_lean_versioned, evaluate_versioned};

/// A topic's contract with its metric handles.
pub(super) struct Bound {
    pub(super) topic: String,
    pub(super) contract: Arc<Contract>,
    pub(super) metrics: BindingMetrics,
    /// Duplicate detection, when the contract declares `unique:`.
    pub(super) unique: Option<Unique>,
}

impl Bound {
    /// The binding of `topic` to `contract`, its metric handles registered.
    pub(super) fn new(topic: &str, contract: Arc<Contract>) -> Self {
        let metrics = BindingMetrics::new(&contract.product, &contract.name, topic);
        let unique = Unique::new(&contract, topic);
        Self { topic: topic.to_owned(), contract, metrics, unique }
    }
}

/// A contract's `unique:` constraint on one topic: the keys seen per partition (a key's events
/// share a partition), bounded by the tracker, dropped when the partition is revoked.
pub(super) struct Unique {
    fields: Vec<String>,
    dead_letter: bool,
    /// Touched only by the stream thread (in the batch's order, and between batches on a
    /// revoke); the lock makes the binding shareable with the evaluation threads.
    state: Mutex<UniqueState>,
    duplicates: Counter,
}

struct UniqueState {
    tracker: UniqueTracker,
    /// The highest offset counted as a duplicate per partition: a record read again (a batch
    /// rewound and retried) gets the same verdict and is not counted twice.
    counted_through: HashMap<i32, i64>,
}

impl Unique {
    /// The constraint of `contract` on `topic`, when it declares one.
    fn new(contract: &Contract, topic: &str) -> Option<Self> {
        let spec = contract.unique.as_ref()?;
        Some(Self {
            fields: spec.fields.clone(),
            dead_letter: spec.dead_letter,
            state: Mutex::new(UniqueState { tracker: UniqueTracker::new(spec), counted_through: HashMap::new() }),
            duplicates: counter!(
                DUPLICATES_TOTAL,
                "product" => contract.product.clone(),
                "contract" => contract.name.clone(),
                "topic" => topic.to_owned()
            ),
        })
    }

    fn key_of(&self, record: AnyRecord<'_>) -> Option<String> {
        unique::key_of(&self.fields, record)
    }

    /// Observes the key of `m` (a record its contract accepts): a duplicate within the horizon
    /// is counted and, when the contract says so, rejected with class `duplicate`, as in `check`.
    fn observe(&self, m: &BorrowedMessage<'_>, key: String, eval: &mut Evaluation, now: OffsetDateTime) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.tracker.observe_at(m.partition(), Some(m.offset()), key, now) == Seen::New {
            return;
        }
        // The windows count it from the verdict: they take only batches that were committed.
        eval.duplicate = true;
        let through = state.counted_through.entry(m.partition()).or_insert(-1);
        if m.offset() > *through {
            *through = m.offset();
            self.duplicates.increment(1);
        }
        if self.dead_letter {
            eval.rejection = Some(Rejection {
                stage: Stage::Validate,
                class: "duplicate",
                violations: vec![Violation::new("", "unique", format!("the key ({}) repeats an earlier record's", self.fields.join(", ")))],
            });
            // A rejected record is not stored.
            eval.record = None;
        }
    }

    /// Drops a revoked partition's keys: its next owner starts from its own.
    pub(super) fn revoke(&self, partition: i32) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.tracker.revoke(partition);
        let _ = state.counted_through.remove(&partition);
    }
}

/// Every bound topic, by name.
pub(super) type Bindings = HashMap<String, Bound>;

/// Records evaluated together before their side effects are sent. Small, so dead letters leave
/// while later records are evaluated: with the whole batch evaluated first, every batch waited
/// for all its acknowledgements at the end (0.9 s instead of 0.44 s per million events at 1024;
/// docs/benchmarks.md).
pub(super) const EVALUATION_SLICE: usize = 128;

/// How batches are evaluated, fixed at start: on how many threads, and what the stream needs of
/// a record beyond its verdict.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// Threads that evaluate a batch (`delivery.evaluation_threads`, resolved).
    pub(super) threads: usize,
    /// Keep the decoded record of a valid event (for the record store).
    pub(super) records: bool,
    /// Take a reconciliation claim for a valid event (a source database decides them).
    pub(super) claims: bool,
}

/// One record's evaluation with its binding and claim.
pub(super) struct Verdict<'a> {
    pub(super) bound: &'a Bound,
    /// The contract version the record was held to (the bound contract itself when it has no
    /// versions): the one its dead letter and lineage name.
    pub(super) applied: &'a Contract,
    pub(super) eval: Evaluation,
    pub(super) claim: Option<Claim>,
}

/// Calls `each` with every record of `batch` and its verdict (`None` for a topic without a
/// contract), in the batch's order. Decoding, validation and measurement (pure CPU, no I/O) are
/// spread over `plan.threads` threads by slices: slice k is evaluated by thread k mod `threads`,
/// thread 0 being the stream thread itself, which also runs `each` on every slice in turn; the
/// others evaluate their slices ahead and hand them over in order.
pub(super) fn for_each_verdict<'a, 'm, 'c, E>(
    batch: &'m [BorrowedMessage<'c>],
    bound: &'a Bindings,
    now: OffsetDateTime,
    plan: Plan,
    mut each: impl FnMut(&'m BorrowedMessage<'c>, Option<Verdict<'a>>) -> Result<(), E>,
) -> Result<(), E> {
    let slices: Vec<&'m [BorrowedMessage<'c>]> = batch.chunks(EVALUATION_SLICE).collect();
    // One thread (or one slice) spawns nothing: the stream thread evaluates every slice.
    let threads = plan.threads.min(slices.len()).max(1);
    std::thread::scope(|scope| {
        let mut ahead = Vec::with_capacity(threads - 1);
        for t in 1..threads {
            let (tx, rx) = std::sync::mpsc::channel();
            let mine: Vec<&[BorrowedMessage<'c>]> = slices.iter().skip(t).step_by(threads).copied().collect();
            let _ = scope.spawn(move || {
                for slice in mine {
                    // The stream stopped reading (a sink failed): stop evaluating.
                    if tx.send(evaluate_slice(slice, bound, now, plan)).is_err() {
                        return;
                    }
                }
            });
            ahead.push(rx);
        }
        for (k, slice) in slices.iter().enumerate() {
            let verdicts = match k % threads {
                0 => evaluate_slice(slice, bound, now, plan),
                // A helper that died (it panicked; the scope re-raises that) leaves its slices to
                // this thread.
                t => ahead[t - 1].recv().unwrap_or_else(|_| evaluate_slice(slice, bound, now, plan)),
            };
            for (m, v) in slice.iter().zip(verdicts) {
                let v = v.map(|(mut verdict, key)| {
                    if let (Some(u), Some(key)) = (&verdict.bound.unique, key) {
                        u.observe(m, key, &mut verdict.eval, now);
                    }
                    verdict
                });
                each(m, v)?;
            }
        }
        Ok(())
    })
}

/// A record's verdict and its `unique:` key (a valid record of a contract that declares one).
type Keyed<'a> = Option<(Verdict<'a>, Option<String>)>;

/// Evaluates the records of one slice. The claim and the unique key are taken and the decoded
/// record dropped (unless `plan.records`) right after each record is evaluated, on the thread
/// that decoded it: while it is in cache, and without freeing memory across threads.
fn evaluate_slice<'a>(records: &[BorrowedMessage<'_>], bound: &'a Bindings, now: OffsetDateTime, plan: Plan) -> Vec<Keyed<'a>> {
    // Batches mostly hold runs of one topic: look the binding up only when the topic changes.
    let mut last: Option<(&str, Option<&'a Bound>)> = None;
    // Reused by every record of the slice (they borrow from the same batch).
    let mut tape = Tape::new();
    records
        .iter()
        .map(|m| {
            let topic = m.topic();
            let b = match last {
                Some((t, b)) if t == topic => b,
                _ => {
                    let b = bound.get(topic);
                    last = Some((topic, b));
                    b
                }
            }?;
            let payload = m.payload().unwrap_or_default();
            // Claims only when a database will decide them: without one they would pile up.
            let take = |record: AnyRecord<'_>, id: Option<&str>| {
                let claim = if plan.claims { crate::reconcile::claim(&b.contract, topic, record, id, now) } else { None };
                let key = b.unique.as_ref().and_then(|u| u.key_of(record));
                (claim.is_some() || key.is_some()).then_some((claim, key))
            };
            let versioned = !b.contract.versions.is_empty();
            if !plan.records {
                // Nothing keeps the decoded record: validate it where it lies.
                let (applied, eval, taken) = if versioned {
                    let header = crate::source::header(m, VERSION_HEADER);
                    let (v, taken) = evaluate_lean_versioned(&b.contract, payload, header, now, &mut tape, take);
                    (v.applied, v.evaluation, taken)
                } else {
                    let (eval, taken) = evaluate_lean(&b.contract, payload, now, &mut tape, take);
                    (&*b.contract, eval, taken)
                };
                let (claim, key) = taken.unwrap_or_default();
                return Some((Verdict { bound: b, applied, eval, claim }, key));
            }
            let (applied, mut eval) = if versioned {
                let v = evaluate_versioned(&b.contract, payload, crate::source::header(m, VERSION_HEADER), now);
                (v.applied, v.evaluation)
            } else {
                (&*b.contract, evaluate(&b.contract, payload, now))
            };
            let valid = eval.is_valid();
            let (claim, key) = match (&eval.record, valid) {
                (Some(record), true) => take(AnyRecord::Value(record), eval.record_id.as_deref()).unwrap_or_default(),
                _ => (None, None),
            };
            if !valid {
                eval.record = None;
            }
            Some((Verdict { bound: b, applied, eval, claim }, key))
        })
        .collect()
}
