//! ODCS v3.1: every shipped contract exports to a document valid against the standard's JSON
//! Schema; export → import → export gives the same document and a product `lint` accepts; every
//! ODCS example shipped with the standard imports or fails with a reason per field.
//!
//! The standard's schema and examples live outside the crate, in `../shared/conformance/odcs/`
//! (see `../shared/conformance/README.md`), found from the manifest directory as
//! `tests/conformance.rs` finds the JSON Schema suite. A missing folder fails the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use meshguard::product::odcs::{ImportDefaults, Imported, export, import};
use meshguard::product::{Catalog, Files};
use meshguard::verdict::evaluate;
use serde_json::Value;

const HOST: &str = "127.0.0.1:9092";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshguard"))
}

fn odcs_root() -> PathBuf {
    let root = repo().join("../shared/conformance/odcs");
    assert!(root.is_dir(), "{} is missing: the ODCS schema and examples are needed", root.display());
    root
}

fn validator() -> jsonschema::Validator {
    let path = odcs_root().join("schema/odcs-json-schema-v3.1.0.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("the ODCS schema does not compile: {e}"))
}

fn shipped() -> (Catalog, Files) {
    let files = Files::Disk { products: repo().join("config/products"), schemas: repo().join("schemas") };
    (Catalog::load(&files).unwrap_or_else(|e| panic!("{e}")), files)
}

/// Every `(product, contract)` shipped.
fn contracts(catalog: &Catalog) -> Vec<(String, String)> {
    catalog.products.iter().flat_map(|p| p.contracts.iter().map(move |c| (p.name().to_owned(), c.name.clone()))).collect()
}

#[test]
fn every_shipped_contract_exports_a_valid_odcs_document() {
    let validator = validator();
    let (catalog, files) = shipped();
    let all = contracts(&catalog);
    assert_eq!(all.len(), 5);
    for (product, contract) in &all {
        let doc = export(&catalog, &files, product, Some(contract), HOST).unwrap_or_else(|e| panic!("{e}"));
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{product}/{contract}: {}", errors.join("\n"));
        assert_eq!(doc["apiVersion"], "v3.1.0");
        assert_eq!(doc["schema"][0]["name"], contract.as_str());
        // The validator does reject what the standard forbids, so a pass above means something.
        let mut broken = doc.clone();
        broken["schema"][0]["properties"][0]["colour"] = "red".into();
        assert!(!validator.is_valid(&broken), "an unknown property key must be rejected");
        broken = doc.clone();
        broken["kind"] = "Contract".into();
        assert!(!validator.is_valid(&broken));
    }
    // The rules travel as custom CEL checks.
    let doc = export(&catalog, &files, "loans-data-product", Some("loan-schema"), HOST).unwrap_or_else(|e| panic!("{e}"));
    let cel: Vec<&str> = doc["schema"][0]["quality"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["engine"] == "cel")
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(cel, ["positive-principal", "collateral-covers-principal", "repaid-has-update", "settlement-currency", "rate-cap"]);
    assert_eq!(doc["slaProperties"][0]["value"], 5000, "freshness 5s as latency in ms");
}

fn write(imported: &Imported, config: &Path) {
    let products = config.join("products");
    let schemas = config.parent().unwrap_or_else(|| panic!("no parent")).join("schemas");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&schemas).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(products.join(format!("{}.yaml", imported.product_name)), &imported.product_yaml).unwrap_or_else(|e| panic!("{e}"));
    for (file, text) in &imported.schemas {
        std::fs::write(schemas.join(file), text).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn load(config: &Path) -> (Catalog, Files) {
    let files = Files::Disk { products: config.join("products"), schemas: config.parent().unwrap_or(config).join("schemas") };
    (Catalog::load(&files).unwrap_or_else(|e| panic!("{e}")), files)
}

#[test]
fn export_import_export_gives_the_same_document() {
    let (catalog, files) = shipped();
    for (product, contract) in contracts(&catalog) {
        let first = export(&catalog, &files, &product, Some(&contract), HOST).unwrap_or_else(|e| panic!("{e}"));
        let imported = import(&first, &ImportDefaults::default()).unwrap_or_else(|e| panic!("{product}/{contract}: {e}"));
        assert!(imported.notes.is_empty(), "{product}/{contract}: {:?}", imported.notes);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("config");
        write(&imported, &config);
        let (again, again_files) = load(&config);
        let second = export(&again, &again_files, &product, Some(&contract), HOST).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_yaml::to_string(&first).unwrap_or_default(),
            serde_yaml::to_string(&second).unwrap_or_default(),
            "{product}/{contract}"
        );
    }
}

#[test]
fn the_binary_exports_imports_and_lint_accepts_the_result() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(binary())
        .args(["contract", "export", "--format", "odcs", "cards-data-product"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.path().join("cards.odcs.yaml");
    std::fs::write(&file, &out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let doc: Value = serde_yaml::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(validator().is_valid(&doc));

    let config = dir.path().join("config");
    let run = |args: &[&str]| Command::new(binary()).args(args).current_dir(dir.path()).output().unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["contract", "import", "odcs", "cards.odcs.yaml", "--config", "config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(config.join("products/cards-data-product.yaml").is_file());
    assert!(dir.path().join("schemas/card-transaction.avsc").is_file());
    let out = run(&["lint", "--config", "config"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // A second import refuses to overwrite without --force.
    let out = run(&["contract", "import", "odcs", "cards.odcs.yaml", "--config", "config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = Command::new(binary())
        .args(["contract", "export", "--format", "odcs", "no-such-product"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
}

fn examples() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&odcs_root().join("docs/examples"), &mut out);
    out.sort();
    out
}

#[test]
fn every_shipped_odcs_example_imports_or_fails_with_a_reason_per_field() {
    let examples = examples();
    assert!(examples.len() >= 2, "{examples:?}");
    let defaults = ImportDefaults { domain: Some("orders".into()), owner: Some("orders-team@example.com".into()) };
    let (mut imported, mut refused) = (0, 0);
    for path in &examples {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Without defaults, a document that lacks what a data product needs says which fields.
        if let Err(e) = import(&doc, &ImportDefaults::default()) {
            assert!(e.0.iter().all(|p| !p.field.is_empty() && p.reason.len() > 10), "{}: {e}", path.display());
        }
        match import(&doc, &defaults) {
            Ok(result) => {
                imported += 1;
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                let config = dir.path().join("config");
                write(&result, &config);
                let (catalog, _) = load(&config);
                assert_eq!(catalog.products.len(), 1, "{}", path.display());
            }
            Err(e) => {
                refused += 1;
                assert!(e.0.iter().all(|p| p.field.starts_with("schema[") || !p.field.is_empty()), "{}: {e}", path.display());
            }
        }
    }
    assert!(imported >= 1 && refused >= 1, "{imported} imported, {refused} refused");
}

#[test]
fn the_kafka_example_imports_into_a_working_contract() {
    let path = odcs_root().join("docs/examples/schema/kafka-schema.odcs.yaml");
    let doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let e = import(&doc, &ImportDefaults::default()).err().unwrap_or_else(|| panic!("needs a domain and an owner"));
    let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["domain", "team"]);
    assert!(e.0[0].reason.contains("--domain") && e.0[1].reason.contains("--owner"), "{e}");

    let defaults = ImportDefaults { domain: Some("orders".into()), owner: Some("orders-team@example.com".into()) };
    let result = import(&doc, &defaults).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.product_name, "orders");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("config");
    write(&result, &config);
    let (catalog, _) = load(&config);
    let contract = catalog.product("orders").and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("orders"));
    assert_eq!(catalog.binding("orders").map(|b| b.contract.name.clone()), Some("orders".into()), "physicalName is the topic");
    let now = time::OffsetDateTime::now_utc();
    assert!(evaluate(&contract, br#"{"cust_id":"c1","prod_id":"p1","qty":2}"#, now).is_valid());
    assert!(!evaluate(&contract, br#"{"cust_id":"c1","qty":2}"#, now).is_valid(), "prod_id is required");
    assert!(!evaluate(&contract, br#"{"cust_id":"c1","prod_id":"p1","qty":"two"}"#, now).is_valid(), "qty is an integer");

    let registry = odcs_root().join("docs/examples/schema/kafka-schemaregistry.odcs.yaml");
    let doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&registry).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let e = import(&doc, &defaults).err().unwrap_or_else(|| panic!("the schema lives in a registry"));
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].field, "schema[0].properties");
    assert!(e.0[0].reason.contains("https://schema-registry:8081"), "{e}");
}
