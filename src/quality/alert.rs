//! Alert rules over closed windows, and their state machine: an alert fires once when a window
//! breaches a rule (after `fire_after` breaching windows in a row) and resolves once a later
//! window is within it (after `resolve_after` good windows): one alert per episode, never one
//! per event. Windows without data for a metric leave its state as it is.

use std::collections::HashMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::window::ClosedWindow;
use crate::contract::Contract;
use crate::product::sla::Percent;

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 99th percentile event age against the contract's freshness SLA.
    Freshness,
    /// No event for longer than the silence threshold (a freshness breach).
    Silence,
    /// Required fields present against the completeness SLA.
    Completeness,
    /// Matched / checked against the accuracy SLA.
    Accuracy,
    /// Contract validation failures against the seed's 1% threshold.
    Validity,
    /// Records with lineage / records processed: any gap.
    LineageCoverage,
    /// Records in the window against the contract's `volume: {min, max}`.
    Volume,
}

impl Metric {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freshness => "freshness",
            Self::Silence => "silence",
            Self::Completeness => "completeness",
            Self::Accuracy => "accuracy",
            Self::Validity => "validity",
            Self::LineageCoverage => "lineage_coverage",
            Self::Volume => "volume",
        }
    }

    fn severity(self) -> &'static str {
        match self {
            Self::Accuracy | Self::Validity => "critical",
            _ => "warning",
        }
    }
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The episode started.
    Firing,
    /// The episode ended.
    Resolved,
}

/// An alert, as published to `datamesh.quality.alerts` and stored in `data_quality_alerts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// One id per episode: the firing and the resolved message share it.
    pub id: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// `warning` or `critical`.
    pub severity: String,
    /// Data product.
    pub product: String,
    /// Contract.
    pub contract: String,
    /// Contract version.
    pub contract_version: String,
    /// Topic.
    pub topic: String,
    /// The rule's metric.
    pub metric: Metric,
    /// The threshold, as written in the contract (`1s`, `99.999%`).
    pub expected: String,
    /// The measured value of the window that changed the state.
    pub actual: String,
    /// That window's start.
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    /// That window's end.
    #[serde(with = "time::serde::rfc3339")]
    pub window_end: OffsetDateTime,
    /// A few record ids behind the breach.
    pub sample_record_ids: Vec<String>,
    /// When the episode fired.
    #[serde(with = "time::serde::rfc3339")]
    pub fired_at: OffsetDateTime,
    /// When it resolved.
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
}

/// Thresholds that are not in the contract.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// The seed's "contract validation failures > 1%": the largest acceptable invalid share.
    pub max_invalid: Percent,
    /// Breaching windows in a row before an alert fires.
    pub fire_after: u32,
    /// Good windows in a row before it resolves.
    pub resolve_after: u32,
}

/// One rule's judgement of one window: `None` when the window has no data for it.
struct Judgement {
    metric: Metric,
    breached: Option<bool>,
    expected: String,
    actual: String,
    samples: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

fn meets(p: Percent, ratio: f64) -> bool {
    // Ratios come from integer counts; compare exactly where the decimal allows.
    Decimal::from_f64(ratio * 100.0).map(|r| r >= p.0).unwrap_or(false)
}

fn judge(w: &ClosedWindow, c: &Contract, s: &RuleSettings) -> Vec<Judgement> {
    let q = &c.quality;
    let sla_secs = q.freshness.0.as_secs_f64();
    let mut out = vec![
        Judgement {
            metric: Metric::Freshness,
            breached: w.freshness_p99.map(|p99| p99 > sla_secs),
            expected: format!("p99 <= {}", q.freshness),
            actual: w.freshness_p99.map(|p| format!("p99 {p:.3}s")).unwrap_or_default(),
            samples: w.stale_samples.clone(),
        },
        Judgement {
            metric: Metric::Silence,
            breached: Some(w.silent_seconds.is_some()),
            expected: "events keep arriving".into(),
            actual: w.silent_seconds.map(|s| format!("silent for {s:.0}s")).unwrap_or_else(|| "events arriving".into()),
            samples: Vec::new(),
        },
        Judgement {
            metric: Metric::Completeness,
            breached: w.completeness.map(|_| !q.completeness.is_met_by(w.required_present, w.required_expected)),
            expected: format!(">= {}", q.completeness),
            actual: w.completeness.map(pct).unwrap_or_default(),
            samples: w.invalid_samples.clone(),
        },
        Judgement {
            metric: Metric::Accuracy,
            breached: w.accuracy.map(|_| !q.accuracy.is_met_by(w.accuracy_matched, w.accuracy_checked)),
            expected: format!(">= {}", q.accuracy),
            actual: w.accuracy.map(pct).unwrap_or_default(),
            samples: w.accuracy_samples.clone(),
        },
        Judgement {
            metric: Metric::Validity,
            breached: w.validity.map(|v| !meets(Percent(Decimal::ONE_HUNDRED - s.max_invalid.0), v)),
            expected: format!("invalid <= {}", s.max_invalid),
            actual: w.validity.map(|v| format!("invalid {}", pct(1.0 - v))).unwrap_or_default(),
            samples: w.invalid_samples.clone(),
        },
    ];
    out.push(Judgement {
        metric: Metric::LineageCoverage,
        breached: w.lineage_coverage.map(|c| c < 1.0),
        expected: "100%".into(),
        actual: w.lineage_coverage.map(pct).unwrap_or_default(),
        samples: Vec::new(),
    });
    // Every closed window has a volume (an empty one too: that is what `min` is about).
    if let Some(spec) = &c.volume {
        let breach = spec.breach(w.volume);
        out.push(Judgement {
            metric: Metric::Volume,
            breached: Some(breach.is_some()),
            expected: match (spec.min, spec.max) {
                (Some(min), Some(max)) => format!("{min}..={max} records"),
                (Some(min), None) => format!(">= {min} records"),
                (None, Some(max)) => format!("<= {max} records"),
                (None, None) => "any number of records".into(),
            },
            actual: breach.unwrap_or_else(|| format!("{} records", w.volume)),
            samples: Vec::new(),
        });
    }
    out
}

/// One rule's state for one topic: breaching and good windows in a row, and the episode
/// firing. Kept durably by the owner of group-wide windows, restored by the next one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Track {
    breaches: u32,
    oks: u32,
    firing: Option<Alert>,
}

/// The state of every rule of every binding.
#[derive(Debug)]
pub struct Alerter {
    settings: RuleSettings,
    /// Namespace of alert ids (the consumer group), so two deployments never share ids.
    namespace: String,
    tracks: HashMap<(String, Metric), Track>,
}

impl Alerter {
    /// A fresh alerter.
    pub fn new(settings: RuleSettings, namespace: &str) -> Self {
        Self { settings, namespace: namespace.to_owned(), tracks: HashMap::new() }
    }

    /// Judges a closed window; returns the alerts that fired or resolved.
    pub fn evaluate(&mut self, w: &ClosedWindow, contract: &Contract, now: OffsetDateTime) -> Vec<Alert> {
        let mut out = Vec::new();
        for j in judge(w, contract, &self.settings) {
            let Some(breached) = j.breached else { continue };
            let track = self.tracks.entry((w.topic.clone(), j.metric)).or_default();
            if breached {
                track.breaches += 1;
                track.oks = 0;
                if track.firing.is_none() && track.breaches >= self.settings.fire_after.max(1) {
                    let key = format!(
                        "{}|{}|{}|{}|{}|{}",
                        self.namespace,
                        w.product,
                        w.contract,
                        w.topic,
                        j.metric.as_str(),
                        w.window_start.unix_timestamp()
                    );
                    let alert = Alert {
                        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes()).to_string(),
                        state: AlertState::Firing,
                        severity: j.metric.severity().to_owned(),
                        product: w.product.clone(),
                        contract: w.contract.clone(),
                        contract_version: w.contract_version.clone(),
                        topic: w.topic.clone(),
                        metric: j.metric,
                        expected: j.expected,
                        actual: j.actual,
                        window_start: w.window_start,
                        window_end: w.window_end,
                        sample_record_ids: j.samples,
                        fired_at: now,
                        resolved_at: None,
                    };
                    track.firing = Some(alert.clone());
                    out.push(alert);
                }
            } else {
                track.oks += 1;
                track.breaches = 0;
                if track.oks >= self.settings.resolve_after.max(1)
                    && let Some(mut alert) = track.firing.take()
                {
                    alert.state = AlertState::Resolved;
                    alert.actual = j.actual;
                    alert.window_start = w.window_start;
                    alert.window_end = w.window_end;
                    alert.resolved_at = Some(now);
                    out.push(alert);
                }
            }
        }
        out
    }

    /// The state of every rule of `topic`, to keep durably.
    pub fn export(&self, topic: &str) -> Vec<(Metric, Track)> {
        let mut out: Vec<(Metric, Track)> =
            self.tracks.iter().filter(|((t, _), _)| t == topic).map(|((_, m), tr)| (*m, tr.clone())).collect();
        out.sort_by_key(|(m, _)| m.as_str());
        out
    }

    /// Restores the state of `topic`'s rules (a new owner of its windows).
    pub fn restore(&mut self, topic: &str, tracks: Vec<(Metric, Track)>) {
        self.tracks.retain(|(t, _), _| t != topic);
        for (m, tr) in tracks {
            let _ = self.tracks.insert((topic.to_owned(), m), tr);
        }
    }

    /// Alerts currently firing.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.tracks.values().filter_map(|t| t.firing.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::{Catalog, Files};
    use crate::quality::window::Windows;
    use crate::verdict::evaluate;
    use std::time::Duration;
    use time::macros::datetime;

    fn payments() -> std::sync::Arc<Contract> {
        let catalog = Catalog::load(&Files::Embedded).unwrap_or_else(|e| panic!("{e}"));
        catalog.product("payments-data-product").and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("contract"))
    }

    fn event(age_ms: i64, now: OffsetDateTime, complete: bool) -> Vec<u8> {
        let t = crate::generate::rfc3339(now - time::Duration::milliseconds(age_ms));
        let status = if complete { r#","status":"PENDING""# } else { "" };
        format!(r#"{{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":1,"amount":1.5,"currency":"EUR"{status},"created_at":"{t}"}}"#).into_bytes()
    }

    #[test]
    fn one_alert_per_episode_then_resolved() {
        let c = payments();
        let settings = RuleSettings { max_invalid: "1%".parse().unwrap_or_else(|e| panic!("{e}")), fire_after: 1, resolve_after: 2 };
        let mut alerter = Alerter::new(settings, "g");
        let mut now = datetime!(2026-01-01 00:00:00 UTC);
        let mut windows = Windows::new([("p.created".to_owned(), c.clone())], Duration::from_secs(10), Duration::from_secs(3600), now);
        let mut fired = Vec::new();
        // Windows 0-2 stale (5 s old events against a 1 s SLA), 3-5 fresh.
        for i in 0..6 {
            let age = if i < 3 { 5_000 } else { 100 };
            for _ in 0..50 {
                let e = evaluate(&c, &event(age, now, true), now);
                windows.observe("p.created", &e, now);
            }
            now += time::Duration::seconds(10);
            for w in windows.close(now) {
                fired.extend(alerter.evaluate(&w, &c, now));
            }
        }
        let freshness: Vec<&Alert> = fired.iter().filter(|a| a.metric == Metric::Freshness).collect();
        assert_eq!(freshness.len(), 2, "{fired:#?}");
        assert_eq!(freshness[0].state, AlertState::Firing);
        assert_eq!(freshness[1].state, AlertState::Resolved);
        assert_eq!(freshness[0].id, freshness[1].id, "one id per episode");
        assert_eq!(freshness[0].expected, "p99 <= 1s");
        assert!(freshness[0].actual.starts_with("p99 5."), "{}", freshness[0].actual);
        assert_eq!(freshness[0].sample_record_ids, vec!["3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f".to_owned()]);
        assert!(fired.iter().all(|a| a.metric == Metric::Freshness), "nothing else breached: {fired:#?}");
        assert_eq!(alerter.firing().count(), 0);
    }

    #[test]
    fn completeness_validity_and_silence_breach() {
        let c = payments();
        let settings = RuleSettings { max_invalid: "1%".parse().unwrap_or_else(|e| panic!("{e}")), fire_after: 1, resolve_after: 1 };
        let mut alerter = Alerter::new(settings, "g");
        let mut now = datetime!(2026-01-01 00:00:00 UTC);
        let mut windows = Windows::new([("p.created".to_owned(), c.clone())], Duration::from_secs(10), Duration::from_secs(25), now);
        windows.owned(&["p.created".to_owned()].into_iter().collect(), now);
        for _ in 0..10 {
            let e = evaluate(&c, &event(10, now, false), now);
            windows.observe("p.created", &e, now);
        }
        now += time::Duration::seconds(10);
        let mut metrics: Vec<Metric> = windows.close(now).iter().flat_map(|w| alerter.evaluate(w, &c, now)).map(|a| a.metric).collect();
        metrics.sort_by_key(|m| m.as_str());
        assert_eq!(metrics, vec![Metric::Completeness, Metric::Validity]);
        // Then silence: no events for longer than 25 s.
        let mut silence = Vec::new();
        for _ in 0..3 {
            now += time::Duration::seconds(10);
            silence.extend(windows.close(now).iter().flat_map(|w| alerter.evaluate(w, &c, now)).filter(|a| a.metric == Metric::Silence));
        }
        assert_eq!(silence.len(), 1);
        assert_eq!(silence[0].state, AlertState::Firing);
    }

    #[test]
    fn volume_fires_below_min_and_above_max_and_resolves_within() {
        // The payments schema under a contract with `volume: {min: 5, max: 20}`.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let yaml = "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: t\n  domain: payments\n  version: \"1\"\n  owner: t@example.com\nspec:\n  contracts:\n    - name: pay\n      version: \"1.0.0\"\n      schema: schemas/payment-schema.json\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99%\n      volume: {min: 5, max: 20}\n  apis:\n    kafka:\n      topics: [p.created]\n";
        std::fs::write(dir.path().join("t.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
        let schemas = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let catalog = Catalog::load(&Files::Disk { products: dir.path().to_owned(), schemas }).unwrap_or_else(|e| panic!("{e}"));
        let c = catalog.binding("p.created").map(|b| b.contract.clone()).unwrap_or_else(|| panic!("binding"));
        let settings = || RuleSettings { max_invalid: "1%".parse().unwrap_or_else(|e| panic!("{e}")), fire_after: 1, resolve_after: 1 };
        let mut alerter = Alerter::new(settings(), "g");
        let mut now = datetime!(2026-01-01 00:00:00 UTC);
        let mut windows = Windows::new([("p.created".to_owned(), c.clone())], Duration::from_secs(10), Duration::from_secs(3600), now);
        windows.owned(&["p.created".to_owned()].into_iter().collect(), now);
        let mut volume = Vec::new();
        // Windows of 2 (too few), 10 (within), 30 (too many), 10 (within) records.
        for n in [2, 10, 30, 10] {
            for _ in 0..n {
                let e = evaluate(&c, &event(100, now, true), now);
                windows.observe("p.created", &e, now);
            }
            now += time::Duration::seconds(10);
            for w in windows.close(now) {
                volume.extend(alerter.evaluate(&w, &c, now).into_iter().filter(|a| a.metric == Metric::Volume));
            }
        }
        let seen: Vec<(AlertState, &str)> = volume.iter().map(|a| (a.state, a.actual.as_str())).collect();
        assert_eq!(
            seen,
            [
                (AlertState::Firing, "2 records, fewer than the minimum 5"),
                (AlertState::Resolved, "10 records"),
                (AlertState::Firing, "30 records, more than the maximum 20"),
                (AlertState::Resolved, "10 records"),
            ]
        );
        assert!(volume.iter().all(|a| a.expected == "5..=20 records" && a.severity == "warning"), "{volume:#?}");
        assert_ne!(volume[0].id, volume[2].id, "two episodes, two ids");

        // Without `volume:` the rule is not judged: an empty window of the payments contract
        // raises no volume alert.
        let base = payments();
        assert!(base.volume.is_none());
        let mut plain = Alerter::new(settings(), "g");
        let mut windows = Windows::new([("p.created".to_owned(), base.clone())], Duration::from_secs(10), Duration::from_secs(3600), now);
        windows.owned(&["p.created".to_owned()].into_iter().collect(), now);
        now += time::Duration::seconds(10);
        let closed = windows.close(now);
        assert_eq!(closed.len(), 1);
        assert!(closed.iter().flat_map(|w| plain.evaluate(w, &base, now)).all(|a| a.metric != Metric::Volume));
    }
}
