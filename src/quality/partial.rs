//! Partial windows: what one instance observed of one window of one (product, contract, topic),
//! over one source partition's offset range, as sent to `datamesh.quality.partials`. Merging
//! partials is exact for every count; freshness is a DDSketch whose quantiles are within
//! [`RELATIVE_ERROR`] of the exact quantile of the ages merged into it, whatever the split.
//!
//! Records are placed in the window of their Kafka timestamp (event time), not of the moment an
//! instance processed them: a record read again after a crash or a rebalance lands in the same
//! window, where the aggregator recognises its offsets as a replay.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

use crate::reconcile::{Decided, Outcome};
use crate::verdict::Evaluation;

/// The freshness sketch's relative error: a merged p99 is within 1% of the exact p99.
pub const RELATIVE_ERROR: f64 = 0.01;
/// At most this many sample record ids per partial (and per merged window).
pub const MAX_SAMPLES: usize = 5;

/// A freshness sketch (ages in seconds): a DDSketch with [`RELATIVE_ERROR`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sketch(DDSketch);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch").field("count", &self.0.count()).finish_non_exhaustive()
    }
}

impl Sketch {
    /// Adds an age.
    pub fn add(&mut self, v: f64) {
        self.0.add(v);
    }

    /// The quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    /// The largest age.
    pub fn max(&self) -> Option<f64> {
        self.0.max()
    }
}

/// An empty freshness sketch (ages in seconds, 1 µs and up; 2,048 bins cover 1 µs to years).
pub fn sketch() -> Sketch {
    Sketch(DDSketch::new(Config::new(RELATIVE_ERROR, 2048, 1e-6)))
}

/// Exactly mergeable counts of a window (or of part of one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Records seen.
    pub volume: u64,
    /// Records rejected.
    pub invalid: u64,
    /// Rejected records by violated keyword (a record counts once per keyword).
    pub violations: BTreeMap<String, u64>,
    /// Records that repeat the `unique:` key of an earlier record within the horizon (counted
    /// whether or not they are dead-lettered). Absent from partials written before it existed.
    #[serde(default)]
    pub duplicates: u64,
    /// Records each shadow version would have rejected, by version (never dead-lettered).
    #[serde(default)]
    pub shadow_rejections: BTreeMap<String, u64>,
    /// Required fields present.
    pub present: u64,
    /// Required fields applicable.
    pub expected: u64,
    /// Reconciliation claims decided.
    pub checked: u64,
    /// Claims that matched.
    pub matched: u64,
    /// Claims whose amount or currency differ.
    pub mismatched: u64,
    /// Claims absent after the grace period.
    pub missing: u64,
    /// Records whose lineage documents were written.
    pub lineage: u64,
    /// Event ages in seconds.
    pub freshness: Option<Sketch>,
    /// A few invalid record ids.
    pub invalid_samples: Vec<String>,
    /// A few mismatched or missing record ids.
    pub accuracy_samples: Vec<String>,
    /// A few record ids older than the freshness SLA.
    pub stale_samples: Vec<String>,
}

fn push_sample(v: &mut Vec<String>, id: Option<&str>) {
    if let Some(id) = id
        && v.len() < MAX_SAMPLES
        && !v.iter().any(|x| x == id)
    {
        v.push(id.to_owned());
    }
}

fn merge_samples(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        push_sample(into, Some(s));
    }
}

/// Counts the shadow versions that would have rejected the record of `eval`, by version.
pub(crate) fn count_shadows(into: &mut BTreeMap<String, u64>, eval: &Evaluation) {
    for s in eval.shadows.iter().filter(|s| s.rejection.is_some()) {
        // No String per record once the version has an entry.
        match into.get_mut(&s.version) {
            Some(n) => *n += 1,
            None => {
                let _ = into.insert(s.version.clone(), 1);
            }
        }
    }
}

impl Counts {
    /// Counts one evaluated record; `sla` is the contract's freshness SLA in seconds.
    pub fn observe(&mut self, eval: &Evaluation, sla: Option<f64>, lineage: bool) {
        self.volume += 1;
        self.lineage += u64::from(lineage);
        self.present += u64::from(eval.completeness.present);
        self.expected += u64::from(eval.completeness.applicable);
        if let Some(r) = &eval.rejection {
            self.invalid += 1;
            let mut seen: Vec<&str> = Vec::new();
            for v in &r.violations {
                if !seen.contains(&v.keyword.as_str()) {
                    seen.push(&v.keyword);
                    *self.violations.entry(v.keyword.clone()).or_default() += 1;
                }
            }
            push_sample(&mut self.invalid_samples, eval.record_id.as_deref());
        }
        self.duplicates += u64::from(eval.duplicate);
        count_shadows(&mut self.shadow_rejections, eval);
        if let Some(age) = eval.freshness {
            let age = age.as_secs_f64();
            if sla.is_some_and(|s| age > s) {
                push_sample(&mut self.stale_samples, eval.record_id.as_deref());
            }
            self.freshness.get_or_insert_with(sketch).add(age);
        }
    }

    /// Counts a decided reconciliation claim.
    pub fn decided(&mut self, d: &Decided) {
        self.checked += 1;
        match d.outcome {
            Outcome::Matched => self.matched += 1,
            Outcome::Mismatched { .. } => {
                self.mismatched += 1;
                push_sample(&mut self.accuracy_samples, Some(&d.claim.key));
            }
            Outcome::Missing => {
                self.missing += 1;
                push_sample(&mut self.accuracy_samples, Some(&d.claim.key));
            }
        }
    }

    /// Adds `o` to these counts: exact for every count, the sketch's error for quantiles.
    pub fn merge(&mut self, o: &Counts) {
        self.volume += o.volume;
        self.invalid += o.invalid;
        for (k, n) in &o.violations {
            *self.violations.entry(k.clone()).or_default() += n;
        }
        self.duplicates += o.duplicates;
        for (v, n) in &o.shadow_rejections {
            *self.shadow_rejections.entry(v.clone()).or_default() += n;
        }
        self.present += o.present;
        self.expected += o.expected;
        self.checked += o.checked;
        self.matched += o.matched;
        self.mismatched += o.mismatched;
        self.missing += o.missing;
        self.lineage += o.lineage;
        if let Some(s) = &o.freshness {
            let mine = self.freshness.get_or_insert_with(sketch);
            // Both sketches come from `sketch()`: the same configuration, so merging cannot fail.
            if mine.0.merge(&s.0).is_err() {
                tracing::warn!("freshness sketches with different configurations; one partial's ages are not merged");
            }
        }
        merge_samples(&mut self.invalid_samples, &o.invalid_samples);
        merge_samples(&mut self.accuracy_samples, &o.accuracy_samples);
        merge_samples(&mut self.stale_samples, &o.stale_samples);
    }

    /// The freshness quantile `q` in seconds.
    pub fn freshness_quantile(&self, q: f64) -> Option<f64> {
        self.freshness.as_ref().and_then(|s| s.quantile(q))
    }
}

/// What one instance observed of one window of one binding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    /// Data product.
    pub product: String,
    /// Contract.
    pub contract: String,
    /// Contract version.
    pub contract_version: String,
    /// Source topic.
    pub topic: String,
    /// Window start, ms since the epoch (aligned to the window size).
    pub window_start_ms: i64,
    /// Window size, ms.
    pub window_ms: u64,
    /// The source partition whose offsets `first_offset..=last_offset` this partial covers;
    /// `None` for reconciliation verdicts, which are counted in the window they were decided in.
    pub partition: Option<i32>,
    /// First source offset covered.
    pub first_offset: i64,
    /// Last source offset covered.
    pub last_offset: i64,
    /// The newest record timestamp of the partition in this partial, ms (its progress).
    pub progress_ms: i64,
    /// The instance that observed it (diagnostics only: never part of a window's id).
    pub instance: String,
    /// The counts.
    pub counts: Counts,
}

impl Partial {
    /// The key partials of one binding share: product/contract/topic.
    pub fn key(&self) -> String {
        binding_key(&self.product, &self.contract, &self.topic)
    }
}

/// The partials topic's key of a binding.
pub fn binding_key(product: &str, contract: &str, topic: &str) -> String {
    format!("{product}/{contract}/{topic}")
}

/// The partition of the partials topic a binding's partials go to (FNV-1a of its key): every
/// instance sends a binding's partials to the same partition, whose owner merges them.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1).unsigned_abs())) as i32
}

/// Aligns `ms` down to a multiple of `size_ms`.
pub fn window_of(ms: i64, size_ms: u64) -> i64 {
    let size = i64::try_from(size_ms.max(1)).unwrap_or(i64::MAX);
    ms - ms.rem_euclid(size)
}

/// The binding a record or claim belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// Data product.
    pub product: &'a str,
    /// Contract.
    pub contract: &'a str,
    /// Contract version.
    pub version: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Freshness SLA in seconds.
    pub sla: f64,
}

/// Builds a batch's partials: one per (topic, window, partition), covering the offsets of that
/// partition's records in that window.
#[derive(Debug)]
pub struct Builder {
    window_ms: u64,
    instance: String,
    partials: Vec<Partial>,
    index: HashMap<(String, i64, Option<i32>), usize>,
    last: Option<(usize, i64, Option<i32>)>,
}

impl Builder {
    /// An empty builder for windows of `window_ms`.
    pub fn new(window_ms: u64, instance: &str) -> Self {
        Self { window_ms, instance: instance.to_owned(), partials: Vec::new(), index: HashMap::new(), last: None }
    }

    fn entry(&mut self, b: Binding<'_>, window: i64, partition: Option<i32>, offset: i64) -> &mut Partial {
        // Batches hold runs of one partition: most records hit the partial of the one before.
        if let Some((i, w, p)) = self.last
            && w == window
            && p == partition
            && self.partials.get(i).is_some_and(|x| x.topic == b.topic)
        {
            return &mut self.partials[i];
        }
        let i = match self.index.get(&(b.topic.to_owned(), window, partition)) {
            Some(i) => *i,
            None => {
                self.partials.push(Partial {
                    product: b.product.to_owned(),
                    contract: b.contract.to_owned(),
                    contract_version: b.version.to_owned(),
                    topic: b.topic.to_owned(),
                    window_start_ms: window,
                    window_ms: self.window_ms,
                    partition,
                    first_offset: offset,
                    last_offset: offset,
                    progress_ms: i64::MIN,
                    instance: self.instance.clone(),
                    counts: Counts::default(),
                });
                let i = self.partials.len() - 1;
                let _ = self.index.insert((b.topic.to_owned(), window, partition), i);
                i
            }
        };
        self.last = Some((i, window, partition));
        &mut self.partials[i]
    }

    /// Counts one record of `partition` at `offset` with Kafka timestamp `timestamp_ms`.
    pub fn record(&mut self, b: Binding<'_>, partition: i32, offset: i64, timestamp_ms: i64, eval: &Evaluation, lineage: bool) {
        let window = window_of(timestamp_ms, self.window_ms);
        let p = self.entry(b, window, Some(partition), offset);
        p.first_offset = p.first_offset.min(offset);
        p.last_offset = p.last_offset.max(offset);
        p.progress_ms = p.progress_ms.max(timestamp_ms);
        p.counts.observe(eval, Some(b.sla), lineage);
    }

    /// Counts a reconciliation verdict decided at `now_ms`.
    pub fn decided(&mut self, b: Binding<'_>, now_ms: i64, d: &Decided) {
        let window = window_of(now_ms, self.window_ms);
        let p = self.entry(b, window, None, -1);
        p.progress_ms = p.progress_ms.max(now_ms);
        p.counts.decided(d);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    /// The partials, ordered by partition and first offset (the order the aggregator must see a
    /// replay in), and an empty builder.
    pub fn take(&mut self) -> Vec<Partial> {
        self.index.clear();
        self.last = None;
        let mut out = std::mem::take(&mut self.partials);
        out.sort_by_key(|p| (p.topic.clone(), p.partition, p.first_offset));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_counts_equal_the_whole_and_the_sketch_keeps_its_error() {
        let mut whole = Counts::default();
        let mut parts = vec![Counts::default(), Counts::default(), Counts::default()];
        let mut ages = Vec::new();
        for i in 0..30_000u32 {
            // A long-tailed distribution: most ages small, a few large.
            let age = 0.001 * f64::from(i % 1000 + 1) * if i % 97 == 0 { 50.0 } else { 1.0 };
            ages.push(age);
            for c in [&mut whole, &mut parts[(i % 3) as usize]] {
                c.volume += 1;
                c.freshness.get_or_insert_with(sketch).add(age);
            }
        }
        let mut merged = Counts::default();
        for p in &parts {
            // Through JSON, as on the partials topic.
            let back: Counts = serde_json::from_slice(&serde_json::to_vec(p).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
            merged.merge(&back);
        }
        assert_eq!(merged.volume, 30_000);
        ages.sort_by(f64::total_cmp);
        let exact = ages[((ages.len() - 1) as f64 * 0.99) as usize];
        let p99 = merged.freshness_quantile(0.99).unwrap_or_default();
        assert!((p99 - exact).abs() <= exact * RELATIVE_ERROR + 1e-9, "p99 {p99} vs exact {exact}");
        assert_eq!(merged.freshness_quantile(0.99), whole.freshness_quantile(0.99));
    }

    #[test]
    fn duplicates_and_shadow_rejections_merge_exactly_and_old_partials_still_read() {
        use crate::verdict::{Rejection, ShadowVerdict, Stage};
        let shadow = |version: &str, rejects: bool| ShadowVerdict {
            version: version.into(),
            rejection: rejects.then(|| Rejection { stage: Stage::Validate, class: "contract_violation", violations: Vec::new() }),
            warnings: Vec::new(),
        };
        let eval = |duplicate: bool, shadows: Vec<ShadowVerdict>| Evaluation {
            rejection: None,
            record: None,
            record_id: None,
            completeness: crate::measure::Completeness { present: 0, applicable: 0 },
            event_time: None,
            freshness: None,
            warnings: Vec::new(),
            shadows,
            duplicate,
        };
        let mut parts = [Counts::default(), Counts::default()];
        parts[0].observe(&eval(true, vec![shadow("2", true), shadow("3", false)]), None, false);
        parts[0].observe(&eval(false, vec![shadow("2", true), shadow("3", true)]), None, false);
        parts[1].observe(&eval(true, vec![shadow("2", false), shadow("3", true)]), None, false);
        parts[1].observe(&eval(false, Vec::new()), None, false);
        let mut merged = Counts::default();
        for p in &parts {
            let back: Counts = serde_json::from_slice(&serde_json::to_vec(p).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
            merged.merge(&back);
        }
        assert_eq!((merged.volume, merged.duplicates), (4, 2));
        assert_eq!(merged.shadow_rejections, BTreeMap::from([("2".to_owned(), 2), ("3".to_owned(), 2)]));
        // A partial written before these counts existed.
        let old: Counts = serde_json::from_str(r#"{"volume":3,"invalid":1,"violations":{"type":1},"present":0,"expected":0,"checked":0,"matched":0,"mismatched":0,"missing":0,"lineage":0,"freshness":null,"invalid_samples":[],"accuracy_samples":[],"stale_samples":[]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((old.volume, old.duplicates, old.shadow_rejections.len()), (3, 0, 0));
    }

    #[test]
    fn partitions_of_the_partials_topic_are_stable() {
        assert_eq!(
            partition_of("payments-data-product/payment-event-schema/payments.created", 3),
            partition_of("payments-data-product/payment-event-schema/payments.created", 3)
        );
        assert!((0..3).contains(&partition_of("x", 3)));
        assert_eq!(window_of(12_345, 10_000), 10_000);
        assert_eq!(window_of(-1, 10_000), -10_000);
    }
}
