//! iota-codec: a codec for the activation and gradient tensors that cross pipeline-stage
//! boundaries in distributed training.
//!
//! A tensor (raw little-endian element bytes, a [`DType`] and a shape) goes in, a
//! self-describing, checksummed frame comes out; [`Codec::decode`] needs nothing but the
//! frame. The wire format is specified in `docs/FORMAT.md`.
//!
//! ```
//! use iota_codec::{Codec, DType, Profile};
//!
//! let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
//! let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
//! let codec = Codec::new(Profile::Lossless);
//! let frame = codec.encode(&bytes, DType::F32, &[10, 100]).unwrap();
//! let tensor = codec.decode(&frame).unwrap();
//! assert_eq!(tensor.data, bytes);
//! assert_eq!(tensor.shape, vec![10, 100]);
//! ```
//!
//! Decoding treats the frame as untrusted: any damage or inconsistency gives an [`Error`] of
//! kind [`ErrorKind::CorruptFrame`] or [`ErrorKind::ChecksumMismatch`], never a panic, and the
//! output it allocates is capped by [`Limits::max_output_bytes`].

pub mod dtype;
pub mod entropy;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod lowrank;
pub mod memory;
pub mod mode;
pub mod pipeline;
pub mod quant;
pub mod simd;
pub mod transform;
pub mod validate;

#[cfg(feature = "python")]
mod python;

pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub use format::ContainerHint;
pub use mode::{BlockSpec, Bound, BoundedSpec, Mode, NonFinite, Profile, StepScope, Transform};
pub use pipeline::session::{Session, SessionConfig};
pub use pipeline::stream::EncodePieces;
pub use pipeline::{BlockCodes, Limits, ParamValue, StreamDecoder, StreamEncoder};
pub use quant::block::ScaleFormat;
pub use quant::minifloat::Element;
pub use quant::rounding::Rounding;

use entropy::rans::RansParams;
use pipeline::{BlockParams, EncodeRequest, Recipe, UniformParams};

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = format::VERSION;

/// Encoder and decoder settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Codec {
    /// The profile this codec was made from (informational: [`Codec::mode`] decides).
    pub profile: Profile,
    /// What the encoder does: lossless, fixed-rate or error-bounded coding.
    pub mode: Mode,
    /// Elements per chunk. Chunks are coded independently (and in parallel); smaller chunks
    /// start streaming sooner, larger ones spend less on per-chunk tables.
    pub chunk_elems: u64,
    /// Worker threads: 0 uses one per core (rayon's global pool), 1 runs on the calling
    /// thread. The output does not depend on it.
    pub threads: usize,
    /// Limits applied when decoding.
    pub limits: Limits,
}

impl Codec {
    /// 2^18 elements (512 KiB of bfloat16) per chunk.
    pub const DEFAULT_CHUNK_ELEMS: u64 = 1 << 18;

    pub fn new(profile: Profile) -> Self {
        Codec {
            profile,
            mode: profile.mode(),
            chunk_elems: Self::DEFAULT_CHUNK_ELEMS,
            threads: 0,
            limits: Limits::default(),
        }
    }

    /// A codec of `mode` (the profile is recorded as the closest one: lossless or not).
    pub fn with_mode(mode: Mode) -> Self {
        Codec {
            mode,
            ..Codec::new(Profile::Lossless)
        }
    }

    fn recipe(&self, shape: &[u64], numel: u64) -> Recipe {
        let rans = RansParams {
            lanes: pipeline::lanes_for(numel.min(self.chunk_elems)),
            ..RansParams::DEFAULT
        };
        match self.mode {
            Mode::Lossless => Recipe::Lossless { rans },
            Mode::Block(b) => Recipe::Block {
                params: BlockParams {
                    format: quant::block::BlockFormat {
                        element: b.element,
                        scale: b.scale,
                        block: b.block,
                    },
                    rounding: b.rounding.code(),
                    nonfinite: b.nonfinite.code(),
                },
                rans: b.entropy.then_some(rans),
            },
            Mode::Bounded(b) => Recipe::Uniform {
                params: UniformParams {
                    bound: b.bound.code(),
                    bound_value: b.bound.value().to_bits(),
                    scope: b.scope.code(),
                    group: match b.scope {
                        StepScope::Global => 0,
                        StepScope::Channel => shape.last().copied().unwrap_or(1).max(1),
                        StepScope::Block(n) => n as u64,
                    },
                    step: 1.0f32.to_bits(),
                    rounding: b.rounding.code(),
                    nonfinite: b.nonfinite.code(),
                },
                rans,
            },
        }
    }

    fn seed(&self) -> u64 {
        let r = match self.mode {
            Mode::Lossless => Rounding::Nearest,
            Mode::Block(b) => b.rounding,
            Mode::Bounded(b) => b.rounding,
        };
        match r {
            Rounding::Stochastic { seed } => seed,
            Rounding::Nearest => 0,
        }
    }

    /// Encodes the little-endian element bytes of a tensor of `dtype` and `shape`.
    pub fn encode(&self, input: &[u8], dtype: DType, shape: &[u64]) -> Result<Vec<u8>> {
        self.encode_with_hint(input, dtype, shape, ContainerHint::Unspecified)
    }

    /// [`Codec::encode`], recording what kind of object the data came from.
    pub fn encode_with_hint(
        &self,
        input: &[u8],
        dtype: DType,
        shape: &[u64],
        hint: ContainerHint,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into_with_hint(input, dtype, shape, hint, &mut out)?;
        Ok(out)
    }

    /// [`Codec::encode`] into `out`, which is cleared first and whose capacity is reused: with
    /// the same `out` from call to call, the frame costs no allocation (the largest frame the
    /// tensor can take is reserved up front, so `out` never grows while coding). On error
    /// `out` is left empty.
    pub fn encode_into(
        &self,
        input: &[u8],
        dtype: DType,
        shape: &[u64],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.encode_into_with_hint(input, dtype, shape, ContainerHint::Unspecified, out)
    }

    /// [`Codec::encode_into`], recording what kind of object the data came from.
    pub fn encode_into_with_hint(
        &self,
        input: &[u8],
        dtype: DType,
        shape: &[u64],
        hint: ContainerHint,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        let req = self.request(input, dtype, shape, hint)?;
        self.frame_into(&req, out)
    }

    /// The frame of `req` in this codec's mode, into `out` (empty).
    fn frame_into(&self, req: &EncodeRequest, out: &mut Vec<u8>) -> Result<()> {
        match &self.mode {
            Mode::Bounded(spec) if spec.transform != Transform::None => {
                // The projection stage builds its frame itself.
                *out = pipeline::transform::encode(req, spec)?;
                Ok(())
            }
            Mode::Bounded(spec) => pipeline::encode_bounded_into(req, spec, out),
            _ => pipeline::encode_frame_into(req, out),
        }
    }

    fn request<'a>(
        &self,
        input: &'a [u8],
        dtype: DType,
        shape: &'a [u64],
        hint: ContainerHint,
    ) -> Result<EncodeRequest<'a>> {
        self.mode.validate()?;
        if let Mode::Bounded(BoundedSpec {
            scope: StepScope::Channel,
            ..
        }) = self.mode
        {
            if shape.len() < 2 {
                return Err(Error::invalid(format!(
                    "step='channel' gives each index of the last dimension its own step, which \
                     needs a tensor of at least 2 dimensions (this one has shape {shape:?}); \
                     use step='global' or 'block'"
                )));
            }
        }
        Ok(EncodeRequest {
            input,
            dtype,
            shape,
            hint,
            chunk_elems: self.chunk_elems,
            threads: self.threads,
            recipe: self.recipe(shape, format::numel(shape).unwrap_or(0)),
            seed: self.seed(),
            contexts: matches!(self.mode, Mode::Bounded(b) if b.contexts),
        })
    }

    /// The frame of fixed-rate block quantization from codes and scales computed elsewhere
    /// (for instance on a GPU, by a quantizer that reproduces this crate's bit for bit): byte
    /// for byte the frame [`Codec::encode`] writes for a tensor of `dtype` and `shape` whose
    /// quantizer output they are. The codec's mode must be [`Mode::Block`]. Every code and
    /// scale is checked (see [`pipeline::precoded`]); the tensor's elements themselves are not
    /// needed, except for a chunk that coding would not make smaller (only a short last chunk,
    /// or small chunks with rANS), which is stored raw: its elements must then be in
    /// `codes.raw_tail`, or this returns `Ok(None)` and the caller codes the raw tensor.
    pub fn encode_block_codes(
        &self,
        codes: &BlockCodes,
        dtype: DType,
        shape: &[u64],
        hint: ContainerHint,
    ) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self
            .encode_block_codes_into(codes, dtype, shape, hint, &mut out)?
            .then_some(out))
    }

    /// [`Codec::encode_block_codes`] into `out` (cleared first; its capacity is reused);
    /// returns `false` (with `out` empty) where that returns `None`.
    pub fn encode_block_codes_into(
        &self,
        codes: &BlockCodes,
        dtype: DType,
        shape: &[u64],
        hint: ContainerHint,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        out.clear();
        let req = self.request(&[], dtype, shape, hint)?;
        pipeline::encode_block_codes_into(&req, codes, out)
    }

    /// Encodes piece by piece: the header, then one chunk record at a time, so that sending
    /// can start before encoding ends. The pieces concatenated are exactly
    /// [`Codec::encode`]'s frame. (An error-bounded mode codes the whole frame first: its
    /// step is only final once the decoded error of every chunk is known.)
    pub fn encode_stream<'a>(
        &self,
        input: &'a [u8],
        dtype: DType,
        shape: &'a [u64],
    ) -> Result<EncodePieces<'a>> {
        Ok(EncodePieces {
            encoder: self.stream_encoder(input, dtype, shape, ContainerHint::Unspecified)?,
            input,
        })
    }

    /// A [`StreamEncoder`] for `input` (which it does not keep: pass it to every
    /// [`StreamEncoder::next_piece`] call).
    pub fn stream_encoder(
        &self,
        input: &[u8],
        dtype: DType,
        shape: &[u64],
        hint: ContainerHint,
    ) -> Result<StreamEncoder> {
        let req = self.request(input, dtype, shape, hint)?;
        match &self.mode {
            Mode::Bounded(_) => {
                let mut frame = Vec::new();
                self.frame_into(&req, &mut frame)?;
                StreamEncoder::from_frame(&req, frame)
            }
            _ => StreamEncoder::new(&req),
        }
    }

    /// A decoder that takes a frame in pieces as they arrive; see [`StreamDecoder`].
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self.limits, self.threads)
    }

    /// Decodes a frame into a new buffer.
    pub fn decode(&self, frame: &[u8]) -> Result<Tensor> {
        let parsed = pipeline::parse_frame_to_decode(frame, &self.limits)?;
        let len = usize::try_from(parsed.header.output_bytes()?)
            .map_err(|_| Error::limit("decoded tensor does not fit in this machine's memory"))?;
        let mut data = crate::memory::output_buffer(len);
        pipeline::decode_parsed(&parsed, &mut data, self.threads, &self.limits.validation)?;
        Ok(Tensor {
            dtype: parsed.header.dtype,
            shape: parsed.header.shape,
            hint: parsed.header.hint,
            data,
        })
    }

    /// Decodes a frame into `out`, which must hold exactly the decoded bytes. Each chunk's
    /// checksum is verified just before it is decoded, so after an error `out` may hold
    /// partly decoded data.
    ///
    /// An `out` of 4 MiB or more that is reused from call to call (every page of it mapped)
    /// decodes faster than a fresh one: the decoders prefetch it for writing
    /// ([`memory::mapped`] says whether they may).
    pub fn decode_into(&self, frame: &[u8], out: &mut [u8]) -> Result<FrameInfo> {
        let parsed = pipeline::parse_frame_to_decode(frame, &self.limits)?;
        pipeline::decode_parsed(&parsed, out, self.threads, &self.limits.validation)?;
        Ok(FrameInfo::new(&parsed, frame.len()))
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(Profile::Lossless)
    }
}

/// A decoded tensor: little-endian element bytes with their dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub hint: ContainerHint,
    pub data: Vec<u8>,
}

/// One stage of a frame as [`info`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageInfo {
    pub name: &'static str,
    pub params: Vec<(&'static str, ParamValue)>,
}

/// What a frame's header and chunk table say.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameInfo {
    pub format_version: u8,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub hint: ContainerHint,
    pub chunk_elems: u64,
    pub stages: Vec<StageInfo>,
    /// Payload bytes of each chunk.
    pub chunk_bytes: Vec<usize>,
    pub header_bytes: usize,
    pub frame_bytes: usize,
    pub output_bytes: u64,
}

impl FrameInfo {
    fn new(parsed: &pipeline::ParsedFrame, frame_bytes: usize) -> Self {
        let h = &parsed.header;
        FrameInfo {
            format_version: h.version,
            dtype: h.dtype,
            shape: h.shape.clone(),
            hint: h.hint,
            chunk_elems: h.chunk_elems,
            stages: parsed
                .recipe
                .describe()
                .into_iter()
                .map(|(name, params)| StageInfo { name, params })
                .collect(),
            chunk_bytes: parsed.chunks.iter().map(|c| c.len()).collect(),
            header_bytes: parsed.extent.len,
            frame_bytes,
            output_bytes: h.output_bytes().unwrap_or(0),
        }
    }
}

/// Reads a frame's header and walks its chunk table (verifying every checksum) without
/// decoding anything.
pub fn info(frame: &[u8]) -> Result<FrameInfo> {
    let parsed = pipeline::parse_frame(frame, &Limits::NONE)?;
    Ok(FrameInfo::new(&parsed, frame.len()))
}
