//! `run` with the catalog in MongoDB (`products.source = "mongodb"`): between batches, at most
//! every `products.reload_interval_ms`, the stored revisions are read again; a new catalog that
//! compiles and binds the same topics replaces the contracts of the next batch (never of one
//! in progress: the loop asks before it gathers). One that binds other topics is refused (the
//! subscription is fixed at start; restart to change it), like one that does not compile.
//! The quality stage follows the same switch (SLAs, versions and owners of the windows closed
//! from then on), and so does the group-wide quality owner beside the stream ([`Current`]).
//!
//! Each catalog switched to is leaked: the batch in flight and its verdicts borrow the
//! bindings they were evaluated with for as long as the loop runs. A switch is an operator's
//! apply, so this is a few kilobytes per apply, as compiled Avro schemas already are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::evaluate::{Bindings, Bound};
use crate::product::Catalog;
use crate::sink::catalog::{CatalogWatch, Poll};
use crate::sink::mongo::MongoSink;

/// The catalog in force: the stream switches it between batches, the threads beside it (the
/// group-wide quality owner) follow it at their next step.
#[derive(Debug)]
pub struct Current {
    catalog: RwLock<Arc<Catalog>>,
    generation: AtomicU64,
}

impl Current {
    /// The catalog `run` started with (generation 0).
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog: RwLock::new(catalog), generation: AtomicU64::new(0) }
    }

    /// How many switches so far: compare before taking the catalog.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The catalog in force and its generation.
    pub fn get(&self) -> (u64, Arc<Catalog>) {
        let catalog = self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        (self.generation(), catalog)
    }

    fn set(&self, catalog: Arc<Catalog>) {
        *self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = catalog;
        let _ = self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Follows the stored catalog from the stream thread.
#[derive(Debug)]
pub struct Reload {
    current: Arc<Current>,
    watch: CatalogWatch,
    store: MongoSink,
    runtime: tokio::runtime::Handle,
    every: Duration,
    next: Instant,
    topics: Vec<String>,
}

impl Reload {
    /// Follows `watch` through `store` every `every`, for a stream subscribed to `topics`;
    /// each switch is published to `current`.
    pub fn new(
        current: Arc<Current>,
        watch: CatalogWatch,
        store: MongoSink,
        runtime: tokio::runtime::Handle,
        every: Duration,
        topics: Vec<String>,
    ) -> Self {
        Self { current, watch, store, runtime, every, next: Instant::now() + every, topics }
    }

    /// The bindings of a new revision and its catalog, when one is due and usable.
    pub(super) fn check(&mut self) -> Option<(&'static Bindings, Arc<Catalog>)> {
        if Instant::now() < self.next {
            return None;
        }
        self.next = Instant::now() + self.every;
        let previous = self.watch.current().clone();
        let Poll::Switched(loaded) = self.runtime.block_on(self.watch.poll(&self.store)) else { return None };
        let topics = loaded.catalog.topics();
        if topics != self.topics {
            self.watch.refuse(
                previous,
                &format!("it binds topics {topics:?}, the stream subscribed to {:?}; restart run to change topics", self.topics),
            );
            return None;
        }
        tracing::info!("the next batch is held to the new catalog revision");
        let catalog = Arc::new(loaded.catalog);
        let bound: &'static Bindings = Box::leak(Box::new(bindings(&catalog)));
        self.current.set(catalog.clone());
        Some((bound, catalog))
    }
}

/// Every binding of `catalog` with its metric handles.
pub(super) fn bindings(catalog: &Catalog) -> Bindings {
    catalog.bindings().map(|b| (b.topic.clone(), Bound::new(&b.topic, b.contract.clone()))).collect()
}
