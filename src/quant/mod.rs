//! Quantizers and the packing of their codes.
//!
//! Each module is a set of pure functions over slices; `crate::pipeline` composes them and
//! `crate::format` records what ran. The loops here are the scalar reference kernels:
//! vector versions can be added behind [`crate::simd`]'s dispatch as long as they produce
//! the same bits.

pub mod bitpack;
pub mod block;
pub mod buckets;
pub mod convert;
pub mod minifloat;
pub mod rounding;
pub mod uniform;
