//! meshguard: federated governance for a data mesh on Kafka.
//!
//! # Layout
//!
//! The modules read as the flow in `docs/design.md`:
//!
//! - [`config`]: settings (embedded defaults → file → `MESHGUARD__*` environment).
//! - [`product`]: data product declarations, their SLAs, and the catalog binding topics to
//!   compiled contracts.
//! - [`decode`]: bytes → record, for JSON and Avro (Confluent, single-object, plain).
//! - [`contract`]: compiled schemas (JSON Schema draft-07, Avro) and violations as data.
//! - [`quality`]: per-event completeness and freshness, with an injected clock.
//! - [`verdict`]: one record's decode → validate → measure, shared by `check` and `run`.
//! - [`check`]: the offline `meshguard check` report.
//! - [`cli`]: the command line.

pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod contract;
pub mod decode;
pub mod generate;
pub mod lineage;
pub mod product;
pub mod quality;
pub mod reconcile;
pub mod sink;
pub mod source;
pub mod stream;
pub mod telemetry;
pub mod verdict;
