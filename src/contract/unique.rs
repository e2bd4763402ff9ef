//! Uniqueness (`unique:`): duplicates of a key within a horizon, with bounded state per
//! partition (a key's events share a partition, so per-partition state sees every duplicate and
//! a rebalance only moves whole partitions).
//!
//! The state is what a consumer has seen since it was assigned the partition: on revocation it is
//! dropped ([`UniqueTracker::revoke`]), so a duplicate whose first copy was processed by another
//! instance before a rebalance is not counted. Memory is bounded by `maxKeys` per partition: the
//! oldest keys are forgotten first, as are keys older than the horizon.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use time::OffsetDateTime;

use super::RecordView;
use crate::product::model::UniqueSpec;

/// Keys remembered per partition when `maxKeys` is not given.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Horizon when none is given.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(3_600);

/// What a record's key was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time within the horizon.
    New,
    /// Seen before within the horizon.
    Duplicate,
}

#[derive(Debug, Default)]
struct PartitionKeys {
    /// When each key was first seen, and at which offset (when the caller knows it).
    first_seen: HashMap<String, (OffsetDateTime, Option<i64>)>,
    order: VecDeque<(String, OffsetDateTime)>,
}

/// Duplicate detection for one contract.
#[derive(Debug)]
pub struct UniqueTracker {
    fields: Vec<String>,
    horizon: Duration,
    max_keys: usize,
    partitions: HashMap<i32, PartitionKeys>,
}

impl UniqueTracker {
    /// A tracker for `spec`.
    pub fn new(spec: &UniqueSpec) -> Self {
        Self {
            fields: spec.fields.clone(),
            horizon: spec.horizon.map(|h| h.0).unwrap_or(DEFAULT_HORIZON),
            max_keys: spec.max_keys.unwrap_or(DEFAULT_MAX_KEYS).max(1),
            partitions: HashMap::new(),
        }
    }

    /// The record's key: its unique fields' values, or `None` when one is absent or not a
    /// string, number or bool (such records are not counted either way).
    pub fn key_of<'a>(&self, record: impl RecordView<'a>) -> Option<String> {
        key_of(&self.fields, record)
    }

    /// Records `key` seen on `partition` at `now`.
    pub fn observe(&mut self, partition: i32, key: String, now: OffsetDateTime) -> Seen {
        self.observe_at(partition, None, key, now)
    }

    /// Like [`observe`](Self::observe) for the record at `offset`: the record that first showed
    /// the key is `New` however often it is read again (a batch rewound and retried, or a
    /// partition read again from its committed offset), so a retry reaches the same verdicts.
    pub fn observe_at(&mut self, partition: i32, offset: Option<i64>, key: String, now: OffsetDateTime) -> Seen {
        let state = self.partitions.entry(partition).or_default();
        // Forget what is older than the horizon, then what exceeds the bound.
        while let Some((k, at)) = state.order.front() {
            let expired = now - *at > self.horizon;
            if !expired && state.order.len() < self.max_keys {
                break;
            }
            let _ = state.first_seen.remove(k);
            let _ = state.order.pop_front();
        }
        if let Some((_, first)) = state.first_seen.get(&key) {
            return if first.is_some() && *first == offset { Seen::New } else { Seen::Duplicate };
        }
        let _ = state.first_seen.insert(key.clone(), (now, offset));
        state.order.push_back((key, now));
        Seen::New
    }

    /// Drops a partition's state (the partition was revoked).
    pub fn revoke(&mut self, partition: i32) {
        let _ = self.partitions.remove(&partition);
    }

    /// Keys held for `partition`.
    pub fn len(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |p| p.order.len())
    }

    /// Whether no key is held for `partition`.
    pub fn is_empty(&self, partition: i32) -> bool {
        self.len(partition) == 0
    }
}

/// The key of `record` under a constraint on `fields` (see [`UniqueTracker::key_of`]): needs no
/// tracker state, so records can be keyed on any thread and observed in order on one.
pub fn key_of<'a>(fields: &[String], record: impl RecordView<'a>) -> Option<String> {
    let mut key = String::new();
    for (i, field) in fields.iter().enumerate() {
        let mut node = record;
        for part in field.split('.') {
            node = node.member(part)?;
        }
        if i > 0 {
            key.push('\u{1f}');
        }
        match (node.as_str(), node.as_number()) {
            (Some(s), _) => {
                key.push('s');
                key.push_str(s);
            }
            (_, Some(n)) => {
                key.push('n');
                key.push_str(&n.to_string());
            }
            _ => return None,
        }
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_first_record_of_a_key_read_again_is_still_new() {
        let spec = UniqueSpec { fields: vec!["id".into()], horizon: None, max_keys: None, dead_letter: true };
        let mut t = UniqueTracker::new(&spec);
        let now = datetime!(2026-01-01 00:00:00 UTC);
        assert_eq!(t.observe_at(0, Some(10), "a".into(), now), Seen::New);
        assert_eq!(t.observe_at(0, Some(11), "a".into(), now), Seen::Duplicate);
        // The batch is rewound and read again: the same verdicts.
        assert_eq!(t.observe_at(0, Some(10), "a".into(), now), Seen::New);
        assert_eq!(t.observe_at(0, Some(11), "a".into(), now), Seen::Duplicate);
        // Without offsets every repeat is a duplicate.
        assert_eq!(t.observe(1, "b".into(), now), Seen::New);
        assert_eq!(t.observe(1, "b".into(), now), Seen::Duplicate);
        t.revoke(0);
        assert!(t.is_empty(0));
        assert_eq!(t.observe_at(0, Some(11), "a".into(), now), Seen::New, "a revoked partition starts empty");
    }
}
