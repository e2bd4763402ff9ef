//! Lineage: what meshguard read, what it wrote, and how good the data was.
//!
//! [`openlineage`] builds the OpenLineage `RunEvent`s published on `datamesh.lineage`: one
//! STREAMING run per meshguard instance (START once, periodic RUNNING events whose input
//! datasets carry the window's data-quality metrics and assertions, COMPLETE/ABORT/FAIL at
//! shutdown). Events are plain [`serde_json::Value`]s, valid against the OpenLineage 2-0-2
//! schema and the facet schemas they name (`tests/openlineage.rs` checks both, offline).

pub mod openlineage;

pub use self::openlineage::{Assertion, EventType, Output, PRODUCER, Run, SCHEMA_URL, TopicQuality, run_event};
