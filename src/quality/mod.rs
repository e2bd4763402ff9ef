//! Quality over time: tumbling windows per (product, contract, topic) that aggregate what the
//! stream measured, and the alert rules that judge each closed window against its contract's
//! SLAs. Pure: no I/O client; the stream hands it acknowledged verdicts and reconciliation
//! outcomes, and writes what it returns.
//!
//! Two scopes (`quality.scope`): `instance` windows ([`window`]) count what one instance read;
//! `group` windows are built from the [`partial`]s every instance sends and merged by the owner
//! of each binding ([`aggregate`]), so they are the same whatever the number of instances.

pub mod aggregate;
pub mod alert;
pub mod partial;
pub mod window;
