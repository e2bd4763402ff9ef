//! One batch's way through the stages after it is gathered: evaluate every record and hand
//! each verdict to the sinks (`process`), wait for the sinks' acknowledgement and store or
//! commit the offsets (`complete`), then hand the acknowledged verdicts on to the deferred
//! stages: windows and metrics, and reconciliation claims (`finished`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use rdkafka::TopicPartitionList;
use rdkafka::message::{BorrowedMessage, Message};
use time::OffsetDateTime;
use tracing::warn;

use super::claims::ClaimStore;
use super::evaluate::{Bindings, Plan, Verdict, for_each_verdict};
use super::outputs::Outputs;
use crate::error::{Error, Retry};
use crate::measure::Clock;
use crate::quality::partial::{Binding, Builder};
use crate::reconcile::Claim;
use crate::reconcile::worker::Worker;
use crate::sink::Sinks;
use crate::sink::mongo::Documents;
use crate::source::{Firsts, KafkaSource, NextOffsets};
use crate::telemetry::names::{BATCH_RECORDS, SINK_ERRORS_TOTAL, SINK_WRITE_SECONDS};
use crate::verdict::{Evaluation, Stage, Tally};

/// What one acknowledged batch contributes to windows, metrics and reconciliation. Topics are
/// borrowed from the bindings, not from the batch, so the batch's records can be released
/// while its acknowledgements are awaited.
pub(super) struct Done<'b> {
    evaluated: Vec<(&'b str, OffsetDateTime, Evaluation)>,
    claims: Vec<Claim>,
    lineage: HashMap<&'b str, u64>,
    /// Rule failures and shadow rejections, counted in metrics only once the batch is
    /// acknowledged: a batch evaluated again after a sink failure must not count twice.
    tally: Tally<'b>,
}

/// A batch whose outputs are sent, waiting for their acknowledgement (or the transaction's
/// commit) before its offsets are stored.
pub(super) struct Sent<'b> {
    done: Done<'b>,
    records: usize,
    /// The next offset of every partition in the batch.
    offsets: TopicPartitionList,
    /// The first offset of every partition in the batch, to read it again if it fails.
    pub(super) first: Firsts,
}

/// The stages a batch goes through, with what they keep between batches.
pub(super) struct Flow<'b> {
    /// Every bound topic's contract and metric handles.
    pub(super) bound: &'b Bindings,
    /// The consumer.
    pub(super) source: &'b KafkaSource,
    /// Dead letters, side topics and the document store.
    pub(super) sinks: Sinks,
    /// Decides reconciliation claims against the source database, when one is configured.
    pub(super) reconciler: Option<Worker>,
    /// How batches are evaluated.
    pub(super) plan: Plan,
    /// Processing time for freshness, windows and lineage.
    pub(super) clock: Arc<dyn Clock>,
    /// Windows, alerts and run events: the deferred stages.
    pub(super) out: Outputs,
    /// Whether batches are transactions.
    pub(super) exactly_once: bool,
    /// Pending claims kept durably (group-wide quality with reconciliation).
    pub(super) claims: Option<ClaimStore>,
}

impl<'b> Flow<'b> {
    /// Evaluates every record of `batch` and hands each verdict to the sinks: dead letters as
    /// they are reached, then the reports waiting for this batch, then the documents. Returns
    /// the batch in flight; at-least-once, registered with the consumer so that a revoke
    /// finishes it before handing its partitions over.
    pub(super) fn process(&mut self, batch: &[BorrowedMessage<'_>], first: Firsts) -> Result<Sent<'b>, Error> {
        self.sinks.begin()?;
        let mut next = NextOffsets::default();
        let mut done =
            Done { evaluated: Vec::with_capacity(batch.len()), claims: Vec::new(), lineage: HashMap::new(), tally: Tally::default() };
        let mut documents = Documents::default();
        let store = self.sinks.has_store();
        // One instant per batch (a batch spans a few milliseconds): freshness, lineage and windows
        // are measured at processing time without reading the clock per record.
        let now = self.clock.now();
        let sinks = &self.sinks;
        // Group-wide quality: the batch's partial windows travel with it (in its transaction).
        let mut partials = self.out.group.then(|| Builder::new(self.out.window_ms, &self.out.instance));
        let now_ms = crate::measure::unix_ms(now);
        let durable_claims = self.claims.is_some();
        for_each_verdict(batch, self.bound, now, self.plan, |m, verdict| {
            next.advance(m);
            let Some(Verdict { bound: b, applied, mut eval, claim }) = verdict else { return Ok(()) };
            if let Some(mut c) = claim {
                c.partition = m.partition();
                c.offset = m.offset();
                if durable_claims {
                    sinks.send_claim(&c.position(), &serde_json::to_vec(&c.to_stored()).unwrap_or_default())?;
                }
                done.claims.push(c);
            }
            if let Some(r) = &eval.rejection {
                sinks.dead_letter(m, applied, r)?;
            }
            done.tally.add(&b.contract, applied, &eval);
            if let Some(builder) = partials.as_mut() {
                let c = &b.contract;
                let binding = Binding {
                    product: &c.product,
                    contract: &c.name,
                    version: &c.version,
                    topic: &b.topic,
                    sla: c.quality.freshness.0.as_secs_f64(),
                };
                let ts = m.timestamp().to_millis().unwrap_or(now_ms);
                builder.record(binding, m.partition(), m.offset(), ts, &eval, store);
            }
            if store {
                documents.add(m, applied, &mut eval, sinks.dlq_topic(), now);
                *done.lineage.entry(b.topic.as_str()).or_default() += 1;
            }
            done.evaluated.push((b.topic.as_str(), now, eval));
            Ok::<(), Error>(())
        })?;
        if let Some(mut builder) = partials {
            self.out.partials(builder.take());
        }
        let reports = self.out.reports();
        self.sinks.send_reports(&reports)?;
        self.sinks.write_documents(documents, &reports)?;
        let offsets = next.into_list();
        if !self.exactly_once && offsets.count() > 0 {
            let waiter = self.sinks.waiter();
            self.source.register_in_flight(&offsets, Box::new(move || waiter.wait().is_ok()));
        }
        Ok(Sent { done, records: batch.len(), offsets, first })
    }

    /// Waits for a sent batch's acknowledgements (at-least-once; or commits its transaction with
    /// its offsets) and stores its offsets. On failure, the batch's first offsets to read it again.
    pub(super) fn complete(&mut self, sent: Sent<'b>) -> Result<Done<'b>, (Error, Firsts)> {
        let Sent { done, records, offsets, first } = sent;
        // The Kafka sink's time is the wait for its acknowledgement (or the transaction's commit)
        // once the batch is evaluated and sent, not the evaluation before it.
        let started = Instant::now();
        let result = if self.exactly_once {
            self.source.group_metadata().and_then(|group| self.sinks.finish((offsets.count() > 0).then_some((&offsets, &group))))
        } else {
            self.source.acknowledge(&offsets, || self.sinks.finish(None))
        };
        if let Err(e) = result {
            return Err((e, first));
        }
        self.out.clear_pending();
        histogram!(SINK_WRITE_SECONDS, "sink" => "kafka").record(started.elapsed().as_secs_f64());
        histogram!(BATCH_RECORDS).record(records as f64);
        Ok(done)
    }

    /// Hands an acknowledged batch to the deferred stages: metrics and windows now, its claims
    /// to reconciliation (decided after their grace period, counted in the window open then).
    pub(super) fn finished(&mut self, mut done: Done<'b>, stop: &AtomicBool) {
        apply(&done, self.bound, &mut self.out);
        done.tally.emit();
        if let Some(r) = &self.reconciler {
            r.submit(done.claims, stop);
        }
    }

    /// Brings reconciliation verdicts decided since the last batch into the open windows, and
    /// closes the windows that ended.
    pub(super) fn advance_windows(&mut self) {
        if let Some(r) = &self.reconciler {
            let now = self.clock.now();
            for d in r.decided() {
                self.out.decided(&d, now);
            }
        }
        self.out.close_due_windows(self.clock.now());
    }

    /// The assignment changed: windows learn the topics owned; durable claims of lost
    /// partitions are dropped and those of gained ones restored.
    pub(super) fn rebalanced(&mut self, stop: &AtomicBool) -> Result<(), Error> {
        let now = self.clock.now();
        self.out.owned(self.source.owned_topics(), now);
        if let (Some(store), Some(worker)) = (self.claims.as_mut(), self.reconciler.as_ref()) {
            store.rebalanced(self.source.owned_partitions(), self.bound, worker, now, stop)?;
        }
        Ok(())
    }

    /// After a failed batch: the sinks abort or replace what the error condemns, the batch is
    /// read again (exactly-once: from the committed offsets), and the loop backs off. An error
    /// that retrying cannot fix is returned, to stop the stream.
    pub(super) fn recover(&mut self, e: Error, first: &Firsts, backoff: &mut Backoff) -> Result<(), Error> {
        counter!(SINK_ERRORS_TOTAL, "sink" => e.system.as_str()).increment(1);
        self.sinks.failed(&e);
        self.source.rewind(first);
        if e.retry == Retry::Stop {
            return Err(e);
        }
        warn!(error = %e.message, sink = e.system.as_str(), retry_in_ms = backoff.current().as_millis() as u64, "batch not acknowledged; rewinding to retry it");
        backoff.wait();
        Ok(())
    }
}

/// The pause before a failed batch is read again: doubles from 100 ms up to 5 s, and starts
/// over after a batch succeeds.
#[derive(Debug)]
pub(super) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(super) fn new() -> Self {
        Self(Self::FIRST)
    }

    pub(super) fn current(&self) -> Duration {
        self.0
    }

    /// Sleeps, then doubles the next pause.
    pub(super) fn wait(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Self::MAX);
    }

    pub(super) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// Applies an acknowledged batch to metrics and windows.
fn apply(done: &Done<'_>, bound: &Bindings, out: &mut Outputs) {
    #[derive(Default)]
    struct Tally {
        valid: u64,
        decode: u64,
        validate: u64,
        present: u64,
        expected: u64,
    }
    let mut tallies: HashMap<&str, Tally> = HashMap::new();
    // Batches hold runs of one topic: one lookup per run, not per record.
    for run in done.evaluated.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        let (topic, now) = (run[0].0, run[0].1);
        let Some(b) = bound.get(topic) else { continue };
        let t = tallies.entry(topic).or_default();
        for (_, _, eval) in run {
            t.present += u64::from(eval.completeness.present);
            t.expected += u64::from(eval.completeness.applicable);
            if let Some(age) = eval.freshness {
                b.metrics.freshness.record(age.as_secs_f64());
            }
            match &eval.rejection {
                None => t.valid += 1,
                Some(r) => {
                    match r.stage {
                        Stage::Decode => t.decode += 1,
                        Stage::Validate => t.validate += 1,
                    }
                    let mut keywords: Vec<&str> = r.violations.iter().map(|v| v.keyword.as_str()).collect();
                    keywords.sort_unstable();
                    keywords.dedup();
                    for k in keywords {
                        b.metrics.violation(k, 1);
                    }
                }
            }
        }
        if !out.group {
            out.windows.observe_run(topic, run.iter().map(|(_, _, e)| e), now);
        }
    }
    for (topic, n) in &done.lineage {
        if !out.group {
            out.windows.lineage_written(topic, *n);
        }
    }
    for (topic, t) in tallies {
        if let Some(b) = bound.get(topic) {
            b.metrics.valid.increment(t.valid);
            b.metrics.invalid.increment(t.decode + t.validate);
            b.metrics.dead_decode.increment(t.decode);
            b.metrics.dead_validate.increment(t.validate);
            b.metrics.required_present.increment(t.present);
            b.metrics.required_expected.increment(t.expected);
        }
    }
}
