//! Source: the Kafka consumer group meshguard runs as.

pub mod kafka;
