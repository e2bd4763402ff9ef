//! Arbitrary JSON documents (the fuzzer's bytes, parsed; unparsable inputs are skipped) against
//! every shipped contract's validation: patterns, formats, numbers, nesting. The stream's lean
//! path (the bytes parsed onto a tape and validated there) must give the same evaluation.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use meshguard::contract::tape::Tape;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for c in common::CONTRACTS.iter() {
        let eval = meshguard::verdict::evaluate_record(c, record.clone(), common::now());
        if let Some(r) = &eval.rejection {
            assert!(!r.violations.is_empty(), "a rejection always carries a reason");
        }
        let _ = c.record_id(&record);
        if c.is_avro() {
            continue;
        }
        let mut tape = Tape::new();
        let (lean, _) = meshguard::verdict::evaluate_lean(c, data, common::now(), &mut tape, |_, _| None::<()>);
        assert_eq!(lean.rejection, eval.rejection, "{}", c.name);
        assert_eq!(lean.completeness, eval.completeness, "{}", c.name);
        assert_eq!(lean.record_id, eval.record_id, "{}", c.name);
        assert_eq!(lean.event_time, eval.event_time, "{}", c.name);
    }
});
