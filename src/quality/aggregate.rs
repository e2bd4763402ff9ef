//! Group-wide windows: the partials of every instance merged per (product, contract, topic)
//! by the one instance that owns the binding's partition of the partials topic.
//!
//! - **Replays.** At-least-once, a batch read again after a crash or rebalance sends partials
//!   for offsets already counted. Commits happen at batch ends, and a batch's partials are sent
//!   in offset order, so a replay starts at a partial boundary: a partial whose first offset is
//!   at or below what was counted for its partition replaces the open windows' entries from that
//!   offset on; one whose offsets were all counted in a closed window is dropped. Exactly-once,
//!   partials of aborted batches are never read (read_committed) and nothing is replayed.
//! - **Watermark.** A window closes when every partition of its topic has progressed past its
//!   end (the newest record timestamp in the partials), or `lateness` after its end. A partial of
//!   a closed window (that is not a replay) is counted as `late` in the next window to close.
//! - **Only what cannot be replayed closes.** At-least-once, an instance killed after sending a
//!   batch's partials but before its offsets were committed leaves offsets that the next reader
//!   of the partition reads again, in batches cut differently: a replayed partial can straddle
//!   what a closed window counted, and its counts cannot be split. So a window closes only when
//!   the source group has committed past every offset it counted ([`Committed`]); a replay then
//!   starts after everything closed, and late partials wait for their commit the same way
//!   before they are counted. Exactly-once needs no wait: a partial is read only once its
//!   transaction, which commits its offsets, has committed.
//! - **Takeover.** A new owner holds a binding's windows ([`Aggregator::hold`]) until it has read
//!   the partials topic up to where it stood at the takeover, so the backlog lands in its
//!   windows rather than as `late` in a window closed empty by the lateness bound.
//! - **Silence** is judged on the newest record of any partition of the topic, whoever read it
//!   and whichever owner counted it (it is part of [`Progress`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::partial::{Counts, Partial, window_of};
use super::window::ClosedWindow;
use crate::contract::Contract;

/// One partition's offsets counted in an open window.
#[derive(Debug, Clone)]
struct Entry {
    partition: i32,
    first: i64,
    last: i64,
    counts: Counts,
    /// The partials-topic offset it came in, so the aggregator never commits past it.
    at: i64,
}

#[derive(Debug, Default)]
struct Open {
    entries: Vec<Entry>,
    /// Reconciliation verdicts and scanned rows (not tied to offsets).
    decided: Counts,
    decided_at: Option<i64>,
    /// A bound source's scans counted here: the mark after the last one.
    scan_mark: Option<ScanMark>,
}

/// Where a scheduled scan of a bound table stopped: the last row's event time (as the server
/// printed it) and key. Kept with the last closed window, so a new owner scans again exactly
/// the rows whose counts were in the windows lost with the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanMark {
    /// Event time of the last row counted.
    pub at: String,
    /// Its key.
    pub key: String,
}

/// What survives the owner: the last window closed, the offsets counted in closed windows and
/// the topic's newest record (so a new owner judges silence from it, not from its own start).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Start of the last window closed, ms.
    pub last_closed_ms: Option<i64>,
    /// Per source partition, the last offset counted in a closed window.
    pub covered: BTreeMap<i32, i64>,
    /// The newest record timestamp of any partition of the topic, ms, when the last window
    /// closed (absent in states written before it was kept).
    #[serde(default)]
    pub newest_ms: Option<i64>,
    /// A bound source: where the scans counted in closed windows stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_mark: Option<ScanMark>,
}

#[derive(Debug)]
struct Binding {
    contract: Arc<Contract>,
    topic: String,
    partitions: usize,
    progress: Progress,
    open: BTreeMap<i64, Open>,
    /// Per partition, the newest record timestamp seen.
    newest: HashMap<i32, i64>,
    /// Records of closed windows that arrived late, to report with the next window.
    late: u64,
    /// Reconciliation verdicts for closed windows, counted in the next window to close.
    late_decided: Counts,
    /// Late partials waiting for their offsets to be committed (a replay may still replace them).
    late_entries: Vec<Entry>,
    /// Since when this instance owns the binding (silence before the first event ever seen by
    /// any owner).
    owned_since_ms: i64,
    /// Closing held: the owner has not yet read the partials that were there at its takeover.
    held: bool,
    /// The window whose wait for commits was last logged.
    warned_waiting: Option<i64>,
    /// A bound table or collection (scheduled scans), not a topic: `topic` is its label.
    at_rest: bool,
}

/// The source consumer group's committed offsets (next offset to read per topic and partition):
/// what can never be read again. A window closes only once every offset it counted is below.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    everything: bool,
    next: HashMap<(String, i32), i64>,
}

impl Committed {
    /// Everything read is final (exactly-once: a partial is read only after the transaction
    /// that committed its offsets).
    pub fn everything() -> Self {
        Self { everything: true, next: HashMap::new() }
    }

    /// The group's committed offsets.
    pub fn offsets(next: HashMap<(String, i32), i64>) -> Self {
        Self { everything: false, next }
    }

    /// The committed offset of a partition, if known.
    pub fn next_of(&self, topic: &str, partition: i32) -> Option<i64> {
        self.next.get(&(topic.to_owned(), partition)).copied()
    }

    /// Whether offsets up to `last` of a partition are committed.
    pub fn covers(&self, topic: &str, partition: i32, last: i64) -> bool {
        self.everything || self.next.get(&(topic.to_owned(), partition)).is_some_and(|n| *n > last)
    }
}

/// What [`Aggregator::add`] did with a partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Counted in an open window.
    Counted,
    /// Replaced entries of a replayed stretch of offsets.
    Replaced,
    /// Every offset was already counted in a closed window.
    Replay,
    /// Its window had closed: counted as late.
    Late,
    /// Not a binding this aggregator knows.
    Unknown,
}

/// Settings of the aggregation.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Window size.
    pub window: Duration,
    /// How long after its end a window waits for partitions that have not progressed past it.
    pub lateness: Duration,
    /// No event for this long is silence.
    pub silence_after: Duration,
}

/// The group-wide windows of the bindings one instance owns.
#[derive(Debug)]
pub struct Aggregator {
    timing: Timing,
    bindings: BTreeMap<String, Binding>,
    track_lineage: bool,
}

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Aggregator {
    /// An aggregator owning nothing yet.
    pub fn new(timing: Timing, track_lineage: bool) -> Self {
        Self { timing, bindings: BTreeMap::new(), track_lineage }
    }

    fn size_ms(&self) -> u64 {
        u64::try_from(self.timing.window.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Takes ownership of a binding (its key is `product/contract/topic`), with the progress
    /// its previous owner left and the topic's partition count.
    pub fn own(&mut self, key: &str, contract: Arc<Contract>, topic: &str, partitions: usize, progress: Progress, now: OffsetDateTime) {
        let _ = self.bindings.insert(
            key.to_owned(),
            Binding {
                contract,
                topic: topic.to_owned(),
                partitions,
                progress,
                open: BTreeMap::new(),
                newest: HashMap::new(),
                late: 0,
                late_decided: Counts::default(),
                late_entries: Vec::new(),
                owned_since_ms: crate::measure::unix_ms(now),
                held: false,
                warned_waiting: None,
                at_rest: false,
            },
        );
    }

    /// Takes ownership of a bound source's windows (`label`: `mysql:table`): they close by
    /// the lateness bound (no partitions) and count what [`add_scan`](Self::add_scan) brings.
    pub fn own_source(&mut self, key: &str, contract: Arc<Contract>, label: &str, progress: Progress, now: OffsetDateTime) {
        self.own(key, contract, label, 0, progress, now);
        if let Some(b) = self.bindings.get_mut(key) {
            b.at_rest = true;
        }
    }

    /// Where the next scan of an owned source starts: the mark of its last scan counted in
    /// an open window, else of the last closed window. `None`: not owned here.
    pub fn scan_mark(&self, key: &str) -> Option<Option<ScanMark>> {
        let b = self.bindings.get(key).filter(|b| b.at_rest)?;
        Some(b.open.values().rev().find_map(|w| w.scan_mark.clone()).or_else(|| b.progress.scan_mark.clone()))
    }

    /// Counts a scan of an owned source in the window open at `now`: its rows, the source's
    /// newest event time (silence is judged on it) and the mark it stopped at.
    pub fn add_scan(&mut self, key: &str, now: OffsetDateTime, counts: &Counts, newest_ms: Option<i64>, mark: Option<ScanMark>) -> bool {
        let size = self.size_ms();
        let Some(b) = self.bindings.get_mut(key).filter(|b| b.at_rest) else { return false };
        let mut window = window_of(crate::measure::unix_ms(now), size);
        if let Some(c) = b.progress.last_closed_ms
            && window <= c
        {
            window = c.saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let w = b.open.entry(window).or_default();
        w.decided.merge(counts);
        if mark.is_some() {
            w.scan_mark = mark;
        }
        if let Some(t) = newest_ms {
            let newest = b.newest.entry(-1).or_insert(t);
            *newest = (*newest).max(t);
        }
        true
    }

    /// Follows a new catalog revision: the binding's windows close with `contract` from now on.
    pub fn set_contract(&mut self, key: &str, contract: Arc<Contract>) {
        if let Some(b) = self.bindings.get_mut(key) {
            b.contract = contract;
        }
    }

    /// Gives up a binding (its partition of the partials topic went to another instance).
    pub fn disown(&mut self, key: &str) {
        let _ = self.bindings.remove(key);
    }

    /// Holds a binding's windows open whatever the time (the owner is still reading the
    /// partials that were there when it took over).
    pub fn hold(&mut self, key: &str) {
        if let Some(b) = self.bindings.get_mut(key) {
            b.held = true;
        }
    }

    /// Lets a held binding's windows close again.
    pub fn release(&mut self, key: &str) {
        if let Some(b) = self.bindings.get_mut(key) {
            b.held = false;
        }
    }

    /// Whether any window (or late partial) waits for offsets to be committed: the owner then
    /// keeps the source group's committed offsets fresh.
    pub fn has_open(&self) -> bool {
        self.bindings.values().any(|b| !b.open.is_empty() || !b.late_entries.is_empty())
    }

    /// The source topics of the bindings owned.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        let mut topics: Vec<&str> = self.bindings.values().map(|b| b.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        topics.into_iter()
    }

    /// Whether this aggregator owns `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.bindings.contains_key(key)
    }

    /// Updates a topic's partition count (it grew).
    pub fn set_partitions(&mut self, topic: &str, partitions: usize) {
        for b in self.bindings.values_mut().filter(|b| b.topic == topic) {
            b.partitions = partitions;
        }
    }

    /// Merges one partial, read at offset `at` of the partials topic.
    pub fn add(&mut self, p: Partial, at: i64) -> Added {
        let size = self.size_ms();
        let Some(b) = self.bindings.get_mut(&p.key()) else { return Added::Unknown };
        let window = window_of(p.window_start_ms, size);
        let closed = b.progress.last_closed_ms.is_some_and(|c| window <= c);
        let Some(partition) = p.partition else {
            // A reconciliation verdict, counted in the window it was decided in.
            if closed {
                // Decided after its window closed: counted in the next window to close (a
                // verdict is not a record, so it never goes into `late`).
                b.late_decided.merge(&p.counts);
                return Added::Late;
            }
            let w = b.open.entry(window).or_default();
            w.decided.merge(&p.counts);
            w.decided_at = Some(w.decided_at.map_or(at, |a| a.min(at)));
            return Added::Counted;
        };
        if p.counts.volume > 0 {
            let newest = b.newest.entry(partition).or_insert(i64::MIN);
            *newest = (*newest).max(p.progress_ms);
        }
        if b.progress.covered.get(&partition).is_some_and(|c| p.last_offset <= *c) {
            return Added::Replay;
        }
        if closed {
            // Counted with the next window to close once its offsets are committed; until then
            // a replay from `first_offset` replaces it, like entries of an open window.
            b.late_entries.retain(|e| !(e.partition == partition && e.first >= p.first_offset));
            b.late_entries.push(Entry { partition, first: p.first_offset, last: p.last_offset, counts: p.counts, at });
            return Added::Late;
        }
        // A replay from `first_offset`: what was counted from there on is counted again now.
        let mut replaced = false;
        for w in b.open.values_mut() {
            let before = w.entries.len();
            w.entries.retain(|e| !(e.partition == partition && e.first >= p.first_offset));
            replaced |= w.entries.len() != before;
        }
        b.late_entries.retain(|e| !(e.partition == partition && e.first >= p.first_offset));
        let entry = Entry { partition, first: p.first_offset, last: p.last_offset, counts: p.counts, at };
        b.open.entry(window).or_default().entries.push(entry);
        if replaced { Added::Replaced } else { Added::Counted }
    }

    /// The lowest partials-topic offset still needed by an open window of the bindings in
    /// `keys`: the aggregator may commit up to it (a restart reads the open windows again).
    pub fn needed_from<'k>(&self, keys: impl IntoIterator<Item = &'k String>) -> Option<i64> {
        keys.into_iter()
            .filter_map(|k| self.bindings.get(k))
            .flat_map(|b| {
                b.open.values().flat_map(|w| w.entries.iter().map(|e| e.at).chain(w.decided_at)).chain(b.late_entries.iter().map(|e| e.at))
            })
            .min()
    }

    /// Closes every window that is due at `now`: past its end on every partition of its topic,
    /// or `lateness` past its end, and every offset it counted committed by the source group.
    /// Windows without any partial close too (silence is judged on them). Returns the closed
    /// windows with the binding key and its progress to keep.
    pub fn close_due(&mut self, now: OffsetDateTime, committed: &Committed) -> Vec<(String, ClosedWindow, Progress)> {
        let size = self.size_ms();
        let size_i = i64::try_from(size).unwrap_or(i64::MAX);
        let lateness = i64::try_from(self.timing.lateness.as_millis()).unwrap_or(i64::MAX);
        let silence_ms = i64::try_from(self.timing.silence_after.as_millis()).unwrap_or(i64::MAX);
        let now_ms = crate::measure::unix_ms(now);
        let mut out = Vec::new();
        for (key, b) in self.bindings.iter_mut().filter(|(_, b)| !b.held) {
            loop {
                let next = match (b.progress.last_closed_ms, b.open.keys().next()) {
                    (Some(c), _) => c + size_i,
                    (None, Some(first)) => *first,
                    (None, None) => window_of(b.owned_since_ms, size),
                };
                let end = next.saturating_add(size_i);
                if end > now_ms {
                    break;
                }
                let progressed = b.partitions > 0
                    && b.newest.len() >= b.partitions
                    && (0..b.partitions).all(|p| i32::try_from(p).ok().and_then(|p| b.newest.get(&p)).is_some_and(|t| *t >= end));
                if !progressed && now_ms < end.saturating_add(lateness) {
                    break;
                }
                let durable = |e: &Entry| committed.covers(&b.topic, e.partition, e.last);
                if let Some(e) = b.open.get(&next).and_then(|w| w.entries.iter().find(|e| !durable(e))) {
                    // Said once per window, when it waits past its lateness bound as long again.
                    if now_ms >= end.saturating_add(lateness.saturating_mul(2).max(30_000)) && b.warned_waiting != Some(next) {
                        b.warned_waiting = Some(next);
                        tracing::warn!(
                            topic = %b.topic,
                            partition = e.partition,
                            last_offset = e.last,
                            committed = ?committed.next_of(&b.topic, e.partition),
                            window_start_ms = next,
                            "a due window waits for the stream's group to commit offsets it counted"
                        );
                    }
                    break;
                }
                let w = b.open.remove(&next).unwrap_or_default();
                let mut counts = Counts::default();
                for e in &w.entries {
                    counts.merge(&e.counts);
                    let c = b.progress.covered.entry(e.partition).or_insert(e.last);
                    *c = (*c).max(e.last);
                }
                let (final_late, waiting): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut b.late_entries).into_iter().partition(durable);
                b.late_entries = waiting;
                for e in final_late {
                    b.late += e.counts.volume;
                    let c = b.progress.covered.entry(e.partition).or_insert(e.last);
                    *c = (*c).max(e.last);
                }
                counts.merge(&w.decided);
                counts.merge(&std::mem::take(&mut b.late_decided));
                if w.scan_mark.is_some() {
                    b.progress.scan_mark = w.scan_mark.clone();
                }
                b.progress.last_closed_ms = Some(next);
                // Silence runs from the topic's newest record, whoever read it and whichever
                // owner saw it: a new owner of a silent topic carries on with the silence (its
                // own start is no event; counting from it resolved the episode and fired a
                // second one). Only a topic no owner has seen a record of counts from now.
                let newest = b.newest.values().copied().max().max(b.progress.newest_ms);
                b.progress.newest_ms = newest;
                let silence = now_ms - newest.unwrap_or(b.owned_since_ms);
                let late = std::mem::take(&mut b.late);
                let mut closed =
                    closed_window(&b.contract, &b.topic, (at(next), at(end)), &counts, self.track_lineage && !b.at_rest, late, {
                        (silence > silence_ms).then(|| silence as f64 / 1000.0)
                    });
                if b.at_rest {
                    closed.source = Some(b.topic.clone());
                    closed.late = None;
                }
                out.push((key.clone(), closed, b.progress.clone()));
            }
        }
        out
    }
}

fn closed_window(
    c: &Contract,
    topic: &str,
    (start, end): (OffsetDateTime, OffsetDateTime),
    w: &Counts,
    track_lineage: bool,
    late: u64,
    silent_seconds: Option<f64>,
) -> ClosedWindow {
    let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    ClosedWindow {
        product: c.product.clone(),
        contract: c.name.clone(),
        contract_version: c.version.clone(),
        topic: topic.to_owned(),
        window_start: start,
        window_end: end,
        volume: w.volume,
        invalid: w.invalid,
        validity: ratio(w.volume - w.invalid.min(w.volume), w.volume),
        violations: w.violations.clone(),
        duplicates: w.duplicates,
        shadow_rejections: crate::quality::window::shadow_list(w.shadow_rejections.clone()),
        completeness: ratio(w.present, w.expected),
        required_present: w.present,
        required_expected: w.expected,
        freshness_p50: w.freshness_quantile(0.5),
        freshness_p99: w.freshness_quantile(0.99),
        freshness_max: w.freshness.as_ref().and_then(|s| s.max()),
        accuracy_checked: w.checked,
        accuracy_matched: w.matched,
        accuracy_mismatched: w.mismatched,
        accuracy_missing: w.missing,
        accuracy: ratio(w.matched, w.checked),
        lineage_coverage: if track_lineage { ratio(w.lineage.min(w.volume), w.volume) } else { None },
        silent_seconds,
        invalid_samples: w.invalid_samples.clone(),
        accuracy_samples: w.accuracy_samples.clone(),
        stale_samples: w.stale_samples.clone(),
        late: Some(late),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::{Catalog, Files};

    fn contract() -> Arc<Contract> {
        let catalog = Catalog::load(&Files::Embedded).unwrap_or_else(|e| panic!("{e}"));
        catalog.product("payments-data-product").and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("contract"))
    }

    fn partial(c: &Contract, window: i64, partition: i32, first: i64, last: i64, ts: i64) -> Partial {
        Partial {
            product: c.product.clone(),
            contract: c.name.clone(),
            contract_version: c.version.clone(),
            topic: "t".into(),
            window_start_ms: window,
            window_ms: 10_000,
            partition: Some(partition),
            first_offset: first,
            last_offset: last,
            progress_ms: ts,
            instance: "i".into(),
            counts: Counts { volume: u64::try_from(last - first + 1).unwrap_or_default(), ..Counts::default() },
        }
    }

    fn all() -> Committed {
        Committed::everything()
    }

    fn committed(next: &[(i32, i64)]) -> Committed {
        Committed::offsets(next.iter().map(|(p, o)| (("t".to_owned(), *p), *o)).collect())
    }

    fn aggregator(c: &Arc<Contract>) -> (Aggregator, String) {
        let timing = Timing { window: Duration::from_secs(10), lateness: Duration::from_secs(5), silence_after: Duration::from_secs(60) };
        let mut a = Aggregator::new(timing, false);
        let key = super::super::partial::binding_key(&c.product, &c.name, "t");
        a.own(&key, c.clone(), "t", 2, Progress::default(), at(0));
        (a, key)
    }

    #[test]
    fn a_bound_tables_scans_count_in_the_open_window_and_its_mark_is_kept_when_it_closes() {
        let c = contract();
        let timing = Timing { window: Duration::from_secs(10), lateness: Duration::from_secs(5), silence_after: Duration::from_secs(60) };
        let mut a = Aggregator::new(timing, true);
        let key = super::super::partial::binding_key(&c.product, &c.name, "mysql:pay");
        assert_eq!(a.scan_mark(&key), None, "not owned");
        a.own_source(&key, c.clone(), "mysql:pay", Progress::default(), at(0));
        assert_eq!(a.scan_mark(&key), Some(None), "owned, never scanned");
        let mark = |at: &str, key: &str| Some(ScanMark { at: at.into(), key: key.into() });
        let rows = |n: u64| Counts { volume: n, ..Counts::default() };
        assert!(a.add_scan(&key, at(2_000), &rows(7), Some(1_500), mark("1", "a")));
        assert!(a.add_scan(&key, at(12_000), &rows(3), Some(11_000), mark("2", "b")));
        assert_eq!(a.scan_mark(&key), Some(mark("2", "b")), "the newest scan's mark");
        // No partitions: the first window closes by lateness, with the mark of its last scan.
        let closed = a.close_due(at(15_000), &all());
        assert_eq!(closed.len(), 1);
        let (_, w, progress) = &closed[0];
        assert_eq!((w.volume, w.source.as_deref(), w.late, w.lineage_coverage), (7, Some("mysql:pay"), None, None));
        assert_eq!(progress.scan_mark, mark("1", "a"));
        // A new owner from that state starts at the closed window's mark: the 3 rows of the
        // window that died with the old owner are read again.
        let mut b = Aggregator::new(timing, true);
        b.own_source(&key, c.clone(), "mysql:pay", progress.clone(), at(15_000));
        assert_eq!(b.scan_mark(&key), Some(mark("1", "a")));
        // A topic's binding takes no scans.
        let (mut t, topic_key) = aggregator(&c);
        assert!(!t.add_scan(&topic_key, at(1_000), &rows(1), None, None));
        assert_eq!(t.scan_mark(&topic_key), None);
    }

    #[test]
    fn replays_replace_and_windows_wait_for_every_partition() {
        let c = contract();
        let (mut a, key) = aggregator(&c);
        assert_eq!(a.add(partial(&c, 0, 0, 0, 99, 9_000), 0), Added::Counted);
        assert_eq!(a.add(partial(&c, 0, 0, 100, 199, 9_500), 1), Added::Counted);
        // Crash after offset 99 was committed: 100.. read again in one larger batch.
        assert_eq!(a.add(partial(&c, 0, 0, 100, 249, 9_900), 2), Added::Replaced);
        // Partition 1 has not progressed past 10 s: the window waits (lateness 5 s).
        assert!(a.close_due(at(11_000), &all()).is_empty());
        assert_eq!(a.add(partial(&c, 10_000, 1, 0, 9, 10_500), 3), Added::Counted);
        // Partition 0 is still at 9.9 s.
        assert!(a.close_due(at(11_000), &all()).is_empty());
        assert_eq!(a.add(partial(&c, 10_000, 0, 250, 259, 10_200), 4), Added::Counted);
        let closed = a.close_due(at(11_000), &all());
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].1.volume, 250);
        assert_eq!(closed[0].2.covered.get(&0), Some(&249));
        // Offsets all counted in a closed window: a replay, not late.
        assert_eq!(a.add(partial(&c, 0, 0, 150, 249, 9_900), 5), Added::Replay);
        // New offsets for a closed window (another partition's): late, reported with the next window;
        // the same partial again (a retried batch) replaces it.
        assert_eq!(a.add(partial(&c, 0, 1, 10, 12, 9_990), 6), Added::Late);
        assert_eq!(a.add(partial(&c, 0, 1, 10, 12, 9_990), 7), Added::Late);
        assert_eq!(a.needed_from([&key]), Some(3));
        // A verdict decided for the closed window counts in the next window's accuracy, not in `late`.
        let mut verdict = partial(&c, 0, 0, -1, -1, 9_000);
        verdict.partition = None;
        verdict.counts = Counts { checked: 2, matched: 2, ..Counts::default() };
        assert_eq!(a.add(verdict, 8), Added::Late);
        let next = a.close_due(at(26_000), &all());
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].1.volume, next[0].1.late), (20, Some(3)));
        assert_eq!((next[0].1.accuracy_checked, next[0].1.accuracy_matched), (2, 2));
        assert_eq!(a.needed_from([&key]), None);
    }

    #[test]
    fn a_new_owner_of_a_silent_topic_carries_on_with_its_silence() {
        let c = contract();
        let (mut a, key) = aggregator(&c);
        // Both partitions' last records at 1 s and 2 s, then nothing: silent (60 s) from 62 s on.
        assert_eq!(a.add(partial(&c, 0, 0, 0, 9, 1_000), 0), Added::Counted);
        assert_eq!(a.add(partial(&c, 0, 1, 0, 9, 2_000), 1), Added::Counted);
        let mut progress = Progress::default();
        for w in a.close_due(at(75_000), &all()) {
            progress = w.2;
        }
        assert_eq!(progress.last_closed_ms, Some(60_000));
        assert_eq!(progress.newest_ms, Some(2_000));
        // The owner goes (a rebalance, a scale, a crash); the next one takes over from the state.
        let timing = a.timing;
        let mut b = Aggregator::new(timing, false);
        b.own(&key, c.clone(), "t", 2, progress, at(76_000));
        let closed = b.close_due(at(85_000), &all());
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].1.silent_seconds, Some(83.0), "silent since the last record, not since the new owner started");
        // A state written before `newest_ms` was kept still reads.
        let old: Progress = serde_json::from_str(r#"{"last_closed_ms":0,"covered":{"0":9}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.newest_ms, None);
    }

    #[test]
    fn a_silent_topic_closes_its_windows_after_the_lateness_bound() {
        let c = contract();
        let (mut a, _) = aggregator(&c);
        assert!(a.close_due(at(14_000), &all()).is_empty());
        let closed = a.close_due(at(15_000), &all());
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].1.volume, 0);
        assert_eq!(closed[0].1.silent_seconds, None);
        assert_eq!(a.needed_from([&"x".to_owned()]), None);
    }

    #[test]
    fn a_window_closes_only_when_what_it_counted_is_committed() {
        let c = contract();
        let (mut a, key) = aggregator(&c);
        // Instance A reads 0..=99 of partition 0 (window 0), sends the partial and is killed
        // before committing: the group's committed offset stays at 0.
        assert_eq!(a.add(partial(&c, 0, 0, 0, 99, 9_000), 0), Added::Counted);
        assert_eq!(a.add(partial(&c, 0, 1, 0, 9, 9_000), 1), Added::Counted);
        // Lateness passed, but offsets 0..=99 of partition 0 may still be read again.
        assert!(a.close_due(at(20_000), &committed(&[(0, 0), (1, 10)])).is_empty());
        // Instance B reads 0..=149 in one batch (cut differently) and commits 150.
        assert_eq!(a.add(partial(&c, 0, 0, 0, 149, 9_500), 2), Added::Replaced);
        let closed = a.close_due(at(20_000), &committed(&[(0, 150), (1, 10)]));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].1.volume, 160, "the replay replaced the first reading; nothing counted twice");
        // A late partial for window 0 (partition 1, 10..=19) read by C, killed before its commit;
        // D reads 10..=29 again: only the second counts, once committed.
        assert_eq!(a.add(partial(&c, 0, 1, 10, 19, 9_990), 3), Added::Late);
        assert_eq!(a.add(partial(&c, 0, 1, 10, 29, 9_990), 4), Added::Late);
        assert_eq!(a.needed_from([&key]), Some(4));
        let next = a.close_due(at(30_000), &committed(&[(0, 150), (1, 10)]));
        assert_eq!((next.len(), next[0].1.late), (1, Some(0)), "late offsets not committed yet wait");
        let next = a.close_due(at(40_000), &committed(&[(0, 150), (1, 30)]));
        assert_eq!((next.len(), next[0].1.late), (1, Some(20)));
        assert_eq!(a.add(partial(&c, 0, 1, 20, 29, 9_990), 5), Added::Replay);
        assert_eq!(a.needed_from([&key]), None);
    }

    #[test]
    fn a_held_binding_keeps_its_windows_open() {
        let c = contract();
        let (mut a, key) = aggregator(&c);
        a.hold(&key);
        assert!(a.close_due(at(60_000), &all()).is_empty());
        a.release(&key);
        assert_eq!(a.close_due(at(60_000), &all()).len(), 5);
    }
}
