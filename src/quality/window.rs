//! Tumbling quality windows per (product, contract, topic): volume, validity, violations by
//! keyword, duplicates, shadow versions' rejections, completeness, freshness quantiles,
//! accuracy, lineage coverage, and silence.
//! Windows are aligned to multiples of their size since the epoch, so every instance of the
//! group cuts the same windows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::contract::Contract;
use crate::quality::partial::count_shadows;
use crate::reconcile::{Decided, Outcome};
use crate::verdict::Evaluation;

/// At most this many ages are kept per window for quantiles (a uniform sample beyond).
const MAX_AGES: usize = 20_000;
/// At most this many sample record ids per window.
const MAX_SAMPLES: usize = 5;

/// Counts of one open window.
#[derive(Debug, Clone, Default)]
struct Open {
    volume: u64,
    invalid: u64,
    violations: BTreeMap<String, u64>,
    duplicates: u64,
    shadow_rejections: BTreeMap<String, u64>,
    present: u64,
    expected: u64,
    ages: Vec<f64>,
    seen_ages: u64,
    checked: u64,
    matched: u64,
    mismatched: u64,
    missing: u64,
    lineage: u64,
    invalid_samples: Vec<String>,
    accuracy_samples: Vec<String>,
    stale_samples: Vec<String>,
}

/// A closed window, as stored in `quality_metrics` and judged by the alert rules.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedWindow {
    /// Data product.
    pub product: String,
    /// Contract.
    pub contract: String,
    /// Contract version.
    pub contract_version: String,
    /// Topic.
    pub topic: String,
    /// Window start (inclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    /// Window end (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub window_end: OffsetDateTime,
    /// Records seen.
    pub volume: u64,
    /// Records rejected.
    pub invalid: u64,
    /// valid / volume.
    pub validity: Option<f64>,
    /// Violations by keyword.
    pub violations: BTreeMap<String, u64>,
    /// Records that repeat the `unique:` key of an earlier record within the horizon, as seen
    /// per source partition (dead-lettered or not).
    pub duplicates: u64,
    /// Records each shadow version would have rejected (none dead-lettered), one entry per
    /// shadow version that rejected any. A list, not a map keyed by version: a version such as
    /// `2.0.0` is no field name a document store takes as it is.
    pub shadow_rejections: Vec<ShadowRejections>,
    /// Required fields present / applicable.
    pub completeness: Option<f64>,
    /// Required fields present.
    pub required_present: u64,
    /// Required fields applicable.
    pub required_expected: u64,
    /// Median event age, seconds.
    pub freshness_p50: Option<f64>,
    /// 99th percentile event age, seconds.
    pub freshness_p99: Option<f64>,
    /// Oldest event, seconds.
    pub freshness_max: Option<f64>,
    /// Claims decided in this window.
    pub accuracy_checked: u64,
    /// Claims that matched.
    pub accuracy_matched: u64,
    /// Claims whose amount or currency differ.
    pub accuracy_mismatched: u64,
    /// Claims still absent after the grace period.
    pub accuracy_missing: u64,
    /// matched / checked.
    pub accuracy: Option<f64>,
    /// Records with a lineage document / records processed.
    pub lineage_coverage: Option<f64>,
    /// Seconds since the topic's last event, when that exceeds the silence threshold.
    pub silent_seconds: Option<f64>,
    /// A few invalid record ids.
    pub invalid_samples: Vec<String>,
    /// A few mismatched or missing record ids.
    pub accuracy_samples: Vec<String>,
    /// A few record ids older than the freshness SLA.
    pub stale_samples: Vec<String>,
    /// Group-wide windows: records that reached the group after their own window had closed
    /// (counted here, in the next window to close, rather than lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late: Option<u64>,
    /// Scheduled scans: the bound table the window's rows were read from (`mysql:payments`,
    /// also in `topic`); absent for a topic's windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// How many records of a window one shadow version would have rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowRejections {
    /// The shadow version.
    pub version: String,
    /// Records it would have rejected.
    pub rejected: u64,
}

/// The per-version counts as a window document lists them, in version order.
pub(crate) fn shadow_list(counts: BTreeMap<String, u64>) -> Vec<ShadowRejections> {
    counts.into_iter().map(|(version, rejected)| ShadowRejections { version, rejected }).collect()
}

impl ClosedWindow {
    /// Deterministic id: the same window of the same topic (by the same instance, for windows
    /// of one instance; group-wide windows have no instance).
    pub fn id(&self, instance: Option<&str>) -> String {
        let base = format!("{}:{}:{}:{}", self.product, self.contract, self.topic, self.window_start.unix_timestamp());
        match instance {
            Some(i) => format!("{base}:{i}"),
            None => base,
        }
    }
}

/// Every binding's open window.
#[derive(Debug)]
pub struct Windows {
    size: Duration,
    silence_after: Duration,
    start: OffsetDateTime,
    bindings: BTreeMap<String, Arc<Contract>>,
    open: HashMap<String, Open>,
    /// Last event per topic; before the first one, the time the topic was first owned.
    last_event: HashMap<String, OffsetDateTime>,
    /// Cheap pseudo-random state for the age reservoir.
    rng: u64,
    /// Whether lineage documents are written, so coverage is measured.
    track_lineage: bool,
}

fn align(t: OffsetDateTime, size: Duration) -> OffsetDateTime {
    let size_ns = size.as_nanos().max(1) as i128;
    let ns = t.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(ns - ns.rem_euclid(size_ns)).unwrap_or(t)
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(idx).copied()
}

fn push_sample(v: &mut Vec<String>, id: Option<&str>) {
    if let Some(id) = id
        && v.len() < MAX_SAMPLES
        && !v.iter().any(|x| x == id)
    {
        v.push(id.to_owned());
    }
}

impl Windows {
    /// Windows of `size` over `bindings` (topic → contract), starting at `now`.
    pub fn new(
        bindings: impl IntoIterator<Item = (String, Arc<Contract>)>,
        size: Duration,
        silence_after: Duration,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            size,
            silence_after,
            start: align(now, size),
            bindings: bindings.into_iter().collect(),
            open: HashMap::new(),
            last_event: HashMap::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
            track_lineage: false,
        }
    }

    /// Replaces the contracts (a new catalog revision): open windows close with the new ones.
    pub fn follow(&mut self, bindings: impl IntoIterator<Item = (String, Arc<Contract>)>) {
        self.bindings = bindings.into_iter().collect();
    }

    /// Measures lineage coverage (when lineage documents are written).
    pub fn with_lineage(mut self, track: bool) -> Self {
        self.track_lineage = track;
        self
    }

    /// Counts one evaluated record of `topic`.
    pub fn observe(&mut self, topic: &str, eval: &Evaluation, now: OffsetDateTime) {
        self.observe_run(topic, std::iter::once(eval), now);
    }

    /// Counts evaluated records of one topic, looking the topic up once for all of them.
    pub fn observe_run<'e>(&mut self, topic: &str, evals: impl IntoIterator<Item = &'e Evaluation>, now: OffsetDateTime) {
        let sla = self.bindings.get(topic).map(|c| c.quality.freshness.0);
        // No String per record: the topic's entries exist after its first record.
        match self.last_event.get_mut(topic) {
            Some(t) => *t = now,
            None => {
                let _ = self.last_event.insert(topic.to_owned(), now);
            }
        }
        if !self.open.contains_key(topic) {
            let _ = self.open.insert(topic.to_owned(), Default::default());
        }
        let rng = &mut self.rng;
        let Some(w) = self.open.get_mut(topic) else { return };
        for eval in evals {
            w.volume += 1;
            w.present += u64::from(eval.completeness.present);
            w.expected += u64::from(eval.completeness.applicable);
            if let Some(r) = &eval.rejection {
                w.invalid += 1;
                let mut seen: Vec<&str> = Vec::new();
                for v in &r.violations {
                    if !seen.contains(&v.keyword.as_str()) {
                        seen.push(&v.keyword);
                        *w.violations.entry(v.keyword.clone()).or_default() += 1;
                    }
                }
                push_sample(&mut w.invalid_samples, eval.record_id.as_deref());
            }
            w.duplicates += u64::from(eval.duplicate);
            count_shadows(&mut w.shadow_rejections, eval);
            if let Some(age) = eval.freshness {
                if sla.is_some_and(|s| age > s) {
                    push_sample(&mut w.stale_samples, eval.record_id.as_deref());
                }
                let age = age.as_secs_f64();
                w.seen_ages += 1;
                if w.ages.len() < MAX_AGES {
                    w.ages.push(age);
                } else {
                    // Reservoir sampling keeps a uniform sample of every age seen.
                    *rng ^= *rng << 13;
                    *rng ^= *rng >> 7;
                    *rng ^= *rng << 17;
                    let j = (*rng % w.seen_ages) as usize;
                    if j < MAX_AGES {
                        w.ages[j] = age;
                    }
                }
            }
        }
    }

    /// Counts records of `topic` whose lineage documents were written.
    pub fn lineage_written(&mut self, topic: &str, n: u64) {
        self.open.entry(topic.to_owned()).or_default().lineage += n;
    }

    /// Counts a decided reconciliation claim in the window where it was decided.
    pub fn accuracy(&mut self, d: &Decided) {
        let w = self.open.entry(d.claim.topic.clone()).or_default();
        w.checked += 1;
        match d.outcome {
            Outcome::Matched => w.matched += 1,
            Outcome::Mismatched { .. } => {
                w.mismatched += 1;
                push_sample(&mut w.accuracy_samples, Some(&d.claim.key));
            }
            Outcome::Missing => {
                w.missing += 1;
                push_sample(&mut w.accuracy_samples, Some(&d.claim.key));
            }
        }
    }

    /// Whether the current window has ended at `now`.
    pub fn due(&self, now: OffsetDateTime) -> bool {
        now >= self.start + self.size
    }

    /// Marks topics this instance now owns partitions of, so silence is measured from now for
    /// a topic never seen.
    pub fn owned(&mut self, topics: &HashSet<String>, now: OffsetDateTime) {
        for t in topics {
            let _ = self.last_event.entry(t.clone()).or_insert(now);
        }
        self.last_event.retain(|t, _| topics.contains(t));
    }

    /// Closes the current window of every owned binding and opens the next one.
    pub fn close(&mut self, now: OffsetDateTime) -> Vec<ClosedWindow> {
        let start = self.start;
        let end = start + self.size;
        let mut closed = Vec::new();
        for (topic, contract) in &self.bindings {
            let w = self.open.remove(topic).unwrap_or_default();
            let Some(last) = self.last_event.get(topic) else { continue };
            let mut ages = w.ages;
            ages.sort_by(f64::total_cmp);
            let silence = now - *last;
            let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
            closed.push(ClosedWindow {
                product: contract.product.clone(),
                contract: contract.name.clone(),
                contract_version: contract.version.clone(),
                topic: topic.clone(),
                window_start: start,
                window_end: end,
                volume: w.volume,
                invalid: w.invalid,
                validity: ratio(w.volume - w.invalid, w.volume),
                violations: w.violations,
                duplicates: w.duplicates,
                shadow_rejections: shadow_list(w.shadow_rejections),
                completeness: ratio(w.present, w.expected),
                required_present: w.present,
                required_expected: w.expected,
                freshness_p50: quantile(&ages, 0.5),
                freshness_p99: quantile(&ages, 0.99),
                freshness_max: ages.last().copied(),
                accuracy_checked: w.checked,
                accuracy_matched: w.matched,
                accuracy_mismatched: w.mismatched,
                accuracy_missing: w.missing,
                accuracy: ratio(w.matched, w.checked),
                lineage_coverage: if self.track_lineage { ratio(w.lineage.min(w.volume), w.volume) } else { None },
                silent_seconds: (silence.unsigned_abs() > self.silence_after && silence.is_positive()).then(|| silence.as_seconds_f64()),
                invalid_samples: w.invalid_samples,
                accuracy_samples: w.accuracy_samples,
                stale_samples: w.stale_samples,
                late: None,
                source: None,
            });
        }
        self.start = align(now, self.size).max(end);
        closed
    }
}
