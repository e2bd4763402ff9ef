//! `meshguard check`: hold files of records to a contract with no servers, and report.

pub mod input;
mod report;

use time::OffsetDateTime;

use self::input::Item;
use crate::contract::tape::Tape;
use crate::contract::unique::{Seen, UniqueTracker};
use crate::contract::{Contract, Violation};
use crate::verdict::{Evaluation, Rejection, Stage, evaluate_lean_versioned, evaluate_record, select_version};

pub use self::input::{Input, InputError, read_from, read_records};
pub use self::report::{Report, ShadowSummary, render_text};

/// A report location.
pub fn report_at(input: &str, line: u64) -> report::At {
    report::At { input: input.to_owned(), line }
}

/// One check's per-record judgement, shared by `meshguard check` and `POST /{product}/validate`
/// so that the two cannot disagree: the version a header selects (the newest enforced one by
/// default), shadow versions, uniqueness within the input (files have no partitions or arrival
/// times: every record is on one partition, at `now`), and the report they feed.
#[derive(Debug)]
pub struct Checker<'c> {
    base: &'c Contract,
    contract: &'c Contract,
    header: Option<Vec<u8>>,
    unique: Option<(UniqueTracker, bool, String)>,
    /// The report so far.
    pub report: Report,
}

impl<'c> Checker<'c> {
    /// A check of `base`'s version named by `header` (`meshguard.contract.version`'s value);
    /// the rejection when no enforced version has that name.
    pub fn new(base: &'c Contract, header: Option<&[u8]>) -> Result<Self, Rejection> {
        let contract = select_version(base, header)?;
        let mut report = Report::new(contract);
        report.shadow = base.shadows().map(ShadowSummary::new).collect();
        let unique = contract.unique.as_ref().map(|u| (UniqueTracker::new(u), u.dead_letter, u.fields.join(", ")));
        if unique.is_some() {
            report.duplicates = Some(0);
        }
        Ok(Self { base, contract, header: header.map(<[u8]>::to_vec), unique, report })
    }

    /// The version records are held to.
    pub fn contract(&self) -> &'c Contract {
        self.contract
    }

    /// Judges one item read at `at`, adds it to the report, and returns its evaluation.
    pub fn add(&mut self, at: &report::At, item: Item, now: OffsetDateTime) -> Evaluation {
        let eval = match item {
            Item::Line(bytes) => {
                // The stream's path: validated on a tape, no record kept; shadow versions too.
                let mut tape = Tape::new();
                let tracker = self.unique.as_ref().map(|u| &u.0);
                let (v, key) = evaluate_lean_versioned(self.base, &bytes, self.header.as_deref(), now, &mut tape, |record, _| {
                    tracker.and_then(|t| t.key_of(record))
                });
                self.report.add_shadows(at, v.evaluation.is_valid(), &v.shadows);
                let mut eval = v.evaluation;
                if let (Some((tracker, dead_letter, fields)), Some(key)) = (self.unique.as_mut(), key)
                    && tracker.observe(0, key, now) == Seen::Duplicate
                {
                    self.report.duplicate_at(at);
                    if *dead_letter {
                        eval.rejection = Some(Rejection {
                            stage: Stage::Validate,
                            class: "duplicate",
                            violations: vec![Violation::new("", "unique", format!("the key ({fields}) repeats an earlier record's"))],
                        });
                    }
                }
                eval
            }
            Item::Avro(value) => evaluate_record(self.contract, value, now),
            Item::AvroError(message) => rejected(self.contract, Stage::Decode, "avro_datum", "decode", message),
            Item::AvroMismatch(message) => rejected(self.contract, Stage::Validate, "contract_violation", "avro", message),
        };
        self.report.add(at, &eval);
        eval
    }

    /// The finished report.
    pub fn finish(mut self) -> Report {
        self.report.finish(self.contract);
        self.report
    }
}

/// The evaluation of an item rejected before validation (an Avro datum that does not decode
/// or does not match the contract's schema).
fn rejected(contract: &Contract, stage: Stage, class: &'static str, keyword: &str, message: String) -> Evaluation {
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
