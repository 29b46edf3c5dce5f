//! Projection onto channel bases: the Karhunen-Loeve transform of a tensor's channels, low-rank
//! truncation, and the shared basis of stateful sessions.
//!
//! Pure functions over slices (and the session's basis state); `crate::pipeline` composes them
//! with the quantizers and the entropy coder, and `crate::format` records what ran.

pub mod basis;
pub mod linalg;
pub mod project;
