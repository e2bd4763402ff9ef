//! Uniqueness (`unique:`) and volume (`volume:`): the per-partition duplicate tracker (horizon,
//! bound, revocation on rebalance), exact duplicate counts in `check`, and the volume SLA.

use std::path::PathBuf;
use std::process::Command;

use meshguard::contract::unique::{Seen, UniqueTracker};
use meshguard::product::model::{UniqueSpec, VolumeSpec};
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn spec(fields: &[&str], horizon: Option<&str>, max_keys: Option<usize>) -> UniqueSpec {
    UniqueSpec {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        horizon: horizon.map(|h| h.parse().unwrap_or_else(|e| panic!("{e}"))),
        max_keys,
        dead_letter: false,
    }
}

const T0: time::OffsetDateTime = datetime!(2026-11-29 12:00:00 UTC);

#[test]
fn duplicates_within_the_horizon_per_partition() {
    let mut t = UniqueTracker::new(&spec(&["id", "m.k"], Some("10m"), None));
    let key = |v: Value| t_key(&t, &v);
    fn t_key(t: &UniqueTracker, v: &Value) -> Option<String> {
        t.key_of(v)
    }
    let a = key(json!({"id": "a", "m": {"k": 1}})).unwrap_or_else(|| panic!("key"));
    let a_other = key(json!({"id": "a", "m": {"k": 2}})).unwrap_or_else(|| panic!("key"));
    assert_ne!(a, a_other, "every field is part of the key");
    assert_eq!(key(json!({"id": "a"})), None, "a missing field gives no key");
    assert_ne!(key(json!({"id": "1", "m": {"k": 1}})), key(json!({"id": 1, "m": {"k": 1}})), "the string 1 is not the number 1");

    assert_eq!(t.observe(0, a.clone(), T0), Seen::New);
    assert_eq!(t.observe(0, a.clone(), T0 + Duration::minutes(5)), Seen::Duplicate);
    assert_eq!(t.observe(1, a.clone(), T0 + Duration::minutes(5)), Seen::New, "state is per partition");
    assert_eq!(t.observe(0, a_other.clone(), T0 + Duration::minutes(6)), Seen::New);
    // Past the horizon the key is forgotten: a new first sighting.
    assert_eq!(t.observe(0, a.clone(), T0 + Duration::minutes(11)), Seen::New);
    assert_eq!(t.observe(0, a, T0 + Duration::minutes(12)), Seen::Duplicate);
}

#[test]
fn state_is_bounded_and_dropped_on_revocation() {
    let mut t = UniqueTracker::new(&spec(&["id"], Some("1h"), Some(3)));
    for i in 0..10 {
        assert_eq!(t.observe(7, format!("k{i}"), T0), Seen::New);
        assert!(t.len(7) <= 3);
    }
    assert_eq!(t.len(7), 3);
    assert_eq!(t.observe(7, "k9".into(), T0), Seen::Duplicate, "the newest keys are kept");
    assert_eq!(t.observe(7, "k0".into(), T0), Seen::New, "the oldest were forgotten");
    // A rebalance takes the partition away: its state goes with it.
    t.revoke(7);
    assert!(t.is_empty(7));
    assert_eq!(t.observe(7, "k9".into(), T0), Seen::New);
}

#[test]
fn check_counts_duplicates_exactly() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(["check", "--product", "loans-data-product", "--format", "json", "samples/loans-duplicates.ndjson"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "duplicates are counted, not rejected (deadLetter is false)");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["duplicates"], 3);
    let lines: Vec<u64> = report["duplicate_lines"].as_array().into_iter().flatten().filter_map(|l| l["line"].as_u64()).collect();
    assert_eq!(lines, [3, 5, 6]);
    // The payments product declares no uniqueness: no such key in its report.
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(["check", "--product", "payments-data-product", "--format", "json", "samples/payments.ndjson"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.get("duplicates").is_none());
}

#[test]
fn volume_sla_breaches_below_min_and_above_max() {
    let v = VolumeSpec { min: Some(10), max: Some(100) };
    assert!(v.breach(9).is_some_and(|m| m.contains("fewer than the minimum 10")));
    assert_eq!(v.breach(10), None);
    assert_eq!(v.breach(100), None);
    assert!(v.breach(101).is_some_and(|m| m.contains("more than the maximum 100")));
    assert_eq!(VolumeSpec { min: None, max: None }.breach(0), None);
}

#[test]
fn lint_names_a_unique_field_the_schema_lacks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let products = dir.path().join("config/products");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::copy(repo().join("schemas/payment-schema.json"), dir.path().join("schemas/p.json")).unwrap_or_else(|e| panic!("{e}"));
    for (extension, expected) in [
        ("      unique:\n        fields: [paymnet_id]\n", "unique field \"paymnet_id\" is not a property"),
        ("      volume:\n        min: 10\n        max: 5\n", "volume.min 10 is above volume.max 5"),
        ("      volume:\n        minimum: 10\n", "unknown field `minimum`"),
    ] {
        let yaml = format!(
            "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: t\n  domain: payments\n  version: \"1\"\n  owner: t@example.com\nspec:\n  contracts:\n    - name: pay\n      version: \"1.0.0\"\n      schema: schemas/p.json\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99%\n{extension}"
        );
        std::fs::write(products.join("t.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(["lint", "--config"])
            .arg(dir.path().join("config"))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "{expected}: {err}");
    }
}
