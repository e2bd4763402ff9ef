//! The hand-off for the deferred parts of quality: acknowledged batches (and reconciliation
//! verdicts once decided) go into the windows here; a closed window is judged against the
//! alert rules and becomes the reports (window documents, alerts, OpenLineage run events) that
//! the sinks write with the next batch, retried with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::Settings;
use crate::contract::Contract;
use crate::error::redact_uri;
use crate::lineage::openlineage::{self, Assertion, EventType, Output, Run, TopicQuality};
use crate::product::Catalog;
use crate::quality::alert::{Alert, Alerter, Metric, RuleSettings, Track};
use crate::quality::partial::{Binding, Builder, Partial};
use crate::quality::window::{ClosedWindow, Windows};
use crate::reconcile::Decided;
use crate::sink::mongo::{MongoSink, Reports};
use crate::telemetry::names::{ACCURACY_RATIO, ALERTS_TOTAL, COMPLETENESS_RATIO, LINEAGE_COVERAGE_RATIO};

/// Windows, alert state and the outputs waiting for the next batch.
pub(super) struct Outputs {
    /// Open quality windows.
    pub(super) windows: Windows,
    alerter: Alerter,
    contracts: HashMap<String, Arc<Contract>>,
    owners: HashMap<String, String>,
    pub(super) instance: String,
    run: Run,
    namespace: String,
    outputs: Vec<Output>,
    last_quality: Vec<TopicQuality>,
    pending_windows: Vec<ClosedWindow>,
    pending_alerts: Vec<Alert>,
    pending_events: Vec<Value>,
    /// Group-wide quality: reconciliation verdicts waiting to go out as partials.
    decided: Builder,
    pending_partials: Vec<Partial>,
    /// How many of `pending_partials` are reconciliation verdicts (the rest are the batch's).
    decided_len: usize,
    /// Positions of decided claims whose tombstones wait for the next batch.
    decided_positions: Vec<String>,
    /// Whether windows are group-wide (built by the owner of each binding from partials).
    pub(super) group: bool,
    pub(super) window_ms: u64,
    /// Scheduled scans: the contracts of bound tables and collections, by label.
    at_rest: HashMap<String, Arc<Contract>>,
}

impl Outputs {
    pub(super) fn new(settings: &Settings, catalog: &Catalog, instance: &str, run: Run, now: OffsetDateTime, track_lineage: bool) -> Self {
        let contracts: HashMap<String, Arc<Contract>> = catalog.bindings().map(|b| (b.topic.clone(), b.contract.clone())).collect();
        let windows = Windows::new(
            contracts.clone(),
            Duration::from_millis(settings.quality.window_ms),
            Duration::from_millis(settings.quality.silence_after_ms),
            now,
        )
        .with_lineage(track_lineage);
        let rules = RuleSettings {
            max_invalid: settings.quality.max_invalid,
            fire_after: settings.quality.alert_fire_after,
            resolve_after: settings.quality.alert_resolve_after,
        };
        let first_broker = settings.kafka.bootstrap_servers.split(',').next().unwrap_or_default().trim().to_owned();
        let namespace = format!("kafka://{first_broker}");
        let mut outputs = vec![
            Output { namespace: namespace.clone(), name: settings.topics.dlq.clone() },
            Output { namespace: namespace.clone(), name: settings.topics.alerts.clone() },
        ];
        if track_lineage {
            let mongo_ns = format!(
                "mongodb://{}",
                redact_uri(&settings.mongodb.uri).trim_start_matches("mongodb://").split('/').next().unwrap_or_default()
            );
            for p in &catalog.products {
                outputs.push(Output {
                    namespace: mongo_ns.clone(),
                    name: format!("{}.{}", settings.mongodb.database, MongoSink::record_store(p.name())),
                });
            }
        }
        Self {
            windows,
            alerter: Alerter::new(rules, &settings.kafka.group_id),
            owners: catalog.products.iter().map(|p| (p.name().to_owned(), p.decl.metadata.owner.clone())).collect(),
            contracts,
            instance: instance.to_owned(),
            run,
            namespace,
            outputs,
            last_quality: Vec::new(),
            pending_windows: Vec::new(),
            pending_alerts: Vec::new(),
            pending_events: Vec::new(),
            decided: Builder::new(settings.quality.window_ms, instance),
            pending_partials: Vec::new(),
            decided_len: 0,
            decided_positions: Vec::new(),
            group: settings.quality.scope == crate::config::QualityScope::Group,
            window_ms: settings.quality.window_ms,
            at_rest: HashMap::new(),
        }
    }

    /// The contracts of the bound sources scanned on a schedule, by label (`mysql:table`, `mongodb:collection`): their
    /// windows are judged like a topic's (not listed as the run's Kafka inputs).
    pub(super) fn at_rest(&mut self, sources: impl Iterator<Item = (String, Arc<Contract>)>) {
        self.at_rest = sources.collect();
    }

    /// Follows a new catalog revision (same topics): windows closed from now on are judged and
    /// labelled with its contracts, SLAs and owners.
    pub(super) fn follow(&mut self, catalog: &Catalog) {
        self.contracts = catalog.bindings().map(|b| (b.topic.clone(), b.contract.clone())).collect();
        self.owners = catalog.products.iter().map(|p| (p.name().to_owned(), p.decl.metadata.owner.clone())).collect();
        self.windows.follow(self.contracts.clone());
    }

    /// A reconciliation verdict decided at `now`: counted in this instance's window, or sent as
    /// a partial with the next batch (group-wide windows).
    pub(super) fn decided(&mut self, d: &Decided, now: OffsetDateTime) {
        if !self.group {
            self.windows.accuracy(d);
            return;
        }
        let Some(c) = self.contracts.get(&d.claim.topic) else { return };
        let b = Binding {
            product: &c.product,
            contract: &c.name,
            version: &c.version,
            topic: &d.claim.topic,
            sla: c.quality.freshness.0.as_secs_f64(),
        };
        let now_ms = crate::measure::unix_ms(now);
        self.decided.decided(b, now_ms, d);
        if d.claim.offset >= 0 {
            self.decided_positions.push(d.claim.position());
        }
    }

    /// Sets the partials that go out with the batch being processed: the reconciliation
    /// verdicts' (kept until a batch carrying them is acknowledged), then the batch's own
    /// (replaced when a failed batch is processed again, so nothing is sent twice).
    pub(super) fn partials(&mut self, mut batch: Vec<Partial>) {
        self.pending_partials.truncate(self.decided_len);
        if !self.decided.is_empty() {
            self.pending_partials.extend(self.decided.take());
            self.decided_len = self.pending_partials.len();
        }
        self.pending_partials.append(&mut batch);
    }

    /// The durable state of `topic`'s alert rules.
    pub(super) fn alert_state(&self, topic: &str) -> Vec<(Metric, Track)> {
        self.alerter.export(topic)
    }

    /// Restores `topic`'s alert rules.
    pub(super) fn restore_alerts(&mut self, topic: &str, tracks: Vec<(Metric, Track)>) {
        self.alerter.restore(topic, tracks);
    }

    /// The topics this instance owns partitions of changed.
    pub(super) fn owned(&mut self, topics: HashSet<String>, now: OffsetDateTime) {
        self.windows.owned(&topics, now);
    }

    /// Closes the windows that ended, judging each against the alert rules.
    pub(super) fn close_due_windows(&mut self, now: OffsetDateTime) {
        if self.group || !self.windows.due(now) {
            return;
        }
        let closed = self.windows.close(now);
        self.report(closed, now);
    }

    /// Judges closed windows against the alert rules, sets the ratio gauges, and queues their
    /// documents, alerts and an OpenLineage RUNNING event.
    pub(super) fn report(&mut self, closed: Vec<ClosedWindow>, now: OffsetDateTime) {
        let mut quality = Vec::with_capacity(closed.len());
        let at_rest_only = !closed.is_empty() && closed.iter().all(|w| w.source.is_some());
        for w in closed {
            let Some(contract) = self.contracts.get(&w.topic).or_else(|| self.at_rest.get(&w.topic)).cloned() else { continue };
            // A bound table's windows are labelled by `source`, a topic's by `topic`.
            let place = if w.source.is_some() { "source" } else { "topic" };
            let labels = [("product", w.product.clone()), ("contract", w.contract.clone()), (place, w.topic.clone())];
            if let Some(c) = w.completeness {
                gauge!(COMPLETENESS_RATIO, &labels).set(c);
            }
            if let Some(a) = w.accuracy {
                gauge!(ACCURACY_RATIO, &labels).set(a);
            }
            if let Some(l) = w.lineage_coverage {
                gauge!(LINEAGE_COVERAGE_RATIO, &labels).set(l);
            }
            for alert in self.alerter.evaluate(&w, &contract, now) {
                counter!(ALERTS_TOTAL, "product" => alert.product.clone(), "metric" => alert.metric.as_str(), "state" => if alert.state == crate::quality::alert::AlertState::Firing { "firing" } else { "resolved" }).increment(1);
                tracing::info!(product = %alert.product, topic = %alert.topic, metric = alert.metric.as_str(), state = ?alert.state, actual = %alert.actual, expected = %alert.expected, "quality alert");
                self.pending_alerts.push(alert);
            }
            // A bound table is no Kafka input of the run: its windows stay out of the
            // OpenLineage events (their namespace is the broker's).
            if w.source.is_none() {
                quality.push(self.topic_quality(&w, &contract));
            }
            self.pending_windows.push(w);
        }
        if at_rest_only {
            // Only bound tables' windows closed: no Kafka input to report.
            return;
        }
        self.last_quality = quality;
        let event = openlineage::run_event(&self.run, EventType::Running, now, &self.last_quality, &self.outputs, None);
        self.pending_events.push(event);
    }

    fn topic_quality(&self, w: &ClosedWindow, c: &Contract) -> TopicQuality {
        let q = &c.quality;
        let mut assertions = Vec::new();
        if let Some(p99) = w.freshness_p99 {
            assertions.push(Assertion {
                assertion: format!("freshness p99 <= {}", q.freshness),
                success: p99 <= q.freshness.0.as_secs_f64(),
                column: None,
            });
        }
        if w.completeness.is_some() {
            assertions.push(Assertion {
                assertion: format!("completeness >= {}", q.completeness),
                success: q.completeness.is_met_by(w.required_present, w.required_expected),
                column: None,
            });
        }
        if w.accuracy.is_some() {
            assertions.push(Assertion {
                assertion: format!("accuracy >= {}", q.accuracy),
                success: q.accuracy.is_met_by(w.accuracy_matched, w.accuracy_checked),
                column: c.reconciliation.as_ref().map(|r| r.amount_field.clone()),
            });
        }
        TopicQuality {
            namespace: self.namespace.clone(),
            topic: w.topic.clone(),
            product: w.product.clone(),
            owner: self.owners.get(&w.product).cloned().unwrap_or_default(),
            contract: w.contract.clone(),
            contract_version: w.contract_version.clone(),
            row_count: w.volume,
            invalid_count: w.invalid,
            completeness_ratio: w.completeness,
            freshness_p99_seconds: w.freshness_p99,
            accuracy_ratio: w.accuracy,
            null_counts: Vec::new(),
            assertions,
        }
    }

    /// Queues a lifecycle event (START, COMPLETE, ABORT).
    pub(super) fn lineage_event(&mut self, kind: EventType, now: OffsetDateTime, error: Option<&str>) {
        let inputs: Vec<TopicQuality> = if kind == EventType::Start {
            self.contracts
                .iter()
                .map(|(topic, c)| TopicQuality {
                    namespace: self.namespace.clone(),
                    topic: topic.clone(),
                    product: c.product.clone(),
                    owner: self.owners.get(&c.product).cloned().unwrap_or_default(),
                    contract: c.name.clone(),
                    contract_version: c.version.clone(),
                    row_count: 0,
                    invalid_count: 0,
                    completeness_ratio: None,
                    freshness_p99_seconds: None,
                    accuracy_ratio: None,
                    null_counts: Vec::new(),
                    assertions: Vec::new(),
                })
                .collect()
        } else {
            self.last_quality.clone()
        };
        self.pending_events.push(openlineage::run_event(&self.run, kind, now, &inputs, &self.outputs, error));
    }

    /// Whether anything waits for a batch.
    pub(super) fn has_pending(&self) -> bool {
        !(self.pending_windows.is_empty()
            && self.pending_alerts.is_empty()
            && self.pending_events.is_empty()
            && self.pending_partials.is_empty()
            && self.decided.is_empty())
    }

    /// What waits to be written with the next batch.
    pub(super) fn reports(&self) -> Reports<'_> {
        Reports {
            windows: &self.pending_windows,
            alerts: &self.pending_alerts,
            events: &self.pending_events,
            job: &self.run.job_name,
            instance: (!self.group).then_some(self.instance.as_str()),
            partials: &self.pending_partials,
            claims_decided: &self.decided_positions,
        }
    }

    /// Forgets what was written.
    pub(super) fn clear_pending(&mut self) {
        self.pending_windows.clear();
        self.pending_alerts.clear();
        self.pending_events.clear();
        self.pending_partials.clear();
        self.decided_len = 0;
        self.decided_positions.clear();
    }
}
