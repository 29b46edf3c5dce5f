//! Arbitrary tensors and settings through encode and decode.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iota_codec::fuzzing::roundtrip(data));
