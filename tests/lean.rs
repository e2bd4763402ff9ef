//! The stream's lean evaluation (records parsed onto a tape and validated in place) against the
//! `Value` path, record by record: same verdict, violations, completeness, id, event time,
//! freshness and reconciliation claim. Pure CPU, no servers.
//!
//! Inputs: every shipped contract's generated events (valid, invalid, undecodable), hand-written
//! edge cases (repeated keys, escapes, nulls, non-object roots), and payment events with bytes
//! mutated at random.

use std::path::Path;
use std::sync::Arc;

use meshguard::contract::tape::Tape;
use meshguard::contract::{AnyRecord, Contract};
use meshguard::generate::Generator;
use meshguard::product::{Catalog, Files};
use meshguard::reconcile::{Claim, claim};
use meshguard::verdict::{evaluate, evaluate_lean, evaluate_unkeyed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-01-15 12:00:00 UTC);

fn catalog() -> Catalog {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = Files::Disk { products: repo.join("config/products"), schemas: repo.join("schemas") };
    match Catalog::load(&files) {
        Ok(c) => c,
        Err(e) => panic!("cannot load the catalog from {}: {e:?}", repo.display()),
    }
}

fn contracts(catalog: &Catalog) -> Vec<Arc<Contract>> {
    let mut seen: Vec<Arc<Contract>> = Vec::new();
    for b in catalog.bindings() {
        if !seen.iter().any(|c| Arc::ptr_eq(c, &b.contract)) {
            seen.push(b.contract.clone());
        }
    }
    assert!(seen.len() >= 4, "expected the shipped contracts, found {}", seen.len());
    seen
}

fn claim_fields(c: &Claim) -> (String, String, Option<String>) {
    (c.key.clone(), c.amount.to_string(), c.currency.clone())
}

/// Evaluates `payload` both ways and asserts they agree; returns whether it was valid.
fn agree(contract: &Arc<Contract>, payload: &[u8]) -> bool {
    agree_via(contract, payload).0
}

/// Same, also saying whether a valid record was read from the tape (not the `Value` fallback).
fn agree_via(contract: &Arc<Contract>, payload: &[u8]) -> (bool, bool) {
    let full = evaluate(contract, payload, NOW);
    let full_claim = match (&full.record, full.is_valid()) {
        (Some(record), true) => claim(contract, "t", record, full.record_id.as_deref(), NOW),
        _ => None,
    };
    let mut tape = Tape::new();
    let mut on_tape = false;
    let (lean, lean_claim) = evaluate_lean(contract, payload, NOW, &mut tape, |record, id| {
        on_tape = matches!(record, AnyRecord::Tape(_));
        claim(contract, "t", record, id, NOW)
    });
    let shown = String::from_utf8_lossy(payload);
    assert_eq!(lean.rejection, full.rejection, "{}: {shown}", contract.name);
    assert_eq!(lean.record_id, full.record_id, "{}: {shown}", contract.name);
    assert_eq!(lean.completeness, full.completeness, "{}: {shown}", contract.name);
    assert_eq!(lean.event_time, full.event_time, "{}: {shown}", contract.name);
    assert_eq!(lean.freshness, full.freshness, "{}: {shown}", contract.name);
    assert!(lean.record.is_none(), "the lean path keeps no record");
    assert_eq!(lean_claim.as_ref().map(claim_fields), full_claim.as_ref().map(claim_fields), "{}: {shown}", contract.name);
    // `check`'s path: the same verdict, warnings and measures, without the id; `valid` is called
    // exactly for the records the full path accepts.
    let mut tape = Tape::new();
    let (unkeyed, called) = evaluate_unkeyed(contract, payload, NOW, &mut tape, |_| Some(()));
    assert_eq!(unkeyed.rejection, full.rejection, "{}: {shown}", contract.name);
    assert_eq!(unkeyed.warnings, full.warnings, "{}: {shown}", contract.name);
    assert_eq!(unkeyed.completeness, full.completeness, "{}: {shown}", contract.name);
    assert_eq!(unkeyed.event_time, full.event_time, "{}: {shown}", contract.name);
    assert_eq!(unkeyed.freshness, full.freshness, "{}: {shown}", contract.name);
    assert!(unkeyed.record.is_none() && unkeyed.record_id.is_none(), "check keeps neither record nor id");
    assert_eq!(called.is_some(), full.is_valid(), "{}: {shown}", contract.name);
    (full.is_valid(), on_tape)
}

#[test]
fn generated_events_of_every_contract_get_the_same_evaluation() {
    let catalog = catalog();
    for contract in contracts(&catalog) {
        let Some(mut generator) = Generator::for_contract(&contract, 11, 0.3, 0.1) else { continue };
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..3_000 {
            let event = generator.next_event(NOW);
            let (is_valid, on_tape) = agree_via(&contract, &event.payload);
            if is_valid {
                // A valid JSON record never needs the `Value` tree.
                assert_eq!(on_tape, !contract.is_avro(), "{}: {}", contract.name, String::from_utf8_lossy(&event.payload));
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        // Both kinds were exercised.
        assert!(valid > 1_000 && invalid > 500, "{}: {valid} valid, {invalid} invalid", contract.name);
    }
}

#[test]
fn edge_cases_get_the_same_evaluation() {
    let catalog = catalog();
    let payments = contracts(&catalog).into_iter().find(|c| c.name == "payment-schema").unwrap_or_else(|| panic!("no payment-schema"));
    let base = r#""payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":42,"amount":1250.75,"currency":"EUR","status":"COMPLETED","created_at":"2026-01-15T11:59:58Z""#;
    let cases = [
        format!("{{{base}}}"),
        // A repeated key: the last one counts (invalid, then valid again).
        format!(r#"{{{base},"currency":"eur"}}"#),
        format!(r#"{{"currency":"eur",{base}}}"#),
        format!(r#"{{{base},"payment_method":{{"type":"CARD","type":"WIRE"}}}}"#),
        // Escapes in the id, the currency and the time.
        r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7\u0066","customer_id":42,"amount":1,"currency":"\u0045UR","status":"PENDING","created_at":"2026-01-15T11:59:58\u005a"}"#.to_owned(),
        // Nulls, nested objects, extra members, whitespace.
        format!("  {{ {base} , \"updated_at\" : null , \"payment_method\" : {{ \"last_four\" : \"1234\" }} , \"extra\" : [1, {{\"a\": null}}] }}  "),
        format!(r#"{{{base},"updated_at":"2026-01-15T11:59:59.5+01:00"}}"#),
        format!(r#"{{{base},"payment_method":null}}"#),
        // Numbers at the edges of the contract.
        r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":1.0,"amount":0,"currency":"USD","status":"FAILED","created_at":"2026-01-15T11:59:58Z"}"#.to_owned(),
        r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":1,"amount":1e2,"currency":"USD","status":"FAILED","created_at":"2026-01-15T11:59:58Z"}"#.to_owned(),
        r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":1,"amount":0.015,"currency":"USD","status":"FAILED","created_at":"2026-01-15T11:59:58Z"}"#.to_owned(),
        r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":18446744073709551615,"amount":12345678901234.56,"currency":"USD","status":"FAILED","created_at":"2026-01-15T11:59:58Z"}"#.to_owned(),
        // Not objects, not JSON.
        "[]".to_owned(),
        "\"x\"".to_owned(),
        "null".to_owned(),
        String::new(),
        format!("{{{base}}} trailing"),
        format!("{{{base},}}"),
    ];
    let mut valid = 0;
    for case in &cases {
        valid += usize::from(agree(&payments, case.as_bytes()));
    }
    assert!(valid >= 6, "only {valid} of the edge cases were valid: the cases no longer exercise the valid path");
}

#[test]
fn mutated_payment_events_get_the_same_evaluation() {
    let catalog = catalog();
    let payments = contracts(&catalog).into_iter().find(|c| c.name == "payment-schema").unwrap_or_else(|| panic!("no payment-schema"));
    let Some(mut generator) = Generator::for_contract(&payments, 5, 0.0, 0.0) else { panic!("no payment generator") };
    let mut rng = StdRng::seed_from_u64(99);
    let alphabet = b"{}[]\":,0123456789.eE-+ \\uabcdefnulltrue\x00\xff\xc3\xa9AZaz";
    let (mut valid, mut total) = (0, 0);
    for _ in 0..20_000 {
        let mut payload = generator.next_event(NOW).payload;
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..payload.len());
            match rng.random_range(0..3) {
                0 => payload[at] = alphabet[rng.random_range(0..alphabet.len())],
                1 => payload.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                _ => {
                    let _ = payload.remove(at);
                }
            }
        }
        valid += usize::from(agree(&payments, &payload));
        total += 1;
    }
    // Some mutations keep the record valid (a digit for a digit), most do not.
    assert!(valid > 500 && valid < total - 5_000, "{valid} of {total} mutated events valid");
}
