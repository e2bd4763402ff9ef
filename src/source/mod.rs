//! Source: the Kafka consumer group meshguard runs as. [`kafka`] makes the consumer and holds
//! its rebalance callbacks; [`batch`] is every operation the stream performs with it.

pub mod batch;
pub mod kafka;

pub use self::batch::{Firsts, KafkaSource, Limits, NextOffsets, header, quietly};
