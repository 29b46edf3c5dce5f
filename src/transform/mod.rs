//! Reversible transforms that run before quantization or entropy coding.

pub mod floatsplit;
