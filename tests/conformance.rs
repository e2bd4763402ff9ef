//! The official JSON Schema test suite (draft-07) through meshguard's contract engine.
//!
//! Every case of `tests/draft7/*.json`, plus `tests/draft7/optional/format/*.json` for the formats
//! contracts use, must give the suite's `valid` verdict through [`JsonSchemaContract::compile`],
//! and `is_valid` and `validate` must agree on it. Remote `$ref`s to `http://localhost:1234/` are
//! served from the suite's `remotes/` folder; nothing touches the network.
//!
//! The suite lives outside the crate, in `../shared/conformance/json-schema-test-suite/` (see
//! `../shared/conformance/README.md`). A missing suite fails the test: it never passes silently.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use meshguard::contract::tape::Tape;
use meshguard::contract::{JsonSchemaContract, SchemaRetriever, Violation};
use serde_json::{Value, json};

/// Cases that cannot pass, in one place: `(file, group description, test description, reason)`.
/// `file` is relative to `tests/draft7/` (e.g. `optional/format/email.json`). Every entry must name
/// a case that exists and still fails, so a stale entry fails the test.
const SKIPS: &[(&str, &str, &str, &str)] = &[];

/// `optional/format/` files for the formats that contracts use. The suite has no draft-07
/// `uuid.json` (`uuid` became a format in 2019-09); [`uuid_cases`] stands in for it.
const FORMAT_FILES: &[&str] = &["date-time", "date", "time", "email", "ipv4", "ipv6", "uri"];

/// The draft-07 required tests number well over 800; far fewer means the suite was not found
/// whole (an emptied folder must not pass).
const MIN_REQUIRED_CASES: usize = 800;

const REMOTE_BASE: &str = "http://localhost:1234/";

fn suite_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/json-schema-test-suite")
}

/// One case's identity: `(file, group, test)`.
type CaseId = (String, String, String);

#[derive(Default)]
struct Tally {
    passed: usize,
    skipped: usize,
    /// Skipped cases that now pass (their skip entry is stale).
    skipped_but_passing: Vec<String>,
    failures: Vec<String>,
    /// Every case seen, to check that each skip names a real one.
    seen: BTreeMap<CaseId, usize>,
}

fn skip_reason(file: &str, group: &str, test: &str) -> Option<&'static str> {
    SKIPS.iter().find(|(f, g, t, _)| *f == file && *g == group && *t == test).map(|(_, _, _, r)| *r)
}

/// What one case produced, or why it could not produce anything.
fn check_case(contract: &JsonSchemaContract, data: &Value, expected: bool) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let quick = contract.is_valid(data);
        let mut violations: Vec<Violation> = Vec::new();
        let full = contract.validate(data, &mut violations);
        // The stream's form: the same document's bytes parsed onto a tape.
        let bytes = serde_json::to_vec(data).unwrap_or_default();
        let mut tape = Tape::new();
        let on_tape = tape
            .parse(&bytes)
            .map_err(|e| format!("{e:?}"))
            .and_then(|()| tape.root().map(|r| contract.is_valid_tape(r)).ok_or_else(|| "empty tape".to_owned()));
        (quick, full, violations, on_tape)
    }));
    let (quick, full, violations, on_tape) = outcome.map_err(|_| "validation panicked".to_owned())?;
    if quick != full {
        return Err(format!("is_valid says {quick} but validate says {full}"));
    }
    if on_tape != Ok(quick) {
        return Err(format!("is_valid says {quick} but the tape says {on_tape:?}"));
    }
    if full && !violations.is_empty() {
        return Err(format!("validate says valid but reported {} violation(s)", violations.len()));
    }
    if !full && violations.is_empty() {
        return Err("validate says invalid but reported no violation".to_owned());
    }
    if full != expected {
        let detail =
            violations.first().map(|v| format!(" (first violation: {} at '{}': {})", v.keyword, v.path, v.message)).unwrap_or_default();
        return Err(format!("expected valid={expected}, got valid={full}{detail}"));
    }
    Ok(())
}

/// Runs every group of one suite file (already parsed) and adds to `tally`.
fn run_groups(file: &str, groups: &Value, retriever: &SchemaRetriever, tally: &mut Tally) {
    let Some(groups) = groups.as_array() else {
        tally.failures.push(format!("{file}: not an array of test groups"));
        return;
    };
    for group in groups {
        let group_desc = group.get("description").and_then(Value::as_str).unwrap_or("<no description>");
        let schema = group.get("schema").cloned().unwrap_or(Value::Null);
        let tests = group.get("tests").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if tests.is_empty() {
            tally.failures.push(format!("{file} / {group_desc}: group has no tests"));
        }
        let compiled = catch_unwind(AssertUnwindSafe(|| JsonSchemaContract::compile(&schema, None, retriever.clone())))
            .unwrap_or_else(|_| Err("compile panicked".to_owned()));
        for test in tests {
            let test_desc = test.get("description").and_then(Value::as_str).unwrap_or("<no description>");
            *tally.seen.entry((file.to_owned(), group_desc.to_owned(), test_desc.to_owned())).or_default() += 1;
            let where_ = format!("{file} / {group_desc} / {test_desc}");
            let result = match (&compiled, test.get("valid").and_then(Value::as_bool), test.get("data")) {
                (_, None, _) | (_, _, None) => Err("malformed case: no boolean `valid` or no `data`".to_owned()),
                (Err(e), _, _) => Err(format!("schema did not compile: {e}")),
                (Ok(contract), Some(expected), Some(data)) => check_case(contract, data, expected),
            };
            match (skip_reason(file, group_desc, test_desc), result) {
                (Some(_), Ok(())) => tally.skipped_but_passing.push(where_),
                (Some(_), Err(_)) => tally.skipped += 1,
                (None, Ok(())) => tally.passed += 1,
                (None, Err(e)) => tally.failures.push(format!("{where_}: {e}")),
            }
        }
    }
}

fn run_file(root: &Path, file: &str, retriever: &SchemaRetriever, tally: &mut Tally) {
    let path = root.join("tests/draft7").join(file);
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| format!("{}: not JSON: {e}", path.display())));
    match parsed {
        Ok(groups) => run_groups(file, &groups, retriever, tally),
        Err(e) => tally.failures.push(e),
    }
}

/// `uuid` cases for draft-07 contracts (meshguard asserts `uuid` under draft-07 with its own
/// checker). Taken from the suite's `tests/draft2019-09/optional/format/uuid.json` (same upstream
/// project and licence, not present in the shared copy), with `$schema` dropped, plus a few of ours.
fn uuid_cases() -> Value {
    json!([
        {
            "description": "uuid format",
            "schema": { "format": "uuid" },
            "tests": [
                { "description": "all string formats ignore integers", "data": 12, "valid": true },
                { "description": "all string formats ignore floats", "data": 13.7, "valid": true },
                { "description": "all string formats ignore objects", "data": {}, "valid": true },
                { "description": "all string formats ignore arrays", "data": [], "valid": true },
                { "description": "all string formats ignore booleans", "data": false, "valid": true },
                { "description": "all string formats ignore nulls", "data": null, "valid": true },
                { "description": "all upper-case", "data": "2EB8AA08-AA98-11EA-B4AA-73B441D16380", "valid": true },
                { "description": "all lower-case", "data": "2eb8aa08-aa98-11ea-b4aa-73b441d16380", "valid": true },
                { "description": "mixed case", "data": "2eb8aa08-AA98-11ea-B4Aa-73B441D16380", "valid": true },
                { "description": "all zeroes is valid", "data": "00000000-0000-0000-0000-000000000000", "valid": true },
                { "description": "wrong length", "data": "2eb8aa08-aa98-11ea-b4aa-73b441d1638", "valid": false },
                { "description": "missing section", "data": "2eb8aa08-aa98-11ea-73b441d16380", "valid": false },
                { "description": "bad characters (not hex)", "data": "2eb8aa08-aa98-11ea-b4ga-73b441d16380", "valid": false },
                { "description": "no dashes", "data": "2eb8aa08aa9811eab4aa73b441d16380", "valid": false },
                { "description": "too few dashes", "data": "2eb8aa08aa98-11ea-b4aa73b441d16380", "valid": false },
                { "description": "too many dashes", "data": "2eb8-aa08-aa98-11ea-b4aa73b44-1d16380", "valid": false },
                { "description": "dashes in the wrong spot", "data": "2eb8aa08aa9811eab4aa73b441d16380----", "valid": false },
                { "description": "shifted dashes", "data": "2eb8aa0-8aa98-11e-ab4aa7-3b441d16380", "valid": false },
                { "description": "valid version 4", "data": "98d80576-482e-427f-8434-7f86890ab222", "valid": true },
                { "description": "valid version 5", "data": "99c17cbb-656f-564a-940f-1a4568f03487", "valid": true },
                { "description": "hypothetical version 6", "data": "99c17cbb-656f-664a-940f-1a4568f03487", "valid": true },
                { "description": "hypothetical version 15", "data": "99c17cbb-656f-f64a-940f-1a4568f03487", "valid": true },
                { "description": "URN prefixed UUID is invalid", "data": "urn:uuid:2eb8aa08-aa98-11ea-b4aa-73b441d16380", "valid": false },
                { "description": "trailing hyphen after a complete UUID is invalid", "data": "2eb8aa08-aa98-11ea-b4aa-73b441d16380-", "valid": false },
                // meshguard's own additions.
                { "description": "braced (Microsoft registry form) is invalid", "data": "{2eb8aa08-aa98-11ea-b4aa-73b441d16380}", "valid": false },
                { "description": "leading space is invalid", "data": " 2eb8aa08-aa98-11ea-b4aa-73b441d16380", "valid": false },
                { "description": "trailing newline is invalid", "data": "2eb8aa08-aa98-11ea-b4aa-73b441d16380\n", "valid": false },
                { "description": "non-ASCII digit is invalid", "data": "2eb8aa08-aa98-11ea-b4aa-73b441d1638\u{0663}", "valid": false },
                { "description": "empty string is invalid", "data": "", "valid": false }
            ]
        },
        {
            "description": "uuid format inside a contract-shaped object",
            "schema": {
                "type": "object",
                "required": ["payment_id"],
                "properties": { "payment_id": { "type": "string", "format": "uuid" } }
            },
            "tests": [
                { "description": "a uuid id is valid", "data": { "payment_id": "3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f" }, "valid": true },
                { "description": "a business id is invalid", "data": { "payment_id": "PAY-000123" }, "valid": false }
            ]
        }
    ])
}

#[test]
fn draft7_suite_gives_the_expected_verdicts() {
    let root = suite_root();
    let draft7 = root.join("tests/draft7");
    let remotes = root.join("remotes");
    assert!(
        draft7.is_dir() && remotes.is_dir(),
        "JSON Schema test suite not found: looked for {} and {} (expected a copy of \
         json-schema-org/JSON-Schema-Test-Suite, see ../shared/conformance/README.md)",
        draft7.display(),
        remotes.display(),
    );
    let retriever = SchemaRetriever::default().with_prefix(REMOTE_BASE, &remotes);

    let mut required: Vec<String> = std::fs::read_dir(&draft7)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", draft7.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    required.sort();
    assert!(!required.is_empty(), "no *.json test files in {}", draft7.display());

    let mut tally = Tally::default();
    for file in &required {
        run_file(&root, file, &retriever, &mut tally);
    }
    let required_cases = tally.seen.values().sum::<usize>();
    assert!(
        required_cases >= MIN_REQUIRED_CASES,
        "only {required_cases} cases in {} ({} files); expected at least {MIN_REQUIRED_CASES}: is the suite copy complete?",
        draft7.display(),
        required.len(),
    );

    for format in FORMAT_FILES {
        run_file(&root, &format!("optional/format/{format}.json"), &retriever, &mut tally);
    }
    run_groups("meshguard/uuid", &uuid_cases(), &retriever, &mut tally);

    let missing_skips: Vec<String> = SKIPS
        .iter()
        .filter(|(f, g, t, _)| !tally.seen.contains_key(&((*f).to_owned(), (*g).to_owned(), (*t).to_owned())))
        .map(|(f, g, t, _)| format!("{f} / {g} / {t}"))
        .collect();

    let total = tally.seen.values().sum::<usize>();
    println!(
        "conformance (JSON Schema draft-07 suite): {total} cases, {} passed, {} skipped, {} failed \
         ({} required files, {} format files + meshguard uuid cases)",
        tally.passed,
        tally.skipped,
        tally.failures.len() + tally.skipped_but_passing.len(),
        required.len(),
        FORMAT_FILES.len(),
    );

    let mut problems = Vec::new();
    if !tally.failures.is_empty() {
        problems.push(format!("{} case(s) failed:\n  {}", tally.failures.len(), tally.failures.join("\n  ")));
    }
    if !missing_skips.is_empty() {
        problems.push(format!("SKIPS names case(s) that do not exist (stale):\n  {}", missing_skips.join("\n  ")));
    }
    if !tally.skipped_but_passing.is_empty() {
        problems.push(format!("SKIPS names case(s) that now pass (remove them):\n  {}", tally.skipped_but_passing.join("\n  ")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
