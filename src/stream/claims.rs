//! Durable reconciliation claims (`quality.scope = "group"`): each claim is written to the
//! compacted claims topic (`topics.claims`, key `topic/partition/offset`) with the batch that
//! makes it, in its transaction in exactly-once mode, and a tombstone goes out with the batch
//! that carries its verdict (as a partial). When this instance gains a partition it restores
//! that partition's pending claims from the topic (their grace period goes on from when the
//! record was first seen); when it loses one it drops that partition's pending claims, which the
//! new owner restores. A record read again is claimed once (the reconciler keys claims by
//! position).

use std::collections::{HashMap, HashSet};

use tracing::{info, warn};

use super::evaluate::Bindings;
use crate::config::Settings;
use crate::error::Error;
use crate::reconcile::worker::Worker;
use crate::reconcile::{Claim, StoredClaim};

/// The partitions whose claims this instance holds.
#[derive(Debug)]
pub(super) struct ClaimStore {
    settings: Settings,
    owned: HashSet<(String, i32)>,
}

impl ClaimStore {
    pub(super) fn new(settings: &Settings) -> Self {
        Self { settings: settings.clone(), owned: HashSet::new() }
    }

    /// The assignment changed to `now_owned`: drops the claims of lost partitions and restores
    /// those of gained ones.
    pub(super) fn rebalanced(
        &mut self,
        now_owned: HashSet<(String, i32)>,
        bound: &Bindings,
        worker: &Worker,
        now: time::OffsetDateTime,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), Error> {
        let lost: Vec<(String, i32)> = self.owned.difference(&now_owned).cloned().collect();
        let gained: HashSet<(String, i32)> = now_owned.difference(&self.owned).cloned().collect();
        worker.forget(lost);
        if !gained.is_empty() {
            let stored = super::owner::read_compacted(&self.settings, &self.settings.topics.claims)?;
            let mut restored: HashMap<String, usize> = HashMap::new();
            let mut claims = Vec::new();
            for (position, value) in stored {
                let s = match serde_json::from_slice::<StoredClaim>(&value) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, position, "unreadable stored claim skipped");
                        continue;
                    }
                };
                if !gained.contains(&(s.topic.clone(), s.partition)) {
                    continue;
                }
                let Some(b) = bound.get(&s.topic) else { continue };
                *restored.entry(s.topic.clone()).or_default() += 1;
                claims.push(Claim::from_stored(s, b.contract.clone(), now));
            }
            if !claims.is_empty() {
                info!(claims = claims.len(), ?restored, "pending reconciliation claims restored");
                // Waits for room like any batch's claims, but not past a shutdown: with a stop
                // flag of its own, a drain could sit here until the database had decided enough
                // claims, past delivery.shutdown_timeout_ms.
                worker.submit(claims, stop);
            }
        }
        self.owned = now_owned;
        Ok(())
    }
}
