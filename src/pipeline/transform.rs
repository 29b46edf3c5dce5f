//! The projection stage (`project`): transform coding of a tensor's rows on an orthonormal
//! channel basis, and its error-bounded encoder.
//!
//! A tensor with `d` channels (its last dimension) is a matrix of `rows x d`. Each row `x` is
//! projected onto `k <= d` orthonormal basis vectors, `c = W x`; the coefficients are
//! quantized with one uniform step, `q = round(c / step)`, and entropy-coded with rANS, with
//! a separate frequency table for each group of coefficient channels of similar spread (up to
//! [`MAX_GROUPS`] per chunk: a coefficient channel whose variance is below the step costs
//! almost nothing, which is reverse water-filling in practice). The decoder rebuilds each row
//! as `W^T (q * step)` in a fixed order of `f32` operations
//! ([`project::reconstruct_rows`]), so the encoder can check the decoded tensor against the
//! caller's bound exactly.
//!
//! The basis is one of:
//!
//! * the identity (`k = d`): no transform, but one table per group of channels, which pays
//!   because channels of real activations have very different distributions;
//! * a frame basis: the principal directions of the tensor's channels (the eigenvectors of
//!   `X^T X`), truncated to the `k` that carry more variance than the quantizer's noise,
//!   quantized and sent in the first chunk (a frame-level side block), and made orthonormal
//!   again by the decoder (Gram-Schmidt in `f64`, the same bits everywhere);
//! * a session basis: held by both ends of a [`Session`](super::session::Session) and never
//!   sent.
//!
//! Chunks hold whole rows. The format is in `docs/FORMAT.md`.

use std::sync::Mutex;

use super::{threads, EncodePlan, EncodeRequest, Recipe, MODE_CODED, MODE_STORED};
use crate::dtype::DType;
use crate::entropy::freq;
use crate::entropy::rans::{self, RansParams};
use crate::error::{ensure_frame, Error, ErrorKind, Result};
use crate::format::{self, Reader, StageDesc};
use crate::lowrank::{basis, linalg, project};
use crate::mode::{Bound, BoundedSpec, Transform};
use crate::quant::buckets;
use crate::quant::convert;
use crate::quant::rounding::{self, Rounding};
use crate::quant::uniform::BitReader;
use crate::quant::uniform::{unzigzag, zigzag, BitWriter};

/// Stage kind: projection onto a channel basis and uniform quantization of the coefficients.
pub const STAGE_PROJECT: u8 = 5;
/// Stage kind: the frame belongs to a shared-basis session (id, step, state hash).
pub const STAGE_SESSION: u8 = 6;

/// Basis codes of a projection stage.
pub const BASIS_IDENTITY: u8 = 0;
pub const BASIS_FRAME: u8 = 1;
pub const BASIS_SESSION: u8 = 2;

/// Most entropy-coder tables (groups of coefficient channels) in one coded block.
pub const MAX_GROUPS: usize = 16;
/// Symbols per rANS lane in a coefficient stream: a stream of `n` symbols has
/// `min(lanes, 2^floor(log2(max(1, n / 2048))))` lanes (`lanes` from the rANS stage).
pub const SYMBOLS_PER_LANE: usize = 2048;

/// Parameters of a projection stage (24 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectParams {
    /// Bound code (1: relative RMSE); informational.
    pub bound: u8,
    /// The bound's value as `f64` bits; informational.
    pub bound_value: u64,
    /// [`BASIS_IDENTITY`], [`BASIS_FRAME`] or [`BASIS_SESSION`].
    pub basis: u8,
    /// Channels: the tensor's last dimension, `1..=MAX_CHANNELS`.
    pub channels: u32,
    /// Basis vectors (coefficients per row), `1..=channels`; `channels` for the identity.
    pub k: u32,
    /// The quantizer step, `f32` bits, positive and finite.
    pub step: u32,
    /// Rounding code (0 nearest-even, 1 stochastic); informational.
    pub rounding: u8,
}

impl ProjectParams {
    pub fn step(&self) -> f32 {
        f32::from_bits(self.step)
    }

    pub fn d(&self) -> usize {
        self.channels as usize
    }

    pub fn k(&self) -> usize {
        self.k as usize
    }

    pub fn desc(&self) -> StageDesc {
        let mut p = vec![self.bound];
        p.extend_from_slice(&self.bound_value.to_le_bytes());
        p.push(self.basis);
        p.extend_from_slice(&self.channels.to_le_bytes());
        p.extend_from_slice(&self.k.to_le_bytes());
        p.extend_from_slice(&self.step.to_le_bytes());
        p.extend_from_slice(&[self.rounding, 0]);
        StageDesc {
            kind: STAGE_PROJECT,
            params: p,
        }
    }

    pub fn parse(d: &StageDesc) -> Result<ProjectParams> {
        ensure_frame!(
            d.params.len() == 24,
            "projection stage needs 24 parameter bytes"
        );
        let p = &d.params;
        let u32_at = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().unwrap());
        let params = ProjectParams {
            bound: p[0],
            bound_value: u64::from_le_bytes(p[1..9].try_into().unwrap()),
            basis: p[9],
            channels: u32_at(10),
            k: u32_at(14),
            step: u32_at(18),
            rounding: p[22],
        };
        ensure_frame!(params.bound == 1, "unknown projection bound code {}", p[0]);
        let v = f64::from_bits(params.bound_value);
        ensure_frame!(v.is_finite() && v > 0.0, "bound value {v} is not positive");
        ensure_frame!(
            params.basis <= BASIS_SESSION,
            "unknown basis code {}",
            params.basis
        );
        let d = params.channels as usize;
        ensure_frame!(
            (1..=project::MAX_CHANNELS).contains(&d),
            "projection over {d} channels: the format allows 1 to {}",
            project::MAX_CHANNELS
        );
        ensure_frame!(
            (1..=params.channels).contains(&params.k),
            "projection keeps {} of {d} basis vectors",
            params.k
        );
        ensure_frame!(
            params.basis != BASIS_IDENTITY || params.k == params.channels,
            "the identity basis keeps every channel"
        );
        let step = params.step();
        ensure_frame!(
            step.is_finite() && step > 0.0,
            "quantizer step {step} is not positive"
        );
        ensure_frame!(params.rounding <= 1, "unknown rounding code {}", p[22]);
        ensure_frame!(p[23] == 0, "reserved projection byte is {}", p[23]);
        Ok(params)
    }

    pub fn basis_name(&self) -> &'static str {
        match self.basis {
            BASIS_IDENTITY => "identity",
            BASIS_FRAME => "frame",
            _ => "session",
        }
    }
}

/// The session stage: which session a frame belongs to and the state it was coded against
/// (25 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTag {
    pub id: u64,
    /// Frames the session had coded before this one.
    pub step: u64,
    /// Hash of the encoder's session state before this frame (0 in a resync frame).
    pub state: u64,
    /// A resync frame carries its basis (identity or frame basis) and resets the state.
    pub resync: bool,
}

impl SessionTag {
    pub fn desc(&self) -> StageDesc {
        let mut p = Vec::with_capacity(25);
        p.extend_from_slice(&self.id.to_le_bytes());
        p.extend_from_slice(&self.step.to_le_bytes());
        p.extend_from_slice(&self.state.to_le_bytes());
        p.push(u8::from(self.resync));
        StageDesc {
            kind: STAGE_SESSION,
            params: p,
        }
    }

    pub fn parse(d: &StageDesc) -> Result<SessionTag> {
        ensure_frame!(
            d.params.len() == 25,
            "session stage needs 25 parameter bytes"
        );
        let p = &d.params;
        let u64_at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap());
        ensure_frame!(p[24] <= 1, "unknown session flags {}", p[24]);
        Ok(SessionTag {
            id: u64_at(0),
            step: u64_at(8),
            state: u64_at(16),
            resync: p[24] == 1,
        })
    }
}

/// Checks that a session tag and a projection stage go together.
pub(super) fn check_session(tag: &SessionTag, params: &ProjectParams) -> Result<()> {
    if tag.resync {
        ensure_frame!(
            params.basis != BASIS_SESSION,
            "a resync frame must carry its basis"
        );
    } else {
        ensure_frame!(
            params.basis == BASIS_SESSION,
            "a session frame that is not a resync uses the session's basis"
        );
    }
    Ok(())
}

// ---- grouped coefficient blocks ----------------------------------------------------------

/// The rANS parameters of a coefficient stream of `count` symbols, from the stage's: fewer
/// lanes (one per [`SYMBOLS_PER_LANE`] symbols) and, for short streams, fewer probability
/// bits (`floor(log2(count))`, at least [`MIN_STREAM_PROB_BITS`]), whose tables are smaller.
pub fn stream_params(count: usize, stage: RansParams) -> RansParams {
    let per = (count / SYMBOLS_PER_LANE).clamp(1, stage.lanes.max(1));
    let log = usize::BITS - 1 - count.max(1).leading_zeros();
    RansParams {
        lanes: 1 << (usize::BITS - 1 - per.leading_zeros()),
        prob_bits: log.clamp(
            MIN_STREAM_PROB_BITS,
            stage.prob_bits.max(MIN_STREAM_PROB_BITS),
        ),
    }
}

/// Fewest probability bits of a coefficient stream.
pub const MIN_STREAM_PROB_BITS: u32 = 7;

/// Estimated bits of an rANS table for a histogram (present symbols, gaps and frequencies).
fn table_bits(counts: &[u32]) -> f64 {
    let present = counts.iter().filter(|&&c| c > 0).count() as f64;
    8.0 * (1.0 + 2.2 * present)
}

fn coded_bits(counts: &[u32]) -> f64 {
    let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return 0.0;
    }
    freq::entropy_bits(counts) * n as f64 + table_bits(counts) + 32.0 + 8.0
}

/// Splits `cols` channels into at most [`MAX_GROUPS`] groups by their symbol histograms
/// (`hist`, `cols x ALPHABET`): channels sorted by entropy, adjacent ones merged while a
/// merge costs fewer bits than the table it saves. Returns each channel's group.
fn choose_groups(hist: &[u32], cols: usize) -> (usize, Vec<u8>) {
    let a = buckets::ALPHABET;
    if cols <= 1 {
        return (1, vec![0; cols]);
    }
    let ent: Vec<f64> = (0..cols)
        .map(|c| freq::entropy_bits(&hist[c * a..(c + 1) * a]))
        .collect();
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&x, &y| ent[x].total_cmp(&ent[y]).then(x.cmp(&y)));
    // Groups of adjacent sorted channels: their members, histogram and cost.
    struct G {
        members: Vec<usize>,
        hist: Vec<u32>,
        cost: f64,
    }
    let mut groups: Vec<G> = order
        .iter()
        .map(|&c| {
            let h = hist[c * a..(c + 1) * a].to_vec();
            G {
                members: vec![c],
                cost: coded_bits(&h),
                hist: h,
            }
        })
        .collect();
    let merged = |x: &G, y: &G| -> (Vec<u32>, f64) {
        let h: Vec<u32> = x.hist.iter().zip(&y.hist).map(|(p, q)| p + q).collect();
        let c = coded_bits(&h);
        (h, c)
    };
    let mut gain: Vec<f64> = (0..groups.len() - 1)
        .map(|i| merged(&groups[i], &groups[i + 1]).1 - groups[i].cost - groups[i + 1].cost)
        .collect();
    while let Some((i, &g)) = gain
        .iter()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(y.1).then(x.0.cmp(&y.0)))
    {
        if g >= 0.0 && groups.len() <= MAX_GROUPS {
            break;
        }
        let right = groups.remove(i + 1);
        let (h, c) = merged(&groups[i], &right);
        groups[i].members.extend(right.members);
        groups[i].hist = h;
        groups[i].cost = c;
        gain.remove(i);
        if i < gain.len() {
            gain[i] = merged(&groups[i], &groups[i + 1]).1 - groups[i].cost - groups[i + 1].cost;
        }
        if i > 0 {
            gain[i - 1] =
                merged(&groups[i - 1], &groups[i]).1 - groups[i - 1].cost - groups[i].cost;
        }
    }
    let mut map = vec![0u8; cols];
    for (g, grp) in groups.iter().enumerate() {
        for &c in &grp.members {
            map[c] = g as u8;
        }
    }
    (groups.len(), map)
}

/// The block header's flag for per-column offsets.
const OFFSETS_FLAG: u8 = 0x80;

/// Appends a coded block of integers `q` (`rows x cols`, row-major): a byte with the group
/// count (1 to 16) and, in bit 7, whether per-column offsets follow; the offsets (one zigzag
/// varint per column, subtracted from the column's values before coding); the group of each
/// column (4 bits each) when there is more than one group; one rANS stream per group over
/// [`buckets::ALPHABET`] (its columns' symbols, row by row, columns in increasing order);
/// then the extra bits of all streams in order.
pub(crate) fn encode_block(
    q: &[i32],
    rows: usize,
    cols: usize,
    rans: RansParams,
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(q.len(), rows * cols);
    let a = buckets::ALPHABET;
    let cols1 = cols.max(1);
    // Offsets: each column's rounded mean, kept when they save more than they cost.
    let mut sums = vec![0i64; cols];
    for row in q.chunks_exact(cols1) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += i64::from(v);
        }
    }
    let offsets: Vec<i32> = sums
        .iter()
        .map(|&s| (s as f64 / rows.max(1) as f64).round() as i32)
        .collect();
    let mut hist = vec![0u32; cols * a];
    let mut hist_off = vec![0u32; cols * a];
    for row in q.chunks_exact(cols1) {
        for (c, &v) in row.iter().enumerate() {
            hist[c * a + buckets::symbol_of(v) as usize] += 1;
            hist_off[c * a + buckets::symbol_of(v - offsets[c]) as usize] += 1;
        }
    }
    let bits = |h: &[u32]| -> f64 {
        (0..cols)
            .map(|c| {
                let hc = &h[c * a..(c + 1) * a];
                let extra: f64 = hc
                    .iter()
                    .enumerate()
                    .map(|(s, &n)| f64::from(n) * f64::from(buckets::extra_bits(s as u16)))
                    .sum();
                freq::entropy_bits(hc) * rows as f64 + extra
            })
            .sum()
    };
    let offset_cost: f64 = offsets
        .iter()
        .map(|&o| 8.0 * format::uvarint_len(u64::from(zigzag(o))) as f64)
        .sum();
    let use_offsets =
        offsets.iter().any(|&o| o != 0) && bits(&hist_off) + offset_cost < bits(&hist);
    let (hist, offsets) = if use_offsets {
        (hist_off, offsets)
    } else {
        (hist, vec![0; cols])
    };
    let (n_groups, map) = choose_groups(&hist, cols);
    out.push(n_groups as u8 | if use_offsets { OFFSETS_FLAG } else { 0 });
    if use_offsets {
        for &o in &offsets {
            format::put_uvarint(out, u64::from(zigzag(o)));
        }
    }
    if n_groups > 1 {
        for pair in map.chunks(2) {
            out.push(pair[0] | (pair.get(1).copied().unwrap_or(0) << 4));
        }
    }
    let mut extra = BitWriter::default();
    let mut stream: Vec<u16> = Vec::with_capacity(q.len());
    let mut scratch = rans::EncScratch::default();
    let mut counts = vec![0u32; a];
    for g in 0..n_groups as u8 {
        let members: Vec<usize> = (0..cols).filter(|&c| map[c] == g).collect();
        stream.clear();
        counts.fill(0);
        for row in q.chunks_exact(cols1) {
            for &c in &members {
                let s = buckets::symbol(row[c] - offsets[c], &mut extra);
                stream.push(s);
                counts[s as usize] += 1;
            }
        }
        let p = stream_params(stream.len(), rans);
        rans::encode(&stream, a, Some(&counts), p, &mut scratch, out);
    }
    extra.finish();
    out.extend_from_slice(&extra.bytes);
}

/// Reads a block written by [`encode_block`] into `q` (`rows x cols`).
pub(crate) fn decode_block(
    r: &mut Reader,
    rows: usize,
    cols: usize,
    rans: RansParams,
    q: &mut [i32],
) -> Result<()> {
    debug_assert_eq!(q.len(), rows * cols);
    let head = r.u8("coefficient block header")?;
    let n_groups = usize::from(head & !OFFSETS_FLAG);
    ensure_frame!(
        (1..=MAX_GROUPS).contains(&n_groups),
        "{n_groups} coefficient groups: 1 to {MAX_GROUPS} are allowed"
    );
    let mut offsets = vec![0i32; cols];
    if head & OFFSETS_FLAG != 0 {
        for o in offsets.iter_mut() {
            let z = r.uvarint_max(2 * buckets::MAX_Q as u64, "coefficient offset")?;
            *o = unzigzag(z as u32);
        }
    }
    let mut map = vec![0u8; cols];
    if n_groups > 1 {
        let packed = r.bytes(cols.div_ceil(2), "coefficient group map")?;
        for (c, m) in map.iter_mut().enumerate() {
            *m = (packed[c / 2] >> (4 * (c % 2))) & 15;
            ensure_frame!(
                usize::from(*m) < n_groups,
                "column {c} in group {m} of {n_groups}"
            );
        }
        if cols % 2 == 1 {
            ensure_frame!(packed[cols / 2] >> 4 == 0, "nonzero group map padding");
        }
    }
    let mut syms = vec![0u16; q.len()];
    let mut at = 0usize;
    let mut spans = Vec::with_capacity(n_groups);
    for g in 0..n_groups as u8 {
        let members: Vec<usize> = (0..cols).filter(|&c| map[c] == g).collect();
        let count = members.len() * rows;
        let p = stream_params(count, rans);
        rans::decode(r, buckets::ALPHABET, p, &mut syms[at..at + count])?;
        spans.push((members, at));
        at += count;
    }
    let bits: u64 = syms
        .iter()
        .map(|&s| u64::from(buckets::extra_bits(s)))
        .sum();
    let extra = r.bytes(bits.div_ceil(8) as usize, "coefficient extra bits")?;
    let mut br = BitReader::new(extra);
    for (members, start) in &spans {
        let mut i = *start;
        for row in 0..rows {
            for &c in members {
                q[row * cols + c] = buckets::value(syms[i], &mut br)? + offsets[c];
                i += 1;
            }
        }
    }
    br.finish()
}

// ---- the frame basis side block ------------------------------------------------------------

/// Appends the side block of a frame basis: `k` bfloat16 steps, then the codes as a block of
/// `d` rows by `k` columns.
fn encode_basis(
    codes: &[i32],
    steps: &[u16],
    d: usize,
    k: usize,
    rans: RansParams,
    out: &mut Vec<u8>,
) {
    for s in steps {
        out.extend_from_slice(&s.to_le_bytes());
    }
    encode_block(codes, d, k, rans, out);
}

/// Reads a frame basis side block: the decoder's basis `W` (`k x d`).
fn decode_basis(r: &mut Reader, d: usize, k: usize, rans: RansParams) -> Result<Vec<f32>> {
    let raw = r.bytes(2 * k, "basis steps")?;
    let steps: Vec<f32> = raw
        .chunks_exact(2)
        .map(|b| convert::bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    ensure_frame!(
        steps.iter().all(|s| s.is_finite() && *s > 0.0),
        "a basis step is not positive and finite"
    );
    let mut codes = vec![0i32; d * k];
    decode_block(r, d, k, rans, &mut codes)?;
    Ok(project::basis_from_codes(&codes, &steps, d, k).0)
}

// ---- decoding ------------------------------------------------------------------------------

/// Where decoded chunks leave their coefficient statistics: `(chunk index, sums)`.
pub type StatsSink = Mutex<Vec<(u64, Vec<f64>)>>;

/// What every chunk of a projection frame is decoded with: the basis, where chunk 0's
/// payload continues after the side block, and (for sessions) where coefficient statistics
/// go.
#[derive(Debug)]
pub struct Context {
    /// `k x d`; `None` for the identity.
    pub w: Option<Vec<f32>>,
    /// Bytes of chunk 0's payload after its mode byte that hold the basis.
    pub side_len: usize,
    /// Collect `(chunk, sums)` of the decoded coefficients of rows whose index is a multiple
    /// of `stride`.
    pub stats: Option<(u64, StatsSink)>,
}

fn needs_session() -> Error {
    Error::new(
        ErrorKind::SessionMismatch,
        "this frame was coded against a shared-basis session's state: decode it with the \
         receiving end of that session (iota_codec.Session.decode)",
    )
}

/// The frame basis in the first chunk's payload `p`, and the length of its side block.
fn frame_basis(
    params: &ProjectParams,
    rans: &RansParams,
    shape: &[u64],
    p: &[u8],
) -> Result<(Option<Vec<f32>>, usize)> {
    let d = params.d();
    // A basis of more vectors than the tensor has rows is never needed, and this bounds the
    // decoder's work on it by its work on the rows.
    let rows = format::numel(shape)? / d as u64;
    ensure_frame!(
        u64::from(params.k) <= rows,
        "a frame basis of {} vectors for {rows} rows",
        params.k
    );
    let mut r = Reader::new(p);
    ensure_frame!(
        r.u8("chunk mode")? == MODE_CODED,
        "the first chunk of a frame-basis projection must be coded"
    );
    let w = decode_basis(&mut r, d, params.k(), *rans)?;
    Ok((Some(w), r.position() - 1))
}

/// The context of a frame (`session_w` supplies a session's basis).
pub(super) fn context(
    params: &ProjectParams,
    rans: &RansParams,
    shape: &[u64],
    first_chunk: Option<&[u8]>,
    session_w: Option<&[f32]>,
) -> Result<Context> {
    let d = params.d();
    ensure_frame!(
        shape.last().copied() == Some(params.channels as u64),
        "projection over {d} channels, but the tensor's shape is {shape:?}"
    );
    let (w, side_len) = match params.basis {
        BASIS_IDENTITY => (None, 0),
        BASIS_FRAME => match first_chunk {
            None => (None, 0),
            Some(p) => frame_basis(params, rans, shape, p)?,
        },
        _ => match session_w {
            Some(w) => (Some(w[..params.k() * d].to_vec()), 0),
            None => return Err(needs_session()),
        },
    };
    Ok(Context {
        w,
        side_len,
        stats: None,
    })
}

/// Decodes the coded payload of chunk `index` (after its mode byte).
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_chunk(
    params: &ProjectParams,
    rans: &RansParams,
    ctx: &Context,
    index: u64,
    chunk_elems: u64,
    dtype: DType,
    r: &mut Reader,
    out: &mut [u8],
) -> Result<()> {
    let (d, k) = (params.d(), params.k());
    if index == 0 && params.basis == BASIS_FRAME {
        r.bytes(ctx.side_len, "basis side block")?;
    }
    let n = out.len() / dtype.itemsize();
    ensure_frame!(
        n.is_multiple_of(d),
        "chunk of {n} elements is not whole rows of {d}"
    );
    let rows = n / d;
    let mut q = vec![0i32; rows * k];
    decode_block(r, rows, k, *rans, &mut q)?;
    let w = match (params.basis, &ctx.w) {
        (BASIS_IDENTITY, _) => None,
        (_, Some(w)) => Some(&w[..]),
        (_, None) => return Err(Error::corrupt("projection frame without its basis")),
    };
    let mut ys = vec![0.0f32; n];
    project::reconstruct_rows(&q, k, params.step(), w, d, dtype, &mut ys);
    convert::store_all_sat(dtype, &ys, out);
    if let Some((stride, sink)) = &ctx.stats {
        let mut sums = vec![0.0f64; k * k];
        basis::coefficient_sums(&q, k, index * (chunk_elems / d as u64), *stride, &mut sums);
        sink.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, sums));
    }
    Ok(())
}

/// Adds up the chunks' statistics in chunk order.
pub(crate) fn collect_stats(ctx: &mut Context, k: usize) -> Vec<f64> {
    let mut total = vec![0.0f64; k * k];
    if let Some((_, sink)) = ctx.stats.take() {
        let mut parts = sink.into_inner().unwrap_or_else(|e| e.into_inner());
        parts.sort_by_key(|p| p.0);
        for (_, s) in parts {
            for (t, v) in total.iter_mut().zip(s) {
                *t += v;
            }
        }
    }
    total
}

// ---- encoding ------------------------------------------------------------------------------

/// The rows of a tensor to be coded with one basis.
pub(crate) struct Rows<'a> {
    pub dtype: DType,
    pub d: usize,
    pub rows: usize,
    /// The elements as `f32` (`rows x d`).
    pub xs: &'a [f32],
    /// `sum x^2` in `f64`.
    pub sumsq: f64,
}

impl<'a> Rows<'a> {
    pub fn new(dtype: DType, d: usize, xs: &'a [f32]) -> Rows<'a> {
        let sumsq = xs.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        Rows {
            dtype,
            d,
            rows: xs.len() / d.max(1),
            xs,
            sumsq,
        }
    }

    /// Estimated `sum (dtype(x + e) - (x + e))^2` for small `e`: the error of rounding the
    /// reconstruction to the dtype, which adds to the quantizer's.
    fn dtype_noise(&self) -> f64 {
        let mant = self.dtype.layout().mant_bits as i32;
        let min_exp = match self.dtype {
            DType::F32 => -149,
            DType::F16 => -24,
            DType::BF16 => -133,
        };
        self.xs
            .iter()
            .map(|&x| {
                let e = ((x.to_bits() >> 23) & 0xff) as i32 - 127;
                let ulp = 2f64.powi((e - mant).max(min_exp));
                ulp * ulp / 12.0
            })
            .sum()
    }
}

/// A basis to code [`Rows`] with.
pub(crate) struct Plan {
    pub basis: u8,
    pub k: usize,
    /// `k x d` (`None` for the identity).
    pub w: Option<Vec<f32>>,
    /// The side block (frame basis).
    pub side: Vec<u8>,
}

/// Per-encode settings.
pub(crate) struct Job<'a> {
    pub rows: &'a Rows<'a>,
    pub plan: &'a Plan,
    pub eps: f64,
    pub rounding: Rounding,
    pub rans: RansParams,
    pub threads: usize,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Sample stride for session statistics (`None`: no statistics).
    pub stats_stride: Option<u64>,
    /// Keep the reconstruction.
    pub keep_recon: bool,
}

/// What one full encode at a given step produced.
pub(crate) struct Attempt {
    pub step: f32,
    pub payloads: Vec<Vec<u8>>,
    pub err: f64,
    /// Sum of the chunks' coefficient statistics (`k x k`), when asked for.
    pub stats: Option<Vec<f64>>,
    /// The decoded tensor as `f32` (`rows x d`), when asked for.
    pub recon: Option<Vec<f32>>,
}

/// Coefficients of every row (`rows x k`), chunk by chunk in parallel.
fn coefficients(job: &Job) -> Vec<f32> {
    let (d, k) = (job.rows.d, job.plan.k);
    let Some(w) = &job.plan.w else {
        return job.rows.xs.to_vec();
    };
    let wt = project::transpose_f32(w, k, d);
    let n_chunks = job.rows.rows.div_ceil(job.chunk_rows.max(1));
    let parts = threads::map(job.threads, n_chunks, |i| {
        let r0 = i * job.chunk_rows;
        let r1 = (r0 + job.chunk_rows).min(job.rows.rows);
        let mut c = vec![0.0f32; (r1 - r0) * k];
        project::project_rows(&job.rows.xs[r0 * d..r1 * d], d, &wt, k, &mut c);
        c
    });
    parts.concat()
}

#[inline(always)]
fn quantize(c: f32, inv: f32, u: Option<f32>) -> i32 {
    let t = c * inv;
    if !t.is_finite() {
        return 0;
    }
    let m = buckets::MAX_Q as f32;
    rounding::round(t.clamp(-m, m), u) as i32
}

/// `sum (c - step * round(c / step))^2` over the coefficients (nearest rounding).
fn coef_error(coefs: &[f32], step: f32) -> f64 {
    let inv = 1.0 / step;
    let mut acc = [0.0f64; 4];
    for ch in coefs.chunks(4) {
        for (a, &c) in acc.iter_mut().zip(ch) {
            let e = f64::from(c) - f64::from(quantize(c, inv, None) as f32 * step);
            *a += e * e;
        }
    }
    acc.iter().sum()
}

/// A coded chunk: payload, squared error, statistics and reconstruction (when asked for).
type ChunkResult = (Vec<u8>, f64, Option<Vec<f64>>, Option<Vec<f32>>);

fn encode_chunk(job: &Job, coefs: &[f32], step: f32, i: usize) -> ChunkResult {
    let (d, k) = (job.rows.d, job.plan.k);
    let r0 = i * job.chunk_rows;
    let r1 = (r0 + job.chunk_rows).min(job.rows.rows);
    let rows = r1 - r0;
    let xs = &job.rows.xs[r0 * d..r1 * d];
    let c = &coefs[r0 * k..r1 * k];
    let inv = 1.0 / step;
    let mut q = vec![0i32; rows * k];
    match job.rounding {
        Rounding::Nearest => {
            for (o, &v) in q.iter_mut().zip(c) {
                *o = quantize(v, inv, None);
            }
        }
        Rounding::Stochastic { seed } => {
            let base = (r0 * k) as u64;
            for (j, (o, &v)) in q.iter_mut().zip(c).enumerate() {
                *o = quantize(v, inv, Some(rounding::threshold(seed, base + j as u64)));
            }
        }
    }
    let mut ys = vec![0.0f32; rows * d];
    project::reconstruct_rows(
        &q,
        k,
        step,
        job.plan.w.as_deref(),
        d,
        job.rows.dtype,
        &mut ys,
    );
    let mut err = 0.0f64;
    for (&y, &x) in ys.iter().zip(xs) {
        let e = f64::from(y) - f64::from(x);
        err += e * e;
    }
    let mut out = vec![MODE_CODED];
    if i == 0 {
        out.extend_from_slice(&job.plan.side);
    }
    encode_block(&q, rows, k, job.rans, &mut out);
    let raw = rows * d * job.rows.dtype.itemsize();
    let mut stats = None;
    if out.len() > raw + 1 && !(i == 0 && job.plan.basis == BASIS_FRAME) {
        // Stored: the elements rounded to the dtype (exact unless error feedback moved them).
        out.clear();
        out.push(MODE_STORED);
        let at = out.len();
        out.resize(at + raw, 0);
        convert::store_all_sat(job.rows.dtype, xs, &mut out[at..]);
        err = 0.0;
        for (y, &x) in ys.iter_mut().zip(xs) {
            *y = convert::round_sat(job.rows.dtype, x);
            let e = f64::from(*y) - f64::from(x);
            err += e * e;
        }
    } else if let Some(stride) = job.stats_stride {
        let mut sums = vec![0.0f64; k * k];
        basis::coefficient_sums(&q, k, r0 as u64, stride, &mut sums);
        stats = Some(sums);
    }
    (out, err, stats, job.keep_recon.then_some(ys))
}

fn attempt(job: &Job, coefs: &[f32], step: f32) -> Attempt {
    let n_chunks = job.rows.rows.div_ceil(job.chunk_rows.max(1));
    let parts = threads::map(job.threads, n_chunks, |i| encode_chunk(job, coefs, step, i));
    let k = job.plan.k;
    let mut a = Attempt {
        step,
        payloads: Vec::with_capacity(n_chunks),
        err: 0.0,
        stats: job.stats_stride.map(|_| vec![0.0f64; k * k]),
        recon: job
            .keep_recon
            .then(|| Vec::with_capacity(job.rows.xs.len())),
    };
    for (p, e, s, y) in parts {
        a.payloads.push(p);
        a.err += e;
        if let (Some(total), Some(s)) = (a.stats.as_mut(), s) {
            for (t, v) in total.iter_mut().zip(s) {
                *t += v;
            }
        }
        if let (Some(r), Some(y)) = (a.recon.as_mut(), y) {
            r.extend_from_slice(&y);
        }
    }
    a
}

/// Every chunk stored (the elements rounded to the dtype): the last resort of a basis that
/// needs no side block.
pub(crate) fn stored_attempt(job: &Job) -> Attempt {
    let (d, k) = (job.rows.d, job.plan.k);
    let dtype = job.rows.dtype;
    let n_chunks = job.rows.rows.div_ceil(job.chunk_rows.max(1));
    let mut a = Attempt {
        step: 1.0,
        payloads: Vec::with_capacity(n_chunks),
        err: 0.0,
        stats: job.stats_stride.map(|_| vec![0.0f64; k * k]),
        recon: job
            .keep_recon
            .then(|| Vec::with_capacity(job.rows.xs.len())),
    };
    for i in 0..n_chunks {
        let r0 = i * job.chunk_rows;
        let r1 = (r0 + job.chunk_rows).min(job.rows.rows);
        let xs = &job.rows.xs[r0 * d..r1 * d];
        let mut p = vec![MODE_STORED; 1 + xs.len() * dtype.itemsize()];
        convert::store_all_sat(dtype, xs, &mut p[1..]);
        a.payloads.push(p);
        for &x in xs {
            let y = convert::round_sat(dtype, x);
            a.err += (f64::from(y) - f64::from(x)).powi(2);
            if let Some(r) = a.recon.as_mut() {
                r.push(y);
            }
        }
    }
    a
}

/// Full encodes before giving up on a bound.
const MAX_ATTEMPTS: usize = 10;

/// Codes the rows with the plan so that the decoded tensor's relative RMSE is at most
/// `job.eps`. Returns `None` when no step meets it (then the caller codes another way).
pub(crate) fn encode_rows(job: &Job) -> Option<Attempt> {
    let rows = job.rows;
    if rows.sumsq == 0.0 {
        let a = attempt(job, &vec![0.0; rows.rows * job.plan.k], 1.0);
        return (a.err == 0.0).then_some(a);
    }
    let coefs = coefficients(job);
    let csum: f64 = coefs.iter().map(|&c| f64::from(c) * f64::from(c)).sum();
    let outside = if job.plan.k < rows.d {
        (rows.sumsq - csum).max(0.0)
    } else {
        0.0
    };
    let noise = rows.dtype_noise();
    let limit = job.eps * job.eps * rows.sumsq;
    let target = (0.997 * job.eps).powi(2) * rows.sumsq;
    let budget = target - outside - noise;
    if budget <= 0.0 {
        return None;
    }
    // The step whose coefficient error fills the budget: bisection on log(step), on a
    // sample of about 2^18 coefficients (whole rows, evenly spaced).
    let k = job.plan.k;
    let stride = (rows.rows * k / (1 << 18)).max(1);
    let sample: Vec<f32> = coefs
        .chunks_exact(k)
        .step_by(stride)
        .flatten()
        .copied()
        .collect();
    let scale = coefs.len() as f64 / sample.len().max(1) as f64;
    let rms = (csum / coefs.len().max(1) as f64).sqrt();
    let (mut lo, mut hi) = ((rms * 1e-7) as f32, (rms * 1e3) as f32);
    if !(lo > 0.0 && hi.is_finite()) {
        return None;
    }
    for _ in 0..40 {
        let mid = (f64::from(lo) * f64::from(hi)).sqrt() as f32;
        // Within 0.05%: the full encode checks the bound anyway.
        if mid <= lo || mid >= hi || hi <= lo * 1.0005 {
            break;
        }
        if coef_error(&sample, mid) * scale > budget {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let mut step = lo;
    let mut best: Option<Attempt> = None;
    let mut raised = false;
    for _ in 0..MAX_ATTEMPTS {
        let a = attempt(job, &coefs, step);
        if a.err <= limit * (1.0 - 1e-6) {
            let achieved = (a.err / rows.sumsq).sqrt();
            if !raised && achieved < 0.97 * job.eps && achieved > 0.0 {
                raised = true;
                let next = (f64::from(step) * (0.997 * job.eps / achieved).min(1.5)) as f32;
                best = Some(a);
                step = next;
                continue;
            }
            return Some(a);
        }
        if let Some(b) = best.take() {
            return Some(b);
        }
        let achieved = (a.err / rows.sumsq).sqrt();
        let next = (f64::from(step) * (0.995 * job.eps / achieved).min(0.99)) as f32;
        if next.is_nan() || next <= 0.0 || next == step {
            break;
        }
        step = next;
    }
    best
}

// ---- choosing a basis ----------------------------------------------------------------------

/// Rows used to estimate the channel covariance.
const MOMENT_ROWS: usize = 8192;

/// The principal directions of the rows (eigenvectors of `X^T X` on a sample of rows,
/// largest variance first) and their per-row variances.
pub(crate) fn principal(rows: &Rows, threads: usize) -> linalg::SymEig {
    let (n, d) = (rows.rows, rows.d);
    let take = n.clamp(1, MOMENT_ROWS);
    // Evenly spaced runs of 16 rows.
    let run = 16usize.min(take);
    let runs = take / run;
    let slots = (n / run).max(1);
    let picked: Vec<usize> = (0..runs)
        .flat_map(|j| {
            let s = j * slots / runs.max(1);
            (s * run..(s * run + run).min(n)).collect::<Vec<_>>()
        })
        .collect();
    let count = picked.len().max(1) as f64;
    let mut s = project::second_moments(rows.xs, d, &picked, threads);
    for v in s.iter_mut() {
        *v /= count;
    }
    linalg::sym_eig(&s, d)
}

/// Tuning of the frame basis: basis step `beta * step / sqrt(lambda)`, at most
/// `MAX_BASIS_STEP / sqrt(d)`; vectors kept while their variance exceeds `KEEP * theta`.
const BETA: f64 = 0.03;
const MAX_BASIS_STEP: f64 = 0.5;
const KEEP: f64 = 0.5;

/// A frame basis for the rows at the bound `eps`: the principal directions above the water
/// level, quantized, with the side block that carries them. `max_rank` caps the vectors.
pub(crate) fn frame_plan(
    rows: &Rows,
    eig: &linalg::SymEig,
    eps: f64,
    max_rank: Option<usize>,
    rans: RansParams,
) -> Plan {
    let d = rows.d;
    let per_row = eps * eps * rows.sumsq / rows.rows.max(1) as f64;
    let (theta, _) = project::water_fill(&eig.values, per_row);
    let step0 = (12.0 * theta).sqrt().max(f64::MIN_POSITIVE);
    let mut k = eig
        .values
        .iter()
        .take_while(|&&l| l > KEEP * theta)
        .count()
        .max(1);
    if let Some(r) = max_rank {
        k = k.min(r.max(1));
    }
    k = k.min(rows.rows.max(1));
    let cap = MAX_BASIS_STEP / (d as f64).sqrt();
    let steps: Vec<u16> = eig.values[..k]
        .iter()
        .map(|&l| {
            let s = (BETA * step0 / l.max(f64::MIN_POSITIVE).sqrt()).min(cap);
            convert::f32_to_bf16_sat((s as f32).max(f32::MIN_POSITIVE))
        })
        .collect();
    let stepf: Vec<f32> = steps.iter().map(|&b| convert::bf16_to_f32(b)).collect();
    // Codes, channel-major (d x k).
    let mut codes = vec![0i32; d * k];
    for j in 0..k {
        let inv = 1.0 / stepf[j];
        for t in 0..d {
            codes[t * k + j] = quantize(eig.vectors[j * d + t] as f32, inv, None);
        }
    }
    let mut side = Vec::new();
    encode_basis(&codes, &steps, d, k, rans, &mut side);
    let (w, _) = project::basis_from_codes(&codes, &stepf, d, k);
    Plan {
        basis: BASIS_FRAME,
        k,
        w: Some(w),
        side,
    }
}

pub(crate) fn identity_plan(d: usize) -> Plan {
    Plan {
        basis: BASIS_IDENTITY,
        k: d,
        w: None,
        side: Vec::new(),
    }
}

/// Rows per chunk for `chunk_elems`-element chunks of `d` channels, large enough that the
/// first chunk has room for a side block of `side` bytes.
pub(crate) fn chunk_rows(chunk_elems: u64, d: usize, itemsize: usize, side: usize) -> usize {
    let max_rows = (format::MAX_CHUNK_PAYLOAD - 1) / (d * itemsize).max(1);
    let want = (chunk_elems / d as u64).max(1) as usize;
    let room = if side == 0 {
        1
    } else {
        (2 * side + 1024).div_ceil(d * itemsize)
    };
    want.max(room).min(max_rows).max(1)
}

/// Assembles a frame: the header (with the request's shape and dtype, the stages of
/// `recipe`, `chunk_rows * d` elements per chunk) and the chunk records.
pub(crate) fn frame_of(
    req: &EncodeRequest,
    recipe: &Recipe,
    chunk_elems: u64,
    payloads: &[Vec<u8>],
) -> Result<Vec<u8>> {
    let header = format::Header {
        version: format::VERSION,
        hint: req.hint,
        dtype: req.dtype,
        shape: req.shape.to_vec(),
        chunk_elems,
        stages: recipe.stages(),
    };
    let max = header.max_chunk_payload();
    if payloads.iter().any(|p| p.len() > max) {
        return Err(Error::invalid("a projection chunk does not fit its record"));
    }
    let total: usize = payloads.iter().map(|p| p.len() + 8).sum();
    let mut frame = Vec::with_capacity(total + 256);
    let ext = header.write(&mut frame);
    for (i, p) in payloads.iter().enumerate() {
        format::write_chunk(&mut frame, ext.checksum, i as u64, p);
    }
    Ok(frame)
}

/// The projection recipe of an attempt.
pub(crate) fn recipe_of(job: &Job, a: &Attempt, session: Option<SessionTag>) -> Recipe {
    Recipe::Project {
        params: ProjectParams {
            bound: 1,
            bound_value: job.eps.to_bits(),
            basis: job.plan.basis,
            channels: job.rows.d as u32,
            k: job.plan.k as u32,
            step: a.step.to_bits(),
            rounding: job.rounding.code(),
        },
        rans: job.rans,
        session,
    }
}

/// Largest channel count for which `Transform::Auto` tries a frame basis (its
/// eigendecomposition costs `O(d^3)`; an explicit `Transform::Pca` goes up to
/// [`project::MAX_CHANNELS`]).
pub const AUTO_MAX_CHANNELS: usize = 512;

/// Codes `rows` with `plan`; `None` when the bound cannot be met that way or the first
/// chunk cannot hold the side block.
pub(crate) fn encode_with_plan(
    req: &EncodeRequest,
    rows: &Rows,
    plan: &Plan,
    eps: f64,
    rounding: Rounding,
    session: Option<SessionTag>,
) -> Result<Option<Vec<u8>>> {
    let d = rows.d;
    let chunk_rows = chunk_rows(req.chunk_elems, d, rows.dtype.itemsize(), plan.side.len());
    let job = Job {
        rows,
        plan,
        eps,
        rounding,
        rans: RansParams::DEFAULT,
        threads: req.threads,
        chunk_rows,
        stats_stride: None,
        keep_recon: false,
    };
    let Some(a) = encode_rows(&job) else {
        return Ok(None);
    };
    let recipe = recipe_of(&job, &a, session);
    Ok(frame_of(req, &recipe, (chunk_rows * d) as u64, &a.payloads).ok())
}

/// Encodes with transform coding (`spec.transform` is not `None`), to a relative RMSE bound.
/// Tensors a transform does not apply to (no channel dimension, more than
/// [`project::MAX_CHANNELS`] channels, NaN or infinities) get plain error-bounded coding; with
/// `Transform::Auto` the smallest of the plain, identity and PCA frames wins.
pub fn encode(req: &EncodeRequest, spec: &BoundedSpec) -> Result<Vec<u8>> {
    spec.validate()?;
    let plain_spec = BoundedSpec {
        transform: Transform::None,
        max_rank: None,
        ..*spec
    };
    let plain = || super::encode_bounded(req, &plain_spec);
    let Bound::RelRmse(eps) = spec.bound else {
        return plain();
    };
    let checked = EncodePlan::new(req)?;
    let numel = checked.header.numel()?;
    let d = match req.shape.last() {
        Some(&d) if d >= 1 && d as usize <= project::MAX_CHANNELS && numel > 0 => d as usize,
        _ => return plain(),
    };
    let mut xs = vec![0.0f32; numel as usize];
    convert::load_all(req.dtype, req.input, &mut xs);
    if xs.iter().any(|x| !x.is_finite()) {
        return plain();
    }
    let rows = Rows::new(req.dtype, d, &xs);
    let auto = spec.transform == Transform::Auto;
    let mut best: Option<Vec<u8>> = None;
    let consider = |f: Vec<u8>, best: &mut Option<Vec<u8>>| {
        if best.as_ref().is_none_or(|b| f.len() < b.len()) {
            *best = Some(f);
        }
    };
    if auto {
        consider(plain()?, &mut best);
    }
    if matches!(spec.transform, Transform::Identity | Transform::Auto) {
        if let Some(f) = encode_with_plan(req, &rows, &identity_plan(d), eps, spec.rounding, None)?
        {
            consider(f, &mut best);
        }
    }
    let try_pca = match spec.transform {
        Transform::Pca => d >= 2,
        Transform::Auto => (2..=AUTO_MAX_CHANNELS).contains(&d),
        _ => false,
    };
    if try_pca {
        let eig = principal(&rows, req.threads);
        let plan = frame_plan(&rows, &eig, eps, spec.max_rank, RansParams::DEFAULT);
        let hopeless = best.as_ref().is_some_and(|b| plan.side.len() >= b.len());
        if !hopeless {
            if let Some(f) = encode_with_plan(req, &rows, &plan, eps, spec.rounding, None)? {
                consider(f, &mut best);
            }
        }
    }
    match best {
        Some(f) => Ok(f),
        None => plain(),
    }
}
