//! `meshguard check`: hold files of records to a contract with no servers, and report.

pub mod input;
mod report;

use time::OffsetDateTime;

use self::input::Item;
use crate::contract::tape::Tape;
use crate::contract::{Contract, Violation};
use crate::verdict::{Evaluation, Rejection, Stage, evaluate_lean, evaluate_record};

pub use self::input::{Input, InputError, read_from, read_records};
pub use self::report::{Report, ShadowSummary, render_text};

/// A report location.
pub fn report_at(input: &str, line: u64) -> report::At {
    report::At { input: input.to_owned(), line }
}

/// The verdict on one item read by [`read_records`] / [`read_from`]: what `check` reports and
/// `POST /{product}/validate` answers, so the two cannot disagree.
pub fn evaluate_item(contract: &Contract, item: Item, now: OffsetDateTime) -> Evaluation {
    match item {
        Item::Line(bytes) => {
            // The stream's path: validated on a tape, no record kept.
            let mut tape = Tape::new();
            evaluate_lean(contract, &bytes, now, &mut tape, |_, _| None::<()>).0
        }
        Item::Avro(value) => evaluate_record(contract, value, now),
        Item::AvroError(message) => rejected(contract, Stage::Decode, "avro_datum", "decode", message),
        Item::AvroMismatch(message) => rejected(contract, Stage::Validate, "contract_violation", "avro", message),
    }
}

/// The evaluation of an item rejected before validation (an Avro datum that does not decode
/// or does not match the contract's schema).
pub(crate) fn rejected(contract: &Contract, stage: Stage, class: &'static str, keyword: &str, message: String) -> Evaluation {
    Evaluation {
        rejection: Some(Rejection { stage, class, violations: vec![Violation::new("", keyword, message)] }),
        record: None,
        record_id: None,
        completeness: crate::measure::Completeness { present: 0, applicable: u32::try_from(contract.required.len()).unwrap_or(u32::MAX) },
        event_time: None,
        freshness: None,
        warnings: Vec::new(),
    }
}
