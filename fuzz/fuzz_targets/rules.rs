//! Arbitrary JSON documents (the fuzzer's bytes, parsed; unparsable inputs are skipped) through
//! business-rule evaluation: the shipped loans rules plus rules written to hit run-time errors
//! (missing fields, wrong types, overflow, division by zero). Evaluation must never panic, and
//! the record as a `Value` and on a tape (the stream's form) must give the same outcome.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meshguard::contract::rules::RuleSet;
use meshguard::contract::tape::Tape;
use meshguard::contract::{AnyRecord, RuleOutcome};
use meshguard::product::model::{RuleSeverity, RuleSpec};

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    let exprs = [
        "principal > 0.0",
        "!has(record.collateral) || record.collateral.type == 'NONE' || record.collateral.value >= principal",
        "status != 'REPAID' || has(record.updated_at)",
        "currency in ['EUR', 'USD', 'GBP']",
        "interest_rate <= 25.0",
        "int(principal) * 9223372036854775807 > 0",
        "principal / 0 == 1",
        "size(record) < 20 && record.all(k, k != '')",
        "matches(string(currency), '^[A-Z]{3}$')",
    ];
    let specs: Vec<RuleSpec> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| RuleSpec {
            name: format!("r{i}"),
            expr: (*e).to_owned(),
            severity: if i % 2 == 0 { RuleSeverity::Error } else { RuleSeverity::Warn },
            description: None,
        })
        .collect();
    RuleSet::compile("fuzz", "fuzz", &specs).unwrap_or_else(|e| panic!("{e:?}"))
});

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let mut on_value = RuleOutcome::default();
    RULES.evaluate(AnyRecord::Value(&record), &mut on_value);
    assert!(on_value.errors.len() + on_value.warnings.len() <= RULES.rules().len());
    let mut tape = Tape::new();
    if tape.parse(data).is_err() {
        return; // A repeated key: the tape refuses what a Value resolves by keeping the last.
    }
    let Some(root) = tape.root() else { return };
    let mut on_tape = RuleOutcome::default();
    RULES.evaluate(AnyRecord::Tape(root), &mut on_tape);
    assert_eq!(on_value, on_tape);
});
