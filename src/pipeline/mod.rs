//! Runs the stages a frame names, chunk by chunk, on a thread pool.
//!
//! The stage modules (transform, quant, entropy) know nothing of each other or of the
//! format; a [`Recipe`] composes them and turns into the frame's stage list, and back.

mod contexts;
mod lossy;
pub mod precoded;
pub mod session;
pub mod stream;
pub(crate) mod threads;
pub mod transform;

pub use stream::{StreamDecoder, StreamEncoder};

use std::cell::RefCell;
use std::ops::Range;

use crate::dtype::DType;
use crate::entropy::rans::{self, RansParams};
use crate::error::{ensure_frame, Error, ErrorKind, Result};
use crate::format::{self, ContainerHint, Header, HeaderExtent, Reader, StageDesc};
use crate::quant::block::{self, BlockFormat, ScaleFormat};
use crate::quant::minifloat::Element;
use crate::quant::{rounding, uniform};
use crate::simd;
use crate::transform::floatsplit;
use crate::validate::{self, Validation};

pub use lossy::{encode_bounded, encode_bounded_into};
pub use precoded::{encode_block_codes_into, BlockCodes};
pub use transform::{ProjectParams, SessionTag, STAGE_PROJECT, STAGE_SESSION};

/// Stage kind: the lossless float split (no parameters).
pub const STAGE_FLOAT_SPLIT: u8 = 1;
/// Stage kind: interleaved rANS (parameters: lanes, probability bits).
pub const STAGE_RANS: u8 = 2;
/// Stage kind: fixed-rate block quantization (parameters: element, scale, block size,
/// rounding, non-finite handling).
pub const STAGE_BLOCK_QUANT: u8 = 3;
/// Stage kind: error-bounded uniform quantization (parameters: bound, scope, step, ...).
pub const STAGE_UNIFORM_QUANT: u8 = 4;

/// Chunk payload mode: the chunk's elements, stored as they are (little-endian).
const MODE_STORED: u8 = 0;
/// Chunk payload mode: coded by the frame's stages.
pub(crate) const MODE_CODED: u8 = 1;
/// Chunk payload mode (format version 2, `[uniform_quant, rans]` only): coded with a rANS
/// table per class of rows (see [`contexts`]).
pub(crate) const MODE_CONTEXTS: u8 = 2;

/// Parameters of a fixed-rate block quantization stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockParams {
    pub format: BlockFormat,
    /// Rounding code (0 nearest-even, 1 stochastic); informational.
    pub rounding: u8,
    /// Non-finite handling code (0 error, 1 keep); informational.
    pub nonfinite: u8,
}

/// Bound codes of a uniform quantization stage.
pub const BOUND_REL_RMSE: u8 = 1;
pub const BOUND_MAX_ABS: u8 = 2;
pub const BOUND_BITS: u8 = 3;
/// Step scope codes of a uniform quantization stage.
pub const SCOPE_GLOBAL: u8 = 0;
pub const SCOPE_CHANNEL: u8 = 1;
pub const SCOPE_BLOCK: u8 = 2;

/// Parameters of an error-bounded uniform quantization stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformParams {
    /// Which bound the encoder met ([`BOUND_REL_RMSE`], ...); informational.
    pub bound: u8,
    /// The bound's value, as `f64` bits; informational, except that a maximum-error bound is
    /// what the encoder checks every element against.
    pub bound_value: u64,
    /// [`SCOPE_GLOBAL`], [`SCOPE_CHANNEL`] or [`SCOPE_BLOCK`].
    pub scope: u8,
    /// Channels (the last dimension) for the channel scope, elements per block for the
    /// block scope, 0 for the global one.
    pub group: u64,
    /// `f32` bits: the step (global scope), or the factor of each group's RMS (others).
    pub step: u32,
    pub rounding: u8,
    pub nonfinite: u8,
}

impl UniformParams {
    pub fn step(&self) -> f32 {
        f32::from_bits(self.step)
    }
}

/// The sequence of stages a frame runs, with their parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Float split, rANS over the sign+exponent symbols, packed mantissas.
    Lossless { rans: RansParams },
    /// Block quantization; codes packed, or rANS-coded when `rans` is given.
    Block {
        params: BlockParams,
        rans: Option<RansParams>,
    },
    /// Uniform quantization with rANS over its symbols.
    Uniform {
        params: UniformParams,
        rans: RansParams,
    },
    /// Projection onto a channel basis, one quantizer step for the coefficients, rANS with a
    /// table per group of coefficient channels; optionally part of a shared-basis session.
    Project {
        params: ProjectParams,
        rans: RansParams,
        session: Option<SessionTag>,
    },
}

fn rans_desc(rans: &RansParams) -> StageDesc {
    StageDesc {
        kind: STAGE_RANS,
        params: vec![rans.lanes as u8, rans.prob_bits as u8],
    }
}

fn parse_rans(r: &StageDesc) -> Result<RansParams> {
    ensure_frame!(r.params.len() == 2, "rANS stage needs 2 parameter bytes");
    let rans = RansParams {
        lanes: r.params[0] as usize,
        prob_bits: u32::from(r.params[1]),
    };
    rans.validate()?;
    Ok(rans)
}

fn parse_block(d: &StageDesc) -> Result<BlockParams> {
    ensure_frame!(
        d.params.len() == 6,
        "block quantization stage needs 6 parameter bytes"
    );
    let p = &d.params;
    let element = Element::from_code(p[0])
        .ok_or_else(|| Error::corrupt(format!("unknown block element format {}", p[0])))?;
    let scale = ScaleFormat::from_code(p[1])
        .ok_or_else(|| Error::corrupt(format!("unknown block scale format {}", p[1])))?;
    let block = usize::from(u16::from_le_bytes([p[2], p[3]]));
    ensure_frame!(
        (block::MIN_BLOCK..=block::MAX_BLOCK).contains(&block),
        "block size {block} is outside {}..={}",
        block::MIN_BLOCK,
        block::MAX_BLOCK
    );
    ensure_frame!(p[4] <= 1, "unknown rounding code {}", p[4]);
    ensure_frame!(p[5] <= 1, "unknown non-finite code {}", p[5]);
    Ok(BlockParams {
        format: BlockFormat {
            element,
            scale,
            block,
        },
        rounding: p[4],
        nonfinite: p[5],
    })
}

fn block_desc(b: &BlockParams) -> StageDesc {
    let f = &b.format;
    let mut params = vec![f.element.code(), f.scale.code()];
    params.extend_from_slice(&(f.block as u16).to_le_bytes());
    params.extend_from_slice(&[b.rounding, b.nonfinite]);
    StageDesc {
        kind: STAGE_BLOCK_QUANT,
        params,
    }
}

fn uniform_desc(u: &UniformParams) -> StageDesc {
    let mut params = vec![u.bound];
    params.extend_from_slice(&u.bound_value.to_le_bytes());
    params.push(u.scope);
    params.extend_from_slice(&u.group.to_le_bytes());
    params.extend_from_slice(&u.step.to_le_bytes());
    params.extend_from_slice(&[u.rounding, u.nonfinite]);
    StageDesc {
        kind: STAGE_UNIFORM_QUANT,
        params,
    }
}

fn parse_uniform(d: &StageDesc) -> Result<UniformParams> {
    ensure_frame!(
        d.params.len() == 24,
        "uniform quantization stage needs 24 parameter bytes"
    );
    let p = &d.params;
    let u = UniformParams {
        bound: p[0],
        bound_value: u64::from_le_bytes(p[1..9].try_into().unwrap()),
        scope: p[9],
        group: u64::from_le_bytes(p[10..18].try_into().unwrap()),
        step: u32::from_le_bytes(p[18..22].try_into().unwrap()),
        rounding: p[22],
        nonfinite: p[23],
    };
    ensure_frame!(
        (BOUND_REL_RMSE..=BOUND_BITS).contains(&u.bound),
        "unknown bound code {}",
        u.bound
    );
    let v = f64::from_bits(u.bound_value);
    ensure_frame!(v.is_finite() && v > 0.0, "bound value {v} is not positive");
    match u.scope {
        SCOPE_GLOBAL => ensure_frame!(u.group == 0, "global step with a group size"),
        SCOPE_CHANNEL => ensure_frame!(u.group >= 1, "channel scope with no channels"),
        SCOPE_BLOCK => ensure_frame!(
            (block::MIN_BLOCK as u64..=block::MAX_BLOCK as u64).contains(&u.group),
            "step block size {} is outside {}..={}",
            u.group,
            block::MIN_BLOCK,
            block::MAX_BLOCK
        ),
        s => return Err(Error::corrupt(format!("unknown step scope {s}"))),
    }
    let step = u.step();
    ensure_frame!(
        step.is_finite() && step > 0.0,
        "quantizer step {step} is not positive"
    );
    ensure_frame!(u.rounding <= 1, "unknown rounding code {}", u.rounding);
    ensure_frame!(u.nonfinite <= 1, "unknown non-finite code {}", u.nonfinite);
    Ok(u)
}

impl Recipe {
    /// The stage list written into the header.
    pub fn stages(&self) -> Vec<StageDesc> {
        match self {
            Recipe::Lossless { rans } => vec![
                StageDesc {
                    kind: STAGE_FLOAT_SPLIT,
                    params: vec![],
                },
                rans_desc(rans),
            ],
            Recipe::Block { params, rans } => {
                let mut v = vec![block_desc(params)];
                v.extend(rans.as_ref().map(rans_desc));
                v
            }
            Recipe::Uniform { params, rans } => vec![uniform_desc(params), rans_desc(rans)],
            Recipe::Project {
                params,
                rans,
                session,
            } => {
                let mut v: Vec<StageDesc> = session.iter().map(|t| t.desc()).collect();
                v.push(params.desc());
                v.push(rans_desc(rans));
                v
            }
        }
    }

    /// The number of consecutive elements that must not be split between chunks (chunk
    /// sizes are a multiple of it).
    pub fn chunk_multiple(&self) -> u64 {
        match self {
            Recipe::Lossless { .. } => 1,
            Recipe::Block { params, .. } => params.format.block as u64,
            Recipe::Uniform { params, .. } if params.scope == SCOPE_BLOCK => params.group,
            Recipe::Uniform { .. } => 1,
            Recipe::Project { params, .. } => u64::from(params.channels),
        }
    }

    /// Recognizes a stage list read from a frame.
    pub fn from_stages(stages: &[StageDesc]) -> Result<Recipe> {
        if let Some(s) = stages.iter().find(|s| {
            !matches!(
                s.kind,
                STAGE_FLOAT_SPLIT
                    | STAGE_RANS
                    | STAGE_BLOCK_QUANT
                    | STAGE_UNIFORM_QUANT
                    | STAGE_PROJECT
                    | STAGE_SESSION
            )
        }) {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "frame uses stage kind {}, unknown to this version of iota-codec: upgrade \
                     to decode it",
                    s.kind
                ),
            ));
        }
        match stages {
            [split, r] if split.kind == STAGE_FLOAT_SPLIT && r.kind == STAGE_RANS => {
                ensure_frame!(split.params.is_empty(), "float split takes no parameters");
                Ok(Recipe::Lossless {
                    rans: parse_rans(r)?,
                })
            }
            [b] if b.kind == STAGE_BLOCK_QUANT => Ok(Recipe::Block {
                params: parse_block(b)?,
                rans: None,
            }),
            [b, r] if b.kind == STAGE_BLOCK_QUANT && r.kind == STAGE_RANS => Ok(Recipe::Block {
                params: parse_block(b)?,
                rans: Some(parse_rans(r)?),
            }),
            [u, r] if u.kind == STAGE_UNIFORM_QUANT && r.kind == STAGE_RANS => {
                Ok(Recipe::Uniform {
                    params: parse_uniform(u)?,
                    rans: parse_rans(r)?,
                })
            }
            [p, r] if p.kind == STAGE_PROJECT && r.kind == STAGE_RANS => {
                let params = ProjectParams::parse(p)?;
                ensure_frame!(
                    params.basis != transform::BASIS_SESSION,
                    "a session-basis projection needs a session stage"
                );
                Ok(Recipe::Project {
                    params,
                    rans: parse_rans(r)?,
                    session: None,
                })
            }
            [t, p, r]
                if t.kind == STAGE_SESSION && p.kind == STAGE_PROJECT && r.kind == STAGE_RANS =>
            {
                let tag = SessionTag::parse(t)?;
                let params = ProjectParams::parse(p)?;
                transform::check_session(&tag, &params)?;
                Ok(Recipe::Project {
                    params,
                    rans: parse_rans(r)?,
                    session: Some(tag),
                })
            }
            _ => Err(Error::corrupt(format!(
                "unsupported stage sequence {:?}",
                stages.iter().map(|s| s.kind).collect::<Vec<_>>()
            ))),
        }
    }

    /// A human-readable description of each stage: name and parameters.
    pub fn describe(&self) -> Vec<(&'static str, Vec<(&'static str, ParamValue)>)> {
        use ParamValue::{Float, Int, Str};
        let rans_info = |rans: &RansParams| {
            (
                "rans",
                vec![
                    ("lanes", Int(rans.lanes as i64)),
                    ("prob_bits", Int(i64::from(rans.prob_bits))),
                ],
            )
        };
        let nonfinite = |c: u8| if c == 1 { "keep" } else { "error" };
        match self {
            Recipe::Lossless { rans } => vec![("float_split", vec![]), rans_info(rans)],
            Recipe::Block { params, rans } => {
                let f = &params.format;
                let mut v = vec![(
                    "block_quant",
                    vec![
                        ("element", Str(f.element.name())),
                        ("bits", Int(i64::from(f.element.bits()))),
                        ("scale", Str(f.scale.name())),
                        ("block", Int(f.block as i64)),
                        (
                            "rounding",
                            Str(rounding::code_name(params.rounding).unwrap_or("?")),
                        ),
                        ("nonfinite", Str(nonfinite(params.nonfinite))),
                    ],
                )];
                v.extend(rans.as_ref().map(rans_info));
                v
            }
            Recipe::Uniform { params: u, rans } => {
                let bound = match u.bound {
                    BOUND_REL_RMSE => "error",
                    BOUND_MAX_ABS => "max_abs_error",
                    _ => "target_bits",
                };
                let scope = match u.scope {
                    SCOPE_GLOBAL => "global",
                    SCOPE_CHANNEL => "channel",
                    _ => "block",
                };
                let mut p = vec![
                    ("bound", Str(bound)),
                    (bound, Float(f64::from_bits(u.bound_value))),
                    ("step_scope", Str(scope)),
                ];
                match u.scope {
                    SCOPE_GLOBAL => p.push(("step", Float(f64::from(u.step())))),
                    SCOPE_CHANNEL => {
                        p.push(("channels", Int(u.group as i64)));
                        p.push(("step_per_rms", Float(f64::from(u.step()))));
                    }
                    _ => {
                        p.push(("block", Int(u.group as i64)));
                        p.push(("step_per_rms", Float(f64::from(u.step()))));
                    }
                }
                p.push((
                    "rounding",
                    Str(rounding::code_name(u.rounding).unwrap_or("?")),
                ));
                p.push(("nonfinite", Str(nonfinite(u.nonfinite))));
                vec![("uniform_quant", p), rans_info(rans)]
            }
            Recipe::Project {
                params: p,
                rans,
                session,
            } => {
                let mut v = Vec::new();
                if let Some(t) = session {
                    v.push((
                        "session",
                        vec![
                            // Ids and hashes are 64-bit patterns: reported as signed integers.
                            ("session_id", Int(t.id as i64)),
                            ("step", Int(t.step as i64)),
                            ("state_hash", Int(t.state as i64)),
                            ("resync", Int(i64::from(t.resync))),
                        ],
                    ));
                }
                v.push((
                    "project",
                    vec![
                        ("bound", Str("error")),
                        ("error", Float(f64::from_bits(p.bound_value))),
                        ("basis", Str(p.basis_name())),
                        ("channels", Int(i64::from(p.channels))),
                        ("rank", Int(i64::from(p.k))),
                        ("step", Float(f64::from(p.step()))),
                        (
                            "rounding",
                            Str(rounding::code_name(p.rounding).unwrap_or("?")),
                        ),
                    ],
                ));
                v.push(rans_info(rans));
                v
            }
        }
    }
}

/// A stage parameter as [`Recipe::describe`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Str(&'static str),
}

/// Picks the rANS lane count for chunks of `m` elements: 32 lanes when there are at least
/// 256 symbols per lane, fewer for small tensors, where each lane's 4-byte state would cost
/// more than it saves.
pub fn lanes_for(m: u64) -> usize {
    let per_lane = (m / 256).clamp(1, rans::MAX_LANES as u64);
    1 << (63 - per_lane.leading_zeros())
}

/// Per-thread buffers, reused from chunk to chunk.
#[derive(Default)]
struct Scratch {
    symbols: Vec<u16>,
    counts: Vec<u32>,
    rans: rans::EncScratch,
    /// Elements as `f32` (lossy modes).
    xs: Vec<f32>,
    /// Element codes (block quantizer), or packed mantissas (lossless).
    codes: Vec<u8>,
    /// Steps per element or group (uniform quantizer).
    steps: Vec<f32>,
    extra: uniform::BitWriter,
    /// The escaped elements' bytes (uniform quantizer).
    escaped: Vec<u8>,
    /// Indices of flagged symbols (uniform quantizer).
    flagged: Vec<u32>,
    /// Row contexts (uniform quantizer).
    contexts: contexts::Scratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A chunk scratch larger than this (in elements) is freed after use rather than kept.
const KEEP_SCRATCH_ELEMS: usize = 1 << 22;

fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let out = f(&mut s);
        if s.symbols.capacity().max(s.xs.capacity()) > KEEP_SCRATCH_ELEMS {
            *s = Scratch::default();
        }
        out
    })
}

/// What [`encode_frame`] needs to know.
#[derive(Debug, Clone)]
pub struct EncodeRequest<'a> {
    pub input: &'a [u8],
    pub dtype: DType,
    pub shape: &'a [u64],
    pub hint: ContainerHint,
    pub chunk_elems: u64,
    pub threads: usize,
    pub recipe: Recipe,
    /// Seed of stochastic rounding (not written into the frame).
    pub seed: u64,
    /// Whether error-bounded chunks of a tensor of two dimensions or more may use row
    /// contexts (see [`crate::BoundedSpec::contexts`]).
    pub contexts: bool,
}

/// A checked encode request: the header to write and how the input splits into chunks.
#[derive(Debug, Clone)]
pub(crate) struct EncodePlan {
    pub header: Header,
    pub recipe: Recipe,
    pub threads: usize,
    /// Seed of stochastic rounding.
    pub seed: u64,
    /// See [`EncodeRequest::contexts`].
    pub contexts: bool,
    pub input_len: usize,
    /// Bytes of input per chunk (the last chunk may be shorter).
    pub chunk_bytes: usize,
    pub n_chunks: usize,
}

impl EncodePlan {
    pub fn new(req: &EncodeRequest) -> Result<EncodePlan> {
        Self::sized(req, Some(req.input.len()))
    }

    /// [`EncodePlan::new`] for a tensor whose elements are not in `req.input` (which is then
    /// ignored): with `input_len: None` the plan is made for the `numel * itemsize` bytes the
    /// shape implies; with `Some(len)`, `len` must be that size.
    pub fn sized(req: &EncodeRequest, input_len: Option<usize>) -> Result<EncodePlan> {
        if req.shape.len() > format::MAX_NDIM {
            return Err(Error::invalid(format!(
                "{} dimensions: the format holds at most {}",
                req.shape.len(),
                format::MAX_NDIM
            )));
        }
        let numel = format::numel(req.shape)
            .map_err(|_| Error::invalid("the shape's element count overflows 64 bits"))?;
        let itemsize = req.dtype.itemsize();
        let expected = numel
            .checked_mul(itemsize as u64)
            .ok_or_else(|| Error::invalid("the tensor's size overflows 64 bits"))?;
        let input_len = match input_len {
            Some(len) if len as u64 != expected => {
                return Err(Error::invalid(format!(
                    "buffer holds {len} bytes, but shape {:?} of {} needs {expected}",
                    req.shape, req.dtype
                )));
            }
            Some(len) => len,
            None => usize::try_from(expected)
                .map_err(|_| Error::invalid("the tensor does not fit in this machine's memory"))?,
        };
        if req.chunk_elems == 0 {
            return Err(Error::invalid("chunk size must be at least 1 element"));
        }
        // A chunk's payload (at most its stored form: a mode byte and the elements) must fit
        // its record's 32-bit length field.
        let max_chunk = (format::MAX_CHUNK_PAYLOAD as u64 - 1) / itemsize as u64;
        // Quantizer blocks never straddle chunks.
        let multiple = req.recipe.chunk_multiple();
        let chunk_elems = (req.chunk_elems.min(max_chunk) / multiple).max(1) * multiple;
        let chunk_bytes = chunk_elems as usize * itemsize;
        Ok(EncodePlan {
            header: Header {
                version: format::VERSION,
                hint: req.hint,
                dtype: req.dtype,
                shape: req.shape.to_vec(),
                chunk_elems,
                stages: req.recipe.stages(),
            },
            recipe: req.recipe,
            threads: req.threads,
            seed: req.seed,
            contexts: req.contexts,
            input_len,
            chunk_bytes,
            n_chunks: input_len.div_ceil(chunk_bytes),
        })
    }

    /// The input bytes of chunk `i`.
    pub fn chunk<'a>(&self, input: &'a [u8], i: usize) -> &'a [u8] {
        let start = i * self.chunk_bytes;
        &input[start..(start + self.chunk_bytes).min(input.len())]
    }

    /// Whether the recipe refuses NaN and infinities: a fixed-rate recipe not asked to keep
    /// them. (The error-bounded encoder checks its own.)
    pub fn refuses_nonfinite(&self) -> bool {
        matches!(&self.recipe, Recipe::Block { params, .. } if params.nonfinite == 0)
    }

    /// Fails, naming the first one, if the input has NaN or infinities that the recipe
    /// refuses. The one-shot encoder learns this from the chunk coders instead; a stream
    /// encoder must know before it sends anything.
    pub fn check_nonfinite(&self, input: &[u8]) -> Result<()> {
        if self.refuses_nonfinite() {
            let req = EncodeRequest {
                input,
                dtype: self.header.dtype,
                shape: &self.header.shape,
                hint: self.header.hint,
                chunk_elems: self.header.chunk_elems,
                threads: self.threads,
                recipe: self.recipe,
                seed: self.seed,
                contexts: self.contexts,
            };
            lossy::refuse_nonfinite(&req, self.chunk_bytes, "fixed-rate")?;
        }
        Ok(())
    }

    /// Bytes of a frame at most (its header aside): every chunk stored, with its record.
    pub fn max_records_len(&self) -> usize {
        self.input_len + self.n_chunks * (format::CHUNK_RECORD_OVERHEAD + 1)
    }

    /// Appends the payload of chunk `i` coded with `recipe` to `out` (see [`encode_chunk`]);
    /// the tensor's rows give the segments of the row contexts.
    pub fn encode_chunk_with(
        &self,
        recipe: &Recipe,
        input: &[u8],
        i: usize,
        out: &mut Vec<u8>,
    ) -> ChunkOutcome {
        encode_chunk(
            recipe,
            self.header.dtype,
            self.chunk(input, i),
            self.header.chunk_elems * i as u64,
            self.seed,
            if self.contexts {
                contexts::segment_len(&self.header.shape)
            } else {
                0
            },
            out,
        )
    }

    /// Encodes chunks `range` (in parallel when the plan has threads) into their records.
    pub fn encode_records(
        &self,
        input: &[u8],
        header_checksum: u32,
        range: Range<usize>,
    ) -> Vec<(Vec<u8>, ChunkOutcome)> {
        self.encode_records_with(&self.recipe, input, header_checksum, range)
    }

    /// [`EncodePlan::encode_records`] with another recipe (of the same chunking).
    pub fn encode_records_with(
        &self,
        recipe: &Recipe,
        input: &[u8],
        header_checksum: u32,
        range: Range<usize>,
    ) -> Vec<(Vec<u8>, ChunkOutcome)> {
        let first = range.start;
        threads::map(self.threads, range.len(), |k| {
            let i = first + k;
            let mut rec = Vec::new();
            let mut outcome = ChunkOutcome::default();
            format::write_chunk_with(&mut rec, header_checksum, i as u64, |out| {
                outcome = self.encode_chunk_with(recipe, input, i, out);
            });
            (rec, outcome)
        })
    }

    /// Appends the record of every chunk to `out` (which holds a header whose checksum is
    /// `header_checksum`), its payload written by `payload(i, out)`, in the order and with the
    /// threading of [`EncodePlan::write_records`]; returns what each call returned, in chunk
    /// order.
    pub fn write_records_by<T: Send>(
        &self,
        header_checksum: u32,
        out: &mut Vec<u8>,
        payload: impl Fn(usize, &mut Vec<u8>) -> T + Sync + Send,
    ) -> Vec<T> {
        threads::append_in_order(self.threads, self.n_chunks, out, |i, buf| {
            let mut result = None;
            format::write_chunk_with(buf, header_checksum, i as u64, |o| {
                result = Some(payload(i, o));
            });
            result.expect("the payload writer ran")
        })
    }

    /// Appends every chunk record coded with `recipe` to `out` (which holds a header whose
    /// checksum is `header_checksum`): straight into `out` on one thread; on several, each
    /// record goes through a buffer of its worker and into `out` as soon as the records
    /// before it are there. Returns the outcomes added up (in chunk order).
    pub fn write_records(
        &self,
        recipe: &Recipe,
        input: &[u8],
        header_checksum: u32,
        out: &mut Vec<u8>,
    ) -> ChunkOutcome {
        let outcomes = self.write_records_by(header_checksum, out, |i, o| {
            self.encode_chunk_with(recipe, input, i, o)
        });
        let mut total = ChunkOutcome::default();
        for o in &outcomes {
            total.add(o);
        }
        total
    }
}

/// Encodes a whole tensor into a frame.
pub fn encode_frame(req: &EncodeRequest) -> Result<Vec<u8>> {
    let mut frame = Vec::new();
    encode_frame_into(req, &mut frame)?;
    Ok(frame)
}

/// Encodes a whole tensor into `out` (cleared first; its capacity is reused, and the largest
/// frame the tensor can take is reserved up front so that it never grows while coding).
pub fn encode_frame_into(req: &EncodeRequest, out: &mut Vec<u8>) -> Result<()> {
    let plan = EncodePlan::new(req)?;
    out.clear();
    let ext = plan.header.write(out);
    out.reserve(plan.max_records_len());
    crate::memory::advise_huge_pages_spare(out);
    let total = plan.write_records(&plan.recipe, req.input, ext.checksum, out);
    if total.nonfinite > 0 && plan.refuses_nonfinite() {
        out.clear();
        plan.check_nonfinite(req.input)?;
        return Err(Error::new(
            ErrorKind::NonFinite,
            "fixed-rate quantization refuses non-finite values",
        ));
    }
    Ok(())
}

/// What coding a chunk found out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChunkOutcome {
    /// The sum of the squared errors of the chunk as it decodes (uniform quantization;
    /// otherwise 0).
    pub err: f64,
    /// NaN and infinities met (block quantization; otherwise 0).
    pub nonfinite: usize,
}

impl ChunkOutcome {
    fn add(&mut self, o: &ChunkOutcome) {
        self.err += o.err;
        self.nonfinite += o.nonfinite;
    }
}

/// Appends the payload of one chunk (elements `base..` of the tensor) to `out`. A chunk whose
/// coded form would be larger than its elements is stored instead (exactly; its error is 0).
fn encode_chunk(
    recipe: &Recipe,
    dtype: DType,
    input: &[u8],
    base: u64,
    seed: u64,
    segment: u64,
    out: &mut Vec<u8>,
) -> ChunkOutcome {
    let n = input.len() / dtype.itemsize();
    let start = out.len();
    let mut outcome = ChunkOutcome::default();
    out.reserve(input.len() + 16);
    match recipe {
        Recipe::Lossless { rans: params } => with_scratch(|s| {
            s.symbols.resize(n, 0);
            s.counts.clear();
            s.counts.resize(floatsplit::alphabet(dtype), 0);
            let drop =
                floatsplit::split_pack(dtype, input, &mut s.symbols, &mut s.counts, &mut s.codes);
            out.push(MODE_CODED);
            out.push(drop as u8);
            rans::encode(
                &s.symbols,
                s.counts.len(),
                Some(&s.counts),
                *params,
                &mut s.rans,
                out,
            );
            out.extend_from_slice(&s.codes);
        }),
        Recipe::Block { params, rans } => {
            outcome.nonfinite =
                lossy::encode_block_chunk(params, rans.as_ref(), dtype, input, base, seed, out)
        }
        Recipe::Uniform { params, rans } => {
            let check = lossy::check_for(params, dtype);
            let seg = contexts::Segments::for_chunk(n, base, segment);
            outcome.err = lossy::encode_uniform_chunk(
                params, rans, &check, dtype, input, base, seed, seg, out,
            );
        }
        // Projection frames are assembled by `transform`; a chunk coded here is stored.
        Recipe::Project { .. } => out.truncate(start),
    }
    if out.len() - start > input.len() || out.len() == start {
        // Only tiny chunks (or ones with many escapes) get here; stored, they are exact.
        out.truncate(start);
        out.push(MODE_STORED);
        out.extend_from_slice(input);
        outcome.err = 0.0;
    }
    outcome
}

/// Where a chunk decoder gets the symbols of its rANS stream.
pub(crate) enum Symbols<'p> {
    /// It decodes the stream itself.
    Decode,
    /// It stops at the stream, which is kept here (with the payload offset after it), so that
    /// two chunks' streams can be decoded together; a chunk without one decodes in full.
    Probe(Option<(rans::Stream<'p>, usize)>),
    /// The stream was decoded already: its symbols, and the payload offset after it.
    Ready(Vec<u16>, usize),
}

impl<'p> Symbols<'p> {
    /// Puts the `n` symbols of the stream at `r` (below `alphabet`) in `out` and returns
    /// true, or, probing, keeps the stream and returns false: the decoder then stops.
    pub(crate) fn get(
        &mut self,
        r: &mut Reader<'p>,
        alphabet: usize,
        params: RansParams,
        n: usize,
        out: &mut Vec<u16>,
    ) -> Result<bool> {
        match self {
            Symbols::Decode => {
                out.resize(n, 0);
                rans::decode(r, alphabet, params, out)?;
            }
            Symbols::Probe(kept) => {
                let stream = rans::Stream::read(r, alphabet, params, n)?;
                *kept = Some((stream, r.position()));
                return Ok(false);
            }
            Symbols::Ready(symbols, end) => {
                // The decoder took the same path up to here when probing.
                debug_assert!(symbols.len() == n && *end >= r.position());
                r.bytes(*end - r.position(), "rANS stream")?;
                std::mem::swap(out, symbols);
            }
        }
        Ok(true)
    }

    /// Whether the decoder stopped at its stream.
    pub(crate) fn stopped(&self) -> bool {
        matches!(self, Symbols::Probe(Some(_)))
    }
}

/// Decodes chunk `index` (its checksum verified) into `out`; a damaged payload's error names
/// the chunk.
fn decode_chunk<'p>(
    job: &ChunkJob,
    index: u64,
    payload: &'p [u8],
    out: &mut [u8],
    src: &mut Symbols<'p>,
) -> Result<()> {
    decode_payload(job, index, payload, out, src).map_err(|e| e.in_chunk(index))
}

fn decode_payload<'p>(
    job: &ChunkJob,
    index: u64,
    payload: &'p [u8],
    out: &mut [u8],
    src: &mut Symbols<'p>,
) -> Result<()> {
    let (recipe, dtype) = (job.recipe, job.dtype);
    let n = out.len() / dtype.itemsize();
    let mut r = Reader::new(payload);
    match r.u8("chunk mode")? {
        MODE_STORED => {
            let raw = r.bytes(out.len(), "stored chunk")?;
            out.copy_from_slice(raw);
        }
        MODE_CODED => match recipe {
            Recipe::Lossless { rans: params } => {
                let drop = u32::from(r.u8("mantissa drop")?);
                ensure_frame!(
                    drop <= dtype.layout().mant_bits,
                    "mantissa drop {drop} exceeds the {} mantissa bits of {dtype}",
                    dtype.layout().mant_bits
                );
                with_scratch(|s| -> Result<()> {
                    if !src.get(
                        &mut r,
                        floatsplit::alphabet(dtype),
                        *params,
                        n,
                        &mut s.symbols,
                    )? {
                        return Ok(());
                    }
                    let packed = r.bytes(
                        floatsplit::packed_mantissa_len(dtype, n, drop),
                        "packed mantissas",
                    )?;
                    floatsplit::merge(dtype, &s.symbols, packed, drop, out);
                    Ok(())
                })?;
            }
            Recipe::Block { params, rans } => {
                lossy::decode_block_chunk(params, rans.as_ref(), dtype, &mut r, out, src)?
            }
            Recipe::Uniform { params, rans } => {
                lossy::decode_uniform_chunk(params, rans, dtype, false, &mut r, out, src)?
            }
            Recipe::Project { params, rans, .. } => {
                let ctx = job
                    .project
                    .ok_or_else(|| Error::corrupt("projection frame without its basis"))?;
                transform::decode_chunk(
                    params,
                    rans,
                    ctx,
                    index,
                    job.chunk_elems,
                    dtype,
                    &mut r,
                    out,
                )?
            }
        },
        MODE_CONTEXTS if job.contexts => match recipe {
            Recipe::Uniform { params, rans } => {
                lossy::decode_uniform_chunk(params, rans, dtype, true, &mut r, out, src)?
            }
            _ => {
                return Err(Error::corrupt(
                    "chunk mode 2 outside a uniform quantization frame",
                ))
            }
        },
        m => return Err(Error::corrupt(format!("unknown chunk mode {m}"))),
    }
    if src.stopped() {
        return Ok(());
    }
    r.finish("chunk")
}

/// Limits and checks applied when decoding untrusted frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest decoded tensor, in bytes.
    pub max_output_bytes: u64,
    /// Most chunks a frame may have: each costs a table build and a task, so a frame of
    /// many tiny chunks costs CPU out of proportion to its size.
    pub max_chunks: u64,
    /// Most dimensions a frame may declare (the format allows up to 32).
    pub max_ndim: usize,
    /// Checks on the decoded values (off by default).
    pub validation: Validation,
}

impl Limits {
    /// 4 GiB.
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 30;
    /// 2^20 chunks: 256 GiB of bfloat16 at the default chunk size.
    pub const DEFAULT_MAX_CHUNKS: u64 = 1 << 20;

    /// No limit beyond the format's own.
    pub const NONE: Limits = Limits {
        max_output_bytes: u64::MAX,
        max_chunks: u64::MAX,
        max_ndim: format::MAX_NDIM,
        validation: Validation {
            reject_nonfinite: false,
            max_abs: None,
        },
    };

    /// Checks a header against the limits and recognizes its stages.
    pub fn check(&self, header: &Header) -> Result<Recipe> {
        let recipe = Recipe::from_stages(&header.stages)?;
        ensure_frame!(
            header.chunk_elems.is_multiple_of(recipe.chunk_multiple()),
            "chunk size {} is not a multiple of the quantizer's block of {}",
            header.chunk_elems,
            recipe.chunk_multiple()
        );
        if header.shape.len() > self.max_ndim {
            return Err(Error::limit(format!(
                "frame declares {} dimensions, more than the limit of {} (max_ndim)",
                header.shape.len(),
                self.max_ndim
            )));
        }
        let out_bytes = header.output_bytes()?;
        if out_bytes > self.max_output_bytes {
            return Err(Error::limit(format!(
                "frame decodes to {out_bytes} bytes, more than the limit of {} \
                 (raise max_output_bytes if you trust the sender)",
                self.max_output_bytes
            )));
        }
        let n_chunks = header.n_chunks()?;
        if n_chunks > self.max_chunks {
            return Err(Error::limit(format!(
                "frame has {n_chunks} chunks, more than the limit of {} (max_chunks)",
                self.max_chunks
            )));
        }
        Ok(recipe)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            max_chunks: Self::DEFAULT_MAX_CHUNKS,
            max_ndim: format::MAX_NDIM,
            validation: Validation::default(),
        }
    }
}

/// A frame whose header, stage list and chunk table have been checked.
#[derive(Debug)]
pub struct ParsedFrame<'a> {
    pub header: Header,
    pub extent: HeaderExtent,
    pub recipe: Recipe,
    pub chunks: Vec<&'a [u8]>,
    /// The stored checksums of the chunks, when they are still to be verified (by
    /// [`decode_parsed`], each just before its chunk is decoded); empty when verified.
    pub unverified: Vec<u32>,
}

/// Parses `frame` and verifies every checksum, without decoding any chunk.
pub fn parse_frame<'a>(frame: &'a [u8], limits: &Limits) -> Result<ParsedFrame<'a>> {
    let (header, extent, recipe) = parse_header(frame, limits)?;
    let chunks = format::read_chunks(
        &frame[extent.len..],
        extent.checksum,
        header.n_chunks()?,
        header.max_chunk_payload(),
    )?;
    Ok(ParsedFrame {
        header,
        extent,
        recipe,
        chunks,
        unverified: Vec::new(),
    })
}

/// [`parse_frame`] for decoding: the header and the chunk table's structure are checked,
/// and [`decode_parsed`] verifies each chunk's checksum just before decoding it (on the
/// thread that decodes it, while its bytes are in cache, rather than in a pass of its own).
pub fn parse_frame_to_decode<'a>(frame: &'a [u8], limits: &Limits) -> Result<ParsedFrame<'a>> {
    let (header, extent, recipe) = parse_header(frame, limits)?;
    let table = format::read_chunk_table(
        &frame[extent.len..],
        header.n_chunks()?,
        header.max_chunk_payload(),
    )?;
    Ok(ParsedFrame {
        header,
        extent,
        recipe,
        unverified: table.iter().map(|c| c.0).collect(),
        chunks: table.into_iter().map(|c| c.1).collect(),
    })
}

/// The header of `frame`, checked against its stage list and `limits`.
fn parse_header(frame: &[u8], limits: &Limits) -> Result<(Header, HeaderExtent, Recipe)> {
    let (header, extent) = Header::parse(frame)?;
    let recipe = limits.check(&header)?;
    Ok((header, extent, recipe))
}

/// Decodes a parsed frame into `out`, which must be exactly the decoded size, and validates
/// the values.
pub fn decode_parsed(
    parsed: &ParsedFrame,
    out: &mut [u8],
    threads: usize,
    validation: &Validation,
) -> Result<()> {
    let ctx = match &parsed.recipe {
        Recipe::Project { params, rans, .. } => Some(transform::context(
            params,
            rans,
            &parsed.header.shape,
            parsed.chunks.first().copied(),
            None,
        )?),
        _ => None,
    };
    decode_parsed_with(parsed, out, threads, validation, ctx.as_ref())
}

/// [`decode_parsed`] with the context of a projection frame.
pub(crate) fn decode_parsed_with(
    parsed: &ParsedFrame,
    out: &mut [u8],
    threads: usize,
    validation: &Validation,
    project: Option<&transform::Context>,
) -> Result<()> {
    let h = &parsed.header;
    let expected = h.output_bytes()?;
    if out.len() as u64 != expected {
        return Err(Error::invalid(format!(
            "output buffer holds {} bytes, the frame decodes to {expected} ({} of shape {:?})",
            out.len(),
            h.dtype,
            h.shape
        )));
    }
    let chunk_bytes = usize::try_from(h.chunk_elems)
        .ok()
        .and_then(|c| c.checked_mul(h.dtype.itemsize()))
        .ok_or_else(|| Error::corrupt("chunk size does not fit in memory"))?;
    let write_hints = write_hints_for(out, out.len());
    let outs: Vec<&mut [u8]> = if out.is_empty() {
        vec![]
    } else {
        out.chunks_mut(chunk_bytes).collect()
    };
    let job = ChunkJob {
        recipe: &parsed.recipe,
        dtype: h.dtype,
        chunk_elems: h.chunk_elems,
        validation,
        project,
        verify: (!parsed.unverified.is_empty())
            .then_some((parsed.extent.checksum, &parsed.unverified[..])),
        write_hints,
        contexts: h.version >= 2,
    };
    decode_chunks(&job, 0, &parsed.chunks, outs, threads)
}

/// What every chunk of a frame is decoded with.
pub(crate) struct ChunkJob<'a> {
    pub recipe: &'a Recipe,
    pub dtype: DType,
    pub chunk_elems: u64,
    pub validation: &'a Validation,
    /// The basis (and statistics sink) of a projection frame.
    pub project: Option<&'a transform::Context>,
    /// The header checksum and each chunk's stored checksum, when they are to be verified
    /// before decoding.
    pub verify: Option<(u32, &'a [u32])>,
    /// Whether the kernels may prefetch the outputs for writing: only when every page of
    /// them is mapped already ([`write_hints_for`]).
    pub write_hints: bool,
    /// Whether chunks may use row contexts (mode 2): frames of format version 2 on.
    pub contexts: bool,
}

/// Outputs at least this large are prefetched for writing where they are mapped: smaller
/// ones stay in the caches anyway.
const WRITE_HINTS_MIN_BYTES: usize = 4 << 20;

/// Whether decoding into `out`, part of an output of `total` bytes, may prefetch it for
/// writing ([`ChunkJob::write_hints`]): when the output is large and every page of `out` is
/// mapped (a buffer that is reused, not a fresh one; see `simd::PREFETCH_AHEAD`).
pub(crate) fn write_hints_for(out: &[u8], total: usize) -> bool {
    total >= WRITE_HINTS_MIN_BYTES && crate::memory::mapped(out)
}

/// Decodes `payloads[i]` (chunk `first + i` of its frame) into `outs[i]` for every `i`, in
/// parallel when `threads` allows, validating each chunk while it is still in cache.
///
/// When there are at least two chunks per thread, each task takes two neighbouring chunks
/// and decodes their rANS streams together ([`rans::decode_pair`]). The output and the
/// error reported (that of the lowest damaged chunk) are those of decoding the chunks one by
/// one on one thread, whatever the thread count.
pub(crate) fn decode_chunks(
    job: &ChunkJob,
    first: u64,
    payloads: &[&[u8]],
    outs: Vec<&mut [u8]>,
    threads: usize,
) -> Result<()> {
    debug_assert_eq!(outs.len(), payloads.len());
    let workers = match threads {
        0 => rayon::current_num_threads(),
        t => t,
    };
    // The header checksum and the stored checksum of payload `i`, to verify it with.
    let sum = |i: usize| job.verify.map(|(header, sums)| (header, sums[i]));
    let one =
        |i: usize, out: &mut [u8]| decode_one(job, first + i as u64, sum(i), payloads[i], out);
    let hinted = |i: usize, out: &mut [u8]| simd::with_write_hints(job.write_hints, || one(i, out));
    if outs.len() < 2 * workers.max(1) {
        return threads::try_for_each_mut(threads, outs, hinted);
    }
    let mut pairs = Vec::with_capacity(outs.len().div_ceil(2));
    let mut it = outs.into_iter();
    while let Some(a) = it.next() {
        pairs.push((a, it.next()));
    }
    threads::try_for_each_mut(threads, pairs, |k, (a, b)| {
        simd::with_write_hints(job.write_hints, || {
            let i = 2 * k;
            let Some(b) = b else {
                return one(i, a);
            };
            let index = first + i as u64;
            let paired = decode_two(
                job,
                index,
                [sum(i), sum(i + 1)],
                [payloads[i], payloads[i + 1]],
                [a, b],
            );
            if paired.is_ok() {
                return paired;
            }
            // A damaged pair: decoding the chunks one by one finds the error a serial decode
            // reports first.
            let serial = one(i, a).and_then(|()| one(i + 1, b));
            debug_assert!(
                serial.is_err(),
                "a pair failed that decodes one by one: {paired:?}"
            );
            serial
        })
    })
}

/// Verifies, decodes and validates chunk `index`.
fn decode_one(
    job: &ChunkJob,
    index: u64,
    sum: Option<(u32, u32)>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<()> {
    verify(index, sum, payload)?;
    decode_chunk(job, index, payload, out, &mut Symbols::Decode)?;
    validate_chunk(job, index, out)
}

/// [`decode_one`] for chunks `index` and `index + 1`, with their rANS streams decoded
/// together.
fn decode_two(
    job: &ChunkJob,
    index: u64,
    sums: [Option<(u32, u32)>; 2],
    payloads: [&[u8]; 2],
    outs: [&mut [u8]; 2],
) -> Result<()> {
    let [oa, ob] = outs;
    verify(index, sums[0], payloads[0])?;
    verify(index + 1, sums[1], payloads[1])?;
    // Each decoder stops at its rANS stream (a chunk without one decodes in full)...
    let mut sa = Symbols::Probe(None);
    let mut sb = Symbols::Probe(None);
    decode_chunk(job, index, payloads[0], oa, &mut sa)?;
    decode_chunk(job, index + 1, payloads[1], ob, &mut sb)?;
    PAIR_SYMBOLS.with(|bufs| {
        let bufs = &mut *bufs.borrow_mut();
        let result = decode_two_streams(job, index, payloads, [oa, ob], [sa, sb], bufs);
        // Buffers of huge chunks are not kept (as in `with_scratch`).
        for b in bufs {
            if b.capacity() > KEEP_SCRATCH_ELEMS {
                *b = Vec::new();
            }
        }
        result
    })
}

/// The rest of [`decode_two`], once both decoders stopped at their streams (or decoded in
/// full): `bufs` are the symbol buffers.
fn decode_two_streams<'p>(
    job: &ChunkJob,
    index: u64,
    payloads: [&'p [u8]; 2],
    [oa, ob]: [&mut [u8]; 2],
    [sa, sb]: [Symbols<'p>; 2],
    [ba, bb]: &mut [Vec<u16>; 2],
) -> Result<()> {
    // ...the streams are decoded together...
    let ends = match (sa, sb) {
        (Symbols::Probe(Some((x, ex))), Symbols::Probe(Some((y, ey)))) => {
            ba.resize(x.len(), 0);
            bb.resize(y.len(), 0);
            let [rx, ry] = rans::decode_pair(x, ba, y, bb);
            rx.and(ry)?;
            [Some(ex), Some(ey)]
        }
        (x, y) => [decode_kept(x, ba)?, decode_kept(y, bb)?],
    };
    // ...and each decoder runs again with its symbols.
    for (i, (out, (end, buf))) in [oa, ob]
        .into_iter()
        .zip(ends.into_iter().zip([ba, bb]))
        .enumerate()
    {
        let index = index + i as u64;
        if let Some(end) = end {
            let mut src = Symbols::Ready(std::mem::take(buf), end);
            let r = decode_chunk(job, index, payloads[i], out, &mut src);
            if let Symbols::Ready(v, _) = src {
                *buf = v;
            }
            r?;
        }
        validate_chunk(job, index, out)?;
    }
    Ok(())
}

/// Decodes the stream a probing decoder kept (into `buf`) and returns where it ends.
fn decode_kept(src: Symbols, buf: &mut Vec<u16>) -> Result<Option<usize>> {
    let Symbols::Probe(Some((stream, end))) = src else {
        return Ok(None);
    };
    buf.resize(stream.len(), 0);
    stream.decode(buf)?;
    Ok(Some(end))
}

thread_local! {
    /// The symbol buffers of [`decode_chunks`]'s pairs, reused from pair to pair.
    static PAIR_SYMBOLS: RefCell<[Vec<u16>; 2]> = RefCell::default();
}

/// Checks a chunk's payload against its stored checksum, when there is one to check.
fn verify(index: u64, sum: Option<(u32, u32)>, payload: &[u8]) -> Result<()> {
    match sum {
        Some((header, stored)) => format::verify_chunk(header, index, stored, payload),
        None => Ok(()),
    }
}

/// Validates the decoded values of chunk `index`.
fn validate_chunk(job: &ChunkJob, index: u64, out: &[u8]) -> Result<()> {
    validate::check(
        job.dtype,
        out,
        job.validation,
        index.saturating_mul(job.chunk_elems),
    )
}

/// The mode byte of every chunk of `frame` (for tests).
#[cfg(test)]
pub(crate) fn chunk_modes(frame: &[u8]) -> Vec<u8> {
    let (_, ext) = crate::format::Header::parse(frame).unwrap();
    let mut pos = ext.len;
    let mut modes = vec![];
    while pos < frame.len() {
        let len = u32::from_le_bytes(frame[pos..pos + 4].try_into().unwrap()) as usize;
        let start = pos + crate::format::CHUNK_RECORD_OVERHEAD;
        modes.push(frame[start]);
        pos = start + len;
    }
    modes
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod transform_tests;
