//! The naive loop `meshguard check` is measured against (docs/benchmarks.md, "check against the
//! naive loop"): read NDJSON line by line, `serde_json` → `Value` → `jsonschema`
//! `is_valid`, one thread, with the same draft-07 options the contract compiles (every `format`
//! asserted, `uuid` included), and print the counts so both programs can be seen to agree.
//!
//! Run: `cargo run --release --example naive_check -- schemas/payment-schema.json FILE.ndjson`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use jsonschema::Draft;
use serde_json::Value;

/// Canonical 8-4-4-4-12 hexadecimal form, as the contract registers `uuid`.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [schema_path, data_path] = args.as_slice() else {
        eprintln!("usage: naive_check SCHEMA.json FILE.ndjson");
        return ExitCode::from(2);
    };
    let schema: Value =
        match std::fs::read(schema_path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{schema_path}: {e}");
                return ExitCode::from(2);
            }
        };
    let validator =
        match jsonschema::options().with_draft(Draft::Draft7).should_validate_formats(true).with_format("uuid", is_uuid).build(&schema) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{schema_path}: {e}");
                return ExitCode::from(2);
            }
        };
    let file = match File::open(data_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{data_path}: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut valid, mut invalid) = (0u64, 0u64);
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else {
            invalid += 1;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if validator.is_valid(&v) => valid += 1,
            _ => invalid += 1,
        }
    }
    println!("records {}  valid {valid}  invalid {invalid}", valid + invalid);
    ExitCode::SUCCESS
}
