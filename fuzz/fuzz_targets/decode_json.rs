//! Any bytes through the JSON decoder, then through the JSON contracts: never a panic, a hang
//! or an unbounded allocation; every rejection has a reason.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = meshguard::decode::decode_json(data);
    if let Ok(v) = &decoded {
        // What decodes is JSON that re-encodes.
        assert!(serde_json::to_vec(v).is_ok());
    }
    for c in common::CONTRACTS.iter().filter(|c| !c.is_avro()) {
        common::check(c, data);
    }
});
