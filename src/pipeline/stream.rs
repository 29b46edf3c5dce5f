//! Streaming: encode a tensor piece by piece so sending can start before encoding ends, and
//! decode chunks as their bytes arrive, so encoding, transfer and decoding overlap.
//!
//! The pieces a [`StreamEncoder`] yields are the header and then one chunk record at a time;
//! concatenated they are exactly the frame [`encode_frame`](super::encode_frame) writes. A
//! [`StreamDecoder`] accepts those bytes in pieces of any size.

use std::collections::VecDeque;

use super::{
    decode_chunks, transform, write_hints_for, ChunkJob, EncodePlan, EncodeRequest, Limits, Recipe,
};
use crate::error::{Error, Result};
use crate::format::{self, Header, HeaderExtent, Reader, CHUNK_RECORD_OVERHEAD};

/// Produces a frame piece by piece. It does not hold the input: each call gets it again, and
/// it must be the same bytes every time.
#[derive(Debug)]
pub struct StreamEncoder {
    plan: EncodePlan,
    header_checksum: Option<u32>,
    next_chunk: usize,
    ready: VecDeque<Vec<u8>>,
}

impl StreamEncoder {
    /// Checks the request (its `input` is only measured here).
    pub fn new(req: &EncodeRequest) -> Result<StreamEncoder> {
        let plan = EncodePlan::new(req)?;
        plan.check_nonfinite(req.input)?;
        Ok(StreamEncoder {
            plan,
            header_checksum: None,
            next_chunk: 0,
            ready: VecDeque::new(),
        })
    }

    /// A stream of the pieces of `frame`, a whole frame already encoded for `req` (the
    /// error-bounded encoder must see every chunk's error before its header is final).
    pub(crate) fn from_frame(req: &EncodeRequest, frame: Vec<u8>) -> Result<StreamEncoder> {
        let mut plan = EncodePlan::new(req)?;
        let (header, ext) = Header::parse(&frame)?;
        // The frame's own chunking (a projection frame chunks by whole rows).
        plan.n_chunks = header.n_chunks()? as usize;
        let mut ready = VecDeque::with_capacity(1 + plan.n_chunks);
        ready.push_back(frame[..ext.len].to_vec());
        let mut r = Reader::new(&frame[ext.len..]);
        let max = header.max_chunk_payload();
        for i in 0..header.n_chunks()? {
            let start = ext.len + r.position();
            format::read_chunk(&mut r, ext.checksum, i, max)?;
            ready.push_back(frame[start..ext.len + r.position()].to_vec());
        }
        Ok(StreamEncoder {
            next_chunk: plan.n_chunks,
            plan,
            header_checksum: Some(ext.checksum),
            ready,
        })
    }

    /// Number of pieces in all: the header and one per chunk.
    pub fn n_pieces(&self) -> usize {
        1 + self.plan.n_chunks
    }

    /// The next piece of the frame, or `None` after the last. Chunks are encoded in batches of
    /// one per worker thread, so a piece is ready as soon as its batch is.
    pub fn next_piece(&mut self, input: &[u8]) -> Result<Option<Vec<u8>>> {
        if input.len() != self.plan.input_len {
            return Err(Error::invalid(format!(
                "stream encoder was set up for {} input bytes, got {}",
                self.plan.input_len,
                input.len()
            )));
        }
        let Some(sum) = self.header_checksum else {
            let mut head = Vec::new();
            self.header_checksum = Some(self.plan.header.write(&mut head).checksum);
            return Ok(Some(head));
        };
        if self.ready.is_empty() && self.next_chunk < self.plan.n_chunks {
            let batch = match self.plan.threads {
                0 => rayon::current_num_threads(),
                t => t,
            }
            .max(1);
            let end = (self.next_chunk + batch).min(self.plan.n_chunks);
            let records = self.plan.encode_records(input, sum, self.next_chunk..end);
            self.ready.extend(records.into_iter().map(|(rec, _)| rec));
            self.next_chunk = end;
        }
        Ok(self.ready.pop_front())
    }
}

/// An iterator over the pieces of a frame; see [`StreamEncoder`].
#[derive(Debug)]
pub struct EncodePieces<'a> {
    pub(crate) encoder: StreamEncoder,
    pub(crate) input: &'a [u8],
}

impl Iterator for EncodePieces<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        self.encoder
            .next_piece(self.input)
            .expect("the input was checked when the stream was set up")
    }
}

#[derive(Debug)]
struct Layout {
    header: Header,
    ext: HeaderExtent,
    recipe: Recipe,
    n_chunks: u64,
    chunk_bytes: usize,
    output_len: usize,
    /// The basis of a projection frame, once known (a frame basis arrives with chunk 0).
    project: Option<transform::Context>,
}

/// Decodes a frame from pieces of any size, chunk by chunk as each record completes.
///
/// Feed bytes with [`feed`](Self::feed); once [`header`](Self::header) is known, give an
/// output buffer of [`output_len`](Self::output_len) bytes to
/// [`decode_available`](Self::decode_available) after each feed; [`finish`](Self::finish)
/// checks that the whole frame arrived. Every check of the one-shot decoder applies, and the
/// output limit is enforced as soon as the header is in.
#[derive(Debug)]
pub struct StreamDecoder {
    limits: Limits,
    threads: usize,
    buf: Vec<u8>,
    layout: Option<Layout>,
    next_chunk: u64,
}

impl StreamDecoder {
    pub fn new(limits: Limits, threads: usize) -> StreamDecoder {
        StreamDecoder {
            limits,
            threads,
            buf: Vec::new(),
            layout: None,
            next_chunk: 0,
        }
    }

    /// Takes the next bytes of the frame; parses the header as soon as it is complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if self.is_complete() && !data.is_empty() {
            return Err(Error::corrupt("bytes after the end of the frame"));
        }
        self.buf.extend_from_slice(data);
        if self.layout.is_none() {
            self.parse_header()?;
        }
        Ok(())
    }

    fn parse_header(&mut self) -> Result<()> {
        let (header, ext) = match Header::parse(&self.buf) {
            Ok(h) => h,
            Err(e) if e.is_truncation() => return Ok(()),
            Err(e) => return Err(e),
        };
        let recipe = self.limits.check(&header)?;
        let out_bytes = header.output_bytes()?;
        let output_len = usize::try_from(out_bytes)
            .map_err(|_| Error::limit("decoded tensor does not fit in this machine's memory"))?;
        let chunk_bytes = usize::try_from(header.chunk_elems)
            .ok()
            .and_then(|c| c.checked_mul(header.dtype.itemsize()))
            .ok_or_else(|| Error::corrupt("chunk size does not fit in memory"))?;
        let n_chunks = header.n_chunks()?;
        let project = match &recipe {
            Recipe::Project { params, rans, .. } if params.basis != transform::BASIS_FRAME => {
                Some(transform::context(params, rans, &header.shape, None, None)?)
            }
            _ => None,
        };
        self.buf.drain(..ext.len);
        self.layout = Some(Layout {
            header,
            ext,
            recipe,
            n_chunks,
            chunk_bytes,
            output_len,
            project,
        });
        Ok(())
    }

    /// The header, once it has arrived.
    pub fn header(&self) -> Option<&Header> {
        self.layout.as_ref().map(|l| &l.header)
    }

    /// Size of the decoded tensor in bytes, once the header has arrived.
    pub fn output_len(&self) -> Option<usize> {
        self.layout.as_ref().map(|l| l.output_len)
    }

    /// Chunks decoded so far, and in all (once the header is known).
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.next_chunk, self.layout.as_ref().map(|l| l.n_chunks))
    }

    /// Whether every chunk has been decoded.
    pub fn is_complete(&self) -> bool {
        self.layout
            .as_ref()
            .is_some_and(|l| self.next_chunk == l.n_chunks)
    }

    /// Decodes every chunk whose record has fully arrived into its place in `out` (exactly
    /// [`output_len`](Self::output_len) bytes, the same buffer every call). Returns how many
    /// chunks it decoded.
    pub fn decode_available(&mut self, out: &mut [u8]) -> Result<usize> {
        let Some(l) = &mut self.layout else {
            return Ok(0);
        };
        if out.len() != l.output_len {
            return Err(Error::invalid(format!(
                "output buffer holds {} bytes, the frame decodes to {}",
                out.len(),
                l.output_len
            )));
        }
        // Find the complete records at the front of the buffer, verifying each.
        let mut r = Reader::new(&self.buf);
        let mut payloads = Vec::new();
        let mut index = self.next_chunk;
        while index < l.n_chunks && r.remaining() >= CHUNK_RECORD_OVERHEAD {
            // A length beyond what the chunk could ever need fails before anything waits for
            // (or buffers) that many bytes.
            let mut peek = r.clone();
            let len = format::read_chunk_len(&mut peek, index, l.header.max_chunk_payload())?;
            if peek.remaining() < 4 + len {
                break;
            }
            let max = l.header.max_chunk_payload();
            payloads.push(format::read_chunk(&mut r, l.ext.checksum, index, max)?);
            index += 1;
        }
        let consumed = r.position();
        if index == l.n_chunks && r.remaining() > 0 {
            return Err(Error::corrupt(format!(
                "{} unexpected trailing bytes after the last chunk",
                r.remaining()
            )));
        }
        let decoded = payloads.len();
        if let Recipe::Project { params, rans, .. } = &l.recipe {
            if l.project.is_none() && self.next_chunk == 0 && decoded > 0 {
                l.project = Some(transform::context(
                    params,
                    rans,
                    &l.header.shape,
                    Some(payloads[0]),
                    None,
                )?);
            }
        }
        if decoded > 0 {
            let start = (self.next_chunk as usize) * l.chunk_bytes;
            let end = ((index as usize) * l.chunk_bytes).min(l.output_len);
            let write_hints = write_hints_for(&out[start..end], l.output_len);
            let outs: Vec<&mut [u8]> = out[start..end].chunks_mut(l.chunk_bytes).collect();
            let job = ChunkJob {
                recipe: &l.recipe,
                dtype: l.header.dtype,
                chunk_elems: l.header.chunk_elems,
                validation: &self.limits.validation,
                project: l.project.as_ref(),
                verify: None,
                write_hints,
                contexts: l.header.version >= 2,
            };
            decode_chunks(&job, self.next_chunk, &payloads, outs, self.threads)?;
        }
        self.next_chunk = index;
        self.buf.drain(..consumed);
        Ok(decoded)
    }

    /// Fails unless the whole frame has arrived and been decoded.
    pub fn finish(&self) -> Result<()> {
        match &self.layout {
            None => Err(Error::truncated(format!(
                "truncated frame: the stream ended inside the header ({} bytes)",
                self.buf.len()
            ))),
            Some(l) if self.next_chunk < l.n_chunks => Err(Error::truncated(format!(
                "truncated frame: the stream ended after {} of {} chunks",
                self.next_chunk, l.n_chunks
            ))),
            Some(_) if !self.buf.is_empty() => Err(Error::corrupt(format!(
                "{} unexpected trailing bytes after the last chunk",
                self.buf.len()
            ))),
            Some(_) => Ok(()),
        }
    }
}
