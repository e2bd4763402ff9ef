//! Reconcile: accuracy against the source database. This module holds the source-row writer
//! the generator uses; batched reconciliation builds on the same table description.

pub mod source_rows;
