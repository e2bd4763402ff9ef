//! Arbitrary JSON documents (the fuzzer's bytes, parsed; unparsable inputs are skipped) against
//! every shipped contract's validation: patterns, formats, numbers, nesting.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for c in common::CONTRACTS.iter() {
        let eval = meshguard::verdict::evaluate_record(c, record.clone(), common::now());
        if let Some(r) = &eval.rejection {
            assert!(!r.violations.is_empty(), "a rejection always carries a reason");
        }
        let _ = c.record_id(&record);
    }
});
