//! Element types the codec understands.

use crate::error::{Error, Result};

/// The element type of a tensor. The discriminant is the byte written in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// IEEE 754 binary32.
    F32 = 1,
    /// IEEE 754 binary16.
    F16 = 2,
    /// bfloat16: the top half of a binary32.
    BF16 = 3,
}

/// The bit layout of a floating-point type: `1` sign bit, `exp_bits` exponent bits,
/// `mant_bits` mantissa bits, most significant first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatLayout {
    pub bits: u32,
    pub exp_bits: u32,
    pub mant_bits: u32,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The canonical name (numpy / torch spelling).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    pub fn layout(self) -> FloatLayout {
        match self {
            DType::F32 => FloatLayout {
                bits: 32,
                exp_bits: 8,
                mant_bits: 23,
            },
            DType::F16 => FloatLayout {
                bits: 16,
                exp_bits: 5,
                mant_bits: 10,
            },
            DType::BF16 => FloatLayout {
                bits: 16,
                exp_bits: 8,
                mant_bits: 7,
            },
        }
    }

    /// The dtype written as `code` in a frame.
    pub fn from_code(code: u8) -> Option<DType> {
        match code {
            1 => Some(DType::F32),
            2 => Some(DType::F16),
            3 => Some(DType::BF16),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses a dtype name: `float32`/`f32`, `float16`/`f16`/`half`, `bfloat16`/`bf16`
    /// (a `torch.` prefix is accepted).
    pub fn parse(name: &str) -> Result<DType> {
        let n = name.trim().to_ascii_lowercase();
        let n = n.strip_prefix("torch.").unwrap_or(&n);
        match n {
            "float32" | "f32" | "float" | "<f4" => Ok(DType::F32),
            "float16" | "f16" | "half" | "<f2" => Ok(DType::F16),
            "bfloat16" | "bf16" => Ok(DType::BF16),
            _ => Err(Error::invalid(format!(
                "unsupported dtype {name:?}: iota-codec codes float32, float16 and bfloat16"
            ))),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(DType::parse(d.name()).unwrap(), d);
            let l = d.layout();
            assert_eq!(1 + l.exp_bits + l.mant_bits, l.bits);
            assert_eq!(l.bits as usize, d.itemsize() * 8);
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::parse("torch.bfloat16").unwrap(), DType::BF16);
        assert!(DType::parse("int8").is_err());
    }
}
