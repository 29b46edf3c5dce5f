//! AVX2 kernels (placeholder until written: reports unsupported).
use super::Kernels;
pub fn supported() -> bool {
    false
}
pub const KERNELS: Kernels = super::SCALAR;
