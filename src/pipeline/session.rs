//! Shared-basis sessions: an encoder and a decoder that hold the same channel basis, so that
//! frames carry only coefficients.
//!
//! Both ends start from a resync frame (a self-contained projection frame: identity or frame
//! basis) and then keep a [`BasisState`] that they change in exactly the same way: after each
//! frame, with statistics of its decoded integer coefficients (which both ends have
//! bit for bit, and which the encoder takes from what it sent, not from its input), and every
//! `refresh` frames by rotating the basis onto the eigenvectors of those statistics. All of
//! it is deterministic `f64` arithmetic ([`crate::lowrank::linalg`]), so the states stay
//! equal on any machine.
//!
//! Every frame carries a session stage with the session id, its step (frames coded before it)
//! and a hash of the encoder's state; a decoder refuses a frame whose id, step or hash does
//! not match its own with [`ErrorKind::SessionMismatch`] (a frame from another session, a
//! dropped, duplicated or reordered frame, or diverged state), decodes nothing and stays as it
//! was. The encoder's [`Session::request_resync`] makes its next frame a resync frame, which
//! any decoder of the session accepts and which sets its state.
//!
//! Optional error feedback (for gradients): the encoder adds the error it made on the
//! previous tensor to the next one before coding it (as PowerSGD does), so errors do not
//! accumulate over steps. The bound then holds for what is coded, the input plus the carried
//! error, rather than for the input alone.

use std::hash::Hasher;
use std::sync::Mutex;

use twox_hash::XxHash3_64;

use super::transform::{self, Attempt, Job, Plan, Rows, SessionTag, BASIS_FRAME, BASIS_SESSION};
use super::{parse_frame, EncodeRequest, Limits, Recipe};
use crate::dtype::DType;
use crate::entropy::rans::RansParams;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{ContainerHint, Reader};
use crate::lowrank::basis::BasisState;
use crate::lowrank::project::MAX_CHANNELS;
use crate::quant::convert;
use crate::quant::rounding::Rounding;
use crate::Tensor;

/// Rows of a frame whose coefficients feed the session statistics: every
/// `ceil(rows / STATS_ROWS)`-th row.
pub const STATS_ROWS: u64 = 4096;

/// Settings of a session; both ends must use the same `id`, `refresh` and `decay`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Identifies the session in every frame.
    pub id: u64,
    /// The relative RMSE bound of every frame.
    pub error: f64,
    pub rounding: Rounding,
    /// Frames between basis refreshes (at least 1).
    pub refresh: u32,
    /// Weight of the earlier statistics per frame, in `(0, 1]`.
    pub decay: f64,
    /// Carry each tensor's coding error into the next (encoder side).
    pub error_feedback: bool,
    /// Elements per chunk (rounded to whole rows).
    pub chunk_elems: u64,
    pub threads: usize,
    pub limits: Limits,
}

impl SessionConfig {
    pub fn new(id: u64, error: f64) -> SessionConfig {
        SessionConfig {
            id,
            error,
            rounding: Rounding::Nearest,
            refresh: 2,
            decay: 0.7,
            error_feedback: false,
            chunk_elems: crate::Codec::DEFAULT_CHUNK_ELEMS,
            threads: 0,
            limits: Limits::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.error.is_finite() && self.error > 0.0) {
            return Err(Error::invalid(format!(
                "a session codes to a relative RMSE bound: error={} must be positive and finite",
                self.error
            )));
        }
        if self.refresh == 0 {
            return Err(Error::invalid("refresh must be at least 1 frame"));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(Error::invalid(format!(
                "decay={} must be in (0, 1]",
                self.decay
            )));
        }
        if self.chunk_elems == 0 {
            return Err(Error::invalid("chunk size must be at least 1 element"));
        }
        Ok(())
    }
}

/// One end of a shared-basis session (use one object per end and direction).
#[derive(Debug, Clone)]
pub struct Session {
    pub config: SessionConfig,
    /// Frames coded (or decoded) so far.
    step: u64,
    /// Frames since the basis was last set by a resync or a refresh.
    since: u64,
    state: Option<BasisState>,
    resync_next: bool,
    /// Error feedback: the last coding error and the shape it belongs to.
    residual: Vec<f32>,
    residual_shape: Vec<u64>,
}

/// A frame and the tensor it decodes to (the encoder's reconstruction).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub frame: Vec<u8>,
    pub decoded: Tensor,
}

fn mismatch(msg: String) -> Error {
    Error::new(ErrorKind::SessionMismatch, msg)
}

impl Session {
    pub fn new(config: SessionConfig) -> Result<Session> {
        config.validate()?;
        Ok(Session {
            config,
            step: 0,
            since: 0,
            state: None,
            resync_next: false,
            residual: Vec::new(),
            residual_shape: Vec::new(),
        })
    }

    /// Frames coded or decoded so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The channel count, once the first frame has set it.
    pub fn channels(&self) -> Option<usize> {
        self.state.as_ref().map(|s| s.d)
    }

    /// The current basis (`d x d`, one vector per row), once there is one.
    pub fn basis(&self) -> Option<&[f64]> {
        self.state.as_ref().map(|s| &s.basis[..])
    }

    /// Makes the next frame a resync frame (it carries its basis and resets the state).
    pub fn request_resync(&mut self) {
        self.resync_next = true;
    }

    /// A hash of everything both ends must agree on: id, step, and the basis state.
    pub fn state_hash(&self) -> u64 {
        let mut h = XxHash3_64::new();
        h.write(b"iota-session");
        h.write(&self.config.id.to_le_bytes());
        h.write(&self.step.to_le_bytes());
        h.write(&self.since.to_le_bytes());
        match &self.state {
            None => h.write(&[0]),
            Some(s) => {
                h.write(&[1]);
                s.hash_into(&mut h);
            }
        }
        h.finish()
    }

    fn stride(rows: usize) -> u64 {
        (rows as u64).div_ceil(STATS_ROWS).max(1)
    }

    /// The state after a frame whose basis and statistics are given: a resync sets a new
    /// basis, then the statistics are added and the basis refreshed when due.
    fn advance(&mut self, new_basis: Option<BasisState>, stats: &[f64], k: usize, step: f32) {
        if let Some(b) = new_basis {
            self.state = Some(b);
            self.since = 0;
        }
        let refresh = self.config.refresh as u64;
        if let Some(s) = self.state.as_mut() {
            s.accumulate(stats, k, step, self.config.decay);
            self.since += 1;
            if self.since.is_multiple_of(refresh) {
                s.refresh();
            }
        }
    }

    /// Encodes a tensor (its last dimension is the channels) as the session's next frame.
    pub fn encode(
        &mut self,
        input: &[u8],
        dtype: DType,
        shape: &[u64],
        hint: ContainerHint,
    ) -> Result<Encoded> {
        let d = match shape.last() {
            Some(&d) if (1..=MAX_CHANNELS as u64).contains(&d) => d as usize,
            _ => {
                return Err(Error::invalid(format!(
                    "a session codes tensors whose last dimension (the channels) has 1 to \
                     {MAX_CHANNELS} entries; this one has shape {shape:?}"
                )))
            }
        };
        if let Some(s) = &self.state {
            if s.d != d {
                return Err(Error::invalid(format!(
                    "this session codes tensors of {} channels, not {d} (shape {shape:?}); \
                     use one session per boundary tensor",
                    s.d
                )));
            }
        }
        // Checks the buffer against the shape (the recipe is not used).
        let req = EncodeRequest {
            input,
            dtype,
            shape,
            hint,
            chunk_elems: self.config.chunk_elems,
            threads: self.config.threads,
            recipe: Recipe::Lossless {
                rans: RansParams::DEFAULT,
            },
            seed: 0,
            contexts: false,
        };
        let plan = super::EncodePlan::new(&req)?;
        let numel = plan.header.numel()? as usize;
        let mut xs = vec![0.0f32; numel];
        convert::load_all(dtype, input, &mut xs);
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(super::lossy::nonfinite_error(i as u64, xs[i], "session"));
        }
        if self.config.error_feedback
            && self.residual_shape == shape
            && self.residual.len() == numel
        {
            for (x, r) in xs.iter_mut().zip(&self.residual) {
                *x += r;
            }
        }
        let rows = Rows::new(dtype, d, &xs);
        let eps = self.config.error;
        let stride = Self::stride(rows.rows);
        let resync = self.state.is_none() || self.resync_next;
        let run = |plan: &Plan| -> Option<(Attempt, usize)> {
            let chunk_rows = transform::chunk_rows(
                self.config.chunk_elems,
                d,
                dtype.itemsize(),
                plan.side.len(),
            );
            let job = Job {
                rows: &rows,
                plan,
                eps,
                rounding: self.config.rounding,
                rans: RansParams::DEFAULT,
                threads: self.config.threads,
                chunk_rows,
                stats_stride: Some(stride),
                keep_recon: true,
            };
            match transform::encode_rows(&job) {
                Some(a) => Some((a, chunk_rows)),
                None if plan.basis != BASIS_FRAME => {
                    Some((transform::stored_attempt(&job), chunk_rows))
                }
                None => None,
            }
        };
        let assemble = |plan: &Plan, a: &Attempt, chunk_rows: usize, tag: SessionTag| {
            let job = Job {
                rows: &rows,
                plan,
                eps,
                rounding: self.config.rounding,
                rans: RansParams::DEFAULT,
                threads: self.config.threads,
                chunk_rows,
                stats_stride: None,
                keep_recon: false,
            };
            let recipe = transform::recipe_of(&job, a, Some(tag));
            transform::frame_of(&req, &recipe, (chunk_rows * d) as u64, &a.payloads)
        };
        let (frame, attempt, plan) = if resync {
            let tag = SessionTag {
                id: self.config.id,
                step: self.step,
                state: 0,
                resync: true,
            };
            let mut best: Option<(Vec<u8>, Attempt, Plan)> = None;
            let mut plans = vec![transform::identity_plan(d)];
            if d >= 2 && rows.rows >= 2 {
                let eig = transform::principal(&rows, self.config.threads);
                plans.push(transform::frame_plan(
                    &rows,
                    &eig,
                    eps,
                    None,
                    RansParams::DEFAULT,
                ));
            }
            for plan in plans {
                let Some((a, chunk_rows)) = run(&plan) else {
                    continue;
                };
                let Ok(f) = assemble(&plan, &a, chunk_rows, tag) else {
                    continue;
                };
                if best.as_ref().is_none_or(|b| f.len() < b.0.len()) {
                    best = Some((f, a, plan));
                }
            }
            best.ok_or_else(|| Error::invalid("the tensor could not be coded"))?
        } else {
            let state = self.state.as_ref().expect("a session basis");
            let plan = Plan {
                basis: BASIS_SESSION,
                k: d,
                w: Some(state.synth().to_vec()),
                side: Vec::new(),
            };
            let tag = SessionTag {
                id: self.config.id,
                step: self.step,
                state: self.state_hash(),
                resync: false,
            };
            let (a, chunk_rows) = run(&plan).expect("a session frame can always be stored");
            let f = assemble(&plan, &a, chunk_rows, tag)?;
            (f, a, plan)
        };
        // The new state, from what was sent.
        let new_basis = match (resync, &plan.w) {
            (false, _) => None,
            (true, None) => Some(BasisState::identity(d)),
            (true, Some(w)) => Some(BasisState::complete(w, plan.k, d)),
        };
        let stats = attempt
            .stats
            .clone()
            .unwrap_or_else(|| vec![0.0; plan.k * plan.k]);
        self.advance(new_basis, &stats, plan.k, attempt.step);
        self.step += 1;
        self.resync_next = false;
        let recon = attempt.recon.unwrap_or_default();
        if self.config.error_feedback {
            self.residual = xs.iter().zip(&recon).map(|(x, y)| x - y).collect();
            self.residual_shape = shape.to_vec();
        }
        let mut data = vec![0u8; numel * dtype.itemsize()];
        convert::store_all_sat(dtype, &recon, &mut data);
        Ok(Encoded {
            frame,
            decoded: Tensor {
                dtype,
                shape: shape.to_vec(),
                hint,
                data,
            },
        })
    }

    /// Decodes the session's next frame into a new buffer.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Tensor> {
        let parsed = parse_frame(frame, &self.config.limits)?;
        let len = usize::try_from(parsed.header.output_bytes()?)
            .map_err(|_| Error::limit("decoded tensor does not fit in this machine's memory"))?;
        let mut data = crate::memory::output_buffer(len);
        self.decode_parsed_into(&parsed, &mut data)?;
        Ok(Tensor {
            dtype: parsed.header.dtype,
            shape: parsed.header.shape,
            hint: parsed.header.hint,
            data,
        })
    }

    /// Decodes the session's next frame into `out` (exactly the decoded size).
    pub fn decode_into(&mut self, frame: &[u8], out: &mut [u8]) -> Result<()> {
        let parsed = parse_frame(frame, &self.config.limits)?;
        self.decode_parsed_into(&parsed, out)
    }

    fn decode_parsed_into(&mut self, parsed: &super::ParsedFrame, out: &mut [u8]) -> Result<()> {
        let Recipe::Project {
            params,
            rans,
            session: Some(tag),
        } = parsed.recipe
        else {
            return Err(mismatch(
                "not a session frame: decode it with iota_codec.decode (a session decodes only \
                 frames from its encoder)"
                    .into(),
            ));
        };
        if tag.id != self.config.id {
            return Err(mismatch(format!(
                "frame belongs to session {:#x}, this is session {:#x}",
                tag.id, self.config.id
            )));
        }
        let d = params.d();
        if !tag.resync {
            if tag.step != self.step {
                return Err(mismatch(format!(
                    "expected frame {} of session {:#x}, got frame {}: a frame was dropped, \
                     duplicated or reordered; have the sender send a resync frame \
                     (Session.resync())",
                    self.step, self.config.id, tag.step
                )));
            }
            let Some(state) = &self.state else {
                return Err(mismatch(
                    "this session has no basis yet: its first frame must be a resync frame".into(),
                ));
            };
            if tag.state != self.state_hash() {
                return Err(mismatch(format!(
                    "frame {} was coded against a different session state than this \
                     decoder's (diverged or restored from another point); have the sender \
                     send a resync frame (Session.resync())",
                    tag.step
                )));
            }
            if state.d != d {
                return Err(mismatch(format!(
                    "frame has {d} channels, the session {}",
                    state.d
                )));
            }
        }
        let session_w = if tag.resync {
            None
        } else {
            self.state.as_ref().map(|s| s.synth())
        };
        let mut ctx = transform::context(
            &params,
            &rans,
            &parsed.header.shape,
            parsed.chunks.first().copied(),
            session_w,
        )?;
        let rows = parsed.header.numel()? / d as u64;
        ctx.stats = Some((Self::stride(rows as usize), Mutex::new(Vec::new())));
        super::decode_parsed_with(
            parsed,
            out,
            self.config.threads,
            &self.config.limits.validation,
            Some(&ctx),
        )?;
        let k = params.k();
        let stats = transform::collect_stats(&mut ctx, k);
        let new_basis = match (tag.resync, params.basis, &ctx.w) {
            (false, _, _) => None,
            (true, BASIS_FRAME, Some(w)) => Some(BasisState::complete(w, k, d)),
            (true, _, _) => Some(BasisState::identity(d)),
        };
        self.advance(new_basis, &stats, k, params.step());
        self.step = tag.step + 1;
        Ok(())
    }

    // ---- serialization ----

    /// The session as bytes (settings, step, basis state, error feedback residual), to be
    /// restored with [`Session::from_bytes`]. Checksummed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let c = &self.config;
        let mut o = Vec::new();
        o.extend_from_slice(STATE_MAGIC);
        o.push(STATE_VERSION);
        o.extend_from_slice(&c.id.to_le_bytes());
        o.extend_from_slice(&c.error.to_bits().to_le_bytes());
        match c.rounding {
            Rounding::Nearest => o.extend_from_slice(&[0; 9]),
            Rounding::Stochastic { seed } => {
                o.push(1);
                o.extend_from_slice(&seed.to_le_bytes());
            }
        }
        o.extend_from_slice(&c.refresh.to_le_bytes());
        o.extend_from_slice(&c.decay.to_bits().to_le_bytes());
        o.push(u8::from(c.error_feedback));
        o.extend_from_slice(&c.chunk_elems.to_le_bytes());
        o.extend_from_slice(&self.step.to_le_bytes());
        o.extend_from_slice(&self.since.to_le_bytes());
        o.push(u8::from(self.resync_next));
        match &self.state {
            None => o.push(0),
            Some(s) => {
                o.push(1);
                o.extend_from_slice(&(s.d as u32).to_le_bytes());
                for x in s.basis.iter().chain(&s.moments) {
                    o.extend_from_slice(&x.to_bits().to_le_bytes());
                }
            }
        }
        o.push(self.residual_shape.len() as u8);
        for &n in &self.residual_shape {
            o.extend_from_slice(&n.to_le_bytes());
        }
        o.extend_from_slice(&(self.residual.len() as u64).to_le_bytes());
        for r in &self.residual {
            o.extend_from_slice(&r.to_bits().to_le_bytes());
        }
        let sum = crate::format::checksum(&o, 0);
        o.extend_from_slice(&sum.to_le_bytes());
        o
    }

    /// Restores a session from [`Session::to_bytes`] (with `threads` and `limits`, which are
    /// not saved).
    pub fn from_bytes(bytes: &[u8], threads: usize, limits: Limits) -> Result<Session> {
        let bad = |m: &str| Error::invalid(format!("not a valid session state: {m}"));
        if bytes.len() < 4 {
            return Err(bad("too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if crate::format::checksum(body, 0).to_le_bytes() != sum {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader::new(body);
        let e = |_| bad("truncated");
        if r.bytes(4, "magic").map_err(e)? != STATE_MAGIC {
            return Err(bad("bad magic bytes"));
        }
        if r.u8("version").map_err(e)? != STATE_VERSION {
            return Err(bad("unknown version"));
        }
        let u64_ = |r: &mut Reader| -> Result<u64> {
            Ok(u64::from_le_bytes(
                r.bytes(8, "u64").map_err(e)?.try_into().unwrap(),
            ))
        };
        let id = u64_(&mut r)?;
        let error = f64::from_bits(u64_(&mut r)?);
        let rounding = match r.u8("rounding").map_err(e)? {
            0 => {
                u64_(&mut r)?;
                Rounding::Nearest
            }
            1 => Rounding::Stochastic {
                seed: u64_(&mut r)?,
            },
            _ => return Err(bad("unknown rounding")),
        };
        let refresh = r.u32("refresh").map_err(e)?;
        let decay = f64::from_bits(u64_(&mut r)?);
        let error_feedback = match r.u8("feedback").map_err(e)? {
            0 => false,
            1 => true,
            _ => return Err(bad("bad flag")),
        };
        let chunk_elems = u64_(&mut r)?;
        let config = SessionConfig {
            id,
            error,
            rounding,
            refresh,
            decay,
            error_feedback,
            chunk_elems,
            threads,
            limits,
        };
        let mut s = Session::new(config)?;
        s.step = u64_(&mut r)?;
        s.since = u64_(&mut r)?;
        s.resync_next = match r.u8("resync").map_err(e)? {
            0 => false,
            1 => true,
            _ => return Err(bad("bad flag")),
        };
        match r.u8("state").map_err(e)? {
            0 => {}
            1 => {
                let d = r.u32("channels").map_err(e)? as usize;
                if !(1..=MAX_CHANNELS).contains(&d) {
                    return Err(bad("channel count out of range"));
                }
                let raw = r.bytes(16 * d * d, "basis").map_err(e)?;
                let vals: Vec<f64> = raw
                    .chunks_exact(8)
                    .map(|b| f64::from_bits(u64::from_le_bytes(b.try_into().unwrap())))
                    .collect();
                if vals.iter().any(|v| !v.is_finite()) {
                    return Err(bad("non-finite basis"));
                }
                let (basis, moments) = vals.split_at(d * d);
                s.state = Some(BasisState::new(d, basis.to_vec(), moments.to_vec()));
            }
            _ => return Err(bad("bad flag")),
        }
        let ndim = usize::from(r.u8("ndim").map_err(e)?);
        if ndim > crate::format::MAX_NDIM {
            return Err(bad("too many dimensions"));
        }
        for _ in 0..ndim {
            s.residual_shape.push(u64_(&mut r)?);
        }
        let n = u64_(&mut r)? as usize;
        if n > r.remaining() / 4 {
            return Err(bad("truncated residual"));
        }
        let raw = r.bytes(4 * n, "residual").map_err(e)?;
        s.residual = raw
            .chunks_exact(4)
            .map(|b| f32::from_bits(u32::from_le_bytes(b.try_into().unwrap())))
            .collect();
        if r.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        Ok(s)
    }
}

const STATE_MAGIC: &[u8; 4] = b"IOTS";
const STATE_VERSION: u8 = 1;
