//! `run` with the catalog in MongoDB (`products.source = "mongodb"`): between batches, at most
//! every `products.reload_interval_ms`, the stored revisions are read again; a new catalog that
//! compiles and binds the same topics replaces the contracts of the next batch (never of one
//! in progress: the loop asks before it gathers). One that binds other topics is refused (the
//! subscription is fixed at start; restart to change it), like one that does not compile.
//!
//! Each catalog switched to is leaked: the batch in flight and its verdicts borrow the
//! bindings they were evaluated with for as long as the loop runs. A switch is an operator's
//! apply, so this is a few kilobytes per apply, as compiled Avro schemas already are.

use std::time::{Duration, Instant};

use super::evaluate::{Bindings, Bound};
use crate::product::Catalog;
use crate::sink::catalog::{CatalogWatch, Poll};
use crate::sink::mongo::MongoSink;

/// Follows the stored catalog from the stream thread.
#[derive(Debug)]
pub struct Reload {
    watch: CatalogWatch,
    store: MongoSink,
    runtime: tokio::runtime::Handle,
    every: Duration,
    next: Instant,
    topics: Vec<String>,
}

impl Reload {
    /// Follows `watch` through `store` every `every`, for a stream subscribed to `topics`.
    pub fn new(watch: CatalogWatch, store: MongoSink, runtime: tokio::runtime::Handle, every: Duration, topics: Vec<String>) -> Self {
        Self { watch, store, runtime, every, next: Instant::now() + every, topics }
    }

    /// The bindings of a new revision, when one is due and usable.
    pub(super) fn check(&mut self) -> Option<&'static Bindings> {
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
        Some(Box::leak(Box::new(bindings(&loaded.catalog))))
    }
}

/// Every binding of `catalog` with its metric handles.
pub(super) fn bindings(catalog: &Catalog) -> Bindings {
    catalog.bindings().map(|b| (b.topic.clone(), Bound::new(&b.topic, b.contract.clone()))).collect()
}
