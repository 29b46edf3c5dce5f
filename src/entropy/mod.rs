//! Entropy coders and their frequency tables.

pub mod freq;
pub mod rans;
