//! The per-record hot path: decode → validate → completeness/freshness, against a
//! `serde_json`-only baseline, over pre-generated batches of realistic events; and the cost of
//! business rules (CEL) beside the same contract without them (`rules` group).
//!
//! Run: `cargo bench --bench hot_path`. Every benchmark processes one batch of [`N`] events per
//! iteration and reports throughput in events (`Throughput::Elements`). Results and their
//! interpretation: `docs/benchmarks.md`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use meshguard::contract::tape::Tape;
use meshguard::contract::{Contract, JsonSchemaContract, SchemaEngine};
use meshguard::generate::{CardFraming, Generator};
use meshguard::product::{Catalog, Files};
use meshguard::verdict::{decode, evaluate, evaluate_lean, evaluate_lean_versioned};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

/// Events per batch (one benchmark iteration).
const N: usize = 10_000;
const SEED: u64 = 7;
/// A fixed clock, so freshness work is identical run to run.
const NOW: OffsetDateTime = datetime!(2026-01-15 12:00:00 UTC);

fn catalog() -> Catalog {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = Files::Disk { products: repo.join("config/products"), schemas: repo.join("schemas") };
    match Catalog::load(&files) {
        Ok(c) => c,
        Err(e) => panic!("cannot load the catalog from {}: {e:?}", repo.display()),
    }
}

fn contract(catalog: &Catalog, product: &str) -> Arc<Contract> {
    match catalog.product(product).and_then(|p| p.contract(None)) {
        Some(c) => Arc::clone(c),
        None => panic!("{product} has no contract"),
    }
}

/// `N` payloads for `contract`; checks that every verdict matches the generator's intent, so
/// the benchmark measures the real path rather than an early error.
fn payloads(contract: &Contract, invalid_ratio: f64, framing: CardFraming) -> Vec<Vec<u8>> {
    let Some(generator) = Generator::for_contract(contract, SEED, invalid_ratio, 0.0) else { panic!("no generator for {}", contract.name) };
    let mut generator = generator.with_card_framing(framing);
    let mut out = Vec::with_capacity(N);
    let mut invalid = 0;
    for _ in 0..N {
        let event = generator.next_event(NOW);
        let verdict = evaluate(contract, &event.payload, NOW);
        assert_eq!(verdict.is_valid(), event.intent.is_valid(), "{:?} for {}: {:?}", event.intent, contract.name, verdict.rejection);
        invalid += usize::from(!verdict.is_valid());
        out.push(event.payload);
    }
    let share = invalid as f64 / N as f64;
    assert!((share - invalid_ratio).abs() < 0.02, "{}: {invalid} of {N} invalid, asked for {invalid_ratio}", contract.name);
    out
}

fn json_engine(contract: &Contract) -> &JsonSchemaContract {
    match &contract.engine {
        SchemaEngine::Json(c) => c,
        SchemaEngine::Avro(_) => panic!("{} is not a JSON contract", contract.name),
    }
}

/// One batch per iteration takes tens of milliseconds: flat sampling keeps the run short.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    let _ = group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(N as u64));
}

fn payments(c: &mut Criterion) {
    let catalog = catalog();
    let contract = contract(&catalog, "payments-data-product");
    let engine = json_engine(&contract);
    let valid = payloads(&contract, 0.0, CardFraming::SingleObject);
    let mixed = payloads(&contract, 0.1, CardFraming::SingleObject);
    let parsed: Vec<Value> = valid.iter().filter_map(|p| serde_json::from_slice(p).ok()).collect();
    assert_eq!(parsed.len(), N);
    let bytes: usize = valid.iter().map(Vec::len).sum();
    println!("payment events: {N} valid, mean {} bytes; mix: {} bytes", bytes / N, mixed.iter().map(Vec::len).sum::<usize>() / N);

    let mut group = c.benchmark_group("payment_json");
    configure(&mut group);

    // (a) Baseline: parsing alone, what any consumer that reads JSON pays.
    let _ = group.bench_function("serde_json_parse_valid", |b| {
        b.iter(|| {
            for p in &valid {
                let _ = black_box(serde_json::from_slice::<Value>(black_box(p)));
            }
        });
    });
    // (e) Schema check alone on pre-parsed values: the compiled draft-07 validator's is_valid.
    let _ = group.bench_function("jsonschema_is_valid_preparsed", |b| {
        b.iter(|| {
            for v in &parsed {
                let _ = black_box(engine.is_valid(black_box(v)));
            }
        });
    });
    // Parse + validate, without completeness/freshness/record id.
    let _ = group.bench_function("decode_and_validate_valid", |b| {
        let mut violations = Vec::new();
        b.iter(|| {
            for p in &valid {
                if let Ok(v) = decode(&contract, black_box(p)) {
                    let _ = black_box(contract.validate(&v, &mut violations));
                }
            }
        });
    });
    // (b) The whole per-record verdict on valid events.
    let _ = group.bench_function("evaluate_valid", |b| {
        b.iter(|| {
            for p in &valid {
                let _ = black_box(evaluate(&contract, black_box(p), NOW));
            }
        });
    });
    // (c) The same with 10% invalid (violations collected; some undecodable).
    let _ = group.bench_function("evaluate_mix_10pct_invalid", |b| {
        b.iter(|| {
            for p in &mixed {
                let _ = black_box(evaluate(&contract, black_box(p), NOW));
            }
        });
    });
    // (f) What the stream runs when no record store keeps the record: parsed onto a tape reused
    // from record to record and validated there; invalid records take the (c) path.
    let _ = group.bench_function("evaluate_lean_valid", |b| {
        b.iter(|| {
            let mut tape = Tape::new();
            for p in &valid {
                let _ = black_box(evaluate_lean(&contract, black_box(p), NOW, &mut tape, |_, _| None::<()>));
            }
        });
    });
    let _ = group.bench_function("evaluate_lean_mix_10pct_invalid", |b| {
        b.iter(|| {
            let mut tape = Tape::new();
            for p in &mixed {
                let _ = black_box(evaluate_lean(&contract, black_box(p), NOW, &mut tape, |_, _| None::<()>));
            }
        });
    });
    group.finish();
}

fn cards(c: &mut Criterion) {
    let catalog = catalog();
    let contract = contract(&catalog, "cards-data-product");
    assert!(contract.is_avro(), "cards contract should be Avro");
    let single = payloads(&contract, 0.0, CardFraming::SingleObject);
    let confluent = payloads(&contract, 0.0, CardFraming::Confluent);
    println!(
        "card events: {N} single-object, mean {} bytes; {N} Confluent, mean {} bytes",
        single.iter().map(Vec::len).sum::<usize>() / N,
        confluent.iter().map(Vec::len).sum::<usize>() / N
    );

    let mut group = c.benchmark_group("card_avro");
    configure(&mut group);

    // (d) Avro decode with schema resolution to the reader schema (which is the check), alone…
    let _ = group.bench_function("decode_single_object", |b| {
        b.iter(|| {
            for p in &single {
                let _ = black_box(decode(&contract, black_box(p)));
            }
        });
    });
    // …and the whole verdict, per framing.
    let _ = group.bench_function("evaluate_single_object", |b| {
        b.iter(|| {
            for p in &single {
                let _ = black_box(evaluate(&contract, black_box(p), NOW));
            }
        });
    });
    let _ = group.bench_function("evaluate_confluent", |b| {
        b.iter(|| {
            for p in &confluent {
                let _ = black_box(evaluate(&contract, black_box(p), NOW));
            }
        });
    });
    group.finish();
}

/// The shipped loans contract with its first `keep` rules (all five with `None`), loaded from a
/// copy of `loans.yaml`, so the plain and ruled contracts differ in nothing else.
fn loans_with_rules(keep: usize) -> (tempfile::TempDir, Arc<Contract>) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("config/products/loans.yaml")).unwrap_or_else(|e| panic!("loans.yaml: {e}"));
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("loans.yaml: {e}"));
    if let Some(contracts) = doc.get_mut("spec").and_then(|s| s.get_mut("contracts")).and_then(serde_yaml::Value::as_sequence_mut) {
        for c in contracts {
            if let Some(rules) = c.get_mut("rules").and_then(serde_yaml::Value::as_sequence_mut) {
                rules.truncate(keep);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let yaml = serde_yaml::to_string(&doc).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("loans.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let files = Files::Disk { products: dir.path().to_path_buf(), schemas: repo.join("schemas") };
    let catalog = Catalog::load(&files).unwrap_or_else(|e| panic!("{e}"));
    let contract = contract(&catalog, "loans-data-product");
    assert_eq!(contract.rules.rules().len(), keep.min(5));
    (dir, contract)
}

/// Business rules and a shadow version beside the plain contract, on the same valid loan events
/// (every rule passes, except `settlement-currency`, a warning, on the two currencies in five
/// outside its list): the difference per event is their cost; 1 rule vs 5 gives the cost per
/// rule.
fn rules(c: &mut Criterion) {
    let (_d0, plain) = loans_with_rules(0);
    let (_d1, one) = loans_with_rules(1);
    let (_d5, five) = loans_with_rules(5);
    let valid = payloads(&plain, 0.0, CardFraming::SingleObject);
    let mut group = c.benchmark_group("rules");
    configure(&mut group);
    for (name, contract) in
        [("loans_evaluate_lean_plain", &plain), ("loans_evaluate_lean_1_rule", &one), ("loans_evaluate_lean_5_rules", &five)]
    {
        let _ = group.bench_function(name, |b| {
            b.iter(|| {
                let mut tape = Tape::new();
                for p in &valid {
                    let _ = black_box(evaluate_lean(contract, black_box(p), NOW, &mut tape, |_, _| None::<()>));
                }
            });
        });
    }
    // The shipped loans contract also declares 2.0.0 in shadow: the versioned path evaluates
    // every record against it too (no rules here, so the difference to `plain` is the shadow).
    assert_eq!(plain.shadows().count(), 1);
    let _ = group.bench_function("loans_evaluate_lean_versioned_1_shadow", |b| {
        b.iter(|| {
            let mut tape = Tape::new();
            for p in &valid {
                let _ = black_box(evaluate_lean_versioned(&plain, black_box(p), None, NOW, &mut tape, |_, _| None::<()>));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, payments, cards, rules);
criterion_main!(benches);
