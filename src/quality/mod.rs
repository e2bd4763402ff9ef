//! Quality over time: tumbling windows per (product, contract, topic) that aggregate what the
//! stream measured, and the alert rules that judge each closed window against its contract's
//! SLAs. Pure: no I/O client; the stream hands it acknowledged verdicts and reconciliation
//! outcomes, and writes what it returns.

pub mod alert;
pub mod window;
