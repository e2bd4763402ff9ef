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
    first_seen: HashMap<String, OffsetDateTime>,
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
        let mut key = String::new();
        for (i, field) in self.fields.iter().enumerate() {
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

    /// Records `key` seen on `partition` at `now`.
    pub fn observe(&mut self, partition: i32, key: String, now: OffsetDateTime) -> Seen {
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
        if state.first_seen.contains_key(&key) {
            return Seen::Duplicate;
        }
        let _ = state.first_seen.insert(key.clone(), now);
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
