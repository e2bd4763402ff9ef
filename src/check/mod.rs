//! `meshguard check`: hold files of records to a contract with no servers, and report.

pub mod input;
mod report;
mod run;

use time::OffsetDateTime;

use self::input::Item;
use crate::contract::tape::Tape;
use crate::contract::unique::{self, Seen, UniqueTracker};
use crate::contract::{Contract, Violation};
use crate::verdict::{self, Evaluation, Rejection, ShadowVerdict, Stage, evaluate_lean, evaluate_record, evaluate_unkeyed, select_version};

pub use self::input::{Input, InputError, read_from, read_records};
pub use self::report::{At, Report, ShadowSummary, SourceSummary, render_text};
pub use self::run::{Notes, Plan, check_input};

/// A report location.
pub fn report_at(input: &str, line: u64) -> At {
    At { input: input.to_owned(), line, key: None }
}

/// The judgement of one record that needs no state: the applied version's verdict, the shadow
/// versions' verdicts and the record's unique key. Shared by every thread of a check.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'c> {
    /// The contract as declared, whose shadow versions are checked too.
    base: &'c Contract,
    /// The version records are held to.
    contract: &'c Contract,
    /// The fields of the version's `unique` key, if it has one.
    unique: Option<&'c [String]>,
}

/// One record judged by a [`Judge`].
#[derive(Debug)]
pub struct Judged {
    /// The applied version's verdict and measures.
    pub eval: Evaluation,
    /// Every shadow version's verdict.
    pub shadows: Vec<ShadowVerdict>,
    /// The record's unique key, when the contract has one and the record is valid.
    pub key: Option<String>,
}

impl<'c> Judge<'c> {
    /// Judges one line: on the stream's path (a tape, no record kept), with the record's id when
    /// `keyed` (`check` reports no ids and skips it).
    fn line<'i>(&self, bytes: &'i [u8], now: OffsetDateTime, tape: &mut Tape<'i>, keyed: bool) -> Judged {
        let shadows = verdict::shadows(self.base, bytes, now);
        let fields = self.unique;
        let (eval, key) = if keyed {
            evaluate_lean(self.contract, bytes, now, tape, |record, _| fields.and_then(|f| unique::key_of(f, record)))
        } else {
            evaluate_unkeyed(self.contract, bytes, now, tape, |record| fields.and_then(|f| unique::key_of(f, record)))
        };
        Judged { eval, shadows, key }
    }

    /// An empty report for this contract and its shadow versions.
    fn report(&self) -> Report {
        let mut report = Report::new(self.contract);
        report.shadow = self.base.shadows().map(ShadowSummary::new).collect();
        report
    }
}

/// One check's per-record judgement, shared by `meshguard check`, `POST /{product}/validate` and
/// `dlq replay` so that they cannot disagree: the version a header selects (the newest enforced
/// one by default), shadow versions, uniqueness within the input (files have no partitions or
/// arrival times: every record is on one partition, at `now`), and the report they feed.
/// `check` judges chunks of lines on several threads ([`check_input`]) and adds them here in
/// input order; uniqueness, the one judgement that depends on earlier records, is decided here.
#[derive(Debug)]
pub struct Checker<'c> {
    judge: Judge<'c>,
    /// The duplicate tracker, whether a duplicate is rejected, and the key's fields for the message.
    unique: Option<(UniqueTracker, bool, String)>,
    /// The report so far.
    pub report: Report,
}

impl<'c> Checker<'c> {
    /// A check of `base`'s version named by `header` (`meshguard.contract.version`'s value);
    /// the rejection when no enforced version has that name.
    pub fn new(base: &'c Contract, header: Option<&[u8]>) -> Result<Self, Rejection> {
        let contract = select_version(base, header)?;
        let judge = Judge { base, contract, unique: contract.unique.as_ref().map(|u| u.fields.as_slice()) };
        let mut report = judge.report();
        let unique = contract.unique.as_ref().map(|u| (UniqueTracker::new(u), u.dead_letter, u.fields.join(", ")));
        if unique.is_some() {
            report.duplicates = Some(0);
        }
        Ok(Self { judge, unique, report })
    }

    /// The version records are held to.
    pub fn contract(&self) -> &'c Contract {
        self.judge.contract
    }

    /// Judges one item read at `at`, adds it to the report, and returns its evaluation.
    pub fn add(&mut self, at: &At, item: Item, now: OffsetDateTime) -> Evaluation {
        match item {
            Item::Line(bytes) => {
                let mut tape = Tape::new();
                let judged = self.judge.line(&bytes, now, &mut tape, true);
                let mut eval = judged.eval;
                self.report.add_shadows(at, eval.is_valid(), &judged.shadows);
                self.report.add(at, &eval);
                if let Some(key) = judged.key
                    && let Some(rejection) = self.observe(&at.input, at.line, key, now)
                {
                    eval.rejection = Some(rejection);
                }
                eval
            }
            Item::Avro(value) => self.added(at, evaluate_record(self.judge.contract, value, now)),
            Item::AvroError(message) => self.added(at, rejected(self.judge.contract, Stage::Decode, "avro_datum", "decode", message)),
            Item::AvroMismatch(message) => {
                self.added(at, rejected(self.judge.contract, Stage::Validate, "contract_violation", "avro", message))
            }
        }
    }

    fn added(&mut self, at: &At, eval: Evaluation) -> Evaluation {
        self.report.add(at, &eval);
        eval
    }

    /// Adds a chunk judged by [`Judge`] on any thread, `base` lines into `input`. Chunks must
    /// come in input order: each key is looked up against the keys of every earlier record, as
    /// [`add`](Self::add) would.
    fn absorb(&mut self, input: &str, base: u64, judged: run::Judgements, now: OffsetDateTime) {
        self.report.absorb(input, base, judged.report);
        for (line, key) in judged.keys {
            let _ = self.observe(input, base + line, key, now);
        }
    }

    /// Looks up the unique key of the valid record at `line` of `input`, already added to the
    /// report; counts it if it repeats an earlier one, and rejects it if the contract says so.
    fn observe(&mut self, input: &str, line: u64, key: String, now: OffsetDateTime) -> Option<Rejection> {
        let (tracker, dead_letter, fields) = self.unique.as_mut()?;
        if tracker.observe(0, key, now) != Seen::Duplicate {
            return None;
        }
        let at = report_at(input, line);
        self.report.duplicate_at(&at);
        if !*dead_letter {
            return None;
        }
        let violations = vec![Violation::new("", "unique", format!("the key ({fields}) repeats an earlier record's"))];
        self.report.reject_duplicate(&at, &violations);
        Some(Rejection { stage: Stage::Validate, class: "duplicate", violations })
    }

    /// The finished report.
    pub fn finish(mut self) -> Report {
        self.report.finish(self.judge.contract);
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
        shadows: Vec::new(),
        duplicate: false,
    }
}
