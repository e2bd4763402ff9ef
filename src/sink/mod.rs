//! Sinks: where verdicts go. [`kafka`] is the side-topic producer (dead letters now; alerts and
//! lineage use it too), [`dlq`] shapes a dead letter.

pub mod dlq;
pub mod kafka;
pub mod mongo;
