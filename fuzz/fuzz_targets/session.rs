//! Sequences of tensors through a shared-basis session: the decoder must rebuild what the
//! encoder sent, refuse dropped frames until a resync, and survive damaged frames.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iota_codec::fuzzing::session(data));
