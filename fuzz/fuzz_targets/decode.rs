//! Arbitrary bytes into the decoder, as they are and resealed with valid checksums.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iota_codec::fuzzing::decode(data));
