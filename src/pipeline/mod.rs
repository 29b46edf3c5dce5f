//! Runs the stages a frame names, chunk by chunk, on a thread pool.
//!
//! The stage modules (transform, quant, entropy) know nothing of each other or of the
//! format; a [`Recipe`] composes them and turns into the frame's stage list, and back.

pub mod stream;
mod threads;

pub use stream::{StreamDecoder, StreamEncoder};

use std::cell::RefCell;
use std::ops::Range;

use crate::dtype::DType;
use crate::entropy::rans::{self, RansParams};
use crate::error::{ensure_frame, Error, ErrorKind, Result};
use crate::format::{self, ContainerHint, Header, HeaderExtent, Reader, StageDesc};
use crate::transform::floatsplit;
use crate::validate::{self, Validation};

/// Stage kind: the lossless float split (no parameters).
pub const STAGE_FLOAT_SPLIT: u8 = 1;
/// Stage kind: interleaved rANS (parameters: lanes, probability bits).
pub const STAGE_RANS: u8 = 2;

/// Chunk payload mode: the chunk's elements, stored as they are (little-endian).
const MODE_STORED: u8 = 0;
/// Chunk payload mode: coded by the frame's stages.
const MODE_CODED: u8 = 1;

/// The sequence of stages a frame runs, with their parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Float split, rANS over the sign+exponent symbols, packed mantissas.
    Lossless { rans: RansParams },
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
                StageDesc {
                    kind: STAGE_RANS,
                    params: vec![rans.lanes as u8, rans.prob_bits as u8],
                },
            ],
        }
    }

    /// Recognizes a stage list read from a frame.
    pub fn from_stages(stages: &[StageDesc]) -> Result<Recipe> {
        if let Some(s) = stages
            .iter()
            .find(|s| !matches!(s.kind, STAGE_FLOAT_SPLIT | STAGE_RANS))
        {
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
                ensure_frame!(r.params.len() == 2, "rANS stage needs 2 parameter bytes");
                let rans = RansParams {
                    lanes: r.params[0] as usize,
                    prob_bits: u32::from(r.params[1]),
                };
                rans.validate()?;
                Ok(Recipe::Lossless { rans })
            }
            _ => Err(Error::corrupt(format!(
                "unsupported stage sequence {:?}",
                stages.iter().map(|s| s.kind).collect::<Vec<_>>()
            ))),
        }
    }

    /// A human-readable description of each stage: name and parameters.
    pub fn describe(&self) -> Vec<(&'static str, Vec<(&'static str, i64)>)> {
        match self {
            Recipe::Lossless { rans } => vec![
                ("float_split", vec![]),
                (
                    "rans",
                    vec![
                        ("lanes", rans.lanes as i64),
                        ("prob_bits", i64::from(rans.prob_bits)),
                    ],
                ),
            ],
        }
    }
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
        if s.symbols.capacity() > KEEP_SCRATCH_ELEMS {
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
}

/// A checked encode request: the header to write and how the input splits into chunks.
#[derive(Debug, Clone)]
pub(crate) struct EncodePlan {
    pub header: Header,
    pub recipe: Recipe,
    pub threads: usize,
    pub input_len: usize,
    /// Bytes of input per chunk (the last chunk may be shorter).
    pub chunk_bytes: usize,
    pub n_chunks: usize,
}

impl EncodePlan {
    pub fn new(req: &EncodeRequest) -> Result<EncodePlan> {
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
        if req.input.len() as u64 != expected {
            return Err(Error::invalid(format!(
                "buffer holds {} bytes, but shape {:?} of {} needs {expected}",
                req.input.len(),
                req.shape,
                req.dtype
            )));
        }
        if req.chunk_elems == 0 {
            return Err(Error::invalid("chunk size must be at least 1 element"));
        }
        // A chunk's payload (at most its stored form: a mode byte and the elements) must fit
        // its record's 32-bit length field.
        let max_chunk = (format::MAX_CHUNK_PAYLOAD as u64 - 1) / itemsize as u64;
        let chunk_elems = req.chunk_elems.min(max_chunk);
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
            input_len: req.input.len(),
            chunk_bytes,
            n_chunks: req.input.len().div_ceil(chunk_bytes),
        })
    }

    /// The input bytes of chunk `i`.
    pub fn chunk<'a>(&self, input: &'a [u8], i: usize) -> &'a [u8] {
        let start = i * self.chunk_bytes;
        &input[start..(start + self.chunk_bytes).min(input.len())]
    }

    /// Encodes chunks `range` (in parallel when the plan has threads) into their records.
    pub fn encode_records(
        &self,
        input: &[u8],
        header_checksum: u32,
        range: Range<usize>,
    ) -> Vec<Vec<u8>> {
        let first = range.start;
        threads::map(self.threads, range.len(), |k| {
            let i = first + k;
            let mut rec = Vec::new();
            format::write_chunk_with(&mut rec, header_checksum, i as u64, |out| {
                encode_chunk(&self.recipe, self.header.dtype, self.chunk(input, i), out)
            });
            rec
        })
    }
}

/// Encodes a whole tensor into a frame.
pub fn encode_frame(req: &EncodeRequest) -> Result<Vec<u8>> {
    let plan = EncodePlan::new(req)?;
    let mut frame = Vec::with_capacity(req.input.len() / 2 + 256);
    let ext = plan.header.write(&mut frame);
    if plan.threads == 1 || plan.n_chunks <= 1 {
        // Serially, each payload is written straight into the frame.
        for i in 0..plan.n_chunks {
            format::write_chunk_with(&mut frame, ext.checksum, i as u64, |out| {
                encode_chunk(
                    &plan.recipe,
                    plan.header.dtype,
                    plan.chunk(req.input, i),
                    out,
                )
            });
        }
    } else {
        for rec in plan.encode_records(req.input, ext.checksum, 0..plan.n_chunks) {
            frame.extend_from_slice(&rec);
        }
    }
    Ok(frame)
}

/// Appends the payload of one chunk to `out`.
fn encode_chunk(recipe: &Recipe, dtype: DType, input: &[u8], out: &mut Vec<u8>) {
    let n = input.len() / dtype.itemsize();
    let start = out.len();
    out.reserve(input.len() + 16);
    match recipe {
        Recipe::Lossless { rans: params } => with_scratch(|s| {
            s.symbols.resize(n, 0);
            s.counts.clear();
            s.counts.resize(floatsplit::alphabet(dtype), 0);
            let drop = floatsplit::split(dtype, input, &mut s.symbols, &mut s.counts);
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
            floatsplit::pack_mantissa(dtype, input, drop, out);
        }),
    }
    if out.len() - start > input.len() {
        out.truncate(start);
        out.push(MODE_STORED);
        out.extend_from_slice(input);
    }
}

fn decode_chunk(recipe: &Recipe, dtype: DType, payload: &[u8], out: &mut [u8]) -> Result<()> {
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
                    s.symbols.resize(n, 0);
                    rans::decode(&mut r, floatsplit::alphabet(dtype), *params, &mut s.symbols)?;
                    let packed = r.bytes(
                        floatsplit::packed_mantissa_len(dtype, n, drop),
                        "packed mantissas",
                    )?;
                    floatsplit::merge(dtype, &s.symbols, packed, drop, out);
                    Ok(())
                })?;
            }
        },
        m => return Err(Error::corrupt(format!("unknown chunk mode {m}"))),
    }
    r.finish("chunk")
}

/// Limits and checks applied when decoding untrusted frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest decoded tensor, in bytes.
    pub max_output_bytes: u64,
    /// Checks on the decoded values (off by default).
    pub validation: Validation,
}

impl Limits {
    /// 4 GiB.
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 30;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
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
}

/// Parses `frame` and verifies every checksum, without decoding any chunk.
pub fn parse_frame<'a>(frame: &'a [u8], limits: &Limits) -> Result<ParsedFrame<'a>> {
    let (header, extent) = Header::parse(frame)?;
    let recipe = Recipe::from_stages(&header.stages)?;
    let out_bytes = header.output_bytes()?;
    if out_bytes > limits.max_output_bytes {
        return Err(Error::limit(format!(
            "frame decodes to {out_bytes} bytes, more than the limit of {} \
             (raise max_output_bytes if you trust the sender)",
            limits.max_output_bytes
        )));
    }
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
    })
}

/// Decodes a parsed frame into `out`, which must be exactly the decoded size, and validates
/// the values.
pub fn decode_parsed(
    parsed: &ParsedFrame,
    out: &mut [u8],
    threads: usize,
    validation: &Validation,
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
    };
    decode_chunks(&job, 0, &parsed.chunks, outs, threads)
}

/// What every chunk of a frame is decoded with.
pub(crate) struct ChunkJob<'a> {
    pub recipe: &'a Recipe,
    pub dtype: DType,
    pub chunk_elems: u64,
    pub validation: &'a Validation,
}

/// Decodes `payloads[i]` (chunk `first + i` of its frame) into `outs[i]` for every `i`, in
/// parallel when `threads` allows, validating each chunk while it is still in cache.
pub(crate) fn decode_chunks(
    job: &ChunkJob,
    first: u64,
    payloads: &[&[u8]],
    outs: Vec<&mut [u8]>,
    threads: usize,
) -> Result<()> {
    debug_assert_eq!(outs.len(), payloads.len());
    threads::try_for_each_mut(threads, outs, |i, o| {
        decode_chunk(job.recipe, job.dtype, payloads[i], o)?;
        let first_elem = (first + i as u64).saturating_mul(job.chunk_elems);
        validate::check(job.dtype, o, job.validation, first_elem)
    })
}

#[cfg(test)]
mod tests;
