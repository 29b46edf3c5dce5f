//! Projection onto channel bases: the Karhunen-Loeve transform of a tensor's channels, low-rank
//! truncation, and the shared basis of stateful sessions.
//!
//! Pure functions over slices (and the session's basis state); `crate::pipeline` composes them
//! with the quantizers and the entropy coder, and `crate::format` records what ran.

/// `fn $name(args) -> R` that runs `$plain(args)` compiled for AVX2 where the CPU has it
/// (see [`linalg::wide`]: the same IEEE operations in the same order, so the same bits).
/// `$plain` must be `#[inline(always)]`, as must everything it calls that should be built
/// for AVX2 too.
macro_rules! wide_or_plain {
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $plain:ident;
    ) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::lowrank::linalg::wide() {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    $plain($($a),*)
                }
                // SAFETY: the CPU has AVX2.
                return unsafe { avx2($($a),*) };
            }
            $plain($($a),*)
        }
    };
}

pub mod basis;
pub mod linalg;
pub mod project;
