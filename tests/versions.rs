//! Several versions of one contract: selection by the `meshguard.contract.version` header
//! (default: the newest enforced version), shadow versions counted exactly and never rejecting,
//! in the library (the functions the stream calls) and in `check`.

use std::path::PathBuf;
use std::process::Command;

use meshguard::product::{Catalog, Files};
use meshguard::verdict::{Tally, evaluate, evaluate_lean_versioned, evaluate_versioned};
use serde_json::Value;
use time::macros::datetime;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshguard"))
}

const NOW: time::OffsetDateTime = datetime!(2026-11-29 12:00:00 UTC);

/// A product whose contract has 1.0.0 (the payments schema), 2.0.0 enforced (also requires
/// `payment_method`) and 3.0.0 in shadow (also closes the record).
fn versioned() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let products = dir.path().join("config/products");
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&schemas).unwrap_or_else(|e| panic!("{e}"));
    let v1: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/payment-schema.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut v2 = v1.clone();
    if let Some(r) = v2["required"].as_array_mut() {
        r.push("payment_method".into());
    }
    let mut v3 = v2.clone();
    v3["additionalProperties"] = false.into();
    for (name, schema) in [("p1.json", &v1), ("p2.json", &v2), ("p3.json", &v3)] {
        std::fs::write(schemas.join(name), schema.to_string()).unwrap_or_else(|e| panic!("{e}"));
    }
    let yaml = "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: t\n  domain: payments\n  version: \"1\"\n  owner: t@example.com\nspec:\n  contracts:\n    - name: pay\n      version: \"1.0.0\"\n      schema: schemas/p1.json\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99%\n      versions:\n        - version: \"2.0.0\"\n          schema: schemas/p2.json\n        - version: \"3.0.0\"\n          schema: schemas/p3.json\n          mode: shadow\n  apis:\n    kafka:\n      topics: [pay.events]\n";
    std::fs::write(products.join("t.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let catalog = Catalog::load(&Files::Disk { products, schemas }).unwrap_or_else(|e| panic!("{e}"));
    (dir, catalog)
}

/// `(payload, header, applied version, valid, rejection class)`.
type Case = (&'static [u8], Option<&'static str>, &'static str, bool, Option<&'static str>);

const WITH_METHOD: &[u8] = br#"{"payment_id":"6f1c1a52-3f57-4d1c-9d61-0b1b2f1c6a01","customer_id":7,"amount":10.5,"currency":"EUR","status":"PENDING","payment_method":{"type":"CARD"},"created_at":"2026-11-29T11:59:59Z"}"#;
const WITHOUT_METHOD: &[u8] = br#"{"payment_id":"6f1c1a52-3f57-4d1c-9d61-0b1b2f1c6a02","customer_id":7,"amount":10.5,"currency":"EUR","status":"PENDING","created_at":"2026-11-29T11:59:59Z"}"#;
const EXTRA_FIELD: &[u8] = br#"{"payment_id":"6f1c1a52-3f57-4d1c-9d61-0b1b2f1c6a03","customer_id":7,"amount":10.5,"currency":"EUR","status":"PENDING","payment_method":{"type":"CARD"},"created_at":"2026-11-29T11:59:59Z","note":"x"}"#;

#[test]
fn the_header_selects_the_version_and_the_newest_enforced_is_the_default() {
    let (_dir, catalog) = versioned();
    let contract = catalog.binding("pay.events").map(|b| b.contract.clone()).unwrap_or_else(|| panic!("binding"));
    assert_eq!(contract.newest().version, "2.0.0");
    assert_eq!(contract.shadows().map(|s| s.version.as_str()).collect::<Vec<_>>(), ["3.0.0"]);

    let cases: &[Case] = &[
        // (payload, header, applied version, valid, class)
        (WITHOUT_METHOD, None, "2.0.0", false, Some("contract_violation")),
        (WITHOUT_METHOD, Some("1.0.0"), "1.0.0", true, None),
        (WITHOUT_METHOD, Some("2.0.0"), "2.0.0", false, Some("contract_violation")),
        (WITH_METHOD, None, "2.0.0", true, None),
        (WITH_METHOD, Some(" 1.0.0 "), "1.0.0", true, None),
        (WITH_METHOD, Some("3.0.0"), "2.0.0", false, Some("unknown_contract_version")),
        (WITH_METHOD, Some("9"), "2.0.0", false, Some("unknown_contract_version")),
    ];
    for (i, (payload, header, applied, valid, class)) in cases.iter().enumerate() {
        let v = evaluate_versioned(&contract, payload, header.map(str::as_bytes), NOW);
        assert_eq!(v.applied_version, *applied, "case {i}");
        assert_eq!(v.evaluation.is_valid(), *valid, "case {i}: {:?}", v.evaluation.rejection);
        assert_eq!(v.evaluation.rejection.as_ref().map(|r| r.class), *class, "case {i}");
        // The stream's lean path agrees, and hands over only records the applied version accepts.
        let mut tape = meshguard::contract::tape::Tape::new();
        let (lean, taken) =
            evaluate_lean_versioned(&contract, payload, header.map(str::as_bytes), NOW, &mut tape, |_, id| Some(id.map(str::to_owned)));
        assert_eq!(lean.applied_version, *applied, "case {i}");
        assert_eq!(lean.evaluation.is_valid(), *valid, "case {i}");
        assert_eq!(taken.is_some(), *valid, "case {i}");
    }
}

#[test]
fn shadow_versions_are_counted_and_never_reject() {
    let (_dir, catalog) = versioned();
    let contract = catalog.binding("pay.events").map(|b| b.contract.clone()).unwrap_or_else(|| panic!("binding"));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let payloads: [&[u8]; 4] = [WITH_METHOD, EXTRA_FIELD, EXTRA_FIELD, WITHOUT_METHOD];
    let verdicts = metrics::with_local_recorder(&recorder, || {
        // Evaluated twice (a batch retried after a sink failure): only the tally of the kept
        // evaluations counts, once.
        let evaluate_all = || payloads.iter().map(|p| evaluate_versioned(&contract, p, Some(b"1.0.0"), NOW)).collect::<Vec<_>>();
        let _failed_attempt = evaluate_all();
        let kept = evaluate_all();
        assert!(!handle.render().contains("meshguard_shadow_rejections_total"), "evaluation counted");
        let mut tally = Tally::default();
        for v in &kept {
            tally.add(&contract, v.applied, &v.evaluation);
        }
        tally.emit();
        kept
    });
    // Held to 1.0.0, all four pass; 3.0.0 (closed, payment_method required) rejects three.
    assert!(verdicts.iter().all(|v| v.evaluation.is_valid()));
    let shadow_rejects: Vec<bool> = verdicts.iter().map(|v| v.evaluation.shadows[0].rejection.is_some()).collect();
    assert_eq!(shadow_rejects, [false, true, true, true]);
    let text = handle.render();
    let line = text.lines().find(|l| l.starts_with("meshguard_shadow_rejections_total")).unwrap_or_default();
    assert!(line.contains("version=\"3.0.0\"") && line.ends_with(" 3"), "{text}");
}

#[test]
fn check_counts_the_shipped_loans_shadow_version_exactly() {
    // loans-data-product's loan-schema 1.0.0 is enforced, 2.0.0 runs in shadow.
    let files = Files::Disk { products: repo().join("config/products"), schemas: repo().join("schemas") };
    let catalog = Catalog::load(&files).unwrap_or_else(|e| panic!("{e}"));
    let contract =
        catalog.product("loans-data-product").and_then(|p| p.contract(Some("loan-schema"))).cloned().unwrap_or_else(|| panic!("loans"));
    assert_eq!(contract.newest().version, "1.0.0");
    // The expected count, without the shadow schema: what 1.0.0 rejects, plus the records it
    // accepts whose currency is outside 2.0.0's list or that lack a field 2.0.0 requires.
    // (The sample holds invalid UTF-8 on purpose: read bytes.)
    let bytes = std::fs::read(repo().join("samples/loans.ndjson")).unwrap_or_else(|e| panic!("{e}"));
    let (mut would_reject, mut accepted_by_v1, mut records) = (0u64, 0u64, 0u64);
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        records += 1;
        let v1_valid = evaluate(&contract, line, NOW).is_valid();
        let record: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let breaks_v2 = !["EUR", "USD", "GBP"].contains(&record["currency"].as_str().unwrap_or_default())
            || ["interest_rate", "term_months", "updated_at"].iter().any(|f| record.get(f).is_none());
        if !v1_valid || breaks_v2 {
            would_reject += 1;
            accepted_by_v1 += u64::from(v1_valid);
        }
    }
    let out = Command::new(binary())
        .args(["check", "--product", "loans-data-product", "--format", "json", "samples/loans.ndjson"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["records"].as_u64(), Some(records));
    assert_eq!(report["version"], "1.0.0");
    assert_eq!(report["invalid"], 13, "the shadow version rejects nothing");
    assert_eq!(report["shadow"][0]["version"], "2.0.0");
    assert_eq!(report["shadow"][0]["would_reject"].as_u64(), Some(would_reject));
    assert_eq!(report["shadow"][0]["would_reject_accepted"].as_u64(), Some(accepted_by_v1));
    assert!(accepted_by_v1 > 0);

    let out = Command::new(binary())
        .args(["check", "--product", "loans-data-product", "--contract-version", "2.0.0", "samples/loans.ndjson"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2), "a shadow version cannot be applied");
    assert!(String::from_utf8_lossy(&out.stderr).contains("enforces 1.0.0"));
}

#[test]
fn lint_rejects_a_repeated_version() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let products = dir.path().join("config/products");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::copy(repo().join("schemas/payment-schema.json"), dir.path().join("schemas/p.json")).unwrap_or_else(|e| panic!("{e}"));
    let yaml = "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: t\n  domain: payments\n  version: \"1\"\n  owner: t@example.com\nspec:\n  contracts:\n    - name: pay\n      version: \"1.0.0\"\n      schema: schemas/p.json\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99%\n      versions:\n        - version: \"1.0.0\"\n          schema: schemas/p.json\n          mode: shadow\n";
    std::fs::write(products.join("t.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(binary()).args(["lint", "--config"]).arg(dir.path().join("config")).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("version \"1.0.0\" is declared twice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
