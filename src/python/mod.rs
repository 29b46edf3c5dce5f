//! Python bindings (`iota_codec._core`): buffers in, bytes out, errors mapped.
//!
//! The Python package (`python/iota_codec`) turns numpy arrays, torch tensors and other
//! buffers into flat byte views before calling in here, and allocates decode outputs itself,
//! so these functions only see C-contiguous byte buffers. All compute runs with the GIL
//! released.

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::{
    BlockSpec, Bound as ErrorBound, BoundedSpec, Codec, ContainerHint, DType, Element, Error,
    ErrorKind, Limits, Mode, NonFinite, ParamValue, Profile, Rounding, ScaleFormat, StepScope,
    Transform,
};

create_exception!(
    _core,
    CodecError,
    PyValueError,
    "Base class of every error iota-codec raises (a ValueError)."
);
create_exception!(
    _core,
    InvalidArgumentError,
    CodecError,
    "The arguments cannot be coded: unsupported dtype, wrong buffer size, bad parameters."
);
create_exception!(
    _core,
    CorruptFrameError,
    CodecError,
    "The bytes are not a valid iota-codec frame (truncated, damaged or forged)."
);
create_exception!(
    _core,
    ChecksumMismatchError,
    CorruptFrameError,
    "A checksum in the frame does not match: it was damaged in transit."
);
create_exception!(
    _core,
    UnsupportedVersionError,
    CodecError,
    "The frame needs a newer iota-codec (format version or stage unknown to this one)."
);
create_exception!(
    _core,
    RejectedValueError,
    CodecError,
    "The frame decoded, but its values fail validation (non-finite or above max_abs)."
);
create_exception!(
    _core,
    LimitExceededError,
    CodecError,
    "Decoding would exceed a resource limit such as max_output_bytes."
);
create_exception!(
    _core,
    NonFiniteError,
    InvalidArgumentError,
    "The tensor holds NaN or Inf and the lossy mode was not asked to keep them \
     (pass nonfinite=\"keep\" to carry them exactly)."
);

create_exception!(
    _core,
    SessionMismatchError,
    CodecError,
    "A frame of a shared-basis session does not follow the decoding session's state (another \
     session, a dropped, duplicated or reordered frame): nothing was decoded and the session \
     is unchanged; have the sender send a resync frame."
);

fn to_py(e: Error) -> PyErr {
    let msg = e.message().to_owned();
    match e.kind() {
        ErrorKind::InvalidArgument => InvalidArgumentError::new_err(msg),
        ErrorKind::CorruptFrame => CorruptFrameError::new_err(msg),
        ErrorKind::ChecksumMismatch => ChecksumMismatchError::new_err(msg),
        ErrorKind::UnsupportedVersion => UnsupportedVersionError::new_err(msg),
        ErrorKind::LimitExceeded => LimitExceededError::new_err(msg),
        ErrorKind::RejectedValue => RejectedValueError::new_err(msg),
        ErrorKind::NonFinite => NonFiniteError::new_err(msg),
        ErrorKind::SessionMismatch => SessionMismatchError::new_err(msg),
    }
}

/// A C-contiguous byte buffer exported by a Python object.
struct Bytes {
    buf: PyBuffer<u8>,
}

impl Bytes {
    fn get(obj: &Bound<'_, PyAny>, what: &str, writable: bool) -> PyResult<Bytes> {
        let buf = PyBuffer::<u8>::get(obj).map_err(|e| {
            InvalidArgumentError::new_err(format!(
                "{what} must be a bytes-like object of unsigned bytes: {e}"
            ))
        })?;
        if !buf.is_c_contiguous() {
            return Err(InvalidArgumentError::new_err(format!(
                "{what} must be C-contiguous"
            )));
        }
        if writable && buf.readonly() {
            return Err(InvalidArgumentError::new_err(format!(
                "{what} is read-only; decoding needs a writable buffer"
            )));
        }
        Ok(Bytes { buf })
    }

    fn as_slice(&self) -> &[u8] {
        let len = self.buf.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the buffer is C-contiguous (checked in `get`) with `len` bytes of `u8`
        // starting at `buf_ptr`, and stays exported (so neither freed nor resized) while
        // `self.buf` lives, which outlives the returned borrow.
        unsafe { std::slice::from_raw_parts(self.buf.buf_ptr() as *const u8, len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.buf.len_bytes();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and the buffer is writable (checked in `get`); the
        // exclusive borrow of `self` keeps this the only slice made from it here.
        unsafe { std::slice::from_raw_parts_mut(self.buf.buf_ptr() as *mut u8, len) }
    }
}

fn hint_from_code(code: u8) -> PyResult<ContainerHint> {
    ContainerHint::from_code(code)
        .ok_or_else(|| InvalidArgumentError::new_err(format!("unknown container hint {code}")))
}

fn codec(profile: &str, chunk_size: u64, threads: usize, limits: Limits) -> PyResult<Codec> {
    let profile = Profile::parse(profile).map_err(to_py)?;
    Ok(Codec {
        profile,
        mode: profile.mode(),
        chunk_elems: chunk_size,
        threads,
        limits,
    })
}

/// Decoder limits and value checks from a Python dict (`Codec._limits`); absent keys keep
/// their defaults.
fn limits_from(d: Option<&Bound<'_, PyDict>>) -> PyResult<Limits> {
    let mut l = Limits::default();
    for (k, v) in d.into_iter().flat_map(|d| d.iter()) {
        let key: String = k.extract()?;
        match key.as_str() {
            "max_output_bytes" => l.max_output_bytes = v.extract()?,
            "max_chunks" => l.max_chunks = v.extract()?,
            "max_ndim" => l.max_ndim = v.extract()?,
            "reject_nonfinite" => l.validation.reject_nonfinite = v.extract()?,
            "max_abs" => l.validation.max_abs = v.extract()?,
            _ => {
                return Err(InvalidArgumentError::new_err(format!(
                    "unknown decoder limit {key:?}"
                )))
            }
        }
    }
    l.validation.check_params().map_err(to_py)?;
    Ok(l)
}

// ---- settings dicts (the Python config's coding keys) <-> modes ----

/// The keys of a settings dict, in the order `get_config` lists them.
const SETTING_KEYS: [&str; 14] = [
    "format",
    "block",
    "scale",
    "entropy",
    "error",
    "max_abs_error",
    "target_bits",
    "step",
    "rounding",
    "seed",
    "nonfinite",
    "transform",
    "rank",
    "contexts",
];

fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidArgumentError::new_err(msg.into())
}

fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v.extract::<T>().map(Some).map_err(|_| {
            invalid(format!(
                "{key}={} has the wrong type",
                v.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        }),
    }
}

fn rounding_from(d: &Bound<'_, PyDict>) -> PyResult<Rounding> {
    let seed: Option<u64> = get(d, "seed")?;
    match get::<String>(d, "rounding")?.as_deref() {
        None | Some("nearest") => {
            if seed.is_some() {
                return Err(invalid(
                    "seed= applies to rounding='stochastic'; pass rounding='stochastic' or drop \
                     seed=",
                ));
            }
            Ok(Rounding::Nearest)
        }
        Some("stochastic") => Ok(Rounding::Stochastic {
            seed: seed.unwrap_or(0),
        }),
        Some(r) => Err(invalid(format!(
            "rounding={r:?} is unknown; choose 'nearest' (round to nearest even) or 'stochastic' \
             (unbiased, for gradients)"
        ))),
    }
}

fn nonfinite_from(d: &Bound<'_, PyDict>) -> PyResult<NonFinite> {
    match get::<String>(d, "nonfinite")?.as_deref() {
        None | Some("error") => Ok(NonFinite::Error),
        Some("keep") => Ok(NonFinite::Keep),
        Some(v) => Err(invalid(format!(
            "nonfinite={v:?} is unknown; choose 'error' (refuse NaN/Inf) or 'keep' (carry them \
             exactly)"
        ))),
    }
}

/// The mode a settings dict describes: fixed-rate when `format` is set, error-bounded when
/// one of `error`, `max_abs_error`, `target_bits` is, lossless otherwise.
fn mode_from(d: &Bound<'_, PyDict>) -> PyResult<Mode> {
    for k in d.keys() {
        let k: String = k.extract()?;
        if !SETTING_KEYS.contains(&k.as_str()) {
            return Err(invalid(format!("unknown setting {k:?}")));
        }
    }
    let bounds = [
        get::<f64>(d, "error")?.map(ErrorBound::RelRmse),
        get::<f64>(d, "max_abs_error")?.map(ErrorBound::MaxAbs),
        get::<f64>(d, "target_bits")?.map(ErrorBound::Bits),
    ];
    let given: Vec<ErrorBound> = bounds.into_iter().flatten().collect();
    let mode = if let Some(fmt) = get::<String>(d, "format")? {
        if !given.is_empty() {
            return Err(invalid(
                "format= (fixed-rate quantization) and error=/max_abs_error=/target_bits= \
                 (error-bounded quantization) exclude each other: pass one kind",
            ));
        }
        if d.get_item("contexts")?.is_some_and(|v| !v.is_none()) {
            return Err(invalid(
                "contexts= applies to error-bounded quantization (error=, max_abs_error=, \
                 target_bits=): fixed-rate codes have a scale per block already",
            ));
        }
        let element = Element::parse(&fmt).ok_or_else(|| {
            invalid(format!(
                "format={fmt:?} is unknown; choose one of {}",
                Element::ALL.map(|e| e.name()).join(", ")
            ))
        })?;
        let scale: String = get(d, "scale")?.unwrap_or_else(|| "bf16".into());
        let scale = ScaleFormat::parse(&scale).ok_or_else(|| {
            invalid(format!(
                "scale={scale:?} is unknown; choose one of {}",
                ScaleFormat::ALL.map(|s| s.name()).join(", ")
            ))
        })?;
        Mode::Block(BlockSpec {
            element,
            scale,
            block: get(d, "block")?.unwrap_or(crate::quant::block::MX_BLOCK),
            entropy: get(d, "entropy")?.unwrap_or(false),
            rounding: rounding_from(d)?,
            nonfinite: nonfinite_from(d)?,
        })
    } else if let Some(&bound) = given.first() {
        if given.len() > 1 {
            return Err(invalid(
                "error=, max_abs_error= and target_bits= are alternatives: pass exactly one",
            ));
        }
        let block: Option<usize> = get(d, "block")?;
        let scope = match get::<String>(d, "step")?.as_deref() {
            None | Some("global") => StepScope::Global,
            Some("channel") => StepScope::Channel,
            Some("block") => StepScope::Block(block.unwrap_or(64)),
            Some(s) => {
                return Err(invalid(format!(
                    "step={s:?} is unknown; choose 'global' (one step: the best total error), \
                     'channel' or 'block'"
                )))
            }
        };
        if block.is_some() && !matches!(scope, StepScope::Block(_)) {
            return Err(invalid(
                "block= sets the size of the step's blocks: it needs step='block'",
            ));
        }
        if get::<String>(d, "scale")?.is_some() || get::<bool>(d, "entropy")?.is_some() {
            return Err(invalid(
                "scale= and entropy= apply to fixed-rate formats (format=/bits=); \
                 error-bounded quantization always entropy-codes",
            ));
        }
        let max_rank: Option<usize> = get(d, "rank")?;
        let transform = match get::<String>(d, "transform")?.as_deref() {
            None if max_rank.is_some() => Transform::Auto,
            None => Transform::None,
            Some(t) => Transform::parse(t).ok_or_else(|| {
                invalid(format!(
                    "transform={t:?} is unknown; choose 'none' (plain), 'identity' (a table per \
                     group of channels), 'pca' (principal directions of the channels) or \
                     'auto' (the smallest of them)"
                ))
            })?,
        };
        Mode::Bounded(BoundedSpec {
            bound,
            scope,
            rounding: rounding_from(d)?,
            nonfinite: nonfinite_from(d)?,
            transform,
            max_rank,
            contexts: get(d, "contexts")?.unwrap_or(true),
        })
    } else {
        for k in [
            "block",
            "scale",
            "entropy",
            "step",
            "rounding",
            "seed",
            "transform",
            "rank",
            "contexts",
        ] {
            if d.get_item(k)?.is_some_and(|v| !v.is_none()) {
                return Err(invalid(format!(
                    "{k}= applies to lossy coding: also pass format=/bits= (fixed rate) or \
                     error=/max_abs_error=/target_bits= (error-bounded), or pick a lossy \
                     profile (fast, balanced, max)"
                )));
            }
        }
        if get::<String>(d, "nonfinite")?.as_deref() == Some("error") {
            return Err(invalid(
                "lossless coding carries NaN and Inf exactly: nonfinite='error' applies to \
                 lossy modes",
            ));
        }
        Mode::Lossless
    };
    mode.validate().map_err(to_py)?;
    Ok(mode)
}

/// A mode as a settings dict (every key present; `None` where it does not apply).
fn settings_of<'py>(py: Python<'py>, mode: &Mode) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for k in SETTING_KEYS {
        d.set_item(k, py.None())?;
    }
    let (rounding, nonfinite) = match mode {
        Mode::Lossless => return Ok(d),
        Mode::Block(b) => {
            d.set_item("format", b.element.name())?;
            d.set_item("block", b.block)?;
            d.set_item("scale", b.scale.name())?;
            d.set_item("entropy", b.entropy)?;
            (b.rounding, b.nonfinite)
        }
        Mode::Bounded(b) => {
            let key = match b.bound {
                ErrorBound::RelRmse(_) => "error",
                ErrorBound::MaxAbs(_) => "max_abs_error",
                ErrorBound::Bits(_) => "target_bits",
            };
            d.set_item(key, b.bound.value())?;
            d.set_item("step", b.scope.name())?;
            if let StepScope::Block(n) = b.scope {
                d.set_item("block", n)?;
            }
            if b.transform != Transform::None {
                d.set_item("transform", b.transform.name())?;
            }
            if let Some(r) = b.max_rank {
                d.set_item("rank", r)?;
            }
            d.set_item("contexts", b.contexts)?;
            (b.rounding, b.nonfinite)
        }
    };
    d.set_item("rounding", rounding.name())?;
    if let Rounding::Stochastic { seed } = rounding {
        d.set_item("seed", seed)?;
    }
    d.set_item("nonfinite", nonfinite.name())?;
    Ok(d)
}

/// The settings of a profile, as a dict of the coding keys.
#[pyfunction]
fn profile_settings<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
    settings_of(py, &Profile::parse(name).map_err(to_py)?.mode())
}

/// Checks a settings dict and returns it normalized (every key, canonical names).
#[pyfunction]
fn check_settings<'py>(
    py: Python<'py>,
    settings: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    settings_of(py, &mode_from(settings)?)
}

/// An encoding codec: `profile`, or when given the settings dict (see `check_settings`).
fn encoder(
    profile: &str,
    settings: Option<&Bound<'_, PyDict>>,
    chunk_size: u64,
    threads: usize,
) -> PyResult<Codec> {
    let mut codec = codec(profile, chunk_size, threads, Limits::default())?;
    if let Some(s) = settings {
        codec.mode = mode_from(s)?;
    }
    Ok(codec)
}

/// A new `bytes` holding `data`. A large one is copied with the GIL released, into memory
/// advised to use huge pages (see `memory::advise_huge_pages`), rather than by
/// `PyBytes::new`, which copies under the GIL after zeroing (so faulting in) every 4 KiB page.
fn new_bytes<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if data.len() < crate::memory::HUGE_PAGE_MIN_BYTES {
        return Ok(PyBytes::new(py, data));
    }
    let len = pyo3::ffi::Py_ssize_t::try_from(data.len())
        .map_err(|_| PyValueError::new_err("frame too large for a bytes object"))?;
    // SAFETY: with a null source, PyBytes_FromStringAndSize returns a new bytes object of
    // `len` uninitialized bytes (or null with an exception set, which `from_owned_ptr_or_err`
    // turns into the error), owned by us.
    let obj = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len),
        )?
        .cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the object is a bytes object of `len` bytes that no one else can see yet, so
    // its buffer may be written, with or without the GIL, until it is returned.
    let buf = unsafe { pyo3::ffi::PyBytes_AsString(obj.as_ptr()) }.cast::<u8>() as usize;
    py.detach(|| {
        // SAFETY: as above: `buf` holds `data.len()` writable bytes that nothing else uses.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, data.len()) };
        crate::memory::advise_huge_pages(dst);
        dst.copy_from_slice(data);
    });
    Ok(obj)
}

/// Encodes the bytes of a C-contiguous tensor of `dtype` and `shape` into a frame, with a
/// profile or, when given, a settings dict (see `check_settings`).
#[pyfunction]
#[pyo3(signature = (data, dtype, shape, *, profile="lossless", settings=None, chunk_size=Codec::DEFAULT_CHUNK_ELEMS, threads=0, hint=0))]
#[allow(clippy::too_many_arguments)]
fn encode<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    dtype: &str,
    shape: Vec<u64>,
    profile: &str,
    settings: Option<&Bound<'py, PyDict>>,
    chunk_size: u64,
    threads: usize,
    hint: u8,
) -> PyResult<Bound<'py, PyBytes>> {
    let dtype = DType::parse(dtype).map_err(to_py)?;
    let hint = hint_from_code(hint)?;
    let codec = encoder(profile, settings, chunk_size, threads)?;
    let input = Bytes::get(data, "data", false)?;
    let slice = input.as_slice();
    with_frame(|frame| {
        py.detach(|| codec.encode_into_with_hint(slice, dtype, &shape, hint, frame))
            .map_err(to_py)?;
        new_bytes(py, frame)
    })
}

/// Buffers the encoders code frames into before copying them into the `bytes` they return,
/// kept between calls (see `with_frame`).
static FRAMES: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// At most this many buffers are kept...
const KEEP_FRAMES: usize = 4;
/// ...of at most this capacity in all.
const KEEP_FRAME_BYTES: usize = 512 << 20;

/// Runs `f` with a frame buffer kept from an earlier call (the one returned last), or a new
/// one, and keeps it afterwards while the kept buffers stay within `KEEP_FRAMES` and
/// `KEEP_FRAME_BYTES`. A training loop encodes a tensor of the same size every step; with a
/// new buffer every call the encoder paid a page fault per 4 KiB of frame: `Codec.encode` of
/// a 64 MiB bfloat16 tensor on one thread of a Zen 4 VM ran at 1.09-1.10 GB/s for
/// `balanced` with a new buffer and 1.43-1.49 with a kept one, `lossless` 1.63-1.67 and
/// 1.79-1.84, `fast` 3.97-4.34 and 4.95-5.06. (Kept per process, not per thread, so that
/// a pool of many encoding threads does not hold a frame each.)
fn with_frame<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let lock = || FRAMES.lock().unwrap_or_else(|e| e.into_inner());
    let mut frame = lock().pop().unwrap_or_default();
    let r = f(&mut frame);
    let mut kept = lock();
    let total: usize = kept.iter().map(Vec::capacity).sum();
    if kept.len() < KEEP_FRAMES && total + frame.capacity() <= KEEP_FRAME_BYTES {
        kept.push(frame);
    }
    r
}

/// The frame of fixed-rate block quantization from precomputed codes and scales (see
/// `Codec::encode_block_codes`): byte for byte the frame `encode` writes for the tensor they
/// were quantized from. `codes` holds one byte per code, or with `packed=True` an LSB-first
/// stream of `bits`-bit codes; `scales` each block's stored scale (little-endian); `raw_tail`
/// the raw bytes of the tensor's last elements, for a short last chunk that is stored as it
/// is. Returns None when a chunk must be stored and `raw_tail` does not reach it.
#[pyfunction]
#[pyo3(signature = (codes, scales, dtype, shape, *, profile="lossless", settings=None, chunk_size=Codec::DEFAULT_CHUNK_ELEMS, threads=0, hint=0, packed=false, raw_tail=None))]
#[allow(clippy::too_many_arguments)]
fn encode_block_codes<'py>(
    py: Python<'py>,
    codes: &Bound<'py, PyAny>,
    scales: &Bound<'py, PyAny>,
    dtype: &str,
    shape: Vec<u64>,
    profile: &str,
    settings: Option<&Bound<'py, PyDict>>,
    chunk_size: u64,
    threads: usize,
    hint: u8,
    packed: bool,
    raw_tail: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let dtype = DType::parse(dtype).map_err(to_py)?;
    let hint = hint_from_code(hint)?;
    let codec = encoder(profile, settings, chunk_size, threads)?;
    let codes = Bytes::get(codes, "codes", false)?;
    let scales = Bytes::get(scales, "scales", false)?;
    let raw_tail = raw_tail
        .map(|r| Bytes::get(r, "raw_tail", false))
        .transpose()?;
    let src = crate::BlockCodes {
        codes: codes.as_slice(),
        packed,
        scales: scales.as_slice(),
        raw_tail: raw_tail.as_ref().map_or(&[], |r| r.as_slice()),
    };
    with_frame(|frame| {
        let coded = py
            .detach(|| codec.encode_block_codes_into(&src, dtype, &shape, hint, frame))
            .map_err(to_py)?;
        coded.then(|| new_bytes(py, frame)).transpose()
    })
}

/// Decodes `frame` into the writable C-contiguous buffer `out` (exactly the decoded size).
#[pyfunction]
#[pyo3(signature = (frame, out, *, threads=0, limits=None))]
fn decode_into(
    py: Python<'_>,
    frame: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    threads: usize,
    limits: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let limits = limits_from(limits)?;
    let codec = codec("lossless", Codec::DEFAULT_CHUNK_ELEMS, threads, limits)?;
    let frame = Bytes::get(frame, "frame", false)?;
    let mut out = Bytes::get(out, "out", true)?;
    let (f, o) = (frame.as_slice(), out.as_mut_slice());
    py.detach(|| codec.decode_into(f, o)).map_err(to_py)?;
    Ok(())
}

/// Parses only the header: `(dtype, shape, container)`, checking it against the limits.
#[pyfunction]
#[pyo3(signature = (frame, *, limits=None))]
fn header(
    frame: &Bound<'_, PyAny>,
    limits: Option<&Bound<'_, PyDict>>,
) -> PyResult<(&'static str, Vec<u64>, &'static str)> {
    let limits = limits_from(limits)?;
    let frame = Bytes::get(frame, "frame", false)?;
    let (h, _) = crate::format::Header::parse(frame.as_slice()).map_err(to_py)?;
    limits.check(&h).map_err(to_py)?;
    Ok((h.dtype.name(), h.shape, h.hint.name()))
}

/// The frame's header and chunk table as a dict.
#[pyfunction]
fn info<'py>(py: Python<'py>, frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let frame = Bytes::get(frame, "frame", false)?;
    let i = crate::info(frame.as_slice()).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("format_version", i.format_version)?;
    d.set_item("dtype", i.dtype.name())?;
    d.set_item("shape", i.shape.clone())?;
    d.set_item("container", i.hint.name())?;
    d.set_item("chunk_size", i.chunk_elems)?;
    d.set_item("n_chunks", i.chunk_bytes.len())?;
    let stages = PyList::empty(py);
    for s in &i.stages {
        let sd = PyDict::new(py);
        sd.set_item("name", s.name)?;
        for (k, v) in &s.params {
            match *v {
                ParamValue::Int(i) => sd.set_item(*k, i)?,
                ParamValue::Float(f) => sd.set_item(*k, f)?,
                ParamValue::Str(t) => sd.set_item(*k, t)?,
            }
        }
        stages.append(sd)?;
    }
    d.set_item("stages", stages)?;
    d.set_item("chunk_bytes", i.chunk_bytes.clone())?;
    d.set_item("header_bytes", i.header_bytes)?;
    d.set_item("frame_bytes", i.frame_bytes)?;
    d.set_item("uncompressed_bytes", i.output_bytes)?;
    let ratio = if i.frame_bytes == 0 {
        0.0
    } else {
        i.output_bytes as f64 / i.frame_bytes as f64
    };
    d.set_item("ratio", ratio)?;
    Ok(d)
}

/// Encodes a tensor piece by piece (`iter()` yields the header, then one chunk record at a
/// time); holds the input buffer until the last piece.
#[pyclass(module = "iota_codec._core")]
struct StreamEncoder {
    input: Bytes,
    encoder: crate::StreamEncoder,
}

#[pymethods]
impl StreamEncoder {
    #[new]
    #[pyo3(signature = (data, dtype, shape, *, profile="lossless", settings=None, chunk_size=Codec::DEFAULT_CHUNK_ELEMS, threads=0, hint=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        data: &Bound<'_, PyAny>,
        dtype: &str,
        shape: Vec<u64>,
        profile: &str,
        settings: Option<&Bound<'_, PyDict>>,
        chunk_size: u64,
        threads: usize,
        hint: u8,
    ) -> PyResult<Self> {
        let dtype = DType::parse(dtype).map_err(to_py)?;
        let hint = hint_from_code(hint)?;
        let codec = encoder(profile, settings, chunk_size, threads)?;
        let input = Bytes::get(data, "data", false)?;
        let encoder = codec
            .stream_encoder(input.as_slice(), dtype, &shape, hint)
            .map_err(to_py)?;
        Ok(StreamEncoder { input, encoder })
    }

    /// Number of pieces in all: the header and one per chunk.
    #[getter]
    fn n_pieces(&self) -> usize {
        self.encoder.n_pieces()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let input = self.input.as_slice();
        let encoder = &mut self.encoder;
        let piece = py.detach(|| encoder.next_piece(input)).map_err(to_py)?;
        Ok(piece.map(|p| PyBytes::new(py, &p)))
    }
}

/// Decodes a frame from pieces as they arrive.
#[pyclass(module = "iota_codec._core")]
struct StreamDecoder {
    decoder: crate::StreamDecoder,
    out: Option<Bytes>,
}

#[pymethods]
impl StreamDecoder {
    #[new]
    #[pyo3(signature = (*, threads=0, limits=None))]
    fn new(threads: usize, limits: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let limits = limits_from(limits)?;
        let decoder = crate::StreamDecoder::new(limits, threads);
        Ok(StreamDecoder { decoder, out: None })
    }

    /// Buffers `data`; parses the header as soon as it is complete.
    fn feed(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = Bytes::get(data, "data", false)?;
        self.decoder.feed(data.as_slice()).map_err(to_py)
    }

    /// `(dtype, shape, container)` once the header has arrived, else None.
    fn header(&self) -> Option<(&'static str, Vec<u64>, &'static str)> {
        self.decoder
            .header()
            .map(|h| (h.dtype.name(), h.shape.clone(), h.hint.name()))
    }

    /// Sets the writable buffer (exactly the decoded size) that chunks are decoded into.
    fn set_output(&mut self, out: &Bound<'_, PyAny>) -> PyResult<()> {
        let out = Bytes::get(out, "out", true)?;
        match self.decoder.output_len() {
            Some(n) if n == out.buf.len_bytes() => {
                self.out = Some(out);
                Ok(())
            }
            Some(n) => Err(InvalidArgumentError::new_err(format!(
                "out holds {} bytes, the frame decodes to {n}",
                out.buf.len_bytes()
            ))),
            None => Err(InvalidArgumentError::new_err(
                "the header has not arrived yet",
            )),
        }
    }

    /// Decodes every chunk that has fully arrived into the output; returns how many.
    fn decode_available(&mut self, py: Python<'_>) -> PyResult<usize> {
        let Some(out) = self.out.as_mut() else {
            return Ok(0);
        };
        let out = out.as_mut_slice();
        let decoder = &mut self.decoder;
        py.detach(|| decoder.decode_available(out)).map_err(to_py)
    }

    /// `(chunks decoded, chunks in all or None before the header)`.
    fn progress(&self) -> (u64, Option<u64>) {
        self.decoder.progress()
    }

    #[getter]
    fn complete(&self) -> bool {
        self.decoder.is_complete()
    }

    /// Raises unless the whole frame has arrived and been decoded.
    fn finish(&self) -> PyResult<()> {
        self.decoder.finish().map_err(to_py)
    }
}

/// One end of a shared-basis session (see `crate::pipeline::session`).
#[pyclass(module = "iota_codec._core")]
struct Session {
    inner: crate::Session,
}

#[pymethods]
impl Session {
    /// A session coding with the error-bounded settings dict `settings` (an `error=` bound).
    #[new]
    #[pyo3(signature = (settings, *, session_id=0, refresh=2, decay=0.7, error_feedback=false, chunk_size=Codec::DEFAULT_CHUNK_ELEMS, threads=0, limits=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        settings: &Bound<'_, PyDict>,
        session_id: u64,
        refresh: u32,
        decay: f64,
        error_feedback: bool,
        chunk_size: u64,
        threads: usize,
        limits: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let Mode::Bounded(spec) = mode_from(settings)? else {
            return Err(invalid(
                "a session codes to a relative RMSE bound: give its codec error= (for example \
                 Codec(error=0.03))",
            ));
        };
        let ErrorBound::RelRmse(error) = spec.bound else {
            return Err(invalid(
                "a session codes to a relative RMSE bound (error=), not max_abs_error= or \
                 target_bits=",
            ));
        };
        if spec.scope != StepScope::Global {
            return Err(invalid(
                "a session quantizes every coefficient with one step: use step='global'",
            ));
        }
        let config = crate::SessionConfig {
            id: session_id,
            error,
            rounding: spec.rounding,
            refresh,
            decay,
            error_feedback,
            chunk_elems: chunk_size,
            threads,
            limits: limits_from(limits)?,
        };
        Ok(Session {
            inner: crate::Session::new(config).map_err(to_py)?,
        })
    }

    /// Encodes the next tensor; writes the decoded tensor into `reconstruction` when given.
    #[pyo3(signature = (data, dtype, shape, *, hint=0, reconstruction=None))]
    fn encode<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        dtype: &str,
        shape: Vec<u64>,
        hint: u8,
        reconstruction: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let dtype = DType::parse(dtype).map_err(to_py)?;
        let hint = hint_from_code(hint)?;
        let input = Bytes::get(data, "data", false)?;
        let mut recon = reconstruction
            .map(|r| Bytes::get(r, "reconstruction", true))
            .transpose()?;
        if let Some(r) = &recon {
            if r.buf.len_bytes() != input.buf.len_bytes() {
                return Err(invalid("reconstruction must be the size of the input"));
            }
        }
        let slice = input.as_slice();
        let inner = &mut self.inner;
        let encoded = py
            .detach(|| inner.encode(slice, dtype, &shape, hint))
            .map_err(to_py)?;
        if let Some(r) = recon.as_mut() {
            r.as_mut_slice().copy_from_slice(&encoded.decoded.data);
        }
        new_bytes(py, &encoded.frame)
    }

    /// Decodes the next frame into the writable buffer `out` (exactly the decoded size).
    fn decode_into(
        &mut self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let frame = Bytes::get(frame, "frame", false)?;
        let mut out = Bytes::get(out, "out", true)?;
        let (f, o) = (frame.as_slice(), out.as_mut_slice());
        let inner = &mut self.inner;
        py.detach(|| inner.decode_into(f, o)).map_err(to_py)
    }

    /// Makes the next frame a resync frame.
    fn resync(&mut self) {
        self.inner.request_resync();
    }

    /// The session as bytes (settings, step, basis state, error feedback residual).
    fn state_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// A session restored from `state_bytes()`.
    #[staticmethod]
    #[pyo3(signature = (state, *, threads=0, limits=None))]
    fn from_state(
        state: &Bound<'_, PyAny>,
        threads: usize,
        limits: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let state = Bytes::get(state, "state", false)?;
        let inner = crate::Session::from_bytes(state.as_slice(), threads, limits_from(limits)?)
            .map_err(to_py)?;
        Ok(Session { inner })
    }

    #[getter]
    fn step(&self) -> u64 {
        self.inner.step()
    }

    #[getter]
    fn channels(&self) -> Option<usize> {
        self.inner.channels()
    }

    #[getter]
    fn state_hash(&self) -> u64 {
        self.inner.state_hash()
    }

    /// The basis (`d * d` float64 values, one vector per row), once there is one.
    #[getter]
    fn basis(&self) -> Option<Vec<f64>> {
        self.inner.basis().map(|b| b.to_vec())
    }

    /// `{session_id, error, rounding, seed, refresh, decay, error_feedback, chunk_size,
    /// threads}`.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner.config;
        let d = PyDict::new(py);
        d.set_item("session_id", c.id)?;
        d.set_item("error", c.error)?;
        d.set_item("rounding", c.rounding.name())?;
        d.set_item(
            "seed",
            match c.rounding {
                Rounding::Stochastic { seed } => Some(seed),
                Rounding::Nearest => None,
            },
        )?;
        d.set_item("refresh", c.refresh)?;
        d.set_item("decay", c.decay)?;
        d.set_item("error_feedback", c.error_feedback)?;
        d.set_item("chunk_size", c.chunk_elems)?;
        d.set_item("threads", c.threads)?;
        Ok(d)
    }
}

/// `frame` with every checksum rewritten to match its bytes, as a hostile sender would make
/// it (for tests that reach the decoder behind the checksums).
#[pyfunction]
fn _reseal<'py>(py: Python<'py>, frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut bytes = Bytes::get(frame, "frame", false)?.as_slice().to_vec();
    crate::format::reseal(&mut bytes);
    Ok(PyBytes::new(py, &bytes))
}

/// Advises huge pages for a new, writable C-contiguous output buffer (see
/// `memory::advise_huge_pages`); returns whether the advice was given.
#[pyfunction]
fn _advise_huge_pages(buf: &Bound<'_, PyAny>) -> PyResult<bool> {
    let mut buf = Bytes::get(buf, "buf", true)?;
    Ok(crate::memory::advise_huge_pages(buf.as_mut_slice()))
}

/// The SIMD level the kernels run at (after `IOTA_CODEC_SIMD`).
#[pyfunction]
fn simd_level() -> &'static str {
    crate::simd::kernels().level.name()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CodecError", py.get_type::<CodecError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("CorruptFrameError", py.get_type::<CorruptFrameError>())?;
    m.add(
        "ChecksumMismatchError",
        py.get_type::<ChecksumMismatchError>(),
    )?;
    m.add(
        "UnsupportedVersionError",
        py.get_type::<UnsupportedVersionError>(),
    )?;
    m.add("LimitExceededError", py.get_type::<LimitExceededError>())?;
    m.add("RejectedValueError", py.get_type::<RejectedValueError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add(
        "SessionMismatchError",
        py.get_type::<SessionMismatchError>(),
    )?;
    m.add("FORMAT_VERSION", crate::FORMAT_VERSION)?;
    m.add("DEFAULT_CHUNK_SIZE", Codec::DEFAULT_CHUNK_ELEMS)?;
    m.add("DEFAULT_MAX_OUTPUT_BYTES", Limits::DEFAULT_MAX_OUTPUT_BYTES)?;
    m.add("DEFAULT_MAX_CHUNKS", Limits::DEFAULT_MAX_CHUNKS)?;
    m.add(
        "PROFILES",
        Profile::ALL.iter().map(|p| p.name()).collect::<Vec<_>>(),
    )?;
    m.add("ELEMENTS", Element::ALL.map(|e| e.name()).to_vec())?;
    m.add("SCALES", ScaleFormat::ALL.map(|e| e.name()).to_vec())?;
    m.add("SETTING_KEYS", SETTING_KEYS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_block_codes, m)?)?;
    m.add_function(wrap_pyfunction!(decode_into, m)?)?;
    m.add_function(wrap_pyfunction!(header, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_reseal, m)?)?;
    m.add_function(wrap_pyfunction!(_advise_huge_pages, m)?)?;
    m.add_function(wrap_pyfunction!(profile_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_settings, m)?)?;
    m.add_class::<StreamEncoder>()?;
    m.add_class::<StreamDecoder>()?;
    m.add_class::<Session>()?;
    Ok(())
}
