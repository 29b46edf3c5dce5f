//! What a [`Codec`](crate::Codec) does to a tensor: lossless coding, fixed-rate block
//! quantization, or error-bounded quantization, with their settings; and the named profiles.

use crate::error::{Error, Result};
use crate::quant::block::{self, ScaleFormat};
use crate::quant::minifloat::Element;
use crate::quant::rounding::Rounding;

/// What a lossy mode does with NaN and infinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NonFinite {
    /// Refuse the tensor with an [`ErrorKind::NonFinite`](crate::ErrorKind) error.
    #[default]
    Error,
    /// Carry them exactly, bit for bit, as escapes.
    Keep,
}

impl NonFinite {
    pub fn code(self) -> u8 {
        match self {
            NonFinite::Error => 0,
            NonFinite::Keep => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NonFinite::Error => "error",
            NonFinite::Keep => "keep",
        }
    }
}

/// Fixed-rate block quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSpec {
    pub element: Element,
    pub scale: ScaleFormat,
    /// Elements per block, 16 to 256.
    pub block: usize,
    /// Entropy-code the element codes with rANS instead of packing them.
    pub entropy: bool,
    pub rounding: Rounding,
    pub nonfinite: NonFinite,
}

impl BlockSpec {
    /// An OCP MX format: block 32, E8M0 scales.
    pub fn mx(element: Element) -> BlockSpec {
        BlockSpec {
            element,
            scale: ScaleFormat::E8M0,
            block: block::MX_BLOCK,
            entropy: false,
            rounding: Rounding::Nearest,
            nonfinite: NonFinite::Error,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(block::MIN_BLOCK..=block::MAX_BLOCK).contains(&self.block) {
            return Err(Error::invalid(format!(
                "block={} is outside {}..={}: choose a block size in that range",
                self.block,
                block::MIN_BLOCK,
                block::MAX_BLOCK
            )));
        }
        Ok(())
    }
}

/// The error an error-bounded mode accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// `||x - x̂|| / ||x|| <= value` over the finite elements (relative RMSE).
    RelRmse(f64),
    /// `|x - x̂| <= value` for every element.
    MaxAbs(f64),
    /// At most this many bits per element for the whole frame.
    Bits(f64),
}

impl Bound {
    pub fn code(self) -> u8 {
        match self {
            Bound::RelRmse(_) => 1,
            Bound::MaxAbs(_) => 2,
            Bound::Bits(_) => 3,
        }
    }

    pub fn value(self) -> f64 {
        match self {
            Bound::RelRmse(v) | Bound::MaxAbs(v) | Bound::Bits(v) => v,
        }
    }
}

/// Which elements share a quantization step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StepScope {
    /// One step for the whole tensor: the best total error for the bits.
    #[default]
    Global,
    /// A step per channel (the last dimension), proportional to the channel's RMS.
    Channel,
    /// A step per block of consecutive elements, proportional to the block's RMS.
    Block(usize),
}

impl StepScope {
    pub fn code(self) -> u8 {
        match self {
            StepScope::Global => 0,
            StepScope::Channel => 1,
            StepScope::Block(_) => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StepScope::Global => "global",
            StepScope::Channel => "channel",
            StepScope::Block(_) => "block",
        }
    }
}

/// Transform coding ahead of the error-bounded quantizer: the tensor's rows (its last
/// dimension is the channels) are projected onto an orthonormal channel basis and the
/// coefficients quantized with one step, with an entropy-coder table per group of
/// coefficient channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transform {
    /// Plain error-bounded coding of the elements.
    #[default]
    None,
    /// No basis change, but a table per group of channels of similar spread.
    Identity,
    /// The principal directions of the tensor's channels (PCA / Karhunen-Loeve), truncated
    /// to those above the quantizer's noise and sent in the frame.
    Pca,
    /// Whichever of plain, identity and PCA coding gives the smallest frame.
    Auto,
}

impl Transform {
    pub const ALL: [Transform; 4] = [
        Transform::None,
        Transform::Identity,
        Transform::Pca,
        Transform::Auto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Identity => "identity",
            Transform::Pca => "pca",
            Transform::Auto => "auto",
        }
    }

    pub fn parse(name: &str) -> Option<Transform> {
        Transform::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Error-bounded quantization: a uniform step chosen to meet a bound, entropy-coded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedSpec {
    pub bound: Bound,
    pub scope: StepScope,
    pub rounding: Rounding,
    pub nonfinite: NonFinite,
    /// Transform coding (needs a relative RMSE bound and one global step).
    pub transform: Transform,
    /// The most basis vectors a transform may keep (the rank of a low-rank projection);
    /// `None`: as many as pay off.
    pub max_rank: Option<usize>,
    /// Whether chunks of a tensor of two dimensions or more may code their rows' symbols with
    /// a table per class of rows (row contexts, format version 2), where that makes them
    /// smaller (default); `false` skips them and the check. No effect with a transform.
    pub contexts: bool,
}

impl BoundedSpec {
    pub fn new(bound: Bound) -> BoundedSpec {
        BoundedSpec {
            bound,
            scope: StepScope::Global,
            rounding: Rounding::Nearest,
            nonfinite: NonFinite::Error,
            transform: Transform::None,
            max_rank: None,
            contexts: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.transform != Transform::None {
            if !matches!(self.bound, Bound::RelRmse(_)) {
                return Err(Error::invalid(format!(
                    "transform={:?} codes to a relative RMSE bound: pass error= (max_abs_error= \
                     and target_bits= use plain coding, transform=None)",
                    self.transform.name()
                )));
            }
            if self.scope != StepScope::Global {
                return Err(Error::invalid(
                    "transform coding quantizes every coefficient with one step: it needs \
                     step='global'",
                ));
            }
        }
        if self.max_rank == Some(0) {
            return Err(Error::invalid("rank must be at least 1"));
        }
        if self.max_rank.is_some() && self.transform == Transform::None {
            return Err(Error::invalid(
                "rank= caps the basis of transform coding: also pass transform='pca' or 'auto'",
            ));
        }
        let v = self.bound.value();
        match self.bound {
            Bound::RelRmse(_) if !(v.is_finite() && v > 0.0) => {
                return Err(Error::invalid(format!(
                    "error={v} must be a positive finite relative RMSE (0.01 is 1%); for exact \
                     coding use the lossless profile"
                )))
            }
            Bound::MaxAbs(_) if !(v.is_finite() && v > 0.0) => {
                return Err(Error::invalid(format!(
                    "max_abs_error={v} must be positive and finite; for exact coding use the \
                     lossless profile"
                )))
            }
            Bound::Bits(_) if !(v.is_finite() && v > 0.0 && v <= 32.0) => {
                return Err(Error::invalid(format!(
                    "target_bits={v} must be a number of bits per element in (0, 32]"
                )))
            }
            _ => {}
        }
        if let Bound::MaxAbs(_) = self.bound {
            if self.scope != StepScope::Global {
                return Err(Error::invalid(
                    "max_abs_error uses one global step (the best one for a maximum error); \
                     step='channel' or 'block' applies to error= and target_bits=",
                ));
            }
        }
        if let StepScope::Block(b) = self.scope {
            if !(block::MIN_BLOCK..=block::MAX_BLOCK).contains(&b) {
                return Err(Error::invalid(format!(
                    "block={b} is outside {}..={}: choose a block size in that range",
                    block::MIN_BLOCK,
                    block::MAX_BLOCK
                )));
            }
        }
        Ok(())
    }
}

/// What the codec does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Bit-exact: float split and rANS.
    Lossless,
    /// Fixed-rate block quantization (optionally entropy-coded).
    Block(BlockSpec),
    /// Error-bounded uniform quantization, entropy-coded.
    Bounded(BoundedSpec),
}

impl Mode {
    pub fn validate(&self) -> Result<()> {
        match self {
            Mode::Lossless => Ok(()),
            Mode::Block(b) => b.validate(),
            Mode::Bounded(b) => b.validate(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Lossless => "lossless",
            Mode::Block(_) => "fixed-rate",
            Mode::Bounded(_) => "error-bounded",
        }
    }
}

/// A named set of coding choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Bit-exact: sign and exponent entropy-coded with rANS, mantissas packed.
    Lossless,
    /// Fixed rate, no entropy stage: int8 codes in blocks of 64 with a bfloat16 scale
    /// (8.25 bits per element).
    Fast,
    /// Error-bounded: relative RMSE 1%, one global step, rANS.
    Balanced,
    /// Error-bounded: relative RMSE 5%, one global step, rANS.
    Max,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Lossless,
        Profile::Fast,
        Profile::Balanced,
        Profile::Max,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Lossless => "lossless",
            Profile::Fast => "fast",
            Profile::Balanced => "balanced",
            Profile::Max => "max",
        }
    }

    pub fn parse(name: &str) -> Result<Profile> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown profile {name:?}; choose one of: {}",
                    Profile::ALL.map(|p| p.name()).join(", ")
                ))
            })
    }

    /// The mode the profile stands for.
    pub fn mode(self) -> Mode {
        match self {
            Profile::Lossless => Mode::Lossless,
            Profile::Fast => Mode::Block(BlockSpec {
                element: Element::Int8,
                scale: ScaleFormat::BF16,
                block: 64,
                entropy: false,
                rounding: Rounding::Nearest,
                nonfinite: NonFinite::Error,
            }),
            Profile::Balanced => Mode::Bounded(BoundedSpec::new(Bound::RelRmse(0.01))),
            Profile::Max => Mode::Bounded(BoundedSpec::new(Bound::RelRmse(0.05))),
        }
    }
}
