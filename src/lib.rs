//! meshguard: federated governance for a data mesh on Kafka.
//!
//! # Layout
//!
//! The modules read as the flow in `docs/design.md`, whose module map says what each may use
//! (checked by `tests/layering.rs`):
//!
//! - [`source`]: the Kafka consumer group and every operation on it (poll a batch, drop revoked
//!   partitions, rewind, store offsets, the batch in flight).
//! - [`decode`]: bytes → record, for JSON and Avro (Confluent, single-object, plain).
//! - [`contract`]: compiled schemas (JSON Schema draft-07, Avro) and violations as data.
//! - [`measure`]: per-event completeness and freshness, with an injected clock.
//! - [`verdict`]: one record's decode → validate → measure, shared by `check` and `run`.
//! - [`reconcile`]: accuracy claims, decided in batches against the source database.
//! - [`sink`]: dead letters, side topics and the document store behind one `Sinks` value.
//! - [`quality`]: windows per (product, contract, topic) and the alert rules that judge them.
//! - [`stream`]: the loop that orders the stages and recovers from a failure by its retry hint.
//! - [`error`]: the one error type of the stages: system, domain, retry hint.
//! - [`config`]: settings (embedded defaults → file → `MESHGUARD__*` environment) and every
//!   Kafka client's properties.
//! - [`product`]: data product declarations, their SLAs, and the catalog binding topics to
//!   compiled contracts.
//! - [`lineage`]: OpenLineage run events.
//! - [`telemetry`]: every metric name, their registration, `/metrics` `/healthz` `/readyz`.
//! - [`api`]: `meshguard serve`, the data product REST API.
//! - [`generate`]: the event generator behind `meshguard produce`.
//! - [`check`]: the offline `meshguard check` report.
//! - [`replay`]: `meshguard dlq replay`, dead letters re-checked and re-published once.
//! - [`scan`]: `meshguard scan`, bound tables and collections read in pages and held to their
//!   contracts with `check`'s judgement and report.
//! - [`cli`]: the command line.

pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod contract;
pub mod decode;
pub mod error;
pub mod generate;
pub mod lineage;
pub mod measure;
pub mod product;
pub mod quality;
pub mod reconcile;
pub mod replay;
pub mod scan;
pub mod sink;
pub mod source;
pub mod stream;
pub mod telemetry;
pub mod verdict;
