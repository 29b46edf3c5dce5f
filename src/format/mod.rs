//! The wire format: frame header, stage descriptors, chunk records, checksums.
//!
//! This module knows bytes, not algorithms: a stage is a kind byte and an opaque parameter
//! blob, a chunk is an opaque payload. `docs/FORMAT.md` specifies every byte written here.

mod bytes;

pub use bytes::{put_uvarint, uvarint_len, Reader};

use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = [0x89, b'I', b'O', b'T'];
/// The format version this build writes. It decodes every version from 1 up to this one.
pub const VERSION: u8 = 2;
/// Most dimensions a frame may declare.
pub const MAX_NDIM: usize = 32;
/// Most stages a frame may list.
pub const MAX_STAGES: usize = 16;
/// Bytes of a chunk record before its payload: length and checksum.
pub const CHUNK_RECORD_OVERHEAD: usize = 8;
/// Largest chunk payload a record can describe.
pub const MAX_CHUNK_PAYLOAD: usize = u32::MAX as usize;

/// What kind of object the encoder was given, so that the decoder can hand back the same kind.
/// Purely informational for the Rust API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ContainerHint {
    #[default]
    Unspecified = 0,
    Numpy = 1,
    Torch = 2,
    Buffer = 3,
}

impl ContainerHint {
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ContainerHint::Unspecified),
            1 => Some(ContainerHint::Numpy),
            2 => Some(ContainerHint::Torch),
            3 => Some(ContainerHint::Buffer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ContainerHint::Unspecified => "unspecified",
            ContainerHint::Numpy => "numpy",
            ContainerHint::Torch => "torch",
            ContainerHint::Buffer => "buffer",
        }
    }
}

/// One entry of the stage list: which transform ran, with which parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDesc {
    pub kind: u8,
    pub params: Vec<u8>,
}

/// The frame header, everything before the first chunk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub hint: ContainerHint,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Elements per chunk; every chunk but the last holds exactly this many.
    pub chunk_elems: u64,
    pub stages: Vec<StageDesc>,
}

/// Where a parsed header ends and what it hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtent {
    pub len: usize,
    pub checksum: u32,
}

/// The low 32 bits of XXH3-64 with a seed: the checksum used throughout the format.
pub fn checksum(bytes: &[u8], seed: u64) -> u32 {
    twox_hash::XxHash3_64::oneshot_with_seed(seed, bytes) as u32
}

/// The checksum of chunk `index` of a frame whose header hashes to `header_checksum`. Binding
/// both into the seed makes a chunk moved to another position or another frame fail.
pub fn chunk_checksum(header_checksum: u32, index: u64, payload: &[u8]) -> u32 {
    checksum(payload, (u64::from(header_checksum) << 32) ^ index)
}

impl Header {
    /// The product of the dimensions, or an error when it overflows.
    pub fn numel(&self) -> Result<u64> {
        numel(&self.shape)
    }

    /// How many chunk records follow the header.
    pub fn n_chunks(&self) -> Result<u64> {
        Ok(self.numel()?.div_ceil(self.chunk_elems.max(1)))
    }

    /// The largest payload a chunk record may hold: a chunk is never coded larger than its
    /// stored form, a mode byte and the elements.
    pub fn max_chunk_payload(&self) -> usize {
        let bytes = self
            .chunk_elems
            .saturating_mul(self.dtype.itemsize() as u64);
        usize::try_from(bytes.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(MAX_CHUNK_PAYLOAD)
    }

    /// Decoded size in bytes.
    pub fn output_bytes(&self) -> Result<u64> {
        self.numel()?
            .checked_mul(self.dtype.itemsize() as u64)
            .ok_or_else(|| Error::corrupt("tensor size overflows 64 bits"))
    }

    /// Appends the header to `out` and returns its extent (length and checksum).
    pub fn write(&self, out: &mut Vec<u8>) -> HeaderExtent {
        assert!(self.shape.len() <= MAX_NDIM && self.stages.len() <= MAX_STAGES);
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(self.hint as u8);
        out.push(self.dtype.code());
        out.push(self.shape.len() as u8);
        for &d in &self.shape {
            put_uvarint(out, d);
        }
        put_uvarint(out, self.chunk_elems);
        out.push(self.stages.len() as u8);
        for s in &self.stages {
            assert!(
                s.params.len() <= 255,
                "stage parameters are at most 255 bytes"
            );
            out.push(s.kind);
            out.push(s.params.len() as u8);
            out.extend_from_slice(&s.params);
        }
        let sum = checksum(&out[start..], 0);
        out.extend_from_slice(&sum.to_le_bytes());
        HeaderExtent {
            len: out.len() - start,
            checksum: sum,
        }
    }

    /// Parses and verifies the header at the start of `frame`.
    pub fn parse(frame: &[u8]) -> Result<(Header, HeaderExtent)> {
        let (header, len) = Header::parse_fields(frame)?;
        let stored = Reader::new(&frame[len..]).u32("header checksum")?;
        let sum = checksum(&frame[..len], 0);
        if stored != sum {
            return Err(Error::new(
                ErrorKind::ChecksumMismatch,
                "header checksum mismatch: the frame was damaged in transit",
            ));
        }
        Ok((
            header,
            HeaderExtent {
                len: len + 4,
                checksum: sum,
            },
        ))
    }

    /// Parses the header fields, returning where the header checksum starts; the checksum
    /// itself is not read.
    fn parse_fields(frame: &[u8]) -> Result<(Header, usize)> {
        let mut r = Reader::new(frame);
        let magic = r.bytes(4, "magic")?;
        if magic != MAGIC {
            return Err(Error::corrupt(
                "not an iota-codec frame (bad magic bytes); was it produced by iota_codec.encode?",
            ));
        }
        let version = r.u8("format version")?;
        if version == 0 {
            return Err(Error::corrupt("format version 0 does not exist"));
        }
        if version > VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "frame has format version {version}; this iota-codec reads versions 1 to \
                     {VERSION}: upgrade iota-codec to decode it"
                ),
            ));
        }
        let hint_code = r.u8("container hint")?;
        let hint = ContainerHint::from_code(hint_code)
            .ok_or_else(|| Error::corrupt(format!("unknown container hint {hint_code}")))?;
        let dtype_code = r.u8("dtype")?;
        let dtype = DType::from_code(dtype_code)
            .ok_or_else(|| Error::corrupt(format!("unknown dtype code {dtype_code}")))?;
        let ndim = r.u8("ndim")? as usize;
        if ndim > MAX_NDIM {
            return Err(Error::corrupt(format!(
                "{ndim} dimensions, more than the format's {MAX_NDIM}"
            )));
        }
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.uvarint("dimension")?);
        }
        numel(&shape)?;
        let chunk_elems = r.uvarint("chunk size")?;
        if chunk_elems == 0 {
            return Err(Error::corrupt("chunk size is zero"));
        }
        let n_stages = r.u8("stage count")? as usize;
        if n_stages > MAX_STAGES {
            return Err(Error::corrupt(format!(
                "{n_stages} stages, more than the format's {MAX_STAGES}"
            )));
        }
        let mut stages = Vec::with_capacity(n_stages);
        for _ in 0..n_stages {
            let kind = r.u8("stage kind")?;
            let len = r.u8("stage parameter length")? as usize;
            let params = r.bytes(len, "stage parameters")?.to_vec();
            stages.push(StageDesc { kind, params });
        }
        let header = Header {
            version,
            hint,
            dtype,
            shape,
            chunk_elems,
            stages,
        };
        Ok((header, r.position()))
    }
}

/// Rewrites the header checksum and every chunk checksum of `frame` to match its bytes, as a
/// hostile sender would: checksums catch damage in transit, not forgery, so the decoder
/// must be safe on any frame that carries valid checksums. Fuzzers and tests use this to
/// reach the code behind the checksums. Best effort: it stops where the structure stops
/// parsing.
#[doc(hidden)]
pub fn reseal(frame: &mut [u8]) {
    let Ok((header, len)) = Header::parse_fields(frame) else {
        return;
    };
    if frame.len() < len + 4 {
        return;
    }
    let sum = checksum(&frame[..len], 0);
    frame[len..len + 4].copy_from_slice(&sum.to_le_bytes());
    let Ok(n_chunks) = header.n_chunks() else {
        return;
    };
    let mut pos = len + 4;
    for i in 0..n_chunks {
        if frame.len() < pos + CHUNK_RECORD_OVERHEAD {
            return;
        }
        let plen = u32::from_le_bytes(frame[pos..pos + 4].try_into().unwrap()) as usize;
        let start = pos + CHUNK_RECORD_OVERHEAD;
        let Some(end) = start.checked_add(plen).filter(|&e| e <= frame.len()) else {
            return;
        };
        let c = chunk_checksum(sum, i, &frame[start..end]);
        frame[pos + 4..pos + 8].copy_from_slice(&c.to_le_bytes());
        pos = end;
    }
}

/// The product of `shape`, or an error when it overflows 64 bits.
pub fn numel(shape: &[u64]) -> Result<u64> {
    shape.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::corrupt("tensor element count overflows 64 bits"))
    })
}

/// Appends chunk record `index` holding `payload`.
pub fn write_chunk(out: &mut Vec<u8>, header_checksum: u32, index: u64, payload: &[u8]) {
    write_chunk_with(out, header_checksum, index, |o| {
        o.extend_from_slice(payload)
    });
}

/// Appends chunk record `index` whose payload `write` appends to `out`, filling in its length
/// and checksum afterwards: the payload is written in place, never copied.
pub fn write_chunk_with(
    out: &mut Vec<u8>,
    header_checksum: u32,
    index: u64,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let at = out.len();
    out.extend_from_slice(&[0; CHUNK_RECORD_OVERHEAD]);
    write(out);
    let payload = &out[at + CHUNK_RECORD_OVERHEAD..];
    assert!(payload.len() <= MAX_CHUNK_PAYLOAD);
    let len = (payload.len() as u32).to_le_bytes();
    let sum = chunk_checksum(header_checksum, index, payload).to_le_bytes();
    out[at..at + 4].copy_from_slice(&len);
    out[at + 4..at + 8].copy_from_slice(&sum);
}

/// Reads chunk record `index` at the reader's position and verifies its length (at most
/// `max_len`) and checksum.
pub fn read_chunk<'a>(
    r: &mut Reader<'a>,
    header_checksum: u32,
    index: u64,
    max_len: usize,
) -> Result<&'a [u8]> {
    let (stored, payload) = read_chunk_unverified(r, index, max_len)?;
    verify_chunk(header_checksum, index, stored, payload)?;
    Ok(payload)
}

/// Reads a chunk record's stored checksum and payload, leaving the checksum to
/// [`verify_chunk`].
pub fn read_chunk_unverified<'a>(
    r: &mut Reader<'a>,
    index: u64,
    max_len: usize,
) -> Result<(u32, &'a [u8])> {
    let len = read_chunk_len(r, index, max_len)?;
    let stored = r.u32("chunk checksum")?;
    let payload = r.bytes(len, "chunk payload")?;
    Ok((stored, payload))
}

/// Checks a chunk's payload against its stored checksum.
pub fn verify_chunk(header_checksum: u32, index: u64, stored: u32, payload: &[u8]) -> Result<()> {
    if chunk_checksum(header_checksum, index, payload) != stored {
        return Err(Error::new(
            ErrorKind::ChecksumMismatch,
            format!("chunk {index} checksum mismatch: the frame was damaged in transit"),
        ));
    }
    Ok(())
}

pub fn read_chunk_len(r: &mut Reader, index: u64, max_len: usize) -> Result<usize> {
    let len = r.u32("chunk length")? as usize;
    if len > max_len {
        return Err(Error::corrupt(format!(
            "chunk {index} claims {len} bytes, more than the {max_len} of its elements stored \
             as they are"
        )));
    }
    Ok(len)
}

/// Walks the chunk records that follow a header (the frame's chunk table), verifying every
/// checksum and that the frame ends exactly after the last one.
pub fn read_chunks(
    body: &[u8],
    header_checksum: u32,
    n_chunks: u64,
    max_len: usize,
) -> Result<Vec<&[u8]>> {
    let mut r = Reader::new(body);
    check_chunk_count(body, n_chunks)?;
    let mut out = Vec::with_capacity(n_chunks as usize);
    for i in 0..n_chunks {
        out.push(read_chunk(&mut r, header_checksum, i, max_len)?);
    }
    r.finish("frame")?;
    Ok(out)
}

/// Every record takes at least its overhead, so a header that promises more chunks than the
/// bytes could hold is caught before anything is allocated for them.
fn check_chunk_count(body: &[u8], n_chunks: u64) -> Result<()> {
    if n_chunks > (body.len() / CHUNK_RECORD_OVERHEAD) as u64 {
        return Err(Error::truncated(format!(
            "truncated frame: {n_chunks} chunks declared, only {} bytes of chunk data",
            body.len()
        )));
    }
    Ok(())
}

/// [`read_chunks`] without verifying the checksums: the chunk table's structure (lengths,
/// and that the records fill the body exactly), with each record's stored checksum and
/// payload, for a decoder that verifies each chunk just before decoding it.
pub fn read_chunk_table(body: &[u8], n_chunks: u64, max_len: usize) -> Result<Vec<(u32, &[u8])>> {
    let mut r = Reader::new(body);
    check_chunk_count(body, n_chunks)?;
    let mut out = Vec::with_capacity(n_chunks as usize);
    for i in 0..n_chunks {
        out.push(read_chunk_unverified(&mut r, i, max_len)?);
    }
    r.finish("frame")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            hint: ContainerHint::Torch,
            dtype: DType::BF16,
            shape: vec![3, 1000, 7],
            chunk_elems: 4096,
            stages: vec![
                StageDesc {
                    kind: 1,
                    params: vec![],
                },
                StageDesc {
                    kind: 2,
                    params: vec![32, 11],
                },
            ],
        }
    }

    #[test]
    fn header_round_trip() {
        let h = header();
        let mut b = vec![];
        let ext = h.write(&mut b);
        assert_eq!(ext.len, b.len());
        let (h2, ext2) = Header::parse(&b).unwrap();
        assert_eq!(h, h2);
        assert_eq!(ext, ext2);
        assert_eq!(h.numel().unwrap(), 21000);
        assert_eq!(h.n_chunks().unwrap(), 6);
    }

    #[test]
    fn header_every_truncation_and_bit_flip_fails() {
        let mut b = vec![];
        header().write(&mut b);
        for n in 0..b.len() {
            assert!(Header::parse(&b[..n]).is_err(), "prefix {n}");
        }
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::parse(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn newer_version_is_unsupported() {
        let mut h = header();
        h.version = VERSION + 1;
        let mut b = vec![];
        h.write(&mut b);
        let e = Header::parse(&b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
    }

    #[test]
    fn reseal_restores_valid_checksums() {
        let h = header();
        let mut b = vec![];
        let ext = h.write(&mut b);
        for i in 0..h.n_chunks().unwrap() {
            write_chunk(&mut b, ext.checksum, i, &[i as u8; 5]);
        }
        let good = b.clone();
        reseal(&mut b);
        assert_eq!(b, good);
        // Change the container hint and a payload byte: the frame fails, then passes once
        // resealed.
        b[5] ^= 1;
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(Header::parse(&b).is_err());
        reseal(&mut b);
        let (h2, ext2) = Header::parse(&b).unwrap();
        read_chunks(&b[ext2.len..], ext2.checksum, h2.n_chunks().unwrap(), 100).unwrap();
    }

    #[test]
    fn chunks_are_bound_to_position_and_header() {
        let mut body = vec![];
        write_chunk(&mut body, 7, 0, b"first");
        write_chunk(&mut body, 7, 1, b"second");
        let chunks = read_chunks(&body, 7, 2, 6).unwrap();
        assert_eq!(chunks, vec![&b"first"[..], &b"second"[..]]);
        // Another header, swapped order, missing or extra records: all fail.
        assert!(read_chunks(&body, 8, 2, 6).is_err());
        let mut swapped = vec![];
        write_chunk(&mut swapped, 7, 1, b"second");
        write_chunk(&mut swapped, 7, 0, b"first");
        assert!(read_chunks(&swapped, 7, 2, 6).is_err());
        assert!(read_chunks(&body, 7, 1, 6).is_err());
        assert!(read_chunks(&body, 7, 3, 6).is_err());
        // A record longer than its chunk could ever be is refused before it is read.
        assert!(read_chunks(&body, 7, 2, 5).is_err());
    }
}
