//! The evaluation stage: decode → validate → measure every record of a batch (pure CPU, no
//! I/O), spread over `delivery.evaluation_threads` threads, handing the verdicts to the stream
//! thread in the batch's order. Also takes the reconciliation claim of a valid record while it
//! is in cache.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Message};
use time::OffsetDateTime;

use crate::contract::tape::Tape;
use crate::contract::{AnyRecord, Contract};
use crate::reconcile::Claim;
use crate::telemetry::BindingMetrics;
use crate::verdict::{Evaluation, evaluate, evaluate_lean};

/// A topic's contract with its metric handles.
pub(super) struct Bound {
    pub(super) topic: String,
    pub(super) contract: Arc<Contract>,
    pub(super) metrics: BindingMetrics,
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
                each(m, v)?;
            }
        }
        Ok(())
    })
}

/// Evaluates the records of one slice. The claim is taken and the decoded record dropped (unless
/// `plan.records`) right after each record is evaluated, on the thread that decoded it: while it
/// is in cache, and without freeing memory across threads.
fn evaluate_slice<'a>(records: &[BorrowedMessage<'_>], bound: &'a Bindings, now: OffsetDateTime, plan: Plan) -> Vec<Option<Verdict<'a>>> {
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
                if plan.claims { crate::reconcile::claim(&b.contract, topic, record, id, now) } else { None }
            };
            if !plan.records {
                // Nothing keeps the decoded record: validate it where it lies.
                let (eval, claim) = evaluate_lean(&b.contract, payload, now, &mut tape, take);
                return Some(Verdict { bound: b, eval, claim });
            }
            let mut eval = evaluate(&b.contract, payload, now);
            let valid = eval.is_valid();
            let claim = match (&eval.record, valid) {
                (Some(record), true) => take(AnyRecord::Value(record), eval.record_id.as_deref()),
                _ => None,
            };
            if !valid {
                eval.record = None;
            }
            Some(Verdict { bound: b, eval, claim })
        })
        .collect()
}
