//! `contract diff`: a table of schema pairs (JSON Schema and Avro), each with the expected verdict
//! in every mode and the change that must be listed; the Avro rows include the specification's
//! schema-resolution cases (promotions, added/removed fields with and without defaults, enum
//! symbols, unions, names, fixed sizes, decimals, aliases). Then the binary's exit codes, its
//! JSON output and `lint --against` on a throw-away git repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use meshguard::contract::diff::{ChangeKind, LoadedSchema, Mode, diff};
use serde_json::{Value, json};

/// `(name, old, new, backward ok, forward ok, full ok, a change that must be listed)`.
type Case = (&'static str, Value, Value, bool, bool, bool, Option<(&'static str, ChangeKind)>);

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": required, "properties": props})
}

fn json_cases() -> Vec<Case> {
    use ChangeKind::*;
    let base = || json!({"id": {"type": "string"}, "amount": {"type": "number"}});
    let with = |k: &str, v: Value| {
        let mut p = base();
        p[k] = v;
        p
    };
    let closed = |props: Value, req: &[&str]| {
        let mut s = obj(props, req);
        s["additionalProperties"] = json!(false);
        s
    };
    vec![
        ("identical", obj(base(), &["id"]), obj(base(), &["id"]), true, true, true, None),
        (
            "description only",
            obj(base(), &["id"]),
            obj(with("id", json!({"type": "string", "description": "the id"})), &["id"]),
            true,
            true,
            true,
            None,
        ),
        ("field made required", obj(base(), &["id"]), obj(base(), &["id", "amount"]), false, true, false, Some(("/amount", MadeRequired))),
        ("field made optional", obj(base(), &["id", "amount"]), obj(base(), &["id"]), true, false, false, Some(("/amount", MadeOptional))),
        (
            "field removed (open content)",
            obj(base(), &["id"]),
            obj(json!({"id": {"type": "string"}}), &["id"]),
            true,
            false,
            false,
            Some(("/amount", FieldRemoved)),
        ),
        (
            "field removed (closed content)",
            closed(base(), &["id"]),
            closed(json!({"id": {"type": "string"}}), &["id"]),
            false,
            true,
            false,
            Some(("/amount", FieldRemoved)),
        ),
        (
            "field added (open content constrains it)",
            obj(base(), &["id"]),
            obj(with("note", json!({"type": "string"})), &["id"]),
            false,
            true,
            false,
            Some(("/note", FieldAdded)),
        ),
        (
            "field added (closed content admits it)",
            closed(base(), &["id"]),
            closed(with("note", json!({"type": "string"})), &["id"]),
            true,
            false,
            false,
            Some(("/note", FieldAdded)),
        ),
        (
            "field renamed",
            obj(base(), &["id"]),
            obj(json!({"id": {"type": "string"}, "total": {"type": "number"}}), &["id"]),
            false,
            false,
            false,
            Some(("/amount", FieldRenamed)),
        ),
        (
            "type narrowed number → integer",
            obj(base(), &[]),
            obj(with("amount", json!({"type": "integer"})), &[]),
            false,
            true,
            false,
            Some(("/amount", TypeChanged)),
        ),
        (
            "type widened integer → number",
            obj(with("amount", json!({"type": "integer"})), &[]),
            obj(base(), &[]),
            true,
            false,
            false,
            Some(("/amount", TypeChanged)),
        ),
        (
            "type changed number → string",
            obj(base(), &[]),
            obj(with("amount", json!({"type": "string"})), &[]),
            false,
            false,
            false,
            Some(("/amount", TypeChanged)),
        ),
        (
            "made nullable",
            obj(base(), &[]),
            obj(with("id", json!({"type": ["string", "null"]})), &[]),
            true,
            false,
            false,
            Some(("/id", TypeChanged)),
        ),
        (
            "enum value removed",
            obj(with("id", json!({"enum": ["A", "B", "C"]})), &[]),
            obj(with("id", json!({"enum": ["A", "B"]})), &[]),
            false,
            true,
            false,
            Some(("/id", EnumValueRemoved)),
        ),
        (
            "enum value added",
            obj(with("id", json!({"enum": ["A", "B"]})), &[]),
            obj(with("id", json!({"enum": ["A", "B", "C"]})), &[]),
            true,
            false,
            false,
            Some(("/id", EnumValueAdded)),
        ),
        (
            "pattern added",
            obj(base(), &[]),
            obj(with("id", json!({"type": "string", "pattern": "^[a-z]+$"})), &[]),
            false,
            true,
            false,
            Some(("/id", ConstraintTightened)),
        ),
        (
            "pattern removed",
            obj(with("id", json!({"type": "string", "pattern": "^[a-z]+$"})), &[]),
            obj(base(), &[]),
            true,
            false,
            false,
            Some(("/id", ConstraintLoosened)),
        ),
        (
            "two different patterns: cannot prove",
            obj(with("id", json!({"type": "string", "pattern": "^[a-z]+$"})), &[]),
            obj(with("id", json!({"type": "string", "pattern": "^[a-z0-9]+$"})), &[]),
            false,
            false,
            false,
            Some(("/id", ConstraintChanged)),
        ),
        (
            "format added",
            obj(base(), &[]),
            obj(with("id", json!({"type": "string", "format": "uuid"})), &[]),
            false,
            true,
            false,
            Some(("/id", ConstraintTightened)),
        ),
        (
            "format changed: cannot prove",
            obj(with("id", json!({"type": "string", "format": "date"})), &[]),
            obj(with("id", json!({"type": "string", "format": "date-time"})), &[]),
            false,
            false,
            false,
            Some(("/id", ConstraintChanged)),
        ),
        (
            "maxLength lowered",
            obj(with("id", json!({"type": "string", "maxLength": 40})), &[]),
            obj(with("id", json!({"type": "string", "maxLength": 36})), &[]),
            false,
            true,
            false,
            Some(("/id", ConstraintTightened)),
        ),
        (
            "maxLength raised",
            obj(with("id", json!({"type": "string", "maxLength": 36})), &[]),
            obj(with("id", json!({"type": "string", "maxLength": 40})), &[]),
            true,
            false,
            false,
            Some(("/id", ConstraintLoosened)),
        ),
        (
            "minLength added",
            obj(base(), &[]),
            obj(with("id", json!({"type": "string", "minLength": 1})), &[]),
            false,
            true,
            false,
            Some(("/id", ConstraintTightened)),
        ),
        (
            "minimum raised",
            obj(with("amount", json!({"type": "number", "minimum": 0})), &[]),
            obj(with("amount", json!({"type": "number", "minimum": 1})), &[]),
            false,
            true,
            false,
            Some(("/amount", ConstraintTightened)),
        ),
        (
            "minimum 0 → exclusiveMinimum 0",
            obj(with("amount", json!({"type": "number", "minimum": 0})), &[]),
            obj(with("amount", json!({"type": "number", "exclusiveMinimum": 0})), &[]),
            false,
            true,
            false,
            Some(("/amount", ConstraintTightened)),
        ),
        (
            "maximum removed",
            obj(with("amount", json!({"type": "number", "maximum": 100})), &[]),
            obj(base(), &[]),
            true,
            false,
            false,
            Some(("/amount", ConstraintLoosened)),
        ),
        (
            "multipleOf 0.01 → 0.05 (tighter)",
            obj(with("amount", json!({"type": "number", "multipleOf": 0.01})), &[]),
            obj(with("amount", json!({"type": "number", "multipleOf": 0.05})), &[]),
            false,
            true,
            false,
            Some(("/amount", ConstraintTightened)),
        ),
        (
            "multipleOf 0.05 → 0.01 (looser)",
            obj(with("amount", json!({"type": "number", "multipleOf": 0.05})), &[]),
            obj(with("amount", json!({"type": "number", "multipleOf": 0.01})), &[]),
            true,
            false,
            false,
            Some(("/amount", ConstraintLoosened)),
        ),
        (
            "multipleOf 0.02 → 0.03 (unrelated)",
            obj(with("amount", json!({"type": "number", "multipleOf": 0.02})), &[]),
            obj(with("amount", json!({"type": "number", "multipleOf": 0.03})), &[]),
            false,
            false,
            false,
            Some(("/amount", ConstraintChanged)),
        ),
        ("additionalProperties closed", obj(base(), &[]), closed(base(), &[]), false, true, false, Some(("", AdditionalPropertiesClosed))),
        ("additionalProperties opened", closed(base(), &[]), obj(base(), &[]), true, false, false, Some(("", AdditionalPropertiesOpened))),
        (
            "nested property type changed",
            obj(json!({"m": {"type": "object", "properties": {"last_four": {"type": "string"}}}}), &[]),
            obj(json!({"m": {"type": "object", "properties": {"last_four": {"type": "integer"}}}}), &[]),
            false,
            false,
            false,
            Some(("/m/last_four", TypeChanged)),
        ),
        (
            "array items narrowed",
            obj(json!({"tags": {"type": "array", "items": {"type": "string"}}}), &[]),
            obj(json!({"tags": {"type": "array", "items": {"type": "string", "maxLength": 8}}}), &[]),
            false,
            true,
            false,
            Some(("/tags/[]", ConstraintTightened)),
        ),
        (
            "$ref target changed to an equivalent definition",
            json!({"definitions": {"a": {"type": "string"}, "b": {"type": "string"}}, "properties": {"id": {"$ref": "#/definitions/a"}}}),
            json!({"definitions": {"a": {"type": "string"}, "b": {"type": "string"}}, "properties": {"id": {"$ref": "#/definitions/b"}}}),
            true,
            true,
            true,
            Some(("/id", RefChanged)),
        ),
        (
            "$ref target changed to a narrower definition",
            json!({"definitions": {"a": {"type": "string"}, "b": {"type": "string", "maxLength": 3}}, "properties": {"id": {"$ref": "#/definitions/a"}}}),
            json!({"definitions": {"a": {"type": "string"}, "b": {"type": "string", "maxLength": 3}}, "properties": {"id": {"$ref": "#/definitions/b"}}}),
            false,
            true,
            false,
            Some(("/id", RefChanged)),
        ),
        (
            "$ref to a remote schema changed: cannot prove",
            json!({"properties": {"id": {"$ref": "other.json#/a"}}}),
            json!({"properties": {"id": {"$ref": "other.json#/b"}}}),
            false,
            false,
            false,
            Some(("/id", RefChanged)),
        ),
        (
            "allOf changed: cannot prove",
            json!({"allOf": [{"type": "object"}]}),
            json!({"allOf": [{"type": "object", "minProperties": 1}]}),
            false,
            false,
            false,
            Some(("", KeywordChanged)),
        ),
        (
            "uniqueItems added",
            obj(json!({"tags": {"type": "array"}}), &[]),
            obj(json!({"tags": {"type": "array", "uniqueItems": true}}), &[]),
            false,
            true,
            false,
            Some(("/tags", KeywordChanged)),
        ),
    ]
}

fn avro_record(fields: Value) -> Value {
    json!({"type": "record", "name": "Payment", "namespace": "com.example", "fields": fields})
}

fn avro_cases() -> Vec<Case> {
    use ChangeKind::*;
    let f = |name: &str, t: Value| json!({"name": name, "type": t});
    let fd = |name: &str, t: Value, d: Value| json!({"name": name, "type": t, "default": d});
    let status = |symbols: &[&str]| json!({"type": "enum", "name": "Status", "symbols": symbols});
    let status_default = |symbols: &[&str], d: &str| json!({"type": "enum", "name": "Status", "symbols": symbols, "default": d});
    vec![
        (
            "avro identical",
            avro_record(json!([f("id", json!("string"))])),
            avro_record(json!([f("id", json!("string"))])),
            true,
            true,
            true,
            None,
        ),
        (
            "avro doc only",
            avro_record(json!([f("id", json!("string"))])),
            avro_record(json!([{"name": "id", "type": "string", "doc": "the id"}])),
            true,
            true,
            true,
            None,
        ),
        // Spec: int is promotable to long, float, double.
        (
            "avro int → long (promotion)",
            avro_record(json!([f("n", json!("int"))])),
            avro_record(json!([f("n", json!("long"))])),
            true,
            false,
            false,
            Some(("/n", TypeChanged)),
        ),
        (
            "avro long → int (no promotion)",
            avro_record(json!([f("n", json!("long"))])),
            avro_record(json!([f("n", json!("int"))])),
            false,
            true,
            false,
            Some(("/n", TypeChanged)),
        ),
        (
            "avro int → double (promotion)",
            avro_record(json!([f("n", json!("int"))])),
            avro_record(json!([f("n", json!("double"))])),
            true,
            false,
            false,
            Some(("/n", TypeChanged)),
        ),
        (
            "avro float → double (promotion)",
            avro_record(json!([f("n", json!("float"))])),
            avro_record(json!([f("n", json!("double"))])),
            true,
            false,
            false,
            Some(("/n", TypeChanged)),
        ),
        // Spec: string is promotable to bytes, bytes to string.
        (
            "avro string ↔ bytes",
            avro_record(json!([f("b", json!("string"))])),
            avro_record(json!([f("b", json!("bytes"))])),
            true,
            true,
            true,
            Some(("/b", TypeChanged)),
        ),
        (
            "avro string → int",
            avro_record(json!([f("b", json!("string"))])),
            avro_record(json!([f("b", json!("int"))])),
            false,
            false,
            false,
            Some(("/b", TypeChanged)),
        ),
        // Spec: a reader field missing in the writer takes its default; without one, an error.
        (
            "avro field added with default",
            avro_record(json!([f("id", json!("string"))])),
            avro_record(json!([f("id", json!("string")), fd("note", json!("string"), json!(""))])),
            true,
            true,
            true,
            Some(("/note", FieldAdded)),
        ),
        (
            "avro field added without default",
            avro_record(json!([f("id", json!("string"))])),
            avro_record(json!([f("id", json!("string")), f("note", json!("string"))])),
            false,
            true,
            false,
            Some(("/note", FieldAdded)),
        ),
        // Spec: a writer field missing in the reader is ignored.
        (
            "avro field removed (had no default)",
            avro_record(json!([f("id", json!("string")), f("note", json!("string"))])),
            avro_record(json!([f("id", json!("string"))])),
            true,
            false,
            false,
            Some(("/note", FieldRemoved)),
        ),
        (
            "avro field removed (had a default)",
            avro_record(json!([f("id", json!("string")), fd("note", json!("string"), json!(""))])),
            avro_record(json!([f("id", json!("string"))])),
            true,
            true,
            true,
            Some(("/note", FieldRemoved)),
        ),
        (
            "avro field renamed with an alias",
            avro_record(json!([f("id", json!("string"))])),
            avro_record(json!([{"name": "payment_id", "type": "string", "aliases": ["id"]}])),
            true,
            false,
            false,
            Some(("/id", FieldRenamed)),
        ),
        // Spec: a writer symbol not in the reader's enum is an error unless the reader has a default.
        (
            "avro enum symbol removed",
            avro_record(json!([f("s", status(&["A", "B", "C"]))])),
            avro_record(json!([f("s", status(&["A", "B"]))])),
            false,
            true,
            false,
            Some(("/s", EnumValueRemoved)),
        ),
        (
            "avro enum symbol added",
            avro_record(json!([f("s", status(&["A", "B"]))])),
            avro_record(json!([f("s", status(&["A", "B", "C"]))])),
            true,
            false,
            false,
            Some(("/s", EnumValueAdded)),
        ),
        (
            "avro enum symbol removed, reader default",
            avro_record(json!([f("s", status(&["A", "B", "C"]))])),
            avro_record(json!([f("s", status_default(&["A", "B"], "A"))])),
            true,
            true,
            true,
            Some(("/s", EnumValueRemoved)),
        ),
        // Spec: unions resolve branch by branch.
        (
            "avro union branch added",
            avro_record(json!([f("v", json!(["null", "string"]))])),
            avro_record(json!([f("v", json!(["null", "string", "int"]))])),
            true,
            false,
            false,
            Some(("/v", TypeChanged)),
        ),
        (
            "avro union branch removed",
            avro_record(json!([f("v", json!(["null", "string", "int"]))])),
            avro_record(json!([f("v", json!(["null", "string"]))])),
            false,
            true,
            false,
            Some(("/v", TypeChanged)),
        ),
        (
            "avro union branch int → long",
            avro_record(json!([f("v", json!(["null", "int"]))])),
            avro_record(json!([f("v", json!(["null", "long"]))])),
            true,
            false,
            false,
            Some(("/v", TypeChanged)),
        ),
        (
            "avro plain → nullable union",
            avro_record(json!([f("v", json!("string"))])),
            avro_record(json!([fd("v", json!(["null", "string"]), Value::Null)])),
            true,
            false,
            false,
            Some(("/v", TypeChanged)),
        ),
        (
            "avro record renamed",
            avro_record(json!([f("id", json!("string"))])),
            json!({"type": "record", "name": "Transfer", "namespace": "com.example", "fields": [f("id", json!("string"))]}),
            false,
            false,
            false,
            Some(("", NameChanged)),
        ),
        (
            "avro fixed size changed",
            avro_record(json!([f("h", json!({"type": "fixed", "name": "Hash", "size": 16}))])),
            avro_record(json!([f("h", json!({"type": "fixed", "name": "Hash", "size": 32}))])),
            false,
            false,
            false,
            Some(("/h", TypeChanged)),
        ),
        (
            "avro decimal scale changed",
            avro_record(json!([f("a", json!({"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}))])),
            avro_record(json!([f("a", json!({"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}))])),
            false,
            false,
            false,
            Some(("/a", TypeChanged)),
        ),
        (
            "avro array items int → long",
            avro_record(json!([f("xs", json!({"type": "array", "items": "int"}))])),
            avro_record(json!([f("xs", json!({"type": "array", "items": "long"}))])),
            true,
            false,
            false,
            Some(("/xs/[]", TypeChanged)),
        ),
        (
            "avro map values string → int",
            avro_record(json!([f("m", json!({"type": "map", "values": "string"}))])),
            avro_record(json!([f("m", json!({"type": "map", "values": "int"}))])),
            false,
            false,
            false,
            Some(("/m/*", TypeChanged)),
        ),
        (
            "avro nested record field added without default",
            avro_record(json!([f("merchant", json!({"type": "record", "name": "Merchant", "fields": [f("name", json!("string"))]}))])),
            avro_record(json!([f(
                "merchant",
                json!({"type": "record", "name": "Merchant", "fields": [f("name", json!("string")), f("mcc", json!("string"))]})
            )])),
            false,
            true,
            false,
            Some(("/merchant/mcc", FieldAdded)),
        ),
    ]
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshguard"))
}

fn parse(name: &str, v: &Value) -> LoadedSchema {
    LoadedSchema::parse(name, &v.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_schema_pair_gets_the_expected_verdict_in_every_mode() {
    let mut cases = json_cases();
    let json_count = cases.len();
    cases.extend(avro_cases());
    assert!(json_count >= 20 && cases.len() - json_count >= 20 && cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (name, old, new, backward, forward, full, must_list) in &cases {
        let ext = if name.starts_with("avro") { "avsc" } else { "json" };
        let (o, n) = (parse(&format!("old.{ext}"), old), parse(&format!("new.{ext}"), new));
        for (mode, expected) in [(Mode::Backward, backward), (Mode::Forward, forward), (Mode::Full, full)] {
            let report = diff("old", &o, "new", &n, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
            if report.compatible != *expected {
                failures.push(format!("{name} [{}]: expected compatible={expected}, got {:#?}", mode.as_str(), report.changes));
            }
            if let Some((path, kind)) = must_list
                && !report.changes.iter().any(|c| c.path == *path && c.kind == *kind)
            {
                failures.push(format!("{name}: no {kind:?} at {path:?} in {:#?}", report.changes));
            }
            if *expected && !report.changes.iter().all(|c| !c.breaks(mode)) {
                failures.push(format!("{name} [{}]: compatible but a change breaks", mode.as_str()));
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn cannot_prove_is_labelled_and_breaks_every_mode() {
    let old = parse("a.json", &obj(json!({"c": {"type": "string", "pattern": "^[A-Z]{3}$"}}), &[]));
    let new = parse("b.json", &obj(json!({"c": {"type": "string", "pattern": "^(EUR|USD)$"}}), &[]));
    let report = diff("a", &old, "b", &new, Mode::Backward).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.unproven, 1);
    assert_eq!(report.changes.len(), 1);
    assert!(!report.changes[0].provable);
    assert!(report.changes[0].message.contains("cannot prove compatible"), "{}", report.changes[0].message);
}

#[test]
fn the_shipped_avro_versions_are_fully_compatible() {
    // schemas/card-transaction.avsc (v1) adds two fields with defaults to v0.
    let r = repo();
    for mode in [Mode::Backward, Mode::Forward, Mode::Full] {
        let report = meshguard::contract::diff::diff_files(
            &r.join("schemas/card-transaction-v0.avsc"),
            &r.join("schemas/card-transaction.avsc"),
            mode,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.compatible, "{mode:?}: {:#?}", report.changes);
        assert_eq!(report.changes.iter().filter(|c| c.kind == ChangeKind::FieldAdded).count(), 2);
    }
}

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary()).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_binary_exits_0_compatible_1_breaking_2_bad_input() {
    let r = repo();
    let (code, out, err) = run(&r, &["contract", "diff", "schemas/payment-schema.json", "samples/payment-schema-v2-breaking.json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("/status") && out.contains("enum_value_removed") && out.contains("BREAKING under backward"), "{out}");
    assert!(out.contains("cannot prove compatible"), "{out}");
    let readme = std::fs::read_to_string(r.join("README.md")).unwrap_or_else(|e| panic!("{e}"));
    assert!(readme.contains(&out), "README.md must show this output of `contract diff` word for word:\n{out}");

    let (code, out, _) = run(&r, &["contract", "diff", "schemas/payment-schema.json", "schemas/payment-schema.json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no changes"), "{out}");

    let (code, out, err) = run(
        &r,
        &["contract", "diff", "--mode", "full", "--format", "json", "schemas/card-transaction-v0.avsc", "schemas/card-transaction.avsc"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["format"], "avro");
    assert_eq!(report["mode"], "full");
    assert_eq!(report["compatible"], true);
    assert_eq!(report["avro_checker"]["backward"]["verdict"], "full");

    let (code, _, err) = run(&r, &["contract", "diff", "schemas/card-transaction.avsc", "schemas/payment-schema.json"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("both must be JSON Schema or both Avro"), "{err}");
    let (code, _, err) = run(&r, &["contract", "diff", "schemas/payment-schema.json", "no/such/file.json"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no/such/file.json"), "{err}");
    let (code, _, err) = run(&r, &["contract", "diff", "schemas/payment-schema.json", "samples/payments.ndjson"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not JSON"), "{err}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("git: {e}"));
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        if entry.path().is_file() {
            let _ = std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn lint_against_a_git_ref_fails_on_a_breaking_change_only() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    copy_dir(&repo().join("config/products"), &root.join("config/products"));
    copy_dir(&repo().join("schemas"), &root.join("schemas"));
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "v1"]);

    let (code, out, err) = run(root, &["lint", "--against", "main"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("no contract schema changed"), "{out}");

    // A compatible change: the loan schema's only difference is a description.
    let loan = root.join("schemas/loan-schema.json");
    let text = std::fs::read_to_string(&loan).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&loan, text.replace("\"Unique loan identifier\"", "\"The loan's identifier\"")).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = run(root, &["lint", "--against", "main"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("loans-data-product / loan-schema") && out.contains("COMPATIBLE"), "{out}");

    // Point the payments contract at a breaking v2 file: compared with the file it used before.
    let _ = std::fs::copy(repo().join("samples/payment-schema-v2-breaking.json"), root.join("schemas/payment-schema-v2.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let product = root.join("config/products/payments.yaml");
    let yaml = std::fs::read_to_string(&product).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&product, yaml.replace("schema: schemas/payment-schema.json", "schema: schemas/payment-schema-v2.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = run(root, &["lint", "--against", "main"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("main:schemas/payment-schema.json → "), "{out}");
    assert!(out.contains("enum_value_removed"), "{out}");
    assert!(err.contains("1 contract with breaking changes since main"), "{err}");

    let (code, _, err) = run(root, &["lint", "--against", "no-such-branch"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is not a git revision"), "{err}");
}
