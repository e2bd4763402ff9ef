//! The stream: the loop that orders the stages. A batch is gathered from the source, evaluated
//! and handed to the sinks ([`batch::Flow::process`]); while the next batch is gathered its
//! acknowledgements arrive, and only then are its offsets stored (at-least-once) or committed
//! in its transaction (exactly-once) ([`batch::Flow::complete`]); the acknowledged verdicts then
//! go on to windows, metrics and reconciliation ([`batch::Flow::finished`]). A failure is
//! handled by its retry hint ([`batch::Flow::recover`]).
//!
//! Rebalance callbacks run inside `poll`, between records of a gathering batch; records of
//! partitions revoked meanwhile are dropped from the batch unprocessed (their new owner reads
//! them from the committed offset), so no output is written for a record this instance does
//! not own any more.
//!
//! Quality windows count a batch only once it is acknowledged, so a retried batch is never
//! counted twice; a closed window's outputs (its document, alerts, the OpenLineage RUNNING
//! event) travel with the next batch and are retried with it.

mod batch;
mod claims;
mod evaluate;
pub mod materialize;
mod outputs;
pub mod owner;
pub mod reload;
pub mod scheduled;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{error, info, warn};

use self::batch::{Backoff, Flow, Sent};
use self::evaluate::{Bindings, Plan};
use self::outputs::Outputs;
use crate::config::Settings;
use crate::error::{Error, System};
use crate::lineage::openlineage::EventType;
use crate::measure::Clock;
use crate::product::Catalog;
use crate::reconcile::worker::Worker;
use crate::sink::Sinks;
use crate::source::{Firsts, KafkaSource, Limits};
use crate::telemetry::http::Health;

/// What the stream runs with besides its configuration.
#[derive(Debug, Clone)]
pub struct Env {
    /// Processing time (tests set it).
    pub clock: Arc<dyn Clock>,
    /// `/healthz` and `/readyz`.
    pub health: Arc<Health>,
    /// Set to stop: the stream drains its batch, commits and returns.
    pub stop: Arc<AtomicBool>,
    /// The runtime the document store and the source database's clients run on.
    pub runtime: tokio::runtime::Handle,
    /// This instance's OpenLineage run: the stream's lifecycle events and the group-wide
    /// owner's RUNNING events beside it carry the same run id.
    pub run: crate::lineage::openlineage::Run,
}

/// Runs until `env.stop` is set, then drains the current batch and commits. With `reload`
/// (the catalog in MongoDB), a new catalog revision holds the batches after it.
pub fn run(settings: &Settings, catalog: &Catalog, env: Env, mut reload: Option<reload::Reload>) -> Result<(), Error> {
    let topics = catalog.topics();
    if topics.is_empty() {
        return Err(Error::refused(System::Kafka, "no data product declares a Kafka topic (spec.apis.kafka.topics)"));
    }
    let bound: Bindings = reload::bindings(catalog);
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let sinks = Sinks::connect(settings, catalog, &instance, env.runtime.clone(), &env.stop)?;
    let reconciler = if settings.mysql.enabled { Some(Worker::for_mysql(settings, env.clock.clone(), &env.runtime)?) } else { None };
    let plan = Plan { threads: settings.delivery.evaluators(), records: sinks.has_store(), claims: reconciler.is_some() };
    let out = Outputs::new(settings, catalog, &instance, env.run.clone(), env.clock.now(), sinks.has_store());
    let source = KafkaSource::subscribe(settings, &topics, env.health.clone())?;
    let exactly_once = settings.delivery.exactly_once;
    info!(topics = topics.len(), exactly_once, group = %settings.kafka.group_id, instance = %instance, "stream started");
    env.health.live.store(true, Ordering::Relaxed);
    let claims =
        (settings.quality.scope == crate::config::QualityScope::Group && reconciler.is_some()).then(|| claims::ClaimStore::new(settings));
    let mut flow = Flow { bound: &bound, source: &source, sinks, reconciler, plan, clock: env.clock.clone(), out, exactly_once, claims };
    flow.out.lineage_event(EventType::Start, env.clock.now(), None);
    let result = run_loop(&mut flow, Limits::of(settings), &env.stop, &mut reload);
    env.health.ready.store(false, Ordering::Relaxed);
    // The final lineage event goes out with a last (record-less) batch.
    let kind = if result.is_ok() { EventType::Complete } else { EventType::Abort };
    let message = result.as_ref().err().map(ToString::to_string);
    flow.out.lineage_event(kind, env.clock.now(), message.as_deref());
    let last = flow.process(&[], Firsts::default()).and_then(|sent| flow.complete(sent).map_err(|(e, _)| e));
    if let Err(e) = last {
        warn!(error = %e.message, "final lineage event not delivered");
    }
    source.close();
    env.health.live.store(false, Ordering::Relaxed);
    info!("stream stopped");
    result
}

/// The loop: gather a batch; complete the batch in flight (its acknowledgements arrived while
/// this one was gathered); process this one. Exactly-once completes each batch at once.
fn run_loop<'b>(flow: &mut Flow<'b>, limits: Limits, stop: &AtomicBool, reload: &mut Option<reload::Reload>) -> Result<(), Error> {
    let mut backoff = Backoff::new();
    let mut owned_epoch = u64::MAX;
    let mut in_flight: Option<Sent<'b>> = None;
    while !stop.load(Ordering::Relaxed) {
        // Between batches only: a new catalog revision holds the next batch (`reload`).
        if let Some((bound, catalog)) = reload.as_mut().and_then(reload::Reload::check) {
            flow.bound = bound;
            flow.out.follow(&catalog);
        }
        if let Some(fatal) = flow.source.fatal() {
            error!(error = %fatal, "stopping: the Kafka connection cannot work with this configuration");
            return Err(Error::refused(System::Kafka, fatal));
        }
        if let Err(e) = flow.sinks.ready() {
            warn!(error = %e, retry_in_ms = backoff.current().as_millis() as u64, "cannot replace the side-topic producer yet");
            backoff.wait();
            continue;
        }
        // With a batch in flight, wait for the next one no longer than the linger time: the
        // batch in flight is finished after gathering, so that wait is also its commit delay.
        let first_wait = if in_flight.is_some() { limits.linger } else { Duration::from_millis(100) };
        let batch = flow.source.gather(limits, first_wait, stop);
        // At-least-once: the previous batch's dead letters were acknowledged while this batch
        // was gathered; store its offsets now, before this batch sends anything.
        if let Some(sent) = in_flight.take() {
            match flow.complete(sent) {
                Ok(done) => {
                    backoff.reset();
                    flow.finished(done, stop);
                }
                Err((e, mut first)) => {
                    // The batch just gathered follows the failed one: read both again.
                    first.merge(Firsts::of(&batch));
                    drop(batch);
                    flow.recover(e, &first, &mut backoff)?;
                    continue;
                }
            }
        }
        let epoch = flow.source.epoch();
        if epoch != owned_epoch {
            if let Err(e) = flow.rebalanced(stop) {
                // Restoring durable claims failed (the claims topic unreadable): try again
                // before this batch is processed, so no gained partition runs without its claims.
                warn!(error = %e.message, retry_in_ms = backoff.current().as_millis() as u64, "cannot restore pending claims yet");
                let first = Firsts::of(&batch);
                drop(batch);
                flow.source.rewind(&first);
                backoff.wait();
                continue;
            }
            owned_epoch = epoch;
            // Uniqueness state of revoked partitions goes: their next owner keeps its own.
            for (topic, partition) in flow.source.take_revoked() {
                if let Some(u) = flow.bound.get(&topic).and_then(|b| b.unique.as_ref()) {
                    u.revoke(partition);
                }
            }
        }
        // Verdicts count in the window open when they are reached.
        flow.advance_windows();
        if batch.is_empty() && !flow.out.has_pending() {
            continue;
        }
        let first = Firsts::of(&batch);
        let sent = flow.process(&batch, first.clone());
        // The records are no longer needed: the producer copied what it sends.
        drop(batch);
        match sent {
            // In flight until the next batch is gathered.
            Ok(sent) if !flow.exactly_once => in_flight = Some(sent),
            Ok(sent) => match flow.complete(sent) {
                Ok(done) => {
                    backoff.reset();
                    flow.finished(done, stop);
                }
                Err((e, first)) => flow.recover(e, &first, &mut backoff)?,
            },
            Err(e) => flow.recover(e, &first, &mut backoff)?,
        }
    }
    if let Some(sent) = in_flight.take() {
        match flow.complete(sent) {
            Ok(done) => flow.finished(done, stop),
            Err((e, _)) => warn!(error = %e.message, "the last batch was not acknowledged; a restart reads it again"),
        }
    }
    Ok(())
}
