//! `meshguard check`: hold files of records to a contract with no servers, and report.

pub mod input;
mod report;

pub use self::input::{Input, InputError, read_records};
pub use self::report::{Report, ShadowSummary, render_text};

/// A report location.
pub fn report_at(input: &str, line: u64) -> report::At {
    report::At { input: input.to_owned(), line }
}
