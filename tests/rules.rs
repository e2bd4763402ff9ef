//! Business rules (CEL) on contracts: exact counts per rule in `check` on a hand-written sample
//! and on a generated corpus, run-time errors as violations (never a panic), compile errors in
//! `lint` naming the file and the rule, the per-rule metric, and a property test over rule
//! evaluation on arbitrary JSON (the `Value` and the tape forms must agree).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshguard::contract::rules::RuleSet;
use meshguard::contract::tape::Tape;
use meshguard::contract::{AnyRecord, RuleOutcome};
use meshguard::generate::Generator;
use meshguard::product::model::{RuleSeverity, RuleSpec};
use meshguard::product::{Catalog, Files};
use meshguard::verdict::{Tally, evaluate, evaluate_lean};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshguard"))
}

fn catalog() -> Catalog {
    Catalog::load(&Files::Disk { products: repo().join("config/products"), schemas: repo().join("schemas") })
        .unwrap_or_else(|e| panic!("{e}"))
}

fn check_json(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(binary())
        .arg("check")
        .args(args)
        .args(["--format", "json"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.code(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr))))
}

/// `rule → (count, lines)` of a report's `violations` or `rule_warnings`.
fn by_rule(groups: &Value) -> BTreeMap<String, (u64, Vec<u64>)> {
    groups
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let rule = g["rule"].as_str()?.to_owned();
            let lines = g["lines"].as_array().into_iter().flatten().filter_map(|l| l["line"].as_u64()).collect();
            Some((rule, (g["count"].as_u64().unwrap_or(0), lines)))
        })
        .collect()
}

#[test]
fn check_counts_each_rule_exactly_on_the_rules_sample() {
    let (code, report) = check_json(&["--product", "loans-data-product", "samples/loans-rules.ndjson"]);
    assert_eq!(code, Some(1));
    assert_eq!(report["records"], 12);
    assert_eq!(report["invalid"], 5);
    assert_eq!(report["rule_violations"], 4, "line 10 breaks the schema: its rules are not run");
    let errors = by_rule(&report["violations"]);
    let expected: BTreeMap<String, (u64, Vec<u64>)> = [
        ("positive-principal".to_owned(), (2, vec![2, 9])),
        ("collateral-covers-principal".to_owned(), (1, vec![3])),
        ("repaid-has-update".to_owned(), (2, vec![5, 9])),
    ]
    .into();
    assert_eq!(errors, expected);
    let warnings = by_rule(&report["rule_warnings"]);
    let expected: BTreeMap<String, (u64, Vec<u64>)> =
        [("settlement-currency".to_owned(), (2, vec![6, 12])), ("rate-cap".to_owned(), (3, vec![7, 8, 12]))].into();
    assert_eq!(warnings, expected);
    // A rule that cannot be evaluated (interest_rate missing) carries the evaluator's error.
    let rate_cap = report["rule_warnings"].as_array().into_iter().flatten().find(|g| g["rule"] == "rate-cap").cloned().unwrap_or_default();
    assert!(rate_cap["example"].as_str().unwrap_or_default().contains("interest_rate"), "{rate_cap}");
    let keyword_rule = report["violations"].as_array().into_iter().flatten().filter(|g| g["keyword"] == "rule").count();
    assert_eq!(keyword_rule, 3);
}

#[test]
fn check_text_report_lists_rules_and_warnings() {
    let out = Command::new(binary())
        .args(["check", "--product", "loans-data-product", "--now", "2026-11-29T12:00:01Z", "samples/loans-rules.ndjson"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("invalid 5 (undecodable 0, schema violations 1, rule violations 4)"), "{text}");
    assert!(text.contains("rule positive-principal"), "{text}");
    assert!(text.contains("rule warnings (counted; the records pass):"), "{text}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap_or_else(|e| panic!("{e}"));
    assert!(readme.contains(text.as_ref()), "README.md must show this report word for word:\n{text}");
}

#[test]
fn payments_report_is_unchanged_by_rules_support() {
    // The payments product has no rules: the report keeps its shape (README's first command).
    let (_, report) = check_json(&["--product", "payments-data-product", "samples/payments.ndjson"]);
    assert!(report.get("rule_violations").is_none() && report.get("rule_warnings").is_none(), "{report}");
}

#[test]
fn generated_corpus_gets_exact_rule_counts_in_check_and_the_library() {
    let catalog = catalog();
    let contract =
        catalog.product("loans-data-product").and_then(|p| p.contract(Some("loan-schema"))).cloned().unwrap_or_else(|| panic!("loans"));
    assert_eq!(contract.rules.rules().len(), 5);
    let now = time::macros::datetime!(2026-11-29 12:00:00 UTC);
    let mut generator = Generator::for_contract(&contract, 4242, 0.2, 0.0).unwrap_or_else(|| panic!("generator"));
    let mut corpus = Vec::new();
    let (mut settlement, mut valid) = (0u64, 0u64);
    for _ in 0..2_000 {
        let event = generator.next_event(now);
        let eval = evaluate(&contract, &event.payload, now);
        // The shipped error rules hold for every record the generator means to be valid.
        assert_eq!(eval.is_valid(), event.intent.is_valid(), "{:?}: {:?}", event.intent, eval.rejection);
        // The expected warnings, computed without CEL.
        if eval.rejection.as_ref().is_none_or(|r| r.class == "rule_violation") {
            let record: Value = serde_json::from_slice(&event.payload).unwrap_or_default();
            if !["EUR", "USD", "GBP"].contains(&record["currency"].as_str().unwrap_or_default()) {
                settlement += 1;
            }
        }
        valid += u64::from(eval.is_valid());
        let got: Vec<&str> = eval.warnings.iter().filter_map(|w| w.rule.as_deref()).collect();
        // The tape path (the stream's) gives the same verdict and warnings.
        let mut tape = Tape::new();
        let (lean, _) = evaluate_lean(&contract, &event.payload, now, &mut tape, |_, _| None::<()>);
        assert_eq!(lean.is_valid(), eval.is_valid());
        assert_eq!(lean.warnings.iter().filter_map(|w| w.rule.as_deref()).collect::<Vec<_>>(), got);
        corpus.extend_from_slice(&event.payload);
        corpus.push(b'\n');
    }
    assert!(settlement > 400 && valid > 1_400, "{settlement} settlement warnings, {valid} valid");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("loans.ndjson");
    std::fs::write(&file, &corpus).unwrap_or_else(|e| panic!("{e}"));
    let (_, report) = check_json(&["--product", "loans-data-product", file.to_str().unwrap_or_default()]);
    assert_eq!(report["rule_violations"], 0);
    assert_eq!(report["valid"].as_u64(), Some(valid));
    let warnings = by_rule(&report["rule_warnings"]);
    assert_eq!(warnings.get("settlement-currency").map(|w| w.0), Some(settlement));
    assert_eq!(warnings.get("rate-cap"), None, "generated rates stay below 15%");
}

fn spec(name: &str, expr: &str, severity: RuleSeverity) -> RuleSpec {
    RuleSpec { name: name.into(), expr: expr.into(), severity, description: None }
}

fn run_rules(rules: &RuleSet, record: &Value) -> RuleOutcome {
    let mut out = RuleOutcome::default();
    rules.evaluate(AnyRecord::Value(record), &mut out);
    out
}

#[test]
fn a_rule_that_errors_at_run_time_is_a_violation_carrying_the_error() {
    let rules = RuleSet::compile(
        "p",
        "c",
        &[
            spec("missing-field", "completed_at != ''", RuleSeverity::Error),
            spec("wrong-type", "amount + 'x' == 'y'", RuleSeverity::Error),
            spec("divide-by-zero", "amount / 0 == 1", RuleSeverity::Error),
            spec("not-a-bool", "amount", RuleSeverity::Error),
            spec("deep-missing", "record.a.b.c == 1", RuleSeverity::Warn),
            spec("fine", "amount == 10", RuleSeverity::Error),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let out = run_rules(&rules, &json!({"amount": 10}));
    let names: Vec<&str> = out.errors.iter().filter_map(|v| v.rule.as_deref()).collect();
    assert_eq!(names, ["missing-field", "wrong-type", "divide-by-zero", "not-a-bool"]);
    assert!(out.errors[0].message.contains("completed_at"), "{}", out.errors[0].message);
    assert!(out.errors[3].message.contains("instead of a bool"), "{}", out.errors[3].message);
    assert!(out.errors.iter().all(|v| v.keyword == "rule" && v.path.is_empty()));
    assert_eq!(out.warnings.len(), 1);
    assert_eq!(out.warnings[0].rule.as_deref(), Some("deep-missing"));
}

#[test]
fn compile_errors_name_every_bad_rule() {
    let errors = RuleSet::compile(
        "p",
        "c",
        &[spec("ok", "true", RuleSeverity::Error), spec("broken", "amount >", RuleSeverity::Error), spec("ok", "true", RuleSeverity::Warn)],
    )
    .err()
    .unwrap_or_default();
    let names: Vec<&str> = errors.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(names, ["broken", "ok"]);
    assert!(errors[1].message.contains("used by another rule"));
}

fn temp_products(rules_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let products = dir.path().join("config/products");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::copy(repo().join("schemas/payment-schema.json"), dir.path().join("schemas/payment-schema.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let yaml = format!(
        "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: t\n  domain: payments\n  version: \"1\"\n  owner: t@example.com\nspec:\n  contracts:\n    - name: c\n      version: \"1\"\n      schema: schemas/payment-schema.json\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99%\n      rules:\n{rules_yaml}"
    );
    std::fs::write(products.join("t.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn lint(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(binary()).args(["lint", "--config"]).arg(dir.join("config")).output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn lint_names_the_file_the_rule_and_the_compile_error() {
    let dir =
        temp_products("        - name: fine\n          expr: amount > 0.0\n        - name: half-written\n          expr: \"amount > \"\n");
    let (code, err) = lint(dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("t.yaml:"), "{err}");
    assert!(err.contains("rule \"half-written\" does not compile"), "{err}");
    assert!(!err.contains("\"fine\""), "{err}");

    let dir = temp_products("        - name: typo\n          expr: amount > 0.0\n          severty: warn\n");
    let (code, err) = lint(dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("severty"), "{err}");
}

#[test]
fn rule_violations_are_counted_per_rule_in_metrics_once_final() {
    let dir = temp_products(
        "        - name: positive\n          expr: amount > 0.0\n        - name: small\n          expr: amount < 100.0\n          severity: warn\n",
    );
    let catalog = Catalog::load(&Files::Disk { products: dir.path().join("config/products"), schemas: dir.path().join("schemas") })
        .unwrap_or_else(|e| panic!("{e}"));
    let contract = catalog.product("t").and_then(|p| p.contract(Some("c"))).cloned().unwrap_or_else(|| panic!("contract"));
    let now = time::macros::datetime!(2026-11-29 12:00:00 UTC);
    let payload = |amount: f64| {
        json!({"payment_id": "5f0c8a52-8a4e-4d8b-9c43-2f1d6c1b7e10", "customer_id": 1, "amount": amount, "currency": "EUR",
               "status": "PENDING", "created_at": "2026-11-29T11:59:00Z"})
        .to_string()
    };
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rendered = metrics::with_local_recorder(&recorder, || {
        // Evaluated twice, as the stream evaluates a batch again after a sink failure: the
        // evaluations themselves count nothing, the tally of the one that is kept counts once.
        let amounts = [0.0, 0.0, 5.0, 500.0, 1000.0];
        let evaluate_all = || amounts.iter().map(|a| evaluate(&contract, payload(*a).as_bytes(), now)).collect::<Vec<_>>();
        let _failed_attempt = evaluate_all();
        let kept = evaluate_all();
        let mut tally = Tally::default();
        let before = handle.render();
        for eval in &kept {
            tally.add(&contract, &contract, eval);
        }
        tally.emit();
        // Emitting empties the tally: a second emit adds nothing.
        tally.emit();
        before
    });
    assert!(!rendered.contains("meshguard_rule_violations_total"), "evaluation counted: {rendered}");
    let text = handle.render();
    let line = |rule: &str| {
        text.lines()
            .find(|l| l.starts_with("meshguard_rule_violations_total") && l.contains(&format!("rule=\"{rule}\"")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("positive").ends_with(" 2"), "{text}");
    assert!(line("positive").contains("severity=\"error\"") && line("positive").contains("product=\"t\""), "{text}");
    assert!(line("positive").contains("version=\"1\""), "{text}");
    assert!(line("small").ends_with(" 2") && line("small").contains("severity=\"warn\""), "{text}");
}

/// Arbitrary JSON, biased toward the fields the rules read.
fn arbitrary(rng: &mut StdRng, depth: usize) -> Value {
    let pick = if depth > 3 { rng.random_range(0..5) } else { rng.random_range(0..7) };
    match pick {
        0 => Value::Null,
        1 => Value::Bool(rng.random_bool(0.5)),
        2 => json!(rng.random_range(-1_000_000i64..1_000_000)),
        3 => json!(rng.random_range(-1e9..1e9)),
        4 => Value::String(["", "EUR", "COMPLETED", "x\u{e9}\"\\", "2026-11-29T12:00:00Z"][rng.random_range(0..5)].to_owned()),
        5 => Value::Array((0..rng.random_range(0..4)).map(|_| arbitrary(rng, depth + 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(0..6) {
                let key = ["amount", "currency", "status", "completed_at", "items", "a", "b", "record"][rng.random_range(0..8)];
                let _ = m.insert(key.to_owned(), arbitrary(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

#[test]
fn property_rule_evaluation_on_arbitrary_json_never_panics_and_both_forms_agree() {
    let exprs = [
        "amount > 0.0",
        "currency in ['EUR', 'USD', 'GBP']",
        "status != 'COMPLETED' || has(record.completed_at)",
        "size(items) < 3 && items.all(i, i != null)",
        "record.a.b == record.b",
        "amount / 0 > 1",
        "int(amount) % 7 == 0",
        "string(currency).startsWith('E')",
        "items.exists(x, x > 2) || items.map(y, y * 2).size() > 0",
        "matches(currency, '^[A-Z]{3}$')",
        "double(amount) * 1e308 * 10.0 > 0.0",
        "amount - 9223372036854775807 - 10 < 0",
    ];
    let specs: Vec<RuleSpec> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| spec(&format!("r{i}"), e, if i % 2 == 0 { RuleSeverity::Error } else { RuleSeverity::Warn }))
        .collect();
    let rules = RuleSet::compile("p", "c", &specs).unwrap_or_else(|e| panic!("{e:?}"));
    let mut rng = StdRng::seed_from_u64(17);
    let mut failed = 0usize;
    for i in 0..3_000 {
        let record = match arbitrary(&mut rng, 0) {
            v @ Value::Object(_) => v,
            other => json!({ "amount": other }),
        };
        let on_value = run_rules(&rules, &record);
        // Each rule fails at most once, with its own name, in the list its severity says.
        assert!(on_value.errors.len() + on_value.warnings.len() <= exprs.len());
        assert!(
            on_value
                .errors
                .iter()
                .all(|v| v.rule.as_deref().is_some_and(|r| specs.iter().any(|s| s.name == r && s.severity == RuleSeverity::Error)))
        );
        assert!(
            on_value
                .warnings
                .iter()
                .all(|v| v.rule.as_deref().is_some_and(|r| specs.iter().any(|s| s.name == r && s.severity == RuleSeverity::Warn)))
        );
        // The stream evaluates on a tape: same outcome.
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let mut tape = Tape::new();
        tape.parse(&bytes).unwrap_or_else(|e| panic!("record {i}: {e:?}"));
        let root = tape.root().unwrap_or_else(|| panic!("record {i}: empty tape"));
        let mut on_tape = RuleOutcome::default();
        rules.evaluate(AnyRecord::Tape(root), &mut on_tape);
        assert_eq!(on_value, on_tape, "record {i}: {record}");
        // And the same outcome twice.
        assert_eq!(run_rules(&rules, &record), on_value);
        failed += on_value.errors.len() + on_value.warnings.len();
    }
    assert!(failed > 3_000, "the arbitrary records should break many rules, broke {failed}");
}
