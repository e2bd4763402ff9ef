//! One test's world: fresh topics bound to a shipped product, side-topic names and a MongoDB
//! database of its own, and the `meshguard run` instances it starts. Replaces the preamble
//! (broker address, unique topics, create them, names, product directory) each stream test
//! used to repeat.

use std::time::Duration;

use super::{Names, Products, Sent, Service, create_topics, kafka, produce_payments, produce_payments_keyed, unique, wait_committed};

/// Topics + products + names, ready for services and producers.
pub struct Scenario {
    /// The broker.
    pub kafka: String,
    /// The test's source topics.
    pub topics: Vec<String>,
    /// Partitions of each source topic.
    pub partitions: i32,
    /// Group, side topics and database of this test.
    pub names: Names,
    /// The payments product bound to `topics`.
    pub products: Products,
}

impl Scenario {
    /// `prefixes.len()` fresh topics of `partitions` partitions each, bound to the payments
    /// product.
    pub async fn payments(prefixes: &[&str], partitions: i32) -> Self {
        let kafka = kafka();
        let topics: Vec<String> = prefixes.iter().map(|p| unique(p)).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        create_topics(&kafka, &refs, partitions).await;
        let products = Products::payments(&refs);
        Self { kafka, topics, partitions, names: Names::new(), products }
    }

    /// The topics as `&str`s.
    pub fn topic_refs(&self) -> Vec<&str> {
        self.topics.iter().map(String::as_str).collect()
    }

    /// Starts one `meshguard run` of the scenario's group.
    pub fn start(&self, extra_env: &[(&str, &str)]) -> Service {
        Service::start(&self.kafka, self.products.dir.path(), &self.names, extra_env)
    }

    /// Produces `count` payment events over the topics (`invalid_ratio` of them invalid).
    pub async fn produce(&self, count: usize, invalid_ratio: f64, seed: u64) -> Vec<Sent> {
        produce_payments(&self.kafka, &self.topic_refs(), count, invalid_ratio, seed).await
    }

    /// As [`Scenario::produce`], the record ids drawn from a pool of `keys`.
    pub async fn produce_keyed(&self, count: usize, invalid_ratio: f64, seed: u64, keys: usize) -> Vec<Sent> {
        produce_payments_keyed(&self.kafka, &self.topic_refs(), count, invalid_ratio, seed, keys).await
    }

    /// Waits until the group has committed `target` records over the topics.
    pub fn wait_committed(&self, target: i64, within: Duration) {
        wait_committed(&self.kafka, &self.names.group, &self.topic_refs(), self.partitions, target, within);
    }
}
