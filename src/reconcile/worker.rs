//! Reconciliation beside the stream: a task on the runtime owns the [`Reconciler`] and the
//! database; the stream hands it each acknowledged batch's claims and collects the verdicts
//! between batches. The stream never waits for a query, only for room: at
//! `reconcile.max_backlog` undecided claims [`Worker::submit`] blocks until the database has
//! decided some (bounded memory, nothing dropped).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::warn;

use super::mysql::MySqlSource;
use super::{Claim, Decided, Reconciler, SourceDb};
use crate::config::Settings;
use crate::error::Error;
use crate::measure::Clock;
use crate::telemetry::names::*;

/// Undecided claims: handed over but not decided yet.
#[derive(Debug, Default)]
struct Backlog {
    count: Mutex<usize>,
    room: Condvar,
}

impl Backlog {
    fn add(&self, n: usize) {
        let mut c = self.count.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *c += n;
        gauge!(RECONCILE_BACKLOG).set(*c as f64);
    }

    fn remove(&self, n: usize) {
        let mut c = self.count.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *c = c.saturating_sub(n);
        gauge!(RECONCILE_BACKLOG).set(*c as f64);
        self.room.notify_all();
    }
}

/// How the worker decides.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Absent rows are re-checked until this age.
    pub grace: Duration,
    /// Keys per `IN (…)` query.
    pub chunk: usize,
    /// Chunks in flight at once.
    pub concurrency: usize,
    /// Undecided claims at which the stream waits.
    pub max_backlog: usize,
    /// Least time between two passes over the pending claims unless a full round of queries
    /// (`chunk × concurrency` new claims) is waiting.
    pub interval: Duration,
}

/// What the stream asks of the task.
#[derive(Debug)]
enum Command {
    /// Decide these claims.
    Claims(Vec<Claim>),
    /// Drop the pending claims of these partitions (revoked: their new owner restores them).
    Forget(Vec<(String, i32)>),
}

/// The stream's handle on the reconciliation task.
#[derive(Debug)]
pub struct Worker {
    claims: UnboundedSender<Command>,
    decided: Receiver<Vec<Decided>>,
    backlog: Arc<Backlog>,
    max_backlog: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts the worker on `settings.mysql.url` as `settings.reconcile` says; the database
    /// pool connects lazily (meshguard starts while the database is down; claims wait), and its
    /// background tasks live on `runtime`.
    pub fn for_mysql(settings: &Settings, clock: Arc<dyn Clock>, runtime: &tokio::runtime::Handle) -> Result<Self, Error> {
        let _guard = runtime.enter();
        let r = &settings.reconcile;
        let db = MySqlSource::lazy(&settings.mysql.url, u32::try_from(r.concurrency).unwrap_or(u32::MAX), r.chunk)?;
        let worker = WorkerSettings {
            grace: Duration::from_millis(r.grace_ms),
            chunk: r.chunk,
            concurrency: r.concurrency,
            max_backlog: r.max_backlog,
            interval: Duration::from_millis(500),
        };
        Ok(Self::start(db, worker, clock, runtime))
    }

    /// Starts the task on `runtime` over any source database (tests use an in-memory one).
    pub fn start<D: SourceDb + 'static>(db: D, settings: WorkerSettings, clock: Arc<dyn Clock>, runtime: &tokio::runtime::Handle) -> Self {
        let (claims_tx, claims_rx) = unbounded_channel();
        let (decided_tx, decided_rx) = channel();
        let backlog = Arc::new(Backlog::default());
        let task = runtime.spawn(work(db, settings, clock, claims_rx, decided_tx, backlog.clone()));
        Self { claims: claims_tx, decided: decided_rx, backlog, max_backlog: settings.max_backlog.max(1), task }
    }

    /// Hands claims over. While the backlog is at its bound this waits for the database to
    /// decide some (the stream pauses) unless `stop` is set.
    pub fn submit(&self, claims: Vec<Claim>, stop: &AtomicBool) {
        if claims.is_empty() {
            return;
        }
        {
            let mut count = self.backlog.count.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while *count >= self.max_backlog && !stop.load(Ordering::Relaxed) && !self.task.is_finished() {
                count = match self.backlog.room.wait_timeout(count, Duration::from_millis(200)) {
                    Ok((c, _)) => c,
                    Err(p) => p.into_inner().0,
                };
            }
        }
        self.backlog.add(claims.len());
        if self.claims.send(Command::Claims(claims)).is_err() {
            warn!("the reconciliation task has stopped; claims are not checked");
        }
    }

    /// Drops the pending claims of revoked partitions (group-wide quality keeps them durably,
    /// and their new owner restores them).
    pub fn forget(&self, partitions: Vec<(String, i32)>) {
        if !partitions.is_empty() && self.claims.send(Command::Forget(partitions)).is_err() {
            warn!("the reconciliation task has stopped");
        }
    }

    /// Verdicts reached since the last call.
    pub fn decided(&self) -> Vec<Decided> {
        self.decided.try_iter().flatten().collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies one command; returns the number of claims added.
fn apply(reconciler: &mut Reconciler, command: Command, backlog: &Backlog) -> usize {
    match command {
        Command::Claims(c) => {
            let n = c.len();
            let added = reconciler.submit(c);
            // Claims already pending (a replay) leave the backlog.
            backlog.remove(n - added);
            added
        }
        Command::Forget(partitions) => {
            backlog.remove(reconciler.forget(&partitions));
            0
        }
    }
}

async fn work<D: SourceDb>(
    db: D,
    settings: WorkerSettings,
    clock: Arc<dyn Clock>,
    mut claims: UnboundedReceiver<Command>,
    decided: Sender<Vec<Decided>>,
    backlog: Arc<Backlog>,
) {
    let mut reconciler = Reconciler::new(settings.grace, settings.chunk);
    let mut wait = settings.interval;
    let mut last = Instant::now();
    // Claims handed over since the last round (all due at once; older ones wait for their
    // next lookup).
    let mut fresh = 0_usize;
    loop {
        // Gather claims until the next pass is due (or, with nothing pending, until claims come).
        if reconciler.backlog() == 0 {
            match claims.recv().await {
                Some(c) => fresh += apply(&mut reconciler, c, &backlog),
                None => return,
            }
            if reconciler.backlog() == 0 {
                continue;
            }
        }
        // A full round of queries is worth sending at once (under load the database is the
        // bottleneck and must not idle); less waits for the interval, so rows not in the source
        // yet are not re-queried in a busy loop.
        let full_round = settings.chunk.saturating_mul(settings.concurrency.max(1));
        let due = tokio::time::Instant::from_std(last + wait);
        while fresh < full_round || reconciler.failures > 0 {
            tokio::select! {
                c = claims.recv() => match c {
                    Some(c) => fresh += apply(&mut reconciler, c, &backlog),
                    None => return,
                },
                () = tokio::time::sleep_until(due) => break,
            }
        }
        while let Ok(c) = claims.try_recv() {
            let _ = apply(&mut reconciler, c, &backlog);
        }
        fresh = 0;
        last = Instant::now();
        let checking = reconciler.backlog();
        // Each chunk's verdicts leave as soon as its answer is in: the stream gets its room back
        // while the round's other chunks are still in flight, instead of after the whole round.
        let mut gone = false;
        let err = reconciler
            .run_each(&db, clock.now(), settings.concurrency, |verdicts| {
                let n = verdicts.len();
                gone |= decided.send(verdicts).is_err();
                backlog.remove(n);
            })
            .await;
        histogram!(RECONCILE_SECONDS).record(last.elapsed().as_secs_f64());
        histogram!(RECONCILE_BATCH_RECORDS).record(checking as f64);
        if gone {
            return;
        }
        match err {
            None => wait = settings.interval,
            Some(e) => {
                counter!(RECONCILE_ERRORS_TOTAL).increment(1);
                if reconciler.failures == 1 || reconciler.failures.is_multiple_of(50) {
                    warn!(error = %e, backlog = reconciler.backlog(), "source database unavailable; records stay unverified and are retried");
                }
                wait = (wait * 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
            }
        }
    }
}
