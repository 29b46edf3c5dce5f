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

use crate::validate::Validation;
use crate::{Codec, ContainerHint, DType, Error, ErrorKind, Limits, Profile};

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

fn to_py(e: Error) -> PyErr {
    let msg = e.message().to_owned();
    match e.kind() {
        ErrorKind::InvalidArgument => InvalidArgumentError::new_err(msg),
        ErrorKind::CorruptFrame => CorruptFrameError::new_err(msg),
        ErrorKind::ChecksumMismatch => ChecksumMismatchError::new_err(msg),
        ErrorKind::UnsupportedVersion => UnsupportedVersionError::new_err(msg),
        ErrorKind::LimitExceeded => LimitExceededError::new_err(msg),
        ErrorKind::RejectedValue => RejectedValueError::new_err(msg),
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
    Ok(Codec {
        profile: Profile::parse(profile).map_err(to_py)?,
        chunk_elems: chunk_size,
        threads,
        limits,
    })
}

/// Decoder limits and value checks from the Python arguments.
fn limits(max_output_bytes: u64, reject_nonfinite: bool, max_abs: Option<f64>) -> PyResult<Limits> {
    let validation = Validation {
        reject_nonfinite,
        max_abs,
    };
    validation.check_params().map_err(to_py)?;
    Ok(Limits {
        max_output_bytes,
        validation,
    })
}

/// Encodes the bytes of a C-contiguous tensor of `dtype` and `shape` into a frame.
#[pyfunction]
#[pyo3(signature = (data, dtype, shape, *, profile="lossless", chunk_size=Codec::DEFAULT_CHUNK_ELEMS, threads=0, hint=0))]
#[allow(clippy::too_many_arguments)]
fn encode<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    dtype: &str,
    shape: Vec<u64>,
    profile: &str,
    chunk_size: u64,
    threads: usize,
    hint: u8,
) -> PyResult<Bound<'py, PyBytes>> {
    let dtype = DType::parse(dtype).map_err(to_py)?;
    let hint = hint_from_code(hint)?;
    let codec = codec(profile, chunk_size, threads, Limits::default())?;
    let input = Bytes::get(data, "data", false)?;
    let slice = input.as_slice();
    let frame = py
        .detach(|| codec.encode_with_hint(slice, dtype, &shape, hint))
        .map_err(to_py)?;
    Ok(PyBytes::new(py, &frame))
}

/// Decodes `frame` into the writable C-contiguous buffer `out` (exactly the decoded size).
#[pyfunction]
#[pyo3(signature = (frame, out, *, threads=0, max_output_bytes=Limits::DEFAULT_MAX_OUTPUT_BYTES, reject_nonfinite=false, max_abs=None))]
fn decode_into(
    py: Python<'_>,
    frame: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    threads: usize,
    max_output_bytes: u64,
    reject_nonfinite: bool,
    max_abs: Option<f64>,
) -> PyResult<()> {
    let limits = limits(max_output_bytes, reject_nonfinite, max_abs)?;
    let codec = codec("lossless", Codec::DEFAULT_CHUNK_ELEMS, threads, limits)?;
    let frame = Bytes::get(frame, "frame", false)?;
    let mut out = Bytes::get(out, "out", true)?;
    let (f, o) = (frame.as_slice(), out.as_mut_slice());
    py.detach(|| codec.decode_into(f, o)).map_err(to_py)?;
    Ok(())
}

/// Parses only the header: `(dtype, shape, container)`, checking the output limit.
#[pyfunction]
#[pyo3(signature = (frame, *, max_output_bytes=Limits::DEFAULT_MAX_OUTPUT_BYTES))]
fn header(
    frame: &Bound<'_, PyAny>,
    max_output_bytes: u64,
) -> PyResult<(&'static str, Vec<u64>, &'static str)> {
    let frame = Bytes::get(frame, "frame", false)?;
    let (h, _) = crate::format::Header::parse(frame.as_slice()).map_err(to_py)?;
    let out = h.output_bytes().map_err(to_py)?;
    if out > max_output_bytes {
        return Err(LimitExceededError::new_err(format!(
            "frame decodes to {out} bytes, more than the limit of {max_output_bytes} \
             (raise max_output_bytes if you trust the sender)"
        )));
    }
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
            sd.set_item(*k, *v)?;
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
    #[pyo3(signature = (data, dtype, shape, *, profile="lossless", chunk_size=Codec::DEFAULT_CHUNK_ELEMS, threads=0, hint=0))]
    fn new(
        data: &Bound<'_, PyAny>,
        dtype: &str,
        shape: Vec<u64>,
        profile: &str,
        chunk_size: u64,
        threads: usize,
        hint: u8,
    ) -> PyResult<Self> {
        let dtype = DType::parse(dtype).map_err(to_py)?;
        let hint = hint_from_code(hint)?;
        let codec = codec(profile, chunk_size, threads, Limits::default())?;
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
    #[pyo3(signature = (*, threads=0, max_output_bytes=Limits::DEFAULT_MAX_OUTPUT_BYTES, reject_nonfinite=false, max_abs=None))]
    fn new(
        threads: usize,
        max_output_bytes: u64,
        reject_nonfinite: bool,
        max_abs: Option<f64>,
    ) -> PyResult<Self> {
        let limits = limits(max_output_bytes, reject_nonfinite, max_abs)?;
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

/// `frame` with every checksum rewritten to match its bytes, as a hostile sender would make
/// it (for tests that reach the decoder behind the checksums).
#[pyfunction]
fn _reseal<'py>(py: Python<'py>, frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut bytes = Bytes::get(frame, "frame", false)?.as_slice().to_vec();
    crate::format::reseal(&mut bytes);
    Ok(PyBytes::new(py, &bytes))
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
    m.add("FORMAT_VERSION", crate::FORMAT_VERSION)?;
    m.add("DEFAULT_CHUNK_SIZE", Codec::DEFAULT_CHUNK_ELEMS)?;
    m.add("DEFAULT_MAX_OUTPUT_BYTES", Limits::DEFAULT_MAX_OUTPUT_BYTES)?;
    m.add(
        "PROFILES",
        Profile::ALL.iter().map(|p| p.name()).collect::<Vec<_>>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode_into, m)?)?;
    m.add_function(wrap_pyfunction!(header, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_reseal, m)?)?;
    m.add_class::<StreamEncoder>()?;
    m.add_class::<StreamDecoder>()?;
    Ok(())
}
