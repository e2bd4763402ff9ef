//! Any bytes as an Avro payload (Confluent, single-object or plain framing, chosen by the
//! bytes) against the Avro contracts: never a panic, a hang or an unbounded allocation.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in common::CONTRACTS.iter().filter(|c| c.is_avro()) {
        common::check(c, data);
    }
});
