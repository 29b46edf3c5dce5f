//! Arbitrary tensors through the lossy modes: fixed-rate formats and error-bounded coding,
//! checking the bounds and that NaN/Inf are carried exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iota_codec::fuzzing::lossy_roundtrip(data));
