//! Quantizers and the packing of their codes.

pub mod bitpack;
