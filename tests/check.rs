//! `meshguard check` and `lint` end to end (the binary), and the verdict of every generated
//! record against the generator's intent (the library).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{binary, repo};
use meshguard::check::{Checker, Input, Plan, check_input, read_records, render_text, report_at};
use meshguard::generate::Generator;
use meshguard::product::{Catalog, Files};
use meshguard::verdict::evaluate;

fn catalog() -> Catalog {
    Catalog::load(&Files::Disk { products: repo().join("config/products"), schemas: repo().join("schemas") })
        .unwrap_or_else(|e| panic!("{e}"))
}

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary()).arg("check").args(args).current_dir(repo()).output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_generated_record_gets_the_intended_verdict() {
    let catalog = catalog();
    let now = time::OffsetDateTime::now_utc();
    for product in &catalog.products {
        for contract in &product.contracts {
            let mut generator =
                Generator::for_contract(contract, 1234, 0.3, 0.0).unwrap_or_else(|| panic!("no generator for {}", contract.name));
            let (mut valid, mut invalid) = (0, 0);
            for i in 0..3_000 {
                let event = generator.next_event(now);
                let eval = evaluate(contract, &event.payload, now);
                assert_eq!(
                    eval.is_valid(),
                    event.intent.is_valid(),
                    "{} event {i} ({:?}): {:?}",
                    contract.key(),
                    event.intent,
                    eval.rejection
                );
                if eval.is_valid() {
                    valid += 1;
                    assert_eq!(eval.record_id.as_deref(), Some(event.key.as_str()), "record id from the key field");
                    assert!(eval.completeness.is_full());
                } else {
                    invalid += 1;
                }
            }
            assert!(valid > 1_500 && invalid > 600, "{}: {valid} valid, {invalid} invalid", contract.key());
        }
    }
}

#[test]
fn samples_get_the_right_verdict_for_every_line() {
    // The samples are written by `meshguard produce` with the seeds in samples/README.md; the
    // same generator gives each line's intended verdict.
    let catalog = catalog();
    let cases = [("payments-data-product", None, "samples/payments.ndjson", 7u64, 200usize, 0.1)];
    for (product, contract, file, seed, count, ratio) in cases {
        let c = catalog.product(product).and_then(|p| p.contract(contract)).cloned().unwrap_or_else(|| panic!("{product}"));
        let now = time::macros::datetime!(2026-11-29 12:00:00 UTC);
        let mut generator = Generator::for_contract(&c, seed, ratio, 0.0).unwrap_or_else(|| panic!("generator"));
        let expected_invalid: Vec<u64> = (1..=count as u64).filter(|_| !generator.next_event(now).intent.is_valid()).collect();
        let (code, stdout, stderr) = check(&["--product", product, "--format", "json", file]);
        assert_eq!(code, Some(1), "{stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(report["records"], count);
        assert_eq!(report["invalid"].as_u64(), Some(expected_invalid.len() as u64));
        let mut lines: Vec<u64> = report["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["lines"].as_array().cloned().unwrap_or_default())
            .filter_map(|l| l["line"].as_u64())
            .collect();
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines, expected_invalid, "each invalid line is reported (fewer than 10 per group here)");
    }
}

#[test]
fn shipped_samples_check_as_documented() {
    for (product, contract, file, records) in [
        ("payments-data-product", None, "samples/payments.ndjson", 200),
        ("loans-data-product", None, "samples/loans.ndjson", 100),
        ("loans-data-product", Some("loan-application-schema"), "samples/loan-applications.ndjson", 50),
        ("cards-data-product", None, "samples/cards.avro", 100),
    ] {
        let mut args = vec!["--product", product, "--format", "json", file];
        if let Some(c) = contract {
            args.extend(["--contract", c]);
        }
        let (code, stdout, stderr) = check(&args);
        assert_eq!(code, Some(1), "{file}: some records are invalid on purpose; {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report["records"], records, "{file}");
        let valid = report["valid"].as_u64().unwrap_or(0);
        assert!(valid > 0 && valid < records, "{file}: {valid}");
    }
}

#[test]
fn an_undecodable_line_is_invalid_with_its_line_number() {
    let mut child = Command::new(binary())
        .args(["check", "--product", "payments-data-product", "--format", "json", "-"])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let valid = r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":7,"amount":19.99,"currency":"EUR","status":"COMPLETED","created_at":"2026-11-29T12:00:00Z"}"#;
    let input = format!("{valid}\n\n{{\"payment_id\": \n{valid}\n");
    use std::io::Write;
    child.stdin.take().map(|mut s| s.write_all(input.as_bytes())).transpose().unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["records"], 3, "the blank line is skipped");
    assert_eq!(report["valid"], 2, "19.99 is a multiple of 0.01");
    assert_eq!(report["undecodable"], 1);
    assert_eq!(report["violations"][0]["keyword"], "decode");
    assert_eq!(report["violations"][0]["lines"][0]["line"], 3);
}

#[test]
fn usage_and_configuration_errors_exit_2_with_a_clear_message() {
    let (code, _, err) = check(&["--product", "nope", "samples/payments.ndjson"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown product \"nope\"") && err.contains("payments-data-product"), "{err}");
    let (code, _, err) = check(&["--product", "payments-data-product", "--contract", "nope", "samples/payments.ndjson"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("payment-analytics-schema"), "lists the contracts: {err}");
    let (code, _, err) = check(&["--product", "payments-data-product", "/no/such/file.ndjson"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/no/such/file.ndjson"), "{err}");
    let (code, _, err) = check(&["samples/payments.ndjson"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--product"), "{err}");
    let (code, _, _) = check(&["--product", "payments-data-product", "--now", "yesterday", "samples/payments.ndjson"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = check(&[]);
    assert_eq!(code, Some(2), "clap usage error");
}

#[test]
fn check_works_outside_a_checkout_on_the_built_in_products() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sample = repo().join("samples/payments.ndjson");
    let out = Command::new(binary())
        .args(["check", "--product", "payments-data-product"])
        .arg(&sample)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("records       200"));
}

#[test]
fn the_seed_files_are_shipped_byte_for_byte() {
    let shared = repo().join("../shared/seed");
    assert!(shared.is_dir(), "the seed folder {} is missing", shared.display());
    for (ours, seed) in
        [("config/products/payments.yaml", "payments-data-product.yaml"), ("schemas/payment-schema.json", "payment-schema.json")]
    {
        let a = std::fs::read(repo().join(ours)).unwrap_or_else(|e| panic!("{e}"));
        let b = std::fs::read(shared.join(seed)).unwrap_or_else(|e| panic!("{e}"));
        assert!(a == b, "{ours} differs from the seed's {seed}");
    }
}

fn lint(dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary()).args(["lint", "--config"]).arg(dir).output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn copy_config() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for sub in ["config/products", "schemas"] {
        let dst = tmp.path().join(sub);
        std::fs::create_dir_all(&dst).unwrap_or_else(|e| panic!("{e}"));
        for entry in std::fs::read_dir(repo().join(sub)).unwrap_or_else(|e| panic!("{e}")).flatten() {
            let _ = std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    tmp
}

#[test]
fn lint_passes_on_the_shipped_config() {
    let (code, out, err) = lint(&repo().join("config"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 data products, 5 contracts, 9 topics bound"), "{out}");
}

#[test]
fn lint_names_each_problem_with_file_and_line() {
    let tmp = copy_config();
    let products = tmp.path().join("config/products");
    // A misspelled key, a missing schema file, and a topic bound to a contract twice.
    let loans = std::fs::read_to_string(products.join("loans.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        products.join("loans.yaml"),
        loans.replacen("      quality:\n        freshness: 5s", "      qualty:\n        freshness: 5s", 1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cards = std::fs::read_to_string(products.join("cards.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(products.join("cards.yaml"), cards.replace("schemas/card-transaction.avsc", "schemas/card-transaction-v9.avsc"))
        .unwrap_or_else(|e| panic!("{e}"));
    let broken = std::fs::read_to_string(products.join("loans.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let line = broken.lines().position(|l| l.contains("qualty")).map(|i| i + 1).unwrap_or_else(|| panic!("edit failed"));
    let (code, _, err) = lint(&tmp.path().join("config"));
    assert_eq!(code, Some(1));
    let loans_line = err.lines().find(|l| l.contains("loans.yaml")).unwrap_or_else(|| panic!("{err}"));
    assert!(
        loans_line.contains("unknown field `qualty`") && loans_line.contains(&format!("loans.yaml:{line}: ")),
        "line {line}: {loans_line}"
    );
    let cards_line = err.lines().find(|l| l.contains("cards.yaml")).unwrap_or_else(|| panic!("{err}"));
    assert!(cards_line.contains("card-transaction-v9.avsc"), "{cards_line}");
    assert!(err.contains("2 problems found"), "{err}");
}

/// `apis.rest.baseUrl`'s path prefixes the REST aliases, so a base path under a main route, or
/// one whose endpoints answer the paths of another product's, is an error at its line.
#[test]
fn lint_refuses_a_base_url_that_collides() {
    let tmp = copy_config();
    let products = tmp.path().join("config/products");
    let edit = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(products.join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(products.join(file), text.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
        to.lines().next().and_then(|first| text.replace(from, to).lines().position(|l| l.contains(first)).map(|i| i + 1))
    };
    // Cards under payments' base path, with an endpoint that answers payments' record paths.
    let cards_line = edit("cards.yaml", "baseUrl: https://api.banking.com/v1/cards", "baseUrl: https://api.banking.com/v1/payments");
    let _ = edit("cards.yaml", "- /cards/transactions/{transaction_id}", "- /payments/{transaction_id}");
    // Loans under /products, a main route.
    let loans_line = edit("loans.yaml", "baseUrl: https://api.banking.com/v1/loans", "baseUrl: /products/loans/");
    let (code, _, err) = lint(&tmp.path().join("config"));
    assert_eq!(code, Some(1), "{err}");
    let cards = err.lines().find(|l| l.contains("cards.yaml")).unwrap_or_else(|| panic!("{err}"));
    assert!(
        cards.contains(&format!("cards.yaml:{}: ", cards_line.unwrap_or_default()))
            && cards.contains("/v1/payments/payments/{transaction_id} collides with /v1/payments/payments/{payment_id}")
            && cards.contains("payments-data-product"),
        "{cards}"
    );
    let loans = err.lines().find(|l| l.contains("loans.yaml")).unwrap_or_else(|| panic!("{err}"));
    assert!(
        loans.contains(&format!("loans.yaml:{}: ", loans_line.unwrap_or_default())) && loans.contains("under /products, a main route"),
        "{loans}"
    );
    assert!(err.contains("2 problems found"), "{err}");
    // A base URL that cannot prefix a route at all.
    let _ = edit("loans.yaml", "baseUrl: /products/loans/", "baseUrl: https://api.banking.com/v1/loans?v=2");
    let (code, _, err) = lint(&tmp.path().join("config"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a query or fragment cannot prefix a route"), "{err}");
    // An endpoint a main route would answer instead.
    let _ = edit("loans.yaml", "baseUrl: https://api.banking.com/v1/loans?v=2", "baseUrl: /v1");
    let _ = edit("loans.yaml", "- /loans/{loan_id}/status", "- /data/{loan_id}");
    let (code, _, err) = lint(&tmp.path().join("config"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("endpoint /v1/data/{loan_id} is shadowed by the main route /{product}/data/{record_id}"), "{err}");
}

#[test]
fn lint_warns_when_a_source_database_is_not_the_settings_database() {
    let tmp = copy_config();
    let config = tmp.path().join("config");
    // The settings lint reads by default: DIR/meshguard.toml.
    std::fs::write(config.join("meshguard.toml"), "[mysql]\nurl = \"mysql://reader@db.internal:3306/ledger\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(binary())
        .args(["lint", "--config"])
        .arg(&config)
        .env_remove("MESHGUARD__MYSQL__URL")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a warning, not an error: {err}");
    let payments = std::fs::read_to_string(config.join("products/payments.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let line = payments.lines().position(|l| l.contains("database: banking")).map(|i| i + 1).unwrap_or_else(|| panic!("no database"));
    let warning = err.lines().find(|l| l.contains("payments.yaml")).unwrap_or_else(|| panic!("no warning for payments: {err}"));
    assert!(
        warning.contains(&format!("payments.yaml:{line}: warning: spec.sources.mysql.database is \"banking\""))
            && warning.contains("\"ledger\""),
        "{warning}"
    );
    assert_eq!(err.lines().filter(|l| l.contains("warning: spec.sources.mysql.database")).count(), 3, "{err}");
    // Settings that name the declared database: no warning.
    let out = Command::new(binary())
        .args(["lint", "--config"])
        .arg(&config)
        .env("MESHGUARD__MYSQL__URL", "mysql://root@127.0.0.1:3306/banking")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A contract of `catalog`.
fn contract_of<'a>(catalog: &'a Catalog, product: &str, contract: Option<&str>) -> &'a meshguard::contract::Contract {
    catalog.product(product).and_then(|p| p.contract(contract)).unwrap_or_else(|| panic!("{product} {contract:?}"))
}

const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-29 12:00:00 UTC);

/// The report of `files` checked in-process with `plan` (chunks over threads), as JSON and text.
fn report_with(contract: &meshguard::contract::Contract, files: &[&Path], plan: Plan) -> (serde_json::Value, String) {
    let mut checker = Checker::new(contract, None).unwrap_or_else(|r| panic!("{r:?}"));
    for file in files {
        let input = Input::from_arg(file);
        checker.report.inputs.push(input.name());
        let _ = check_input(&mut checker, &input, NOW, plan).unwrap_or_else(|e| panic!("{e}"));
    }
    let report = checker.finish();
    (serde_json::to_value(&report).unwrap_or_else(|e| panic!("{e}")), render_text(&report))
}

/// The report of `files` judged record by record ([`Checker::add`], as `POST /validate` and
/// `dlq replay` do): what every plan must agree with.
fn report_by_record(contract: &meshguard::contract::Contract, files: &[&Path]) -> (serde_json::Value, String) {
    let mut checker = Checker::new(contract, None).unwrap_or_else(|r| panic!("{r:?}"));
    let reader_schema = match &contract.engine {
        meshguard::contract::SchemaEngine::Avro(a) => Some(a.schema),
        meshguard::contract::SchemaEngine::Json(_) => None,
    };
    for file in files {
        let input = Input::from_arg(file);
        let name = input.name();
        checker.report.inputs.push(name.clone());
        read_records(&input, reader_schema, |line, item| {
            let _ = checker.add(&report_at(&name, line), item, NOW);
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let report = checker.finish();
    (serde_json::to_value(&report).unwrap_or_else(|e| panic!("{e}")), render_text(&report))
}

/// Plans that cut an input into many chunks at every position relative to its records and finish
/// them out of order.
const PLANS: [Plan; 5] = [
    Plan { threads: 1, chunk_bytes: meshguard::check::input::CHUNK_BYTES },
    Plan { threads: 1, chunk_bytes: 333 },
    Plan { threads: 2, chunk_bytes: 333 },
    Plan { threads: 3, chunk_bytes: 1 },
    Plan { threads: 4, chunk_bytes: 4096 },
];

fn check_on_threads(threads: usize, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .arg("check")
        .args(args)
        .env("MESHGUARD__DELIVERY__EVALUATION_THREADS", threads.to_string())
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_report_of_a_shipped_sample_does_not_depend_on_threads_or_chunks() {
    let catalog = catalog();
    let (mut duplicates, mut warnings, mut shadow_rejections, mut rule_violations) = (0, 0, 0, 0);
    for (product, contract, files) in [
        ("payments-data-product", None, &["samples/payments.ndjson"][..]),
        ("loans-data-product", None, &["samples/loans.ndjson"][..]),
        ("loans-data-product", Some("loan-application-schema"), &["samples/loan-applications.ndjson"][..]),
        ("cards-data-product", None, &["samples/cards.avro"][..]),
        // Business rules (errors and warnings) and the shadow version 2.0.0.
        ("loans-data-product", None, &["samples/loans-rules.ndjson"][..]),
        // `unique`: duplicates within a file and across two inputs.
        ("loans-data-product", None, &["samples/loans-duplicates.ndjson", "samples/loans.ndjson", "samples/loans-duplicates.ndjson"][..]),
    ] {
        let c = contract_of(&catalog, product, contract);
        let paths: Vec<std::path::PathBuf> = files.iter().map(|f| repo().join(f)).collect();
        let paths: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let (one, one_text) = report_by_record(c, &paths);
        assert!(one["records"].as_u64().is_some_and(|n| n > 0), "{files:?}");
        duplicates += one["duplicates"].as_u64().unwrap_or(0);
        warnings += one["rule_warnings"].as_array().map_or(0, Vec::len);
        rule_violations += one["rule_violations"].as_u64().unwrap_or(0);
        shadow_rejections += one["shadow"].as_array().into_iter().flatten().filter_map(|s| s["would_reject"].as_u64()).sum::<u64>();
        for plan in PLANS {
            let (many, many_text) = report_with(c, &paths, plan);
            assert_eq!(many, one, "{files:?} with {plan:?}");
            assert_eq!(many_text, one_text, "{files:?} with {plan:?}");
        }
        // And the binary, both formats, one thread against two.
        let mut args = vec!["--product", product, "--now", "2026-11-29T12:00:00Z"];
        if let Some(c) = contract {
            args.extend(["--contract", c]);
        }
        args.extend(files);
        for format in [&["--format", "text"][..], &["--format", "json"][..]] {
            let all: Vec<&str> = args.iter().chain(format).copied().collect();
            let (code1, out1, err1) = check_on_threads(1, &all);
            let (code2, out2, err2) = check_on_threads(2, &all);
            assert!(matches!(code1, Some(0 | 1)), "{files:?}: {err1}");
            assert_eq!((code2, out2, err2), (code1, out1, err1), "{files:?} {format:?}");
        }
    }
    // The samples exercise every feature that feeds the report.
    assert!(
        duplicates > 0 && warnings > 0 && rule_violations > 0 && shadow_rejections > 0,
        "{duplicates} {warnings} {rule_violations} {shadow_rejections}"
    );
}

#[test]
fn rejected_duplicates_across_chunks_get_the_same_report_on_any_plan() {
    // The loans contract with `unique.deadLetter: true`: a duplicate is rejected, so whether a
    // record is valid depends on every earlier chunk.
    let tmp = copy_config();
    let loans = tmp.path().join("config/products/loans.yaml");
    let yaml = std::fs::read_to_string(&loans).unwrap_or_else(|e| panic!("{e}"));
    let unique = "        fields: [loan_id]\n        horizon: 10m\n";
    assert!(yaml.contains(unique), "loans.yaml no longer declares its unique key as expected");
    std::fs::write(&loans, yaml.replace(unique, &format!("{unique}        deadLetter: true\n"))).unwrap_or_else(|e| panic!("{e}"));
    let catalog = Catalog::load(&Files::Disk { products: tmp.path().join("config/products"), schemas: tmp.path().join("schemas") })
        .unwrap_or_else(|e| panic!("{e}"));
    let contract = contract_of(&catalog, "loans-data-product", None);
    // 30,000 generated loans, one in ten broken; every 97th line repeats the line 1,500 before
    // it, so duplicates sit chunks away from their first copy.
    let mut generator = Generator::for_contract(contract, 23, 0.1, 0.0).unwrap_or_else(|| panic!("generator"));
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for i in 0..30_000usize {
        let line = if i % 97 == 0 && i >= 1_500 { lines[i - 1_500].clone() } else { generator.next_event(NOW).payload.to_vec() };
        lines.push(line);
    }
    let file = tmp.path().join("loans-30k.ndjson");
    std::fs::write(&file, lines.join(&b'\n')).unwrap_or_else(|e| panic!("{e}"));
    let (one, one_text) = report_by_record(contract, &[&file]);
    assert!(one["duplicates"].as_u64().is_some_and(|n| n > 100), "{}", one["duplicates"]);
    assert!(
        one["violations"].as_array().into_iter().flatten().any(|g| g["keyword"] == "unique" && g["count"] == one["duplicates"]),
        "every duplicate is rejected: {}",
        one["violations"]
    );
    for plan in [PLANS[0], Plan { threads: 2, chunk_bytes: 64 * 1024 }, Plan { threads: 4, chunk_bytes: 4096 }] {
        let (many, many_text) = report_with(contract, &[&file], plan);
        assert!(many == one, "{plan:?}: the report differs");
        assert_eq!(many_text, one_text, "{plan:?}");
    }
}

#[test]
fn a_large_input_gets_the_same_report_on_one_thread_and_on_several() {
    // 200,000 generated payment events, one in ten broken, with blank lines, a CRLF line end and
    // no line end after the last record: line numbers must survive chunking.
    let catalog = catalog();
    let contract = contract_of(&catalog, "payments-data-product", None);
    let mut generator = Generator::for_contract(contract, 19, 0.1, 0.0).unwrap_or_else(|| panic!("generator"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("payments-200k.ndjson");
    let mut text = Vec::with_capacity(60 << 20);
    for i in 0..200_000u32 {
        text.extend_from_slice(&generator.next_event(NOW).payload);
        match i % 50_000 {
            0 => text.extend_from_slice(b"\r\n"),
            1 => text.extend_from_slice(b"\n\n  \n"),
            _ if i < 199_999 => text.push(b'\n'),
            _ => {}
        }
    }
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    let path = file.to_string_lossy().into_owned();
    let args = ["--product", "payments-data-product", "--now", "2026-11-29T12:00:00Z", "--format", "json", path.as_str()];
    let (code, one, err) = check_on_threads(1, &args);
    assert_eq!(code, Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_str(&one).unwrap_or_else(|e| panic!("{e}: {one}"));
    assert_eq!(report["records"], 200_000);
    let invalid = report["invalid"].as_u64().unwrap_or(0);
    assert!((15_000..25_000).contains(&invalid), "{invalid} invalid");
    let (code, two, err) = check_on_threads(2, &args);
    assert_eq!(code, Some(1), "{err}");
    assert!(two == one, "two threads: the JSON report differs");
    let text_args = ["--product", "payments-data-product", "--now", "2026-11-29T12:00:00Z", path.as_str()];
    let (_, one_text, _) = check_on_threads(1, &text_args);
    let (_, two_text, _) = check_on_threads(2, &text_args);
    assert!(one_text.contains("records       200000"), "{one_text}");
    assert_eq!(two_text, one_text);
    // In-process with small chunks on four threads: hundreds of chunks finishing out of order.
    let (mut json, _) = report_with(contract, &[&file], Plan { threads: 4, chunk_bytes: 64 * 1024 });
    // The catalog here is loaded by absolute path, the binary's by relative path.
    assert!(json["schema"].as_str().is_some_and(|s| s.ends_with("schemas/payment-schema.json")), "{}", json["schema"]);
    json["schema"] = report["schema"].clone();
    assert!(json == report, "four threads in-process: the report differs");
}
